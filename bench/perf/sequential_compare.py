"""Sequential versus fixed-n CERTIFY on the same images: samples, seconds and certified accuracy.

The command is ``python -m bench.sequential``. For ``cohen`` (Cohen et al. 2019, noise on the pixels of the
``sll+ce`` network: backbone + linear head) and ``fars-mc`` (noise on the embedding, the same head), every
image is certified once per configuration: fixed-n CERTIFY at each n of a grid (which always holds the cap),
and sequential CERTIFY (:mod:`smoothing.confidence_sequence`: the Robbins beta-binomial mixture confidence sequence,
rounds of 100, 200, 400, ... estimation samples up to the cap) with the reported radii as targets. Each
``certify`` call is timed on its own (``Certificate.seconds``: the call's wall time, device synchronised),
after one untimed warm-up call per method.

Stages: :func:`certify_examples` (the per-example frame) -> :func:`summary_table` (one row per method, mode
and n, with :func:`paired_differences` for the sequential rows) -> :func:`verdict_lines`,
:func:`sequential_markdown` and :func:`plot_time_budget_sequential` -> :func:`write_outputs`.

What the comparison's error is
------------------------------
Both procedures of one method see the same selection samples (same seed, image index and ``n0``) and the
sequential estimation samples are a *prefix* of the fixed-n stream at the cap (:mod:`smoothing.noise`: a
stream is decided by the seed, the stage, the image's index and the cap, and sequential rounds continue
it). So the two certificates of an image differ only by the stopping rule and by the confidence sequence
being wider than the Clopper-Pearson bound at the same count, never by independent sampling noise between
the runs. The per-image outcomes ("certified at r") are *paired*: the difference of certified accuracy is
(c - b) / N with b the images certified by fixed-n only and c by sequential only. Over the images (and the
noise seed) it is an estimate whose population value lies within +-(b + c) / N's 95 % Clopper-Pearson upper
bound, the bound reported here (at N images one image moves an accuracy by 100 / N points, so "within
1 point" can only be resolved with >= 100 images). The per-configuration intervals on certified accuracy
(Clopper-Pearson over the images, :func:`bench.report.clopper_pearson`) are much wider, but they are shared
by both procedures and say nothing about their difference.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.lines import Line2D
from tqdm.auto import tqdm

from baselines.cohen import MEMORY_FORMATS
from smoothing.certificate import Certifier

from ..certify.batch_size import fars_batch_size
from ..certify.certifiers import CohenOptions, MonteCarloSettings, build_certifier
from ..certify.machine import noisy_timing_markdown, noisy_timing_warnings
from ..common.env import EMBEDDED_MODELS, process_usage
from ..data import reported_radii
from ..data.selection import select_images
from ..models import LoadedModel, load_zoo
from ..report import clopper_pearson, fmt_seconds, markdown_table
from ..report.figures import _PAPER_RC as PAPER_RC
from ..report.plots import FIG_WIDTH, METHOD_COLORS, save_figure

METHODS = ("cohen", "fars-mc")
FIXED, SEQUENTIAL = "fixed", "sequential"
#: the FaRS paper's radii on Fashion-MNIST (l2, [0, 1] pixels): the targets and the reported radii
DEFAULT_RADII: tuple[float, ...] = reported_radii("fashion-mnist")
DEFAULT_FIXED_NS = (1_000, 10_000, 100_000)
DEFAULT_CAP = 100_000
#: the goals: cohen's mean samples at least this many times fewer, accuracies within this many points
GOAL_RATIO = 10.0
GOAL_POINTS = 1.0
EXAMPLE_COLUMNS = ["method", "mode", "n", "idx", "label", "predict", "radius", "correct", "samples", "seconds",
                   "cpu_seconds", "page_faults"]


@dataclass(frozen=True)
class CompareSettings:
    """What :func:`certify_examples` runs.

    Attributes:
        methods: subset of :data:`METHODS`.
        sigma: noise level (pixels for cohen, embedding units for fars-mc), > 0.
        alpha: failure probability of every certificate, in (0, 1).
        n0: selection samples per image (the same for every configuration).
        cap: estimation samples of sequential CERTIFY at most; fixed-n CERTIFY at the cap is the reference.
        fixed_ns: the fixed-n grid (the cap is added: see :attr:`grid`).
        radii: target radii of sequential CERTIFY and the reported radii (l2, [0, 1] pixels).
        images, skip: the first ``images`` embedded Fashion-MNIST test images of every ``skip``-th.
        seed: global seed (with an image's index it fixes all of its noise).
        batch_size: cohen's noisy samples per forward pass (results do not depend on it).
        fars_batch_size: fars-mc's; None: by its sampler (:func:`bench.certify.batch_size.fars_batch_size`).
        cohen_memory_format: the layout of cohen's noisy batches (a name of
            :data:`baselines.cohen.MEMORY_FORMATS`; ``python -m bench.sequential`` measures the faster one,
            :func:`~bench.certify.batch_size.best_memory_format`).
    """

    methods: tuple[str, ...] = METHODS
    sigma: float = 0.25
    alpha: float = 0.001
    n0: int = 100
    cap: int = DEFAULT_CAP
    fixed_ns: tuple[int, ...] = DEFAULT_FIXED_NS
    radii: tuple[float, ...] = DEFAULT_RADII
    images: int = 100
    skip: int = 10
    seed: int = 0
    batch_size: int = 1000
    fars_batch_size: int | None = None
    cohen_memory_format: str = "contiguous"

    @property
    def grid(self) -> tuple[int, ...]:
        """The fixed n certified, increasing: ``fixed_ns`` and the cap (the comparison needs fixed-n at the cap)."""
        return tuple(sorted({*(int(n) for n in self.fixed_ns), int(self.cap)}))

    def check(self) -> CompareSettings:
        """``self`` when every value is in range, else ``ValueError`` naming the first that is not."""
        problems = [
            (set(self.methods) <= set(METHODS) and len(self.methods) > 0, f"methods must be among {METHODS}"),
            (math.isfinite(self.sigma) and self.sigma > 0, f"sigma must be a finite number > 0, got {self.sigma}"),
            (0 < self.alpha < 1, f"alpha must be in (0, 1), got {self.alpha}"),
            (self.n0 >= 1 and self.cap >= 1, f"n0 and the cap n must be >= 1, got {self.n0}, {self.cap}"),
            (all(n >= 1 for n in self.fixed_ns), f"fixed n must be >= 1, got {list(self.fixed_ns)}"),
            (len(self.radii) > 0 and all(math.isfinite(r) and r >= 0 for r in self.radii),
             f"radii must be finite and >= 0 (at least one), got {list(self.radii)}"),
            (self.images >= 1 and self.skip >= 1, f"images and skip must be >= 1, got {self.images}, {self.skip}"),
            (self.batch_size >= 1 and (self.fars_batch_size is None or self.fars_batch_size >= 1),
             "batch sizes must be >= 1"),
            (self.cohen_memory_format in MEMORY_FORMATS,
             f"cohen_memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {self.cohen_memory_format!r}"),
        ]
        for ok, message in problems:
            if not ok:
                raise ValueError(message)
        return self

    def record(self) -> dict[str, Any]:
        """The settings as plain JSON values (for the manifest)."""
        out = asdict(self)
        out.update(methods=list(self.methods), fixed_ns=list(self.fixed_ns), radii=list(self.radii),
                   grid=list(self.grid))
        return out


# --- stage 1: certify every image with every configuration ------------------------------------------------


def jobs(settings: CompareSettings) -> list[tuple[str, str, int]]:
    """The configurations (method, mode, n): fixed-n at each n of the grid, then sequential at the cap."""
    return [(m, mode, n) for m in settings.methods
            for mode, ns in ((FIXED, settings.grid), (SEQUENTIAL, (settings.cap,))) for n in ns]


def make_certifier(model: LoadedModel, method: str, mode: str, n: int, settings: CompareSettings) -> Certifier:
    """The certifier of one configuration on ``model`` (:func:`bench.certify.certifiers.build_certifier`)."""
    sequential = mode == SEQUENTIAL
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose among {', '.join(METHODS)}")
    mc = MonteCarloSettings(n0=settings.n0, n=n, alpha=settings.alpha, batch_size=settings.batch_size,
                            seed=settings.seed, sequential=sequential, radii=settings.radii if sequential else ())
    if method == "fars-mc":   # its own batch size; by default by the sampler the head allows (projected: linear)
        size = settings.fars_batch_size or fars_batch_size(build_certifier(method, model, settings.sigma, mc))
        mc = replace(mc, batch_size=size)
    return build_certifier(method, model, settings.sigma, mc,
                           cohen=CohenOptions(memory_format=settings.cohen_memory_format))


def select(settings: CompareSettings, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images [K, 1, 28, 28] on ``device``, labels int64 [K], dataset indices int64 [K]): the first
    ``settings.images`` of every ``settings.skip``-th embedded Fashion-MNIST test image."""
    images, labels, indices = select_images("fashion-mnist", None, settings.images, settings.skip)
    return images.to(device), labels, indices


def warm_up(model: LoadedModel, settings: CompareSettings, image: torch.Tensor, index: torch.Tensor) -> None:
    """One untimed call of each method at the smallest fixed n (first-call costs: kernels, allocator, caches)."""
    for method in settings.methods:
        make_certifier(model, method, FIXED, settings.grid[0], settings).certify(image, indices=index)


def certify_examples(settings: CompareSettings | None = None, model: LoadedModel | None = None,
                     device: torch.device | str = "cpu", progress: bool = True) -> pd.DataFrame:
    """Certify every selected image, one at a time, with every configuration of :func:`jobs`.

    Args:
        settings: what to run (default :class:`CompareSettings`: cap 1e5, grid 1e3/1e4/1e5, 100 images).
        model: the model certified (default: ``sll+ce`` of the shipped models,
            :data:`bench.common.env.EMBEDDED_MODELS`);
            ``fars-mc`` needs a Lipschitz backbone/head split.
        device: where the models run.
        progress: a tqdm bar (stderr) over the (method, mode, image) calls.

    Returns:
        One row per (configuration, image), columns :data:`EXAMPLE_COLUMNS`: ``n`` the fixed n or the cap,
        ``idx`` the image's index in the Fashion-MNIST test set, ``predict`` -1 when abstaining, ``radius``
        (l2, pixels), ``correct`` (1 when ``predict == label``), ``samples`` (n0 + estimation samples used),
        ``seconds`` (the call's wall time), ``cpu_seconds`` and ``page_faults`` (the process CPU time, user +
        system, and the minor page faults over the call: :func:`bench.common.env.process_usage`).

    Raises:
        ValueError: settings out of range, more images than the embedded set holds at that skip.
        bench.certify.certifiers.RunError: a method the model cannot take (``fars-mc`` without a split).
    """
    settings = (settings or CompareSettings()).check()
    device = torch.device(device)
    model = (model if model is not None else load_zoo(EMBEDDED_MODELS).split_model("ce")).to(device)
    images, labels, indices = select(settings, device)
    configs = jobs(settings)
    certifiers = {job: make_certifier(model, *job, settings) for job in configs}
    warm_up(model, settings, images[:1], indices[:1])
    rows = []
    with tqdm(total=len(configs) * len(images), desc="sequential vs fixed-n", disable=not progress,
              file=sys.stderr) as bar:
        for i in range(len(images)):   # image outer: the machine's drifts fall on every configuration alike
            for (method, mode, n), certifier in certifiers.items():
                bar.set_postfix_str(f"{method} {mode} n={n}", refresh=False)
                cpu, faults = process_usage()
                cert = certifier.certify(images[i:i + 1], indices=indices[i:i + 1])
                cpu_after, faults_after = process_usage()
                predict, label = int(cert.prediction[0]), int(labels[i])
                rows.append((method, mode, n, int(indices[i]), label, predict, float(cert.radius[0]),
                             int(predict == label), int(cert.samples[0]), float(cert.seconds), cpu_after - cpu,
                             faults_after - faults))
                bar.update()
    return pd.DataFrame(rows, columns=EXAMPLE_COLUMNS)


# --- stage 2: the summary ------------------------------------------------------------------------------


def certified(frame: pd.DataFrame, radius: float) -> np.ndarray:
    """Boolean per row: correct and certified at least at ``radius`` (Cohen et al.'s ``analyze.py`` rule)."""
    return np.asarray((frame["correct"].to_numpy() == 1) & (frame["radius"].to_numpy(float) >= radius))


def _key(r: float) -> str:
    return f"{r:g}"


def accuracy_columns(frame: pd.DataFrame, radii: Sequence[float]) -> dict[str, float]:
    """``acc@r``, ``lo@r``, ``hi@r`` for each radius: certified accuracy (fraction) and its 95 %
    Clopper-Pearson interval over the rows (images) of ``frame``."""
    out: dict[str, float] = {}
    for r in radii:
        k, n = int(certified(frame, r).sum()), len(frame)
        lo, hi = clopper_pearson(k, n)
        out.update({f"acc@{_key(r)}": k / n if n else math.nan, f"lo@{_key(r)}": lo, f"hi@{_key(r)}": hi})
    return out


def paired_differences(examples: pd.DataFrame, radii: Sequence[float], cap: int) -> pd.DataFrame:
    """Per (method, radius): sequential against fixed-n at the cap on the same images (module doc).

    Columns: ``method, radius, images, fixed_only`` (b: images certified at ``radius`` by fixed-n only),
    ``sequential_only`` (c), ``diff_points`` (100 (c - b) / N, sequential minus fixed) and ``bound_points``
    (100 x the 95 % Clopper-Pearson upper bound of (b + c) / N: a bound on |difference| over the images'
    distribution). Methods without both procedures are left out.
    """
    rows = []
    for method, g in examples.groupby("method", sort=False):
        fixed = g[(g["mode"] == FIXED) & (g["n"] == cap)].set_index("idx")
        seq = g[g["mode"] == SEQUENTIAL].set_index("idx")
        common = fixed.index.intersection(seq.index)
        if common.empty:
            continue
        fixed, seq = fixed.loc[common], seq.loc[common]
        for r in radii:
            a, s = certified(fixed, r), certified(seq, r)
            b, c, n = int((a & ~s).sum()), int((~a & s).sum()), len(common)
            rows.append({"method": method, "radius": float(r), "images": n, "fixed_only": b, "sequential_only": c,
                         "diff_points": 100.0 * (c - b) / n, "bound_points": 100.0 * clopper_pearson(b + c, n)[1]})
    columns = ["method", "radius", "images", "fixed_only", "sequential_only", "diff_points", "bound_points"]
    return pd.DataFrame(rows, columns=columns)


def summary_table(examples: pd.DataFrame, radii: Sequence[float], cap: int) -> pd.DataFrame:
    """One row per (method, mode, n), in the examples' order of methods and increasing n.

    Columns: ``method, mode, n, images, samples_mean, samples_median, seconds_median, seconds_mean``
    (per image), ``acc@r, lo@r, hi@r`` per radius (fractions, 95 % Clopper-Pearson), and for sequential
    rows (NaN on fixed rows) ``sample_ratio`` (mean samples of fixed-n at the cap / mean samples of
    sequential), ``speedup`` (mean seconds likewise), ``diff@r`` (points, sequential minus fixed-n at the cap),
    ``max_abs_diff_points`` (the largest |diff@r| over the radii) and ``bound_points`` (the largest 95 % bound
    on |difference| over the radii, :func:`paired_differences`).
    """
    rows = []
    paired = paired_differences(examples, radii, cap)
    methods = list(dict.fromkeys(examples["method"]))
    for method in methods:
        g = examples[examples["method"] == method]
        reference = g[(g["mode"] == FIXED) & (g["n"] == cap)]
        for mode in (FIXED, SEQUENTIAL):
            for n, run in g[g["mode"] == mode].groupby("n", sort=True):
                row: dict[str, Any] = {
                    "method": method, "mode": mode, "n": int(n), "images": len(run),
                    "samples_mean": float(run["samples"].mean()), "samples_median": float(run["samples"].median()),
                    "seconds_median": float(run["seconds"].median()), "seconds_mean": float(run["seconds"].mean()),
                    **accuracy_columns(run, radii)}
                if mode == SEQUENTIAL:
                    row.update(_sequential_columns(run, reference, paired[paired["method"] == method], radii))
                rows.append(row)
    return pd.DataFrame(rows)


def _sequential_columns(run: pd.DataFrame, reference: pd.DataFrame, paired: pd.DataFrame,
                        radii: Sequence[float]) -> dict[str, float]:
    """The sequential row's comparison with fixed-n at the cap (NaN without that reference)."""
    ratio = speedup = math.nan
    if len(reference):
        ratio = float(reference["samples"].mean() / run["samples"].mean())
        speedup = float(reference["seconds"].mean() / run["seconds"].mean())
    diffs = {f"diff@{_key(r)}": float(p) for r, p in zip(paired["radius"], paired["diff_points"], strict=True)}
    out = {"sample_ratio": ratio, "speedup": speedup, **{f"diff@{_key(r)}": diffs.get(f"diff@{_key(r)}", math.nan)
                                                         for r in radii}}
    out["max_abs_diff_points"] = float(paired["diff_points"].abs().max()) if len(paired) else math.nan
    out["bound_points"] = float(paired["bound_points"].max()) if len(paired) else math.nan
    return out


# --- stage 3: the verdict, the markdown, the figure ----------------------------------------------------------


def verdict_lines(summary: pd.DataFrame, ratio_goal: float = GOAL_RATIO, points_goal: float = GOAL_POINTS) -> list[str]:
    """One line per goal and method: PASS or MISS (never an assertion).

    Goals: ``cohen``'s sample ratio >= ``ratio_goal``; for each method, the largest |difference| of
    certified accuracy between sequential and fixed-n at the cap over the radii <= ``points_goal`` points.
    """
    lines = []
    seq = summary[summary["mode"] == SEQUENTIAL]
    if "cohen" not in set(seq["method"]):
        lines.append(f"- samples (cohen, >= {ratio_goal:g}x fewer): not measured (cohen was not run)")
    for rec in seq.to_dict("records"):
        method, images = rec["method"], int(rec["images"])
        if method == "cohen":
            ratio = rec["sample_ratio"]
            verdict = "PASS" if ratio >= ratio_goal else "MISS"
            lines.append(f"- **{verdict}** samples ({method}): {ratio:.1f}x fewer on average (mean "
                         f"{rec['samples_mean']:,.0f} per image vs {ratio * rec['samples_mean']:,.0f} at fixed "
                         f"n = {int(rec['n']):,}; goal >= {ratio_goal:g}x)")
        else:
            lines.append(f"- info: samples ({method}): {rec['sample_ratio']:.1f}x fewer on average")
        worst = rec["max_abs_diff_points"]
        verdict = "PASS" if worst <= points_goal else "MISS"
        lines.append(f"- **{verdict}** certified accuracy ({method}): largest |sequential - fixed-n| over the radii "
                     f"{worst:.1f} points (goal <= {points_goal:g}); 95 % bound on the difference over the images' "
                     f"distribution {rec['bound_points']:.1f} points; one image = {100 / images:.1f} points at "
                     f"{images} images")
    return lines


MC_ERROR_TEXT = (
    "The Monte Carlo error of the comparison: both procedures use the same selection samples and the sequential "
    "estimation samples are a prefix of the fixed-n stream at the cap (smoothing/noise.py), so a difference "
    "comes only from the stopping rule and from the confidence sequence being wider than Clopper-Pearson, not "
    "from sampling noise between the runs. The per-image outcomes are paired: the difference is "
    "(c - b) / N, b the images certified by fixed-n only and c by sequential only (table below); the bound "
    "is the 95 % Clopper-Pearson upper bound of (b + c) / N, which covers |difference| over the images' "
    "(and noise seeds') distribution. The intervals of each accuracy (over the images) are far wider but are "
    "shared by both procedures.")


def _accuracy_cell(rec: dict[str, Any], r: float) -> str:
    k = _key(r)
    return f"{100 * rec[f'acc@{k}']:.1f} [{100 * rec[f'lo@{k}']:.0f}, {100 * rec[f'hi@{k}']:.0f}]"


def summary_markdown_table(summary: pd.DataFrame, radii: Sequence[float]) -> str:
    """The summary as a markdown table (accuracies in % with their 95 % interval)."""
    columns = ["method", "mode", "n", "images", "mean samples", "median samples", "median s/img", "mean s/img",
               *(f"acc@{_key(r)} % [95 % CI]" for r in radii), "sample ratio", "max abs diff (pt)"]
    rows = []
    for rec in summary.to_dict("records"):
        seq = rec["mode"] == SEQUENTIAL
        rows.append([rec["method"], rec["mode"], f"{rec['n']:,}", rec["images"], f"{rec['samples_mean']:,.0f}",
                     f"{rec['samples_median']:,.0f}", fmt_seconds(rec["seconds_median"]),
                     fmt_seconds(rec["seconds_mean"]), *(_accuracy_cell(rec, r) for r in radii),
                     f"{rec['sample_ratio']:.1f}x" if seq else "", f"{rec['max_abs_diff_points']:.1f}" if seq else ""])
    return markdown_table(columns, rows, right_align=columns[2:])


def paired_markdown_table(paired: pd.DataFrame) -> str:
    """:func:`paired_differences` as a markdown table."""
    columns = ["method", "radius", "images", "fixed-n only (b)", "sequential only (c)", "diff (pt)", "95 % bound (pt)"]
    rows = [[p["method"], f"{p['radius']:g}", p["images"], p["fixed_only"], p["sequential_only"],
             f"{p['diff_points']:+.1f}", f"{p['bound_points']:.1f}"] for p in paired.to_dict("records")]
    return markdown_table(columns, rows, right_align=columns[1:])


def sequential_markdown(summary: pd.DataFrame, paired: pd.DataFrame, settings: CompareSettings,
                        warnings: Sequence[str] = (), device: str = "") -> str:
    """``sequential.md``: the settings, the summary table, the verdict, the paired differences and their error."""
    head = (f"# Sequential vs fixed-n CERTIFY\n\n"
            f"sll+ce on {settings.images} embedded Fashion-MNIST test images (every {settings.skip}th), "
            f"sigma {settings.sigma:g}, alpha {settings.alpha:g}, n0 {settings.n0}, cap n {settings.cap:,}, "
            f"fixed n {', '.join(f'{n:,}' for n in settings.grid)}, target radii "
            f"{', '.join(f'{r:g}' for r in settings.radii)}, seed {settings.seed}"
            + (f"; {device}" if device else "") + ". Samples per image are n0 + estimation samples; seconds per "
            "image are one timed certify call each.\n")
    parts = [head, summary_markdown_table(summary, settings.radii), "", "## Verdict", "",
             *verdict_lines(summary), "", "## Paired differences (sequential minus fixed-n at the cap)", "",
             MC_ERROR_TEXT, "", paired_markdown_table(paired), ""]
    return "\n".join(parts) + noisy_timing_markdown(list(warnings))


def plot_time_budget_sequential(summary: pd.DataFrame, radii: Sequence[float], out_path: str | Path,
                                width: float = FIG_WIDTH, formats: Sequence[str] = ("pdf",)) -> Path:
    """Certified accuracy (%) at each radius against median seconds per image (log x), one panel per radius.

    Per method one line through its fixed-n points in increasing n (labelled with n), and its sequential run
    as a star of the same colour (labelled with its mean samples per image, n0 included). Writes ``out_path``
    (PNG) and its siblings in ``formats``; returns ``out_path``.
    """
    n_panels = len(radii) + 1                  # the last slot holds the legend
    ncols = 3 if width >= 6 else 2
    nrows = math.ceil(n_panels / ncols)
    methods = list(dict.fromkeys(summary["method"]))
    colors = {m: METHOD_COLORS.get(m, "0.3") for m in methods}
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, 2.0 * nrows + 0.3), sharex=True,
                                 layout="constrained", squeeze=False)
        flat = list(axes.flat)
        for ax, r in zip(flat, radii, strict=False):
            _draw_budget_panel(ax, summary, r, colors)
        for ax in flat[len(radii):]:
            ax.set_axis_off()
        handles = [Line2D([], [], color=colors[m], marker="o", markersize=4, label=f"{m}, fixed n") for m in methods]
        handles += [Line2D([], [], color=colors[m], marker="*", markersize=9, markeredgecolor="black",
                           markeredgewidth=0.5, linestyle="", label=f"{m}, sequential") for m in methods]
        flat[-1].legend(handles=handles, loc="center", frameon=False,
                        title="labels: n of fixed-n CERTIFY;\n~mean samples of sequential")
        fig.supxlabel("median seconds per image (log scale)", fontsize=PAPER_RC["axes.labelsize"])
        fig.supylabel("certified accuracy (%)", fontsize=PAPER_RC["axes.labelsize"])
        return save_figure(fig, out_path, formats)


#: fixed-n labels closer than this (log10 of seconds) to a labelled point at the same accuracy are left out
LABEL_GAP_DECADES = 0.12


def _compact(n: float) -> str:
    """Short labels of sample counts on the figure: 500, 1k, 2.5k, 10k, 100k, 1.2M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.0f}"


def _draw_budget_panel(ax: plt.Axes, summary: pd.DataFrame, r: float, colors: dict[str, str]) -> None:
    """One radius: per method the fixed-n line (points labelled with n) and the sequential star."""
    ax.grid(True, which="major", color="0.85", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_xscale("log")
    ax.set_title(f"ε = {r:g}")
    column = f"acc@{_key(r)}"
    values = 100 * summary[column].to_numpy(float)
    low, high = (np.nanmin(values), np.nanmax(values)) if np.isfinite(values).any() else (0.0, 100.0)
    pad = max(4.0, 0.15 * (high - low))
    ax.set_ylim(max(-3.0, low - pad), min(103.0, high + pad))
    for method, color in colors.items():
        g = summary[summary["method"] == method]
        fixed = g[g["mode"] == FIXED].sort_values("n")
        ax.plot(fixed["seconds_median"], 100 * fixed[column], marker="o", markersize=3.5, color=color, zorder=2)
        labelled: list[tuple[float, float]] = []
        for rec in fixed.to_dict("records"):   # n below the point (not where it would cover the last label)
            x, y = float(rec["seconds_median"]), 100 * float(rec[column])
            if any(abs(math.log10(x / lx)) < LABEL_GAP_DECADES and abs(y - ly) < 4 for lx, ly in labelled):
                continue
            labelled.append((x, y))
            ax.annotate(_compact(rec["n"]), (x, y), xytext=(0, -9), textcoords="offset points", fontsize=5.5,
                        color=color, ha="center")
        seq = g[g["mode"] == SEQUENTIAL]
        ax.plot(seq["seconds_median"], 100 * seq[column], marker="*", markersize=9, linestyle="", color=color,
                markeredgecolor="black", markeredgewidth=0.5, zorder=3)
        for rec in seq.to_dict("records"):
            ax.annotate(f"~{_compact(rec['samples_mean'])}", (rec["seconds_median"], 100 * rec[column]),
                        xytext=(0, 6), textcoords="offset points", fontsize=5.5, color=color, ha="center")


# --- stage 4: the files ------------------------------------------------------------------------------------


def timing_runs(examples: pd.DataFrame) -> Iterable[tuple[str, np.ndarray]]:
    """(name, seconds per image) of each fixed-n configuration, for the noisy-timing warnings (sequential
    runs are left out: their work per image varies by design)."""
    fixed = examples[examples["mode"] == FIXED]
    for (method, n), g in fixed.groupby(["method", "n"], sort=False):
        yield f"{method} fixed n={n}", g["seconds"].to_numpy(float)


def usage_runs(examples: pd.DataFrame) -> Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, wall seconds, CPU seconds, page faults) per image of each configuration, for the usage warnings
    (:func:`bench.certify.machine.usage_warnings`); none for a frame without the usage columns."""
    if not {"cpu_seconds", "page_faults"} <= set(examples.columns):
        return
    for (method, mode, n), g in examples.groupby(["method", "mode", "n"], sort=False):
        yield (f"{method} {mode} n={n}", g["seconds"].to_numpy(float), g["cpu_seconds"].to_numpy(float),
               g["page_faults"].to_numpy(float))


def write_outputs(examples: pd.DataFrame, settings: CompareSettings, out: str | Path, *,
                  machine: dict[str, Any] | None = None, device: str = "", on_cpu: bool = False) -> dict[str, Path]:
    """Write ``sequential_examples.csv``, ``sequential.csv``, ``sequential.md`` and
    ``time_budget_sequential.png`` / ``.pdf`` into ``out``; returns {name: path}.

    ``machine``: :func:`bench.certify.machine.machine_state` at the start of the run (its load average
    decides the busy-machine warning); ``device``: the device's name for the markdown; ``on_cpu``: the run was
    on the CPU, so a call whose CPU time fell well below its wall time was starved (the usage warnings).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary_table(examples, settings.radii, settings.cap)
    paired = paired_differences(examples, settings.radii, settings.cap)
    warnings = (noisy_timing_warnings(machine or {}, timing_runs(examples), usage_runs(examples) if on_cpu else ())
                if machine is not None else [])
    paths = {"examples": out / "sequential_examples.csv", "summary": out / "sequential.csv",
             "markdown": out / "sequential.md", "figure": out / "time_budget_sequential.png"}
    examples.to_csv(paths["examples"], index=False)
    summary.to_csv(paths["summary"], index=False)
    paths["markdown"].write_text(sequential_markdown(summary, paired, settings, warnings, device))
    plot_time_budget_sequential(summary, settings.radii, paths["figure"], formats=("pdf",))
    paths["figure_pdf"] = paths["figure"].with_suffix(".pdf")
    return paths


__all__ = [
    "METHODS", "DEFAULT_RADII", "DEFAULT_FIXED_NS", "DEFAULT_CAP", "GOAL_RATIO", "GOAL_POINTS", "EXAMPLE_COLUMNS",
    "usage_runs",
    "CompareSettings", "jobs", "make_certifier", "certify_examples", "certified", "accuracy_columns",
    "paired_differences", "summary_table", "verdict_lines", "sequential_markdown", "plot_time_budget_sequential",
    "write_outputs",
]
