"""Reporting for certified-robustness runs (FaRS vs Cohen et al.'s randomized smoothing).

The certification harness writes one tab-separated row per (method run,
example) with the columns in :data:`REQUIRED_COLUMNS`.  The flow is::

    results TSV --(results.read_results)--> typed frame --(metrics)--> numbers
                --> tables: summary.csv / summary.md   and   plots: PNG figures

* :mod:`.results` -- read and validate the per-example TSV;
* :mod:`.metrics` -- certified accuracy, ACR, abstention, timing, speed-ups
  (reads no file, draws nothing);
* :mod:`.tables` -- the markdown-table writer, number formatters, summary files;
* :mod:`.paper_metrics` -- Clopper-Pearson intervals, ACR standard errors, the envelope over
  sigma, the Monte Carlo cut-off, the time budget, PGD accuracy (reads no file, draws nothing);
* :mod:`.plots` -- speed-up and scaling figures and the style all figures share (method colours,
  widths: one column or the full width); :mod:`.figures` -- certified accuracy (one panel per model,
  or per model and sigma) and the time-budget figure (matplotlib, Agg backend);
* :mod:`.paper_tables` -- ``table_certified``, ``table1``, ``table2`` in Markdown and LaTeX (booktabs);
* :mod:`.cohen` -- each run as a file in Cohen et al.'s layout (their ``analyze.py`` reads it);
  :func:`.results.import_cohen` reads such files (and Cohen's own) back as runs;
* :mod:`.write` -- :func:`write_reports`; ``__main__`` is its command line.

:func:`write_reports` runs it all and writes ``summary.csv`` / ``summary.md`` (one row
per run), ``certified_accuracy.csv`` (fine radius grid, long format),
``certified_accuracy.png`` / ``.pdf``, ``time_budget.png`` / ``.pdf``, ``speedup.md`` and
``speedup.png`` / ``.pdf`` (a table only when the run recorded noisy timings),
the tables ``table_certified``, ``table1``, ``table2`` (``.md``, ``.tex``), ``cohen/*.tsv`` and,
given scaling data, ``scaling.png`` / ``.pdf``.

Conventions (runs, backbone families, radii, abstentions) are documented in
:mod:`bench.report.metrics`.

Command line (``bench/report/__main__.py``)::

    python -m bench.report RUN_DIR            # reads RUN_DIR/certify.tsv (and manifest.json)
    python -m bench.report RUN_DIR --methods fars-mc cohen --sigma 0.25 --format pdf svg
"""

from __future__ import annotations

from .cohen_export import export_cohen
from .figures import certified_panels, plot_certified_accuracy, plot_certified_panels, plot_time_budget
from .metrics import PAPER_RADII, RUN_KEYS, backbone_family, certified_accuracy, default_grid, summarize
from .paper_metrics import (
    TABLE_EPS,
    acr_with_se,
    certified_accuracy_ci,
    clopper_pearson,
    envelope,
    mc_cutoff,
    pgd_accuracy,
    time_budget,
)
from .paper_tables import write_table1, write_table2, write_table_certified
from .plots import plot_scaling, plot_speedup
from .read import COHEN_COLUMNS, REQUIRED_COLUMNS, import_cohen, read_results
from .tables import fmt_seconds, markdown_table, write_summary
from .write import select_runs, write_reports

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
    "COHEN_COLUMNS",
    "TABLE_EPS",
    "import_cohen",
    "export_cohen",
    "clopper_pearson",
    "certified_accuracy_ci",
    "acr_with_se",
    "envelope",
    "mc_cutoff",
    "pgd_accuracy",
    "time_budget",
    "certified_panels",
    "plot_certified_panels",
    "plot_time_budget",
    "write_table_certified",
    "write_table1",
    "write_table2",
    "select_runs",
]
