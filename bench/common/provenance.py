"""Provenance of a result or a checkpoint: the code's git commit and the package versions.

Imports nothing from ``bench`` but :mod:`bench.common.env`.
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import subprocess
from pathlib import Path

from .env import REPO_ROOT, portable_path


def git_commit(root: Path | None = None) -> str:
    """The commit of the code that ran: ``git describe`` of HEAD, with ``-dirty`` when tracked files
    outside ``results/`` have uncommitted changes (a regeneration rewrites ``results/`` while it runs,
    which says nothing about the code), or 'unknown' outside a git checkout. ``root``: the checkout
    (default: this project's)."""
    root = REPO_ROOT if root is None else Path(root)

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=root, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""

    try:
        commit = git("describe", "--always", "--abbrev=12")
        if not commit:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "numpy", "scipy", "statsmodels", "entmax"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def command_line(module: str, argv: list[str]) -> str:
    """The command that ran, for a manifest: ``python -m MODULE ARGS`` with every absolute path among
    ``argv`` written as :func:`bench.common.env.portable_path` writes it (relative to the checkout when inside
    it), so that committed outputs never carry the paths of the machine that made them."""
    return " ".join(["python", "-m", module, *(_portable_word(a) for a in argv)])


def _portable_word(word: str) -> str:
    """One command-line word with an absolute path written portably, alone or as ``--flag=/path``."""
    flag, sep, value = word.partition("=")
    if sep and flag.startswith("-") and value.startswith("/"):
        return f"{flag}={portable_path(value)}"
    return portable_path(word) if word.startswith("/") else word
