"""Reporting for certified-robustness runs (FaRS vs Cohen et al.'s randomized smoothing).

The certification harness writes one tab-separated row per (method run,
example) with the columns in :data:`REQUIRED_COLUMNS`.  The flow is::

    results TSV --(results.read_results)--> typed frame --(metrics)--> numbers
                --> tables: summary.csv / summary.md   and   plots: PNG figures

* :mod:`.results` -- read and validate the per-example TSV;
* :mod:`.metrics` -- certified accuracy, ACR, abstention, timing, speed-ups
  (reads no file, draws nothing);
* :mod:`.tables` -- the markdown-table writer, number formatters, summary files;
* :mod:`.plots` -- every figure (matplotlib, Agg backend), from computed metrics;
* :mod:`.write` -- :func:`write_reports`; ``__main__`` is its command line.

:func:`write_reports` runs it all and writes ``summary.csv`` / ``summary.md`` (one row
per run), ``certified_accuracy.csv`` (fine radius grid, long format),
``certified_accuracy.png``, ``speedup.png`` and, given scaling data, ``scaling.png``.

Conventions (runs, backbone families, radii, abstentions) are documented in
:mod:`bench.report.metrics`.

Command line (``bench/report/__main__.py``)::

    python -m bench.report RUN_DIR            # reads RUN_DIR/certify.tsv
"""

from __future__ import annotations

from .metrics import PAPER_RADII, RUN_KEYS, backbone_family, certified_accuracy, default_grid, summarize
from .plots import plot_certified_accuracy, plot_scaling, plot_speedup
from .results import REQUIRED_COLUMNS, read_results
from .tables import fmt_seconds, markdown_table, write_summary
from .write import write_reports

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
    "markdown_table",
    "fmt_seconds",
]
