"""Orchestration: read the results TSV, compute the metrics, write the tables, figures and Cohen-format files.

``summary.md`` is written here only, as a function of a run folder's files: the tables of ``certify.tsv``,
the closing paragraph, then the sections recorded by the run: its timing (``manifest.json``'s ``timing``),
the noisy-timing warning (``timing_warnings``) and the attack stage's audit (``soundness.md``, between
:data:`SOUNDNESS_BEGIN` and :data:`SOUNDNESS_END`). ``python -m bench.report RUN_DIR`` on a finished run
therefore rewrites the ``summary.md`` the run wrote, byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..certify.machine import noisy_timing_markdown
from ..certify.runner import timing_markdown
from ..common.units import figure_width, width_name
from .cohen_export import COHEN_DIR, export_cohen
from .figures import plot_certified_accuracy, plot_time_budget
from .metrics import PAPER_RADII, certified_accuracy, default_grid, summarize
from .paper_metrics import clopper_pearson
from .paper_tables import write_table1, write_table2, write_table_certified
from .plots import FORMAT_SUFFIXES, plot_scaling, plot_speedup, sibling_paths
from .read import as_results, read_results
from .tables import speedup_markdown, summary_markdown, write_summary

#: The markers around the attack stage's section of ``summary.md`` (the text of ``soundness.md``).
SOUNDNESS_BEGIN = "<!-- bench.attack:begin -->"
SOUNDNESS_END = "<!-- bench.attack:end -->"

#: Figure formats written by default (PNG for reading, PDF for the paper).
DEFAULT_FORMATS: tuple[str, ...] = ("png", "pdf")
FORMATS: tuple[str, ...] = FORMAT_SUFFIXES


def monte_carlo_settings(manifest: Mapping[str, Any] | None) -> tuple[int | None, float | None]:
    """``(n, alpha)`` of CERTIFY from a run's ``manifest.json`` (``monte_carlo`` or ``config``); Nones if absent."""
    if not manifest:
        return None, None
    for section in ("monte_carlo", "config"):
        mc = manifest.get(section) or {}
        if mc.get("n") and mc.get("alpha"):
            return int(mc["n"]), float(mc["alpha"])
    return None, None


def select_runs(
    df: pd.DataFrame,
    methods: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    sigmas: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Rows of the runs whose method is in ``methods``, model in ``models`` and sigma in ``sigmas``.

    ``None`` keeps everything.  Deterministic runs (no sigma) pass the sigma filter: they have no noise
    level and are drawn as references next to every sigma (drop them with ``methods``).
    """
    keep = pd.Series(True, index=df.index)
    if methods:
        keep &= df["method"].isin(list(methods))
    if models:
        keep &= df["model"].isin(list(models))
    if sigmas:
        wanted = np.asarray([float(s) for s in sigmas])
        sig = df["sigma"].to_numpy(float)
        keep &= np.isnan(sig) | np.isclose(sig[:, None], wanted[None, :], rtol=0, atol=1e-9).any(axis=1)
    return df[keep.to_numpy()].reset_index(drop=True)


def _figure_paths(key: str, path: Path, formats: Sequence[str]) -> dict[str, Path]:
    """``{'<key>_<fmt>': path}`` for every written sibling of a figure."""
    return {f"{key}_{fmt}": p for fmt, p in sibling_paths(path, formats).items()}


def write_reports(
    tsv_path: str | Path | pd.DataFrame,
    out_dir: str | Path,
    radii: Sequence[float] = PAPER_RADII,
    grid: Iterable[float] | None = None,
    empirical: pd.DataFrame | None = None,
    scaling: pd.DataFrame | None = None,
    *,
    manifest: Mapping[str, Any] | None = None,
    n: int | None = None,
    alpha: float | None = None,
    formats: Sequence[str] = DEFAULT_FORMATS,
    methods: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    sigmas: Sequence[float] | None = None,
    attacks: bool = False,
    robustness: pd.DataFrame | None = None,
    table_eps: Sequence[float] | None = None,
    run_dir: str | Path | None = None,
    widths: Sequence[str | float] = ("full",),
    per_sigma: bool = False,
) -> dict[str, Path]:
    """Read ``tsv_path`` (or take a results frame) and write every report into ``out_dir``.

    Written: ``summary.csv``, ``summary.md``, ``certified_accuracy.csv`` (on ``grid``, default
    :func:`~bench.report.metrics.default_grid`), the figures ``certified_accuracy`` and ``time_budget``
    (one file per format: ``.png`` always, plus ``formats``), the tables ``table_certified``, ``table1``
    (when there are FaRS runs) and ``table2`` (``.md`` and ``.tex``), ``cohen/*.tsv`` (each run in Cohen
    et al.'s layout); when some run has a Cohen et al. reference, ``speedup.md`` and, unless the manifest
    records noisy timings (``timing_warnings``), the ``speedup`` figure (a stale one is removed when it is
    not drawn); plus ``scaling`` figures when ``scaling`` data are given.

    Parameters (beyond the positional ones, which keep their old meaning)
    ----------
    manifest:
        The run's ``manifest.json`` as a dict: CERTIFY's ``n`` and ``alpha`` are read from its
        ``monte_carlo`` section (the Monte Carlo cut-off of the figure).  ``n`` / ``alpha`` override it.
    formats:
        Figure formats among ``png``, ``pdf``, ``svg`` (default png + pdf; png is always written
        because README and CI link the PNGs).
    methods, models, sigmas:
        Keep only these runs (see :func:`select_runs`) in every table and figure; Table 2 keeps the
        models of the kept runs.  Speed-ups are measured against the Cohen et al. runs of the whole
        experiment (:func:`~bench.report.metrics.cohen_reference`), whatever the filter.
    attacks, empirical:
        Draw the attack curves ``empirical`` (``model, radius, accuracy``) on the certified-accuracy
        figure only when ``attacks`` is true.
    robustness:
        ``robustness.csv`` of the attack stage for Table 2; default: ``out_dir/robustness.csv`` when it
        exists (Table 2 is a "skipped" note otherwise).
    table_eps:
        The radii of Table 1 and Table 2 (default: the positive ``radii``); ``radii`` are those of
        ``summary.*``, ``table_certified.*`` and the time-budget panels.
    widths:
        Figure widths (:func:`~bench.common.units.figure_width`: ``'column'`` = 3.3 in, ``'full'`` = 7 in,
        or inches); the first gets the plain file names, each other one the suffix ``_<name>``
        (``certified_accuracy_column.png``).
    per_sigma:
        Certified accuracy with one panel per sigma and model family instead of the envelope over sigma.
    run_dir:
        The run folder whose ``soundness.md`` becomes the audit section of ``summary.md`` (default
        ``out_dir``); the timing sections come from ``manifest`` (see the module doc).

    Returns
    -------
    dict[str, pathlib.Path]
        Keys ``summary_csv, summary_md, certified_accuracy_csv``, ``<figure>_<format>`` (and
        ``<figure>_<width name>_<format>`` for the other widths), ``speedup_md``,
        ``table_certified_md/_tex``, ``table1_md/_tex``, ``table2_md/_tex`` and ``cohen/<file name>`` per run.

    Raises
    ------
    ValueError
        Unknown format or width, or no run left after the filters.
    """
    bad = [f for f in formats if f.lower().lstrip(".") not in FORMATS]
    if bad:
        raise ValueError(f"unknown figure format(s) {bad}; choose from {list(FORMATS)}")
    inches = [figure_width(w) for w in widths] or [figure_width("full")]
    every = as_results(tsv_path) if isinstance(tsv_path, pd.DataFrame) else read_results(tsv_path)
    df = select_runs(every, methods, models, sigmas)
    if df.empty:
        raise ValueError("no run left after the --methods/--models/--sigma filters")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mc_n, mc_alpha = monte_carlo_settings(manifest)
    n, alpha = n or mc_n, alpha or mc_alpha
    grid_arr = default_grid(df) if grid is None else np.asarray(list(grid), dtype=float)
    # speed-ups against Cohen runs of the whole experiment, so that a filter cannot change a reference
    summary = select_runs(summarize(every, radii=radii), methods, models, sigmas)
    paths = write_summary(summary, out_dir, curves=certified_accuracy(df, grid_arr))
    figs = [f for f in formats if f.lower().lstrip(".") != "png"]
    device = (manifest or {}).get("device_name")
    noisy = list((manifest or {}).get("timing_warnings") or [])
    has_reference = bool((summary["speedup_reference"].fillna("").astype(str) != "").any())

    for k, w in enumerate(inches):
        tail = "" if k == 0 else "_" + width_name(w)
        drawn = [("certified_accuracy", plot_certified_accuracy(
                     df, out_dir / f"certified_accuracy{tail}.png", empirical=empirical, attacks=attacks, n=n,
                     alpha=alpha, per_sigma=per_sigma, width=w, formats=figs)),
                 ("time_budget", plot_time_budget(df, out_dir / f"time_budget{tail}.png", radii=radii, width=w,
                                                  formats=figs))]
        if has_reference and not noisy:
            drawn.append(("speedup", plot_speedup(summary, out_dir / f"speedup{tail}.png", device=device, width=w,
                                                  formats=figs)))
        else:   # not drawn: a figure left from an earlier report would contradict speedup.md
            for suffix in FORMAT_SUFFIXES:
                (out_dir / f"speedup{tail}.{suffix}").unlink(missing_ok=True)
        if scaling is not None:
            drawn.append(("scaling", plot_scaling(scaling, out_dir / f"scaling{tail}.png", formats=figs, width=w,
                                                  device=device)))
        for key, path in drawn:
            paths.update(_figure_paths(key + tail, path, figs))
    if has_reference:
        paths["speedup_md"] = out_dir / "speedup.md"
        paths["speedup_md"].write_text(speedup_markdown(summary, device, noisy), encoding="utf-8")

    mc = (n, alpha) if n and alpha else None
    eps = [float(r) for r in radii if float(r) > 0] if table_eps is None else list(table_eps)
    paths.update(write_table_certified(df, out_dir, radii, mc))
    paths.update(write_table1(df, out_dir, eps, mc))
    if robustness is None and (out_dir / "robustness.csv").is_file():
        robustness = pd.read_csv(out_dir / "robustness.csv")
    if robustness is not None and "model" in robustness.columns:   # the models of the kept runs only
        robustness = robustness[robustness["model"].astype(str).isin(set(df["model"].astype(str)))]
    paths.update(write_table2(robustness, out_dir, eps))
    paths.update({f"{COHEN_DIR}/{p.name}": p for p in export_cohen(df, out_dir / COHEN_DIR).values()})
    text = (summary_markdown(summary).rstrip("\n") + "\n\n"
            + _table_pointer(int(summary["examples"].min()), n, alpha))
    captions = figure_captions(paths, n, alpha, per_sigma, bool(noisy))
    if captions:   # the figures carry no title: their captions are a section of summary.md
        text = text.rstrip("\n") + "\n\n## Figures\n\n" + "\n".join(captions) + "\n"
    paths["summary_md"].write_text(with_run_sections(text, Path(run_dir or out_dir), manifest), encoding="utf-8")
    return paths


def figure_captions(paths: Mapping[str, Path], n: int | None, alpha: float | None, per_sigma: bool = False,
                    noisy: bool = False) -> list[str]:
    """Captions of the figures in ``paths`` (the figures carry no title: their captions are these).

    One markdown line per written figure (PNG; other widths and formats share the caption), plus the
    speed-up table when the speed-ups were not drawn.
    """
    cut = (f" A sampled curve ends at its Monte Carlo cut-off sigma * Phi^-1(alpha^(1/n)) (n = {n}, "
           f"alpha = {alpha:g}; open circle): no certificate lies beyond it.") if n and alpha else ""
    panels = ("one row per model and one panel per σ (the model's deterministic methods in each)" if per_sigma
              else "one panel per model: each sampled method's best curve over σ (envelope) and each deterministic "
                   "method's curve")
    text = {
        "certified_accuracy": f"certified accuracy (%) against the l2 radius ([0, 1] pixel scale), {panels}; "
                              "colour = method." + cut,
        "time_budget": "certified accuracy at each radius against the median time per image (log scale; empty "
                       "decades between fast and slow runs are squeezed where marked //); colour = method, marker = "
                       "model; each method and model at its best σ for that radius.",
        "speedup": "speed-up of each run over its Cohen et al. reference (the Cohen run on the same model and σ; "
                   "else the strongest Cohen run on that model or backbone), median seconds per image, with its 95% "
                   "bootstrap interval, the images per run and the device; every number in `speedup.md`.",
    }
    lines = [f"- `{paths[key + '_png'].name}`: {caption}" for key, caption in text.items() if key + "_png" in paths]
    if noisy and "speedup_md" in paths:
        lines.append("- `speedup.md`: the speed-ups as a table and no figure: the machine was not quiet while "
                     "they were timed.")
    return lines


def _table_pointer(images: int, n: int | None, alpha: float | None) -> str:
    """The closing paragraph of ``summary.md``'s tables: the uncertainty of its percentages, where the intervals
    are, and CERTIFY's settings.

    The uncertainty quoted is the widest 95 % Clopper-Pearson half-width over the images (at 50 %).
    """
    lo, hi = clopper_pearson(images // 2, images) if images > 0 else (math.nan, math.nan)
    mc = "" if n is None or alpha is None or math.isnan(alpha) else f" CERTIFY: n = {n}, alpha = {alpha:g}."
    return (f"With {images} images per run a percentage above is uncertain by up to "
            f"±{50 * (hi - lo):.0f} points (95% Clopper-Pearson interval over the images). "
            "Certified accuracy with its interval and ACR ± SE per run: "
            "`table_certified.md` (LaTeX: `table_certified.tex`); the paper's tables: `table1.*`, "
            "`table2.*`; each run in Cohen et al.'s format: `cohen/`." + mc + "\n")


def with_run_sections(text: str, run_dir: Path, manifest: Mapping[str, Any] | None) -> str:
    """``text`` (the tables of ``summary.md``) followed by the run's sections: its timing and noisy-timing
    warning from ``manifest`` (``timing``, ``timing_warnings``) and ``run_dir/soundness.md`` between
    :data:`SOUNDNESS_BEGIN` and :data:`SOUNDNESS_END`; a section whose source is absent is left out."""
    text = text.rstrip("\n") + "\n"
    timing = (manifest or {}).get("timing")
    if isinstance(timing, Mapping) and timing:
        text += timing_markdown(dict(timing))
    text += noisy_timing_markdown(list((manifest or {}).get("timing_warnings") or []))
    return _with_soundness(text, run_dir)


def _with_soundness(text: str, run_dir: Path) -> str:
    """``text`` without its audit section, then ``run_dir/soundness.md``'s text as that section (if the file exists)."""
    if SOUNDNESS_BEGIN in text and SOUNDNESS_END in text:
        head, rest = text.split(SOUNDNESS_BEGIN, 1)
        text = head.rstrip("\n") + "\n" + rest.split(SOUNDNESS_END, 1)[1].lstrip("\n")
    audit = Path(run_dir) / "soundness.md"
    if not audit.is_file():
        return text
    return text.rstrip("\n") + "\n\n" + f"{SOUNDNESS_BEGIN}\n{audit.read_text()}{SOUNDNESS_END}\n"
