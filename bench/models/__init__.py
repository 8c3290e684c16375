"""Models the harness certifies: the networks, their checkpoints, the zoo of one experiment, training.

* :mod:`~bench.models.networks`: SLL backbone + head kinds, Cohen's small noise-trained CNN;
* :mod:`~bench.models.checkpoints`: state dict + JSON sidecar, strict loading (:class:`CheckpointError`);
* :mod:`~bench.models.zoo`: every checkpoint of one folder, loaded and validated (:func:`load_zoo`);
* :mod:`~bench.models.training`: the seeded, resumable training of the default models.
"""

from .checkpoints import CheckpointError
from .networks import HEAD_KINDS, CNNConfig, HeadConfig, SmallCNN, build_head
from .zoo import ModelZoo, load_zoo

__all__ = ["CheckpointError", "CNNConfig", "HEAD_KINDS", "HeadConfig", "ModelZoo", "SmallCNN", "build_head", "load_zoo"]
