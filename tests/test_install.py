"""What an install brings: `make run` and `pip install .` the running harness only; tests, lint and the peer
references (foolbox, ART) in the extras that `make test` / `make lint` add; the Python and licence declared."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements}


def test_running_needs_no_test_lint_or_peer_package() -> None:
    core = _names(PROJECT["dependencies"])
    extras = PROJECT["optional-dependencies"]
    for extra in ("test", "lint"):
        assert core.isdisjoint(_names(extras[extra])), extra
    assert {"pytest", "hypothesis", "mpmath", "foolbox", "adversarial-robustness-toolbox"} <= _names(extras["test"])
    assert {"ruff", "mypy"} <= _names(extras["lint"])


def _dry_run(target: str, tmp_path: Path, *variables: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("needs make")
    done = subprocess.run(["make", "-n", target, f"VENV={tmp_path / 'venv'}", *variables], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _installs(commands: str) -> list[str]:
    return [line for line in commands.splitlines() if "pip install" in line and "--upgrade pip" not in line]


def test_make_run_installs_the_package_alone_and_test_lint_add_their_extra(tmp_path: Path) -> None:
    run = _installs(_dry_run("run", tmp_path))
    assert run == [line for line in run if line.endswith("pip install -e .")] and len(run) == 1, run
    test = _installs(_dry_run("test", tmp_path))
    assert test[0].endswith("pip install -e .") and test[-1].endswith("pip install -e '.[test]'"), test
    lint = _installs(_dry_run("lint", tmp_path))
    assert lint[-1].endswith("pip install -e '.[lint]'") and not any("[test" in line for line in lint), lint


def test_cpu_wheels_come_from_the_index_given(tmp_path: Path) -> None:
    url = "https://download.pytorch.org/whl/cpu"
    first, rest = _installs(_dry_run("run", tmp_path, f"TORCH_INDEX_URL={url}"))[0], _installs(
        _dry_run("run", tmp_path))
    assert first.endswith(f"pip install --index-url {url} torch torchvision"), first
    assert not any("index-url" in line for line in rest)


def test_declared_python_has_tomllib_and_license_file_matches() -> None:
    python = SpecifierSet(PROJECT["requires-python"])
    assert "3.10" not in python and "3.11" in python     # bench.common.config imports tomllib (3.11+)
    assert PROJECT["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the fars-bench authors" in text
