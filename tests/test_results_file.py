"""The results file under faults: a crash while a half-written last line is cut, garbage lines on resume."""

from __future__ import annotations

import os
import pathlib
from pathlib import Path

import pytest

from bench import run as bench_run
from bench.certify import results_file as bench_results
from bench.common.cli import run_cli

HEADER = "\t".join(bench_results.COLUMNS) + "\n"
ROWS = ["0\t9\t9\t0.5\t1\t0:00:00.1\tcohen\tsll+ce\t0.25\t25\t0.1\t0.09\t3\n",
        "1\t2\t2\t0.25\t1\t0:00:00.1\tcohen\tsll+ce\t0.25\t25\t0.1\t0.09\t3\n"]


def _file(tmp_path: Path, tail: str = "") -> Path:
    tsv = tmp_path / "certify.tsv"
    tsv.write_text(HEADER + "".join(ROWS) + tail)
    return tsv


def test_repair_cuts_only_the_partial_last_line(tmp_path: Path) -> None:
    tsv = _file(tmp_path, "2\t4\t4\t0.")
    assert bench_results.read_lines(tsv, repair=True) == [r.rstrip("\n") for r in ROWS]
    assert tsv.read_text() == HEADER + "".join(ROWS)


def test_a_crash_during_the_repair_keeps_every_complete_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the repair writes with is interrupted mid-way (after opening for writing, before the bytes land)."""
    tsv = _file(tmp_path, "2\t4\t4\t0.")

    class Crash(Exception):
        pass

    def crash_after_opening(self: Path, *args: object, **kwargs: object) -> None:
        with open(self, "wb"):    # opening for writing truncates, then the process dies
            raise Crash

    def crash(*args: object, **kwargs: object) -> None:
        raise Crash

    monkeypatch.setattr(pathlib.Path, "write_text", crash_after_opening)
    monkeypatch.setattr(pathlib.Path, "write_bytes", crash_after_opening)
    for name in ("truncate", "replace", "rename"):
        monkeypatch.setattr(os, name, crash)
    with pytest.raises(Crash):
        bench_results.read_lines(tsv, repair=True)
    monkeypatch.undo()
    assert bench_results.read_lines(tsv) == [r.rstrip("\n") for r in ROWS]


@pytest.mark.parametrize(("line", "fragment"), [
    ("3\t1\n", "line 4: 2 fields"),
    ("garbage\n", "line 4: 1 fields"),
    ("\n", "line 4: 1 fields"),
    ("x\t2\t2\t0.25\t1\t0:00:00.1\tcohen\tsll+ce\t0.25\t25\t0.1\t0.09\t3\n", "idx = 'x' is not an integer"),
    ("3\t2\t2\t0.25\t1\t0:00:00.1\tcohen\tsll+ce\tlow\t25\t0.1\t0.09\t3\n", "sigma = 'low' is not a number"),
    ("3\t2\t2\t0.25\t1\t0:00:00.1\tcohen\tsll+ce\t0.25\t25\t0.1\t0.09\t2.5\n", "page_faults = '2.5' is not an integer"),
    ("3\t2\t2\t0.25\t1\t0:00:00.1\tcohen\tsll+ce\t0.25\t25\t0.1\n", "line 4: 11 fields"),
])
def test_a_line_that_is_not_a_row_is_refused_naming_file_and_line(tmp_path: Path, line: str, fragment: str) -> None:
    tsv = _file(tmp_path, line)
    with pytest.raises(bench_results.ResultsFileError, match=fragment):
        bench_results.read_done(tsv)
    assert tsv.read_text() == HEADER + "".join(ROWS) + line   # nothing is cut from a file that is not understood


def test_a_file_without_the_usage_columns_is_not_resumed(tmp_path: Path) -> None:
    tsv = tmp_path / "certify.tsv"
    tsv.write_text("\t".join(bench_results.COLUMNS_WITHOUT_USAGE) + "\n" + "".join(r.rsplit("\t", 2)[0] + "\n"
                                                                              for r in ROWS))
    with pytest.raises(SystemExit, match="no cpu_seconds and page_faults columns"):
        bench_results.read_done(tsv)


def test_resume_over_a_garbage_line_is_one_line(tiny_zoo: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = ["--models", str(tiny_zoo), "--out", str(out), "--num-images", "2", "--methods", "fars-closed",
            "--scaling-ns", "--no-progress", "--no-attack", "--batch-size", "16"]
    bench_run.main(argv)
    capsys.readouterr()
    with open(out / "certify.tsv", "a") as handle:
        handle.write("7\t3\n")
    with pytest.raises(SystemExit) as refused:
        run_cli(bench_run.main, argv)
    assert refused.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "certify.tsv line 4" in err
