"""The registry: every dataset by name, what it is (:class:`DatasetSpec`) and how to load it.

Every dataset yields ``(image, label)`` with the image a float tensor ``[C, H, W]`` in ``[0, 1]``
(``transforms.ToTensor``) and **no** mean/std normalisation: the classifiers are certified in pixel space.
The loaders live in one module per family: :mod:`~bench.data.idx` (``fashion-mnist``, ``mnist``),
:mod:`~bench.data.embedded` (``fashion-mnist-embedded``), :mod:`~bench.data.cifar` (``cifar10``) and
:mod:`~bench.data.folders` (``imagenette``, ``imagefolder``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .base import (
    SPLITS,
    DatasetUnavailableError,
    EmbeddedDataError,
    IdxFormatError,
    default_data_root,
)
from .cifar import CIFAR10_CLASSES, load_cifar10, load_cifar10_tensors
from .embedded import embedded_dataset, load_embedded
from .folders import IMAGENETTE_CLASSES, imagefolder_classes, load_imagefolder, load_imagenette
from .idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, UInt8ImageDataset, load_idx

if TYPE_CHECKING:
    from torchvision.datasets import CIFAR10, ImageFolder

__all__ = ["DATASETS", "DEFAULT_DATASET", "DEFAULT_EVAL_DATASET", "SPLITS", "DatasetSpec", "DatasetUnavailableError",
           "EmbeddedDataError", "IdxFormatError", "canonical_name", "dataset_spec", "default_data_root",
           "load_dataset", "load_tensors"]

DEFAULT_DATASET = "fashion-mnist"
#: The evaluation set used by default: shipped with the repository, no network needed.
DEFAULT_EVAL_DATASET = "fashion-mnist-embedded"


@dataclass(frozen=True)
class DatasetSpec:
    """What a registered dataset is.

    ``num_classes`` is ``None`` (and ``class_names`` empty) for ``imagefolder`` until a tree is given:
    ``dataset_spec("imagefolder", data_root=...)`` reads the class folders.
    """

    name: str
    num_classes: int | None
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    description: str
    splits: tuple[str, ...] = SPLITS
    #: Whether :func:`load_tensors` reads the whole split cheaply (idx/pickle arrays, not image files).
    in_memory: bool = True


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (
        DatasetSpec("fashion-mnist", 10, (1, 28, 28), FASHION_MNIST_CLASSES,
                    "Fashion-MNIST, 60k train / 10k test grey 28x28 (idx files; Debian dataset-fashion-mnist)"),
        DatasetSpec("fashion-mnist-embedded", 10, (1, 28, 28), FASHION_MNIST_CLASSES,
                    "Fixed 1,000-image class-balanced subset of the Fashion-MNIST test set shipped in bench/embedded "
                    "(default evaluation set; offline)", splits=("test",)),
        DatasetSpec("mnist", 10, (1, 28, 28), MNIST_CLASSES, "MNIST, 60k train / 10k test grey 28x28 (idx files)"),
        DatasetSpec("cifar10", 10, (3, 32, 32), CIFAR10_CLASSES,
                    "CIFAR-10, 50k train / 10k test colour 32x32 (torchvision's cifar-10-batches-py)"),
        DatasetSpec("imagenette", 10, (3, 224, 224), IMAGENETTE_CLASSES,
                    "Imagenette (10 ImageNet classes; the paper's ImageNet-10 setting), ImageFolder tree "
                    "<root>/imagenette2[-320|-160]/{train,val}, resize 256 + centre crop 224", in_memory=False),
        DatasetSpec("imagefolder", None, (3, 224, 224), (),
                    "Any ImageFolder tree given as data_root (<root>/{train,val|test}/CLASS/*.png or <root>/CLASS/*), "
                    "resize 256 + centre crop 224", in_memory=False),
    )
}


def canonical_name(name: str) -> str:
    """The registered name of ``name`` (case-insensitive; ``_`` and ``-`` alike); ``ValueError`` listing the
    known names for an unknown one."""
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    return key


def _check_split(spec: DatasetSpec, split: str) -> str:
    if split not in spec.splits:
        raise ValueError(f"dataset {spec.name!r} has no split {split!r}; its splits: {', '.join(spec.splits)}")
    return split


def dataset_spec(name: str, data_root: str | Path | None = None) -> DatasetSpec:
    """The :class:`DatasetSpec` registered as ``name`` (case-insensitive; ``_`` and ``-`` alike).

    For ``imagefolder`` with ``data_root`` given, the returned spec carries the tree's class folders
    (``num_classes`` and ``class_names``). Raises ``ValueError`` listing the known names for an unknown one.
    """
    key = canonical_name(name)
    spec = DATASETS[key]
    if key == "imagefolder" and data_root is not None:
        classes = imagefolder_classes(Path(data_root).expanduser())
        spec = replace(spec, num_classes=len(classes), class_names=tuple(classes))
    return spec


def load_dataset(name: str, split: str, data_root: str | Path | None = None,
                 download: bool = True) -> UInt8ImageDataset | CIFAR10 | ImageFolder:
    """The ``split`` (``"train"`` or ``"test"``) of dataset ``name`` as a map-style Dataset.

    Items are ``(image float [C, H, W] in [0, 1], int label)``. ``data_root`` defaults to
    :func:`default_data_root` (for ``imagefolder`` it is the tree itself and required). ``download`` lets
    torchvision fetch missing files; without network :class:`DatasetUnavailableError` says where to put them.
    ``fashion-mnist-embedded`` has only the ``test`` split and ignores ``data_root``/``download``.
    """
    key = canonical_name(name)
    spec = DATASETS[key]
    _check_split(spec, split)
    if key in ("fashion-mnist", "mnist"):
        data, targets = load_idx(key, split, data_root, download)
        return UInt8ImageDataset(data, targets, spec.class_names)
    if key == "fashion-mnist-embedded":
        return embedded_dataset()
    if key == "cifar10":
        from torchvision import transforms

        return load_cifar10(split, data_root, download, transforms.ToTensor())
    if key == "imagenette":
        return load_imagenette(split, data_root, download)
    if key == "imagefolder":
        return load_imagefolder(split, data_root)
    raise AssertionError(f"no loader for {key}")  # pragma: no cover - every registered name has one


def load_tensors(name: str, split: str, data_root: str | Path | None = None, limit: int | None = None,
                 download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` (default all) items of a split in memory.

    Returns images float32 ``[N, C, H, W]`` in [0, 1] and labels int64 ``[N]``.

    Fast for the array-backed datasets (idx files, the embedded subset, CIFAR-10's pickles): no per-item
    PIL round trip. For ``imagenette``/``imagefolder`` it decodes every image (slow, memory-hungry).
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    key = canonical_name(name)
    spec = DATASETS[key]
    _check_split(spec, split)
    if key in ("fashion-mnist", "mnist"):
        data, targets = load_idx(key, split, data_root, download)
        return UInt8ImageDataset(data, targets, spec.class_names).tensors(limit)
    if key == "fashion-mnist-embedded":
        images, labels, _ = load_embedded(limit)
        return images, labels
    if key == "cifar10":
        return load_cifar10_tensors(split, data_root, limit, download)
    ds = load_dataset(key, split, data_root, download)
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        return torch.empty((0, *spec.input_shape)), torch.empty(0, dtype=torch.int64)
    items = [ds[i] for i in range(n)]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.int64)
