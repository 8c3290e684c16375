"""``--help`` answers at once: a command parses its flags before it imports PyTorch, matplotlib, pandas or
scipy (they take seconds to load), and the names its flags offer are those of the modules that define them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.certify import runs
from bench.common import methods, names
from bench.data import DATASETS
from bench.models import networks

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "matplotlib", "pandas", "scipy", "statsmodels")
#: the commands whose --help is checked
LIGHT_HELP = ["bench.run", "bench.models"]


def _imported(command: list[str]) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime -m ...`` in a fresh process; its result and the modules it imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", *command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    modules = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return done, modules


@pytest.mark.parametrize("command", LIGHT_HELP)
def test_help_imports_no_heavy_library(command: str) -> None:
    done, modules = _imported([command, "--help"])
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-2000:]
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, f"{command} --help imported {heavy[:10]}"


def test_run_help_lists_every_method_head_and_dataset() -> None:
    done, _ = _imported(["bench.run", "--help"])
    text = " ".join(done.stdout.split())
    for name in (*methods.METHODS, *names.HEAD_KINDS, *names.DATASET_NAMES):
        assert name in text


def test_the_names_are_those_of_the_defining_modules() -> None:
    assert tuple(DATASETS) == names.DATASET_NAMES
    assert runs.METHODS is methods.METHODS and networks.HEAD_KINDS is names.HEAD_KINDS
