"""Paper numbers with their uncertainty: intervals, ACR standard errors, the envelope over sigma, cut-offs.

Like :mod:`bench.report.metrics` (and Cohen et al.'s ``analyze.py``, which keeps
``ApproximateAccuracy`` apart from its plots) everything here takes frames and
returns numbers or frames; nothing reads a file or draws.

Sources of the formulas
-----------------------
* Certified accuracy at ``r``: ``mean(correct == 1 and radius >= r)`` (Cohen et al. 2019,
  ``code/analyze.py``, ``ApproximateAccuracy.at_radius``).
* Its 95 % interval over the N images: the exact Clopper-Pearson interval of ``k`` certified out of
  ``N`` (Clopper & Pearson 1934), computed by ``statsmodels.stats.proportion.proportion_confint(k, N,
  alpha=0.05, method="beta")``.  It covers the sampling of the *images* (what a
  test-set estimate varies with), not the Monte Carlo error of each certificate (already inside the
  certificate's own ``alpha``).
* ACR: ``mean(radius * correct)`` (Zhai et al. 2020, MACER, eq. for "average certified radius"); its
  standard error ``std(radius * correct, ddof=1) / sqrt(N)`` (standard error of a mean).
* Monte Carlo cut-off: the largest radius CERTIFY can return with ``n`` samples at level ``alpha``,
  ``sigma * Phi^-1(alpha^(1/n))`` (all ``n`` samples on the top class give ``pA_lower = alpha^(1/n)``,
  Cohen et al. 2019, Theorem 1 with the Clopper-Pearson bound); the same formula as
  :func:`smoothing.statistics.max_certifiable_radius` (not imported: it would pull in torch).
* Envelope: the pointwise maximum over sigma of the certified-accuracy curves of one
  (method, model family), as Cohen et al. (2019, Fig. 7 / Table 1 "best over sigma") and Salman
  et al. (2019) report it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint

from ..common.units import CUTOFF_SLACK
from .metrics import DETERMINISTIC_METHODS, RUN_KEYS, _cert_acc_values, run_groups, sort_runs
from .read import MONTE_CARLO, as_results

#: Coverage of the reported intervals.
CONFIDENCE = 0.95

#: Radii of the paper's tables (Table 1 and Table 2), l2 on the [0, 1] pixel scale.
TABLE_EPS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)

_NOISE_SUFFIX = re.compile(r"[-_]?noise[-_]?[0-9.]+$")


# ---------------------------------------------------------------------------
# Intervals
# ---------------------------------------------------------------------------


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval of a proportion ``k / n``; ``(nan, nan)`` when ``n == 0``.

    ``statsmodels.stats.proportion.proportion_confint(k, n, alpha=1 - confidence, method="beta")``.
    """
    if n <= 0:
        return math.nan, math.nan
    lo, hi = proportion_confint(int(k), int(n), alpha=1.0 - confidence, method="beta")
    return float(lo), float(hi)


def certified_accuracy_ci(
    df: pd.DataFrame, radii: Iterable[float], confidence: float = CONFIDENCE
) -> pd.DataFrame:
    """Certified accuracy of every run at ``radii`` with its Clopper-Pearson interval over the images.

    Returns a long frame with columns ``method, model, sigma, radius, certified, examples,
    certified_accuracy, ci_low, ci_high`` (fractions), sorted like :func:`~bench.report.metrics.sort_runs`.
    ``certified`` is the count ``k`` and ``examples`` the number ``N`` of the run's rows.
    """
    df = as_results(df)
    r = np.asarray([float(x) for x in radii], dtype=float)
    rows = []
    for (method, model, sigma), g in run_groups(df):
        n = len(g)
        acc = _cert_acc_values(g["radius"].to_numpy(float), g["correct"].to_numpy(), r)
        for rad, a in zip(r, acc, strict=True):
            k = int(round(a * n))
            lo, hi = clopper_pearson(k, n, confidence)
            rows.append((method, model, float(sigma), rad, k, n, float(a), lo, hi))
    cols = [*RUN_KEYS, "radius", "certified", "examples", "certified_accuracy", "ci_low", "ci_high"]
    return sort_runs(pd.DataFrame(rows, columns=cols), extra=["radius"])


def acr_with_se(radius: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """``(ACR, standard error)`` of one run: ``mean(radius * correct)`` and ``std(., ddof=1) / sqrt(N)``.

    Both are ``inf`` when a correct example has an infinite radius (as in
    :func:`~bench.report.metrics.average_certified_radius`); the SE is NaN for fewer than two images.
    """
    contrib = np.where(correct == 1, radius, 0.0)
    n = len(contrib)
    if n == 0:
        return math.nan, math.nan
    if np.isinf(contrib).any():
        return math.inf, math.inf
    se = float(np.std(contrib, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(np.mean(contrib)), se


def run_table(df: pd.DataFrame, radii: Sequence[float], confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per run: ``examples``, ``clean_acc`` (+ interval), ``acc@R`` / ``lo@R`` / ``hi@R`` per radius,
    ``acr`` and ``acr_se``.

    ``clean_acc`` is the fraction with ``predict == label`` (``correct == 1``; abstentions, ``predict == -1``,
    count as wrong).  For every method it equals the certified accuracy at radius 0 (radii are >= 0), so
    for a deterministic method it is the accuracy of the certified prediction and for a sampled method the
    accuracy of the smoothed prediction with abstentions counted wrong.
    """
    df = as_results(df)
    rows = []
    for (method, model, sigma), g in run_groups(df):
        radius, correct = g["radius"].to_numpy(float), g["correct"].to_numpy()
        n = len(g)
        row: dict[str, object] = {"method": method, "model": model, "sigma": float(sigma), "examples": n}
        k0 = int(np.sum(correct == 1))
        row["clean_acc"] = k0 / n if n else math.nan
        row["clean_lo"], row["clean_hi"] = clopper_pearson(k0, n, confidence)
        for r, a in zip(radii, _cert_acc_values(radius, correct, np.asarray(radii, float)), strict=True):
            lo, hi = clopper_pearson(int(round(a * n)), n, confidence)
            row[f"acc@{r:g}"], row[f"lo@{r:g}"], row[f"hi@{r:g}"] = float(a), lo, hi
        row["acr"], row["acr_se"] = acr_with_se(radius, correct)
        rows.append(row)
    return sort_runs(pd.DataFrame(rows)) if rows else pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# Monte Carlo cut-off, envelope
# ---------------------------------------------------------------------------


def mc_cutoff(sigma: float, n: int, alpha: float) -> float:
    """Largest radius CERTIFY can return: ``sigma * Phi^-1(alpha^(1/n))`` (NaN for a NaN sigma).

    Same formula as :func:`smoothing.statistics.max_certifiable_radius` (Cohen et al. 2019, Theorem 1
    with ``pA_lower = alpha^(1/n)``, the Clopper-Pearson lower bound when all ``n`` samples agree).
    """
    if sigma is None or math.isnan(float(sigma)):
        return math.nan
    return float(sigma * norm.ppf(alpha ** (1.0 / n)))


#: Phi^-1 of the largest float64 below 1: sigma * Phi^-1(pA_lower) computed in float64 with pA_lower < 1 (as
#: every Clopper-Pearson bound is) never exceeds sigma times this, whatever n and alpha were (about 8.21)
FLOAT_QUANTILE_CAP = float(norm.ppf(1.0 - 2.0 ** -53))


def check_monte_carlo_radii(df: pd.DataFrame, source: str, n: int | None = None, alpha: float | None = None,
                            lipschitz: Mapping[str, float] | None = None, first_line: int | None = None) -> None:
    """Refuse Monte Carlo rows (``cohen``, ``fars-mc``) whose radius no CERTIFY can return.

    The bound is the cut-off :func:`mc_cutoff` ``sigma * Phi^-1(alpha^(1/n))`` at the run's ``n`` and
    ``alpha`` (Cohen et al. 2019, Theorem 1 with all n samples agreeing; the cap of sequential CERTIFY), or
    ``sigma * FLOAT_QUANTILE_CAP`` when they are unknown, divided by the backbone's constant for ``fars-mc``
    (``lipschitz`` by model; a ``fars-mc`` row of a model without one is only checked for finiteness), with
    the relative slack :data:`bench.common.units.CUTOFF_SLACK` of the results file's rounding.

    Raises:
        ValueError: naming ``source``, the line (``first_line``: the file line of the first row) or row,
            the run and the radius.
    """
    frame = as_results(df)
    monte_carlo = frame["method"].isin(MONTE_CARLO).to_numpy()
    if not monte_carlo.any():
        return
    sigma = frame["sigma"].to_numpy(float)
    quantile = mc_cutoff(1.0, n, alpha) if n and alpha else FLOAT_QUANTILE_CAP
    constants = {str(k): float(v) for k, v in (lipschitz or {}).items() if v}
    divisor = np.array([1.0 if m == "cohen" else constants.get(str(model), math.nan)
                        for m, model in zip(frame["method"], frame["model"], strict=True)])
    limit = sigma * quantile / divisor * (1 + CUTOFF_SLACK)
    radius = frame["radius"].to_numpy(float)
    bad = monte_carlo & (~np.isfinite(radius) | (radius > limit))   # a NaN limit (unknown L) judges finiteness only
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        where = f"{source} line {i + first_line}" if first_line is not None else f"{source} row {i}"
        at = f"n = {n}, alpha = {alpha:g}" if n and alpha else "any n and alpha"
        run = f"{frame['method'].iloc[i]} {frame['model'].iloc[i]}"
        raise ValueError(f"{where}: radius {float(radius[i]):g} of {run} at sigma {sigma[i]:g} "
                         f"(image {int(frame['idx'].iloc[i])}) is above {limit[i]:.6g}, the largest radius CERTIFY "
                         f"can return ({at}): not a certification result")


def run_key(method: str, model: str, sigma: float) -> str:
    """A run's key as the manifest's ``runs`` list writes it: ``method|model|S`` (``S`` = ``-`` without noise)."""
    return f"{method}|{model}|{'-' if math.isnan(float(sigma)) else f'{float(sigma):g}'}"


def rows_of_run(df: pd.DataFrame, manifest: Mapping[str, object] | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept, dropped): the rows of the runs and images a run's ``manifest`` lists (``runs`` and
    ``image_indices``; a key the manifest lacks restricts nothing), and the others.

    Raises:
        ValueError: a manifest without ``image_indices`` whose run holds more rows than its ``images``
            count (rows of images it did not select).
    """
    frame = as_results(df)
    keep = np.ones(len(frame), dtype=bool)
    runs = (manifest or {}).get("runs")
    if isinstance(runs, list):
        keys = [run_key(m, model, s) for m, model, s in zip(frame["method"], frame["model"], frame["sigma"],
                                                              strict=True)]
        keep &= np.isin(np.array(keys, dtype=object), np.array([str(r) for r in runs], dtype=object))
    indices = (manifest or {}).get("image_indices")
    if isinstance(indices, list):
        keep &= frame["idx"].isin([int(i) for i in indices]).to_numpy()
    else:
        images = (manifest or {}).get("images")
        counts = frame[keep].groupby(["method", "model", "sigma"], dropna=False)["idx"].nunique()
        if isinstance(images, int) and len(counts) and int(counts.max()) > images:
            run = counts.idxmax()
            raise ValueError(f"run {run_key(*run)} has rows for {int(counts.max())} images, but the run certified "
                             f"{images}: rows of images it did not select")
    return frame[keep].reset_index(drop=True), frame[~keep].reset_index(drop=True)


def envelope_model(model: str) -> str:
    """The model family an envelope over sigma runs over: a ``noise<S>`` suffix is dropped.

    Cohen et al. train one base classifier per noise level (``cnn-noise0.25`` at sigma 0.25), so the
    best curve over sigma of 'the CNN' takes each sigma with its own model: ``cnn-noise0.25 -> cnn``.
    Models without such a suffix (``sll+ce``, certified at several sigmas) are their own family.
    """
    return _NOISE_SUFFIX.sub("", str(model)) or str(model)


def envelope(curves: pd.DataFrame) -> pd.DataFrame:
    """Pointwise maximum over sigma of the certified-accuracy curves of each (method, model family).

    ``curves``: long frame with ``method, model, sigma, radius, certified_accuracy`` (e.g.
    :func:`~bench.report.metrics.certified_accuracy` on a radius grid).  Returns ``method, model,
    radius, certified_accuracy, best_sigma`` with ``model`` the family (:func:`envelope_model`) and
    ``best_sigma`` the sigma attaining the maximum (the smallest one on ties; NaN for deterministic runs).
    """
    c = curves.assign(model=curves["model"].map(envelope_model))
    c = c.sort_values(["method", "model", "radius", "certified_accuracy", "sigma"],
                      ascending=[True, True, True, False, True], na_position="last", kind="mergesort")
    best = c.groupby(["method", "model", "radius"], sort=False, dropna=False).head(1)
    best = best.rename(columns={"sigma": "best_sigma"})
    return best[["method", "model", "radius", "certified_accuracy", "best_sigma"]].reset_index(drop=True)


def is_deterministic(method: str, sigma: float) -> bool:
    """A run without a noise level (NaN sigma) or of a method that needs no sampling."""
    return bool(pd.isna(sigma) or method in DETERMINISTIC_METHODS)


# ---------------------------------------------------------------------------
# Time budget
# ---------------------------------------------------------------------------


def time_budget(df: pd.DataFrame, radii: Sequence[float]) -> pd.DataFrame:
    """Certified accuracy at ``radii`` against the median seconds per image, one row per run.

    A run is ``(method, model, sigma)``; ``samples`` is the median number of evaluations per image (with
    sequential certification the rows of one run use different numbers, and the median seconds per image
    is the run's typical cost).  Only runs where both numbers are measured appear: the scaling sweep
    (``scaling.csv``) times several ``n`` but certifies no accuracy, so it is not a source here.
    Columns: ``method, model, sigma, samples, seconds, acc@R`` for each radius.
    """
    df = as_results(df)
    rows = []
    for (method, model, sigma), g in run_groups(df):
        secs = g["seconds"].to_numpy(float)
        if not np.isfinite(secs).any():
            continue
        acc = _cert_acc_values(g["radius"].to_numpy(float), g["correct"].to_numpy(), np.asarray(radii, float))
        rows.append({"method": method, "model": model, "sigma": float(sigma),
                     "samples": int(np.median(g["samples"].to_numpy())), "seconds": float(np.nanmedian(secs)),
                     **{f"acc@{r:g}": float(a) for r, a in zip(radii, acc, strict=True)}})
    return sort_runs(pd.DataFrame(rows)) if rows else pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# Empirical (attack) accuracy
# ---------------------------------------------------------------------------


def pgd_accuracy(robustness: pd.DataFrame, eps: Sequence[float] = TABLE_EPS) -> pd.DataFrame:
    """Empirical robust accuracy under l2-PGD at each ``eps``, one row per model.

    ``robustness``: ``bench.attack``'s ``robustness.csv`` (columns ``model, radius, accuracy, robust,
    examples, pgd``): at the radii where PGD ran (``pgd`` true) ``accuracy`` is the fraction of images
    not broken by any attack at that radius or below.  Returns ``model, examples, clean`` (PGD at 0, when
    present, with ``clean_lo`` / ``clean_hi``) and ``acc@E`` with ``lo@E`` / ``hi@E`` (Clopper-Pearson over the
    images) per eps; an eps where PGD did not run is NaN.
    """
    rob = robustness.copy()
    rob["radius"] = pd.to_numeric(rob["radius"], errors="coerce")
    if "pgd" in rob.columns:
        rob = rob[rob["pgd"].astype(str).str.lower().isin(("true", "1"))]
    rows = []
    for model, g in rob.groupby("model", sort=True):
        n = int(g["examples"].max()) if "examples" in g.columns else 0
        row: dict[str, object] = {"model": str(model), "examples": n}
        for e in (0.0, *eps):
            hit = g[np.isclose(g["radius"].to_numpy(float), e, atol=1e-9)]
            a = float(hit["accuracy"].iloc[-1]) if len(hit) else math.nan
            lo, hi = clopper_pearson(int(round(a * n)), n) if n and not math.isnan(a) else (math.nan, math.nan)
            if e == 0.0:
                row["clean"], row["clean_lo"], row["clean_hi"] = a, lo, hi
            else:
                row[f"acc@{e:g}"], row[f"lo@{e:g}"], row[f"hi@{e:g}"] = a, lo, hi
        rows.append(row)
    return pd.DataFrame(rows)
