"""Sequential versus fixed-n CERTIFY on the same images: ``bench.perf.sequential_compare`` and its command.

Runs on the tiny random models of ``tiny_zoo`` with a cap of 500 samples on 3 embedded images, so it checks
the bookkeeping (rows, samples, the summary's accuracies and intervals, the paired differences, the files)
and not the measurement itself (``python -m bench.sequential`` at the cap 1e5).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from statsmodels.stats.proportion import proportion_confint

from bench import sequential as command
from bench.common.cli import run_cli
from bench.models import load_zoo
from bench.perf.sequential_compare import (
    EXAMPLE_COLUMNS,
    FIXED,
    SEQUENTIAL,
    CompareSettings,
    certify_examples,
    paired_differences,
    summary_table,
    usage_runs,
    verdict_lines,
)

SETTINGS = CompareSettings(cap=500, fixed_ns=(200, 500), images=3, skip=10, batch_size=256)


@pytest.fixture(scope="module")
def examples(tiny_zoo) -> pd.DataFrame:
    return certify_examples(SETTINGS, load_zoo(tiny_zoo).split_model("ce"), progress=False)


@pytest.fixture(scope="module")
def summary(examples) -> pd.DataFrame:
    return summary_table(examples, SETTINGS.radii, SETTINGS.cap)


def test_one_row_per_method_configuration_and_image(examples):
    assert list(examples.columns) == EXAMPLE_COLUMNS
    assert len(examples) == 2 * (2 + 1) * 3
    counts = examples.groupby(["method", "mode", "n"]).size()
    assert set(counts) == {3}
    assert set(counts.index) == {(m, FIXED, 200) for m in ("cohen", "fars-mc")} | {
        (m, mode, 500) for m in ("cohen", "fars-mc") for mode in (FIXED, SEQUENTIAL)}
    assert sorted(examples["idx"].unique()) == [0, 10, 20]   # every 10th embedded image (dataset indices)


def test_samples_are_n0_plus_the_estimation_samples(examples):
    fixed = examples[examples["mode"] == FIXED]
    assert (fixed["samples"] == SETTINGS.n0 + fixed["n"]).all()
    seq = examples[examples["mode"] == SEQUENTIAL]
    assert (seq["samples"] <= SETTINGS.n0 + SETTINGS.cap).all()
    assert (seq["samples"] >= SETTINGS.n0 + 100).all()   # at least the first round
    assert (examples["seconds"] > 0).all()
    # the process CPU time (user + system) and minor page faults of each call, beside its wall time
    assert (examples["cpu_seconds"] >= 0).all() and examples["cpu_seconds"].sum() > 0
    assert (examples["page_faults"] >= 0).all()
    assert examples["cpu_seconds"].max() <= 10 * examples["seconds"].max() + 0.1   # one call's, not the process's
    (name, wall, cpu, faults), *_ = usage_runs(examples)
    assert name == "cohen fixed n=200" and len(wall) == len(cpu) == len(faults) == 3
    assert (examples["correct"] == (examples["predict"] == examples["label"]).astype(int)).all()


def test_the_summary_recomputes_from_the_examples(examples, summary):
    assert len(summary) == 6
    for rec in summary.to_dict("records"):
        run = examples[(examples["method"] == rec["method"]) & (examples["mode"] == rec["mode"])
                       & (examples["n"] == rec["n"])]
        assert rec["images"] == len(run) == 3
        assert rec["samples_mean"] == pytest.approx(run["samples"].mean())
        assert rec["samples_median"] == pytest.approx(run["samples"].median())
        assert rec["seconds_median"] == pytest.approx(run["seconds"].median())
        for r in SETTINGS.radii:
            k = int(((run["correct"] == 1) & (run["radius"] >= r)).sum())
            assert rec[f"acc@{r:g}"] == pytest.approx(k / len(run))
            lo, hi = proportion_confint(k, len(run), alpha=0.05, method="beta")
            assert (rec[f"lo@{r:g}"], rec[f"hi@{r:g}"]) == pytest.approx((lo, hi))


def test_sequential_rows_compare_with_fixed_n_at_the_cap(examples, summary):
    paired = paired_differences(examples, SETTINGS.radii, SETTINGS.cap)
    assert len(paired) == 2 * len(SETTINGS.radii)
    for rec in summary[summary["mode"] == SEQUENTIAL].to_dict("records"):
        g = examples[examples["method"] == rec["method"]]
        seq = g[g["mode"] == SEQUENTIAL]
        assert rec["sample_ratio"] == pytest.approx((SETTINGS.n0 + SETTINGS.cap) / seq["samples"].mean())
        reference = summary[(summary["method"] == rec["method"]) & (summary["mode"] == FIXED)
                            & (summary["n"] == SETTINGS.cap)].iloc[0]
        diffs = [100 * (rec[f"acc@{r:g}"] - reference[f"acc@{r:g}"]) for r in SETTINGS.radii]
        assert [rec[f"diff@{r:g}"] for r in SETTINGS.radii] == pytest.approx(diffs)
        assert rec["max_abs_diff_points"] == pytest.approx(max(abs(d) for d in diffs))
        p = paired[paired["method"] == rec["method"]]
        discordant = (p["fixed_only"] + p["sequential_only"]).to_numpy()
        bounds = [100 * proportion_confint(int(d), 3, alpha=0.05, method="beta")[1] for d in discordant]
        assert p["bound_points"].to_numpy() == pytest.approx(bounds)
        assert rec["bound_points"] == pytest.approx(max(bounds))
    assert summary.loc[summary["mode"] == FIXED, "sample_ratio"].isna().all()


def test_the_verdict_says_pass_or_miss_per_goal(summary):
    lines = verdict_lines(summary)
    assert any("samples (cohen)" in line for line in lines)
    assert sum("certified accuracy" in line for line in lines) == 2
    assert all(("PASS" in line) != ("MISS" in line) for line in lines if not line.startswith("- info"))
    made_up = summary.copy()
    made_up.loc[made_up["mode"] == SEQUENTIAL, ["sample_ratio", "max_abs_diff_points"]] = [12.0, 0.5]
    assert all("PASS" in line for line in verdict_lines(made_up) if not line.startswith("- info"))


def test_the_command_writes_every_output(tiny_zoo, tmp_path):
    out = tmp_path / "seq"
    argv = ["--out", str(out), "--models", str(tiny_zoo), "--n", "300", "--fixed-ns", "200", "--images", "2",
            "--threads", "1", "--batch-size", "256", "--no-progress"]
    assert run_cli(command.main, argv) == out
    names = {"sequential_examples.csv", "sequential.csv", "sequential.md", "time_budget_sequential.png",
             "time_budget_sequential.pdf", "manifest.json"}
    assert names <= {p.name for p in out.iterdir()}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["cap"] == 300 and manifest["settings"]["grid"] == [200, 300]
    assert {"machine", "versions", "git_commit", "device_name"} <= set(manifest)
    assert manifest["machine"]["torch_threads"] == 1
    # cohen's memory format measured on this device, recorded with the settings it ran
    assert manifest["settings"]["cohen_memory_format"] in {"contiguous", "channels_last"}
    summary = pd.read_csv(out / "sequential.csv")
    assert len(summary) == 2 * 3 and np.isfinite(summary["sample_ratio"].dropna()).all()
    text = (out / "sequential.md").read_text()
    assert "## Verdict" in text and ("PASS" in text or "MISS" in text)


@pytest.mark.parametrize("flag, value, fragment", [
    ("--n", "0", "--n must be >= 1"),
    ("--sigma", "nan", "--sigma must be a finite number > 0"),
    ("--images", "1000", "lower the number of images or the skip"),
    ("--batch-size", "0", "--batch-size: must be 'auto' or an integer >= 1, got '0'"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, capsys, flag, value, fragment):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(command.main, ["--out", str(tmp_path / "x"), flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1
    assert fragment in err and "Traceback" not in err


def test_cohen_runs_in_the_memory_format_of_the_settings(tiny_zoo):
    from bench.perf.sequential_compare import make_certifier

    model = load_zoo(tiny_zoo).split_model("ce")
    settings = command.choose_memory_format(SETTINGS, model, torch.device("cpu"), "channels_last")
    assert settings.cohen_memory_format == "channels_last"   # given: not measured
    assert make_certifier(model, "cohen", FIXED, 200, settings).memory_format == "channels_last"
    fars_only = dataclasses.replace(SETTINGS, methods=("fars-mc",))
    assert command.choose_memory_format(fars_only, model, torch.device("cpu"), "auto").cohen_memory_format == \
        "contiguous"   # no cohen: nothing to measure
    with pytest.raises(ValueError, match="cohen_memory_format"):
        dataclasses.replace(SETTINGS, cohen_memory_format="nhwc").check()


def test_batch_size_auto_is_the_default_and_a_missing_model_folder_leaves_no_output(tmp_path, capsys):
    assert command.parse_args(["--batch-size", "auto"])[1].batch_size is None
    assert command.parse_args(["--batch-size", "512"])[1].batch_size == 512
    out = tmp_path / "seq"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(command.main, ["--out", str(out), "--models", str(tmp_path / "missing"), "--images", "2"])
    assert exit_info.value.code == 1
    assert "no sll-backbone checkpoint" in capsys.readouterr().err and not out.exists()
