"""File helpers shared by the data and model layers. Imports nothing from ``bench``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["is_within", "sha256_file"]


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_within(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it, however either is spelled.

    Compares real folders, not names: ``path``'s symbolic links and ``..`` are resolved
    (``os.path.realpath``), then the device and inode of it and of each of its existing parents are
    compared with ``folder``'s, so a bind mount of ``folder`` is recognised too. ``path`` need not exist
    (its existing parents decide). False when ``folder`` does not exist.
    """
    try:
        target = os.stat(folder)
    except OSError:
        return False
    real = Path(os.path.realpath(Path(path).expanduser()))
    for candidate in (real, *real.parents):
        try:
            seen = os.stat(candidate)
        except OSError:
            continue
        if (seen.st_dev, seen.st_ino) == (target.st_dev, target.st_ino):
            return True
    return False
