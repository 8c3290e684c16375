"""Reading and validating the per-example certification TSV.

The certification harness writes one tab-separated row per (method run,
example) with the columns listed in :data:`REQUIRED_COLUMNS`.  This module
reads such a file (:func:`read_results`) or accepts an in-memory frame
(:func:`as_results`) and returns it with canonical dtypes; it computes and
draws nothing.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

#: Columns the harness writes, in order.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "idx",
    "label",
    "predict",
    "radius",
    "correct",
    "time",
    "method",
    "model",
    "sigma",
    "samples",
    "seconds",
)

_TD_RE = re.compile(
    r"^\s*(?:(?P<days>-?\d+)\s+days?,\s*)?(?P<h>\d+):(?P<m>\d{1,2}):(?P<s>\d{1,2}(?:\.\d*)?)\s*$"
)


def _timedelta_seconds(text: object) -> float:
    """Parse ``str(datetime.timedelta)`` (e.g. ``'0:00:01.234567'``) to seconds; NaN if unparsable."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return math.nan
    m = _TD_RE.match(str(text))
    if not m:
        return math.nan
    days = int(m.group("days") or 0)
    return days * 86400.0 + int(m.group("h")) * 3600.0 + int(m.group("m")) * 60.0 + float(m.group("s"))


def read_results(path: str | Path) -> pd.DataFrame:
    """Read a per-example certification TSV written by the harness.

    Parameters
    ----------
    path:
        Tab-separated file with a header row containing (at least) the columns
        in :data:`REQUIRED_COLUMNS`.  Extra columns are kept.

    Returns
    -------
    pandas.DataFrame
        Typed frame: ``idx, label, predict, correct, samples`` as integers,
        ``radius, sigma, seconds`` as floats (``'inf'`` parses to ``np.inf``,
        empty / ``nan`` sigma to NaN), ``method, model, time`` as strings.
        When ``seconds`` is missing for a row it is recovered from ``time``.

    Raises
    ------
    ValueError
        If required columns are missing (the message lists them), or values
        cannot be converted to the expected types.
    """
    path = Path(path)
    df = pd.read_csv(path, sep="\t", dtype={"method": str, "model": str, "time": str}, keep_default_na=True)
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: missing required column(s) {missing}; expected tab-separated columns "
            f"{list(REQUIRED_COLUMNS)}, found {list(df.columns)}"
        )
    return _coerce(df, source=str(path))


def as_results(df: pd.DataFrame) -> pd.DataFrame:
    """Accept a raw or already-typed results frame and return a typed copy (dtypes as :func:`read_results`).

    Raises ``ValueError`` like :func:`read_results` (the message names the source as "results DataFrame").
    """
    return _coerce(df, source="results DataFrame")


def _coerce(df: pd.DataFrame, source: str = "results") -> pd.DataFrame:
    """Validate column presence and convert columns to their canonical dtypes."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing required column(s) {missing}; expected {list(REQUIRED_COLUMNS)}")
    out = df.reset_index(drop=True)  # a copy; tolerate duplicated indexes (e.g. from pd.concat)
    for col in ("radius", "sigma", "seconds"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    for col in ("idx", "label", "predict", "correct", "samples"):
        num = pd.to_numeric(out[col], errors="coerce")
        if col == "samples":
            num = num.fillna(0)
        if num.isna().any():
            bad = out.loc[num.isna(), col].head(3).tolist()
            raise ValueError(f"{source}: column {col!r} has non-integer values, e.g. {bad}")
        out[col] = num.astype(np.int64)
    for col in ("method", "model"):
        if out[col].isna().any():
            raise ValueError(f"{source}: column {col!r} has empty values")
        out[col] = out[col].astype(str).str.strip()
    out["time"] = out["time"].astype(str)
    if out["radius"].isna().any():
        raise ValueError(f"{source}: column 'radius' has non-numeric values")
    no_secs = out["seconds"].isna()
    if no_secs.any():
        out.loc[no_secs, "seconds"] = out.loc[no_secs, "time"].map(_timedelta_seconds)
    return out
