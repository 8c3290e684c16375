"""Cohen et al.'s result-file layout: export every run so that their ``code/analyze.py`` reads it unchanged.

Cohen et al.'s ``code/certify.py`` (locuslab/smoothing) writes one file per (model, sigma) with the header
``idx\\tlabel\\tpredict\\tradius\\tcorrect\\ttime`` and one row per image, ``time`` being
``str(datetime.timedelta(seconds=...))`` and ``predict`` ``-1`` for an abstention; ``analyze.py`` reads
it with ``pd.read_csv(path, delimiter="\\t")`` and computes ``(df["correct"] & (df["radius"] >= r)).mean()``.

:func:`export_cohen` writes each of our runs in that layout (``cohen/<method>_<model>_sigma<S>.tsv``,
``S`` = ``-`` for a deterministic run).  Radii are written with full precision (``repr`` of the float
read from ``certify.tsv``, ``inf`` for an infinite radius) rather than Cohen's ``{:.3}``, so the file
gives exactly the certified accuracies of ``summary.csv``.  Reading such a file back (or one of Cohen's
own) is :func:`bench.report.read.import_cohen`.
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path

import pandas as pd

from .metrics import run_groups
from .read import COHEN_COLUMNS, _timedelta_seconds, as_results

#: Folder (under the report folder) of the exported files.
COHEN_DIR = "cohen"


def cohen_file_name(method: str, model: str, sigma: float) -> str:
    """``<method>_<model>_sigma<S>.tsv`` (``S`` as ``format(sigma, 'g')``, ``-`` for no sigma); '/' -> '-'."""
    s = "-" if sigma is None or pd.isna(sigma) else f"{float(sigma):g}"
    return f"{method}_{model}_sigma{s}.tsv".replace("/", "-").replace("\\", "-")


def _time_text(time: str, seconds: float) -> str:
    """``str(datetime.timedelta)`` of the row: its ``time`` cell when that parses, else from ``seconds``."""
    if not math.isnan(_timedelta_seconds(time)):
        return str(time).strip()
    return str(_dt.timedelta(seconds=0.0 if math.isnan(seconds) else float(seconds)))


def cohen_frame(run: pd.DataFrame) -> pd.DataFrame:
    """One run's rows in Cohen et al.'s six columns and formats (all cells as text)."""
    return pd.DataFrame(
        {
            "idx": run["idx"].astype(int).astype(str),
            "label": run["label"].astype(int).astype(str),
            "predict": run["predict"].astype(int).astype(str),
            "radius": [repr(float(r)) for r in run["radius"]],
            "correct": run["correct"].astype(int).astype(str),
            "time": [_time_text(t, s) for t, s in zip(run["time"], run["seconds"], strict=True)],
        },
        columns=list(COHEN_COLUMNS),
    )


def export_cohen(df: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Write each run of ``df`` as ``out_dir/<method>_<model>_sigma<S>.tsv`` in Cohen et al.'s layout.

    Returns ``{run key 'method|model|S': path}``.  The folder is created; existing files of the same
    names are replaced.
    """
    df = as_results(df)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for (method, model, sigma), g in run_groups(df):
        path = out / cohen_file_name(method, model, sigma)
        text = "\n".join("\t".join(row) for row in [list(COHEN_COLUMNS), *cohen_frame(g).itertuples(index=False)])
        path.write_text(text + "\n", encoding="utf-8")
        s = "-" if pd.isna(sigma) else f"{float(sigma):g}"
        paths[f"{method}|{model}|{s}"] = path
    return paths
