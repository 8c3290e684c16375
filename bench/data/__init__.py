"""Datasets by name: ``fashion-mnist`` (default), ``fashion-mnist-embedded``, ``mnist``, ``cifar10``, ``cifar100``,
``tiny-imagenet``, ``imagenet``, ``imagenette``, ``imagefolder``; items are ``(image float [C, H, W] in [0, 1],
int label)``, no mean/std normalisation.

* :mod:`~bench.data.registry`: :class:`DatasetSpec` of each name (:data:`DATASETS`), :func:`load_dataset`,
  :func:`load_tensors`, :func:`reported_radii`, :data:`SELECTIONS`; :mod:`~bench.data.base`: the errors, the
  splits, the default data root; :mod:`~bench.data.metadata`: the papers' radii, normalisation constants and
  test selections;
* one module per family: :mod:`~bench.data.idx` (Fashion-MNIST / MNIST idx files), :mod:`~bench.data.cifar`
  (CIFAR-10 / CIFAR-100 pickles), :mod:`~bench.data.tiny_imagenet`, :mod:`~bench.data.imagenet` (class-folder
  tree), :mod:`~bench.data.folders` (Imagenette and any ImageFolder tree), :mod:`~bench.data.embedded` (the
  shipped, SHA-256-checked 1,000-image Fashion-MNIST evaluation subset); :mod:`~bench.data.images`: the
  image-file dataset and its size settings (:class:`ImageOptions`);
* :mod:`~bench.data.selection`: the evaluation images of a run.

When data cannot be found or downloaded, :class:`DatasetUnavailableError` says where to put the files; malformed
files raise :class:`DatasetFormatError` (a ``ValueError``) naming the file.
CLI: ``python -m bench.data {list, info NAME, build-embedded}``.
"""

from .base import (
    SPLITS,
    CorruptImageError,
    DatasetFormatError,
    DatasetUnavailableError,
    EmbeddedDataError,
    IdxFormatError,
    default_data_root,
)
from .cifar import CIFAR10_CLASSES, CIFAR100_CLASSES
from .embedded import EMBEDDED_PATH, EmbeddedSubset, build_embedded_subset, load_embedded, select_balanced
from .folders import IMAGENETTE_CLASSES, IMAGENETTE_WNIDS, imagenet_transform
from .idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, UInt8ImageDataset, find_idx_files, read_idx
from .imagenet_classes import IMAGENET_CLASSES
from .images import ImageFileDataset, ImageOptions
from .metadata import Selection
from .registry import (
    DATASETS,
    DEFAULT_DATASET,
    DEFAULT_EVAL_DATASET,
    IMAGE_FILE_DATASETS,
    SELECTIONS,
    UNSET,
    DatasetSpec,
    canonical_name,
    dataset_spec,
    image_options,
    load_dataset,
    load_tensors,
    reported_radii,
)

__all__ = [
    "CIFAR100_CLASSES", "CIFAR10_CLASSES", "DATASETS", "DEFAULT_DATASET", "DEFAULT_EVAL_DATASET", "EMBEDDED_PATH",
    "FASHION_MNIST_CLASSES", "IMAGENETTE_CLASSES", "IMAGENETTE_WNIDS", "IMAGENET_CLASSES", "IMAGE_FILE_DATASETS",
    "MNIST_CLASSES", "SELECTIONS", "SPLITS", "UNSET", "CorruptImageError", "DatasetFormatError", "DatasetSpec",
    "DatasetUnavailableError", "EmbeddedDataError", "EmbeddedSubset", "IdxFormatError", "ImageFileDataset",
    "ImageOptions", "Selection", "UInt8ImageDataset", "build_embedded_subset", "canonical_name", "dataset_spec",
    "default_data_root", "find_idx_files", "image_options", "imagenet_transform", "load_dataset", "load_embedded",
    "load_tensors", "read_idx", "reported_radii", "select_balanced",
]
