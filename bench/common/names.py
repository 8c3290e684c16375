"""The names the commands offer on their command lines besides the methods (:mod:`bench.common.methods`): head kinds,
datasets.

Imports nothing, so that a command's ``--help`` and its argument checks answer without loading PyTorch.
The modules that give each name its meaning import their list from here: :data:`HEAD_KINDS` in
:mod:`bench.models.networks`; the dataset registry
(:data:`bench.data.registry.DATASETS`) registers exactly :data:`DATASET_NAMES` (checked by the tests).
"""

from __future__ import annotations

#: the head kinds on an SLL backbone of a ``bench.train`` checkpoint folder
HEAD_KINDS = ("ce", "sparsemax", "margin", "mlp")
#: the registered datasets, in registry order
DATASET_NAMES = ("fashion-mnist", "fashion-mnist-embedded", "mnist", "cifar10", "cifar100", "tiny-imagenet",
                 "imagenet", "imagenette", "imagefolder")
