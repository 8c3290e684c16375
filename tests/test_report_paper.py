"""Paper-ready reports: Cohen-format export/import, intervals, the no-sigma marker, small multiples, CLI.

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
from bench.certify import results_file as certify_results
from bench.certify.runs import Run
from bench.report import __main__ as report_cli
from bench.report import figures, paper_metrics
from bench.report.read import parse_run_name
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
    line = certify_results.format_row(det, 3, 1, 1, 0.5, 0.01, 0, 0.009, 2)
    fields = dict(zip(certify_results.COLUMNS, line.rstrip("\n").split("\t"), strict=True))
    assert fields["sigma"] == "-" and fields["cpu_seconds"] == "0.009" and fields["page_faults"] == "2"
    mc = Run("cohen", "sll+ce", 0.25, certifier=None)  # type: ignore[arg-type]
    assert dict(zip(certify_results.COLUMNS, certify_results.format_row(mc, 3, 1, 1, 0.5, 0.01, 1100, 0.01, 0)
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


FAMILIES = ["cnn-noiseσ", "sll+ce", "sll+margin", "sll+mlp", "sll+sparsemax"]


def _labels(fig: plt.Figure) -> list[str]:
    return [ax.get_legend().get_title().get_text() for ax in fig.axes
            if ax.get_legend() is not None and ax.get_legend().get_gid() == figures.LABEL_GID]


def _no_titles(fig: plt.Figure) -> None:
    assert fig._suptitle is None and all(ax.get_title() == "" for ax in fig.axes)


def _one_legend(fig: plt.Figure) -> list[str]:
    """The entries of the figure's one legend with entries (panel labels are entry-less legends)."""
    legends = [lg for lg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if lg is not None and lg.texts]
    assert len(legends) == 1, len(legends)
    return [t.get_text() for t in legends[0].texts]


@pytest.mark.parametrize("width", [3.3, 7.0])
def test_certified_accuracy_default_is_one_panel_per_model_with_the_envelope(df: pd.DataFrame, width: float) -> None:
    fig = figures.certified_figure(df, n=1000, alpha=0.001, width=width)
    try:
        assert fig.get_size_inches()[0] == pytest.approx(width)
        _no_titles(fig)
        assert _labels(fig) == FAMILIES
        drawn = [ax for ax in fig.axes if ax.lines]
        assert len(drawn) == len(FAMILIES)
        kinds = [sorted(ln.get_gid() for ln in ax.lines if ln.get_gid() in ("run", "reference", "envelope"))
                 for ax in drawn]
        assert kinds[0] == ["envelope"]                                  # cohen on the CNNs, best over sigma
        assert kinds[1] == ["envelope", "envelope", "reference", "reference"]   # sll+ce: cohen, fars-mc; 2 det.
        assert all(k.count("run") == 0 for k in kinds)
        # colour = method: one legend entry per method, plus the cut-off marker where one is drawn (a curve that
        # fell to 0 before its cut-off has none); no model/line-style keys
        markers = any(ln.get_gid() == figures.CUTOFF_GID for ax in fig.axes for ln in ax.lines)
        assert _one_legend(fig) == ["cohen", "fars-mc", "fars-closed", "lipschitz-margin",
                                    *(["Monte Carlo cut-off"] if markers else [])]
    finally:
        plt.close(fig)


def test_sampled_curves_end_at_the_monte_carlo_cutoff_without_a_wall(df: pd.DataFrame) -> None:
    panels = figures.certified_panels(df, n=1000, alpha=0.001, per_sigma=True)
    ended = 0
    for panel in panels:
        for c in panel.curves:
            if c.kind != "run":
                assert math.isnan(c.cutoff)
                continue
            cut = max_certifiable_radius(1000, c.sigma, 0.001)
            assert c.xs.max() <= cut * (1 + 1e-12)   # nothing drawn beyond the cut-off
            if math.isfinite(c.cutoff):   # ends there, level (no drop to 0 at the cut-off), with a marker
                ended += 1
                assert c.cutoff == pytest.approx(cut) and c.xs[-1] == pytest.approx(cut)
                assert c.ys[-1] == c.ys[-2] > 0
            else:   # fell to 0 before its cut-off: no marker
                assert c.ys[-1] == 0
    assert ended > 0
    fig = figures.certified_figure(df, n=1000, alpha=0.001, per_sigma=True)
    try:
        markers = [ln for ax in fig.axes for ln in ax.lines if ln.get_gid() == figures.CUTOFF_GID]
        assert len(markers) == ended and all(ln.get_linestyle() == "None" for ln in markers)   # markers, no walls
    finally:
        plt.close(fig)


def test_per_sigma_panels_on_request(df: pd.DataFrame) -> None:
    fig = figures.certified_figure(df, n=1000, alpha=0.001, per_sigma=True, width=3.3)
    try:
        _no_titles(fig)
        labels = _labels(fig)
        assert len(labels) == len(FAMILIES) * len(SIGMAS)
        assert labels[:3] == [f"cnn-noise{s:.2f}\nσ = {s:g}" for s in SIGMAS]
        assert labels[3:6] == [f"sll+ce\nσ = {s:g}" for s in SIGMAS]
        # each deterministic run (3 models x 2 methods) in each sigma panel of its model
        n_refs = sum(ln.get_gid() == "reference" for ax in fig.axes for ln in ax.lines)
        assert n_refs == 6 * len(SIGMAS)
        assert _one_legend(fig)[:4] == ["cohen", "fars-mc", "fars-closed", "lipschitz-margin"]
    finally:
        plt.close(fig)


def test_no_cutoff_without_n_and_alpha(df: pd.DataFrame) -> None:
    few = report.select_runs(df, methods=["cohen", "fars-closed"])
    panels = figures.certified_panels(few)
    assert [p.label for p in panels] == FAMILIES[:3] + ["sll+sparsemax"]
    assert all(p.cutoffs == [] for p in panels)
    # the CNNs trained at each noise level form one envelope family 'cnn'
    assert [(c.method, c.model, c.kind) for c in panels[0].curves] == [("cohen", "cnn", "envelope")]


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


def test_time_budget_best_sigma_points_and_one_legend(df: pd.DataFrame) -> None:
    pts = figures.budget_points(df, (0.0, 0.1))
    tb = report.time_budget(df, (0.0, 0.1))
    # one point per (method, model family) per radius: the best sigma there
    assert len(pts) == 2 * len(set(zip(tb["method"], tb["model"].map(paper_metrics.envelope_model), strict=True)))
    mc = tb[(tb["method"] == "fars-mc") & (tb["model"] == "sll+ce")]
    got = pts[(pts["method"] == "fars-mc") & (pts["family"] == "sll+ce") & (pts["radius"] == 0.1)]
    assert got["accuracy"].tolist() == [mc["acc@0.1"].max()]


@pytest.mark.parametrize("width", [3.3, 7.0])
def test_time_budget_figure(df: pd.DataFrame, tmp_path: Path, width: float) -> None:
    import matplotlib.image as mpimg

    path = figures.plot_time_budget(df, tmp_path / "tb.png", radii=(0.0, 0.1, 0.2), width=width)
    assert mpimg.imread(path).shape[1] == round(width * 200)
    # the costs fall into two groups decades apart (0.002 s and 0.2-0.6 s): the gap is squeezed
    axis = figures.budget_axis([0.002, 0.0022, 0.2, 0.6])
    assert axis.broken and axis.forward(np.array([0.6]))[0] - axis.forward(np.array([0.0022]))[0] < 1.0
    assert axis.inverse(axis.forward(np.array([0.001, 0.05, 0.3]))) == pytest.approx([0.001, 0.05, 0.3])
    assert not figures.budget_axis([0.002, 0.01]).broken


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
    emp = pd.DataFrame({"model": ["sll+ce"] * 3 + ["cnn-noise0.25", "cnn-noise0.50"],
                        "radius": [0.0, 0.2, 0.4, 0.0, 0.0], "accuracy": [0.8, 0.6, 0.3, 0.7, 0.9]})
    few = report.select_runs(df, methods=["cohen"])
    panels = figures.certified_panels(few, empirical=emp)
    attacks = [[c for c in p.curves if c.kind == "attack"] for p in panels]
    assert [len(a) for a in attacks] == [1, 1]  # cnn family, sll+ce
    assert attacks[0][0].ys.tolist() == [0.9]   # the family's best attacked model: an upper bound on each
    per_sigma = figures.certified_panels(few, empirical=emp, per_sigma=True)
    assert [sum(c.kind == "attack" for c in p.curves) for p in per_sigma] == [1] * 6
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
    # bench.report.read keeps its own copy of the method names (it must not import torch): keep them equal
    from bench.certify.runs import METHODS
    from bench.report.read import KNOWN_METHODS, MONTE_CARLO

    assert tuple(KNOWN_METHODS) == tuple(METHODS)
    assert set(MONTE_CARLO) == {"cohen", "fars-mc"}


# ------------------------------------------------------------------ speed-ups, widths, filters, radius labels


def test_speedup_figure_has_intervals_n_and_device_and_no_title(reports: dict[str, Path], df: pd.DataFrame,
                                                                 tmp_path: Path) -> None:
    summary = report.summarize(df)
    fig_path = report.plot_speedup(summary, tmp_path / "sp.png", device="CPU (x86_64, 2 cores)", width=3.3)
    assert fig_path.is_file()
    from bench.report import plots
    caption = " ".join(plots.speedup_caption(summary, "CPU (x86_64, 2 cores)").split())   # unwrapped
    assert f"n = {N_IMAGES} images per run" in caption and "CPU (x86_64, 2 cores)" in caption
    assert "95% bootstrap interval" in caption
    with_ref = summary[summary["speedup_reference"] != ""]
    assert set(with_ref["method"]) == {"fars-mc", "fars-closed", "lipschitz-margin"}   # no bar for Cohen itself
    assert (with_ref["speedup_low"] <= with_ref["speedup_vs_cohen"]).all()
    assert (with_ref["speedup_vs_cohen"] <= with_ref["speedup_high"]).all()
    md = reports["speedup_md"].read_text()
    assert "cohen sll+ce σ=0.25" in md and "95% interval" in md and md.count("\n| fars-mc ") == 12


def test_noisy_timings_give_a_table_and_no_speedup_figure(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "speedup.png").write_bytes(b"stale")
    warning = "cohen sll+ce σ=0.25: per-image times vary 4.0x between the 10th and 90th percentile"
    manifest = {"monte_carlo": {"n": 1000, "alpha": 0.001}, "device_name": "CPU (test)", "timing_warnings": [warning]}
    paths = report.write_reports(run_dir / "certify.tsv", tmp_path, manifest=manifest, formats=("png",))
    assert "speedup_png" not in paths and not (tmp_path / "speedup.png").exists()   # the stale figure is gone
    md = paths["speedup_md"].read_text()
    assert warning in md and "not drawn" in md and "Device: CPU (test)." in md


def test_widths_write_column_and_full_figures(run_dir: Path, tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    paths = report.write_reports(run_dir / "certify.tsv", tmp_path, formats=("png",), widths=("full", "column"))
    for stem in ("certified_accuracy", "time_budget", "speedup"):
        assert mpimg.imread(paths[f"{stem}_png"]).shape[1] == 1400                # 7 in at 200 dpi
        assert mpimg.imread(paths[f"{stem}_column_png"]).shape[1] == 660          # 3.3 in
        assert paths[f"{stem}_column_png"].name == f"{stem}_column.png"
    with pytest.raises(ValueError, match="figure width"):
        report.write_reports(run_dir / "certify.tsv", tmp_path, widths=("wide",))


def test_cli_width_and_per_sigma(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report_cli.main([str(run_dir), "--out-dir", str(tmp_path), "--width", "column", "--per-sigma",
                            "--format", "png"]) == 0
    import matplotlib.image as mpimg
    assert mpimg.imread(tmp_path / "certified_accuracy.png").shape[1] == 660
    assert report_cli.main([str(run_dir), "--out-dir", str(tmp_path), "--width", "1"]) == 2
    assert "figure width" in capsys.readouterr().err


def test_every_filter_applies_to_every_table(run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "certify.tsv").write_bytes((run_dir / "certify.tsv").read_bytes())
    pd.DataFrame({"model": ["sll+ce"] * 2 + ["sll+margin"] * 2, "radius": [0.0, 0.1] * 2,
                  "accuracy": [0.9, 0.8, 0.7, 0.6], "examples": [20] * 4, "pgd": [True] * 4}).to_csv(
        run / "robustness.csv", index=False)
    assert report_cli.main([str(run), "--models", "sll+margin", "--radii", "0", "0.1", "--format", "png"]) == 0
    t2 = (run / "table2.md").read_text()
    assert "sll+margin" in t2 and "sll+ce" not in t2 and "ε=0.1" in t2 and "ε=0.2" not in t2
    for name in ("summary.md", "table_certified.md", "table1.md"):
        text = (run / name).read_text()
        assert "sll+margin" in text and "| sll+ce" not in text and "cnn" not in text, name
    t1 = (run / "table1.md").read_text()
    assert "ε=0.1" in t1 and "ε=0.2" not in t1   # --radii sets Table 1's radii too


def test_summary_shows_clean_once(reports: dict[str, Path]) -> None:
    header = next(line for line in reports["summary_md"].read_text().splitlines() if line.startswith("| method"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells.count("clean") == 1 and "acc@0" not in cells and "acc@0.05" in cells
    assert "Cohen reference" in cells


def test_cohen_only_run_writes_no_fars_table_and_no_speedup(run_dir: Path, tmp_path: Path) -> None:
    paths = report.write_reports(run_dir / "certify.tsv", tmp_path, methods=["cohen"], formats=("png",))
    assert not {"table1_md", "table1_tex", "speedup_md", "speedup_png"} & set(paths)
    assert not (tmp_path / "table1.md").exists()


def test_radii_printed_as_given(run_dir: Path, tmp_path: Path) -> None:
    from bench.common.units import fmt_radius, parse_radius

    assert [fmt_radius(r) for r in (0, 0.05, 36 / 255, 72 / 255, 1.0, 0.2, 0.141176)] == \
        ["0", "0.05", "36/255", "72/255", "1", "0.2", "0.141"]
    assert parse_radius("36/255") == 36 / 255 and parse_radius("0.25") == 0.25
    with pytest.raises(ValueError, match="not a radius"):
        parse_radius("1/0")
    assert report_cli.main([str(run_dir), "--out-dir", str(tmp_path), "--radii", "0", "36/255", "72/255",
                            "--format", "png"]) == 0
    for name in ("summary.md", "table_certified.md", "table1.md", "table_certified.tex"):
        text = (tmp_path / name).read_text()
        assert "36/255" in text and "0.141176" not in text, name


def test_captions_in_summary(reports: dict[str, Path], run_dir: Path, tmp_path: Path) -> None:
    md = reports["summary_md"].read_text()
    figures_part = md.split("## Figures", 1)[1]
    for name in ("certified_accuracy.png", "time_budget.png", "speedup.png"):
        assert f"`{name}`" in figures_part, name
    assert "Monte Carlo cut-off" in figures_part and "n = 1000" in figures_part
    noisy = report.write_reports(run_dir / "certify.tsv", tmp_path, formats=("png",),
                                 manifest={"timing_warnings": ["busy"]})
    assert "`speedup.md`: the speed-ups as a table" in noisy["summary_md"].read_text()


def test_per_sigma_keeps_one_row_per_model(df: pd.DataFrame) -> None:
    extra = df[(df["method"] == "fars-closed") & (df["model"] == "sll+ce")].assign(model="mlp+ce")
    panels = figures.certified_panels(pd.concat([df, extra]), per_sigma=True)
    assert len(panels) == (len(FAMILIES) + 1) * len(SIGMAS)
    mlp = [p for p in panels if p.family == "mlp+ce"]
    assert [len(p.curves) for p in mlp] == [1, 0, 0]   # deterministic only: one panel, the rest of its row empty
