"""Figures of a certification run (matplotlib, headless ``Agg`` backend).

* :func:`plot_certified_accuracy` -- certified accuracy (%) versus l2 radius;
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

from .metrics import (  # noqa: E402
    DETERMINISTIC_METHODS,
    PAPER_RADII,
    RUN_KEYS,
    certified_accuracy_steps,
    run_groups,
    same_sigma,
    sort_runs,
)
from .results import as_results  # noqa: E402
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


def _save(fig: plt.Figure, out_path: str | Path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=DPI, facecolor="white")
    plt.close(fig)
    return out_path


# ---------------------------------------------------------------------------
# Certified accuracy
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
        Per-example results (see :func:`~bench.report.results.read_results`).
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
    df = as_results(df)
    if empirical is not None and not len(empirical):
        empirical = None
    xmax = _radius_axis_end(df, empirical)
    runs = sort_runs(df[list(RUN_KEYS)].drop_duplicates())
    labels = _certified_legend_labels(runs, empirical)
    ncol = _legend_ncol(labels)

    with plt.rc_context(_RC):
        fig, ax = _bottom_legend_figure(len(labels), ncol)
        _draw_paper_radii(ax, paper_radii, xmax)
        _draw_certified_curves(ax, df, runs, xmax)
        if empirical is not None:
            _draw_empirical(ax, empirical)
        _label_certified_axes(ax, xmax, title)
        if labels:
            fig.legend(loc="outside lower center", ncol=ncol, frameon=False, handlelength=3.2)
        return _save(fig, out_path)


def _radius_axis_end(df: pd.DataFrame, empirical: pd.DataFrame | None) -> float:
    """Right end of the radius axis: a bit past the largest finite certified or attacked radius, at least 0.05."""
    finite = df["radius"].to_numpy(float)
    finite = finite[np.isfinite(finite)]
    rmax = float(finite.max()) if finite.size else 0.0
    if empirical is not None:
        er = pd.to_numeric(empirical["radius"], errors="coerce").to_numpy(float)
        er = er[np.isfinite(er)]
        if er.size:
            rmax = max(rmax, float(er.max()))
    return max(rmax * 1.06, rmax + 0.01, 0.05)


def _certified_legend_labels(runs: pd.DataFrame, empirical: pd.DataFrame | None) -> list[str]:
    """Legend entries of :func:`plot_certified_accuracy`: one per run (sorted), then one per attacked model."""
    labels = [_run_label(m, mo, sg) for m, mo, sg in zip(runs["method"], runs["model"], runs["sigma"], strict=True)]
    if empirical is not None:
        labels += [f"empirical (attack) · {m}" for m in sorted(empirical["model"].astype(str).unique())]
    return labels


def _draw_paper_radii(ax: plt.Axes, paper_radii: Sequence[float], xmax: float) -> None:
    """Light dotted vertical lines at the paper radii inside ``(0, xmax]``."""
    for r in paper_radii:
        if 0 < r <= xmax:
            ax.axvline(r, color="0.6", linestyle=":", linewidth=0.9, zorder=1)


def _label_certified_axes(ax: plt.Axes, xmax: float, title: str) -> None:
    """Limits (radius 0..``xmax``, 0..101 %), axis labels and title of the certified-accuracy figure."""
    ax.set_xlim(0, xmax)
    ax.set_ylim(0, 101)
    ax.set_xlabel(r"$\ell_2$ radius $\varepsilon$ (pixel space, pixels in [0, 1])")
    ax.set_ylabel("certified accuracy (%)")
    ax.set_title(title)


def _draw_certified_curves(ax: plt.Axes, df: pd.DataFrame, runs: pd.DataFrame, xmax: float) -> None:
    """One step curve per run of ``runs`` (in order): colour by method, line style by model, shade by σ."""
    colors = _method_colors(runs["method"])
    models = list(dict.fromkeys(runs["model"]))
    lstyle = {m: _MODEL_LINESTYLES[i % len(_MODEL_LINESTYLES)] for i, m in enumerate(models)}
    groups = {key: g for key, g in run_groups(df)}
    sigmas_of: dict[tuple[str, str], list] = {}
    for row in runs.itertuples(index=False):
        sigmas_of.setdefault((row.method, row.model), []).append(row.sigma)
    for row in runs.itertuples(index=False):
        key = next(k for k in groups if k[0] == row.method and k[1] == row.model and same_sigma(k[2], row.sigma))
        g = groups[key]
        xs, ys = certified_accuracy_steps(g["radius"].to_numpy(float), g["correct"].to_numpy(), xmax)
        sigmas = sigmas_of[(row.method, row.model)]
        k = [i for i, s in enumerate(sigmas) if same_sigma(s, row.sigma)][0]
        ax.step(
            xs,
            ys * 100.0,
            where="post",
            color=_shade(colors[row.method], k, len(sigmas)),
            linestyle=lstyle[row.model],
            linewidth=1.9,
            label=_run_label(row.method, row.model, row.sigma),
            zorder=3,
        )


def _draw_empirical(ax: plt.Axes, empirical: pd.DataFrame) -> None:
    """Empirical (attack) accuracy: one dark dashed line with markers per model."""
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
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(fmt_log_tick))
        # centred on the figure (not the axes) so long run labels on the left cannot clip them
        fig.suptitle(title, fontweight="bold", fontsize=_RC["axes.titlesize"])
        fig.supxlabel("speed-up = median s/img of Cohen ÷ median s/img of run (log scale)",
                      fontsize=_RC["axes.labelsize"])
        if s.empty:
            _draw_no_reference(ax)
        else:
            _draw_speedup_bars(ax, s, colors)
        return _save(fig, out_path)


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
        return _save(fig, out_path)



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
