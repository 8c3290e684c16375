"""Models the harness certifies: the networks, their checkpoints, the zoo of one experiment, training.

* :mod:`~bench.models.networks`: SLL backbone + head kinds, Cohen's small noise-trained CNN;
* :mod:`~bench.models.checkpoints`: state dict + JSON sidecar, strict loading (:class:`CheckpointError`);
* :mod:`~bench.models.zoo`: every checkpoint of one folder, loaded and validated (:func:`load_zoo`);
* :mod:`~bench.models.training`: the seeded, resumable training of the default models;
* :mod:`~bench.models.loaded`: one ``[models.NAME]`` table of an experiment -> :class:`LoadedModel`
  (:func:`load_model`, :class:`ModelSpecError`), with one module per format: ``fars_format`` (this project's
  checkpoints), ``cohen_format`` (Cohen / Salman et al.'s ``checkpoint.pth.tar``, CIFAR ResNets in
  :mod:`~bench.models.cifar_resnet`), ``sll_format`` (the SLL authors' checkpoints), ``torch_format`` (a
  user's factory); input normalisation as a layer in :mod:`~bench.models.normalization`;
* :mod:`~bench.models.templates`: the keys and shapes of each format's checkpoint, and checkpoints of that
  layout with random weights (``python -m bench.models template``).

The names below are imported from their modules on first use (PEP 562), so that importing this package
(``python -m bench.models --help``) loads no PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..common.names import HEAD_KINDS

if TYPE_CHECKING:
    from .checkpoints import CheckpointError
    from .loaded import LoadedModel, ModelSpecError, load_model
    from .networks import CNNConfig, HeadConfig, SmallCNN, build_head
    from .zoo import ModelZoo, load_zoo

__all__ = ["CheckpointError", "CNNConfig", "HEAD_KINDS", "HeadConfig", "LoadedModel", "ModelSpecError", "ModelZoo",
           "SmallCNN", "build_head", "load_model", "load_zoo"]

#: public name -> the module of this package that defines it
_SOURCES = {"CheckpointError": "checkpoints", "LoadedModel": "loaded", "ModelSpecError": "loaded",
            "load_model": "loaded", "CNNConfig": "networks", "HeadConfig": "networks", "SmallCNN": "networks",
            "build_head": "networks", "ModelZoo": "zoo", "load_zoo": "zoo"}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (``AttributeError`` for any other name)."""
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_SOURCES[name]}"), name)
    globals()[name] = value
    return value
