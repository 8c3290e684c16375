"""Figures of a certification run (matplotlib, headless ``Agg`` backend): speed-up and scaling.

(The certified-accuracy and time-budget figures are in :mod:`bench.report.figures`.)

* :func:`plot_speedup` -- speed-up of every run relative to Cohen et al.;
* :func:`plot_scaling` -- seconds per image against the number of samples.

The figures draw numbers computed in :mod:`bench.report.metrics` (and
formatted with :mod:`bench.report.tables`); they compute no metric themselves.
Widths are fixed (:data:`FIG_WIDTH` inches at :data:`DPI`) so figures line up
in a paper; heights grow with the number of legend rows / bars.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot import

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .metrics import DETERMINISTIC_METHODS, REFERENCE_METHOD  # noqa: E402
from .tables import fmt_log_tick, fmt_speedup_short  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

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
    "fars-crown": "#E69F00",  # orange
}
_EXTRA_COLORS = ["#56B4E9", "#8C564B", "#7F7F7F", "#BCBD22", "#17BECF"]

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

_RC: dict[RcKeyType, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10.5,
    "legend.fontsize": 8.5,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.titleweight": "bold",
}


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


def _bottom_legend_figure(n_entries: int, ncol: int) -> tuple[plt.Figure, plt.Axes]:
    """A styled :data:`FIG_WIDTH`-wide figure with one axes and room for a legend of ``n_entries`` below."""
    fig = plt.figure(figsize=(FIG_WIDTH, _bottom_legend_height(n_entries, ncol)), layout="constrained")
    ax = fig.add_subplot()
    _style_axes(ax)
    return fig, ax


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


def _speedup_height(n_bars: int) -> float:
    """Figure height (inches) of :func:`plot_speedup` for ``n_bars`` bars."""
    return 1.3 + 0.42 * max(n_bars, 2)


def plot_speedup(
    summary: pd.DataFrame,
    out_path: str | Path,
    title: str = "Speed-up over Cohen et al. (same backbone family)",
    formats: Sequence[str] = (),
) -> Path:
    """Horizontal bar chart of ``speedup_vs_cohen`` per run (log-scale x axis).

    Each bar runs from 1x (the Cohen et al. reference, marked by a vertical
    line) to the run's speed-up and is annotated with its value (``'1.2e3x'``).
    The reference method's own runs (:data:`~bench.report.metrics.REFERENCE_METHOD`,
    about 1x by construction) and runs whose family has no Cohen run (NaN
    speed-up) are omitted.  Bars are coloured by method with the same colours
    as the certified-accuracy figure.  If no run has a reference, a figure
    saying so is written.  ``formats`` adds sibling files (e.g. ``'pdf'``).
    Returns ``out_path``.
    """
    s = summary[np.isfinite(pd.to_numeric(summary["speedup_vs_cohen"], errors="coerce").astype(float))]
    s = s[(s["speedup_vs_cohen"] > 0) & (s["method"] != REFERENCE_METHOD)].reset_index(drop=True)
    colors = _method_colors(summary["method"]) if len(summary) else {}
    with plt.rc_context(_RC):
        fig = plt.figure(figsize=(FIG_WIDTH, _speedup_height(len(s))), layout="constrained")
        ax = fig.add_subplot()
        _style_axes(ax)
        ax.grid(False, axis="y")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(fmt_log_tick))
        # centred on the figure (not the axes) so long run labels on the left cannot clip them
        fig.suptitle(title, fontweight="bold", fontsize=_RC["axes.titlesize"])
        fig.supxlabel("speed-up = median s/img of Cohen ÷ median s/img of run (log scale)",
                      fontsize=_RC["axes.labelsize"])
        if s.empty:
            _draw_no_reference(ax)
        else:
            _draw_speedup_bars(ax, s, colors)
        return save_figure(fig, out_path, formats)


def _draw_no_reference(ax: plt.Axes) -> None:
    """Placeholder axes of :func:`plot_speedup` when no run has a Cohen et al. reference."""
    ax.text(0.5, 0.5, "no run has a Cohen et al. reference on its backbone family",
            ha="center", va="center", transform=ax.transAxes, color="0.3", zorder=5,
            bbox=dict(facecolor="white", edgecolor="none", pad=4))
    ax.set_yticks([])
    ax.set_xlim(0.1, 10)
    ax.axvline(1.0, color="0.2", linewidth=1.1)


def _draw_speedup_bars(ax: plt.Axes, s: pd.DataFrame, colors: dict[str, str]) -> None:
    """Bars from 1x to each run's finite, positive speed-up (first run on top), annotated with the value."""
    vals = s["speedup_vs_cohen"].to_numpy(float)
    y = np.arange(len(s))[::-1]  # first (sorted) run on top
    labels = [_run_label(m, mo, sg) for m, mo, sg in zip(s["method"], s["model"], s["sigma"], strict=True)]
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
    for yi, v in zip(y, vals, strict=True):
        ax.annotate(
            fmt_speedup_short(v),
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


# ---------------------------------------------------------------------------
# Scaling
# ---------------------------------------------------------------------------


_FLAT_FLOOR = " (flat floor, n-independent)"  # legend suffix of n-independent series


def plot_scaling(
    scaling_df: pd.DataFrame,
    out_path: str | Path,
    title: str = "Certification cost vs. number of samples",
    formats: Sequence[str] = (),
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
        PNG path (``formats`` adds sibling files, e.g. ``'pdf'``).

    One line with markers per method (per ``method · model`` when a method
    appears with several models), coloured like the other figures.  Returns
    ``out_path``.
    """
    d = _scaling_frame(scaling_df)
    det = d["method"].isin(DETERMINISTIC_METHODS) | ~(d["n"] > 0)
    sampled, flat = d[~det], d[det]
    colors = _method_colors(d["method"])
    multi_model = d.groupby("method")["model"].nunique().to_dict()
    has_band = {"seconds_p25", "seconds_p75"} <= set(d.columns)
    keys = list(d.groupby(["method", "model"]).groups)
    n_entries = len(keys)
    ncol = _legend_ncol([_scaling_label(m, mo, multi_model) + (_FLAT_FLOOR if m in set(flat["method"]) else "")
                         for m, mo in keys])

    with plt.rc_context(_RC):
        fig, ax = _bottom_legend_figure(n_entries, ncol)
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
        ax.set_xlabel("Monte-Carlo samples per input n (log scale)")
        ax.set_ylabel("wall-clock seconds per image (s, log scale)")
        ax.set_title(title)
        if n_entries:
            fig.legend(loc="outside lower center", ncol=ncol, frameon=False, handlelength=3.0)
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
        ax.plot(g["n"], g["seconds"], marker=_MARKERS[i % len(_MARKERS)], markersize=5,
                color=c, linewidth=1.8, label=_scaling_label(method, model, multi_model), zorder=3)
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
        ax.hlines(y, xlo, xhi, colors=[c], linestyles="--", linewidth=1.8,
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
