"""``python -m bench.report RUN_DIR`` on a finished run rewrites the ``summary.md`` the run wrote, byte for byte:
its tables, the run's timing and noisy-timing warning (from manifest.json) and the attack stage's audit
(from soundness.md) all come from the folder's files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import run as bench_run
from bench.certify import machine
from bench.report.__main__ import main as report_main
from bench.report.write import SOUNDNESS_BEGIN


def test_report_on_a_finished_run_reproduces_its_summary(tiny_zoo: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    # a warning is recorded whatever the machine's load, so that its section is part of the comparison
    monkeypatch.setattr(machine, "noisy_timing_warnings", lambda state, seconds, usage=(): ["the machine was busy"])
    bench_run.main(["--models", str(tiny_zoo), "--out", str(out), "--num-images", "2", "--n", "20", "--n0", "5",
                    "--sigma", "0.25", "--methods", "cohen", "fars-closed", "--heads", "ce", "--scaling-ns",
                    "--no-progress", "--no-attack", "--batch-size", "16"])
    written = (out / "summary.md").read_bytes()
    text = written.decode()
    assert "## Run timing (this invocation)" in text and "the machine was busy" in text
    assert json.loads((out / "manifest.json").read_text())["timing_warnings"] == ["the machine was busy"]
    assert report_main([str(out)]) == 0
    assert (out / "summary.md").read_bytes() == written
    # with the attack stage's audit in the folder (soundness.md, which the report puts into summary.md):
    # regenerated with it, once, and again the same
    (out / "soundness.md").write_text("## Empirical robustness and soundness audit\n\nbroken: 0\n")
    assert report_main([str(out), "--format", "png"]) == 0
    attacked = (out / "summary.md").read_bytes()
    assert attacked.decode().count(SOUNDNESS_BEGIN) == 1 and "broken: 0" in attacked.decode()
    assert "## Run timing" in attacked.decode()
    assert report_main([str(out), "--format", "png"]) == 0
    assert (out / "summary.md").read_bytes() == attacked
    # a report written elsewhere carries the same sections
    assert report_main([str(out), "--out-dir", str(tmp_path / "elsewhere"), "--format", "png"]) == 0
    assert (tmp_path / "elsewhere" / "summary.md").read_bytes() == attacked
