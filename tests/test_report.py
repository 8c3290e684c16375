"""Tests for the bench.report package (results, metrics, tables, plots, CLI) on a small hand-checked TSV."""

from __future__ import annotations

import datetime
import math
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from bench import report
from bench.report import __main__ as report_cli
from bench.report import plots, tables

REPO_ROOT = Path(__file__).resolve().parents[1]

# (method, model, sigma, samples, [(label, predict, radius, seconds), ...])
# Hand-computed expectations are written next to each run.
RUNS = [
    # cohen on family 'sll': acc@0=.5 @.05=.5 @.1=.5 @.2=.25 @.3=.25, ACR=(0.4+0.1)/4=0.125,
    # abstention 1/4, seconds median 13, p25 11.5, p75 14.5
    ("cohen", "sll+ce", 0.25, 1000, [
        (1, 1, 0.4, 10.0),    # correct, r=0.4
        (2, -1, 0.0, 12.0),   # abstain
        (3, 3, 0.1, 14.0),    # correct, r exactly 0.1 -> certified at 0.1
        (4, 5, 0.2, 16.0),    # wrong prediction with a radius: never certified
    ]),
    # second cohen run on 'sll' (other sigma): acc@0=1 @.05=.5 ... ACR=0.31
    ("cohen", "sll+ce", 0.5, 1000, [
        (0, 0, 0.6, 20.0),
        (1, 1, 0.02, 30.0),
    ]),
    # fars-mc: acc@0=.75 @.05=.5 @.1=.25 @.2=.25 @.3=.25, ACR=(0.05+0.3+0)/4=0.0875, median 0.25 s
    ("fars-mc", "sll+ce", 0.25, 100, [
        (0, 0, 0.05, 0.1),
        (1, 1, 0.3, 0.2),
        (2, 7, 0.5, 0.3),     # wrong
        (3, 3, 0.0, 0.4),     # correct but radius 0: counts at r=0 only
    ]),
    # fars-closed on another 'sll' model: inf radius -> ACR inf; acc@0=@.05=@.1=2/3, @.2=@.3=1/3
    ("fars-closed", "sll+sparsemax", 0.25, 0, [
        (0, 0, math.inf, 0.002),
        (1, 1, 0.15, 0.003),
        (2, 9, math.inf, 0.004),  # wrong with inf radius: contributes 0
    ]),
    # cnn-only family with its own cohen run: acc@0..@.2 = .5, @.3 = 0, ACR 0.125, median 9 -> speedup 1
    ("cohen", "cnn-noise0.25", 0.25, 1000, [
        (0, 0, 0.25, 8.0),
        (1, -1, 0.0, 10.0),
    ]),
    # deterministic method on a family without cohen ('mlp'): sigma empty, speedup NaN
    ("lipschitz-margin", "mlp+margin", None, 0, [
        (0, 0, 0.07, 0.001),
        (1, 2, 0.0, 0.001),
    ]),
]

def _rows() -> list[dict]:
    rows = []
    for method, model, sigma, samples, examples in RUNS:
        for idx, (label, predict, radius, seconds) in enumerate(examples):
            rows.append(
                {
                    "idx": idx,
                    "label": label,
                    "predict": predict,
                    "radius": "inf" if math.isinf(radius) else repr(radius),
                    "correct": int(predict == label),
                    "time": str(datetime.timedelta(seconds=seconds)),
                    "method": method,
                    "model": model,
                    "sigma": "" if sigma is None else sigma,
                    "samples": samples,
                    "seconds": seconds,
                }
            )
    return rows


def _write_tsv(path: Path, rows: list[dict] | None = None) -> Path:
    frame = pd.DataFrame(rows if rows is not None else _rows(), columns=list(report.REQUIRED_COLUMNS))
    frame.to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture(scope="module")
def tsv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_tsv(tmp_path_factory.mktemp("run") / "certify.tsv")


@pytest.fixture(scope="module")
def df(tsv: Path) -> pd.DataFrame:
    return report.read_results(tsv)


@pytest.fixture(scope="module")
def summary(df: pd.DataFrame) -> pd.DataFrame:
    return report.summarize(df)


@pytest.fixture(scope="module")
def reports(tsv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return report.write_reports(tsv, tmp_path_factory.mktemp("out"))


def _row(frame: pd.DataFrame, method: str, model: str, sigma: float | None) -> pd.Series:
    sel = (frame["method"] == method) & (frame["model"] == model)
    sel &= frame["sigma"].isna() if sigma is None else np.isclose(frame["sigma"], sigma)
    assert sel.sum() == 1, (method, model, sigma)
    return frame[sel].iloc[0]


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------


def test_read_results_types(df: pd.DataFrame) -> None:
    assert list(df.columns[: len(report.REQUIRED_COLUMNS)]) == list(report.REQUIRED_COLUMNS)
    assert len(df) == sum(len(r[-1]) for r in RUNS)
    assert np.isinf(df["radius"]).sum() == 2
    assert df.loc[df["method"] == "lipschitz-margin", "sigma"].isna().all()
    assert df["predict"].dtype.kind == "i" and df["correct"].dtype.kind == "i"
    assert df["seconds"].dtype.kind == "f"


def test_missing_columns_raise_clear_error(tmp_path: Path) -> None:
    frame = pd.DataFrame(_rows()).drop(columns=["radius", "seconds"])
    path = tmp_path / "bad.tsv"
    frame.to_csv(path, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"missing required column\(s\) \['radius', 'seconds'\]"):
        report.read_results(path)


def test_bad_sigma_is_a_clear_error(tmp_path: Path) -> None:
    rows = _rows()
    rows[0]["sigma"] = "abc"
    with pytest.raises(ValueError, match="column 'sigma' has non-numeric values"):
        report.read_results(_write_tsv(tmp_path / "t.tsv", rows))


def test_seconds_recovered_from_time_string(tmp_path: Path) -> None:
    rows = _rows()
    for r in rows:
        r["seconds"] = ""
    out = report.read_results(_write_tsv(tmp_path / "t.tsv", rows))
    expected = [ex[3] for *_, exs in RUNS for ex in exs]
    np.testing.assert_allclose(out["seconds"].to_numpy(), expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------

EXPECTED_ACC = {
    ("cohen", "sll+ce", 0.25): [0.5, 0.5, 0.5, 0.25, 0.25],
    ("cohen", "sll+ce", 0.5): [1.0, 0.5, 0.5, 0.5, 0.5],
    ("fars-mc", "sll+ce", 0.25): [0.75, 0.5, 0.25, 0.25, 0.25],
    ("fars-closed", "sll+sparsemax", 0.25): [2 / 3, 2 / 3, 2 / 3, 1 / 3, 1 / 3],
    ("cohen", "cnn-noise0.25", 0.25): [0.5, 0.5, 0.5, 0.5, 0.0],
    ("lipschitz-margin", "mlp+margin", None): [0.5, 0.5, 0.0, 0.0, 0.0],
}


def test_certified_accuracy_exact(df: pd.DataFrame) -> None:
    ca = report.certified_accuracy(df, report.PAPER_RADII)
    assert list(ca.columns) == ["method", "model", "sigma", "radius", "certified_accuracy"]
    assert len(ca) == len(EXPECTED_ACC) * len(report.PAPER_RADII)
    for (method, model, sigma), expected in EXPECTED_ACC.items():
        sel = (ca["method"] == method) & (ca["model"] == model)
        sel &= ca["sigma"].isna() if sigma is None else np.isclose(ca["sigma"], sigma)
        got = ca[sel].sort_values("radius")
        assert got["radius"].tolist() == list(report.PAPER_RADII)
        assert got["certified_accuracy"].tolist() == pytest.approx(expected), (method, model, sigma)


def test_certified_accuracy_non_increasing(df: pd.DataFrame) -> None:
    grid = np.linspace(0, 1.0, 201)
    ca = report.certified_accuracy(df, grid)
    for _, g in ca.groupby(["method", "model", "sigma"], dropna=False):
        vals = g.sort_values("radius")["certified_accuracy"].to_numpy()
        assert len(vals) == len(grid)
        assert np.all(np.diff(vals) <= 1e-12)
    # the inf radius keeps fars-closed certified at any radius
    fc = ca[ca["method"] == "fars-closed"].sort_values("radius")
    assert fc["certified_accuracy"].iloc[-1] == pytest.approx(1 / 3)


def test_summary_columns_and_order(summary: pd.DataFrame) -> None:
    acc_cols = ["cert_acc@0", "cert_acc@0.05", "cert_acc@0.1", "cert_acc@0.2", "cert_acc@0.3"]
    for col in ["family", "method", "model", "sigma", "examples", *acc_cols, "acr", "abstention_rate",
                "clean_acc", "median_seconds", "p25_seconds", "p75_seconds", "samples", "speedup_vs_cohen"]:
        assert col in summary.columns, col
    order = list(zip(summary["family"], summary["method"], summary["model"], strict=True))
    assert order == [
        ("cnn-noise0.25", "cohen", "cnn-noise0.25"),
        ("mlp", "lipschitz-margin", "mlp+margin"),
        ("sll", "cohen", "sll+ce"),
        ("sll", "cohen", "sll+ce"),
        ("sll", "fars-closed", "sll+sparsemax"),
        ("sll", "fars-mc", "sll+ce"),
    ]
    assert summary["sigma"].iloc[2] == 0.25 and summary["sigma"].iloc[3] == 0.5
    for (method, model, sigma), expected in EXPECTED_ACC.items():
        row = _row(summary, method, model, sigma)
        assert [row[c] for c in acc_cols] == pytest.approx(expected)
        assert row["clean_acc"] == pytest.approx(row["cert_acc@0"])


def test_summary_acr_abstention_timing(summary: pd.DataFrame) -> None:
    cohen = _row(summary, "cohen", "sll+ce", 0.25)
    assert cohen["examples"] == 4
    assert cohen["acr"] == pytest.approx(0.125)
    assert cohen["abstention_rate"] == pytest.approx(0.25)
    assert cohen["median_seconds"] == pytest.approx(13.0)
    assert cohen["p25_seconds"] == pytest.approx(11.5)
    assert cohen["p75_seconds"] == pytest.approx(14.5)
    assert cohen["samples"] == 1000

    mc = _row(summary, "fars-mc", "sll+ce", 0.25)
    assert mc["acr"] == pytest.approx(0.0875)
    assert mc["abstention_rate"] == 0.0
    assert mc["samples"] == 100

    fc = _row(summary, "fars-closed", "sll+sparsemax", 0.25)
    assert math.isinf(fc["acr"]) and fc["inf_radius"] == 1
    assert fc["samples"] == 0

    assert _row(summary, "cohen", "sll+ce", 0.5)["acr"] == pytest.approx(0.31)
    assert _row(summary, "lipschitz-margin", "mlp+margin", None)["acr"] == pytest.approx(0.035)


def test_speedup_against_the_cohen_run_on_the_same_model_and_sigma(summary: pd.DataFrame) -> None:
    # fars-mc sll+ce at 0.25 against cohen sll+ce at 0.25 (median 13 s), not a pool over every cohen row (15 s)
    mc = _row(summary, "fars-mc", "sll+ce", 0.25)
    assert mc["speedup_vs_cohen"] == pytest.approx(13 / 0.25) and mc["speedup_reference"] == "cohen sll+ce σ=0.25"
    assert mc["speedup_low"] <= mc["speedup_vs_cohen"] <= mc["speedup_high"]
    # no cohen run on sll+sparsemax: the one on the same backbone (sll) at the same sigma
    fc = _row(summary, "fars-closed", "sll+sparsemax", 0.25)
    assert fc["speedup_vs_cohen"] == pytest.approx(13 / 0.003) and fc["speedup_reference"] == "cohen sll+ce σ=0.25"
    # Cohen's own runs have no speed-up; a family without a cohen run has no reference
    for method, model, sigma in [("cohen", "sll+ce", 0.25), ("cohen", "sll+ce", 0.5), ("cohen", "cnn-noise0.25", 0.25),
                                 ("lipschitz-margin", "mlp+margin", None)]:
        row = _row(summary, method, model, sigma)
        assert math.isnan(row["speedup_vs_cohen"]) and math.isnan(row["speedup_low"]), (method, model)
        assert row["speedup_reference"] == ""


def test_deterministic_run_against_the_strongest_cohen_run(df: pd.DataFrame) -> None:
    det = df[df["model"] == "sll+ce"].copy()
    det = pd.concat([det, det[det["method"] == "fars-mc"].assign(method="fars-closed", sigma=np.nan)])
    row = _row(report.summarize(det), "fars-closed", "sll+ce", None)
    # cohen sll+ce: ACR 0.125 at sigma 0.25, 0.31 at sigma 0.5 (median 25 s) -> the one at 0.5
    assert row["speedup_reference"] == "cohen sll+ce σ=0.5" and row["speedup_vs_cohen"] == pytest.approx(25 / 0.25)
    # a sigma no cohen run has: the strongest cohen run as well
    other = det[det["method"] == "fars-mc"].assign(sigma=1.0)
    row = _row(report.summarize(pd.concat([det, other])), "fars-mc", "sll+ce", 1.0)
    assert row["speedup_reference"] == "cohen sll+ce σ=0.5"


def test_speedup_interval_is_a_seeded_bootstrap_of_the_ratio_of_medians() -> None:
    from scipy.stats import bootstrap

    from bench.report.metrics import SPEEDUP_RESAMPLES, speedup_interval
    rng = np.random.default_rng(1)
    ref, run = rng.uniform(1, 2, 50), rng.uniform(0.01, 0.02, 40)
    lo, hi = speedup_interval(ref, run)
    assert lo < np.median(ref) / np.median(run) < hi
    expected = bootstrap((ref, run), lambda a, b, axis=-1: np.median(a, axis=axis) / np.median(b, axis=axis),
                         paired=False, n_resamples=SPEEDUP_RESAMPLES, method="percentile",
                         rng=np.random.default_rng(0)).confidence_interval
    assert (lo, hi) == pytest.approx((expected.low, expected.high))
    assert speedup_interval(ref, run) == (lo, hi)  # seeded
    assert all(math.isnan(v) for v in speedup_interval(ref, run[:1]))


def test_speedup_reference_does_not_change_with_the_report_filter(tsv: Path, tmp_path: Path) -> None:
    report.write_reports(tsv, tmp_path / "all", formats=("png",))
    report.write_reports(tsv, tmp_path / "mc", formats=("png",), methods=["fars-mc"], sigmas=[0.25])
    full = pd.read_csv(tmp_path / "all" / "summary.csv")
    only = pd.read_csv(tmp_path / "mc" / "summary.csv")
    assert len(only) == 1 and only["speedup_reference"].tolist() == ["cohen sll+ce σ=0.25"]
    assert only["speedup_vs_cohen"].iloc[0] == pytest.approx(_row(full, "fars-mc", "sll+ce", 0.25)["speedup_vs_cohen"])


def test_summarize_custom_radii_and_grid(df: pd.DataFrame) -> None:
    s = report.summarize(df, radii=(0.0, 0.1), grid=[0.1, 0.25])
    acc_cols = [c for c in s.columns if c.startswith("cert_acc@")]
    assert acc_cols == ["cert_acc@0", "cert_acc@0.1", "cert_acc@0.25"]
    assert _row(s, "cohen", "cnn-noise0.25", 0.25)["cert_acc@0.25"] == pytest.approx(0.5)


def test_summarize_concatenated_frames(df: pd.DataFrame) -> None:
    # duplicated index labels (pd.concat) must not break the reference
    other = df.assign(model=df["model"].str.replace("sll+", "sll+v2-", regex=False))
    # non-'sll' runs are unchanged by the rename, so they are duplicated: summarize warns about it
    with pytest.warns(UserWarning, match="duplicated idx"):
        s = report.summarize(pd.concat([df, other]))
    assert len(s) == len(RUNS) + 4
    assert _row(s, "fars-mc", "sll+ce", 0.25)["speedup_vs_cohen"] == pytest.approx(13 / 0.25)


def test_backbone_family() -> None:
    assert report.backbone_family("sll+ce") == "sll"
    assert report.backbone_family("cnn-noise0.25") == "cnn-noise0.25"


def test_formatters() -> None:
    assert tables.fmt_speedup(1234.4) == "1234x"
    assert tables.fmt_speedup(0.998) == "1.0x"
    assert tables.fmt_speedup(float("nan")) == "—"
    assert tables.fmt_speedup_short(1234.0) == "1.2e3x"
    assert report.fmt_seconds(0.0123) == "12.3 ms"
    assert report.fmt_seconds(0.00045) == "450 µs"
    assert report.fmt_seconds(2.5) == "2.5 s"
    assert report.fmt_seconds(150.0) == "2.5 min"
    assert report.fmt_seconds(7200.0) == "2 h"
    assert report.fmt_seconds(0.0) == "0 s"
    assert report.fmt_seconds(math.inf) == "∞"
    assert report.fmt_seconds(float("nan")) == "—"


def test_markdown_table_compact() -> None:
    # the compact form bench.perf.cost_model and bench.audit.soundness write
    text = report.markdown_table(["a", "b"], [[1, "x|y"], [2.5, None]])
    assert text == "| a | b |\n| --- | --- |\n| 1 | x\\|y |\n| 2.5 | None |"


def test_markdown_table_padded_right_aligned() -> None:
    text = report.markdown_table(["name", "n"], [["cohen", "1"], ["fars|mc", "100"]], right_align=["n"], pad=True)
    assert text.splitlines() == [
        "| name     |   n |",
        "| -------- | --: |",
        "| cohen    |   1 |",
        "| fars\\|mc | 100 |",
    ]
    frame = pd.DataFrame({"name": ["cohen", "fars|mc"], "n": ["1", "100"]})
    assert tables.frame_markdown(frame, ["n"]) == text
    with pytest.raises(ValueError):
        report.markdown_table(["a", "b"], [["only one cell"]], pad=True)


def test_package_reexports() -> None:
    # every name the single-module bench.report exported, plus the shared table / duration formatters
    names = ["REQUIRED_COLUMNS", "PAPER_RADII", "RUN_KEYS", "backbone_family", "read_results", "certified_accuracy",
             "default_grid", "summarize", "write_summary", "plot_certified_accuracy", "plot_speedup", "plot_scaling",
             "write_reports", "markdown_table", "fmt_seconds"]
    assert set(names) <= set(report.__all__)
    for name in report.__all__:
        assert hasattr(report, name), name


# ---------------------------------------------------------------------------
# files and plots
# ---------------------------------------------------------------------------


def test_write_reports_files_and_columns(reports: dict[str, Path], summary: pd.DataFrame) -> None:
    expected = {"summary_csv", "summary_md", "certified_accuracy_csv", "certified_accuracy_png", "speedup_png"}
    assert expected <= set(reports)
    names = {k: p.name for k, p in reports.items()}
    assert names["summary_csv"] == "summary.csv" and names["summary_md"] == "summary.md"
    assert names["certified_accuracy_csv"] == "certified_accuracy.csv"
    assert names["certified_accuracy_png"] == "certified_accuracy.png" and names["speedup_png"] == "speedup.png"
    for p in reports.values():
        assert p.is_file() and p.stat().st_size > 0

    s = pd.read_csv(reports["summary_csv"])
    assert list(s.columns) == list(summary.columns)
    assert len(s) == len(RUNS)

    ca = pd.read_csv(reports["certified_accuracy_csv"])
    assert list(ca.columns) == ["method", "model", "sigma", "radius", "certified_accuracy"]
    for r in report.PAPER_RADII:
        assert np.isclose(ca["radius"], r).any()
    assert ca.groupby(["method", "model", "sigma"], dropna=False).ngroups == len(RUNS)

    md = reports["summary_md"].read_text(encoding="utf-8")
    assert "acc@0.05" in md and "speedup vs Cohen" in md
    assert "50.0%" in md and "66.7%" in md  # percentages with one decimal
    assert "4333x" in md and "52x" in md and "cohen sll+ce σ=0.25" in md  # speed-ups and their reference
    assert "13 s" in md and "250 ms" in md and "3 ms" in md  # readable seconds
    assert "∞" in md  # infinite ACR
    table_lines = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table_lines) == 2 + len(RUNS)


def _check_png(path: Path, width: int, height: int) -> None:
    assert path.stat().st_size > 10_000
    img = mpimg.imread(path)
    assert abs(img.shape[1] - width) <= 1 and abs(img.shape[0] - height) <= 1, img.shape
    assert img[..., :3].std() > 0.05  # not blank


def test_pngs_dimensions(reports: dict[str, Path]) -> None:
    width = round(plots.FIG_WIDTH * plots.DPI)
    img = mpimg.imread(reports["certified_accuracy_png"])
    assert abs(img.shape[1] - width) <= 1 and img[..., :3].std() > 0.05
    n_bars = 2  # fars-mc and fars-closed: no bar for cohen itself (1x) nor for the run without a cohen reference
    _check_png(reports["speedup_png"], width, round(plots._speedup_height(n_bars) * plots.DPI))
    assert plots.DPI >= 150


def test_plot_with_empirical_and_scaling(tmp_path: Path, df: pd.DataFrame, summary: pd.DataFrame) -> None:
    emp = pd.DataFrame({"model": ["sll+ce"] * 3, "radius": [0.0, 0.2, 0.4], "accuracy": [0.8, 0.6, 0.3]})
    p = report.plot_certified_accuracy(df, tmp_path / "ca.png", empirical=emp, attacks=True)
    assert p.stat().st_size > 10_000

    scaling = pd.DataFrame(
        {
            "method": ["cohen"] * 3 + ["fars-mc"] * 3 + ["fars-closed"],
            "model": ["sll+ce"] * 7,
            "n": [100, 1000, 10000] * 2 + [0],
            "seconds": [0.02, 0.15, 1.4, 0.015, 0.12, 1.2, 0.004],
            "seconds_p25": [0.018, 0.14, 1.3, 0.013, 0.11, 1.1, 0.0035],
            "seconds_p75": [0.022, 0.16, 1.5, 0.017, 0.13, 1.3, 0.0045],
        }
    )
    p = report.plot_scaling(scaling, tmp_path / "scaling.png")
    assert p.stat().st_size > 10_000
    assert mpimg.imread(p).shape[1] == round(plots.FIG_WIDTH * plots.DPI)
    narrow = report.plot_scaling(scaling, tmp_path / "scaling_column.png", width=plots.WIDTHS["column"])
    assert mpimg.imread(narrow).shape[1] == round(3.3 * plots.DPI)

    # no cohen reference anywhere: still writes a figure
    no_ref = summary.assign(speedup_vs_cohen=np.nan)
    assert report.plot_speedup(no_ref, tmp_path / "sp.png").stat().st_size > 10_000


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def test_cli_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_tsv(tmp_path / "certify.tsv")
    assert report_cli.main([str(tmp_path)]) == 0
    for name in ["summary.csv", "summary.md", "certified_accuracy.csv", "certified_accuracy.png", "speedup.png",
                 "certified_accuracy.pdf", "speedup.pdf", "time_budget.png", "time_budget.pdf", "table_certified.md",
                 "table_certified.tex", "table1.md", "table1.tex", "table2.md", "table2.tex"]:
        assert (tmp_path / name).is_file(), name
    assert len(list((tmp_path / "cohen").glob("*.tsv"))) == len(RUNS)
    assert "summary_md" in capsys.readouterr().out


def test_cli_bad_tsv_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pd.DataFrame({"idx": [0], "label": [1]}).to_csv(tmp_path / "certify.tsv", sep="\t", index=False)
    assert report_cli.main([str(tmp_path), "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing required column(s)" in err and err.count("\n") == 1


def test_cli_missing_tsv(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        report_cli.main([str(tmp_path)])
    assert exc.value.code == 2


def test_cli_subprocess(tmp_path: Path) -> None:
    _write_tsv(tmp_path / "certify.tsv")
    out = tmp_path / "reports"
    res = subprocess.run(
        [sys.executable, "-m", "bench.report", str(tmp_path), "--out-dir", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert (out / "summary.md").is_file() and (out / "speedup.png").is_file()
    helptext = subprocess.run(
        [sys.executable, "-m", "bench.report", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert helptext.returncode == 0 and "certify.tsv" in helptext.stdout


def test_scaling_figure_names_the_device_and_has_no_title(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, formats=(): drawn.append(fig) or Path(path))
    scaling = pd.DataFrame({"method": ["cohen", "cohen", "fars-closed"], "model": ["sll+ce"] * 3,
                            "n": [100, 1000, 0], "seconds": [0.02, 0.15, 0.004]})
    report.plot_scaling(scaling, tmp_path / "s.png", device="CPU (test)")
    (ax,) = drawn[0].axes
    assert ax.get_title() == "" and drawn[0]._suptitle is None and "CPU (test)" in ax.get_ylabel()
