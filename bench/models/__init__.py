"""Models the harness certifies: the networks, their checkpoints, the zoo of one experiment, training.

* :mod:`~bench.models.networks`: SLL backbone + head kinds, Cohen's small noise-trained CNN;
* :mod:`~bench.models.checkpoints`: state dict + JSON sidecar, strict loading (:class:`CheckpointError`);
* :mod:`~bench.models.zoo`: every checkpoint of one folder, loaded and validated (:func:`load_zoo`);
* :mod:`~bench.models.training`: the seeded, resumable training of the default models;
* :mod:`~bench.models.loaded`: one ``[models.NAME]`` table of an experiment -> :class:`LoadedModel`
  (:func:`load_model`, :class:`ModelSpecError`), with one module per format: ``fars_format`` (this project's
  checkpoints), ``cohen_format`` (Cohen / Salman et al.'s ``checkpoint.pth.tar``, CIFAR ResNets in
  :mod:`~bench.models.cifar_resnet`), ``sll_format`` (the SLL authors' checkpoints), ``torch_format`` (a
  user's factory); input normalisation as a layer in :mod:`~bench.models.normalization`.
"""

from .checkpoints import CheckpointError
from .loaded import LoadedModel, ModelSpecError, load_model
from .networks import HEAD_KINDS, CNNConfig, HeadConfig, SmallCNN, build_head
from .zoo import ModelZoo, load_zoo

__all__ = ["CheckpointError", "CNNConfig", "HEAD_KINDS", "HeadConfig", "LoadedModel", "ModelSpecError", "ModelZoo",
           "SmallCNN", "build_head", "load_model", "load_zoo"]
