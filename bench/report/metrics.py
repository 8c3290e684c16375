"""The numbers of a certification run: certified accuracy, ACR, abstention, timing and speed-ups.

Everything here takes a per-example results frame (see
:func:`bench.report.read.read_results`) and returns numbers or frames; it
reads no file and draws nothing (the split Cohen et al.'s ``analyze.py`` makes
between ``ApproximateAccuracy`` and its plots).

Conventions
-----------
* A *run* (one curve) is identified by ``(method, model, sigma)``
  (:data:`RUN_KEYS`); ``sigma`` is NaN for deterministic methods and NaN
  sigmas are grouped together.
* The *backbone family* of a model is the part before ``'+'`` (``sll+ce`` ->
  ``sll``), or the whole name when there is no ``'+'`` (``cnn-noise0.25``).
* Radii are l2 radii in pixel space with pixels on the ``[0, 1]`` scale.
* An example is certified at radius ``r`` iff ``correct == 1`` and
  ``radius >= r``; abstentions (``predict == -1``) are never correct, so they
  count as wrong at every radius.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

from ..common.methods import DETERMINISTIC_METHODS as _DETERMINISTIC
from .read import as_results

if TYPE_CHECKING:
    from pandas.api.typing import DataFrameGroupBy

#: Radii reported in the paper's tables (l2, [0, 1] pixel scale).
PAPER_RADII: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)

#: Columns identifying one run / curve.
RUN_KEYS: tuple[str, str, str] = ("method", "model", "sigma")

#: Methods that need no sampling (their cost does not depend on n).
DETERMINISTIC_METHODS: frozenset[str] = frozenset(_DETERMINISTIC)

#: Method whose timing is the speed-up reference.
REFERENCE_METHOD = "cohen"


# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------


def backbone_family(model: str) -> str:
    """Return the backbone family of a model name.

    ``'sll+ce'`` -> ``'sll'``; names without ``'+'`` are their own family
    (``'cnn-noise0.25'`` -> ``'cnn-noise0.25'``).
    """
    return str(model).split("+", 1)[0]


def run_groups(df: pd.DataFrame) -> DataFrameGroupBy:
    """Group rows by run key (:data:`RUN_KEYS`), keeping NaN sigma as its own group, in order of appearance."""
    return df.groupby(list(RUN_KEYS), dropna=False, sort=False)


def sort_runs(frame: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Sort run rows by backbone family, method, model, sigma (NaN sigma last), then ``extra``."""
    tmp = frame.assign(_family=frame["model"].map(backbone_family))
    keys = ["_family", "method", "model", "sigma", *extra]
    tmp = tmp.sort_values(keys, na_position="last", kind="mergesort")
    return tmp.drop(columns="_family").reset_index(drop=True)


def same_sigma(a: float, b: float) -> bool:
    """Whether two run sigmas are the same, NaN (deterministic run) matching NaN."""
    return bool(a == b or (pd.isna(a) and pd.isna(b)))


# ---------------------------------------------------------------------------
# Certified accuracy
# ---------------------------------------------------------------------------


def _radius_label(r: float) -> str:
    """Column-name form of a radius: 0 -> '0', 0.05 -> '0.05', 36/255 -> '0.141176470588' (12 significant
    digits, so that :func:`bench.common.units.fmt_radius` still recognises the fraction)."""
    return f"{float(r):.12g}"


def _cert_acc_values(radius: np.ndarray, correct: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Fraction of examples with correct == 1 and radius >= r, for each r in ``radii``."""
    n = len(radius)
    if n == 0:
        return np.full(len(radii), np.nan)
    ok = np.sort(radius[correct == 1])
    # number of certified radii >= r  ==  len(ok) - (number < r)
    counts = len(ok) - np.searchsorted(ok, radii, side="left")
    return counts / n


def certified_accuracy(df: pd.DataFrame, radii: Iterable[float]) -> pd.DataFrame:
    """Certified accuracy of every run at the given radii.

    For run ``(method, model, sigma)`` and radius ``r`` the certified accuracy is
    the mean over that run's examples of ``correct == 1 and radius >= r``.
    Abstentions (``predict == -1``, ``correct == 0``) count as wrong, and an
    infinite radius is certified at every ``r``.  The result is non-increasing
    in ``r`` by construction.

    Returns
    -------
    pandas.DataFrame
        Long format with columns ``method, model, sigma, radius,
        certified_accuracy`` (a fraction in [0, 1]), sorted by backbone family,
        method, model, sigma and radius.
    """
    df = as_results(df)
    r = np.asarray(sorted({float(x) for x in radii}), dtype=float)
    rows = []
    for (method, model, sigma), g in run_groups(df):
        acc = _cert_acc_values(g["radius"].to_numpy(float), g["correct"].to_numpy(), r)
        for rad, a in zip(r, acc, strict=True):
            rows.append((method, model, sigma, rad, a))
    out = pd.DataFrame(rows, columns=[*RUN_KEYS, "radius", "certified_accuracy"])
    out["sigma"] = out["sigma"].astype(float)
    return sort_runs(out, extra=["radius"])


def certified_accuracy_steps(radius: np.ndarray, correct: np.ndarray, xmax: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact certified-accuracy step curve of one run, for drawing with ``where='post'``.

    Parameters
    ----------
    radius, correct:
        The run's per-example certified radii (l2, [0, 1] pixel scale) and
        ``correct`` flags (1 = correct), same length.
    xmax:
        Right end of the curve (radius); infinite radii keep the curve flat up to it.

    Returns
    -------
    (xs, ys):
        ``xs`` = 0, every distinct positive finite radius of a correct example
        (ascending), ``xmax``; ``ys`` (same length, a fraction in [0, 1]) holds
        on ``[xs[i], xs[i+1])`` the fraction certified strictly beyond ``xs[i]``
        (at 0: the fraction certified at 0); its last value repeats the previous one.
    """
    ok = np.sort(radius[(correct == 1) & np.isfinite(radius)])
    steps = np.unique(ok[ok > 0])
    xs = np.concatenate([[0.0], steps, [xmax]])
    # value on (x_i, x_{i+1}] is the fraction certified strictly beyond x_i
    ys = np.concatenate(
        [
            _cert_acc_values(radius, correct, np.array([0.0])),
            _cert_acc_values(radius, correct, np.nextafter(steps, np.inf)),
        ]
    )
    return xs, np.concatenate([ys, ys[-1:]])


def default_grid(df: pd.DataFrame, max_points: int = 400) -> np.ndarray:
    """A fine, 'round-number' radius grid covering every finite certified radius.

    Starts at 0, uses the smallest step in (0.005, 0.01, 0.02, 0.05, 0.1, ...)
    that keeps at most ``max_points`` points, ends at or just past
    ``max(0.3, largest finite radius)``, and always contains :data:`PAPER_RADII`.
    """
    rad = pd.to_numeric(df["radius"], errors="coerce").to_numpy(float)
    finite = rad[np.isfinite(rad)]
    upper = max(PAPER_RADII[-1], float(finite.max()) if finite.size else 0.0)
    j = 2  # step = (1, 2, 5)[j % 3] * 10**(j // 3 - 3): 0.005, 0.01, 0.02, 0.05, 0.1, ...
    step = 0.005
    while upper / step > max_points - 1:
        j += 1
        step = (1, 2, 5)[j % 3] * 10.0 ** (j // 3 - 3)
    n = int(math.ceil(upper / step - 1e-9))
    grid = np.round(np.arange(n + 1) * step, 6)
    return np.unique(np.concatenate([grid, np.asarray(PAPER_RADII, float)]))


# ---------------------------------------------------------------------------
# Per-run numbers: ACR, timing, speed-up
# ---------------------------------------------------------------------------


def average_certified_radius(radius: np.ndarray, correct: np.ndarray) -> tuple[float, int]:
    """ACR of one run and its number of correct examples with an infinite radius.

    ACR = ``mean(radius if correct == 1 else 0)``; it is ``inf`` when a correctly
    classified example has ``radius == inf`` (not silently clipped).  Infinite
    radii of wrong predictions contribute 0.  Returns ``(acr, n_inf)``.
    """
    is_ok = correct == 1
    n_inf = int(np.sum(is_ok & np.isinf(radius) & (radius > 0)))
    acr = math.inf if n_inf else float(np.mean(np.where(is_ok, radius, 0.0)))
    return acr, n_inf


def seconds_quartiles(seconds: np.ndarray) -> tuple[float, float, float]:
    """``(median, p25, p75)`` of per-image wall-clock seconds, ignoring NaN; all NaN if no finite value."""
    if not np.isfinite(seconds).any():
        return math.nan, math.nan, math.nan
    return (
        float(np.nanmedian(seconds)),
        float(np.nanpercentile(seconds, 25)),
        float(np.nanpercentile(seconds, 75)),
    )


#: Coverage of the speed-up interval (a percentile bootstrap over the images of both runs).
SPEEDUP_CONFIDENCE = 0.95

#: Bootstrap resamples of the speed-up interval (seeded: the same data give the same interval).
SPEEDUP_RESAMPLES = 2000


def cohen_reference(runs: pd.DataFrame, i: int) -> int | None:
    """Row of ``runs`` (a :func:`summarize`-like frame: ``method, model, sigma, family, acr``) holding the
    Cohen et al. run that row ``i``'s speed-up is measured against; None for a Cohen run or when none fits.

    * a run with a noise level sigma: the :data:`REFERENCE_METHOD` run on the same model at the same sigma,
      else on the same backbone family (:func:`backbone_family`) at the same sigma (the same network up
      to its head, the same n: e.g. ``fars-mc sll+margin`` at 0.25 against ``cohen sll+ce`` at 0.25);
    * a deterministic run (no sigma), or a run at a sigma no Cohen run has: the strongest Cohen run
      (largest ACR; the smaller sigma on a tie) on the same model, else on the same backbone family.

    The choice depends only on the runs of ``runs``: give it every run of the experiment, not a filtered
    subset, so that a report filter cannot change a reference.
    """
    row = runs.iloc[i]
    if row["method"] == REFERENCE_METHOD:
        return None
    cohen = runs[runs["method"] == REFERENCE_METHOD]
    pools = [cohen[cohen["model"] == row["model"]], cohen[cohen["family"] == row["family"]]]
    if not pd.isna(row["sigma"]):
        same = [p[np.isclose(p["sigma"].to_numpy(float), float(row["sigma"]), rtol=0, atol=1e-9)] for p in pools]
        pools = same + pools
    for pool in pools:
        if len(pool):
            best = pool.sort_values(["acr", "sigma"], ascending=[False, True], kind="mergesort")
            return int(runs.index.get_loc(best.index[0]))
    return None


def speedup_interval(reference: np.ndarray, seconds: np.ndarray,
                     confidence: float = SPEEDUP_CONFIDENCE) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``median(reference) / median(seconds)`` (per-image seconds of the
    reference run and of the run, resampled independently); ``(nan, nan)`` with fewer than 2 finite values
    on either side or a zero median.

    ``scipy.stats.bootstrap`` (two samples, ``paired=False``, ``method='percentile'``,
    :data:`SPEEDUP_RESAMPLES` resamples, seed 0).  It covers the image-to-image spread of the timings
    measured on this machine, not how loaded the machine was.
    """
    a, b = reference[np.isfinite(reference)], seconds[np.isfinite(seconds)]
    if len(a) < 2 or len(b) < 2 or np.median(b) <= 0:
        return math.nan, math.nan

    def ratio(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.median(x, axis=axis) / np.median(y, axis=axis)

    res = bootstrap((a, b), ratio, paired=False, vectorized=True, confidence_level=confidence,
                    n_resamples=SPEEDUP_RESAMPLES, method="percentile", rng=np.random.default_rng(0))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def reference_label(method: str, model: str, sigma: float) -> str:
    """A run named in text: ``'cohen sll+ce σ=0.25'`` (no sigma part for a deterministic run)."""
    return f"{method} {model}" + ("" if pd.isna(sigma) else f" σ={float(sigma):g}")


def speedup(reference: float, seconds: float) -> float:
    """``reference / seconds``: NaN when either is NaN, ``inf`` when ``seconds`` is 0."""
    if math.isnan(reference) or math.isnan(seconds):
        return math.nan
    if seconds == 0:
        return math.inf
    return reference / seconds


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def summarize(
    df: pd.DataFrame,
    radii: Sequence[float] = PAPER_RADII,
    grid: Iterable[float] | None = None,
) -> pd.DataFrame:
    """One summary row per run ``(method, model, sigma)``.

    Parameters
    ----------
    df:
        Per-example results (see :func:`~bench.report.read.read_results`).
    radii:
        Radii reported as ``cert_acc@R`` columns (default: the paper radii
        0, 0.05, 0.1, 0.2, 0.3).  Column names use ``format(r, 'g')``:
        ``cert_acc@0``, ``cert_acc@0.05``, ...
    grid:
        Optional extra radii (e.g. a fine grid); their ``cert_acc@R`` columns
        are added after the ``radii`` columns (duplicates are skipped).  Use
        :func:`certified_accuracy` for a long-format curve instead.

    Returns
    -------
    pandas.DataFrame
        Columns, in order:

        ``family, method, model, sigma`` -- run identity (``family`` is the
        backbone family, see :func:`backbone_family`);
        ``examples`` -- number of rows of the run;
        ``cert_acc@R`` -- certified accuracy (fraction) at each radius;
        ``acr`` -- average certified radius ``mean(radius if correct else 0)``.
        If any *correctly classified* example has ``radius == inf`` the ACR is
        reported as ``inf`` (an average including an infinite radius is
        infinite; it is not silently clipped).  ``inf_radius`` counts such
        examples so the cause is visible.  Infinite radii of wrong predictions
        contribute 0, like any wrong prediction;
        ``abstention_rate`` -- fraction with ``predict == -1``;
        ``clean_acc`` -- accuracy of the certified (smoothed) predictions,
        i.e. ``mean(correct)`` which equals ``cert_acc@0`` since radii are >= 0;
        ``median_seconds, p25_seconds, p75_seconds`` -- per-image wall-clock
        seconds (median and inter-quartile spread);
        ``samples`` -- evaluations per input (median over the run; 0 for
        deterministic methods);
        ``speedup_vs_cohen`` -- median seconds of the run's Cohen et al.
        reference (:func:`cohen_reference`) / ``median_seconds``; NaN for a
        Cohen run and when no reference fits, ``inf`` when this run's median is 0;
        ``speedup_low, speedup_high`` -- its 95 % bootstrap interval
        (:func:`speedup_interval`);
        ``speedup_reference`` -- the reference run (:func:`reference_label`), '' when none.

        Rows are sorted by family, method, model, sigma (NaN sigma last).
    """
    df = as_results(df)
    radii_arr, acc_cols = _summary_radii(radii, grid)
    rows, seconds = [], []
    for key, g in run_groups(df):
        _warn_duplicated_idx(key, g)
        rows.append(_run_summary(key, g, radii_arr, acc_cols))
        seconds.append(g["seconds"].to_numpy(float))
    out = pd.DataFrame(rows, columns=_summary_columns(acc_cols))
    _add_speedups(out, seconds)
    return out if out.empty else sort_runs(out)


def _add_speedups(out: pd.DataFrame, seconds: Sequence[np.ndarray]) -> None:
    """Fill the speed-up columns of :func:`summarize`'s rows ``out`` (``seconds[i]``: row i's per-image seconds)."""
    for i in range(len(out)):
        j = cohen_reference(out, i)
        if j is None:
            continue
        ref = out.iloc[j]
        lo, hi = speedup_interval(seconds[j], seconds[i])
        out.loc[out.index[i], ["speedup_vs_cohen", "speedup_low", "speedup_high", "speedup_reference"]] = [
            speedup(ref["median_seconds"], out.iloc[i]["median_seconds"]), lo, hi,
            reference_label(ref["method"], ref["model"], ref["sigma"])]


def _summary_radii(radii: Iterable[float], grid: Iterable[float] | None) -> tuple[np.ndarray, list[str]]:
    """The radii of :func:`summarize`'s ``cert_acc@R`` columns and those column names.

    ``radii`` then ``grid`` as floats, dropping radii whose column label (``format(r, 'g')``) repeats.
    """
    radii_list: list[float] = []
    for r in list(radii) + (list(grid) if grid is not None else []):
        r = float(r)
        if _radius_label(r) not in {_radius_label(x) for x in radii_list}:
            radii_list.append(r)
    return np.asarray(radii_list, dtype=float), [f"cert_acc@{_radius_label(r)}" for r in radii_list]


def _warn_duplicated_idx(key: tuple, g: pd.DataFrame) -> None:
    """Warn (at the caller of :func:`summarize`) when a run lists the same ``idx`` more than once."""
    method, model, sigma = key
    seen = g.groupby("idx").size()
    if (seen > 1).any():
        warnings.warn(
            f"run ({method}, {model}, sigma={sigma}) has {int((seen > 1).sum())} duplicated idx values; "
            "each row is counted as a separate example",
            stacklevel=3,
        )


def _run_summary(
    key: tuple,
    g: pd.DataFrame,
    radii: np.ndarray,
    acc_cols: Sequence[str],
) -> dict[str, Any]:
    """The :func:`summarize` row (a dict keyed by column) of run ``key`` with rows ``g`` (no speed-up yet)."""
    method, model, sigma = key
    radius = g["radius"].to_numpy(float)
    correct = g["correct"].to_numpy()
    acc = _cert_acc_values(radius, correct, radii)
    acr, n_inf = average_certified_radius(radius, correct)
    med, p25, p75 = seconds_quartiles(g["seconds"].to_numpy(float))
    fam = backbone_family(model)
    return {
        "family": fam,
        "method": method,
        "model": model,
        "sigma": float(sigma),
        "examples": int(len(g)),
        **dict(zip(acc_cols, acc.tolist(), strict=True)),
        "acr": acr,
        "inf_radius": n_inf,
        "abstention_rate": float(np.mean(g["predict"].to_numpy() == -1)),
        "clean_acc": float(np.mean(correct == 1)),
        "median_seconds": med,
        "p25_seconds": p25,
        "p75_seconds": p75,
        "samples": int(np.median(g["samples"].to_numpy())),
        "speedup_vs_cohen": math.nan,
        "speedup_low": math.nan,
        "speedup_high": math.nan,
        "speedup_reference": "",
    }


def _summary_columns(acc_cols: Sequence[str]) -> list[str]:
    """Column order of :func:`summarize`'s output."""
    return [
        "family",
        *RUN_KEYS,
        "examples",
        *acc_cols,
        "acr",
        "inf_radius",
        "abstention_rate",
        "clean_acc",
        "median_seconds",
        "p25_seconds",
        "p75_seconds",
        "samples",
        "speedup_vs_cohen",
        "speedup_low",
        "speedup_high",
        "speedup_reference",
    ]
