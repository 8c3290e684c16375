"""The built wheel runs the default experiment from an empty folder: the experiment file, the embedded data
and the models ship inside the package, and the run writes to ``./runs/`` of the working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the default experiment on tiny settings (two deterministic methods, three images, no attack or sweep)
TINY = ["--methods", "fars-closed", "lipschitz-margin", "--heads", "ce", "--num-images", "3", "--no-attack",
        "--scaling-ns", "--no-progress"]

#: what the copy of the tree leaves out: environments, outputs, caches and history, none of it packaged
SKIPPED = (".git", ".venv", "venv", ".tox", "runs", "results", "data", "build", "dist", "*.egg-info", "__pycache__",
           ".mypy_cache", ".ruff_cache", ".pytest_cache", ".benchmarks")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from this tree, unpacked as pip installs a pure-Python wheel (its files under one folder)."""
    # built from a copy: the build writes build/ and *.egg-info beside the sources, never into the checkout
    source = tmp_path_factory.mktemp("source") / "fars-bench"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*SKIPPED))
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "--wheel-dir", str(dist), str(source)], capture_output=True, text=True, timeout=600)
    if built.returncode != 0 and "No module named pip" in built.stderr:
        pytest.skip("needs pip to build the wheel")
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("fars_bench-*.whl")
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_wheel_ships_the_default_experiment_and_its_data(installed: Path) -> None:
    for name in ("fashion-mnist.toml", "fashion_mnist_eval.npz", "fashion_mnist_eval.json",
                 "models/sll-backbone.pt", "models/head-ce.json"):
        assert (installed / "bench" / "embedded" / name).is_file(), name


def test_wheel_runs_the_default_experiment_from_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    work = tmp_path / "empty"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(installed), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import bench; print(bench.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=60)
    assert Path(where.stdout.strip()).is_relative_to(installed), where.stdout   # the wheel's code, not the tree's
    run = subprocess.run([sys.executable, "-m", "bench.run", *TINY], cwd=work, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = work / "runs" / "fashion-mnist" / "default"
    rows = (out / "certify.tsv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 3          # header + 2 methods x 3 images
    assert (out / "summary.md").is_file() and (out / "manifest.json").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["runs"]
