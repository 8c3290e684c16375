"""The embedded evaluation set: a fixed, class-balanced 1,000-image subset of the Fashion-MNIST test set.

It lives in ``bench/embedded/fashion_mnist_eval.npz`` (:data:`EMBEDDED_PATH`) with a JSON sidecar recording
its SHA-256, checked on every load, so evaluation runs offline on a fresh machine.
:func:`build_embedded_subset` regenerates it byte for byte from the Fashion-MNIST test idx files
(``python -m bench.data build-embedded``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..common.files import sha256_file
from .base import DatasetUnavailableError, EmbeddedDataError, IdxFormatError
from .idx import (
    FASHION_MNIST_CLASSES,
    UInt8ImageDataset,
    find_idx_files,
    idx_names,
    idx_search_dirs,
    read_idx,
    read_idx_pair,
)

__all__ = ["EMBEDDED_PATH", "EMBEDDED_PER_CLASS", "EmbeddedSubset", "build_embedded_subset", "load_embedded",
           "select_balanced"]

#: ``bench/embedded/``, the data folder next to the code packages (``bench/data/embedded.py`` -> two folders up).
EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "embedded"
EMBEDDED_PATH = EMBEDDED_DIR / "fashion_mnist_eval.npz"
#: Images per class in the embedded subset.
EMBEDDED_PER_CLASS = 100
REBUILD_COMMAND = "python -m bench.data build-embedded"


class EmbeddedSubset(UInt8ImageDataset):
    """The shipped Fashion-MNIST evaluation subset; ``test_indices[i]`` is item i's index in the full test set."""

    def __init__(self, data: torch.Tensor, targets: torch.Tensor, test_indices: torch.Tensor) -> None:
        super().__init__(data, targets, FASHION_MNIST_CLASSES)
        self.test_indices = test_indices


def sidecar_path(path: Path) -> Path:
    """The JSON record next to an ``.npz``: same name, ``.json``."""
    return path.with_suffix(".json")


def _content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """Digest of the arrays themselves (names, dtypes, shapes, bytes), independent of the zip/deflate encoding."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        arr = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{arr.dtype.str}:{arr.shape};".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


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


def _test_idx_files(source_dir: str | Path | None) -> tuple[Path, Path]:
    """The Fashion-MNIST test images and labels files: in ``source_dir``, else by the usual lookup."""
    if source_dir is None:
        files = find_idx_files("fashion-mnist", "test")
        if files is None:
            raise DatasetUnavailableError("build-embedded: the Fashion-MNIST test idx files were not found (looked in "
                                          f"{', '.join(map(str, idx_search_dirs('fashion-mnist', None)))}); install "
                                          "dataset-fashion-mnist or pass --source-dir")
        return files
    source_dir = Path(source_dir)
    found = []
    for base in idx_names("test"):
        hits = [p for p in (source_dir / base, source_dir / f"{base}.gz") if p.is_file()]
        if not hits:
            raise DatasetUnavailableError(f"build-embedded: {base}(.gz) not found in {source_dir}")
        found.append(hits[0])
    return found[0], found[1]


def build_embedded_subset(out_path: str | Path = EMBEDDED_PATH, source_dir: str | Path | None = None,
                          per_class: int = EMBEDDED_PER_CLASS) -> dict[str, Any]:
    """Regenerate the embedded Fashion-MNIST evaluation subset and its JSON sidecar; returns the sidecar's record.

    Reads ``t10k-images-idx3-ubyte(.gz)`` and ``t10k-labels-idx1-ubyte(.gz)`` from ``source_dir``
    (default: the Fashion-MNIST lookup of :func:`~bench.data.idx.find_idx_files`), takes the first
    ``per_class`` test images of each class (:func:`select_balanced`) and writes a byte-reproducible
    ``.npz`` with ``images`` uint8 [N, 28, 28], ``labels`` uint8 [N] and ``test_indices`` uint16 [N]. The
    sidecar ``<out>.json`` records the file's SHA-256 (checked by :func:`load_embedded`) and the arrays' digest.
    """
    out_path = Path(out_path)
    files = _test_idx_files(source_dir)
    images, labels = read_idx_pair(files[0], files[1], 10)
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
        "rebuild": REBUILD_COMMAND,
    }
    sidecar_path(out_path).write_text(json.dumps(record, indent=2) + "\n")
    return record


def load_embedded(limit: int | None = None, path: str | Path = EMBEDDED_PATH,
                  verify: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The shipped Fashion-MNIST evaluation subset, from the repository alone.

    Returns images float32 ``[N, 1, 28, 28]`` in [0, 1], labels int64 ``[N]`` and the images'
    indices in the full Fashion-MNIST test set, int64 ``[N]``.

    Needs no network and no dataset package. With ``verify`` the file's SHA-256 must match its sidecar
    (``<path>.json``), else :class:`EmbeddedDataError`; so are arrays of the wrong shape or dtype and labels
    outside ``0..9`` (named in the message), checked with or without ``verify``. ``limit`` keeps the first
    ``limit`` items
    (test-set order: a prefix is only roughly class-balanced; the full 1,000 are exactly 100 per class).
    """
    data, targets, indices = _read_embedded(Path(path), verify)
    data, targets, indices = data[:limit], targets[:limit], indices[:limit]
    return data.unsqueeze(1).to(torch.float32).div_(255), targets, indices


def embedded_dataset(path: Path = EMBEDDED_PATH) -> EmbeddedSubset:
    """The embedded subset as a dataset (SHA-256 checked)."""
    return EmbeddedSubset(*_read_embedded(path, True))


def _read_embedded(path: Path, verify: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rebuild = f"regenerate it with `{REBUILD_COMMAND} --overwrite-shipped` or restore it with git"
    if not path.is_file():
        raise EmbeddedDataError(f"embedded subset {path} is missing; {rebuild}")
    if verify:
        sidecar = sidecar_path(path)
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
    if labels.dtype.kind not in "iu":
        raise EmbeddedDataError(f"embedded subset {path}: labels must be integers, got {labels.dtype}; {rebuild}")
    num_classes = len(FASHION_MNIST_CLASSES)
    bad = np.unique(labels[(labels < 0) | (labels >= num_classes)])
    if bad.size:
        raise EmbeddedDataError(f"embedded subset {path}: labels {bad[:10].tolist()} out of range for {num_classes} "
                                f"classes (0..{num_classes - 1}); {rebuild}")
    return (torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)),
            torch.from_numpy(indices.astype(np.int64)))
