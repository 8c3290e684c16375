"""File helpers shared by the data and model layers. Imports nothing from ``bench``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["atomic_write_text", "sha256_file"]


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file beside it and ``os.replace``: a reader
    sees the old file or the new one, never half of one, and a crash leaves the old file intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".writing")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
