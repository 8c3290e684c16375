"""Orchestration: read the results TSV, compute the metrics, write the tables and figures."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import PAPER_RADII, certified_accuracy, default_grid, summarize
from .plots import plot_certified_accuracy, plot_scaling, plot_speedup
from .results import read_results
from .tables import write_summary


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
    ``grid``, default :func:`~bench.report.metrics.default_grid`), ``certified_accuracy.png`` and
    ``speedup.png``; plus ``scaling.png`` when ``scaling`` data are given.
    ``empirical`` is forwarded to :func:`~bench.report.plots.plot_certified_accuracy`.

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
