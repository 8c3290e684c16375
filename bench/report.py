"""Reporting for certified-robustness runs (FaRS vs Cohen et al.'s randomized smoothing).

The certification harness writes one tab-separated row per (method run, example)
with the columns listed in :data:`REQUIRED_COLUMNS`.  This module turns such a
file into the tables and figures used in the paper:

* ``summary.csv`` / ``summary.md`` -- one row per run (certified accuracy at the
  paper radii, ACR, abstention rate, timing and speed-up versus Cohen et al.);
* ``certified_accuracy.csv`` -- certified accuracy on a fine radius grid, long
  format (``method, model, sigma, radius, certified_accuracy``);
* ``certified_accuracy.png`` -- certified accuracy (%) versus l2 radius;
* ``speedup.png`` -- speed-up of every run relative to Cohen et al.

Conventions
-----------
* A *run* (one curve) is identified by ``(method, model, sigma)``; ``sigma`` is
  NaN for deterministic methods and NaN sigmas are grouped together.
* The *backbone family* of a model is the part before ``'+'`` (``sll+ce`` ->
  ``sll``), or the whole name when there is no ``'+'`` (``cnn-noise0.25``).
* Radii are l2 radii in pixel space with pixels on the ``[0, 1]`` scale.
* An example is certified at radius ``r`` iff ``correct == 1`` and
  ``radius >= r``; abstentions (``predict == -1``) are never correct, so they
  count as wrong at every radius.

Command line::

    python -m bench.report RUN_DIR            # reads RUN_DIR/certify.tsv
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot import

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = [
    "REQUIRED_COLUMNS",
    "PAPER_RADII",
    "RUN_KEYS",
    "backbone_family",
    "read_results",
    "certified_accuracy",
    "default_grid",
    "summarize",
    "write_summary",
    "plot_certified_accuracy",
    "plot_speedup",
    "plot_scaling",
    "write_reports",
    "main",
]

#: Columns the harness writes, in order.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "idx",
    "label",
    "predict",
    "radius",
    "correct",
    "time",
    "method",
    "model",
    "sigma",
    "samples",
    "seconds",
)

#: Radii reported in the paper's tables (l2, [0, 1] pixel scale).
PAPER_RADII: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)

#: Columns identifying one run / curve.
RUN_KEYS: tuple[str, str, str] = ("method", "model", "sigma")

#: Methods that need no sampling (their cost does not depend on n).
DETERMINISTIC_METHODS: frozenset[str] = frozenset({"fars-closed", "lipschitz-margin"})

#: Method whose timing is the speed-up reference.
REFERENCE_METHOD = "cohen"

# Figure constants (inches / dots per inch).  Widths are fixed so figures line
# up in a paper; heights grow with the number of legend rows / bars.
DPI = 200
FIG_WIDTH = 7.0

# Colour-blind friendly (Okabe-Ito) colours, fixed per known method so every
# figure uses the same colour for the same method.
METHOD_COLORS: dict[str, str] = {
    "cohen": "#0072B2",  # blue
    "fars-mc": "#CC79A7",  # reddish purple
    "fars-closed": "#D55E00",  # vermillion
    "lipschitz-margin": "#009E73",  # green
}
_EXTRA_COLORS = ["#E69F00", "#56B4E9", "#8C564B", "#7F7F7F", "#BCBD22", "#17BECF"]

# Line styles per model.  Plain dashes ('--') are reserved for empirical
# (attack) curves and the dotted grey verticals mark the paper radii.
_MODEL_LINESTYLES: list = [
    "-",
    "-.",
    (0, (1, 1.2)),
    (0, (6, 1.5, 1, 1.5, 1, 1.5)),
    (0, (9, 2)),
    (0, (3, 1, 1, 1)),
]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def backbone_family(model: str) -> str:
    """Return the backbone family of a model name.

    ``'sll+ce'`` -> ``'sll'``; names without ``'+'`` are their own family
    (``'cnn-noise0.25'`` -> ``'cnn-noise0.25'``).
    """
    return str(model).split("+", 1)[0]


_TD_RE = re.compile(
    r"^\s*(?:(?P<days>-?\d+)\s+days?,\s*)?(?P<h>\d+):(?P<m>\d{1,2}):(?P<s>\d{1,2}(?:\.\d*)?)\s*$"
)


def _timedelta_seconds(text: object) -> float:
    """Parse ``str(datetime.timedelta)`` (e.g. ``'0:00:01.234567'``) to seconds; NaN if unparsable."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return math.nan
    m = _TD_RE.match(str(text))
    if not m:
        return math.nan
    days = int(m.group("days") or 0)
    return days * 86400.0 + int(m.group("h")) * 3600.0 + int(m.group("m")) * 60.0 + float(m.group("s"))


def read_results(path: str | Path) -> pd.DataFrame:
    """Read a per-example certification TSV written by the harness.

    Parameters
    ----------
    path:
        Tab-separated file with a header row containing (at least) the columns
        in :data:`REQUIRED_COLUMNS`.  Extra columns are kept.

    Returns
    -------
    pandas.DataFrame
        Typed frame: ``idx, label, predict, correct, samples`` as integers,
        ``radius, sigma, seconds`` as floats (``'inf'`` parses to ``np.inf``,
        empty / ``nan`` sigma to NaN), ``method, model, time`` as strings.
        When ``seconds`` is missing for a row it is recovered from ``time``.

    Raises
    ------
    ValueError
        If required columns are missing (the message lists them), or values
        cannot be converted to the expected types.
    """
    path = Path(path)
    df = pd.read_csv(path, sep="\t", dtype={"method": str, "model": str, "time": str}, keep_default_na=True)
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: missing required column(s) {missing}; expected tab-separated columns "
            f"{list(REQUIRED_COLUMNS)}, found {list(df.columns)}"
        )
    return _coerce(df, source=str(path))


def _coerce(df: pd.DataFrame, source: str = "results") -> pd.DataFrame:
    """Validate column presence and convert columns to their canonical dtypes."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing required column(s) {missing}; expected {list(REQUIRED_COLUMNS)}")
    out = df.reset_index(drop=True)  # a copy; tolerate duplicated indexes (e.g. from pd.concat)
    for col in ("radius", "sigma", "seconds"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    for col in ("idx", "label", "predict", "correct", "samples"):
        num = pd.to_numeric(out[col], errors="coerce")
        if col == "samples":
            num = num.fillna(0)
        if num.isna().any():
            bad = out.loc[num.isna(), col].head(3).tolist()
            raise ValueError(f"{source}: column {col!r} has non-integer values, e.g. {bad}")
        out[col] = num.astype(np.int64)
    for col in ("method", "model"):
        if out[col].isna().any():
            raise ValueError(f"{source}: column {col!r} has empty values")
        out[col] = out[col].astype(str).str.strip()
    out["time"] = out["time"].astype(str)
    if out["radius"].isna().any():
        raise ValueError(f"{source}: column 'radius' has non-numeric values")
    no_secs = out["seconds"].isna()
    if no_secs.any():
        out.loc[no_secs, "seconds"] = out.loc[no_secs, "time"].map(_timedelta_seconds)
    return out


def _as_results(df: pd.DataFrame) -> pd.DataFrame:
    """Accept a raw or already-typed results frame and return a typed copy."""
    return _coerce(df, source="results DataFrame")


def _run_groups(df: pd.DataFrame):
    """Group rows by run key, keeping NaN sigma as its own group."""
    return df.groupby(list(RUN_KEYS), dropna=False, sort=False)


def _sort_runs(frame: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Sort run rows by backbone family, method, model, sigma (NaN sigma last), then ``extra``."""
    tmp = frame.assign(_family=frame["model"].map(backbone_family))
    keys = ["_family", "method", "model", "sigma", *extra]
    tmp = tmp.sort_values(keys, na_position="last", kind="mergesort")
    return tmp.drop(columns="_family").reset_index(drop=True)


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------


def _radius_label(r: float) -> str:
    """Column-name form of a radius: 0 -> '0', 0.05 -> '0.05'."""
    return f"{float(r):g}"


def _cert_acc_values(radius: np.ndarray, correct: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Fraction of examples with correct == 1 and radius >= r, for each r in ``radii``."""
    n = len(radius)
    if n == 0:
        return np.full(len(radii), np.nan)
    ok = np.sort(radius[correct == 1])
    # number of certified radii >= r  ==  len(ok) - (number < r)
    counts = len(ok) - np.searchsorted(ok, radii, side="left")
    return counts / n


def certified_accuracy(df: pd.DataFrame, radii: Iterable[float]) -> pd.DataFrame:
    """Certified accuracy of every run at the given radii.

    For run ``(method, model, sigma)`` and radius ``r`` the certified accuracy is
    the mean over that run's examples of ``correct == 1 and radius >= r``.
    Abstentions (``predict == -1``, ``correct == 0``) count as wrong, and an
    infinite radius is certified at every ``r``.  The result is non-increasing
    in ``r`` by construction.

    Returns
    -------
    pandas.DataFrame
        Long format with columns ``method, model, sigma, radius,
        certified_accuracy`` (a fraction in [0, 1]), sorted by backbone family,
        method, model, sigma and radius.
    """
    df = _as_results(df)
    r = np.asarray(sorted({float(x) for x in radii}), dtype=float)
    rows = []
    for (method, model, sigma), g in _run_groups(df):
        acc = _cert_acc_values(g["radius"].to_numpy(float), g["correct"].to_numpy(), r)
        for rad, a in zip(r, acc):
            rows.append((method, model, sigma, rad, a))
    out = pd.DataFrame(rows, columns=[*RUN_KEYS, "radius", "certified_accuracy"])
    out["sigma"] = out["sigma"].astype(float)
    return _sort_runs(out, extra=["radius"])


def default_grid(df: pd.DataFrame, max_points: int = 400) -> np.ndarray:
    """A fine, 'round-number' radius grid covering every finite certified radius.

    Starts at 0, uses the smallest step in (0.005, 0.01, 0.02, 0.05, 0.1, ...)
    that keeps at most ``max_points`` points, ends at or just past
    ``max(0.3, largest finite radius)``, and always contains :data:`PAPER_RADII`.
    """
    rad = pd.to_numeric(df["radius"], errors="coerce").to_numpy(float)
    finite = rad[np.isfinite(rad)]
    upper = max(PAPER_RADII[-1], float(finite.max()) if finite.size else 0.0)
    j = 2  # step = (1, 2, 5)[j % 3] * 10**(j // 3 - 3): 0.005, 0.01, 0.02, 0.05, 0.1, ...
    step = 0.005
    while upper / step > max_points - 1:
        j += 1
        step = (1, 2, 5)[j % 3] * 10.0 ** (j // 3 - 3)
    n = int(math.ceil(upper / step - 1e-9))
    grid = np.round(np.arange(n + 1) * step, 6)
    return np.unique(np.concatenate([grid, np.asarray(PAPER_RADII, float)]))


def summarize(
    df: pd.DataFrame,
    radii: Sequence[float] = PAPER_RADII,
    grid: Iterable[float] | None = None,
) -> pd.DataFrame:
    """One summary row per run ``(method, model, sigma)``.

    Parameters
    ----------
    df:
        Per-example results (see :func:`read_results`).
    radii:
        Radii reported as ``cert_acc@R`` columns (default: the paper radii
        0, 0.05, 0.1, 0.2, 0.3).  Column names use ``format(r, 'g')``:
        ``cert_acc@0``, ``cert_acc@0.05``, ...
    grid:
        Optional extra radii (e.g. a fine grid); their ``cert_acc@R`` columns
        are added after the ``radii`` columns (duplicates are skipped).  Use
        :func:`certified_accuracy` for a long-format curve instead.

    Returns
    -------
    pandas.DataFrame
        Columns, in order:

        ``family, method, model, sigma`` -- run identity (``family`` is the
        backbone family, see :func:`backbone_family`);
        ``examples`` -- number of rows of the run;
        ``cert_acc@R`` -- certified accuracy (fraction) at each radius;
        ``acr`` -- average certified radius ``mean(radius if correct else 0)``.
        If any *correctly classified* example has ``radius == inf`` the ACR is
        reported as ``inf`` (an average including an infinite radius is
        infinite; it is not silently clipped).  ``inf_radius`` counts such
        examples so the cause is visible.  Infinite radii of wrong predictions
        contribute 0, like any wrong prediction;
        ``abstention_rate`` -- fraction with ``predict == -1``;
        ``clean_acc`` -- accuracy of the certified (smoothed) predictions,
        i.e. ``mean(correct)`` which equals ``cert_acc@0`` since radii are >= 0;
        ``median_seconds, p25_seconds, p75_seconds`` -- per-image wall-clock
        seconds (median and inter-quartile spread);
        ``samples`` -- evaluations per input (median over the run; 0 for
        deterministic methods);
        ``speedup_vs_cohen`` -- ``(median seconds over all rows of the
        'cohen' runs in the same backbone family) / median_seconds``; NaN when
        the family has no cohen run, ``inf`` when this run's median is 0.

        Rows are sorted by family, method, model, sigma (NaN sigma last).
    """
    df = _as_results(df)
    radii_list: list[float] = []
    for r in list(radii) + (list(grid) if grid is not None else []):
        r = float(r)
        if _radius_label(r) not in {_radius_label(x) for x in radii_list}:
            radii_list.append(r)
    acc_cols = [f"cert_acc@{_radius_label(r)}" for r in radii_list]
    r_arr = np.asarray(radii_list, dtype=float)

    ref_rows = df.loc[df["method"] == REFERENCE_METHOD, ["model", "seconds"]]
    ref_median = ref_rows.groupby(ref_rows["model"].map(backbone_family))["seconds"].median().to_dict()

    rows = []
    for (method, model, sigma), g in _run_groups(df):
        seen = g.groupby("idx").size()
        if (seen > 1).any():
            warnings.warn(
                f"run ({method}, {model}, sigma={sigma}) has {int((seen > 1).sum())} duplicated idx values; "
                "each row is counted as a separate example",
                stacklevel=2,
            )
        radius = g["radius"].to_numpy(float)
        correct = g["correct"].to_numpy()
        is_ok = correct == 1
        acc = _cert_acc_values(radius, correct, r_arr)
        n_inf = int(np.sum(is_ok & np.isinf(radius) & (radius > 0)))
        acr = math.inf if n_inf else float(np.mean(np.where(is_ok, radius, 0.0)))
        secs = g["seconds"].to_numpy(float)
        med = float(np.nanmedian(secs)) if np.isfinite(secs).any() else math.nan
        p25, p75 = (
            (float(np.nanpercentile(secs, 25)), float(np.nanpercentile(secs, 75)))
            if np.isfinite(secs).any()
            else (math.nan, math.nan)
        )
        fam = backbone_family(model)
        ref = ref_median.get(fam, math.nan)
        if math.isnan(ref) or math.isnan(med):
            speed = math.nan
        elif med == 0:
            speed = math.inf
        else:
            speed = ref / med
        row = {
            "family": fam,
            "method": method,
            "model": model,
            "sigma": float(sigma),
            "examples": int(len(g)),
            **dict(zip(acc_cols, acc.tolist())),
            "acr": acr,
            "inf_radius": n_inf,
            "abstention_rate": float(np.mean(g["predict"].to_numpy() == -1)),
            "clean_acc": float(np.mean(is_ok)),
            "median_seconds": med,
            "p25_seconds": p25,
            "p75_seconds": p75,
            "samples": int(np.median(g["samples"].to_numpy())),
            "speedup_vs_cohen": speed,
        }
        rows.append(row)
    columns = [
        "family",
        *RUN_KEYS,
        "examples",
        *acc_cols,
        "acr",
        "inf_radius",
        "abstention_rate",
        "clean_acc",
        "median_seconds",
        "p25_seconds",
        "p75_seconds",
        "samples",
        "speedup_vs_cohen",
    ]
    out = pd.DataFrame(rows, columns=columns)
    if out.empty:
        return out
    return _sort_runs(out)


# ---------------------------------------------------------------------------
# Formatting / tables
# ---------------------------------------------------------------------------


def _fmt_pct(x: float) -> str:
    return "—" if x is None or pd.isna(x) else f"{100.0 * float(x):.1f}%"


def _fmt_seconds(s: float) -> str:
    """Human/engineering format of a duration: '850 µs', '12.3 ms', '1.05 s', '2.5 min', '1.2 h'."""
    if s is None or pd.isna(s):
        return "—"
    s = float(s)
    if math.isinf(s):
        return "∞"
    if s == 0:
        return "0 s"
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    if s < 60:
        return f"{s:.3g} s"
    if s < 3600:
        return f"{s / 60:.3g} min"
    return f"{s / 3600:.3g} h"


def _fmt_speedup(x: float) -> str:
    """Table format of a speed-up factor: '1234x', '12x', '3.4x', '0.52x'."""
    if x is None or pd.isna(x):
        return "—"
    x = float(x)
    if math.isinf(x):
        return "∞"
    if x >= 10:
        return f"{x:.0f}x"
    if x >= 0.995:
        return f"{x:.1f}x"
    return f"{x:.2g}x"


def _fmt_speedup_short(x: float) -> str:
    """Compact annotation of a speed-up factor: '1.2e3x', '45x', '1.0x', '0.5x'."""
    if math.isinf(x):
        return "∞"
    if x >= 1000:
        e = int(math.floor(math.log10(x)))
        m = x / 10**e
        if round(m, 1) >= 10:  # 9.96e3 -> 1.0e4
            m, e = m / 10, e + 1
        return f"{m:.1f}e{e}x"
    if x >= 10:
        return f"{x:.0f}x"
    return f"{x:.2g}x" if x < 0.995 else f"{x:.1f}x"


def _fmt_log_tick(v: float, _pos: object = None) -> str:
    """Tick label on a log speed-up axis: 0.1x, 1x, 10x, 100x, 1e3x, 1e4x."""
    if v <= 0 or not math.isfinite(v):
        return ""
    e = math.log10(v)
    if abs(e - round(e)) < 1e-6 and round(e) >= 3:
        return f"1e{int(round(e))}x"
    return f"{v:g}x"


def _fmt_sigma(s: float) -> str:
    return "—" if s is None or pd.isna(s) else f"{float(s):g}"


def _fmt_acr(x: float) -> str:
    if x is None or pd.isna(x):
        return "—"
    return "∞" if math.isinf(float(x)) else f"{float(x):.3f}"


def _markdown_table(frame: pd.DataFrame, right_align: Sequence[str]) -> str:
    """Render a frame of strings as a GitHub-flavoured markdown table (no extra dependency)."""
    cols = list(frame.columns)
    cells = [[str(v).replace("|", "\\|") for v in row] for row in frame.itertuples(index=False)]
    widths = [max([3, len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]

    def line(vals: Sequence[str]) -> str:
        return "| " + " | ".join(
            v.rjust(w) if c in right_align else v.ljust(w) for v, w, c in zip(vals, widths, cols)
        ) + " |"

    sep = "| " + " | ".join(
        ("-" * (w - 1) + ":") if c in right_align else "-" * w for w, c in zip(widths, cols)
    ) + " |"
    return "\n".join([line(cols), sep, *(line(r) for r in cells)])


def _summary_markdown(summary: pd.DataFrame) -> str:
    """Markdown view of :func:`summarize` output (numbers formatted for reading)."""
    acc_cols = [c for c in summary.columns if c.startswith("cert_acc@")]
    view = pd.DataFrame(
        {
            "method": summary["method"].astype(str),
            "model": summary["model"].astype(str),
            "σ": summary["sigma"].map(_fmt_sigma),
            "n": summary["examples"].map(lambda v: f"{int(v)}"),
            **{("acc@" + c.split("@", 1)[1]): summary[c].map(_fmt_pct) for c in acc_cols},
            "ACR": summary["acr"].map(_fmt_acr),
            "abstain": summary["abstention_rate"].map(_fmt_pct),
            "clean": summary["clean_acc"].map(_fmt_pct),
            "s/img (median)": summary["median_seconds"].map(_fmt_seconds),
            "s/img (p25–p75)": [
                f"{_fmt_seconds(a)} – {_fmt_seconds(b)}"
                for a, b in zip(summary["p25_seconds"], summary["p75_seconds"])
            ],
            "samples": summary["samples"].map(lambda v: f"{int(v):,}" if int(v) else "0 (det.)"),
            "speedup vs Cohen": summary["speedup_vs_cohen"].map(_fmt_speedup),
        }
    )
    right = [c for c in view.columns if c not in ("method", "model")]
    header = (
        "# Certification summary\n\n"
        "One row per run (method, model, σ). `acc@R`: certified accuracy at l2 radius R "
        "(pixel space, [0,1] pixel scale; abstentions count as wrong; `acc@0` is the clean accuracy "
        "of the certified predictions, also shown as `clean`). `ACR`: average certified radius "
        "(radius of correct predictions, 0 otherwise; ∞ if a correct prediction has an infinite radius). "
        "`abstain`: abstention rate. `s/img`: wall-clock seconds per image (median and 25th–75th percentile). "
        "`samples`: network evaluations per input (0 = deterministic). `speedup vs Cohen`: median s/img of the "
        "Cohen et al. runs on the same backbone family divided by this run's median (— = no Cohen run "
        "on that family).\n\n"
    )
    return header + _markdown_table(view, right) + "\n"


def write_summary(
    summary: pd.DataFrame,
    out_dir: str | Path,
    curves: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Write ``summary.csv`` and ``summary.md`` (and ``certified_accuracy.csv``).

    Parameters
    ----------
    summary:
        Output of :func:`summarize`.  ``summary.csv`` holds it verbatim
        (fractions, seconds, raw speed-ups); ``summary.md`` is a readable
        markdown table (percentages with one decimal, durations as
        µs/ms/s/min, speed-ups like ``1234x``) preceded by a short legend.
    out_dir:
        Directory (created if needed).
    curves:
        Optional long-format certified-accuracy grid (output of
        :func:`certified_accuracy`), written as ``certified_accuracy.csv``
        with columns ``method, model, sigma, radius, certified_accuracy``.

    Returns
    -------
    dict[str, pathlib.Path]
        ``{'summary_csv', 'summary_md'[, 'certified_accuracy_csv']}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {
        "summary_csv": out_dir / "summary.csv",
        "summary_md": out_dir / "summary.md",
    }
    summary.to_csv(paths["summary_csv"], index=False)
    paths["summary_md"].write_text(_summary_markdown(summary), encoding="utf-8")
    if curves is not None:
        paths["certified_accuracy_csv"] = out_dir / "certified_accuracy.csv"
        curves[[*RUN_KEYS, "radius", "certified_accuracy"]].to_csv(paths["certified_accuracy_csv"], index=False)
    return paths


# ---------------------------------------------------------------------------
# Plot helpers
# ---------------------------------------------------------------------------


def _method_colors(methods: Iterable[str]) -> dict[str, str]:
    """Fixed colours for known methods, then a stable palette for the rest (sorted)."""
    colors = {}
    extra = iter(_EXTRA_COLORS * 4)
    for m in sorted(set(methods)):
        colors[m] = METHOD_COLORS.get(m) or next(extra)
    return colors


def _shade(color: str, k: int, n: int) -> tuple[float, float, float]:
    """k-th of n shades of ``color`` (dark -> light), for runs that share method and model."""
    rgb = np.asarray(mcolors.to_rgb(color))
    if n <= 1:
        return tuple(rgb)
    t = -0.35 + 0.8 * k / (n - 1)  # -0.35 (darker) .. +0.45 (lighter)
    out = rgb * (1 + t) if t < 0 else rgb + (1 - rgb) * t
    return tuple(np.clip(out, 0, 1))


def _run_label(method: str, model: str, sigma: float) -> str:
    """'fars-closed · sll+ce' or 'cohen · cnn-noise0.25 · σ=0.25'."""
    label = f"{method} · {model}"
    if sigma is not None and not pd.isna(sigma):
        label += f" · σ={float(sigma):g}"
    return label


def _style_axes(ax: plt.Axes) -> None:
    ax.grid(True, which="major", color="0.85", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


_RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10.5,
    "legend.fontsize": 8.5,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.titleweight": "bold",
}


def _legend_ncol(labels: Sequence[str]) -> int:
    """Columns for a legend below a :data:`FIG_WIDTH`-wide figure so that no entry is clipped."""
    if not labels:
        return 1
    longest = max(len(s) for s in labels)
    per_col = 0.06 * longest + 0.75  # inches: ~0.06 in/char at 8.5 pt + handle + padding
    return int(max(1, min(3, len(labels), math.floor((FIG_WIDTH - 0.2) / per_col))))


def _legend_rows(n_entries: int, ncol: int) -> int:
    return int(math.ceil(n_entries / max(ncol, 1)))


def _bottom_legend_height(n_entries: int, ncol: int) -> float:
    """Figure height (inches) for a certified-accuracy style plot with a legend below."""
    return 4.4 + 0.22 * _legend_rows(n_entries, ncol)


def _save(fig: plt.Figure, out_path: str | Path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=DPI, facecolor="white")
    plt.close(fig)
    return out_path


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


def plot_certified_accuracy(
    df: pd.DataFrame,
    out_path: str | Path,
    empirical: pd.DataFrame | None = None,
    paper_radii: Sequence[float] = PAPER_RADII[1:],
    title: str = r"Certified accuracy vs. $\ell_2$ radius",
) -> Path:
    """Plot certified accuracy (%) against l2 radius, one step curve per run.

    Parameters
    ----------
    df:
        Per-example results (see :func:`read_results`).
    out_path:
        PNG path (written at :data:`DPI` dots per inch, width :data:`FIG_WIDTH` in).
    empirical:
        Optional empirical (attack) accuracy with columns ``model, radius,
        accuracy`` (fraction in [0, 1]; values > 1 are taken as percentages),
        drawn as dark dashed lines with markers, one per model.  With a
        boolean ``pgd`` column (``bench.attack``'s ``robustness.csv``) the rows
        are an exact step function (drawn steps-post) and markers show only
        the radii where the attack ran.
    paper_radii:
        Radii marked with light dotted vertical lines (pass ``()`` to omit).
    title:
        Axes title.

    Colours encode the method (fixed per method across all figures), line
    styles the model; runs that share method and model (several σ) get
    different shades.  The x axis runs from 0 to a bit past the largest finite
    certified radius (at least 0.05); curves with infinite radii stay flat to
    the right edge.  The legend is placed below the axes so it never hides a
    curve.  Returns ``out_path``.
    """
    df = _as_results(df)
    finite = df["radius"].to_numpy(float)
    finite = finite[np.isfinite(finite)]
    rmax = float(finite.max()) if finite.size else 0.0
    if empirical is not None and len(empirical):
        er = pd.to_numeric(empirical["radius"], errors="coerce").to_numpy(float)
        er = er[np.isfinite(er)]
        if er.size:
            rmax = max(rmax, float(er.max()))
    xmax = max(rmax * 1.06, rmax + 0.01, 0.05)

    runs = _sort_runs(df[list(RUN_KEYS)].drop_duplicates())
    colors = _method_colors(runs["method"])
    models = list(dict.fromkeys(runs["model"]))
    lstyle = {m: _MODEL_LINESTYLES[i % len(_MODEL_LINESTYLES)] for i, m in enumerate(models)}
    labels = [_run_label(m, mo, sg) for m, mo, sg in zip(runs["method"], runs["model"], runs["sigma"])]
    if empirical is not None and len(empirical):
        labels += [f"empirical (attack) · {m}" for m in sorted(empirical["model"].astype(str).unique())]
    n_entries = len(labels)
    ncol = _legend_ncol(labels)

    with plt.rc_context(_RC):
        fig = plt.figure(figsize=(FIG_WIDTH, _bottom_legend_height(n_entries, ncol)), layout="constrained")
        ax = fig.add_subplot()
        _style_axes(ax)
        for r in paper_radii:
            if 0 < r <= xmax:
                ax.axvline(r, color="0.6", linestyle=":", linewidth=0.9, zorder=1)
        groups = {k: g for k, g in _run_groups(df)}
        shade_idx: dict[tuple[str, str], list] = {}
        for row in runs.itertuples(index=False):
            shade_idx.setdefault((row.method, row.model), []).append(row.sigma)
        for row in runs.itertuples(index=False):
            key = next(k for k in groups if k[0] == row.method and k[1] == row.model
                       and (k[2] == row.sigma or (pd.isna(k[2]) and pd.isna(row.sigma))))
            g = groups[key]
            radius = g["radius"].to_numpy(float)
            correct = g["correct"].to_numpy()
            ok = np.sort(radius[(correct == 1) & np.isfinite(radius)])
            steps = np.unique(ok[ok > 0])
            xs = np.concatenate([[0.0], steps, [xmax]])
            # value on (x_i, x_{i+1}] is the fraction certified strictly beyond x_i
            ys = np.concatenate(
                [
                    _cert_acc_values(radius, correct, np.array([0.0])),
                    _cert_acc_values(radius, correct, np.nextafter(steps, np.inf)),
                ]
            )
            ys = np.concatenate([ys, ys[-1:]]) * 100.0
            sigmas = shade_idx[(row.method, row.model)]
            k = [i for i, s in enumerate(sigmas) if s == row.sigma or (pd.isna(s) and pd.isna(row.sigma))][0]
            ax.step(
                xs,
                ys,
                where="post",
                color=_shade(colors[row.method], k, len(sigmas)),
                linestyle=lstyle[row.model],
                linewidth=1.9,
                label=_run_label(row.method, row.model, row.sigma),
                zorder=3,
            )
        if empirical is not None and len(empirical):
            emp = empirical.copy()
            emp["radius"] = pd.to_numeric(emp["radius"], errors="coerce")
            emp["accuracy"] = pd.to_numeric(emp["accuracy"], errors="coerce")
            scale = 1.0 if emp["accuracy"].max() > 1.0 else 100.0
            # optional columns from bench.attack: ``pgd`` marks the radii where the attack ran (markers
            # only there); with it the rows form an exact step function of the radius (steps-post).
            stepped = "pgd" in emp.columns
            for i, (model, g) in enumerate(emp.groupby("model", sort=True)):
                g = g.sort_values("radius", kind="mergesort")
                marks = g["pgd"].astype(str).str.lower().isin(("true", "1")).tolist() if stepped else None
                ax.plot(
                    g["radius"],
                    g["accuracy"] * scale,
                    linestyle="--",
                    drawstyle="steps-post" if stepped else "default",
                    marker=_MARKERS[i % len(_MARKERS)],
                    markevery=marks,
                    markersize=4,
                    color="0.15" if i == 0 else _shade("#444444", i, max(2, emp["model"].nunique())),
                    linewidth=1.4,
                    label=f"empirical (attack) · {model}",
                    zorder=4,
                )
        ax.set_xlim(0, xmax)
        ax.set_ylim(0, 101)
        ax.set_xlabel(r"$\ell_2$ radius $\varepsilon$ (pixel space, pixels in [0, 1])")
        ax.set_ylabel("certified accuracy (%)")
        ax.set_title(title)
        if len(runs) or n_entries:
            fig.legend(loc="outside lower center", ncol=ncol, frameon=False, handlelength=3.2)
        return _save(fig, out_path)


def _speedup_height(n_bars: int) -> float:
    """Figure height (inches) of :func:`plot_speedup` for ``n_bars`` bars."""
    return 1.3 + 0.42 * max(n_bars, 2)


def plot_speedup(
    summary: pd.DataFrame,
    out_path: str | Path,
    title: str = "Speed-up over Cohen et al. (same backbone family)",
) -> Path:
    """Horizontal bar chart of ``speedup_vs_cohen`` per run (log-scale x axis).

    Each bar runs from 1x (the Cohen et al. reference, marked by a vertical
    line) to the run's speed-up and is annotated with its value (``'1.2e3x'``).
    Runs whose family has no Cohen run (NaN speed-up) are omitted.  Bars are
    coloured by method with the same colours as :func:`plot_certified_accuracy`.
    If no run has a reference, a figure saying so is written.  Returns ``out_path``.
    """
    s = summary[np.isfinite(pd.to_numeric(summary["speedup_vs_cohen"], errors="coerce").astype(float))]
    s = s[s["speedup_vs_cohen"] > 0].reset_index(drop=True)
    colors = _method_colors(summary["method"]) if len(summary) else {}
    with plt.rc_context(_RC):
        fig = plt.figure(figsize=(FIG_WIDTH, _speedup_height(len(s))), layout="constrained")
        ax = fig.add_subplot()
        _style_axes(ax)
        ax.grid(False, axis="y")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_fmt_log_tick))
        # centred on the figure (not the axes) so long run labels on the left cannot clip them
        fig.suptitle(title, fontweight="bold", fontsize=_RC["axes.titlesize"])
        fig.supxlabel("speed-up = median s/img of Cohen ÷ median s/img of run (log scale)",
                      fontsize=_RC["axes.labelsize"])
        if s.empty:
            ax.text(0.5, 0.5, "no run has a Cohen et al. reference on its backbone family",
                    ha="center", va="center", transform=ax.transAxes, color="0.3", zorder=5,
                    bbox=dict(facecolor="white", edgecolor="none", pad=4))
            ax.set_yticks([])
            ax.set_xlim(0.1, 10)
            ax.axvline(1.0, color="0.2", linewidth=1.1)
            return _save(fig, out_path)
        vals = s["speedup_vs_cohen"].to_numpy(float)
        y = np.arange(len(s))[::-1]  # first (sorted) run on top
        labels = [_run_label(m, mo, sg) for m, mo, sg in zip(s["method"], s["model"], s["sigma"])]
        ax.barh(
            y,
            vals - 1.0,
            left=1.0,
            height=0.62,
            color=[colors[m] for m in s["method"]],
            edgecolor="0.25",
            linewidth=0.6,
            zorder=3,
        )
        lo = min(0.5, vals.min() / 15.0)  # room for the label left of a < 1x bar
        hi = max(10.0, vals.max() * 8.0)
        ax.set_xlim(lo, hi)
        for yi, v in zip(y, vals):
            ax.annotate(
                _fmt_speedup_short(v),
                xy=(v, yi),
                xytext=(4 if v >= 0.9 else -4, 0),
                textcoords="offset points",
                ha="left" if v >= 0.9 else "right",
                va="center",
                fontsize=9,
                zorder=4,
            )
        ax.axvline(1.0, color="0.15", linewidth=1.1, zorder=4)
        ax.annotate("1x (Cohen)", xy=(1.0, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -2), textcoords="offset points", ha="left", va="top", fontsize=8, color="0.25")
        ax.set_yticks(y, labels)
        ax.set_ylim(-0.7, len(s) - 0.3)
        return _save(fig, out_path)


def plot_scaling(
    scaling_df: pd.DataFrame,
    out_path: str | Path,
    title: str = "Certification cost vs. number of samples",
) -> Path:
    """Seconds per image against the number of samples ``n`` (log-log).

    Parameters
    ----------
    scaling_df:
        Columns ``method, model, n, seconds`` and optionally ``seconds_p25,
        seconds_p75`` (drawn as a shaded band).  Rows whose ``n`` is missing
        or <= 0, and all rows of deterministic methods (``fars-closed``,
        ``lipschitz-margin``), are drawn as a horizontal dashed "flat floor"
        at their median seconds (their cost does not depend on ``n``).
    out_path:
        PNG path.

    One line with markers per method (per ``method · model`` when a method
    appears with several models), coloured like the other figures.  Returns
    ``out_path``.
    """
    d = scaling_df.copy()
    for col in ("n", "seconds", "seconds_p25", "seconds_p75"):
        if col in d.columns:
            d[col] = pd.to_numeric(d[col], errors="coerce").astype(float)
    missing = [c for c in ("method", "model", "n", "seconds") if c not in d.columns]
    if missing:
        raise ValueError(f"scaling data: missing column(s) {missing}")
    det = d["method"].isin(DETERMINISTIC_METHODS) | ~(d["n"] > 0)
    sampled, flat = d[~det], d[det]
    colors = _method_colors(d["method"])
    multi_model = d.groupby("method")["model"].nunique().to_dict()
    has_band = {"seconds_p25", "seconds_p75"} <= set(d.columns)

    def label(method: str, model: str) -> str:
        return f"{method} · {model}" if multi_model.get(method, 1) > 1 else method

    keys = list(d.groupby(["method", "model"]).groups)
    n_entries = len(keys)
    ncol = _legend_ncol([label(m, mo) + (" (flat floor, n-independent)" if m in set(flat["method"]) else "")
                         for m, mo in keys])

    with plt.rc_context(_RC):
        fig = plt.figure(figsize=(FIG_WIDTH, _bottom_legend_height(n_entries, ncol)), layout="constrained")
        ax = fig.add_subplot()
        _style_axes(ax)
        ax.grid(True, which="minor", color="0.93", linewidth=0.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        if len(sampled):
            xlo, xhi = sampled["n"].min() / 1.5, sampled["n"].max() * 1.5
        else:
            xlo, xhi = 1.0, 1e5
        for i, ((method, model), g) in enumerate(sampled.groupby(["method", "model"], sort=True)):
            g = g.groupby("n", as_index=False).median(numeric_only=True).sort_values("n")
            c = colors[method]
            ax.plot(g["n"], g["seconds"], marker=_MARKERS[i % len(_MARKERS)], markersize=5,
                    color=c, linewidth=1.8, label=label(method, model), zorder=3)
            if has_band and g[["seconds_p25", "seconds_p75"]].notna().all().all():
                ax.fill_between(g["n"], g["seconds_p25"], g["seconds_p75"], color=c, alpha=0.18,
                                linewidth=0, zorder=2)
        for (method, model), g in flat.groupby(["method", "model"], sort=True):
            c = colors[method]
            y = float(np.nanmedian(g["seconds"]))
            ax.hlines(y, xlo, xhi, colors=[c], linestyles="--", linewidth=1.8,
                      label=f"{label(method, model)} (flat floor, n-independent)", zorder=3)
            if has_band and g[["seconds_p25", "seconds_p75"]].notna().all().all():
                ax.fill_between([xlo, xhi], float(np.nanmedian(g["seconds_p25"])),
                                float(np.nanmedian(g["seconds_p75"])), color=c, alpha=0.12, linewidth=0, zorder=2)
        ax.set_xlim(xlo, xhi)
        ax.set_xlabel("Monte-Carlo samples per input n (log scale)")
        ax.set_ylabel("wall-clock seconds per image (s, log scale)")
        ax.set_title(title)
        if n_entries:
            fig.legend(loc="outside lower center", ncol=ncol, frameon=False, handlelength=3.0)
        return _save(fig, out_path)


# ---------------------------------------------------------------------------
# Orchestration / CLI
# ---------------------------------------------------------------------------


def write_reports(
    tsv_path: str | Path,
    out_dir: str | Path,
    radii: Sequence[float] = PAPER_RADII,
    grid: Iterable[float] | None = None,
    empirical: pd.DataFrame | None = None,
    scaling: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Read ``tsv_path`` and write every report into ``out_dir``.

    Writes ``summary.csv``, ``summary.md``, ``certified_accuracy.csv`` (on
    ``grid``, default :func:`default_grid`), ``certified_accuracy.png`` and
    ``speedup.png``; plus ``scaling.png`` when ``scaling`` data are given.
    ``empirical`` is forwarded to :func:`plot_certified_accuracy`.

    Returns
    -------
    dict[str, pathlib.Path]
        Keys ``summary_csv, summary_md, certified_accuracy_csv,
        certified_accuracy_png, speedup_png`` (and ``scaling_png``).
    """
    df = read_results(tsv_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid_arr = default_grid(df) if grid is None else np.asarray(list(grid), dtype=float)
    summary = summarize(df, radii=radii)
    curves = certified_accuracy(df, grid_arr)
    paths = write_summary(summary, out_dir, curves=curves)
    paths["certified_accuracy_png"] = plot_certified_accuracy(
        df, out_dir / "certified_accuracy.png", empirical=empirical
    )
    paths["speedup_png"] = plot_speedup(summary, out_dir / "speedup.png")
    if scaling is not None:
        paths["scaling_png"] = plot_scaling(scaling, out_dir / "scaling.png")
    return paths


def _read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or TSV (by extension; '.tsv' -> tab)."""
    path = Path(path)
    return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m bench.report RUN_DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description=(
            "Regenerate the certification reports of a run directory from its per-example "
            "TSV (RUN_DIR/certify.tsv, columns: " + " ".join(REQUIRED_COLUMNS) + "). Writes "
            "summary.csv, summary.md (certified accuracy at l2 radii 0/0.05/0.1/0.2/0.3, ACR, "
            "abstention rate, seconds per image, speed-up vs Cohen et al. on the same backbone "
            "family), certified_accuracy.csv (fine radius grid, long format), "
            "certified_accuracy.png and speedup.png."
        ),
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory containing certify.tsv")
    parser.add_argument("--tsv", type=Path, default=None,
                        help="per-example TSV to read (default: RUN_DIR/certify.tsv)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where to write the reports (default: RUN_DIR)")
    parser.add_argument("--empirical", type=Path, default=None,
                        help="optional CSV/TSV with columns model,radius,accuracy (attack results) "
                             "overlaid as dashed lines on certified_accuracy.png")
    parser.add_argument("--scaling", type=Path, default=None,
                        help="optional CSV/TSV with columns method,model,n,seconds[,seconds_p25,seconds_p75]; "
                             "also writes scaling.png")
    args = parser.parse_args(argv)

    tsv = args.tsv or args.run_dir / "certify.tsv"
    if not tsv.is_file():
        parser.error(f"no such file: {tsv}")
    out_dir = args.out_dir or args.run_dir
    try:
        paths = write_reports(
            tsv,
            out_dir,
            empirical=_read_table(args.empirical) if args.empirical else None,
            scaling=_read_table(args.scaling) if args.scaling else None,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, p in paths.items():
        print(f"{name:24s} {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
