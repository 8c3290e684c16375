"""Anytime-valid confidence sequences for a Bernoulli mean, and the stopping rule of sequential CERTIFY.

The confidence sequence: Robbins' beta-binomial mixture
-------------------------------------------------------
Let X_1, X_2, ... be i.i.d. Bernoulli(p) and S_t = X_1 + ... + X_t. For every q, the likelihood ratio
q^S_t (1 - q)^(t - S_t) / (p^S_t (1 - p)^(t - S_t)) is a nonnegative martingale with mean 1 under p;
so is its mixture over a Beta(a, b) prior on q (Robbins 1970, "Statistical methods related to the law
of the iterated logarithm", Ann. Math. Statist. 41; Howard, Ramdas, McAuliffe & Sekhon 2021,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49, Section 3.2 and
Proposition 6 on beta-binomial mixtures), which has the closed form

    M_t(p) = B(a + S_t, b + t - S_t) / B(a, b) / (p^S_t (1 - p)^(t - S_t)),

B the beta function. Ville's inequality gives P_p[exists t >= 1: M_t(p) >= 1 / alpha] <= alpha, so

    CS_t = {p in [0, 1] : log M_t(p) < log(1 / alpha)}

covers the true p at *every* t simultaneously with probability >= 1 - alpha: bounds read after any
number of samples, chosen by any rule that looks at the data (optional stopping), stay valid. log M_t
is convex in p (its p-dependent part is -S log p - (t - S) log(1 - p)) and log M_t(S/t) <= 0 (the
mixture of likelihoods is below the largest one), so CS_t is an interval [L_t, U_t] around S_t / t,
found here by a vectorised bisection on log M_t (``scipy.special.betaln``, ``xlogy``, ``xlog1py``): one
numpy pass serves every example of a batch, where ``scipy.optimize.brentq`` costs ~0.3 ms per endpoint.

One set serves both sides: P[exists t: L_t > p or U_t < p] <= alpha, so the lower bound alone is a
one-sided (1 - alpha) lower confidence sequence (conservative: the whole alpha also pays for the upper
side). Sequential CERTIFY certifies with L_t and uses U_t only to stop early for futility: stopping
never makes a certificate wrong (the certificate depends on L at the stopping time, valid at every
time), it can only cost radius, so the full alpha is the certificate's and U needs no split of it.

Float safety: the bisection returns the end of its bracket that is proved outside the set, with a bound
on the rounding error of log M_t, so the float returned for L is at most the exact endpoint and the one
for U at least it (checked against 50-digit arithmetic in the tests).

confseq (Howard's C++ library) would offer this and tighter boundaries, but it ships no wheel for this
Python and its build needs the Boost headers (CMake: "Could NOT find Boost"), so it is not used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

from .certificate import UNIT
from .checks import check_alpha

#: the Beta(a, b) prior of the mixture: uniform, Robbins' original choice
PRIOR_A = 1.0
PRIOR_B = 1.0


def log_mixture_ratio(successes: np.ndarray | int, trials: np.ndarray | int, p: np.ndarray | float,
                      a: float = PRIOR_A, b: float = PRIOR_B) -> np.ndarray:
    """log M_t(p) = log B(a + s, b + t - s) - log B(a, b) - s log p - (t - s) log(1 - p) (module doc).

    Args: ``successes`` s and ``trials`` t (integers, 0 <= s <= t), ``p`` in [0, 1]; broadcast together.
    Returns float64, +inf where p excludes the data (p = 0 with s > 0, p = 1 with s < t).
    """
    s = np.asarray(successes, dtype=np.float64)
    t = np.asarray(trials, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_prior_ratio = special.betaln(a + s, b + t - s) - special.betaln(a, b)
        return log_prior_ratio - special.xlogy(s, p) - special.xlog1py(t - s, -p)


def _log_beta_error(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A bound on the absolute error of ``special.betaln(x, y)``: 64 ulps of lgamma(x) + lgamma(y) +
    lgamma(x + y) in magnitude. betaln is not accurate to a few ulps of its own value (at B(4, 99998) it
    is off by 3e-13 relative, from the cancellation of those log gammas); the tests check this bound
    against 50-digit arithmetic."""
    return 64 * UNIT * (np.abs(special.gammaln(x)) + np.abs(special.gammaln(y)) + np.abs(special.gammaln(x + y)))


#: bisection steps: each halves the bracket, so 2^-80 of the distance from S/t to 0 or 1 is left, below one
#: ulp of the endpoint unless it is under ~1e-24 (where certification abstains anyway)
BISECTION_STEPS = 80


def _endpoints(s: np.ndarray, t: np.ndarray, threshold: float, a: float, b: float, lower: bool) -> np.ndarray:
    """One endpoint of {p : log M_t(p) < threshold} for every (s, t) (float64 arrays, 0 <= s <= t, t >= 1).

    Bisection between the MLE s/t (inside the set) and 0 or 1 (outside unless the endpoint is 0 or 1
    itself). The bracket end that is returned only ever moves to points *proved* outside: where the float
    log M_t exceeds the threshold by more than a bound on its rounding error (:func:`_log_beta_error` plus
    64 ulps of each other term), so by the convexity of log M_t the float returned for the lower end is at
    most the exact endpoint and that for the upper end at least it. Arrays of up to :data:`SCALAR_MAX`
    elements take a plain-float loop (the same steps with ``math``; numpy's per-call overhead would cost
    ~1 ms per bound, paid after every round of sequential CERTIFY), larger ones one vectorised pass.
    """
    x, y = a + s, b + t - s
    log_prior_ratio = special.betaln(x, y) - special.betaln(a, b)
    constant_error = _log_beta_error(x, y) + 64 * UNIT * (abs(special.betaln(a, b)) + threshold + 1.0)
    if s.size <= SCALAR_MAX:
        flat = [_endpoint(float(si), float(ti), float(lp) - threshold, float(ce), lower)
                for si, ti, lp, ce in zip(s.ravel(), t.ravel(), np.ravel(log_prior_ratio), np.ravel(constant_error),
                                          strict=True)]
        return np.array(flat, dtype=np.float64).reshape(s.shape)
    inside = s / t
    outside = np.full_like(inside, 0.0 if lower else 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(BISECTION_STEPS):
            middle = 0.5 * (inside + outside)
            success_term, failure_term = special.xlogy(s, middle), special.xlog1py(t - s, -middle)
            excess = log_prior_ratio - success_term - failure_term - threshold
            out = excess > constant_error + 64 * UNIT * (np.abs(success_term) + np.abs(failure_term))
            outside = np.where(out, middle, outside)
            inside = np.where(out, inside, middle)
    # the set reaches 0 (1) exactly when S = 0 (S = t): the mixture ratio is finite there
    edge = (s == 0) if lower else (s == t)
    return np.where(edge, 0.0 if lower else 1.0, outside)


#: arrays up to this size are bisected element by element in plain floats (see :func:`_endpoints`)
SCALAR_MAX = 8


def _endpoint(s: float, t: float, log_prior_minus_threshold: float, constant_error: float, lower: bool) -> float:
    """The bisection of :func:`_endpoints` for one (s, t), in Python floats."""
    if (lower and s == 0) or (not lower and s == t):
        return 0.0 if lower else 1.0
    inside, outside = s / t, (0.0 if lower else 1.0)
    for _ in range(BISECTION_STEPS):
        middle = 0.5 * (inside + outside)
        if not 0.0 < middle < 1.0:      # the bracket has reached the end of the floats
            break
        success_term = s * math.log(middle) if s else 0.0
        failure_term = (t - s) * math.log1p(-middle) if t != s else 0.0
        excess = log_prior_minus_threshold - success_term - failure_term
        if excess > constant_error + 64 * UNIT * (abs(success_term) + abs(failure_term)):
            outside = middle
        else:
            inside = middle
    return outside


def _check_counts(successes: np.ndarray, trials: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s, t = np.broadcast_arrays(np.asarray(successes), np.asarray(trials))
    if not (np.issubdtype(s.dtype, np.integer) and np.issubdtype(t.dtype, np.integer)):
        raise TypeError("successes and trials must be integer arrays")
    if (t < 1).any() or (s < 0).any() or (s > t).any():
        raise ValueError("counts must satisfy 0 <= successes <= trials and trials >= 1")
    return s, t


def confidence_sequence(successes: np.ndarray | Sequence[int] | int, trials: np.ndarray | Sequence[int] | int,
                        alpha: float, a: float = PRIOR_A, b: float = PRIOR_B) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) float64 arrays: the beta-binomial mixture confidence sequence CS_t (module doc).

    Args:
        successes: int array, S_t (broadcast with ``trials``), 0 <= S_t <= t.
        trials: int array, t >= 1.
        alpha: miscoverage of the whole sequence, in (0, 1): P[exists t: p not in [lower_t, upper_t]] <= alpha.
        a, b: the Beta prior (> 0).

    The lower bound is at most the exact endpoint and the upper at least it (float slack, module doc);
    lower = 0 when S_t = 0 and upper = 1 when S_t = t.

    Raises:
        TypeError: non-integer counts. ValueError: counts out of range, alpha outside (0, 1), a or b <= 0.
    """
    alpha = check_alpha(alpha)
    if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"the Beta prior needs finite a, b > 0, got a={a}, b={b}")
    s, t = _check_counts(np.asarray(successes), np.asarray(trials))
    threshold = -math.log(alpha)
    s_f, t_f = s.astype(np.float64), t.astype(np.float64)
    return (_endpoints(s_f, t_f, threshold, a, b, lower=True), _endpoints(s_f, t_f, threshold, a, b, lower=False))


def lower_confidence_sequence(successes: np.ndarray | Sequence[int] | int, trials: np.ndarray | Sequence[int] | int,
                              alpha: float) -> np.ndarray:
    """The lower end of :func:`confidence_sequence` (float64, same shape as the broadcast counts)."""
    return confidence_sequence(successes, trials, alpha)[0]


# --- sequential CERTIFY's schedule and stopping rule -------------------------------------------------

#: estimation samples of the first round; each later round doubles the total drawn so far
FIRST_ROUND = 100


def round_ends(cap: int, first: int = FIRST_ROUND) -> list[int]:
    """The cumulative sample counts after each round: first, 2 first, 4 first, ..., truncated to end at ``cap``.

    Geometric rounds keep the number of looks (and so the work of the bounds) logarithmic in ``cap``.
    """
    if cap < 1 or first < 1:
        raise ValueError(f"cap and first round must be >= 1, got {cap}, {first}")
    ends, end = [], first
    while end < cap:
        ends.append(end)
        end *= 2
    ends.append(cap)
    return ends


def check_radii(radii: Sequence[float] | np.ndarray | None) -> tuple[float, ...]:
    """The target radii of sequential CERTIFY as a sorted tuple of floats.

    Raises:
        ValueError: None or empty, or a radius that is NaN, infinite or negative (naming it).
    """
    if radii is None:
        raise ValueError("sequential certification needs the target radii: pass radii=(r1, r2, ...)")
    values = [float(r) for r in np.asarray(radii, dtype=np.float64).reshape(-1)]
    if not values:
        raise ValueError("sequential certification needs at least one target radius, got radii=()")
    for r in values:
        if not math.isfinite(r) or r < 0:
            raise ValueError(f"target radii must be finite and >= 0, got {r}")
    return tuple(sorted(values))


def radius_of(p: np.ndarray, sigma: float, lipschitz: float) -> np.ndarray:
    """sigma * Phi^-1(p) / lipschitz (float64; -inf at p = 0, +inf at p = 1), no slack: for stopping decisions."""
    with np.errstate(divide="ignore"):
        return sigma * special.ndtri(np.asarray(p, dtype=np.float64)) / lipschitz


def should_stop(lower: np.ndarray, upper: np.ndarray, radii: tuple[float, ...], sigma: float,
                lipschitz: float) -> np.ndarray:
    """Boolean: whether sampling can stop for each example with confidence bounds (lower, upper) on pA.

    Stop when (a) the certified radius (from ``lower``, abstaining below 1/2) reaches ``max(radii)``, or
    (b) futility: the radius of ``upper`` is below the smallest target radius not yet certified (this
    includes upper < 1/2 when not certified, which means abstention). Neither rule changes the meaning of
    the certificate (module doc): it stays the one given by ``lower`` at the stopping time.
    """
    targets = np.asarray(radii, dtype=np.float64)
    certified = np.where(lower >= 0.5, radius_of(lower, sigma, lipschitz), -np.inf)
    reachable = np.where(upper >= 0.5, radius_of(upper, sigma, lipschitz), -np.inf)
    done = certified >= targets[-1]
    # smallest target radius strictly above the certified one (radius >= r counts as certified at r)
    above = targets[None, :] > certified[:, None]
    next_target = np.where(above.any(axis=1), np.where(above, targets[None, :], np.inf).min(axis=1), np.inf)
    futile = reachable < next_target
    return np.asarray(done | futile)


__all__ = [
    "PRIOR_A",
    "PRIOR_B",
    "FIRST_ROUND",
    "log_mixture_ratio",
    "confidence_sequence",
    "lower_confidence_sequence",
    "round_ends",
    "check_radii",
    "radius_of",
    "should_stop",
]
