"""Paper figures: certified accuracy against the l2 radius, and accuracy against time per image.

* :func:`certified_panels` / :func:`plot_certified_panels` -- by default one panel per model family: the
  envelope (best curve over sigma, :func:`~bench.report.paper_metrics.envelope`) of each sampled method
  and the curve of each deterministic method on that model.  With ``per_sigma=True`` one row of panels per
  model family and one column per noise level sigma (the family's deterministic runs in each).  A sampled
  curve ends at its Monte Carlo cut-off ``sigma * Phi^-1(alpha^(1/n))`` with a marker (no certificate
  lies beyond it) when ``n`` and ``alpha`` are given.
* :func:`plot_time_budget` -- certified accuracy at each reported radius against the median seconds
  per image (log x): per radius, each method and model family at its best sigma there.

Encodings, the same in every figure: colour = method (:func:`~bench.report.plots.method_colors`), one
legend; models are told apart by panel (certified accuracy) or by a marker named in the legend (time
budget).  No figure has a title: captions belong to the text that shows it (``summary.md``, README).
Widths: :data:`~bench.common.units.WIDTHS` (3.3 in for one column, 7 in for the full text width);
fonts are sized for the printed figure at that width (:func:`~bench.report.plots.paper_rc`).

The panel layout (:func:`certified_panels`) is computed apart from the drawing so tests can inspect
it; the numbers come from :mod:`bench.report.metrics` and :mod:`bench.report.paper_metrics`.
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
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..common.units import fmt_radius, fmt_seconds  # noqa: E402
from .metrics import (  # noqa: E402
    PAPER_RADII,
    RUN_KEYS,
    backbone_family,
    certified_accuracy,
    certified_accuracy_steps,
    run_groups,
    sort_runs,
)
from .paper_metrics import envelope, envelope_model, mc_cutoff, time_budget  # noqa: E402
from .plots import _MARKERS, FIG_WIDTH, _style_axes, method_colors, paper_rc, save_figure  # noqa: E402
from .read import as_results  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

#: ``gid`` of the end-of-curve markers at the Monte Carlo cut-off (tests find them by it).
CUTOFF_GID = "mc-cutoff"

#: Relative distance below a cut-off within which a radius is taken to be at the cut-off.
CUTOFF_RTOL = 1e-4

#: ``gid`` of the text naming a panel's model (and sigma) inside the axes.
LABEL_GID = "panel-label"

#: rcParams of the paper figures at the full width (kept for figures drawn elsewhere in this style).
_PAPER_RC: dict[RcKeyType, Any] = paper_rc(FIG_WIDTH)


@dataclass
class Curve:
    """One drawn curve: step points (``xs``, ``ys`` in [0, 1]) of a run or an envelope.

    ``cutoff`` is the radius where a sampled curve ends (its Monte Carlo cut-off; NaN: no cut-off).
    """

    method: str
    model: str
    sigma: float
    xs: np.ndarray
    ys: np.ndarray
    kind: str = "run"  # 'run', 'reference' (deterministic), 'envelope' or 'attack'
    cutoff: float = math.nan


@dataclass
class Panel:
    """One axes: the label naming its model family (and sigma), its curves and its radius-axis end."""

    label: str
    family: str
    sigma: float  # NaN for an envelope panel
    curves: list[Curve] = field(default_factory=list)
    xmax: float = 0.05

    @property
    def cutoffs(self) -> list[float]:
        """The Monte Carlo cut-offs where this panel's curves end (finite ones, in curve order)."""
        return [c.cutoff for c in self.curves if math.isfinite(c.cutoff)]


# ---------------------------------------------------------------------------
# Layout (no drawing)
# ---------------------------------------------------------------------------


#: A curve's tail is cut where fewer than this fraction of its images remain certified (the axis ends there).
TAIL_FRACTION = 0.01


def _xmax(df: pd.DataFrame, cutoffs: Sequence[float]) -> float:
    """Right end of a radius axis: a bit past the largest cut-off and the radius where each run's curve falls
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


def _end_at(curve: Curve, cutoff: float) -> Curve:
    """``curve`` ending at radius ``cutoff``: its steps before it, then its last value held up to it.

    Nothing is certified beyond a run's cut-off, so the curve stops there instead of falling to 0
    (a vertical wall that would look like a measured drop).  Radii within :data:`CUTOFF_RTOL` of the
    cut-off count as at it (the results file keeps 6 significant digits).
    """
    if not math.isfinite(cutoff):
        return curve
    keep = curve.xs < cutoff * (1 - CUTOFF_RTOL)
    xs, ys = curve.xs[keep], curve.ys[keep]
    xs, ys = np.append(xs, cutoff), np.append(ys, ys[-1] if len(ys) else 0.0)
    return Curve(curve.method, curve.model, curve.sigma, xs, ys, curve.kind, cutoff)


def _no_end_at_zero(curve: Curve) -> Curve:
    """``curve`` without its cut-off marker when it has fallen to 0 before its cut-off (the marker would say
    nothing, and the radius axis need not reach it)."""
    if math.isfinite(curve.cutoff) and curve.ys[-1] == 0:
        return Curve(curve.method, curve.model, curve.sigma, curve.xs, curve.ys, curve.kind)
    return curve


def _run_curve(method: str, model: str, sigma: float, g: pd.DataFrame, xmax: float, cut: dict[float, float]) -> Curve:
    """The exact step curve of one run, ending at its sigma's cut-off when one is known."""
    xs, ys = certified_accuracy_steps(g["radius"].to_numpy(float), g["correct"].to_numpy(), xmax)
    if pd.isna(sigma):
        return Curve(method, model, math.nan, xs, ys, "reference")
    return _end_at(Curve(method, model, float(sigma), xs, ys, "run"), cut.get(float(sigma), math.nan))


def _envelope_curves(sampled: pd.DataFrame, xmax: float, cut: dict[float, float], points: int = 600) -> list[Curve]:
    """Envelope over sigma of the sampled runs of each method on ``sampled`` (one model family), on a fine
    radius grid, each ending at the largest cut-off of the sigmas it runs over."""
    if sampled.empty:
        return []
    grid = np.linspace(0.0, xmax, points)
    env = envelope(certified_accuracy(sampled, grid))
    out = []
    for (m, mo), g in env.groupby(["method", "model"], sort=False):
        sigmas = sampled.loc[sampled["method"] == m, "sigma"].astype(float).unique()
        ends = [cut[s] for s in sigmas if s in cut]
        curve = Curve(str(m), str(mo), math.nan, g["radius"].to_numpy(float), g["certified_accuracy"].to_numpy(float),
                      "envelope")
        out.append(_end_at(curve, max(ends)) if ends else curve)
    return out


def _attack_curve(empirical: pd.DataFrame, models: Sequence[str], family: str) -> Curve | None:
    """Empirical (attack) accuracy of ``models`` (columns ``model, radius, accuracy``; percentages accepted):
    the pointwise maximum over them (an upper bound on each one's robust accuracy), None when none was attacked."""
    emp = empirical.copy()
    emp["radius"] = pd.to_numeric(emp["radius"], errors="coerce")
    emp["accuracy"] = pd.to_numeric(emp["accuracy"], errors="coerce")
    emp = emp[emp["model"].astype(str).isin(list(models))].dropna(subset=["radius", "accuracy"])
    if emp.empty:
        return None
    scale = 0.01 if emp["accuracy"].max() > 1.0 else 1.0
    xs = np.unique(emp["radius"].to_numpy(float))
    ys = np.zeros(len(xs))
    for _, g in emp.groupby("model"):
        g = g.sort_values("radius", kind="mergesort")
        at = np.searchsorted(g["radius"].to_numpy(float), xs, side="right") - 1   # step value at each x
        vals = np.where(at >= 0, g["accuracy"].to_numpy(float)[np.clip(at, 0, None)], 0.0)
        ys = np.maximum(ys, vals * scale)
    return Curve("attack", family, math.nan, xs, ys, "attack")


def model_families(df: pd.DataFrame) -> list[str]:
    """The model families (:func:`~bench.report.paper_metrics.envelope_model`) of ``df``'s runs, sorted by
    backbone family, then name."""
    return sorted(set(df["model"].astype(str).map(envelope_model)), key=lambda k: (backbone_family(k), k))


def _cell_model(fdf: pd.DataFrame, sigma: float, label: str) -> str:
    """The model named in a per-sigma panel: the one sampled model of the family at ``sigma``, else ``label``."""
    models = fdf.loc[np.isclose(fdf["sigma"].astype(float), sigma), "model"].unique()
    return str(models[0]) if len(models) == 1 else label


def model_label(family: str, models: Sequence[str]) -> str:
    """Name of a model family in a figure: ``cnn-noiseσ`` when it stands for one model per noise level."""
    members = set(models)
    return f"{family}-noiseσ" if len(members) > 1 or any(m != family for m in members) else family


def certified_panels(
    df: pd.DataFrame,
    n: int | None = None,
    alpha: float | None = None,
    empirical: pd.DataFrame | None = None,
    per_sigma: bool = False,
) -> list[Panel]:
    """The panels of :func:`certified_figure`, in drawing order (row-major).

    Model families are :func:`~bench.report.paper_metrics.envelope_model` (``cnn-noise0.25 -> cnn``), in
    :func:`model_families` order.  Default: one panel per family with the envelope over sigma of each
    sampled method and every deterministic run.  ``per_sigma``: for each family one panel per sigma of the
    experiment (sorted) with that sigma's runs and the family's deterministic runs; a family without a run
    at some sigma leaves that panel empty (no curve); a family with deterministic runs only gets one panel
    and empty ones for the rest of its row.  ``n`` and ``alpha`` end each sampled curve at its Monte Carlo cut-off.
    ``empirical`` (attack accuracy, columns ``model, radius, accuracy``) adds one attack curve per panel:
    the maximum over the family's attacked models.  Each panel's ``xmax`` fits its own curves (:func:`_xmax`).
    """
    df = as_results(df)
    sigmas = sorted({float(s) for s in df["sigma"].dropna()})
    cut = {s: mc_cutoff(s, n, alpha) for s in sigmas} if n and alpha else {}
    families = model_families(df)
    fam_of = df["model"].map(envelope_model)
    panels = []
    for fam in families:
        fdf = df[fam_of == fam]
        models = list(dict.fromkeys(fdf["model"]))
        label = model_label(fam, models)
        attack = _attack_curve(empirical, models, fam) if empirical is not None and len(empirical) else None
        has_sampled = fdf["sigma"].notna().any()
        if per_sigma and has_sampled:
            cells = [(f"{_cell_model(fdf, s, label)}\nσ = {s:g}", s,
                      fdf[fdf["sigma"].isna() | np.isclose(fdf["sigma"], s)]) for s in sigmas]
        else:
            cells = [(label, math.nan, fdf)]
        if per_sigma and not has_sampled and len(sigmas) > 1:   # keep one row per family
            cells += [(label, s, fdf.iloc[:0]) for s in sigmas[1:]]
        for text, s, cdf in cells:
            if per_sigma and not math.isnan(s) and (cdf.empty or not np.isclose(cdf["sigma"].dropna(), s).any()):
                panels.append(Panel(text, fam, s))   # no run of this family at this sigma
                continue
            ends = [cut[s]] if s in cut else [cut[x] for x in cdf["sigma"].dropna().unique() if x in cut]
            xmax = _xmax(cdf, ends)
            keys = sort_runs(cdf[list(RUN_KEYS)].drop_duplicates())
            groups = {(m, mo, "-" if pd.isna(sg) else f"{sg:g}"): g for (m, mo, sg), g in run_groups(cdf)}
            curves = []
            if per_sigma or not has_sampled:
                curves = [_run_curve(m, mo, sg, groups[(m, mo, "-" if pd.isna(sg) else f"{sg:g}")], xmax, cut)
                          for m, mo, sg in keys.itertuples(index=False)]
            else:
                curves = _envelope_curves(cdf[cdf["sigma"].notna()], xmax, cut)
                curves += [_run_curve(m, mo, sg, groups[(m, mo, "-")], xmax, cut)
                           for m, mo, sg in keys.itertuples(index=False) if pd.isna(sg)]
            curves = [_no_end_at_zero(c) for c in curves]
            if attack is not None:
                curves.append(attack)
            # the radius axis ends past the data and the cut-offs where a curve ends above 0
            panels.append(Panel(text, fam, s, curves, _xmax(cdf, [c.cutoff for c in curves])))
    return panels


# ---------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------


def _draw_panel(ax: plt.Axes, panel: Panel, colors: dict[str, str], nbins: int = 4) -> None:
    """The curves, their end markers and the label of one panel (about ``nbins`` radius ticks)."""
    _style_axes(ax)
    for c in panel.curves:
        if c.kind == "attack":
            ax.plot(c.xs, c.ys * 100, color="black", linestyle="--", linewidth=0.8, drawstyle="steps-post",
                    zorder=4, gid="attack")
            continue
        ax.step(c.xs, c.ys * 100, where="post", color=colors[c.method], zorder=3, gid=c.kind)
        if math.isfinite(c.cutoff):
            ax.plot([c.xs[-1]], [c.ys[-1] * 100], linestyle="", marker="o", markersize=3.2, color=colors[c.method],
                    markerfacecolor="white", markeredgewidth=0.9, zorder=5, clip_on=False, gid=CUTOFF_GID)
    ax.set_xlim(0, panel.xmax)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10]))
    ax.set_ylim(0, 100)
    ax.margins(x=0)
    _label(ax, panel.label)


def _label(ax: plt.Axes, text: str) -> None:
    """Name a panel inside its axes where it hides the least data (a legend of no entries titled ``text``,
    placed by matplotlib's ``loc='best'``; gid :data:`LABEL_GID`); kept out of the layout."""
    leg = ax.legend(handles=[], title=text, loc="best", frameon=False, borderaxespad=0.2, borderpad=0.1,
                    title_fontsize=plt.rcParams["axes.labelsize"])
    leg.set_gid(LABEL_GID)
    leg.set_in_layout(False)


def _legend_handles(panels: Sequence[Panel], colors: dict[str, str]) -> list[Line2D]:
    """One legend: the methods (colour), then the cut-off marker and the attack curve when drawn."""
    handles = [Line2D([], [], color=color, linewidth=1.6, label=m) for m, color in colors.items()]
    if any(p.cutoffs for p in panels):
        handles.append(Line2D([], [], color="0.3", linestyle="", marker="o", markersize=3.2, markerfacecolor="white",
                              label="Monte Carlo cut-off"))
    if any(c.kind == "attack" for p in panels for c in p.curves):
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=0.8, label="l2-PGD (empirical)"))
    return handles


def _grid(n_panels: int, width: float, ncols: int | None = None) -> tuple[int, int]:
    """Rows and columns of a grid of ``n_panels`` at ``width`` inches (3 columns at full width, 2 at one column)."""
    if ncols is None:
        ncols = max(1, min(n_panels, 3 if width >= 5 else 2))
    return math.ceil(n_panels / ncols), ncols


def _add_legend(fig: plt.Figure, axes: Sequence[plt.Axes], n_used: int, handles: list[Line2D], width: float) -> None:
    """The figure's one legend: in the first empty grid slot when there is one, else below the panels."""
    if n_used < len(axes):
        slot = axes[n_used]
        slot.legend(handles=handles, loc="center", frameon=False, borderaxespad=0, handlelength=1.8)
    else:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5 if width >= 5 else 2),
                   frameon=False, handlelength=1.8)


def certified_figure(
    df: pd.DataFrame,
    n: int | None = None,
    alpha: float | None = None,
    empirical: pd.DataFrame | None = None,
    per_sigma: bool = False,
    width: float = FIG_WIDTH,
) -> plt.Figure:
    """The figure of :func:`plot_certified_panels` (open; the caller saves or closes it).

    One axes per :class:`Panel` of :func:`certified_panels`, row-major (``per_sigma``: one row per model
    family, one column per sigma); the y axis (certified accuracy, %) is shared, each panel's radius axis
    fits its curves.  Lines carry a ``gid``: ``'run'``, ``'reference'``, ``'envelope'``, ``'attack'`` or
    :data:`CUTOFF_GID` (the end markers); the panel's label is a text with gid :data:`LABEL_GID`.
    """
    panels = certified_panels(df, n, alpha, empirical, per_sigma)
    n_sigmas = len({p.sigma for p in panels if not math.isnan(p.sigma)})
    nrows, ncols = _grid(len(panels), width, n_sigmas if per_sigma and n_sigmas else None)
    colors = method_colors(c.method for p in panels for c in p.curves if c.kind != "attack")
    handles = _legend_handles(panels, colors)
    spare = nrows * ncols > len(panels)
    legend_rows = 0 if spare else math.ceil(len(handles) / (5 if width >= 5 else 2))
    panel_h = 1.55 if width >= 5 else 1.25
    with plt.rc_context(paper_rc(width)):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, panel_h * nrows + 0.25 + 0.17 * legend_rows),
                                 sharey=True, layout="constrained", squeeze=False)
        flat = list(axes.flat)
        for ax, panel in zip(flat, panels, strict=False):
            _draw_panel(ax, panel, colors, nbins=4 if width / ncols > 1.6 else 3)
            if not panel.curves:
                ax.set_axis_off()
        for ax in flat[len(panels):]:
            ax.set_axis_off()
        for i in range(len(panels)):
            if i + ncols >= len(panels) or (per_sigma and not panels[i + ncols].curves):
                flat[i].set_xlabel(r"$\ell_2$ radius")
        fig.supylabel("certified accuracy (%)", fontsize=plt.rcParams["axes.labelsize"])
        _add_legend(fig, flat, len(panels), handles, width)
    return fig


def plot_certified_panels(
    df: pd.DataFrame,
    out_path: str | Path,
    n: int | None = None,
    alpha: float | None = None,
    empirical: pd.DataFrame | None = None,
    per_sigma: bool = False,
    width: float = FIG_WIDTH,
    formats: Sequence[str] = (),
) -> Path:
    """Certified accuracy (%) vs l2 radius (see :func:`certified_panels`, :func:`certified_figure`).

    The x axis is the l2 radius in pixel space (pixels in [0, 1]).  ``width`` in inches
    (:data:`~bench.common.units.WIDTHS`: 3.3 for one column, 7 for the full width); ``formats`` adds
    sibling files (``'pdf'``, ``'svg'``, ...) next to ``out_path``.  Returns ``out_path``.
    """
    with plt.rc_context(paper_rc(width)):  # the PDF font type applies when saving
        return save_figure(certified_figure(df, n, alpha, empirical, per_sigma, width), out_path, formats)


def plot_certified_accuracy(
    df: pd.DataFrame,
    out_path: str | Path,
    empirical: pd.DataFrame | None = None,
    attacks: bool = False,
    n: int | None = None,
    alpha: float | None = None,
    per_sigma: bool = False,
    width: float = FIG_WIDTH,
    formats: Sequence[str] = (),
) -> Path:
    """``certified_accuracy.png``: :func:`plot_certified_panels`, with the attack curves only on request.

    ``empirical`` (attack accuracy, e.g. ``bench.attack``'s ``robustness.csv``) is drawn only with
    ``attacks=True`` (black, dashed); ``n`` and ``alpha`` (the run's CERTIFY settings, from its manifest)
    end the sampled curves at the Monte Carlo cut-off.  Returns ``out_path``.
    """
    return plot_certified_panels(df, out_path, n=n, alpha=alpha, empirical=empirical if attacks else None,
                                 per_sigma=per_sigma, width=width, formats=formats)


# ---------------------------------------------------------------------------
# Time budget
# ---------------------------------------------------------------------------


def budget_points(df: pd.DataFrame, radii: Sequence[float]) -> pd.DataFrame:
    """The points of :func:`plot_time_budget`: per radius, each method and model family at its best sigma.

    Rows of :func:`~bench.report.paper_metrics.time_budget` (one per run) reduced, for each radius ``r``,
    to the run of each ``(method, model family)`` with the largest certified accuracy at ``r`` (the
    smaller sigma on a tie; a deterministic run is its own).  Columns ``radius, method, family, sigma,
    seconds, accuracy`` (a fraction).
    """
    tb = time_budget(df, radii)
    if tb.empty:
        return pd.DataFrame(columns=["radius", "method", "family", "sigma", "seconds", "accuracy"])
    tb = tb.assign(family=tb["model"].map(envelope_model))
    rows = []
    for r in radii:
        t = tb.assign(radius=float(r), accuracy=tb[f"acc@{r:g}"])
        t = t.sort_values(["method", "family", "accuracy", "sigma"], ascending=[True, True, False, True],
                          na_position="last", kind="mergesort")
        rows.append(t.groupby(["method", "family"], sort=False).head(1))
    out = pd.concat(rows, ignore_index=True)
    return out[["radius", "method", "family", "sigma", "seconds", "accuracy"]]


#: A gap wider than this (decades of seconds per image) between the runs' costs is cut out of the time axis.
BUDGET_GAP_DECADES = 1.0


@dataclass(frozen=True)
class BrokenLog:
    """A log time axis with the empty decades between two groups of costs squeezed to :data:`_GAP_WIDTH`.

    ``lo`` and ``hi`` (log10 seconds) bound the squeezed stretch; ``lo == hi`` is a plain log axis.  Used as
    matplotlib's ``FuncScale`` (``ax.set_xscale('function', functions=(b.forward, b.inverse))``).
    """

    lo: float = 0.0
    hi: float = 0.0

    _GAP_WIDTH = 0.12  # decades drawn for the squeezed stretch

    @property
    def broken(self) -> bool:
        return self.hi > self.lo

    def _k(self) -> float:
        return self._GAP_WIDTH / (self.hi - self.lo) if self.broken else 1.0

    def forward(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.log10(np.where(np.asarray(x, float) > 0, x, np.nan))
        k = self._k()
        return np.where(t <= self.lo, t, np.where(t >= self.hi, t - (self.hi - self.lo) * (1 - k),
                                                  self.lo + (t - self.lo) * k))

    def inverse(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, float)
        k = self._k()
        top = self.lo + (self.hi - self.lo) * k
        t = np.where(y <= self.lo, y,
                     np.where(y >= top, y + (self.hi - self.lo) * (1 - k), self.lo + (y - self.lo) / k))
        return np.power(10.0, t)


def budget_axis(seconds: Sequence[float]) -> BrokenLog:
    """The time axis of :func:`plot_time_budget`: the widest gap between consecutive costs (log10 seconds) is
    squeezed when it spans more than :data:`BUDGET_GAP_DECADES`, keeping 0.15 decades of room on each side."""
    t = np.sort(np.log10([s for s in seconds if s > 0 and math.isfinite(s)]))
    if len(t) < 2:
        return BrokenLog()
    i = int(np.argmax(np.diff(t)))
    if t[i + 1] - t[i] <= BUDGET_GAP_DECADES:
        return BrokenLog()
    return BrokenLog(float(t[i] + 0.15), float(t[i + 1] - 0.15))


def _budget_ticks(axis: BrokenLog, lo: float, hi: float, per_side: int = 3) -> list[float]:
    """Round tick values (1, 2, 3, 5 x 10^k seconds) in ``[lo, hi]`` and outside the squeezed stretch, at most
    ``per_side`` on each side of it (evenly spread; one: the middle one)."""
    cands = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 3, 5)]
    cands = [c for c in cands if lo <= c <= hi]
    sides = [[c for c in cands if not axis.broken or math.log10(c) <= axis.lo],
             [c for c in cands if axis.broken and math.log10(c) >= axis.hi]]
    out = []
    for side in sides:
        if len(side) > per_side:
            idx = np.linspace(0, len(side) - 1, per_side + 2)[1:-1] if per_side == 1 else \
                np.linspace(0, len(side) - 1, per_side)
            side = [side[int(round(i))] for i in idx]
        out += side
    return out


def plot_time_budget(
    df: pd.DataFrame,
    out_path: str | Path,
    radii: Sequence[float] = PAPER_RADII,
    width: float = FIG_WIDTH,
    formats: Sequence[str] = (),
) -> Path:
    """Certified accuracy at each radius (one panel per radius) vs median seconds per image.

    Points of :func:`budget_points`: colour = method, marker = model family (named in the one legend);
    each method and family at its best sigma for that radius.  Markers are hollow so that points of
    about the same cost and accuracy stay visible.  The time axis is logarithmic; when the costs fall into
    two groups decades apart (the deterministic and FaRS runs at milliseconds, Cohen et al. at a large
    multiple) the empty decades between them are squeezed (:func:`budget_axis`, marked ``//`` on the axis)
    so that each group has room.  The scaling sweep is not drawn: it times several ``n`` but measures no
    accuracy.  Returns ``out_path``.
    """
    pts = budget_points(df, radii)
    nrows, ncols = _grid(len(radii) + 1, width)   # one slot more: the legend
    colors = method_colors(pts["method"]) if len(pts) else {}
    fams = model_families(df)
    marker = {k: _MARKERS[i % len(_MARKERS)] for i, k in enumerate(fams)}
    labels = {k: model_label(k, list(df.loc[df["model"].map(envelope_model) == k, "model"].unique())) for k in fams}
    secs = pts["seconds"].to_numpy(float)
    axis = budget_axis(secs)
    finite = secs[np.isfinite(secs) & (secs > 0)]
    span = (finite.min() / 1.25, finite.max() * 1.25) if finite.size else (1e-3, 1.0)
    with plt.rc_context(paper_rc(width)):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, (1.45 if width >= 5 else 1.25) * nrows + 0.3),
                                 sharex=True, sharey=True, layout="constrained", squeeze=False)
        flat = list(axes.flat)
        for ax, r in zip(flat, radii, strict=False):
            _draw_budget_panel(ax, pts[np.isclose(pts["radius"], float(r))], r, colors, marker)
        for ax in flat[: len(radii)]:
            ax.set_xscale("function", functions=(axis.forward, axis.inverse))
            ax.set_xlim(*span)
            ticks = _budget_ticks(axis, span[0], span[1], per_side=3 if width / ncols > 2 else 1)
            ax.set_xticks(ticks, [fmt_seconds(t) for t in ticks])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            if axis.broken:
                _break_marks(ax, axis)
        for ax in flat[len(radii):]:
            ax.set_axis_off()
        handles = [Line2D([], [], color=colors[m], linewidth=2.5, label=m) for m in colors]
        handles += [Line2D([], [], color="0.25", marker=marker[k], markerfacecolor="white", linestyle="",
                           label=labels[k]) for k in fams if k in set(pts["family"])]
        flat[len(radii)].legend(handles=handles, loc="center", frameon=False, borderaxespad=0, handlelength=1.5)
        gap = "; squeezed at //" if axis.broken else ""
        fig.supxlabel(f"median time per image (log scale{gap})", fontsize=plt.rcParams["axes.labelsize"])
        fig.supylabel("certified accuracy (%)", fontsize=plt.rcParams["axes.labelsize"])
        return save_figure(fig, out_path, formats)


def _break_marks(ax: plt.Axes, axis: BrokenLog) -> None:
    """A ``//`` on the bottom spine in the middle of the squeezed stretch (gid ``'axis-break'``)."""
    mid = float(axis.inverse(np.array([axis.lo + BrokenLog._GAP_WIDTH / 2]))[0])
    ax.text(mid, 0, "//", transform=ax.get_xaxis_transform(), ha="center", va="center", color="0.2",
            fontweight="bold", clip_on=False, zorder=6, gid="axis-break",
            bbox=dict(facecolor="white", edgecolor="none", pad=0.3))


def _draw_budget_panel(ax: plt.Axes, pts: pd.DataFrame, r: float, colors: dict[str, str],
                       marker: dict[str, str]) -> None:
    """One radius: a hollow point per (method, model family) at (median seconds, certified accuracy %)."""
    _style_axes(ax)
    ax.set_xscale("log")
    ax.set_ylim(-4, 104)  # room for markers at 0 % and 100 %
    ax.text(0.97, 0.04, "clean (ε = 0)" if r == 0 else f"ε = {fmt_radius(r)}", transform=ax.transAxes, ha="right",
            va="bottom", gid=LABEL_GID, fontsize=plt.rcParams["axes.labelsize"])
    for rec in pts.to_dict("records"):
        ax.plot(rec["seconds"], rec["accuracy"] * 100, marker=marker[rec["family"]], markersize=4.5, linestyle="",
                color=colors[rec["method"]], markerfacecolor="none", markeredgewidth=1.1, zorder=3)
