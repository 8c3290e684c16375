"""ImageNet-1k (ILSVRC 2012) from a class-folder tree: ``<root>/val/<wnid>/*.JPEG`` (and ``<root>/train/``).

This is the layout torchvision's ``ImageFolder`` reads and most users have (the val images sorted into
their class folders, e.g. by the widely used ``valprep.sh``); torchvision's ``ImageNet`` devkit tarball
is **not** needed. The tree is looked for at ``<data_root>``, ``<data_root>/imagenet`` and
``<data_root>/ILSVRC2012``. A split must hold exactly 1,000 visible class folders named by WordNet id
(``n`` + 8 digits); sorted, they are the labels 0..999 of every ImageNet classifier, whose names are
:data:`~bench.data.imagenet_classes.IMAGENET_CLASSES`. Train and val must have the same folders. Hidden
folders are ignored and an empty class folder is refused (:mod:`bench.data.folders`).
Items: resize 256 + centre crop 224 by default, ``[3, 224, 224]`` in [0, 1], no normalisation.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import DatasetUnavailableError, resolve_root
from .folders import class_folders, scan_class_folders
from .imagenet_classes import IMAGENET_CLASSES
from .images import IMAGENET_OPTIONS, ImageFileDataset, ImageOptions

__all__ = ["IMAGENET_CLASSES", "IMAGENET_DIRS", "imagenet_split_dir", "load_imagenet"]

#: Folders searched under ``<data_root>`` (after ``<data_root>`` itself).
IMAGENET_DIRS = ("imagenet", "ILSVRC2012")
_WNID = re.compile(r"n\d{8}")
LAYOUT = ("<root>/val/<wnid>/*.JPEG (and optionally <root>/train/<wnid>/*.JPEG): the ImageFolder layout with "
          "1000 class folders named by WordNet id (n01440764 ... n15075141); torchvision's ImageNet devkit tarball "
          "is not needed (sort the flat val images into class folders, e.g. with valprep.sh)")


def imagenet_split_dir(data_root: str | Path | None, split: str) -> Path:
    """The folder of ``split`` (``test`` = ``val``): ``<root>[/imagenet|/ILSVRC2012]/{train,val}``.

    Raises :class:`DatasetUnavailableError` stating the expected layout when none exists.
    """
    root = resolve_root(data_root)
    sub = "train" if split == "train" else "val"
    candidates = [c / sub for c in (root, *(root / d for d in IMAGENET_DIRS))]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise DatasetUnavailableError(f"imagenet {split} split not found (looked for {', '.join(map(str, candidates))}); "
                                  f"expected {LAYOUT}. It cannot be downloaded here (image-net.org requires an "
                                  "account)")


def _imagenet_classes(folder: Path) -> list[str]:
    classes = class_folders(folder)
    odd = [c for c in classes if not _WNID.fullmatch(c)]
    if len(classes) != len(IMAGENET_CLASSES) or odd:
        detail = f"folders not named by WordNet id: {', '.join(odd[:3])}" if odd else f"{len(classes)} class folders"
        raise DatasetUnavailableError(f"imagenet: {folder} has {detail}; expected {LAYOUT}. For another class set "
                                      "use the 'imagefolder' dataset")
    return classes


def load_imagenet(split: str, data_root: str | Path | None,
                  options: ImageOptions = IMAGENET_OPTIONS) -> ImageFileDataset:
    """ImageNet's ``split`` (``test`` reads ``val``) as an :class:`ImageFileDataset` labelled by sorted wnid.

    Raises :class:`DatasetUnavailableError` (stating the layout) for a missing split, a wrong number of
    class folders, an empty class folder; ``ValueError`` when train and val have different class folders.
    """
    folder = imagenet_split_dir(data_root, split)
    classes = _imagenet_classes(folder)
    other = folder.parent / ("val" if split == "train" else "train")
    if other.is_dir() and class_folders(other) != classes:
        raise ValueError(f"imagenet: the class folders of {folder} and {other} differ; every split needs the same "
                         "1000 WordNet ids for the labels to agree")
    return ImageFileDataset(folder, scan_class_folders(folder, classes, "imagenet"), classes, options)
