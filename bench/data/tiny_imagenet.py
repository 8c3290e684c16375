"""Tiny-ImageNet (200 classes, 64x64) from the standard ``tiny-imagenet-200/`` folder.

Layout (the extracted ``tiny-imagenet-200.zip``, http://cs231n.stanford.edu/tiny-imagenet-200.zip)::

    tiny-imagenet-200/wnids.txt                      the 200 WordNet ids, one a line
    tiny-imagenet-200/words.txt                      "wnid<TAB>names" (optional; class names)
    tiny-imagenet-200/train/<wnid>/images/*.JPEG     500 a class
    tiny-imagenet-200/val/images/*.JPEG              10,000 images ...
    tiny-imagenet-200/val/val_annotations.txt        ... labelled by "file<TAB>wnid<TAB>x0 y0 x1 y1"

The ``test`` split is ``val`` (the official test images have no labels). The classes are the **sorted**
wnids of ``wnids.txt`` (as an ``ImageFolder`` over ``train/`` would order them); train labels come from the
class folders and val labels from ``val_annotations.txt``, both mapped through that one list, so the class
list and the labels always agree. A wnid outside ``wnids.txt``, an annotated file that is missing, an image
without annotation, or a class with no training image is refused (one line naming it). Val images are
kept in the annotation file's order. No download: torchvision has no Tiny-ImageNet dataset.
"""

from __future__ import annotations

from pathlib import Path

from .base import DatasetFormatError, DatasetUnavailableError, resolve_root
from .folders import scan_class_folders
from .images import ImageFileDataset, ImageOptions, image_files

__all__ = ["TINY_IMAGENET_DIR", "TINY_IMAGENET_OPTIONS", "load_tiny_imagenet", "tiny_imagenet_classes",
           "tiny_imagenet_dir"]

TINY_IMAGENET_DIR = "tiny-imagenet-200"
_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
#: The images as they are: 64x64, no resize (a 64 centre crop checks the size).
TINY_IMAGENET_OPTIONS = ImageOptions(64, None)


def tiny_imagenet_dir(data_root: str | Path | None) -> Path:
    """The ``tiny-imagenet-200`` folder: ``data_root`` itself when it holds ``wnids.txt``, else
    ``<data_root>/tiny-imagenet-200``. Raises :class:`DatasetUnavailableError` describing the layout otherwise."""
    root = resolve_root(data_root)
    for candidate in (root, root / TINY_IMAGENET_DIR):
        if (candidate / "wnids.txt").is_file():
            return candidate
    raise DatasetUnavailableError(
        f"tiny-imagenet not found: neither {root / 'wnids.txt'} nor {root / TINY_IMAGENET_DIR / 'wnids.txt'} exists. "
        f"Extract tiny-imagenet-200.zip ({_URL}) into {root} (expected: {TINY_IMAGENET_DIR}/wnids.txt, words.txt, "
        "train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt), or pass the "
        f"{TINY_IMAGENET_DIR} folder itself as data_root")


def _read_wnids(folder: Path) -> list[str]:
    path = folder / "wnids.txt"
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not wnids:
        raise DatasetFormatError(f"{path}: no WordNet ids")
    duplicates = sorted({w for i, w in enumerate(wnids) if w in wnids[:i]})
    if duplicates:
        raise DatasetFormatError(f"{path}: WordNet ids listed twice: {', '.join(duplicates[:5])}")
    return sorted(wnids)


def tiny_imagenet_classes(data_root: str | Path | None) -> tuple[list[str], list[str]]:
    """``(wnids, names)`` in label order: the sorted wnids of ``wnids.txt`` and, for each, the first name of
    its ``words.txt`` line (the wnid itself when ``words.txt`` or the line is missing)."""
    folder = tiny_imagenet_dir(data_root)
    wnids = _read_wnids(folder)
    words: dict[str, str] = {}
    words_path = folder / "words.txt"
    if words_path.is_file():
        for line in words_path.read_text(encoding="utf-8", errors="replace").splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
    return wnids, [words.get(w) or w for w in wnids]


def _val_samples(folder: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    """``[(val image, label)]`` in the order of ``val/val_annotations.txt``, every image annotated exactly once."""
    annotations = folder / "val" / "val_annotations.txt"
    images = folder / "val" / "images"
    if not annotations.is_file() or not images.is_dir():
        raise DatasetUnavailableError(f"tiny-imagenet: {annotations} or {images}/ is missing (expected val/images/"
                                      "*.JPEG labelled by val/val_annotations.txt: file<TAB>wnid<TAB>box)")
    label_of = {w: i for i, w in enumerate(wnids)}
    on_disk = {p.name: p for p in image_files(images)}
    samples: list[tuple[Path, int]] = []
    seen: set[str] = set()
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DatasetFormatError(f"{annotations}:{number}: expected file<TAB>wnid<TAB>..., got {line.strip()!r}")
        name, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in label_of:
            raise DatasetFormatError(f"{annotations}:{number}: {wnid!r} is not in wnids.txt (a label no class has)")
        if name in seen:
            raise DatasetFormatError(f"{annotations}:{number}: {name} is annotated twice")
        if name not in on_disk:
            raise DatasetFormatError(f"{annotations}:{number}: {images / name} does not exist")
        seen.add(name)
        samples.append((on_disk[name], label_of[wnid]))
    unlabelled = sorted(set(on_disk) - seen)
    if unlabelled:
        raise DatasetFormatError(f"tiny-imagenet: {len(unlabelled)} image(s) of {images} have no line in "
                                 f"{annotations.name} (first: {unlabelled[0]}); every val image needs its label")
    return samples


def load_tiny_imagenet(split: str, data_root: str | Path | None,
                       options: ImageOptions = TINY_IMAGENET_OPTIONS) -> ImageFileDataset:
    """Tiny-ImageNet's ``split`` (``test`` reads ``val``) as an :class:`ImageFileDataset`.

    ``data_root`` is the ``tiny-imagenet-200`` folder or its parent. Items are float32 ``[3, 64, 64]`` in
    [0, 1] by default (``options``: no resize, a 64 centre crop, i.e. the images as they are). ``classes``
    are the sorted wnids. Raises :class:`DatasetUnavailableError` for a missing folder or an empty class,
    :class:`DatasetFormatError` for inconsistent lists (see the module docstring).
    """
    folder = tiny_imagenet_dir(data_root)
    wnids = _read_wnids(folder)
    if split == "train":
        train = folder / "train"
        if not train.is_dir():
            raise DatasetUnavailableError(f"tiny-imagenet: {train}/ is missing (expected train/<wnid>/images/*.JPEG)")
        known = set(wnids)
        extra = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith(".")
                       and p.name not in known)
        if extra:
            raise DatasetFormatError(f"tiny-imagenet: {train} has class folders not in wnids.txt: "
                                     f"{', '.join(extra[:5])}")
        samples = scan_class_folders(train, [f"{w}/images" for w in wnids], "tiny-imagenet")
    else:
        samples = _val_samples(folder, wnids)
    return ImageFileDataset(folder / ("train" if split == "train" else "val"), samples, wnids, options)
