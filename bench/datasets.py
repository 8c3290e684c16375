"""Datasets by name: ``fashion-mnist`` (default), ``fashion-mnist-embedded``, ``mnist``, ``cifar10``, ``imagenette``,
``imagefolder``.

Every dataset yields ``(image, label)`` with the image a float tensor ``[C, H, W]`` in ``[0, 1]``
(``transforms.ToTensor``) and **no** mean/std normalisation: the classifiers are certified in pixel space.

* ``fashion-mnist`` / ``mnist``: the idx files are read directly (:func:`read_idx`) from, in order,
  ``<data_root>/FashionMNIST/raw`` (torchvision's layout, plain or ``.gz``), the Debian package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``; Fashion-MNIST only), and last a
  torchvision download when ``download=True``.
* ``fashion-mnist-embedded``: a fixed, class-balanced 1,000-image subset of the Fashion-MNIST test set
  shipped in ``bench/embedded/`` (SHA-256 checked on load), so evaluation runs offline on a fresh machine.
* ``cifar10``: torchvision's ``CIFAR10`` (``<data_root>/cifar-10-batches-py``).
* ``imagenette`` / ``imagefolder``: ``torchvision.datasets.ImageFolder`` with the ImageNet evaluation
  transform (resize 256, centre crop 224) -> ``[3, 224, 224]``.

When data cannot be found or downloaded, :class:`DatasetUnavailableError` says where to put the files.

CLI: ``python -m bench.datasets build-embedded`` regenerates the embedded subset from the idx files;
``python -m bench.datasets info NAME`` prints a dataset's spec and sizes; ``python -m bench.datasets list``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import math
import os
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence
from urllib.error import URLError

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "DATASETS", "DEFAULT_DATASET", "DEFAULT_EVAL_DATASET", "EMBEDDED_PATH", "DatasetSpec", "DatasetUnavailableError",
    "EmbeddedDataError", "IdxFormatError", "UInt8ImageDataset", "build_embedded_subset", "dataset_spec",
    "default_data_root", "find_idx_files", "imagenet_transform", "load_dataset", "load_embedded", "load_tensors",
    "read_idx",
]

SPLITS = ("train", "test")
DEFAULT_DATASET = "fashion-mnist"
#: The evaluation set used by default: shipped with the repository, no network needed.
DEFAULT_EVAL_DATASET = "fashion-mnist-embedded"

PACKAGE_DIR = Path(__file__).resolve().parent
EMBEDDED_PATH = PACKAGE_DIR / "embedded" / "fashion_mnist_eval.npz"
#: Images per class in the embedded subset.
EMBEDDED_PER_CLASS = 100

#: System-wide directories holding the raw idx files (Debian packages), searched after ``<data_root>``.
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
    "mnist": (),  # no Debian package ships MNIST's idx files
}

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
                 "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: Imagenette's ten ImageNet classes, by WordNet id in sorted order (= ImageFolder's label order).
IMAGENETTE_WNIDS = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
                    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257")
IMAGENETTE_CLASSES = ("tench", "English springer", "cassette player", "chain saw", "church",
                      "French horn", "garbage truck", "gas pump", "golf ball", "parachute")
#: Imagenette archive folders searched under ``<data_root>`` (after ``<data_root>`` itself).
IMAGENETTE_DIRS = ("imagenette2", "imagenette2-320", "imagenette2-160")


class DatasetUnavailableError(RuntimeError):
    """The data set's files are not on this machine and could not be downloaded (the message says where to put them)."""


class IdxFormatError(ValueError):
    """A file that is not a well-formed idx file of unsigned bytes."""


class EmbeddedDataError(RuntimeError):
    """The shipped embedded subset is missing, corrupted, or does not match its recorded SHA-256."""


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


# --------------------------------------------------------------------------------------------------- names


def _canonical(name: str) -> str:
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
    key = _canonical(name)
    spec = DATASETS[key]
    if key == "imagefolder" and data_root is not None:
        classes = _imagefolder_classes(Path(data_root))
        spec = replace(spec, num_classes=len(classes), class_names=tuple(classes))
    return spec


def default_data_root() -> Path:
    """``$FARS_DATA_ROOT`` if set, else ``data/`` at the repository root (git-ignored)."""
    env = os.environ.get("FARS_DATA_ROOT")
    return Path(env) if env else PACKAGE_DIR.parent / "data"


def _root(data_root: str | Path | None) -> Path:
    return Path(data_root).expanduser() if data_root is not None else default_data_root()


# --------------------------------------------------------------------------------------------------- idx files


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an idx file of unsigned bytes (plain or gzip-compressed, told apart by content) as a uint8 tensor.

    The magic number must be ``00 00 08 NDIM``; the payload must hold exactly ``prod(dims)`` bytes.
    Raises :class:`IdxFormatError` naming the file otherwise.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxFormatError(f"{path}: corrupted gzip stream ({exc})") from None
    if len(raw) < 4:
        raise IdxFormatError(f"{path}: {len(raw)} bytes, too short for an idx header")
    magic = struct.unpack(">I", raw[:4])[0]
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise IdxFormatError(f"{path}: bad idx magic number 0x{magic:08x}; expected 0x000008NN (two zero bytes, "
                             "type 0x08 = unsigned byte, NN = 1..4 dimensions) - not an idx file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxFormatError(f"{path}: truncated header ({len(raw)} bytes, {ndim} dimensions need {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims)
    if len(raw) - header != expected:
        raise IdxFormatError(f"{path}: dimensions {dims} need {expected} bytes of data but the file has "
                             f"{len(raw) - header} (truncated or not an idx file)")
    array = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    return torch.from_numpy(array.copy())


def _idx_names(split: str) -> tuple[str, str]:
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _torchvision_folder(name: str) -> str:
    return {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}[name]


def _idx_search_dirs(name: str, data_root: str | Path | None) -> list[Path]:
    return [_root(data_root) / _torchvision_folder(name) / "raw", *SYSTEM_DIRS.get(name, ())]


def find_idx_files(name: str, split: str, data_root: str | Path | None = None) -> tuple[Path, Path] | None:
    """The ``(images, labels)`` idx files of ``split`` for ``fashion-mnist``/``mnist``, or ``None``.

    Looks in ``<data_root>/FashionMNIST/raw`` (``MNIST/raw``), then the system directories of
    :data:`SYSTEM_DIRS`; in each, a plain file is preferred to its ``.gz``.
    """
    key = _canonical(name)
    if key == "fashion-mnist-embedded":
        key = "fashion-mnist"
    if key not in SYSTEM_DIRS:
        raise ValueError(f"dataset {name!r} is not stored as idx files")
    for folder in _idx_search_dirs(key, data_root):
        found = []
        for base in _idx_names(split):
            for candidate in (folder / base, folder / f"{base}.gz"):
                if candidate.is_file():
                    found.append(candidate)
                    break
        if len(found) == 2:
            return found[0], found[1]
    return None


def _read_idx_pair(images_path: Path, labels_path: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise IdxFormatError(f"{images_path}: expected images [N, H, W], got dimensions {tuple(images.shape)}")
    if labels.ndim != 1:
        raise IdxFormatError(f"{labels_path}: expected labels [N], got dimensions {tuple(labels.shape)}")
    if len(images) != len(labels):
        raise IdxFormatError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if len(labels) and int(labels.max()) >= num_classes:
        raise IdxFormatError(f"{labels_path}: label {int(labels.max())} out of range for {num_classes} classes")
    return images, labels.long()


def _short_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _load_idx_uint8(name: str, split: str, data_root: str | Path | None,
                    download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, 28, 28] and int64 labels [N] of ``fashion-mnist``/``mnist`` (lookup order in module doc)."""
    spec = DATASETS[name]
    files = find_idx_files(name, split, data_root)
    if files is not None:
        return _read_idx_pair(*files, spec.num_classes or 10)
    root = _root(data_root)
    images_name, labels_name = _idx_names(split)
    where = [str(d) for d in _idx_search_dirs(name, data_root)]
    place = (f"put {images_name}(.gz) and {labels_name}(.gz) into {root / _torchvision_folder(name) / 'raw'}"
             + (" or install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
                if name == "fashion-mnist" else ""))
    offline = " For the offline evaluation subset use the dataset 'fashion-mnist-embedded'." \
        if name == "fashion-mnist" else ""
    if not download:
        raise DatasetUnavailableError(f"{spec.name} {split} split not found (looked in {', '.join(where)}) and "
                                      f"download=False. To use it, {place}, or allow the download.{offline}")
    from torchvision import datasets as tvd

    cls = tvd.FashionMNIST if name == "fashion-mnist" else tvd.MNIST
    try:
        ds = cls(str(root), train=split == "train", download=True)
    except (URLError, OSError, RuntimeError) as exc:
        raise DatasetUnavailableError(
            f"could not download {spec.name} into {root / _torchvision_folder(name) / 'raw'}: {_short_reason(exc)}. "
            f"This machine seems to have no network access. Looked in {', '.join(where)}; {place}.{offline}"
        ) from None
    return ds.data, ds.targets.long()


# --------------------------------------------------------------------------------------------------- datasets


class UInt8ImageDataset(Dataset):
    """``(float image [C, H, W] in [0, 1], int label)`` from uint8 tensors, as torchvision's MNIST with ToTensor.

    ``data`` is uint8 ``[N, H, W]`` (one channel) or ``[N, C, H, W]``; ``targets`` int64 ``[N]``.
    """

    def __init__(self, data: torch.Tensor, targets: torch.Tensor, classes: Sequence[str],
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        if data.dtype != torch.uint8 or data.ndim not in (3, 4):
            raise ValueError(f"data must be uint8 [N, H, W] or [N, C, H, W], got {data.dtype} {tuple(data.shape)}")
        if targets.ndim != 1 or len(targets) != len(data):
            raise ValueError(f"targets must be [N] with N = {len(data)}, got {tuple(targets.shape)}")
        self.data = data
        self.targets = targets.long()
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.data[index]
        if image.ndim == 2:
            image = image.unsqueeze(0)
        x = image.to(torch.float32).div(255)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[index])

    def tensors(self, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """All (or the first ``limit``) images as float32 ``[N, C, H, W]`` in [0, 1] and labels int64 ``[N]``."""
        data, targets = self.data[:limit], self.targets[:limit]
        if data.ndim == 3:
            data = data.unsqueeze(1)
        return data.to(torch.float32).div_(255), targets.clone()


class EmbeddedSubset(UInt8ImageDataset):
    """The shipped Fashion-MNIST evaluation subset; ``test_indices[i]`` is item i's index in the full test set."""

    def __init__(self, data: torch.Tensor, targets: torch.Tensor, test_indices: torch.Tensor) -> None:
        super().__init__(data, targets, FASHION_MNIST_CLASSES)
        self.test_indices = test_indices


def imagenet_transform(resize: int = 256, crop: int = 224) -> Callable:
    """Resize the shorter side to ``resize``, centre-crop ``crop`` x ``crop``, ToTensor ([0, 1], no normalisation)."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop), transforms.ToTensor()])


def _has_class_dirs(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir())


def _imagefolder_split_dir(root: Path, split: str) -> Path:
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
    if not _has_class_dirs(root):
        raise DatasetUnavailableError(f"imagefolder: {root} has no class folders (expected <root>/CLASS/*.png "
                                      "or <root>/{train,val}/CLASS/*.png)")
    return root


def _imagefolder_classes(root: Path) -> list[str]:
    for split in SPLITS:
        try:
            folder = _imagefolder_split_dir(root, split)
        except DatasetUnavailableError:
            continue
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    raise DatasetUnavailableError(f"imagefolder: no class folders found under {root}")


def _imagenette_split_dir(root: Path, split: str) -> Path | None:
    sub = "train" if split == "train" else "val"
    for candidate in (root, *(root / d for d in IMAGENETTE_DIRS)):
        if (candidate / sub).is_dir():
            return candidate / sub
    return None


def _load_imagenette(split: str, data_root: str | Path | None, download: bool) -> Dataset:
    from torchvision import datasets as tvd

    root = _root(data_root)
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
        try:
            tvd.Imagenette(str(root), split=sub, size="320px", download=True)
        except (URLError, OSError, RuntimeError) as exc:
            raise DatasetUnavailableError(f"could not download imagenette into {root}: {_short_reason(exc)}. This "
                                          f"machine seems to have no network access. Looked for {tried}; {place}") \
                from None
        folder = _imagenette_split_dir(root, split)
        if folder is None:
            raise DatasetUnavailableError(f"imagenette: the download finished but none of {tried} exists")
    dataset = tvd.ImageFolder(str(folder), transform=imagenet_transform())
    if tuple(dataset.classes) != IMAGENETTE_WNIDS:
        raise ValueError(f"imagenette: {folder} has class folders {dataset.classes}, not Imagenette's 10 WordNet ids "
                         f"{list(IMAGENETTE_WNIDS)}; use the 'imagefolder' dataset for other trees")
    return dataset


def _load_imagefolder(split: str, data_root: str | Path | None) -> Dataset:
    from torchvision import datasets as tvd

    if data_root is None:
        raise ValueError("the 'imagefolder' dataset needs data_root=<path of the ImageFolder tree>")
    folder = _imagefolder_split_dir(Path(data_root).expanduser(), split)
    return tvd.ImageFolder(str(folder), transform=imagenet_transform())


def _load_cifar10(split: str, data_root: str | Path | None, download: bool, transform: Callable | None):
    """torchvision's CIFAR10 (which checks every batch file's MD5), with clear errors."""
    from torchvision import datasets as tvd

    root = _root(data_root)
    folder = root / tvd.CIFAR10.base_folder
    place = (f"extract cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) into {root} so that "
             f"{folder}/data_batch_1..5, test_batch and batches.meta exist")
    try:
        return tvd.CIFAR10(str(root), train=split == "train", download=download, transform=transform)
    except (URLError, OSError, RuntimeError) as exc:
        if download:
            raise DatasetUnavailableError(f"could not download cifar10 into {root}: {_short_reason(exc)}. This "
                                          f"machine seems to have no network access; {place}") from None
        raise DatasetUnavailableError(f"cifar10 not found or corrupted under {folder} (torchvision checks the MD5 of "
                                      f"each batch file: {_short_reason(exc)}) and download=False; {place}") from None


def load_dataset(name: str, split: str, data_root: str | Path | None = None, download: bool = True) -> Dataset:
    """The ``split`` (``"train"`` or ``"test"``) of dataset ``name`` as a map-style Dataset.

    Items are ``(image float [C, H, W] in [0, 1], int label)``. ``data_root`` defaults to
    :func:`default_data_root` (for ``imagefolder`` it is the tree itself and required). ``download`` lets
    torchvision fetch missing files; without network :class:`DatasetUnavailableError` says where to put them.
    ``fashion-mnist-embedded`` has only the ``test`` split and ignores ``data_root``/``download``.
    """
    key = _canonical(name)
    spec = DATASETS[key]
    _check_split(spec, split)
    if key in ("fashion-mnist", "mnist"):
        data, targets = _load_idx_uint8(key, split, data_root, download)
        return UInt8ImageDataset(data, targets, spec.class_names)
    if key == "fashion-mnist-embedded":
        return _embedded_dataset()
    if key == "cifar10":
        from torchvision import transforms

        return _load_cifar10(split, data_root, download, transforms.ToTensor())
    if key == "imagenette":
        return _load_imagenette(split, data_root, download)
    if key == "imagefolder":
        return _load_imagefolder(split, data_root)
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
    key = _canonical(name)
    spec = DATASETS[key]
    _check_split(spec, split)
    if key in ("fashion-mnist", "mnist"):
        data, targets = _load_idx_uint8(key, split, data_root, download)
        return UInt8ImageDataset(data, targets, spec.class_names).tensors(limit)
    if key == "fashion-mnist-embedded":
        images, labels, _ = load_embedded(limit)
        return images, labels
    if key == "cifar10":
        ds = _load_cifar10(split, data_root, download, None)
        data = torch.from_numpy(np.ascontiguousarray(ds.data[:limit])).permute(0, 3, 1, 2).contiguous()
        return data.to(torch.float32).div_(255), torch.as_tensor(ds.targets[:limit], dtype=torch.int64)
    ds = load_dataset(key, split, data_root, download)
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        return torch.empty((0, *spec.input_shape)), torch.empty(0, dtype=torch.int64)
    items = [ds[i] for i in range(n)]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.int64)


# --------------------------------------------------------------------------------------------------- embedded subset


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """Digest of the arrays themselves (names, dtypes, shapes, bytes), independent of the zip/deflate encoding."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        arr = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{arr.dtype.str}:{arr.shape};".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _write_npz_deterministic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but byte-reproducible: fixed timestamps and attributes, members in key order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), version=(1, 0), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue(), compresslevel=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


def select_balanced(labels: np.ndarray, per_class: int, num_classes: int) -> np.ndarray:
    """Sorted indices of the first ``per_class`` items of each class, in set order.

    The result keeps the set's own order (ascending index), so taking every k-th item of the subset
    (Cohen et al.'s ``skip``) samples it as evenly as the full set; only the whole subset is exactly balanced.
    """
    per = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)[:per_class]
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} items, {per_class} needed")
        per.append(idx)
    return np.sort(np.concatenate(per)).astype(np.int64)


def build_embedded_subset(out_path: str | Path = EMBEDDED_PATH, source_dir: str | Path | None = None,
                          per_class: int = EMBEDDED_PER_CLASS) -> dict:
    """Regenerate the embedded Fashion-MNIST evaluation subset and its JSON sidecar; returns the sidecar's record.

    Reads ``t10k-images-idx3-ubyte(.gz)`` and ``t10k-labels-idx1-ubyte(.gz)`` from ``source_dir``
    (default: the Fashion-MNIST lookup of :func:`find_idx_files`), takes the first ``per_class`` test
    images of each class (:func:`select_balanced`) and writes a byte-reproducible ``.npz`` with
    ``images`` uint8 [N, 28, 28], ``labels`` uint8 [N] and ``test_indices`` uint16 [N]. The sidecar
    ``<out>.json`` records the file's SHA-256 (checked by :func:`load_embedded`) and the arrays' digest.
    """
    out_path = Path(out_path)
    if source_dir is None:
        files = find_idx_files("fashion-mnist", "test")
        if files is None:
            raise DatasetUnavailableError("build-embedded: the Fashion-MNIST test idx files were not found (looked in "
                                          f"{', '.join(map(str, _idx_search_dirs('fashion-mnist', None)))}); install "
                                          "dataset-fashion-mnist or pass --source-dir")
    else:
        source_dir = Path(source_dir)
        files = []
        for base in _idx_names("test"):
            hits = [p for p in (source_dir / base, source_dir / f"{base}.gz") if p.is_file()]
            if not hits:
                raise DatasetUnavailableError(f"build-embedded: {base}(.gz) not found in {source_dir}")
            files.append(hits[0])
    images, labels = _read_idx_pair(files[0], files[1], 10)
    if tuple(images.shape[1:]) != (28, 28):
        raise IdxFormatError(f"{files[0]}: expected 28x28 images, got {tuple(images.shape[1:])}")
    indices = select_balanced(labels.numpy(), per_class, 10)
    arrays = {
        "images": images.numpy()[indices],
        "labels": labels.numpy()[indices].astype(np.uint8),
        "test_indices": indices.astype(np.uint16),
    }
    _write_npz_deterministic(out_path, arrays)
    record = {
        "file": out_path.name,
        "sha256": sha256_file(out_path),
        "size_bytes": out_path.stat().st_size,
        "content_sha256": _content_sha256(arrays),
        "count": int(len(indices)),
        "per_class": per_class,
        "classes": list(FASHION_MNIST_CLASSES),
        "selection": f"first {per_class} images of each class of the Fashion-MNIST test set, kept in test-set order "
                     "(ascending test index)",
        "source": {p.name: hashlib.sha256(read_idx(p).numpy().tobytes()).hexdigest() for p in files},
        "source_note": "sha256 of the decompressed idx payload (images/labels arrays) of each source file",
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "rebuild": "python -m bench.datasets build-embedded",
    }
    _sidecar(out_path).write_text(json.dumps(record, indent=2) + "\n")
    return record


def load_embedded(limit: int | None = None, path: str | Path = EMBEDDED_PATH,
                  verify: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The shipped Fashion-MNIST evaluation subset, from the repository alone.

    Returns images float32 ``[N, 1, 28, 28]`` in [0, 1], labels int64 ``[N]`` and the images'
    indices in the full Fashion-MNIST test set, int64 ``[N]``.

    Needs no network and no dataset package. With ``verify`` the file's SHA-256 must match its sidecar
    (``<path>.json``), else :class:`EmbeddedDataError`. ``limit`` keeps the first ``limit`` items
    (test-set order: a prefix is only roughly class-balanced; the full 1,000 are exactly 100 per class).
    """
    data, targets, indices = _read_embedded(Path(path), verify)
    data, targets, indices = data[:limit], targets[:limit], indices[:limit]
    return data.unsqueeze(1).to(torch.float32).div_(255), targets, indices


def _embedded_dataset(path: Path = EMBEDDED_PATH) -> EmbeddedSubset:
    return EmbeddedSubset(*_read_embedded(path, True))


def _read_embedded(path: Path, verify: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rebuild = "regenerate it with `python -m bench.datasets build-embedded` or restore it with git"
    if not path.is_file():
        raise EmbeddedDataError(f"embedded subset {path} is missing; {rebuild}")
    if verify:
        sidecar = _sidecar(path)
        try:
            expected = json.loads(sidecar.read_text())["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EmbeddedDataError(f"cannot read the SHA-256 of {path} from {sidecar} ({exc}); {rebuild}") from None
        actual = sha256_file(path)
        if actual != expected:
            raise EmbeddedDataError(f"embedded subset {path} is corrupted: its SHA-256 is {actual} but {sidecar.name} "
                                    f"records {expected}; {rebuild}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, labels, indices = npz["images"], npz["labels"], npz["test_indices"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise EmbeddedDataError(f"embedded subset {path} is unreadable ({exc}); {rebuild}") from None
    n = len(labels)
    if images.dtype != np.uint8 or images.shape != (n, 28, 28) or indices.shape != (n,):
        raise EmbeddedDataError(f"embedded subset {path} has unexpected arrays: images {images.dtype} {images.shape}, "
                                f"labels {labels.shape}, test_indices {indices.shape}; {rebuild}")
    return (torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)),
            torch.from_numpy(indices.astype(np.int64)))


# --------------------------------------------------------------------------------------------------- CLI


def _info(name: str, data_root: str | None, download: bool) -> int:
    spec = dataset_spec(name, data_root if _canonical(name) == "imagefolder" else None)
    print(f"{spec.name}: {spec.description}")
    print(f"  num_classes: {spec.num_classes}")
    print(f"  input_shape: {spec.input_shape}")
    print(f"  class_names: {', '.join(spec.class_names) if spec.class_names else '(from the tree)'}")
    if spec.name in ("fashion-mnist", "mnist"):
        for split in spec.splits:
            files = find_idx_files(spec.name, split, data_root)
            print(f"  {split} files: {', '.join(map(str, files)) if files else 'not found locally'}")
    if spec.name == "fashion-mnist-embedded":
        record = json.loads(_sidecar(EMBEDDED_PATH).read_text())
        print(f"  file: {EMBEDDED_PATH} ({EMBEDDED_PATH.stat().st_size} bytes, sha256 {record['sha256']})")
    status = 0
    for split in spec.splits:
        try:
            ds = load_dataset(spec.name, split, data_root, download=download)
        except (DatasetUnavailableError, EmbeddedDataError, ValueError) as exc:
            print(f"  {split}: unavailable - {exc}")
            status = 1
            continue
        x, y = ds[0]
        counts = None
        targets = getattr(ds, "targets", None)
        if targets is not None:
            counts = torch.bincount(torch.as_tensor(targets), minlength=len(spec.class_names) or 0).tolist()
        print(f"  {split}: {len(ds)} items; item 0: {tuple(x.shape)} {x.dtype} in [{float(x.min()):.3f}, "
              f"{float(x.max()):.3f}], label {y}" + (f"; per class {counts}" if counts else ""))
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.datasets {list,info NAME,build-embedded}``."""
    parser = argparse.ArgumentParser(prog="python -m bench.datasets", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the registered datasets")
    info = sub.add_parser("info", help="print a dataset's spec and split sizes")
    info.add_argument("name")
    info.add_argument("--data-root", default=None, help="data root (for imagefolder: the tree)")
    info.add_argument("--download", action="store_true", help="allow downloading missing files")
    build = sub.add_parser("build-embedded", help="regenerate the embedded Fashion-MNIST evaluation subset")
    build.add_argument("--source-dir", default=None, help="folder with t10k-*-ubyte(.gz) (default: usual lookup)")
    build.add_argument("--out", default=str(EMBEDDED_PATH), help=f"output .npz (default: {EMBEDDED_PATH})")
    build.add_argument("--per-class", type=int, default=EMBEDDED_PER_CLASS)
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for spec in DATASETS.values():
                print(f"{spec.name:24s} {str(spec.num_classes or '?'):>3s} classes  {spec.input_shape}  "
                      f"{spec.description}")
            return 0
        if args.command == "info":
            return _info(args.name, args.data_root, args.download)
        record = build_embedded_subset(args.out, args.source_dir, args.per_class)
        print(f"wrote {args.out}: {record['count']} images, {record['size_bytes']} bytes, sha256 {record['sha256']}")
        print(f"wrote {_sidecar(Path(args.out))}")
        return 0
    except (DatasetUnavailableError, EmbeddedDataError, IdxFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
