"""Paper figures: certified accuracy as small multiples over sigma, and accuracy against time per image.

* :func:`certified_panels` / :func:`plot_certified_panels` -- one panel per noise level sigma (the
  deterministic runs, sigma NaN, drawn in every panel as references) plus one panel of the envelope
  (best curve over sigma of each method and model family, :func:`~bench.report.paper_metrics.envelope`);
  each panel marks the Monte Carlo cut-off ``sigma * Phi^-1(alpha^(1/n))`` with a dotted vertical
  line when ``n`` and ``alpha`` are given.  At most ``max_curves`` curves share a panel: when a sigma
  has more, the models are split over rows of panels (all runs of one model family stay together).
* :func:`plot_time_budget` -- certified accuracy at each reported radius against the median seconds
  per image (log x), one point per run.

The panel layout (:func:`certified_panels`) is computed apart from the drawing so tests can inspect
it; the numbers come from :mod:`bench.report.metrics` and :mod:`bench.report.paper_metrics`.
Figures are sized for a paper: :data:`~bench.report.plots.FIG_WIDTH` (7 in, two columns) by default,
``width=3.3`` for one column; fonts are 7-8.5 pt at that size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot import

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from .metrics import PAPER_RADII, RUN_KEYS, certified_accuracy, certified_accuracy_steps, run_groups, sort_runs  # noqa: E402
from .paper_metrics import envelope, envelope_model, mc_cutoff, time_budget  # noqa: E402
from .plots import _MARKERS, FIG_WIDTH, _method_colors, _shade, _style_axes, save_figure  # noqa: E402
from .results import as_results  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

#: Most curves drawn in one panel (more are split over rows of panels).
MAX_CURVES = 8

#: ``gid`` of the Monte Carlo cut-off lines (tests find them by it).
CUTOFF_GID = "mc-cutoff"

#: Line styles per model family; none is the plain dotted style of the cut-off or the ``--`` of attacks.
_FAMILY_LINESTYLES: list[Any] = [
    "-",
    (0, (6, 1.5)),
    (0, (6, 1.5, 1, 1.5)),
    (0, (2.5, 1.2)),
    (0, (6, 1.5, 1, 1.5, 1, 1.5)),
    (0, (1, 1, 3, 1)),
]

_PAPER_RC: dict[RcKeyType, Any] = {
    "font.size": 7.5,
    "axes.titlesize": 8,
    "axes.labelsize": 7.5,
    "legend.fontsize": 7,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "axes.titleweight": "normal",
    "lines.linewidth": 1.2,
    "pdf.fonttype": 42,  # TrueType in the PDF (editable text, accepted by paper submission systems)
}


@dataclass
class Curve:
    """One drawn curve: step points (``xs``, ``ys`` in [0, 1]) of a run or an envelope."""

    method: str
    model: str
    sigma: float
    xs: np.ndarray
    ys: np.ndarray
    kind: str = "run"  # 'run', 'reference' (deterministic, in every panel), 'envelope' or 'attack'


@dataclass
class Panel:
    """One axes of the small multiples: its title, curves and Monte Carlo cut-off radii."""

    title: str
    sigma: float  # NaN for the envelope / deterministic-only panel
    curves: list[Curve] = field(default_factory=list)
    cutoffs: list[float] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Layout (no drawing)
# ---------------------------------------------------------------------------


#: A curve's tail is cut where fewer than this fraction of its images remain certified (the axis ends there).
TAIL_FRACTION = 0.01


def _xmax(df: pd.DataFrame, cutoffs: Sequence[float]) -> float:
    """Right end of the radius axis: a bit past the largest cut-off and the radius where each run's curve falls
    to :data:`TAIL_FRACTION` (the (1 - TAIL_FRACTION) quantile of its finite ``radius * correct``); >= 0.05.

    A long tail of a few images (e.g. 1 % of a deterministic run certified at 3x the others' radii) would
    otherwise squeeze every other curve; ``certified_accuracy.csv`` keeps the full curves.
    """
    tops = [c for c in cutoffs if math.isfinite(c)]
    for _, g in run_groups(df):
        contrib = np.where(g["correct"].to_numpy() == 1, g["radius"].to_numpy(float), 0.0)
        contrib = contrib[np.isfinite(contrib)]
        if contrib.size:
            tops.append(float(np.quantile(contrib, 1.0 - TAIL_FRACTION)))
    top = max(tops) if tops else 0.0
    return max(top * 1.05, top + 0.01, 0.05)


def _sigma_key(sigma: float) -> str:
    """Hashable form of a sigma: ``'-'`` for NaN (a deterministic run), else ``format(sigma, 'g')``."""
    return "-" if pd.isna(sigma) else f"{float(sigma):g}"


def _run_curves(df: pd.DataFrame, xmax: float) -> dict[tuple[str, str, str], Curve]:
    """The exact step curve of every run, keyed by ``(method, model, sigma key)`` (:func:`_sigma_key`)."""
    out = {}
    for (method, model, sigma), g in run_groups(df):
        xs, ys = certified_accuracy_steps(g["radius"].to_numpy(float), g["correct"].to_numpy(), xmax)
        kind = "reference" if pd.isna(sigma) else "run"
        out[(method, model, _sigma_key(sigma))] = Curve(method, model, float(sigma), xs, ys, kind)
    return out


def _envelope_curves(df: pd.DataFrame, xmax: float, points: int = 600) -> list[Curve]:
    """Envelope over sigma of the sampled runs of each (method, model family) on a fine radius grid."""
    sampled = df[df["sigma"].notna()]
    if sampled.empty:
        return []
    grid = np.linspace(0.0, xmax, points)
    env = envelope(certified_accuracy(sampled, grid))
    return [Curve(str(m), str(mo), math.nan, g["radius"].to_numpy(float), g["certified_accuracy"].to_numpy(float),
                  "envelope") for (m, mo), g in env.groupby(["method", "model"], sort=False)]


def _attack_curves(empirical: pd.DataFrame) -> dict[str, Curve]:
    """Empirical (attack) accuracy per model (columns ``model, radius, accuracy``; percentages accepted)."""
    emp = empirical.copy()
    emp["radius"] = pd.to_numeric(emp["radius"], errors="coerce")
    emp["accuracy"] = pd.to_numeric(emp["accuracy"], errors="coerce")
    scale = 0.01 if emp["accuracy"].max() > 1.0 else 1.0
    out = {}
    for model, g in emp.groupby("model", sort=True):
        g = g.sort_values("radius", kind="mergesort")
        out[str(model)] = Curve("attack", str(model), math.nan, g["radius"].to_numpy(float),
                                g["accuracy"].to_numpy(float) * scale, "attack")
    return out


def _pack_models(columns: list[list[Curve]], max_curves: int) -> list[list[str]]:
    """Groups of model families (in order of appearance) whose curves fit ``max_curves`` in every column."""
    order: list[str] = []
    for col in columns:
        for c in col:
            if envelope_model(c.model) not in order:
                order.append(envelope_model(c.model))

    def count(keys: list[str]) -> int:
        return max(sum(envelope_model(c.model) in keys for c in col) for col in columns)

    groups: list[list[str]] = []
    for key in order:
        if groups and count([*groups[-1], key]) <= max_curves:
            groups[-1].append(key)
        else:
            groups.append([key])
    return groups


def certified_panels(
    df: pd.DataFrame,
    n: int | None = None,
    alpha: float | None = None,
    empirical: pd.DataFrame | None = None,
    max_curves: int = MAX_CURVES,
) -> tuple[list[Panel], float]:
    """The small-multiple panels of :func:`plot_certified_panels` and the radius-axis end ``xmax``.

    One column per sampled noise level sigma (sorted) with that sigma's runs plus every deterministic
    run (NaN sigma), then an "envelope" column (best over sigma per method and model family, plus the
    deterministic runs).  Only deterministic runs: one panel.  ``empirical`` (attack accuracy, columns
    ``model, radius, accuracy``) adds one attack curve per model to each sigma panel holding that model.
    When a column has more than ``max_curves`` curves the model families are packed into rows
    (:func:`_pack_models`), each row repeating the columns for its models.  ``n`` and ``alpha`` give each
    sigma panel its Monte Carlo cut-off (the envelope panel gets every sigma's).
    """
    df = as_results(df)
    sigmas = sorted({float(s) for s in df["sigma"].dropna()})
    cut = {s: mc_cutoff(s, n, alpha) for s in sigmas} if n and alpha else {}
    xmax = _xmax(df, list(cut.values()))
    runs = _run_curves(df, xmax)
    order = sort_runs(df[list(RUN_KEYS)].drop_duplicates())
    curves = [runs[(m, mo, _sigma_key(s))] for m, mo, s in order.itertuples(index=False)]
    refs = [c for c in curves if c.kind == "reference"]
    attacks = _attack_curves(empirical) if empirical is not None and len(empirical) else {}

    columns: list[tuple[str, float, list[Curve], list[float]]] = []
    for s in sigmas:
        here = [c for c in curves if c.kind == "run" and c.sigma == s]
        models = {c.model for c in here + refs}
        extra = [attacks[m] for m in sorted(models) if m in attacks]
        columns.append((f"σ = {s:g}", s, here + refs + extra, [cut[s]] if s in cut else []))
    if sigmas:
        columns.append(("envelope (best σ)", math.nan, _envelope_curves(df, xmax) + refs, list(cut.values())))
    else:
        columns.append(("deterministic", math.nan, refs, []))

    groups = _pack_models([c[2] for c in columns], max_curves)
    panels = []
    for keys in groups:
        for title, s, col, cutoffs in columns:
            chosen = [c for c in col if envelope_model(c.model) in keys]
            suffix = "" if len(groups) == 1 else "\n" + ", ".join(keys)
            panels.append(Panel(title + suffix, s, chosen, cutoffs))
    return panels, xmax


# ---------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------


def _model_styles(panels: Sequence[Panel]) -> dict[str, Any]:
    """A line style per model family (fixed over all panels)."""
    keys: list[str] = []
    for p in panels:
        for c in p.curves:
            if envelope_model(c.model) not in keys:
                keys.append(envelope_model(c.model))
    return {k: _FAMILY_LINESTYLES[i % len(_FAMILY_LINESTYLES)] for i, k in enumerate(keys)}


def _model_label(key: str, models: set[str]) -> str:
    """Legend name of a model family: ``cnn-noiseσ`` when it stands for one model per noise level."""
    members = {m for m in models if envelope_model(m) == key}
    return f"{key}-noiseσ" if len(members) > 1 or any(m != key for m in members) else key


def _draw_panel(ax: plt.Axes, panel: Panel, xmax: float, colors: dict[str, str], styles: dict[str, Any]) -> None:
    """The curves and cut-off lines of one panel."""
    _style_axes(ax)
    for c in panel.curves:
        if c.kind == "attack":
            ax.plot(c.xs, c.ys * 100, color="black", linestyle=styles.get(envelope_model(c.model), "--"),
                    linewidth=0.8, drawstyle="steps-post", zorder=4, gid="attack")
            continue
        ax.step(c.xs, c.ys * 100, where="post", color=colors[c.method], linestyle=styles[envelope_model(c.model)],
                linewidth=0.9 if c.kind == "reference" else 1.3, alpha=0.85 if c.kind == "reference" else 1.0,
                zorder=3, gid=c.kind)
    for x in panel.cutoffs:
        ax.axvline(x, color="0.3", linestyle=":", linewidth=1.0, zorder=2, gid=CUTOFF_GID)
    if len(panel.cutoffs) == 1:
        left = panel.cutoffs[0] < 0.5 * xmax
        ax.annotate("MC limit", xy=(panel.cutoffs[0], 99), xytext=(2 if left else -2, 0), textcoords="offset points",
                    ha="left" if left else "right", va="top", fontsize=6, color="0.3")
    ax.set_xlim(0, xmax)
    ax.set_ylim(0, 101)
    ax.set_title(panel.title)


def _legend_handles(panels: Sequence[Panel], colors: dict[str, str], styles: dict[str, Any]) -> list[Line2D]:
    """Methods (colour), model families (line style), and the cut-off / attack marks when drawn."""
    methods = list(dict.fromkeys(c.method for p in panels for c in p.curves if c.kind != "attack"))
    models = {c.model for p in panels for c in p.curves if c.kind != "attack"}
    handles = [Line2D([], [], color=colors[m], linewidth=2, label=m) for m in methods]
    handles += [Line2D([], [], color="0.25", linestyle=st, linewidth=1.3, label=_model_label(k, models))
                for k, st in styles.items()]
    if any(p.cutoffs for p in panels):
        handles.append(Line2D([], [], color="0.3", linestyle=":", label="Monte Carlo cut-off"))
    if any(c.kind == "attack" for p in panels for c in p.curves):
        handles.append(Line2D([], [], color="black", linewidth=0.8, label="l2-PGD (black, model's style)"))
    return handles


def certified_figure(
    df: pd.DataFrame,
    n: int | None = None,
    alpha: float | None = None,
    empirical: pd.DataFrame | None = None,
    max_curves: int = MAX_CURVES,
    width: float = FIG_WIDTH,
) -> plt.Figure:
    """The small-multiples figure of :func:`plot_certified_panels` (open; the caller saves or closes it).

    One axes per :class:`Panel` of :func:`certified_panels` (in order, row-major; extra grid slots are
    hidden).  Lines carry a ``gid``: ``'run'``, ``'reference'``, ``'envelope'``, ``'attack'`` or
    :data:`CUTOFF_GID`.
    """
    panels, xmax = certified_panels(df, n, alpha, empirical, max_curves)
    ncols = min(len(panels), 4 if width >= 6 else 2)
    n_cols_data = len({p.title.split("\n")[0] for p in panels})
    if n_cols_data <= ncols:
        ncols = n_cols_data  # one row per model group
    nrows = math.ceil(len(panels) / ncols)
    colors = _method_colors(c.method for p in panels for c in p.curves if c.kind != "attack")
    styles = _model_styles(panels)
    handles = _legend_handles(panels, colors, styles)
    legend_cols = 5 if width >= 6 else 2
    height = 1.75 * nrows + 0.45 + 0.16 * math.ceil(len(handles) / legend_cols)
    rc = {**_PAPER_RC, "axes.titlesize": 8 if width >= 6 else 6.5}
    with plt.rc_context(rc):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), sharex=True, sharey=True,
                                 layout="constrained", squeeze=False)
        for ax, panel in zip(axes.flat, panels, strict=False):
            _draw_panel(ax, panel, xmax, colors, styles)
        for i, ax in enumerate(axes.flat):
            if i >= len(panels):
                ax.set_visible(False)
            elif i + ncols >= len(panels):  # lowest panel of its column
                ax.set_xlabel(r"$\ell_2$ radius")
                ax.xaxis.set_tick_params(labelbottom=True)
        fig.supylabel("certified accuracy (%)", fontsize=rc["axes.labelsize"])
        fig.legend(handles=handles, loc="outside lower center", ncol=legend_cols, frameon=False, handlelength=2.6)
    return fig


def plot_certified_panels(
    df: pd.DataFrame,
    out_path: str | Path,
    n: int | None = None,
    alpha: float | None = None,
    empirical: pd.DataFrame | None = None,
    max_curves: int = MAX_CURVES,
    width: float = FIG_WIDTH,
    formats: Sequence[str] = (),
) -> Path:
    """Certified accuracy (%) vs l2 radius as small multiples (see :func:`certified_panels`).

    Colour = method (fixed per method across figures), line style = model family; deterministic
    references thinner; attack curves black in their model's line style.  The x axis is the l2 radius
    in pixel space (pixels in [0, 1]).  ``width`` in inches (7 for two columns, 3.3 for one: two panels
    per row); ``formats`` adds sibling files (``'pdf'``, ``'svg'``, ...) next to ``out_path``.
    Returns ``out_path``.
    """
    with plt.rc_context(_PAPER_RC):  # the PDF font type applies when saving
        return save_figure(certified_figure(df, n, alpha, empirical, max_curves, width), out_path, formats)


def plot_certified_accuracy(
    df: pd.DataFrame,
    out_path: str | Path,
    empirical: pd.DataFrame | None = None,
    attacks: bool = False,
    n: int | None = None,
    alpha: float | None = None,
    max_curves: int = MAX_CURVES,
    width: float = FIG_WIDTH,
    formats: Sequence[str] = (),
) -> Path:
    """``certified_accuracy.png``: :func:`plot_certified_panels`, with the attack curves only on request.

    ``empirical`` (attack accuracy, e.g. ``bench.attack``'s ``robustness.csv``) is drawn only with
    ``attacks=True`` (dashed, in the sigma panels of the attacked models); ``n`` and ``alpha`` (the
    run's CERTIFY settings, from its manifest) mark the Monte Carlo cut-off.  Returns ``out_path``.
    """
    return plot_certified_panels(df, out_path, n=n, alpha=alpha, empirical=empirical if attacks else None,
                                 max_curves=max_curves, width=width, formats=formats)


# ---------------------------------------------------------------------------
# Time budget
# ---------------------------------------------------------------------------


def plot_time_budget(
    df: pd.DataFrame,
    out_path: str | Path,
    radii: Sequence[float] = PAPER_RADII,
    width: float = FIG_WIDTH,
    formats: Sequence[str] = (),
) -> Path:
    """Certified accuracy at each radius (one panel per radius) vs median seconds per image (log x).

    One point per certification run (:func:`~bench.report.paper_metrics.time_budget`): colour = method,
    marker = model family, shade = sigma (darker = smaller), hollow = deterministic (no sigma).  The
    scaling sweep is not drawn: it times several ``n`` but measures no accuracy, so only points where
    both accuracy and time are measured appear (a run's median handles per-row varying ``samples``).
    """
    tb = time_budget(df, radii)
    n_panels = len(radii) + 1  # the last slot holds the legend
    ncols = 3 if width >= 6 else 2
    nrows = math.ceil(n_panels / ncols)
    colors = _method_colors(tb["method"]) if len(tb) else {}
    fams = list(dict.fromkeys(tb["model"].map(envelope_model))) if len(tb) else []
    marker = {k: _MARKERS[i % len(_MARKERS)] for i, k in enumerate(fams)}
    with plt.rc_context(_PAPER_RC):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, 1.9 * nrows + 0.3), sharex=True, sharey=True,
                                 layout="constrained", squeeze=False)
        flat = list(axes.flat)
        for ax, r in zip(flat, radii, strict=False):
            _draw_budget_panel(ax, tb, r, colors, marker)
        for ax in flat[len(radii):]:
            ax.set_axis_off()
        handles = [Line2D([], [], color=colors[m], marker="o", linestyle="", label=m) for m in colors]
        handles += [Line2D([], [], color="0.3", marker=marker[k], linestyle="", label=k) for k in fams]
        handles.append(Line2D([], [], color="0.3", marker="o", markerfacecolor="white", linestyle="",
                              label="deterministic (no σ)"))
        flat[-1].legend(handles=handles, loc="center", frameon=False, title="darker = smaller σ", ncol=1)
        fig.supxlabel("median seconds per image (log scale)", fontsize=_PAPER_RC["axes.labelsize"])
        fig.supylabel("certified accuracy (%)", fontsize=_PAPER_RC["axes.labelsize"])
        return save_figure(fig, out_path, formats)


def _draw_budget_panel(ax: plt.Axes, tb: pd.DataFrame, r: float, colors: dict[str, str],
                       marker: dict[str, str]) -> None:
    """One radius: a point per run at (median seconds, certified accuracy %)."""
    _style_axes(ax)
    ax.set_xscale("log")
    ax.set_ylim(-4, 104)  # room for markers at 0 % and 100 %
    ax.set_title(f"ε = {r:g}" + (" (clean)" if r == 0 else ""))
    if tb.empty:
        return
    sig_rank = {(m, k): sorted(g["sigma"].dropna().unique()) for (m, k), g in
                tb.assign(k=tb["model"].map(envelope_model)).groupby(["method", "k"])}
    for rec in tb.to_dict("records"):
        key = envelope_model(rec["model"])
        sig = sig_rank.get((rec["method"], key), [])
        det = pd.isna(rec["sigma"])
        color = colors[rec["method"]] if det else _shade(colors[rec["method"]], sig.index(rec["sigma"]), len(sig))
        ax.plot(rec["seconds"], rec[f"acc@{r:g}"] * 100, marker=marker[key], markersize=4.5, linestyle="",
                color=color, markerfacecolor="white" if det else color, markeredgewidth=0.9, zorder=3)
