"""Class-folder trees (torchvision's ``ImageFolder`` layout): ``imagenette`` and any ``imagefolder`` tree.

Both are :class:`~bench.data.images.ImageFileDataset` s (items ``[3, H, W]`` in [0, 1], no mean/std
normalisation; by default resize 256 + centre crop 224, :class:`~bench.data.images.ImageOptions`) whose
classes are :func:`class_folders`: the visible sub-folders of a split, sorted, and whose samples are
:func:`scan_class_folders`. So the class list and the labels always agree:

* hidden folders (``.ipynb_checkpoints/``, ``.git/``) are no classes (torchvision alone would count them,
  shifting every label by one), and hidden files or folders inside a class folder are not read;
* an **empty** class folder (no image file) is refused with a one-line :class:`DatasetUnavailableError`
  naming it, as torchvision's ``ImageFolder`` refuses it (with a traceback): dropping it would shift the
  labels of every later class, and keeping it silently would hide a broken extraction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.error import URLError

from .base import SPLITS, DatasetUnavailableError, resolve_root, short_reason
from .images import IMAGENET_OPTIONS, ImageFileDataset, ImageOptions, image_files

__all__ = ["IMAGENETTE_CLASSES", "IMAGENETTE_DIRS", "IMAGENETTE_WNIDS", "class_folders", "imagefolder_classes",
           "imagenet_transform", "load_imagefolder", "load_imagenette", "scan_class_folders"]

#: Imagenette's ten ImageNet classes, by WordNet id in sorted order (= the label order).
IMAGENETTE_WNIDS = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
                    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257")
IMAGENETTE_CLASSES = ("tench", "English springer", "cassette player", "chain saw", "church",
                      "French horn", "garbage truck", "gas pump", "golf ball", "parachute")
#: Imagenette archive folders searched under ``<data_root>`` (after ``<data_root>`` itself).
IMAGENETTE_DIRS = ("imagenette2", "imagenette2-320", "imagenette2-160")


def imagenet_transform(resize: int = 256, crop: int = 224) -> Callable:
    """Resize the shorter side to ``resize``, centre-crop ``crop`` x ``crop``, ToTensor ([0, 1], no normalisation)."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop), transforms.ToTensor()])


def class_folders(folder: Path) -> list[str]:
    """The classes of one split folder: its sub-folders not starting with ``.``, sorted by name.

    The one definition of an image tree's classes: the registry reports it and the datasets label by it.
    """
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_class_folders(folder: Path, classes: Sequence[str], dataset: str) -> list[tuple[Path, int]]:
    """``[(image path, label)]`` of a split folder: the :func:`~bench.data.images.image_files` of
    ``folder/classes[i]`` labelled ``i``, class by class.

    Raises :class:`DatasetUnavailableError` (one line, naming ``dataset`` and the folders) when a class
    folder is missing or holds no image file: an empty class is never dropped (a label shift) nor kept.
    """
    samples: list[tuple[Path, int]] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        sub = folder / name
        files = image_files(sub) if sub.is_dir() else []
        if not files:
            empty.append(str(sub))
        samples.extend((path, label) for path in files)
    if empty:
        more = f" and {len(empty) - 3} more" if len(empty) > 3 else ""
        raise DatasetUnavailableError(f"{dataset}: class folder {', '.join(empty[:3])}{more} has no image file "
                                      "(.jpg, .jpeg, .png, ...); an empty class would shift or hide labels: "
                                      "add its images or remove the folder from every split")
    return samples


def _image_folder(folder: Path, classes: Sequence[str], dataset: str, options: ImageOptions) -> ImageFileDataset:
    return ImageFileDataset(folder, scan_class_folders(folder, classes, dataset), classes, options)


# --------------------------------------------------------------------------------------------------- imagefolder


def imagefolder_split_dir(root: Path, split: str) -> Path:
    """``<root>/train`` for train; ``<root>/test`` or ``<root>/val`` for test; a flat ``<root>/CLASS/`` for either."""
    names = ("train",) if split == "train" else ("test", "val")
    for sub in names:
        if (root / sub).is_dir():
            return root / sub
    if not root.is_dir():
        raise DatasetUnavailableError(f"imagefolder: {root} is not a directory; pass data_root=<tree> with "
                                      "<tree>/{train,val}/CLASS/*.png or <tree>/CLASS/*.png")
    if any((root / s).is_dir() for s in ("train", "test", "val")):
        raise DatasetUnavailableError(f"imagefolder: {root} has no {'/'.join(names)} folder for the {split} split")
    if not class_folders(root):
        raise DatasetUnavailableError(f"imagefolder: {root} has no class folders (expected <root>/CLASS/*.png "
                                      "or <root>/{train,val}/CLASS/*.png)")
    return root


def _imagefolder_class_source(root: Path) -> Path:
    """The split folder whose classes are the tree's: the train split's, else the test split's."""
    for split in SPLITS:
        try:
            return imagefolder_split_dir(root, split)
        except DatasetUnavailableError:
            continue
    raise DatasetUnavailableError(f"imagefolder: no class folders found under {root}")


def imagefolder_classes(root: Path) -> list[str]:
    """The classes of the tree at ``root`` (:func:`class_folders` of its train split, else of its test split)."""
    return class_folders(_imagefolder_class_source(root))


def load_imagefolder(split: str, data_root: str | Path | None,
                     options: ImageOptions = IMAGENET_OPTIONS) -> ImageFileDataset:
    """The ``split`` of the ImageFolder tree ``data_root``, labelled by :func:`imagefolder_classes`.

    Every split must have the tree's class folders, so that a label means the same class in each; items are
    made by ``options`` (default resize 256 + centre crop 224). Raises ``ValueError`` without ``data_root``
    or when the splits' classes differ, :class:`DatasetUnavailableError` for a missing split or an empty class.
    """
    if data_root is None:
        raise ValueError("the 'imagefolder' dataset needs data_root=<path of the ImageFolder tree>")
    root = Path(data_root).expanduser()
    folder = imagefolder_split_dir(root, split)
    source = _imagefolder_class_source(root)
    classes = class_folders(source)
    if not classes:
        raise DatasetUnavailableError(f"imagefolder: {source} has no class folders (expected {source}/CLASS/*.png)")
    if folder != source and class_folders(folder) != classes:
        raise ValueError(f"imagefolder: the class folders of {folder} ({', '.join(class_folders(folder)) or 'none'}) "
                         f"differ from those of {source} ({', '.join(classes)}); every split needs the same classes "
                         "for the labels to agree")
    return _image_folder(folder, classes, "imagefolder", options)


# --------------------------------------------------------------------------------------------------- imagenette


def _imagenette_split_dir(root: Path, split: str) -> Path | None:
    sub = "train" if split == "train" else "val"
    for candidate in (root, *(root / d for d in IMAGENETTE_DIRS)):
        if (candidate / sub).is_dir():
            return candidate / sub
    return None


def load_imagenette(split: str, data_root: str | Path | None, download: bool,
                    options: ImageOptions = IMAGENET_OPTIONS) -> ImageFileDataset:
    """Imagenette's ``split`` (``test`` reads ``val``) from ``<data_root>[/imagenette2[-320|-160]]``.

    ``download`` lets torchvision fetch the 320 px archive when no tree is found. Items are made by
    ``options`` (default resize 256 + centre crop 224).
    """
    root = resolve_root(data_root)
    folder = _imagenette_split_dir(root, split)
    sub = "train" if split == "train" else "val"
    tried = ", ".join(str(c / sub) for c in (root, *(root / d for d in IMAGENETTE_DIRS)))
    if folder is None:
        place = (f"extract imagenette2-320.tgz (or imagenette2.tgz / imagenette2-160.tgz, "
                 f"https://github.com/fastai/imagenette) into {root}, "
                 f"or put an ImageFolder tree at {root}/{{train,val}}")
        if not download:
            raise DatasetUnavailableError(f"imagenette {split} split not found (looked for {tried}) and "
                                          f"download=False; {place}")
        from torchvision import datasets as tvd

        try:
            tvd.Imagenette(str(root), split=sub, size="320px", download=True)
        except (URLError, OSError, RuntimeError) as exc:
            raise DatasetUnavailableError(f"could not download imagenette into {root}: {short_reason(exc)}. This "
                                          f"machine seems to have no network access. Looked for {tried}; {place}") \
                from None
        folder = _imagenette_split_dir(root, split)
        if folder is None:
            raise DatasetUnavailableError(f"imagenette: the download finished but none of {tried} exists")
    classes = class_folders(folder)
    if tuple(classes) != IMAGENETTE_WNIDS:
        raise ValueError(f"imagenette: {folder} has class folders {classes}, not Imagenette's 10 WordNet ids "
                         f"{list(IMAGENETTE_WNIDS)}; use the 'imagefolder' dataset for other trees")
    return _image_folder(folder, classes, "imagenette", options)
