"""A run's ``manifest.json``: what decided its results (compared on resume) and how it ran.

The compared part, ``config``, holds nothing machine-specific: models are identified by the content
hashes of their checkpoints and the evaluation images by a hash of their pixels, labels and indices,
so the same run resumes from any folder or clone, and a replaced checkpoint or image set is refused.
Where the files were found is recorded apart (``models_dir``, ``data_root``), relative to the
repository when inside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


class ResumeError(RuntimeError):
    """An output folder holds results that this run cannot continue (another configuration, no manifest)."""


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest in ``out``, or None when there is none.

    Raises:
        ResumeError: the file exists but is not a JSON object.
    """
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ResumeError(f"{path} is not valid JSON ({err}); use --overwrite or another --out") from None
    if not isinstance(manifest, dict):
        raise ResumeError(f"{path} is not a run manifest; use --overwrite or another --out")
    return manifest


def write_manifest(out: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` atomically (a reader never sees half a file)."""
    path = Path(out) / MANIFEST
    tmp = path.with_name(path.name + ".writing")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def check_resumable(out: Path, config: dict[str, Any], has_results: bool) -> None:
    """Refuse to append to results of another configuration.

    ``has_results``: ``out`` already holds result rows (the TSV or shard files). Such rows may only be
    continued when the manifest beside them records exactly ``config``.

    Raises:
        ResumeError: rows without a manifest, or a manifest of another configuration (the message
            names the keys that differ).
    """
    if not has_results:
        return
    manifest = read_manifest(out)
    if manifest is None:
        raise ResumeError(f"{out} holds results but no {MANIFEST}, so nothing says how they were made; "
                          "use --overwrite to start afresh, or another --out")
    previous = manifest.get("config") or {}
    if previous != config:
        changed = sorted(k for k in set(config) | set(previous) if previous.get(k) != config.get(k))
        raise ResumeError(f"{out} holds results of a different configuration (differs in: {', '.join(changed)}); "
                          "re-run with the same flags to resume, or use --overwrite or another --out")
