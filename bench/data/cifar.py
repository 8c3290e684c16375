"""CIFAR-10 and CIFAR-100 from torchvision's folders (``cifar-10-batches-py``, ``cifar-100-python``).

One reader for both (:func:`read_cifar_batch`, :func:`read_cifar_meta`): the pickled batch files are read
here, not through torchvision's ``CIFAR10``/``CIFAR100``, so that a user's files and the tests' fixtures
take the same path. torchvision would check each file's MD5 against the official archive's; the fixtures
cannot match, and a check that tests must switch off is a check that is never tested. The integrity check
here is instead what the labels depend on, applied to every file:

* the pickles are read by a restricted unpickler that builds nothing but dicts, lists, strings, numbers and
  numpy arrays (an arbitrary pickle can run code; the official files need nothing else), none larger than
  the file itself and none of Python objects, checked before anything is allocated (a few bytes of pickle
  can ask numpy for a terabyte);
* each batch is a dict with ``data`` uint8 ``[N, 3072]`` (three 32x32 planes R, G, B, row-major) and
  ``labels`` (CIFAR-10) / ``fine_labels`` (CIFAR-100): ``N`` integers in ``[0, num_classes)``;
* the meta file (``batches.meta`` / ``meta``) names exactly the registered classes in label order
  (``label_names`` / ``fine_label_names``), so that the class list and the labels agree.

A truncated or altered file fails one of these with :class:`DatasetFormatError` naming it. Downloads still go
through torchvision (``download=True`` and files missing), which checks the archive's MD5; and
:func:`official_md5_matches` tells whether files on disk are the official ones (shown by ``python -m bench.data
info``).
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.error import URLError

import numpy as np
import torch

from .base import DatasetFormatError, DatasetUnavailableError, resolve_root, short_reason
from .idx import UInt8ImageDataset

__all__ = ["CIFAR100_CLASSES", "CIFAR10_CLASSES", "CIFAR_LAYOUTS", "CifarLayout", "cifar_files", "load_cifar",
           "write_random_cifar10",
           "official_md5_matches", "read_cifar_batch", "read_cifar_meta"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: CIFAR-100's 100 fine classes in label order (alphabetical), as in its ``meta`` file's ``fine_label_names``.
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant's files are and which keys hold its labels and class names."""

    name: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str
    classes: tuple[str, ...]
    archive: str
    torchvision_class: str


CIFAR_LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout("cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                           ("test_batch",), "batches.meta", "labels", "label_names", CIFAR10_CLASSES,
                           "cifar-10-python.tar.gz", "CIFAR10"),
    "cifar100": CifarLayout("cifar100", "cifar-100-python", ("train",), ("test",), "meta", "fine_labels",
                            "fine_label_names", CIFAR100_CLASSES, "cifar-100-python.tar.gz", "CIFAR100"),
}

#: The globals a CIFAR pickle may name: numpy's array reconstruction (old and new module paths) and the
#: latin-1 ``bytes`` encoding of Python 3 pickles. Anything else is refused.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _NumpyName:
    """What the name ``numpy.ndarray`` unpickles to: a token that only :meth:`_ArrayUnpickler._reconstruct`
    accepts (calling the real class would allocate whatever shape the pickle asks for)."""

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NumpyName()


class _ArrayUnpickler(pickle.Unpickler):
    """Builds only what :data:`_ALLOWED_GLOBALS` allows (``numpy.core`` is read as numpy 2's ``numpy._core``),
    and no array, scalar or dtype larger than the file itself (``limit`` bytes: every byte of a real array
    is in the file) or holding Python objects; the size is checked before anything is allocated."""

    def __init__(self, handle: BinaryIO, limit: int) -> None:
        super().__init__(handle, encoding="latin1")
        self.limit = limit

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not part of a CIFAR file)")
        if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core." + module[len("numpy.core."):]  # numpy 2 warns on the old path
        found = super().find_class(module, name)
        if name == "scalar":
            return lambda dtype, *args: self._scalar(found, dtype, *args)
        return {"ndarray": _NDARRAY, "dtype": self._dtype, "_reconstruct": self._reconstruct}.get(name, found)

    def _dtype(self, *args: Any) -> np.dtype:
        dtype = np.dtype(*args)
        if dtype.hasobject or dtype.itemsize > self.limit:
            raise pickle.UnpicklingError(f"refusing the dtype {dtype} (Python objects, or larger than the file)")
        return dtype

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not _NDARRAY:
            raise pickle.UnpicklingError(f"refusing to build an array of type {subtype!r}")
        dtype = self._dtype(dtype.decode("latin1") if isinstance(dtype, bytes) else dtype)
        dims = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
        if not all(isinstance(d, int) and d >= 0 for d in dims):
            raise pickle.UnpicklingError(f"an array shape must be non-negative integers, got {shape!r}")
        count = math.prod(dims)
        if count * dtype.itemsize > self.limit:
            raise pickle.UnpicklingError(f"asks for an array of {count} elements of {dtype} ({count * dtype.itemsize} "
                                         f"bytes), more than the file's {self.limit} bytes can hold")
        return np.ndarray.__new__(np.ndarray, dims, dtype)

    def _scalar(self, scalar: Any, dtype: Any, *args: Any) -> Any:
        if not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError(f"refusing a scalar of {dtype!r}")
        return scalar(self._dtype(dtype), *args)


def _unpickle(path: Path) -> dict[str, Any]:
    """The dict pickled in ``path`` (Python 2 pickles of the official files decode as latin-1)."""
    try:
        with open(path, "rb") as handle:
            content = _ArrayUnpickler(handle, limit=os.fstat(handle.fileno()).st_size).load()
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError, OSError, MemoryError, OverflowError, RecursionError) as exc:
        raise DatasetFormatError(f"{path}: not a readable CIFAR pickle ({short_reason(exc)})") from None
    if not isinstance(content, dict):
        raise DatasetFormatError(f"{path}: expected a pickled dict, got {type(content).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in content.items()}


def read_cifar_batch(path: str | Path, label_key: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR batch file: images uint8 ``[N, 3, 32, 32]`` and labels int64 ``[N]``.

    Raises :class:`DatasetFormatError` naming the file when it is not a dict with ``data`` uint8
    ``[N, 3072]`` and ``label_key`` holding ``N`` integers in ``[0, num_classes)``.
    """
    path = Path(path)
    content = _unpickle(path)
    missing = [k for k in ("data", label_key) if k not in content]
    if missing:
        raise DatasetFormatError(f"{path}: no {' or '.join(map(repr, missing))} entry (keys: "
                                 f"{', '.join(sorted(content)) or 'none'}); not a CIFAR batch of this variant")
    data = content["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetFormatError(f"{path}: 'data' must be uint8 [N, 3072] (3 x 32 x 32), got {what}")
    try:
        labels = np.asarray(content[label_key])
    except (ValueError, TypeError):
        labels = np.asarray([None])
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DatasetFormatError(f"{path}: {label_key!r} must be a list of integers, got "
                                 f"{labels.dtype} {labels.shape}")
    if len(labels) != len(data):
        raise DatasetFormatError(f"{path}: {len(data)} images but {len(labels)} {label_key!r}")
    bad = np.unique(labels[(labels < 0) | (labels >= num_classes)])
    if bad.size:
        raise DatasetFormatError(f"{path}: {label_key!r} {bad[:5].tolist()} out of range for {num_classes} classes")
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels.astype(np.int64))


def read_cifar_meta(path: str | Path, names_key: str) -> tuple[str, ...]:
    """The class names (label order) of a CIFAR meta file, its ``names_key`` entry.

    Raises :class:`DatasetFormatError` when the entry is missing or not a list of strings.
    """
    path = Path(path)
    content = _unpickle(path)
    names = content.get(names_key)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in names):
        raise DatasetFormatError(f"{path}: no list of class names {names_key!r}")
    return tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in names)


def cifar_files(name: str, split: str, data_root: str | Path | None) -> tuple[Path, list[Path], Path]:
    """``(folder, batch files of split, meta file)`` of ``cifar10``/``cifar100`` under ``data_root``."""
    layout = CIFAR_LAYOUTS[name]
    folder = resolve_root(data_root) / layout.folder
    names = layout.train if split == "train" else layout.test
    return folder, [folder / n for n in names], folder / layout.meta


def _place(layout: CifarLayout, root: Path) -> str:
    folder = root / layout.folder
    return (f"extract {layout.archive} (https://www.cs.toronto.edu/~kriz/cifar.html) into {root} so that "
            f"{folder}/{{{','.join((*layout.train, *layout.test, layout.meta))}}} exist")


def _download(layout: CifarLayout, root: Path) -> None:
    from torchvision import datasets as tvd

    try:
        getattr(tvd, layout.torchvision_class)(str(root), train=False, download=True)
    except (URLError, OSError, RuntimeError) as exc:
        raise DatasetUnavailableError(f"could not download {layout.name} into {root}: {short_reason(exc)}. This "
                                      f"machine seems to have no network access; {_place(layout, root)}") from None


def load_cifar(name: str, split: str, data_root: str | Path | None, download: bool) -> UInt8ImageDataset:
    """``cifar10``'s or ``cifar100``'s ``split`` as a :class:`UInt8ImageDataset` (items float32 ``[3, 32, 32]``
    in [0, 1], as torchvision's dataset with ``ToTensor``; ``.data`` uint8 ``[N, 3, 32, 32]``, ``.targets``).

    Missing files: with ``download`` torchvision fetches the archive (MD5-checked), else
    :class:`DatasetUnavailableError` says where to put them. Malformed files: :class:`DatasetFormatError`
    (see the module docstring for what is checked).
    """
    layout = CIFAR_LAYOUTS[name]
    root = resolve_root(data_root)
    folder, batches, meta = cifar_files(name, split, data_root)
    needed = [*batches, meta]
    if not all(p.is_file() for p in needed):
        if not download:
            absent = ", ".join(p.name for p in needed if not p.is_file())
            raise DatasetUnavailableError(f"{name} not found under {folder} (missing {absent}) and download=False; "
                                          f"{_place(layout, root)}")
        _download(layout, root)
    classes = read_cifar_meta(meta, layout.names_key)
    if classes != layout.classes:
        raise DatasetFormatError(f"{meta}: {layout.names_key!r} lists {len(classes)} classes "
                                 f"({', '.join(classes[:4])}, ...), not {name}'s {len(layout.classes)} "
                                 f"({', '.join(layout.classes[:4])}, ...) in label order")
    parts = [read_cifar_batch(p, layout.label_key, len(layout.classes)) for p in batches]
    data = torch.cat([images for images, _ in parts])
    targets = torch.cat([labels for _, labels in parts])
    return UInt8ImageDataset(data, targets, layout.classes)


def official_md5_matches(name: str, data_root: str | Path | None) -> dict[str, bool | None]:
    """For each file of ``name`` (``cifar10``/``cifar100``): whether its MD5 is the official one (torchvision's
    record); ``None`` for a missing file. Informational: loading does not require it (see the module doc)."""
    from torchvision import datasets as tvd

    cls = getattr(tvd, CIFAR_LAYOUTS[name].torchvision_class)
    folder = resolve_root(data_root) / CIFAR_LAYOUTS[name].folder
    result: dict[str, bool | None] = {}
    for file_name, md5 in [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]:
        path = folder / file_name
        result[file_name] = hashlib.md5(path.read_bytes()).hexdigest() == md5 if path.is_file() else None
    return result


def write_random_cifar10(root: Path, test_images: int, seed: int = 0) -> None:
    """A complete ``root/cifar-10-batches-py`` folder in the official pickle layout, its test batch holding
    ``test_images`` uniform random uint8 images with random labels and each train batch two (the loader
    checks that the folder is complete): a stand-in for CIFAR-10 on a machine without it (timings, tests)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in [(f"data_batch_{i}", 2) for i in range(1, 6)] + [("test_batch", test_images)]:
        entry = {"batch_label": name, "labels": [int(v) for v in rng.integers(0, 10, count)],
                 "data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
                 "filenames": [f"{name}_{i}.png" for i in range(count)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"num_cases_per_batch": 2, "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
