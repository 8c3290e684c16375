"""A fresh clone runs the main job with its defaults, writes only to git-ignored folders, and resumes
the same run after the clone moves to another absolute path (nothing machine-specific is compared)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: a tiny configuration of the default command (default output folder, default models and data)
TINY = ["--methods", "fars-closed", "lipschitz-margin", "--heads", "ce", "--num-images", "3", "--no-attack",
        "--scaling-ns", "--no-progress"]

pytestmark = pytest.mark.slow


def _git(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _bench_run(clone: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(clone), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "bench.run", *flags], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture()
def clone(tmp_path: Path) -> Path:
    if shutil.which("git") is None or _git("rev-parse", "--is-inside-work-tree", cwd=ROOT).returncode != 0:
        pytest.skip("needs git and a git checkout")
    target = tmp_path / "first" / "fars-bench"
    target.parent.mkdir()
    made = _git("clone", "--quiet", str(ROOT), str(target), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    return target


def test_fresh_clone_runs_resumes_after_a_move_and_stays_clean(clone: Path, tmp_path: Path) -> None:
    first = _bench_run(clone, *TINY)
    assert first.returncode == 0, first.stderr[-3000:]
    out = clone / "runs" / "fashion-mnist" / "default"
    rows = (out / "certify.tsv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 3          # header + 2 methods x 3 images
    for name in ("summary.md", "summary.csv", "certified_accuracy.png", "manifest.json"):
        assert (out / name).is_file(), name
    status = _git("status", "--porcelain", "--untracked-files=all", cwd=clone)
    assert status.returncode == 0 and status.stdout == "", f"the run touched the clone:\n{status.stdout}"
    manifest_text = (out / "manifest.json").read_text()
    assert str(clone) not in manifest_text and str(tmp_path) not in manifest_text

    # the same tree at another absolute path: the same command resumes (certifies nothing new)
    moved = tmp_path / "second" / "elsewhere"
    moved.parent.mkdir()
    shutil.move(str(clone), str(moved))
    again = _bench_run(moved, *TINY)
    assert again.returncode == 0, again.stderr[-3000:]
    manifest = json.loads((moved / "runs" / "fashion-mnist" / "default" / "manifest.json").read_text())
    assert manifest["rows_written_by_last_invocation"] == 0 and manifest["rows_total"] == 6

    # another configuration in the same folder is still refused, with one clear line and no traceback
    other = _bench_run(moved, *TINY, "--seed", "1")
    assert other.returncode != 0
    assert "different configuration" in other.stderr and "seed" in other.stderr
    assert "Traceback" not in other.stderr
