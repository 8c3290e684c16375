"""Paper-ready reports (issue 16): Cohen-format export/import, intervals, the no-sigma marker, small multiples, CLI.

The data set mirrors the quick run's layout (3 sigmas; cohen on the SLL model and on one CNN per noise level;
fars-mc on four heads; fars-closed and lipschitz-margin on three heads, deterministic), 20 images a run.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from bench import report
from bench.certify import results as certify_results
from bench.certify.runs import Run
from bench.report import __main__ as report_cli
from bench.report import figures, paper_metrics
from bench.report.results import parse_run_name
from smoothing.statistics import max_certifiable_radius

SIGMAS = (0.12, 0.25, 0.5)
N_IMAGES = 20
RUN_SPECS = (
    [("cohen", "sll+ce", s) for s in SIGMAS]
    + [("cohen", f"cnn-noise{s:.2f}", s) for s in SIGMAS]
    + [("fars-mc", f"sll+{h}", s) for h in ("ce", "margin", "mlp", "sparsemax") for s in SIGMAS]
    + [(m, f"sll+{h}", None) for m in ("fars-closed", "lipschitz-margin") for h in ("ce", "margin", "sparsemax")]
)


def _rows() -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for k, (method, model, sigma) in enumerate(RUN_SPECS):
        for i in range(N_IMAGES):
            label = int(rng.integers(10))
            predict = label if rng.random() < 0.8 else int(rng.choice([-1, (label + 1) % 10]))
            radius = 0.0 if predict == -1 else float(np.round(rng.exponential(0.3), 6))
            if sigma is not None:   # no CERTIFY at n = 1000, alpha = 0.001 returns more than its cut-off
                radius = min(radius, float(np.floor(max_certifiable_radius(1000, sigma, 0.001) * 1e6) / 1e6))
            seconds = float(0.002 if sigma is None else 0.2 * (1 + k % 3)) * (1 + 0.1 * rng.random())
            rows.append({"idx": 10 * i, "label": label, "predict": predict, "radius": f"{radius:.6g}",
                         "correct": int(predict == label), "time": str(datetime.timedelta(seconds=seconds)),
                         "method": method, "model": model, "sigma": "-" if sigma is None else f"{sigma:g}",
                         "samples": 0 if sigma is None else 1100, "seconds": f"{seconds:.6g}"})
    return rows


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    pd.DataFrame(_rows(), columns=list(report.REQUIRED_COLUMNS)).to_csv(folder / "certify.tsv", sep="\t", index=False)
    return folder


@pytest.fixture(scope="module")
def df(run_dir: Path) -> pd.DataFrame:
    return report.read_results(run_dir / "certify.tsv")


@pytest.fixture(scope="module")
def reports(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    manifest = {"monte_carlo": {"n0": 100, "n": 1000, "alpha": 0.001}}
    return report.write_reports(run_dir / "certify.tsv", tmp_path_factory.mktemp("out"), manifest=manifest,
                                formats=("png",))


# ---------------------------------------------------------------------------
# Cohen et al.'s format
# ---------------------------------------------------------------------------


def test_cohen_export_reads_back_as_summary(reports: dict[str, Path]) -> None:
    summary = pd.read_csv(reports["summary_csv"])
    files = sorted(p for k, p in reports.items() if k.startswith("cohen/"))
    assert len(files) == len(RUN_SPECS) == len(summary)
    radii = [0.0, 0.05, 0.1, 0.2, 0.3]
    for path in files:
        frame = pd.read_csv(path, delimiter="\t")  # exactly as analyze.py's ApproximateAccuracy reads it
        assert list(frame.columns) == ["idx", "label", "predict", "radius", "correct", "time"]
        run = parse_run_name(path)
        sel = (summary["method"] == run["method"]) & (summary["model"] == run["model"])
        sigma = float(run["sigma"])
        sel &= summary["sigma"].isna() if math.isnan(sigma) else np.isclose(summary["sigma"], sigma)
        assert sel.sum() == 1, path.name
        row = summary[sel].iloc[0]
        for r in radii:
            cohen = (frame["correct"] & (frame["radius"] >= r)).mean()  # ApproximateAccuracy.at_radius
            assert cohen == row[f"cert_acc@{r:g}"], (path.name, r)
        # time in str(datetime.timedelta) form: H:MM:SS.ffffff
        assert frame["time"].astype(str).str.match(r"^\d+:\d\d:\d\d(\.\d+)?$").all()


def test_import_cohen_file(tmp_path: Path) -> None:
    folder = tmp_path / "noise_0.25" / "test"
    folder.mkdir(parents=True)
    path = folder / "sigma_0.25"  # Cohen et al.'s own layout: data/certify/<ds>/<arch>/noise_0.25/test/sigma_0.25
    path.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
                    "0\t3\t-1\t0.0\t0\t0:00:13.736080\n"
                    "20\t7\t7\t0.0734\t1\t0:00:13.771528\n"
                    "40\t4\t4\t0.405\t1\t1:02:03.5\n")
    run = report.import_cohen(path)
    assert run[["method", "model"]].drop_duplicates().values.tolist() == [["cohen", "noise_0.25"]]
    assert (run["sigma"] == 0.25).all()
    np.testing.assert_allclose(run["seconds"], [13.73608, 13.771528, 3723.5])
    assert run["predict"].tolist() == [-1, 7, 4] and run["correct"].tolist() == [0, 1, 1]
    # read_results falls back to the importer, with the run given by the caller
    again = report.read_results(path, model="resnet110", sigma=0.5)
    assert (again["model"] == "resnet110").all() and (again["sigma"] == 0.5).all()
    s = report.summarize(again)
    assert len(s) == 1 and s["cert_acc@0.1"].iloc[0] == pytest.approx(1 / 3)


def test_cohen_export_infinite_radius(tmp_path: Path) -> None:
    rows = [r for r in _rows() if r["model"] == "sll+ce" and r["method"] == "fars-closed"]
    rows[0].update(predict=rows[0]["label"], correct=1, radius="inf")
    path = report.export_cohen(pd.DataFrame(rows), tmp_path)["fars-closed|sll+ce|-"]
    back = pd.read_csv(path, delimiter="\t")
    assert np.isinf(back["radius"].iloc[0])
    assert (back["correct"] & (back["radius"] >= 100.0)).mean() == pytest.approx(1 / N_IMAGES)


def test_import_our_export_roundtrip(reports: dict[str, Path], df: pd.DataFrame) -> None:
    path = reports["cohen/fars-closed_sll+ce_sigma-.tsv"]
    run = report.import_cohen(path)  # method, model and sigma come from the file name
    assert run[["method", "model"]].drop_duplicates().values.tolist() == [["fars-closed", "sll+ce"]]
    assert run["sigma"].isna().all()
    orig = df[(df["method"] == "fars-closed") & (df["model"] == "sll+ce")].reset_index(drop=True)
    np.testing.assert_array_equal(run["radius"], orig["radius"])
    np.testing.assert_allclose(run["seconds"], orig["seconds"], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------
# The no-sigma marker
# ---------------------------------------------------------------------------


def test_no_sigma_markers_read_as_deterministic(tmp_path: Path) -> None:
    rows = [r for r in _rows() if r["method"] in ("fars-closed", "lipschitz-margin")]
    markers = {"sll+ce": "", "sll+margin": "-", "sll+sparsemax": "nan"}
    for r in rows:
        r["sigma"] = markers[r["model"]]
    path = tmp_path / "certify.tsv"
    pd.DataFrame(rows, columns=list(report.REQUIRED_COLUMNS)).to_csv(path, sep="\t", index=False)
    read = report.read_results(path)
    assert read["sigma"].isna().all() and len(read) == len(rows)
    s = report.summarize(read)
    assert len(s) == 6 and s["sigma"].isna().all()  # no run dropped by a groupby on NaN keys
    assert report.certified_accuracy(read, [0.1]).shape[0] == 6
    assert paper_metrics.run_table(read, [0.1]).shape[0] == 6


def test_format_row_writes_marker_and_row_key_reads_all() -> None:
    det = Run("fars-closed", "sll+ce", math.nan, certifier=None)  # type: ignore[arg-type]
    line = certify_results.format_row(det, 3, 1, 1, 0.5, 0.01, 0)
    fields = dict(zip(certify_results.COLUMNS, line.rstrip("\n").split("\t"), strict=True))
    assert fields["sigma"] == "-"
    mc = Run("cohen", "sll+ce", 0.25, certifier=None)  # type: ignore[arg-type]
    assert dict(zip(certify_results.COLUMNS, certify_results.format_row(mc, 3, 1, 1, 0.5, 0.01, 1100)
                    .split("\t"), strict=True))["sigma"] == "0.25"
    for marker in ("-", "", "nan"):
        other = line.replace("\tsll+ce\t-\t", f"\tsll+ce\t{marker}\t")
        assert certify_results.row_key(other) == ("fars-closed|sll+ce|-", 3)


# ---------------------------------------------------------------------------
# Intervals and tables
# ---------------------------------------------------------------------------


def test_intervals_match_statsmodels_clopper_pearson(df: pd.DataFrame, reports: dict[str, Path]) -> None:
    ci = report.certified_accuracy_ci(df, [0.0, 0.1, 0.3])
    assert len(ci) == 3 * len(RUN_SPECS)
    for row in ci.itertuples(index=False):
        g = df[(df["method"] == row.method) & (df["model"] == row.model)]
        g = g[g["sigma"].isna()] if math.isnan(row.sigma) else g[np.isclose(g["sigma"], row.sigma)]
        k = int(((g["correct"] == 1) & (g["radius"] >= row.radius)).sum())
        lo, hi = proportion_confint(k, len(g), alpha=0.05, method="beta")
        assert (row.certified, row.examples) == (k, len(g))
        assert (row.ci_low, row.ci_high) == pytest.approx((lo, hi), abs=1e-12)
    # the markdown table shows the same interval (percent, one decimal)
    g = df[(df["method"] == "cohen") & (df["model"] == "sll+ce") & np.isclose(df["sigma"], 0.25)]
    k = int(((g["correct"] == 1) & (g["radius"] >= 0.1)).sum())
    lo, hi = proportion_confint(k, len(g), alpha=0.05, method="beta")
    cell = f"{100 * k / len(g):.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
    line = next(x for x in reports["table_certified_md"].read_text().splitlines() if "| cohen " in x and "0.25" in x
                and "sll+ce" in x)
    assert cell in line
    # ACR and its standard error (std of radius * correct over sqrt N)
    contrib = np.where(g["correct"] == 1, g["radius"], 0.0)
    acr, se = report.acr_with_se(g["radius"].to_numpy(float), g["correct"].to_numpy())
    assert acr == pytest.approx(contrib.mean()) and se == pytest.approx(contrib.std(ddof=1) / math.sqrt(len(g)))
    assert f"{acr:.3f} ± {se:.3f}" in line


def test_tables_markdown_and_latex(reports: dict[str, Path]) -> None:
    for name in ("table_certified", "table1"):
        md, tex = reports[f"{name}_md"].read_text(), reports[f"{name}_tex"].read_text()
        assert f"N = {N_IMAGES} images per run" in md and "Clopper-Pearson" in md
        for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
            assert tex.count(rule) == 1, (name, rule)
        assert r"95\%" in tex and "proportion\\_confint" in tex  # the note is escaped
    t1 = reports["table1_md"].read_text()
    body = [x for x in t1.splitlines() if x.startswith("| fars")]
    assert len(body) == 3 + 4 * 3  # fars-closed on 3 heads, fars-mc on 4 heads x 3 sigmas
    assert all(x.count("[") == 5 for x in body)  # clean + 4 eps, each with its interval
    # eps = 0.3 is beyond sigma = 0.12's Monte Carlo cut-off (0.12 * Phi^-1(0.001^(1/1000)) ~ 0.296): marked
    assert mc_beyond(0.12, 0.3) and "†" in t1 and "Monte Carlo cut-off" in t1
    assert "skipped" in reports["table2_md"].read_text()  # no robustness.csv in this run


def mc_beyond(sigma: float, eps: float) -> bool:
    return eps > max_certifiable_radius(1000, sigma, 0.001)


def test_table2_from_robustness(tmp_path: Path) -> None:
    rob = pd.DataFrame({"model": ["sll+ce"] * 4, "radius": [0.0, 0.05, 0.07, 0.1], "accuracy": [0.9, 0.8, 0.75, 0.7],
                        "robust": [90, 80, 75, 70], "examples": [100] * 4, "pgd": [True, True, False, True]})
    t = report.pgd_accuracy(rob, (0.05, 0.1, 0.2))
    assert t.loc[0, "acc@0.05"] == 0.8 and t.loc[0, "acc@0.1"] == 0.7 and math.isnan(t.loc[0, "acc@0.2"])
    assert (t.loc[0, "lo@0.1"], t.loc[0, "hi@0.1"]) == pytest.approx(proportion_confint(70, 100, method="beta"))
    paths = report.write_table2(rob, tmp_path, (0.05, 0.1))
    assert "80.0 [" in paths["table2_md"].read_text() and r"\bottomrule" in paths["table2_tex"].read_text()


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def test_small_multiples_panels_and_cutoff(df: pd.DataFrame) -> None:
    fig = figures.certified_figure(df, n=1000, alpha=0.001)
    try:
        axes = [ax for ax in fig.axes if ax.get_visible()]
        titles = [ax.get_title().split("\n")[0] for ax in axes]
        # one panel per sigma plus the envelope, repeated for each group of models (rows)
        assert set(titles) == {"σ = 0.12", "σ = 0.25", "σ = 0.5", "envelope (best σ)"}
        rows = len(axes) // 4
        assert rows >= 2 and all(titles.count(t) == rows for t in set(titles))
        for ax, title in zip(axes, titles, strict=True):
            curves = [ln for ln in ax.get_lines() if ln.get_gid() in ("run", "reference", "envelope", "attack")]
            assert 1 <= len(curves) <= figures.MAX_CURVES, title
            cut = [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_gid() == figures.CUTOFF_GID]
            if title.startswith("σ"):
                sigma = float(title.split("=")[1])
                assert cut == pytest.approx([max_certifiable_radius(1000, sigma, 0.001)])
                assert cut == pytest.approx([report.mc_cutoff(sigma, 1000, 0.001)])
            else:
                assert len(cut) == 3
        # every deterministic run is drawn in every sigma panel of its model's row
        n_refs = sum(ln.get_gid() == "reference" for ax in axes for ln in ax.get_lines())
        assert n_refs == 6 * 4  # 6 deterministic runs x (3 sigma panels + envelope)
    finally:
        plt.close(fig)


def test_small_multiples_one_row_when_few_curves(df: pd.DataFrame) -> None:
    few = report.select_runs(df, methods=["cohen", "fars-closed"])
    panels, _ = figures.certified_panels(few)
    assert [p.title for p in panels] == ["σ = 0.12", "σ = 0.25", "σ = 0.5", "envelope (best σ)"]
    assert all(p.cutoffs == [] for p in panels)  # no n / alpha: no cut-off
    env = panels[-1]
    # the CNNs trained at each noise level form one envelope family 'cnn'
    assert sorted((c.method, c.model) for c in env.curves if c.kind == "envelope") == [("cohen", "cnn"),
                                                                                          ("cohen", "sll+ce")]


def test_envelope_is_pointwise_max_over_sigma(df: pd.DataFrame) -> None:
    grid = np.linspace(0, 1, 21)
    curves = report.certified_accuracy(df[df["model"] == "sll+ce"], grid)
    env = report.envelope(curves)
    for (method, r), g in curves[curves["sigma"].notna()].groupby(["method", "radius"]):
        got = env[(env["method"] == method) & (env["radius"] == r)]["certified_accuracy"]
        assert got.tolist() == [g["certified_accuracy"].max()]


def test_time_budget_points(df: pd.DataFrame) -> None:
    varying = df.copy()
    sel = varying["method"] == "fars-mc"
    varying.loc[sel, "samples"] = np.where(varying.loc[sel, "idx"] % 20 == 0, 200, 1100)  # sequential: per-row n
    tb = report.time_budget(varying, (0.0, 0.1))
    assert len(tb) == len(RUN_SPECS)  # one point per run, not per (run, samples)
    row = tb[(tb["method"] == "cohen") & (tb["model"] == "sll+ce") & np.isclose(tb["sigma"], 0.25)].iloc[0]
    g = df[(df["method"] == "cohen") & (df["model"] == "sll+ce") & np.isclose(df["sigma"], 0.25)]
    assert row["seconds"] == pytest.approx(g["seconds"].median())
    assert row["acc@0.1"] == pytest.approx(((g["correct"] == 1) & (g["radius"] >= 0.1)).mean())


def test_report_files(reports: dict[str, Path]) -> None:
    for key in ("certified_accuracy_png", "speedup_png", "time_budget_png", "summary_md", "table1_tex"):
        assert reports[key].is_file() and reports[key].stat().st_size > 0
    assert "certified_accuracy_pdf" not in reports  # formats=("png",)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def test_cli_filters_and_formats(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = [str(run_dir), "--out-dir", str(out), "--methods", "fars-mc", "fars-closed", "--models", "sll+ce",
            "sll+margin", "--sigma", "0.25", "--format", "svg", "pdf", "--radii", "0", "0.1", "--n", "1000",
            "--alpha", "0.001"]
    assert report_cli.main(argv) == 0
    s = pd.read_csv(out / "summary.csv")
    runs = set(zip(s["method"], s["model"], s["sigma"].fillna(-1), strict=True))
    assert runs == {("fars-mc", "sll+ce", 0.25), ("fars-mc", "sll+margin", 0.25), ("fars-closed", "sll+ce", -1),
                    ("fars-closed", "sll+margin", -1)}
    assert [c for c in s.columns if c.startswith("cert_acc@")] == ["cert_acc@0", "cert_acc@0.1"]
    for stem in ("certified_accuracy", "speedup", "time_budget"):
        for ext in ("png", "svg", "pdf"):
            assert (out / f"{stem}.{ext}").is_file(), (stem, ext)
    assert len(list((out / "cohen").glob("*.tsv"))) == 4
    assert "table1_tex" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        report_cli.main([str(run_dir), "--format", "jpg"])


def test_cli_filter_leaving_nothing_is_an_error(run_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert report_cli.main([str(run_dir), "--out-dir", str(tmp_path), "--methods", "nope"]) == 2
    assert "no run left" in capsys.readouterr().err


def test_cli_every_flag_has_help() -> None:
    parser = report_cli._parser()
    for action in parser._actions:
        assert action.help, action.dest
    flags = {opt for a in parser._actions for opt in a.option_strings}
    assert {"--methods", "--models", "--sigma", "--format", "--radii", "--attacks", "--import-cohen"} <= flags


def test_cli_import_cohen_and_attacks(run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    certify = pd.read_csv(run_dir / "certify.tsv", sep="\t", dtype=str, keep_default_na=False)
    certify[certify["method"] == "fars-closed"].to_csv(run / "certify.tsv", sep="\t", index=False)
    cohen_file = tmp_path / "cohen_resnet_sigma0.25.tsv"
    cohen_file.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.4\t1\t0:00:01.5\n"
                          "10\t2\t-1\t0.0\t0\t0:00:01.25\n")
    pd.DataFrame({"model": ["sll+ce"] * 3, "radius": [0.0, 0.1, 0.2], "accuracy": [0.9, 0.8, 0.5],
                  "examples": [20] * 3, "pgd": [True] * 3}).to_csv(run / "robustness.csv", index=False)
    assert report_cli.main([str(run), "--import-cohen", str(cohen_file), "--attacks", "--format", "png"]) == 0
    s = pd.read_csv(run / "summary.csv")
    imported = s[s["method"] == "cohen"]
    assert imported[["model", "sigma", "cert_acc@0.3"]].values.tolist() == [["resnet", 0.25, 0.5]]
    assert "80.0 [" in (run / "table2.md").read_text()  # Table 2 from RUN_DIR/robustness.csv
    assert (run / "cohen" / "cohen_resnet_sigma0.25.tsv").is_file()


def test_attack_curves_only_on_request(df: pd.DataFrame) -> None:
    emp = pd.DataFrame({"model": ["sll+ce"] * 3, "radius": [0.0, 0.2, 0.4], "accuracy": [0.8, 0.6, 0.3]})
    few = report.select_runs(df, methods=["cohen"])
    panels, _ = figures.certified_panels(few, empirical=emp)
    attacks = [sum(c.kind == "attack" for c in p.curves) for p in panels]
    assert attacks == [1, 1, 1, 0]  # in each sigma panel holding sll+ce, not in the envelope
    fig = figures.certified_figure(few)
    try:
        assert not any(ln.get_gid() == "attack" for ax in fig.axes for ln in ax.get_lines())
    finally:
        plt.close(fig)


# ------------------------------------------------------------------ imported files cannot fake certificates


def _cohen_file(path: Path, rows: list[tuple[int, int, int, float, int]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["idx\tlabel\tpredict\tradius\tcorrect\ttime"]
    lines += [f"{i}\t{y}\t{p}\t{r}\t{c}\t0:00:01.500000" for i, y, p, r, c in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(("rows", "fragment"), [
    ([(0, 1, 2, 0.5, 1), (1, 3, 3, 0.4, 1)], "'correct' disagrees with predict == label"),   # wrong marked correct
    ([(0, 3, 3, 0.4, 0)], "'correct' disagrees"),                                           # right marked wrong
    ([(0, 3, -1, 0.0, 1)], "'correct' disagrees"),                                          # abstention marked correct
    ([(0, 3, 3, -0.5, 1)], "negative or NaN radius"),
    ([(0, 3, -1, 0.7, 0)], "abstention with a radius"),
])
def test_imported_rows_that_are_no_certificate_are_refused(tmp_path: Path, rows: list, fragment: str) -> None:
    path = _cohen_file(tmp_path / "noise_0.25" / "test" / "sigma_0.25", rows)
    with pytest.raises(ValueError, match=fragment):
        report.import_cohen(path)


def test_a_cohen_file_without_sigma_in_its_name_is_refused(tmp_path: Path) -> None:
    path = _cohen_file(tmp_path / "mine.tsv", [(0, 3, 3, 0.4, 1)])
    with pytest.raises(ValueError, match="no sigma in the file name"):
        report.import_cohen(path)
    assert report.import_cohen(path, sigma=0.25)["method"].eq("cohen").all()


def test_importing_a_run_twice_is_refused_and_cohen_files_alone_make_a_report(tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    path = _cohen_file(tmp_path / "noise_0.25" / "test" / "sigma_0.25", [(0, 3, 3, 0.4, 1), (1, 2, 2, 0.1, 1)])
    empty = tmp_path / "run"
    empty.mkdir()
    assert report_cli.main([str(empty), "--import-cohen", str(path), "--format", "png"]) == 0
    summary = pd.read_csv(empty / "summary.csv")
    assert summary["method"].tolist() == ["cohen"] and float(summary["sigma"].iloc[0]) == 0.25
    assert report_cli.main([str(empty), "--import-cohen", str(path), str(path)]) == 2
    assert "appears twice" in capsys.readouterr().err


def test_report_stage_knows_the_harness_methods() -> None:
    # bench.report.results keeps its own copy of the method names (it must not import torch): keep them equal
    from bench.certify.runs import METHODS
    from bench.report.results import KNOWN_METHODS, MONTE_CARLO

    assert tuple(KNOWN_METHODS) == tuple(METHODS)
    assert set(MONTE_CARLO) == {"cohen", "fars-mc"}
