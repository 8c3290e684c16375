"""The registry: every dataset by name, what it is (:class:`DatasetSpec`) and how to load it.

Every dataset yields ``(image, label)`` with the image a float32 tensor ``[C, H, W]`` in ``[0, 1]``
(``transforms.ToTensor``) and **no** mean/std normalisation: the classifiers are certified in pixel space.
The loaders live in one module per family: :mod:`~bench.data.idx` (``fashion-mnist``, ``mnist``),
:mod:`~bench.data.embedded` (``fashion-mnist-embedded``), :mod:`~bench.data.cifar` (``cifar10``, ``cifar100``),
:mod:`~bench.data.tiny_imagenet` (``tiny-imagenet``), :mod:`~bench.data.imagenet` (``imagenet``) and
:mod:`~bench.data.folders` (``imagenette``, ``imagefolder``).

Image size settings: the datasets read from image files (:data:`IMAGE_FILE_DATASETS`) take keyword-only
``image_size`` and ``resize`` (:class:`~bench.data.images.ImageOptions`: shorter side to ``resize``, then a
centre crop of ``image_size``; ``None`` or ``0`` = none) in :func:`load_dataset`, :func:`load_tensors`,
:func:`dataset_spec` and :func:`~bench.data.selection.select_images`; left out (:data:`UNSET`) they are the
dataset's own (:attr:`DatasetSpec.image_options`). The array-backed datasets have one fixed size: passing a
different one is a ``ValueError``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Literal

import torch

from .base import (
    SPLITS,
    CorruptImageError,
    DatasetFormatError,
    DatasetUnavailableError,
    EmbeddedDataError,
    IdxFormatError,
    default_data_root,
)
from .cifar import CIFAR10_CLASSES, CIFAR100_CLASSES, load_cifar
from .embedded import embedded_dataset, load_embedded
from .folders import IMAGENETTE_CLASSES, imagefolder_classes, load_imagefolder, load_imagenette
from .idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, UInt8ImageDataset, load_idx
from .imagenet import IMAGENET_CLASSES, load_imagenet
from .images import IMAGENET_OPTIONS, ImageFileDataset, ImageOptions
from .metadata import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    COHEN_CIFAR_RADII,
    COHEN_IMAGENET_RADII,
    FARS_RADII,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MNIST_MEAN,
    MNIST_STD,
    SLL_RADII,
    TINY_IMAGENET_MEAN,
    TINY_IMAGENET_STD,
    Selection,
    union_of_radii,
)
from .tiny_imagenet import TINY_IMAGENET_OPTIONS, load_tiny_imagenet, tiny_imagenet_classes

__all__ = ["DATASETS", "DEFAULT_DATASET", "DEFAULT_EVAL_DATASET", "IMAGE_FILE_DATASETS", "SELECTIONS", "SPLITS",
           "UNSET", "CorruptImageError", "DatasetFormatError", "DatasetSpec", "DatasetUnavailableError",
           "EmbeddedDataError", "IdxFormatError", "ImageOptions", "Selection", "SizeSetting", "Unset",
           "canonical_name", "dataset_spec", "default_data_root", "image_options", "load_dataset", "load_tensors",
           "reported_radii"]

DEFAULT_DATASET = "fashion-mnist"
#: The evaluation set used by default: shipped with the repository, no network needed.
DEFAULT_EVAL_DATASET = "fashion-mnist-embedded"


class Unset(enum.Enum):
    """Type of :data:`UNSET`."""

    UNSET = "unset"


#: "Not given": an image size setting left to the dataset's default (``None`` means "none").
UNSET: Final = Unset.UNSET
#: An ``image_size`` / ``resize`` argument: pixels, ``None`` (or ``0``) for none, or :data:`UNSET`.
SizeSetting = int | None | Literal[Unset.UNSET]

#: ``(paper, radii)`` pairs, see :mod:`bench.data.metadata`.
_FARS = (("FaRS", FARS_RADII),)
_CIFAR_RADII = (*_FARS, ("Cohen et al.", COHEN_CIFAR_RADII), ("SLL", SLL_RADII))
_IMAGENET_RADII = (*_FARS, ("Cohen et al.", COHEN_IMAGENET_RADII))


@dataclass(frozen=True)
class DatasetSpec:
    """What a registered dataset is.

    * ``num_classes`` is ``None`` (and ``class_names`` empty) for ``imagefolder`` until a tree is given:
      ``dataset_spec("imagefolder", data_root=...)`` reads the class folders. ``tiny-imagenet``'s 200 class
      names come from its ``words.txt`` the same way (empty without ``data_root``).
    * ``input_shape`` ``(C, H, W)`` of every item; for the image-file datasets it follows ``image_options``.
    * ``mean`` / ``std``: the usual per-channel normalisation constants (informational: nothing here
      normalises; ``()`` when unknown).
    * ``radii_by_paper``: ``((paper, radii), ...)`` the l2 radii the papers report on this dataset;
      :attr:`reported_radii` is their sorted union.
    * ``cohen_selection``: Cohen et al.'s test images (every ``skip``-th, ``num_images``), where they used it.
    * ``image_options``: the default size settings of an image-file dataset; ``None`` for a fixed-size one.
    """

    name: str
    num_classes: int | None
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    description: str
    splits: tuple[str, ...] = SPLITS
    #: Whether :func:`load_tensors` reads the whole split cheaply (idx/pickle arrays, not image files).
    in_memory: bool = True
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    radii_by_paper: tuple[tuple[str, tuple[float, ...]], ...] = _FARS
    cohen_selection: Selection | None = None
    image_options: ImageOptions | None = None

    @property
    def reported_radii(self) -> tuple[float, ...]:
        """All radii reported on this dataset, sorted ascending, each once."""
        return union_of_radii(self.radii_by_paper)


_IMAGENET_NOTE = "resize 256 + centre crop 224 by default"

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (
        DatasetSpec("fashion-mnist", 10, (1, 28, 28), FASHION_MNIST_CLASSES,
                    "Fashion-MNIST, 60k train / 10k test grey 28x28 (idx files; Debian dataset-fashion-mnist)",
                    mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD),
        DatasetSpec("fashion-mnist-embedded", 10, (1, 28, 28), FASHION_MNIST_CLASSES,
                    "Fixed 1,000-image class-balanced subset of the Fashion-MNIST test set shipped in bench/embedded "
                    "(default evaluation set; offline)", splits=("test",),
                    mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD),
        DatasetSpec("mnist", 10, (1, 28, 28), MNIST_CLASSES, "MNIST, 60k train / 10k test grey 28x28 (idx files)",
                    mean=MNIST_MEAN, std=MNIST_STD),
        DatasetSpec("cifar10", 10, (3, 32, 32), CIFAR10_CLASSES,
                    "CIFAR-10, 50k train / 10k test colour 32x32 (torchvision's cifar-10-batches-py)",
                    mean=CIFAR10_MEAN, std=CIFAR10_STD, radii_by_paper=_CIFAR_RADII,
                    cohen_selection=Selection(20, 500, "Cohen et al. 2019: every 20th CIFAR-10 test image")),
        DatasetSpec("cifar100", 100, (3, 32, 32), CIFAR100_CLASSES,
                    "CIFAR-100, 50k train / 10k test colour 32x32, 100 fine classes (torchvision's cifar-100-python)",
                    mean=CIFAR100_MEAN, std=CIFAR100_STD, radii_by_paper=_CIFAR_RADII),
        DatasetSpec("tiny-imagenet", 200, (3, 64, 64), (),
                    "Tiny-ImageNet, 100k train / 10k val (= test) colour 64x64, 200 classes (tiny-imagenet-200/: "
                    "wnids.txt, train/<wnid>/images, val/images + val_annotations.txt); no resize", in_memory=False,
                    mean=TINY_IMAGENET_MEAN, std=TINY_IMAGENET_STD, radii_by_paper=(*_FARS, ("SLL", SLL_RADII)),
                    image_options=TINY_IMAGENET_OPTIONS),
        DatasetSpec("imagenet", 1000, (3, 224, 224), IMAGENET_CLASSES,
                    "ImageNet-1k (ILSVRC 2012) class-folder tree <root>/{val,train}/<wnid>/*.JPEG (no devkit "
                    f"needed), {_IMAGENET_NOTE}", in_memory=False, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    radii_by_paper=_IMAGENET_RADII, image_options=IMAGENET_OPTIONS,
                    cohen_selection=Selection(100, 500, "Cohen et al. 2019: every 100th ImageNet val image")),
        DatasetSpec("imagenette", 10, (3, 224, 224), IMAGENETTE_CLASSES,
                    "Imagenette (10 ImageNet classes; the paper's ImageNet-10 setting), ImageFolder tree "
                    f"<root>/imagenette2[-320|-160]/{{train,val}}, {_IMAGENET_NOTE}", in_memory=False,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, radii_by_paper=_IMAGENET_RADII,
                    image_options=IMAGENET_OPTIONS),
        DatasetSpec("imagefolder", None, (3, 224, 224), (),
                    "Any ImageFolder tree given as data_root (<root>/{train,val|test}/CLASS/*.png or <root>/CLASS/*), "
                    f"{_IMAGENET_NOTE} (settings image_size, resize)", in_memory=False,
                    image_options=IMAGENET_OPTIONS),
    )
}

#: The datasets read from image files: they take the ``image_size`` / ``resize`` settings.
IMAGE_FILE_DATASETS = tuple(name for name, spec in DATASETS.items() if spec.image_options is not None)
#: Published test selections by dataset (Cohen et al.'s 500 images).
SELECTIONS: dict[str, Selection] = {name: spec.cohen_selection for name, spec in DATASETS.items()
                                    if spec.cohen_selection is not None}


def canonical_name(name: str) -> str:
    """The registered name of ``name``: case, ``_``, ``-`` and spaces do not matter (``CIFAR_100``, ``cifar-100``
    and ``TinyImageNet`` are ``cifar100`` and ``tiny-imagenet``). ``ValueError`` listing the known names for an
    unknown one."""
    key = name.strip().lower().replace("_", "-")
    if key in DATASETS:
        return key
    squashed = "".join(ch for ch in key if ch.isalnum())
    for known in DATASETS:
        if squashed and squashed == "".join(ch for ch in known if ch.isalnum()):
            return known
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")


def reported_radii(name: str) -> tuple[float, ...]:
    """The l2 radii the papers report on dataset ``name`` (FaRS everywhere, Cohen et al. and SLL where they
    certified it), sorted ascending, each once. ``ValueError`` for an unknown name."""
    return DATASETS[canonical_name(name)].reported_radii


def _check_split(spec: DatasetSpec, split: str) -> str:
    if split not in spec.splits:
        raise ValueError(f"dataset {spec.name!r} has no split {split!r}; its splits: {', '.join(spec.splits)}")
    return split


def image_options(name: str, image_size: SizeSetting = UNSET, resize: SizeSetting = UNSET) -> ImageOptions | None:
    """The :class:`ImageOptions` dataset ``name`` is loaded with; ``None`` for a fixed-size (array-backed) one.

    ``UNSET`` settings take the dataset's defaults (:attr:`DatasetSpec.image_options`). For a fixed-size
    dataset only its own size is accepted (``image_size`` = its height and width or None/0, ``resize`` None/0); other
    values raise ``ValueError`` naming the datasets that take the settings.
    """
    spec = DATASETS[canonical_name(name)]
    default = spec.image_options
    if default is None:
        fixed = spec.input_shape[1] if spec.input_shape[1] == spec.input_shape[2] else None
        if image_size not in (UNSET, None, 0, fixed) or resize not in (UNSET, None, 0):
            raise ValueError(f"dataset {spec.name!r} always has items of shape {spec.input_shape}: image_size/resize "
                             f"apply only to {', '.join(IMAGE_FILE_DATASETS)}")
        return None
    return ImageOptions(default.image_size if image_size is UNSET else image_size,
                        default.resize if resize is UNSET else resize)


def dataset_spec(name: str, data_root: str | Path | None = None, *, image_size: SizeSetting = UNSET,
                 resize: SizeSetting = UNSET) -> DatasetSpec:
    """The :class:`DatasetSpec` registered as ``name`` (spelling as :func:`canonical_name`).

    With ``data_root`` given, ``imagefolder``'s spec carries the tree's class folders (``num_classes`` and
    ``class_names``) and ``tiny-imagenet``'s the classes of its ``wnids.txt`` (200 in the real data set).
    ``image_size``/``resize`` (image-file datasets) set ``input_shape`` and ``image_options``; with
    ``image_size`` None the shape is that of the first test image, read from ``data_root``.

    Raises ``ValueError`` for an unknown name, for settings a dataset does not take, and for a shape that
    needs ``data_root`` without it; the loaders' errors for a bad tree.
    """
    key = canonical_name(name)
    spec = DATASETS[key]
    options = image_options(key, image_size, resize)
    if key == "imagefolder" and data_root is not None:
        classes = imagefolder_classes(Path(data_root).expanduser())
        spec = replace(spec, num_classes=len(classes), class_names=tuple(classes))
    if key == "tiny-imagenet" and data_root is not None:
        names = tiny_imagenet_classes(data_root)[1]
        spec = replace(spec, num_classes=len(names), class_names=tuple(names))
    if options is not None and options != spec.image_options:
        if options.image_size is not None:
            shape = (3, options.image_size, options.image_size)
        elif data_root is None:
            raise ValueError(f"{key} with image_size=None: the input shape is that of the images; pass data_root")
        else:
            dataset = _load_images(key, spec.splits[-1], data_root, False, options)
            shape = dataset.input_shape()
        spec = replace(spec, input_shape=shape, image_options=options)
    return spec


def _load_images(key: str, split: str, data_root: str | Path | None, download: bool,
                 options: ImageOptions) -> ImageFileDataset:
    if key == "imagenette":
        return load_imagenette(split, data_root, download, options)
    if key == "imagenet":
        return load_imagenet(split, data_root, options)
    if key == "tiny-imagenet":
        return load_tiny_imagenet(split, data_root, options)
    if key == "imagefolder":
        return load_imagefolder(split, data_root, options)
    raise AssertionError(f"{key} is not an image-file dataset")  # pragma: no cover


def load_dataset(name: str, split: str, data_root: str | Path | None = None, download: bool = True, *,
                 image_size: SizeSetting = UNSET, resize: SizeSetting = UNSET) -> UInt8ImageDataset | ImageFileDataset:
    """The ``split`` (``"train"`` or ``"test"``) of dataset ``name`` as a map-style Dataset.

    Items are ``(image float32 [C, H, W] in [0, 1], int label)``; both kinds of dataset have ``classes``
    (label order) and ``targets``. ``data_root`` defaults to :func:`default_data_root` (for ``imagefolder`` it
    is the tree itself and required; for ``tiny-imagenet`` the ``tiny-imagenet-200`` folder or its parent).
    ``download`` lets torchvision fetch missing files (MNIST, Fashion-MNIST, CIFAR, Imagenette; ImageNet and
    Tiny-ImageNet cannot be downloaded); without network :class:`DatasetUnavailableError` says where to put
    them. ``image_size``/``resize``: see the module docstring. ``fashion-mnist-embedded`` has only the
    ``test`` split and ignores ``data_root``/``download``.

    Raises ``ValueError`` (unknown name or split, bad settings), :class:`DatasetUnavailableError` (files
    missing), :class:`DatasetFormatError` (files malformed; items: :class:`CorruptImageError`).
    """
    key = canonical_name(name)
    spec = DATASETS[key]
    _check_split(spec, split)
    options = image_options(key, image_size, resize)
    if options is not None:
        return _load_images(key, split, data_root, download, options)
    if key in ("fashion-mnist", "mnist"):
        data, targets = load_idx(key, split, data_root, download)
        return UInt8ImageDataset(data, targets, spec.class_names)
    if key == "fashion-mnist-embedded":
        return embedded_dataset()
    if key in ("cifar10", "cifar100"):
        return load_cifar(key, split, data_root, download)
    raise AssertionError(f"no loader for {key}")  # pragma: no cover - every registered name has one


def load_tensors(name: str, split: str, data_root: str | Path | None = None, limit: int | None = None,
                 download: bool = True, *, image_size: SizeSetting = UNSET,
                 resize: SizeSetting = UNSET) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` (default all) items of a split in memory.

    Returns images float32 ``[N, C, H, W]`` in [0, 1] and labels int64 ``[N]``. Arguments and errors as
    :func:`load_dataset` (plus ``ValueError`` for a negative ``limit``).

    Fast for the array-backed datasets (idx files, the embedded subset, CIFAR's pickles): no per-item
    PIL round trip. For the image-file datasets it decodes every image (slow, memory-hungry).
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    key = canonical_name(name)
    spec = DATASETS[key]
    _check_split(spec, split)
    if key == "fashion-mnist-embedded":
        images, labels, _ = load_embedded(limit)
        return images, labels
    ds = load_dataset(key, split, data_root, download, image_size=image_size, resize=resize)
    if isinstance(ds, UInt8ImageDataset):
        return ds.tensors(limit)
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        shape = ds.input_shape() if ds.options.image_size is not None or len(ds) else spec.input_shape
        return torch.empty((0, *shape)), torch.empty(0, dtype=torch.int64)
    items = [ds[i] for i in range(n)]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.int64)
