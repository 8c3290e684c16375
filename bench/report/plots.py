"""Figures of a certification run (matplotlib, headless ``Agg`` backend): speed-up and scaling, and the
style every figure shares (method colours, widths, fonts).

(The certified-accuracy and time-budget figures are in :mod:`bench.report.figures`.)

* :func:`plot_speedup` -- speed-up of every run over its Cohen et al. reference, with its interval;
* :func:`plot_scaling` -- seconds per image against the number of samples;
* :data:`METHOD_COLORS` / :func:`method_colors` -- the one colour table (a method's colour is the same
  in every figure); :func:`paper_rc` -- fonts for the printed size.

The figures draw numbers computed in :mod:`bench.report.metrics` (and
formatted with :mod:`bench.report.tables`); they compute no metric themselves.
Widths are fixed (:data:`bench.common.units.WIDTHS`, inches at :data:`DPI`) so figures line up
in a paper; heights grow with the number of panels / bars.  No figure has a title.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot import

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..common.units import WIDTHS  # noqa: E402
from .metrics import DETERMINISTIC_METHODS  # noqa: E402
from .tables import fmt_log_tick, fmt_speedup_short  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

# Figure constants (inches / dots per inch).  Widths are fixed so figures line
# up in a paper; heights grow with the number of panels / bars.
DPI = 200

FIG_WIDTH = WIDTHS["full"]

#: Colour of each known method (Okabe-Ito, colour-blind friendly), the same in every figure.  A new
#: method gets its colour by one line here; a method not listed takes the next of :data:`_EXTRA_COLORS`.
METHOD_COLORS: dict[str, str] = {
    "cohen": "#0072B2",  # blue
    "fars-mc": "#CC79A7",  # reddish purple
    "fars-closed": "#D55E00",  # vermillion
    "lipschitz-margin": "#009E73",  # green
    "fars-crown": "#E69F00",  # orange
}
_EXTRA_COLORS = ["#56B4E9", "#8C564B", "#7F7F7F", "#BCBD22", "#17BECF"]


def paper_rc(width: float) -> dict[RcKeyType, Any]:
    """rcParams of a figure printed ``width`` inches wide: 7 pt text at one column, 8 pt at the full width
    (tick labels 0.5-1 pt smaller), thin lines, TrueType fonts in the PDF."""
    base = 8.0 if width >= 5 else 7.0
    return {
        "font.size": base,
        "axes.titlesize": base,
        "axes.labelsize": base,
        "legend.fontsize": base - 0.5,
        "xtick.labelsize": base - 1,
        "ytick.labelsize": base - 1,
        "axes.titleweight": "normal",
        "lines.linewidth": 1.2,
        "axes.linewidth": 0.6,
        "xtick.major.width": 0.6,
        "ytick.major.width": 0.6,
        "xtick.major.size": 2.5,
        "ytick.major.size": 2.5,
        "legend.handlelength": 1.8,
        "pdf.fonttype": 42,  # TrueType in the PDF (editable text, accepted by paper submission systems)
    }

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
# Plot helpers
# ---------------------------------------------------------------------------


def method_colors(methods: Iterable[str]) -> dict[str, str]:
    """``{method: colour}`` in legend order: the methods of :data:`METHOD_COLORS` in its order with their
    colours, then the others (sorted) with the next colours of :data:`_EXTRA_COLORS`."""
    given = set(methods)
    known = [m for m in METHOD_COLORS if m in given]
    extra = iter(_EXTRA_COLORS * 4)
    return {**{m: METHOD_COLORS[m] for m in known}, **{m: next(extra) for m in sorted(given - set(known))}}


def _run_label(method: str, model: str, sigma: float) -> str:
    """'fars-closed sll+ce' or 'cohen cnn-noise0.25 σ=0.25'."""
    label = f"{method} {model}"
    if sigma is not None and not pd.isna(sigma):
        label += f" σ={float(sigma):g}"
    return label


def _style_axes(ax: plt.Axes) -> None:
    ax.grid(True, which="major", color="0.85", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _legend_ncol(labels: Sequence[str], width: float = FIG_WIDTH) -> int:
    """Columns for a legend below a ``width``-inch figure so that no entry is clipped."""
    if not labels:
        return 1
    longest = max(len(s) for s in labels)
    per_col = 0.055 * longest + 0.5  # inches: ~0.055 in/char at 7.5 pt + handle + padding
    return int(max(1, min(3, len(labels), math.floor((width - 0.2) / per_col))))


def _legend_rows(n_entries: int, ncol: int) -> int:
    return int(math.ceil(n_entries / max(ncol, 1)))


def _bottom_legend_height(n_entries: int, ncol: int, width: float = FIG_WIDTH) -> float:
    """Figure height (inches) of a one-axes plot ``width`` inches wide with a legend below."""
    return (2.8 if width >= 5 else 2.2) + 0.17 * _legend_rows(n_entries, ncol)


def _bottom_legend_figure(n_entries: int, ncol: int, width: float = FIG_WIDTH) -> tuple[plt.Figure, plt.Axes]:
    """A styled ``width``-inch figure with one axes and room for a legend of ``n_entries`` below."""
    fig = plt.figure(figsize=(width, _bottom_legend_height(n_entries, ncol, width)), layout="constrained")
    ax = fig.add_subplot()
    _style_axes(ax)
    return fig, ax


#: File suffixes a figure may be written with (:func:`save_figure`'s ``formats``).
FORMAT_SUFFIXES: tuple[str, ...] = ("png", "pdf", "svg")


def save_figure(fig: plt.Figure, out_path: str | Path, formats: Sequence[str] = ()) -> Path:
    """Save ``fig`` to ``out_path`` and, for each of ``formats`` (``'pdf'``, ``'svg'``, ``'png'``), to the
    sibling with that suffix (PDF/SVG are vector; PNG at :data:`DPI`); closes the figure, returns ``out_path``."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for path in dict.fromkeys([out_path, *(out_path.with_suffix("." + f.lstrip(".").lower()) for f in formats)]):
        fig.savefig(path, dpi=DPI, facecolor="white")
    plt.close(fig)
    return out_path


def sibling_paths(out_path: str | Path, formats: Sequence[str]) -> dict[str, Path]:
    """``{format: path}`` of the files :func:`save_figure` writes for ``out_path`` and ``formats``."""
    out_path = Path(out_path)
    paths = {out_path.suffix.lstrip(".").lower(): out_path}
    for f in formats:
        paths.setdefault(f.lstrip(".").lower(), out_path.with_suffix("." + f.lstrip(".").lower()))
    return paths


# ---------------------------------------------------------------------------
# Speed-up
# ---------------------------------------------------------------------------


def _speedup_height(n_bars: int, width: float = FIG_WIDTH) -> float:
    """Figure height (inches) of :func:`plot_speedup` for ``n_bars`` bars at ``width`` inches."""
    return (0.75 if width >= 5 else 0.85) + (0.2 if width >= 5 else 0.17) * max(n_bars, 2)


def speedup_caption(summary: pd.DataFrame, device: str | None = None, width: float = FIG_WIDTH) -> str:
    """The x-axis text of :func:`plot_speedup`: what the ratio is, n and the device, wrapped to ``width`` inches."""
    s = summary[summary["speedup_reference"].fillna("").astype(str) != ""]
    ns = sorted({int(v) for v in s["examples"]}) if len(s) else []
    n_text = (f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}-{ns[-1]}") + " images per run" if ns else ""
    text = ("speed-up over Cohen et al. (median s/img; whiskers: 95% bootstrap interval); "
            + ", ".join(p for p in (n_text, device or "") if p))
    return textwrap.fill(text.rstrip("; "), width=int(width * 14))


def plot_speedup(
    summary: pd.DataFrame,
    out_path: str | Path,
    device: str | None = None,
    width: float = FIG_WIDTH,
    formats: Sequence[str] = (),
) -> Path:
    """Horizontal bars of ``speedup_vs_cohen`` per run (log x) with their 95 % interval, n and ``device``.

    Each bar runs from 1x (the Cohen et al. reference of the run, ``speedup_reference``, marked by a
    vertical line) to the run's speed-up, with an error bar from ``speedup_low`` to ``speedup_high`` and
    its value (``'1.2e3x'``).  Runs without a reference (Cohen's own, or none on their backbone) are not
    drawn; with none left a figure says so.  The axis text gives the images per run and ``device``
    (:func:`speedup_caption`).  Bars are coloured by method as in every figure.  No title.
    ``formats`` adds sibling files (e.g. ``'pdf'``).  Returns ``out_path``.
    """
    vals = pd.to_numeric(summary["speedup_vs_cohen"], errors="coerce").astype(float)
    s = summary[np.isfinite(vals) & (vals > 0)].reset_index(drop=True)
    colors = method_colors(summary["method"]) if len(summary) else {}
    with plt.rc_context(paper_rc(width)):
        fig = plt.figure(figsize=(width, _speedup_height(len(s), width)), layout="constrained")
        ax = fig.add_subplot()
        _style_axes(ax)
        ax.grid(False, axis="y")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(fmt_log_tick))
        # centred on the figure (not the axes) so long run labels on the left cannot push it off the edge
        fig.supxlabel(speedup_caption(summary, device, width), fontsize=plt.rcParams["axes.labelsize"])
        if s.empty:
            _draw_no_reference(ax)
        else:
            _draw_speedup_bars(ax, s, colors)
        return save_figure(fig, out_path, formats)


def _draw_no_reference(ax: plt.Axes) -> None:
    """Placeholder axes of :func:`plot_speedup` when no run has a Cohen et al. reference."""
    ax.text(0.5, 0.5, "no run has a Cohen et al. reference on its backbone",
            ha="center", va="center", transform=ax.transAxes, color="0.3", zorder=5,
            bbox=dict(facecolor="white", edgecolor="none", pad=4))
    ax.set_yticks([])
    ax.set_xlim(0.1, 10)
    ax.axvline(1.0, color="0.2", linewidth=1.1)


def _draw_speedup_bars(ax: plt.Axes, s: pd.DataFrame, colors: dict[str, str]) -> None:
    """Bars from 1x to each run's speed-up (first run on top) with its interval, annotated with the value."""
    vals = s["speedup_vs_cohen"].to_numpy(float)
    lo = pd.to_numeric(s.get("speedup_low", pd.Series(np.nan, index=s.index)), errors="coerce").to_numpy(float)
    hi = pd.to_numeric(s.get("speedup_high", pd.Series(np.nan, index=s.index)), errors="coerce").to_numpy(float)
    y = np.arange(len(s))[::-1]  # first (sorted) run on top
    labels = [_run_label(m, mo, sg) for m, mo, sg in zip(s["method"], s["model"], s["sigma"], strict=True)]
    ax.barh(y, vals - 1.0, left=1.0, height=0.62, color=[colors[m] for m in s["method"]], edgecolor="none", zorder=3)
    has = np.isfinite(lo) & np.isfinite(hi)
    if has.any():
        ax.errorbar(vals[has], y[has], xerr=[vals[has] - lo[has], hi[has] - vals[has]], fmt="none", ecolor="0.15",
                    elinewidth=0.8, capsize=1.5, zorder=4, gid="interval")
    ends = np.where(has, np.maximum(hi, vals), vals)
    ax.set_xlim(min(0.7, vals.min() / 15.0), max(10.0, ends.max() * 3.0))
    for yi, v, e in zip(y, vals, ends, strict=True):
        ax.annotate(fmt_speedup_short(v), xy=(e if v >= 0.9 else v, yi), xytext=(3 if v >= 0.9 else -3, 0),
                    textcoords="offset points", ha="left" if v >= 0.9 else "right", va="center", zorder=4)
    ax.axvline(1.0, color="0.15", linewidth=0.8, zorder=4)
    ax.set_yticks(y, labels)
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(-0.7, len(s) - 0.3)


# ---------------------------------------------------------------------------
# Scaling
# ---------------------------------------------------------------------------


_FLAT_FLOOR = " (flat floor, n-independent)"  # legend suffix of n-independent series


def plot_scaling(
    scaling_df: pd.DataFrame,
    out_path: str | Path,
    title: str | None = None,
    formats: Sequence[str] = (),
    width: float = FIG_WIDTH,
    device: str | None = None,
) -> Path:
    """Seconds per image against the number of samples ``n`` (log-log), ``width`` inches wide; ``device`` (the
    machine that timed it) is named on the y axis; no title unless ``title`` is given.

    Parameters
    ----------
    scaling_df:
        Columns ``method, model, n, seconds`` and optionally ``seconds_p25,
        seconds_p75`` (drawn as a shaded band).  Rows whose ``n`` is missing
        or <= 0, and all rows of deterministic methods (``fars-closed``,
        ``lipschitz-margin``), are drawn as a horizontal dashed "flat floor"
        at their median seconds (their cost does not depend on ``n``).
    out_path:
        PNG path (``formats`` adds sibling files, e.g. ``'pdf'``).

    One line with markers per method (per ``method · model`` when a method
    appears with several models), coloured like the other figures.  Returns
    ``out_path``.
    """
    d = _scaling_frame(scaling_df)
    det = d["method"].isin(DETERMINISTIC_METHODS) | ~(d["n"] > 0)
    sampled, flat = d[~det], d[det]
    colors = method_colors(d["method"])
    multi_model = d.groupby("method")["model"].nunique().to_dict()
    has_band = {"seconds_p25", "seconds_p75"} <= set(d.columns)
    keys = list(d.groupby(["method", "model"]).groups)
    n_entries = len(keys)
    ncol = _legend_ncol([_scaling_label(m, mo, multi_model) + (_FLAT_FLOOR if m in set(flat["method"]) else "")
                         for m, mo in keys], width)

    with plt.rc_context(paper_rc(width)):
        fig, ax = _bottom_legend_figure(n_entries, ncol, width)
        ax.grid(True, which="minor", color="0.93", linewidth=0.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        if len(sampled):
            xlo, xhi = sampled["n"].min() / 1.5, sampled["n"].max() * 1.5
        else:
            xlo, xhi = 1.0, 1e5
        _draw_sampled_costs(ax, sampled, colors, multi_model, has_band)
        _draw_flat_floors(ax, flat, (xlo, xhi), colors, multi_model, has_band)
        ax.set_xlim(xlo, xhi)
        ax.set_xlabel("Monte Carlo samples per image n (log scale)")
        ax.set_ylabel("seconds per image (log scale)" + (f"\n{device}" if device else ""))
        if title:
            ax.set_title(title)
        if n_entries:
            fig.legend(loc="outside lower center", ncol=ncol, frameon=False, handlelength=2.4)
        return save_figure(fig, out_path, formats)



def _scaling_label(method: str, model: str, multi_model: dict[str, int]) -> str:
    """Legend label of a scaling series: the method, plus ``· model`` when the method has several models."""
    return f"{method} · {model}" if multi_model.get(method, 1) > 1 else method


def _draw_sampled_costs(
    ax: plt.Axes, sampled: pd.DataFrame, colors: dict[str, str], multi_model: dict[str, int], has_band: bool
) -> None:
    """One line with markers per sampled (method, model): median seconds per ``n``, p25-p75 band if given."""
    for i, ((method, model), g) in enumerate(sampled.groupby(["method", "model"], sort=True)):
        g = g.groupby("n", as_index=False).median(numeric_only=True).sort_values("n")
        c = colors[method]
        ax.plot(g["n"], g["seconds"], marker=_MARKERS[i % len(_MARKERS)], markersize=3.5,
                color=c, linewidth=1.2, label=_scaling_label(method, model, multi_model), zorder=3)
        if has_band and g[["seconds_p25", "seconds_p75"]].notna().all().all():
            ax.fill_between(g["n"], g["seconds_p25"], g["seconds_p75"], color=c, alpha=0.18,
                            linewidth=0, zorder=2)


def _draw_flat_floors(
    ax: plt.Axes,
    flat: pd.DataFrame,
    xspan: tuple[float, float],
    colors: dict[str, str],
    multi_model: dict[str, int],
    has_band: bool,
) -> None:
    """A dashed horizontal line over ``xspan`` at the median seconds of each n-independent (method, model)."""
    xlo, xhi = xspan
    for (method, model), g in flat.groupby(["method", "model"], sort=True):
        c = colors[method]
        y = float(np.nanmedian(g["seconds"]))
        ax.hlines(y, xlo, xhi, colors=[c], linestyles="--", linewidth=1.2,
                  label=_scaling_label(method, model, multi_model) + _FLAT_FLOOR, zorder=3)
        if has_band and g[["seconds_p25", "seconds_p75"]].notna().all().all():
            ax.fill_between([xlo, xhi], float(np.nanmedian(g["seconds_p25"])),
                            float(np.nanmedian(g["seconds_p75"])), color=c, alpha=0.12, linewidth=0, zorder=2)


def _scaling_frame(scaling_df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``scaling_df`` with numeric ``n, seconds[, seconds_p25, seconds_p75]`` columns.

    Raises ``ValueError`` naming the missing ones if ``method, model, n, seconds`` are not all there.
    """
    d = scaling_df.copy()
    for col in ("n", "seconds", "seconds_p25", "seconds_p75"):
        if col in d.columns:
            d[col] = pd.to_numeric(d[col], errors="coerce").astype(float)
    missing = [c for c in ("method", "model", "n", "seconds") if c not in d.columns]
    if missing:
        raise ValueError(f"scaling data: missing column(s) {missing}")
    return d
