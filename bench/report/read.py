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

from ..common.methods import METHODS, MONTE_CARLO_METHODS

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


#: The harness's methods and those that sample (a run of theirs has a noise level), from :mod:`bench.common.methods`.
KNOWN_METHODS: tuple[str, ...] = METHODS
MONTE_CARLO: tuple[str, ...] = MONTE_CARLO_METHODS

#: Cohen et al.'s columns (``code/certify.py`` of locuslab/smoothing), the first six of ours.
COHEN_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS[:6]

#: Strings that mean "no noise level" (a deterministic run) in the ``sigma`` column: the marker the
#: harness writes (``-``), the blank of older files and ``nan``.
NO_SIGMA_MARKERS: tuple[str, ...] = ("-", "", "nan", "NaN", "none", "None")

#: File names of :func:`bench.report.cohen_export.export_cohen`: ``<method>_<model>_sigma<S>[.tsv]``
#: (``S`` is ``-`` for a deterministic run); also matches Cohen's own ``sigma_0.25``-style names.
_RUN_NAME_RE = re.compile(r"^(?:(?P<method>[^_]+)_(?P<model>.+)_)?sigma_?(?P<sigma>-|nan|[0-9]*\.?[0-9]+)$")


def parse_sigma(value: object) -> float:
    """A ``sigma`` cell as a float: NaN for the no-noise markers (:data:`NO_SIGMA_MARKERS`) and missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    text = str(value).strip()
    return math.nan if text in NO_SIGMA_MARKERS else float(text)


def parse_run_name(path: str | Path) -> dict[str, str | float]:
    """Method, model and sigma encoded in a result file's name (empty dict if the name encodes none).

    ``fars-mc_sll+ce_sigma0.25.tsv`` -> ``{'method': 'fars-mc', 'model': 'sll+ce', 'sigma': 0.25}``;
    ``fars-closed_sll+ce_sigma-.tsv`` -> sigma NaN; Cohen's ``sigma_0.50`` -> ``{'sigma': 0.5}``.
    """
    name = Path(path).name
    stem = name[: -len(".tsv")] if name.endswith(".tsv") else name
    m = _RUN_NAME_RE.match(stem)
    if not m:
        return {}
    out: dict[str, str | float] = {"sigma": parse_sigma(m.group("sigma"))}
    if m.group("method"):
        out["method"], out["model"] = m.group("method"), m.group("model")
    return out


def read_results(
    path: str | Path,
    method: str | None = None,
    model: str | None = None,
    sigma: float | None = None,
) -> pd.DataFrame:
    """Read a per-example certification TSV written by the harness, or one of Cohen et al.'s result files.

    Parameters
    ----------
    path:
        Tab-separated file with a header row containing (at least) the columns
        in :data:`REQUIRED_COLUMNS`.  Extra columns are kept.  A file with only
        Cohen et al.'s six columns (:data:`COHEN_COLUMNS`) is read with
        :func:`import_cohen` (``method``, ``model`` and ``sigma`` are passed on).
    method, model, sigma:
        Only for a Cohen-format file: the run it holds (see :func:`import_cohen`).

    Returns
    -------
    pandas.DataFrame
        Typed frame: ``idx, label, predict, correct, samples`` as integers,
        ``radius, sigma, seconds`` as floats (``'inf'`` parses to ``np.inf``;
        ``-`` (the harness's marker), empty and ``nan`` sigma to NaN), ``method, model,
        time`` as strings.  When ``seconds`` is missing for a row it is recovered from ``time``.

    Raises
    ------
    ValueError
        If required columns are missing (the message lists them), or values
        cannot be converted to the expected types.
    """
    path = Path(path)
    df = pd.read_csv(path, sep="\t", dtype={"method": str, "model": str, "time": str, "sigma": str},
                     keep_default_na=True)
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing and all(c in df.columns for c in COHEN_COLUMNS):
        return import_cohen(path, method=method or "cohen", model=model, sigma=sigma)
    if missing:
        raise ValueError(
            f"{path}: missing required column(s) {missing}; expected tab-separated columns "
            f"{list(REQUIRED_COLUMNS)}, found {list(df.columns)}"
        )
    return _coerce(df, source=str(path), first_line=2)


def import_cohen(
    path: str | Path,
    method: str = "cohen",
    model: str | None = None,
    sigma: float | None = None,
    samples: int = 0,
) -> pd.DataFrame:
    """Read one of Cohen et al.'s result files (one run) as a typed results frame.

    The file is what ``code/certify.py`` of locuslab/smoothing writes: tab-separated columns
    ``idx label predict radius correct time`` with ``time`` as ``str(datetime.timedelta)``
    (``H:MM:SS.ffffff``); ``predict == -1`` is an abstention.  Cohen's file has no run columns, so:

    * ``method``, ``model`` and ``sigma`` come from the caller; when not given (``method`` left at
      its default ``'cohen'``, ``model`` / ``sigma`` None) they are taken from the file name
      (:func:`parse_run_name`: our export names ``<method>_<model>_sigma<S>.tsv`` or Cohen's
      ``sigma_0.25``); a model still unknown is the name of the file's folder (Cohen's
      ``.../noise_0.25/test/sigma_0.25`` -> ``'test'`` is skipped in favour of ``'noise_0.25'``);
      a sigma still unknown is NaN (deterministic);
    * ``samples`` (evaluations per input, not recorded by Cohen) defaults to 0, which the summary
      shows as deterministic: pass ``n0 + n`` when known;
    * ``seconds`` is parsed from ``time``.

    Columns beyond Cohen's six (e.g. a file we exported and then extended) are kept.

    Raises ``ValueError`` (naming the file, the line and the value) for what CERTIFY cannot have written:
    a sigma that is not finite and > 0, fractional or negative ``idx``/``label``, ``correct`` outside
    {0, 1} or disagreeing with ``predict == label``, a negative or NaN radius (see :func:`read_results`);
    Monte Carlo radii above the cut-off are :func:`check_monte_carlo_radii`'s to refuse.
    """
    path = Path(path)
    df = pd.read_csv(path, sep="\t", dtype={"time": str})
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in COHEN_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing Cohen et al. column(s) {missing}; expected {list(COHEN_COLUMNS)}")
    named = parse_run_name(path)
    run_model = model if model is not None else str(named.get("model") or _folder_model(path))
    run_sigma = sigma if sigma is not None else named.get("sigma", math.nan)
    run_method = method if method != "cohen" or "method" not in named else str(named["method"])
    if run_method not in KNOWN_METHODS:   # a file name that only looks like our export: it is Cohen's method
        run_method, run_model = method, str(named.get("model") and f"{named['method']}_{named['model']}"
                                            or run_model)
    if run_method in MONTE_CARLO and math.isnan(float(run_sigma)):
        raise ValueError(f"{path}: no sigma in the file name (Cohen writes .../sigma_0.25, our export "
                         "..._sigma0.25.tsv); pass it explicitly")
    if not math.isnan(float(run_sigma)) and not (math.isfinite(float(run_sigma)) and float(run_sigma) > 0):
        raise ValueError(f"{path}: sigma {run_sigma} (from {'the file name' if sigma is None else 'the caller'}) "
                         "is not a noise level: it must be finite and > 0")
    out = df.assign(method=run_method, model=run_model, sigma=float(run_sigma), samples=int(samples), seconds=math.nan)
    return _coerce(out, source=str(path), first_line=2)


def _folder_model(path: Path) -> str:
    """The nearest folder name of ``path`` that is not a data split (``test``/``train``/``val``)."""
    for folder in path.resolve().parents:
        if folder.name and folder.name not in ("test", "train", "val", "valid"):
            return folder.name
    return "unknown"


def as_results(df: pd.DataFrame) -> pd.DataFrame:
    """Accept a raw or already-typed results frame and return a typed copy (dtypes as :func:`read_results`).

    Raises ``ValueError`` like :func:`read_results` (the message names the source as "results DataFrame").
    """
    return _coerce(df, source="results DataFrame")


#: the smallest value of each integer column (``predict`` is -1 for an abstention)
INTEGER_MINIMUM: dict[str, int] = {"idx": 0, "label": 0, "predict": -1, "correct": 0, "samples": 0}


def _where(source: str, position: int, first_line: int | None) -> str:
    """``SOURCE line N`` for a frame read from a file (its row ``position``), else ``SOURCE row N``."""
    return f"{source} line {position + first_line}" if first_line is not None else f"{source} row {position}"


def _coerce(df: pd.DataFrame, source: str = "results", first_line: int | None = None) -> pd.DataFrame:
    """Validate column presence and convert columns to their canonical dtypes.

    ``first_line``: the file line of the first row (2 under a header), so that errors name lines.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing required column(s) {missing}; expected {list(REQUIRED_COLUMNS)}")
    out = df.reset_index(drop=True)  # a copy; tolerate duplicated indexes (e.g. from pd.concat)
    try:
        out["sigma"] = out["sigma"].map(parse_sigma).astype(float)
    except ValueError as exc:
        raise ValueError(f"{source}: column 'sigma' has non-numeric values ({exc}); "
                         f"use one of {list(NO_SIGMA_MARKERS[:3])} for a run without noise") from None
    for col in ("radius", "seconds"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    for col in ("idx", "label", "predict", "correct", "samples"):
        num = pd.to_numeric(out[col], errors="coerce")
        if col == "samples":
            num = num.fillna(0)
        if num.isna().any():
            bad = out.loc[num.isna(), col].head(3).tolist()
            raise ValueError(f"{source}: column {col!r} has non-integer values, e.g. {bad}")
        values = num.to_numpy()
        # a fractional value would be truncated (a label 2.7 read as 2 and counted correct); beyond int64 wraps
        wrong = ((values != np.floor(values)) | (values < INTEGER_MINIMUM[col]) | (values > 2 ** 63 - 1)
                 | ((values > 1) if col == "correct" else False))
        if wrong.any():
            first = int(np.flatnonzero(wrong)[0])
            allowed = "0 or 1" if col == "correct" else f"an integer >= {INTEGER_MINIMUM[col]}"
            raise ValueError(f"{_where(source, first, first_line)}: column {col!r} is {float(values[first]):g}, "
                             f"not {allowed}: not a certification result")
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
    _check_certificates(out, source, first_line)
    return out


def _check_certificates(out: pd.DataFrame, source: str, first_line: int | None = None) -> None:
    """Refuse rows whose numbers cannot be a certificate, before any metric trusts them.

    Every metric counts an example as certified at r when ``correct`` and ``radius >= r``, so
    ``correct`` must be what it says (``predict == label``, an abstention never correct) and a radius
    must be >= 0 (or +inf), never NaN; an abstention's radius is 0 (Cohen's ``certify.py`` writes 0.0).
    A file that breaks these was not written by CERTIFY, and its rows would count as certified.
    """
    expected = (out["predict"] == out["label"]) & (out["predict"] >= 0)
    wrong = np.flatnonzero((out["correct"].astype(bool) != expected).to_numpy())
    if len(wrong):
        rows = out.iloc[wrong[:3]][["idx", "label", "predict", "correct"]].to_dict("records")
        raise ValueError(f"{_where(source, int(wrong[0]), first_line)}: column 'correct' disagrees with "
                         f"predict == label in {len(wrong)} row(s), e.g. {rows}: not a certification result")
    radius = out["radius"].to_numpy(float)
    bad = (radius < 0) | np.isnan(radius) | ((out["predict"].to_numpy() < 0) & (radius != 0))
    if bad.any():
        rows = out.loc[bad, ["idx", "predict", "radius"]].head(3).to_dict("records")
        raise ValueError(f"{_where(source, int(np.flatnonzero(bad)[0]), first_line)}: {int(bad.sum())} row(s) "
                         f"with a negative or NaN radius, or an abstention with a radius, e.g. {rows}: not a "
                         "certification result")
    sigma = out["sigma"].to_numpy(float)
    noise = ~((sigma > 0) & np.isfinite(sigma)) & out["method"].isin(MONTE_CARLO).to_numpy()
    if noise.any():
        first = int(np.flatnonzero(noise)[0])
        raise ValueError(f"{_where(source, first, first_line)}: a {out['method'].iloc[first]} row with sigma "
                         f"{sigma[first]}: a Monte Carlo run's noise level is finite and > 0")


def check_unique_rows(df: pd.DataFrame, source: str) -> None:
    """Refuse two rows of one run for the same example (an import that repeats a run counts its images
    twice, and every interval would be too narrow)."""
    keys = ["method", "model", "sigma", "idx"]
    frame = df[keys].assign(sigma=df["sigma"].fillna(-1.0))
    dup = frame.duplicated(keep=False)
    if dup.any():
        runs = sorted({f"{m} {mo} {s:g}" if s >= 0 else f"{m} {mo} -"
                       for m, mo, s, _ in frame[dup].itertuples(index=False)})
        raise ValueError(f"{source}: the same example appears twice in run(s) {', '.join(runs[:3])}: an imported "
                         "file repeats a run (give it another model name) or the results file is corrupt")
