"""What the registry and every dataset family share: the errors, the split names, the data root.

Imports nothing from the rest of :mod:`bench.data`, so that the family modules never import the
registry that dispatches to them.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SPLITS", "CorruptImageError", "DatasetFormatError", "DatasetUnavailableError", "EmbeddedDataError",
           "IdxFormatError", "default_data_root", "resolve_root", "short_reason"]

SPLITS = ("train", "test")

#: The checkout (``bench/data/base.py`` -> two folders up); ``data/`` under it is the default data root.
REPO_ROOT = Path(__file__).resolve().parents[2]


class DatasetUnavailableError(RuntimeError):
    """The data set's files are not on this machine and could not be downloaded (the message says where to put them)."""


class DatasetFormatError(ValueError):
    """A data set's files are there but malformed: the message names the file and what is wrong with it."""


class IdxFormatError(DatasetFormatError):
    """A file that is not a well-formed idx file of unsigned bytes."""


class CorruptImageError(DatasetFormatError):
    """An image file that PIL cannot decode (unknown format, truncated); ``path`` is the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"corrupt or unreadable image file {path}: {reason}")
        self.path = Path(path)


class EmbeddedDataError(RuntimeError):
    """The shipped embedded subset is missing, corrupted, or does not match its recorded SHA-256."""


def default_data_root() -> Path:
    """``$FARS_DATA_ROOT`` if set, else ``data/`` at the repository root (git-ignored)."""
    env = os.environ.get("FARS_DATA_ROOT")
    return Path(env) if env else REPO_ROOT / "data"


def resolve_root(data_root: str | Path | None) -> Path:
    """``data_root`` (``~`` expanded), or :func:`default_data_root` when ``None``."""
    return Path(data_root).expanduser() if data_root is not None else default_data_root()


def short_reason(exc: BaseException) -> str:
    """``exc``'s message on one line, at most 300 characters (for download failures)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
