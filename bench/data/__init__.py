"""Datasets by name: ``fashion-mnist`` (default), ``fashion-mnist-embedded``, ``mnist``, ``cifar10``, ``imagenette``,
``imagefolder``; items are ``(image float [C, H, W] in [0, 1], int label)``, no mean/std normalisation.

* :mod:`~bench.data.registry`: :class:`DatasetSpec` of each name (:data:`DATASETS`), :func:`load_dataset`,
  :func:`load_tensors`; :mod:`~bench.data.base`: the errors, the splits, the default data root;
* one module per family: :mod:`~bench.data.idx` (Fashion-MNIST / MNIST idx files), :mod:`~bench.data.cifar`,
  :mod:`~bench.data.folders` (Imagenette and any ImageFolder tree), :mod:`~bench.data.embedded` (the shipped,
  SHA-256-checked 1,000-image Fashion-MNIST evaluation subset);
* :mod:`~bench.data.selection`: the evaluation images of a run.

When data cannot be found or downloaded, :class:`DatasetUnavailableError` says where to put the files.
CLI: ``python -m bench.data {list, info NAME, build-embedded}``.
"""

from .base import SPLITS, DatasetUnavailableError, EmbeddedDataError, IdxFormatError, default_data_root
from .cifar import CIFAR10_CLASSES
from .embedded import EMBEDDED_PATH, EmbeddedSubset, build_embedded_subset, load_embedded, select_balanced
from .folders import IMAGENETTE_CLASSES, IMAGENETTE_WNIDS, imagenet_transform
from .idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, UInt8ImageDataset, find_idx_files, read_idx
from .registry import (
    DATASETS,
    DEFAULT_DATASET,
    DEFAULT_EVAL_DATASET,
    DatasetSpec,
    canonical_name,
    dataset_spec,
    load_dataset,
    load_tensors,
)

__all__ = [
    "CIFAR10_CLASSES", "DATASETS", "DEFAULT_DATASET", "DEFAULT_EVAL_DATASET", "EMBEDDED_PATH", "FASHION_MNIST_CLASSES",
    "IMAGENETTE_CLASSES", "IMAGENETTE_WNIDS", "MNIST_CLASSES", "SPLITS", "DatasetSpec", "DatasetUnavailableError",
    "EmbeddedDataError", "EmbeddedSubset", "IdxFormatError", "UInt8ImageDataset", "build_embedded_subset",
    "canonical_name", "dataset_spec", "default_data_root", "find_idx_files", "imagenet_transform", "load_dataset",
    "load_embedded", "load_tensors", "read_idx", "select_balanced",
]
