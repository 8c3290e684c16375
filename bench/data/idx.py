"""Fashion-MNIST and MNIST from their idx files.

The files are read directly (:func:`read_idx`) from, in order, ``<data_root>/FashionMNIST/raw``
(torchvision's layout, plain or ``.gz``), the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``; Fashion-MNIST only), and last a torchvision download when
``download=True``. Items are those of torchvision's ``FashionMNIST`` with ``ToTensor``.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import DatasetUnavailableError, IdxFormatError, resolve_root, short_reason

__all__ = ["FASHION_MNIST_CLASSES", "MNIST_CLASSES", "SYSTEM_DIRS", "UInt8ImageDataset", "find_idx_files", "load_idx",
           "read_idx"]

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
                 "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine")

#: System-wide directories holding the raw idx files (Debian packages), searched after ``<data_root>``.
#: Its keys are the datasets stored as idx files.
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
    "mnist": (),  # no Debian package ships MNIST's idx files
}

_CLASSES = {"fashion-mnist": FASHION_MNIST_CLASSES, "mnist": MNIST_CLASSES}
_TORCHVISION_FOLDERS = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
#: Other registered names whose files are those of an idx dataset.
_ALIASES = {"fashion-mnist-embedded": "fashion-mnist"}


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


def idx_names(split: str) -> tuple[str, str]:
    """Base names (without ``.gz``) of the images and labels files of ``split``."""
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def raw_dir(name: str, data_root: str | Path | None) -> Path:
    """torchvision's folder of ``name``'s idx files: ``<data_root>/FashionMNIST/raw`` (``MNIST/raw``)."""
    return resolve_root(data_root) / _TORCHVISION_FOLDERS[name] / "raw"


def idx_search_dirs(name: str, data_root: str | Path | None) -> list[Path]:
    """Where ``name``'s idx files are looked for, in order."""
    return [raw_dir(name, data_root), *SYSTEM_DIRS.get(name, ())]


def find_idx_files(name: str, split: str, data_root: str | Path | None = None) -> tuple[Path, Path] | None:
    """The ``(images, labels)`` idx files of ``split`` for ``fashion-mnist``/``mnist``, or ``None``.

    Looks in ``<data_root>/FashionMNIST/raw`` (``MNIST/raw``), then the system directories of
    :data:`SYSTEM_DIRS`; in each, a plain file is preferred to its ``.gz``.
    """
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in SYSTEM_DIRS:
        raise ValueError(f"dataset {name!r} is not stored as idx files (those are: {', '.join(SYSTEM_DIRS)})")
    for folder in idx_search_dirs(key, data_root):
        found = []
        for base in idx_names(split):
            for candidate in (folder / base, folder / f"{base}.gz"):
                if candidate.is_file():
                    found.append(candidate)
                    break
        if len(found) == 2:
            return found[0], found[1]
    return None


def read_idx_pair(images_path: Path, labels_path: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images ``[N, H, W]`` and int64 labels ``[N]`` from two idx files, checked against each other."""
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


def load_idx(name: str, split: str, data_root: str | Path | None,
             download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, 28, 28] and int64 labels [N] of ``fashion-mnist``/``mnist`` (lookup order in module doc)."""
    files = find_idx_files(name, split, data_root)
    if files is not None:
        return read_idx_pair(*files, len(_CLASSES[name]))
    root, raw = resolve_root(data_root), raw_dir(name, data_root)
    images_name, labels_name = idx_names(split)
    where = [str(d) for d in idx_search_dirs(name, data_root)]
    place = (f"put {images_name}(.gz) and {labels_name}(.gz) into {raw}"
             + (" or install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
                if name == "fashion-mnist" else ""))
    offline = " For the offline evaluation subset use the dataset 'fashion-mnist-embedded'." \
        if name == "fashion-mnist" else ""
    if not download:
        raise DatasetUnavailableError(f"{name} {split} split not found (looked in {', '.join(where)}) and "
                                      f"download=False. To use it, {place}, or allow the download.{offline}")
    from torchvision import datasets as tvd

    cls = tvd.FashionMNIST if name == "fashion-mnist" else tvd.MNIST
    try:
        ds = cls(str(root), train=split == "train", download=True)
    except (URLError, OSError, RuntimeError) as exc:
        raise DatasetUnavailableError(
            f"could not download {name} into {raw}: {short_reason(exc)}. "
            f"This machine seems to have no network access. Looked in {', '.join(where)}; {place}.{offline}"
        ) from None
    return ds.data, ds.targets.long()


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
