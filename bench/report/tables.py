"""Markdown tables, number formatters and the ``summary.csv`` / ``summary.md`` writer.

:func:`markdown_table` is the one markdown-table writer of the benchmark
reports (plain GitHub-flavoured markdown, no extra dependency);
:func:`fmt_seconds` (re-exported from :mod:`bench.common.units`) the one human-readable duration format.  The ``fmt_*``
helpers return ``'—'`` for a missing value (None / NaN).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import pandas as pd

from ..common.units import fmt_radius, fmt_seconds
from .metrics import RUN_KEYS, reference_label

# ---------------------------------------------------------------------------
# Markdown tables
# ---------------------------------------------------------------------------


def markdown_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    right_align: Collection[str] = (),
    pad: bool = False,
) -> str:
    """A GitHub-flavoured markdown table: a header of ``columns`` and one line per row.

    Cells are ``str(value)`` with ``'|'`` escaped as ``'\\|'``; header names are
    written as given.  By default cells are not padded and the separator cells
    are ``---``.  With ``pad=True`` every column is padded to its widest cell
    (at least 3 characters) so the source lines up, and every row must have one
    cell per column (``ValueError`` otherwise).  Columns named in
    ``right_align`` get a ``--:`` separator (and, padded, right-justified cells).
    No trailing newline.
    """
    header = [str(c) for c in columns]
    cells = [[str(v).replace("|", "\\|") for v in row] for row in rows]
    right = [c in right_align for c in header]
    if pad:
        widths = [max([3, len(h)] + [len(r[i]) for r in cells if i < len(r)]) for i, h in enumerate(header)]
    else:
        widths = [3] * len(header)

    def line(vals: Sequence[str]) -> str:
        if pad:
            vals = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(vals, widths, right, strict=True)]
        return "| " + " | ".join(vals) + " |"

    sep = ["-" * (w - 1) + ":" if r else "-" * w for w, r in zip(widths, right, strict=True)]
    return "\n".join([line(header), line(sep), *(line(r) for r in cells)])


def frame_markdown(frame: pd.DataFrame, right_align: Collection[str] = ()) -> str:
    """:func:`markdown_table` of a frame of cell values (columns as header), padded for reading."""
    return markdown_table([str(c) for c in frame.columns], frame.itertuples(index=False), right_align, pad=True)


# ---------------------------------------------------------------------------
# Number formatters
# ---------------------------------------------------------------------------


def fmt_pct(x: float) -> str:
    """A fraction as a percentage with one decimal: 0.8123 -> '81.2%'."""
    return "—" if x is None or pd.isna(x) else f"{100.0 * float(x):.1f}%"


def fmt_speedup(x: float) -> str:
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


def fmt_speedup_short(x: float) -> str:
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


def fmt_log_tick(v: float, _pos: object = None) -> str:
    """Tick label on a log speed-up axis: 0.1x, 1x, 10x, 100x, 1e3x, 1e4x."""
    if v <= 0 or not math.isfinite(v):
        return ""
    e = math.log10(v)
    if abs(e - round(e)) < 1e-6 and round(e) >= 3:
        return f"1e{int(round(e))}x"
    return f"{v:g}x"


def fmt_sigma(s: float) -> str:
    """A noise level: 0.25 -> '0.25'; '—' for a deterministic run (NaN sigma)."""
    return "—" if s is None or pd.isna(s) else f"{float(s):g}"


def fmt_acr(x: float) -> str:
    """An average certified radius with three decimals; '∞' when infinite."""
    if x is None or pd.isna(x):
        return "—"
    return "∞" if math.isinf(float(x)) else f"{float(x):.3f}"


# ---------------------------------------------------------------------------
# summary.md / summary.csv
# ---------------------------------------------------------------------------

_SUMMARY_LEGEND = (
    "# Certification summary\n\n"
    "One row per run (method, model, σ). `clean`: accuracy of the certified predictions (certified accuracy "
    "at radius 0; abstentions count as wrong). `acc@R`: certified accuracy at l2 radius R "
    "(pixel space, [0,1] pixel scale). `ACR`: average certified radius "
    "(radius of correct predictions, 0 otherwise; ∞ if a correct prediction has an infinite radius). "
    "`abstain`: abstention rate. `s/img`: wall-clock seconds per image (median and 25th–75th percentile). "
    "`samples`: network evaluations per input (0 = deterministic). `speedup vs Cohen`: median s/img of the "
    "Cohen et al. run named in `Cohen reference` divided by this run's median: the Cohen run on the same model "
    "and σ, else on the same backbone at that σ; for a deterministic run (or a σ without one) the strongest "
    "(largest ACR) Cohen run "
    "on its model, else its backbone (— : a Cohen run itself, or no Cohen run on that backbone). Intervals, n "
    "and the device: `speedup.md`.\n\n"
)


def summary_markdown(summary: pd.DataFrame) -> str:
    """Markdown view of :func:`~bench.report.metrics.summarize` output (numbers formatted for reading).

    A short legend, then one right-aligned table row per run; ends with a newline.
    """
    acc_cols = [c for c in summary.columns if c.startswith("cert_acc@") and float(c.split("@", 1)[1]) > 0]
    view = pd.DataFrame(
        {
            "method": summary["method"].astype(str),
            "model": summary["model"].astype(str),
            "σ": summary["sigma"].map(fmt_sigma),
            "n": summary["examples"].map(lambda v: f"{int(v)}"),
            "clean": summary["clean_acc"].map(fmt_pct),
            **{("acc@" + fmt_radius(float(c.split("@", 1)[1]))): summary[c].map(fmt_pct) for c in acc_cols},
            "ACR": summary["acr"].map(fmt_acr),
            "abstain": summary["abstention_rate"].map(fmt_pct),
            "s/img (median)": summary["median_seconds"].map(fmt_seconds),
            "s/img (p25–p75)": [
                f"{fmt_seconds(a)} – {fmt_seconds(b)}"
                for a, b in zip(summary["p25_seconds"], summary["p75_seconds"], strict=True)
            ],
            "samples": summary["samples"].map(lambda v: f"{int(v):,}" if int(v) else "0 (det.)"),
            "speedup vs Cohen": summary["speedup_vs_cohen"].map(fmt_speedup),
            "Cohen reference": summary["speedup_reference"].fillna("").map(lambda v: str(v) or "—"),
        }
    )
    right = [c for c in view.columns if c not in ("method", "model", "Cohen reference")]
    return _SUMMARY_LEGEND + frame_markdown(view, right) + "\n"


def write_summary(
    summary: pd.DataFrame,
    out_dir: str | Path,
    curves: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Write ``summary.csv`` and ``summary.md`` (and ``certified_accuracy.csv``).

    Parameters
    ----------
    summary:
        Output of :func:`~bench.report.metrics.summarize`.  ``summary.csv`` holds it verbatim
        (fractions, seconds, raw speed-ups); ``summary.md`` is a readable
        markdown table (percentages with one decimal, durations as
        µs/ms/s/min, speed-ups like ``1234x``) preceded by a short legend.
    out_dir:
        Directory (created if needed).
    curves:
        Optional long-format certified-accuracy grid (output of
        :func:`~bench.report.metrics.certified_accuracy`), written as ``certified_accuracy.csv``
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
    paths["summary_md"].write_text(summary_markdown(summary), encoding="utf-8")
    if curves is not None:
        paths["certified_accuracy_csv"] = out_dir / "certified_accuracy.csv"
        curves[[*RUN_KEYS, "radius", "certified_accuracy"]].to_csv(paths["certified_accuracy_csv"], index=False)
    return paths


# ---------------------------------------------------------------------------
# speedup.md
# ---------------------------------------------------------------------------


def speedup_markdown(summary: pd.DataFrame, device: str | None = None, warnings: Sequence[str] = ()) -> str:
    """``speedup.md``: every run with a Cohen et al. reference, its speed-up, 95 % interval, n and the device.

    ``summary``: :func:`~bench.report.metrics.summarize` rows (``speedup_vs_cohen``, ``speedup_low``,
    ``speedup_high``, ``speedup_reference``).  ``warnings``: the run's noisy-timing warnings
    (``manifest.json``'s ``timing_warnings``), listed under the table; with any, the text says the table
    replaces the figure.  Ends with a newline.
    """
    s = summary[summary["speedup_reference"].fillna("").astype(str) != ""]
    ref_rows = {reference_label(r.method, r.model, r.sigma): r for r in summary.itertuples(index=False)}
    rows = []
    for r in s.itertuples(index=False):
        ref = ref_rows.get(str(r.speedup_reference))
        rows.append([r.method, r.model, fmt_sigma(r.sigma), str(r.speedup_reference), f"{int(r.examples)}",
                     fmt_seconds(r.median_seconds), "—" if ref is None else fmt_seconds(ref.median_seconds),
                     fmt_speedup(r.speedup_vs_cohen),
                     f"{fmt_speedup(r.speedup_low)} – {fmt_speedup(r.speedup_high)}"])
    cols = ["method", "model", "σ", "Cohen reference", "n", "s/img", "reference s/img", "speed-up", "95% interval"]
    text = ["# Speed-up over Cohen et al.", "",
            "Median seconds per image of the reference run divided by the run's (`n`: images of the run). "
            "Reference: the Cohen et al. run on the same model and σ, else on the same backbone at that σ; for a "
            "deterministic run (or a σ without one) the strongest (largest ACR) Cohen run on its model, else its "
            "backbone. Interval: "
            "95% percentile bootstrap over the images of both runs (image-to-image spread of the timings, not "
            "machine load)." + (f" Device: {device}." if device else ""), ""]
    text.append(markdown_table(cols, rows, cols[4:], pad=True) if rows else "No run has a Cohen et al. reference.")
    if warnings:
        text += ["", "The machine was not quiet while these were timed, so the speed-ups are given as this table "
                 "and not drawn (`speedup.png` is not written); re-run on an idle machine before quoting them:", ""]
        text += [f"- {w}" for w in warnings]
    return "\n".join(text) + "\n"
