"""Sequential CERTIFY and the anytime-valid confidence sequence behind it, tried hard.

* The beta-binomial mixture confidence sequence (smoothing.confidence_sequence) must cover the true p at *every*
  time with probability >= 1 - alpha: checked on simulated Bernoulli streams (numpy), at every integer time
  on short horizons and at the round boundaries of long ones, at p near 1/2, near 1 and between; and its
  bounds are checked against 50-digit arithmetic (mpmath), on the safe side.
* Sequential certification of the 1-D step model f(x) = [x > 0] at x = m, whose smoothed classifier has
  pA = Phi(m / sigma) and true certified radius exactly m, must return a radius above m with probability
  <= alpha, whatever the target radii (below, at, above m): checked with the statistics layer on
  simulated streams (thousands of repeats) and with real certifier calls (hundreds).
* Determinism (noise of sample k of example i independent of rounds, batch size and batch), samples per
  example, and the errors on bad arguments.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy import special, stats
from torch import nn

from baselines import CohenRS
from fars import ABSTAIN, FaRSMonteCarlo
from smoothing import Certificate
from smoothing.confidence_sequence import (
    SCALAR_MAX,
    _log_beta_error,
    check_radii,
    confidence_sequence,
    log_mixture_ratio,
    round_ends,
    should_stop,
)
from smoothing.monte_carlo import NOISE_BOUND
from smoothing.noise import MAX_BLOCK_SAMPLES, NoiseSource, Stage, plan_batches
from smoothing.statistics import (
    lower_confidence_bound,
    radius_from_counts,
    radius_from_lower_bound,
    radius_from_sequence,
)

#: false-alarm rate of each statistical assertion (one-sided binomial tolerance)
TOLERANCE = 1e-3


def at_most_alpha(failures: int, runs: int, alpha: float) -> bool:
    """Whether ``failures`` of ``runs`` is consistent with a rate <= alpha (one-sided, level TOLERANCE)."""
    return failures <= stats.binom.isf(TOLERANCE, runs, alpha)


# --- the confidence sequence alone ------------------------------------------------------------------

def ever_excluded(successes: np.ndarray, trials: np.ndarray, p: float, alpha: float) -> np.ndarray:
    """Boolean [R]: whether the mixture CS excludes p at any of the times (columns), by its definition
    log M_t(p) >= log(1 / alpha) (independent of the bisection)."""
    return (log_mixture_ratio(successes, trials, p) >= math.log(1 / alpha)).any(axis=1)


@pytest.mark.parametrize("p", [0.5, 0.8, 0.999])
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_coverage_at_every_integer_time(p, alpha):
    """P[exists t <= 2000: p outside CS_t] <= alpha over 2000 simulated streams, every t looked at."""
    rng = np.random.default_rng(int(p * 1000) + int(alpha * 1000))
    runs, horizon = 2000, 2000
    successes = np.cumsum(rng.random((runs, horizon), dtype=np.float64) < p, axis=1)
    trials = np.arange(1, horizon + 1)[None, :]
    failures = int(ever_excluded(successes, trials, p, alpha).sum())
    assert at_most_alpha(failures, runs, alpha), f"{failures}/{runs} streams left the CS (alpha = {alpha})"


def stream_at(ends: list[int], p: float, runs: int, rng: np.random.Generator) -> np.ndarray:
    """Successes [runs, len(ends)] of Bernoulli(p) streams read at the cumulative counts ``ends`` (exact
    in law: independent binomial increments)."""
    sizes = np.diff([0, *ends])
    return np.cumsum(rng.binomial(sizes[None, :], p, size=(runs, len(ends))), axis=1)


@pytest.mark.parametrize("p", [0.5, 0.9, 0.999])
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_coverage_over_long_horizons_with_the_returned_bounds(p, alpha):
    """Up to t = 10^5 at the round boundaries sequential CERTIFY uses and at dense geometric checkpoints:
    the *returned* bounds (bisection, float slack) miss p at some look with probability <= alpha, and
    agree with the definition of the set away from the float slack."""
    rng = np.random.default_rng(7 + int(p * 1000) + int(alpha * 1e4))
    runs = 2000
    rounds = round_ends(100_000)
    dense = sorted(set(np.unique(np.geomspace(1, 100_000, 60).astype(np.int64)).tolist()) | set(rounds))
    successes = stream_at(dense, p, runs, rng)
    trials = np.broadcast_to(np.array(dense)[None, :], successes.shape)
    lower, upper = confidence_sequence(successes, trials, alpha)
    missed = ((lower > p) | (upper < p)).any(axis=1)
    assert at_most_alpha(int(missed.sum()), runs, alpha), f"{int(missed.sum())}/{runs} (alpha = {alpha})"
    # the bounds are the set's ends: p strictly inside (away from the slack) <=> not excluded by definition
    outside = log_mixture_ratio(successes, trials, p) >= math.log(1 / alpha)
    clear = (np.abs(lower - p) > 1e-9) & (np.abs(upper - p) > 1e-9)
    np.testing.assert_array_equal(((lower > p) | (upper < p))[clear], outside[clear])
    # sequential CERTIFY looks at the round boundaries alone: the bounds computed from those looks only are
    # the dense run's bounds at those columns (no state carried between looks), so the coverage above holds there
    columns = [dense.index(end) for end in rounds]
    lower_rounds, upper_rounds = confidence_sequence(successes[:, columns], trials[:, columns], alpha)
    np.testing.assert_array_equal(lower_rounds, lower[:, columns])
    np.testing.assert_array_equal(upper_rounds, upper[:, columns])


def test_a_fixed_n_bound_read_at_every_round_fails_the_same_check():
    """Control: the coverage check above bites. Clopper-Pearson at level alpha, read at every round
    boundary (optional stopping), misses p far more often than alpha; the mixture CS does not."""
    rng = np.random.default_rng(3)
    runs, p, alpha = 2000, 0.5, 0.05
    ends = list(range(20, 2001, 20))
    successes = stream_at(ends, p, runs, rng)
    trials = np.broadcast_to(np.array(ends)[None, :], successes.shape)
    naive = (lower_confidence_bound(successes, trials, alpha) > p).any(axis=1)
    assert naive.mean() > 3 * alpha, naive.mean()
    lower, _ = confidence_sequence(successes, trials, alpha)
    assert at_most_alpha(int((lower > p).any(axis=1).sum()), runs, alpha)


def exact_endpoint(s: int, t: int, alpha: float, lower: bool) -> mpmath.mpf:
    """The endpoint of {p : log M_t(p) < log(1 / alpha)} in 50-digit arithmetic (uniform prior)."""
    with mpmath.workdps(50):
        threshold = mpmath.log(1 / mpmath.mpf(alpha))
        log_prior = mpmath.log(mpmath.beta(1 + s, 1 + t - s))

        def excess(p):
            value = log_prior - threshold
            if s:
                value -= s * mpmath.log(p)
            if t - s:
                value -= (t - s) * mpmath.log(1 - p)
            return value

        mle = mpmath.mpf(s) / t
        if lower and s == 0:
            return mpmath.mpf(0)
        if not lower and s == t:
            return mpmath.mpf(1)
        far = mle / 2 if lower else 1 - (1 - mle) / 2
        while excess(far) <= 0:
            far = far / 2 if lower else 1 - (1 - far) / 2
        bracket = (far, mle) if lower else (mle, far)
        return mpmath.findroot(excess, bracket, solver="anderson")


CASES = [(1, 1), (5, 10), (0, 50), (50, 100), (99, 100), (100, 100), (3, 100_000), (70_000, 100_000),
         (99_990, 100_000), (100_000, 100_000), (9_999_995, 10_000_000)]


@pytest.mark.parametrize("s,t", CASES)
@pytest.mark.parametrize("alpha", [0.05, 0.001])
def test_bounds_match_50_digit_arithmetic_on_the_safe_side(s, t, alpha):
    lower, upper = confidence_sequence(s, t, alpha)
    exact_lower, exact_upper = exact_endpoint(s, t, alpha, True), exact_endpoint(s, t, alpha, False)
    assert lower <= exact_lower and upper >= exact_upper, "the floats must lie outside the exact interval"
    assert float(exact_lower - lower) <= 1e-9 and float(upper - exact_upper) <= 1e-9


@pytest.mark.parametrize("alpha", [0.05, 0.001])
def test_vectorised_bisection_is_safe_and_agrees_with_the_scalar_one(alpha):
    """More than SCALAR_MAX counts take the numpy pass, one count the plain-float loop: both must be safe."""
    s, t = np.array([c[0] for c in CASES]), np.array([c[1] for c in CASES])
    assert len(s) > SCALAR_MAX
    lower, upper = confidence_sequence(s, t, alpha)
    for i, (si, ti) in enumerate(CASES):
        assert lower[i] <= exact_endpoint(si, ti, alpha, True) and upper[i] >= exact_endpoint(si, ti, alpha, False)
        one_lower, one_upper = confidence_sequence(si, ti, alpha)
        assert abs(one_lower - lower[i]) <= 1e-12 and abs(one_upper - upper[i]) <= 1e-12


@pytest.mark.parametrize("t", [1, 10, 1000, 10**6])
def test_lower_bound_at_all_successes_has_a_closed_form(t):
    """S = t, uniform prior: M_t(p) = 1 / ((t + 1) p^t), so L_t = (alpha / (t + 1))^(1/t) exactly."""
    alpha = 0.001
    lower, upper = confidence_sequence(t, t, alpha)
    closed = (alpha / (t + 1)) ** (1 / t)
    assert upper == 1.0 and lower <= closed * (1 + 1e-14) and lower >= closed - 1e-12


def test_the_betaln_error_model_holds():
    """scipy's betaln is off by far more than a few ulps of its value for lopsided arguments; the error
    bound used by the bisection (64 ulps of the log gammas) must cover it."""
    pairs = [(4, 99_998), (1, 10**7), (2, 3), (101, 1), (70_001, 30_001), (5e6, 5e6), (3, 1e9), (1e5, 17)]
    for x, y in pairs:
        with mpmath.workdps(50):
            exact = mpmath.log(mpmath.beta(mpmath.mpf(x), mpmath.mpf(y)))
            error = abs(mpmath.mpf(float(special.betaln(x, y))) - exact)
        assert error <= _log_beta_error(np.float64(x), np.float64(y)), (x, y, float(error))


def test_confidence_sequence_shapes_and_errors():
    lower, upper = confidence_sequence(np.array([[0, 5], [10, 10]]), np.array([10, 10]), 0.05)
    assert lower.shape == upper.shape == (2, 2) and lower.dtype == np.float64
    assert lower[0, 0] == 0.0 and upper[1, 1] == 1.0 and bool((lower <= upper).all())
    with pytest.raises(ValueError, match="successes <= trials"):
        confidence_sequence(11, 10, 0.05)
    with pytest.raises(ValueError, match="trials >= 1"):
        confidence_sequence(0, 0, 0.05)
    with pytest.raises(TypeError, match="integer"):
        confidence_sequence(0.5, 10, 0.05)
    with pytest.raises(ValueError, match="alpha"):
        confidence_sequence(1, 10, 1.5)


# --- the schedule and the stopping rule -------------------------------------------------------------

def test_round_ends_double_and_never_pass_the_cap():
    assert round_ends(100_000) == [100, 200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 51_200, 100_000]
    assert round_ends(50) == [50] and round_ends(100) == [100] and round_ends(250) == [100, 200, 250]


def test_should_stop_cases():
    sigma, radii = 1.0, (0.5, 1.0)
    phi = stats.norm.cdf
    lower = np.array([phi(1.01), phi(0.6), phi(0.6), 0.3, 0.45, phi(0.6)])
    upper = np.array([0.9999, phi(0.9), phi(1.2), 0.49, 0.7, phi(0.99)])
    stop = should_stop(lower, upper, radii, sigma, 1.0)
    # certified beyond max; cannot reach 1.0; can reach it; upper < 1/2; undecided; cannot reach (0.99 < 1)
    assert stop.tolist() == [True, True, False, True, False, True]
    # a Lipschitz constant divides both radii
    assert should_stop(np.array([phi(2.02)]), np.array([1.0]), radii, sigma, 2.0).tolist() == [True]


def simulate_sequential(p_a: float, sigma: float, alpha: float, radii: tuple[float, ...], cap: int, runs: int,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sequential CERTIFY's estimation on simulated streams of the selected class's votes (Bernoulli(p_a)),
    with the library's schedule, stopping rule and radius: (certified, radius, used)."""
    counts = np.zeros(runs, dtype=np.int64)
    used = np.zeros(runs, dtype=np.int64)
    active = np.ones(runs, dtype=bool)
    previous = 0
    for end in round_ends(cap):
        rows = np.flatnonzero(active)
        counts[rows] += rng.binomial(end - previous, p_a, size=len(rows))
        used[rows] = end
        lower, upper = confidence_sequence(counts[rows], used[rows], alpha)
        active[rows[should_stop(lower, upper, radii, sigma, 1.0)]] = False
        previous = end
        if not active.any():
            break
    certified, radius = radius_from_sequence(counts, used, sigma, alpha)
    return certified, radius, used


@pytest.mark.parametrize("alpha", [0.1, 0.01])
@pytest.mark.parametrize("p_a", [0.9, 0.99])
@pytest.mark.parametrize("where", [0.9, 1.0, 1.1, "spread"])
def test_sequential_radius_exceeds_the_true_radius_at_most_alpha(alpha, p_a, where):
    """Simulated streams, 3000 repeats: P[radius > true radius] <= alpha, with the target radii just below,
    at or just above the true radius (stopping as soon as it is certified there is optional stopping)."""
    sigma, cap, runs = 0.5, 20_000, 3000
    true_radius = sigma * stats.norm.ppf(p_a)
    radii = (0.3 * true_radius, true_radius, 1.3 * true_radius) if where == "spread" else (where * true_radius,)
    rng = np.random.default_rng(abs(hash((alpha, p_a, where))) % 2**32)
    certified, radius, used = simulate_sequential(p_a, sigma, alpha, radii, cap, runs, rng)
    wrong = int((certified & (radius > true_radius)).sum())
    assert at_most_alpha(wrong, runs, alpha), f"{wrong}/{runs} radii exceed the true radius {true_radius}"
    assert bool((used <= cap).all()) and bool((used >= 100).all())
    if where == 0.9:     # reachable target: most runs certify it, and stop well before the cap
        assert (radius >= radii[0]).mean() > 0.5 and np.median(used) < cap


def test_sequential_bound_is_wider_than_fixed_n_clopper_pearson():
    """The price of anytime validity: at the same counts the mixture bound is below Clopper-Pearson's."""
    n = 10_000
    counts = np.array([5000, 9000, 9900, 10_000])
    mixture = radius_from_sequence(counts, np.full(4, n), 1.0, 0.001)[1]
    fixed = radius_from_counts(counts, n, 1.0, 0.001)[1]
    assert bool((mixture <= fixed).all()) and bool((mixture[1:] > 0.8 * fixed[1:]).all())
    # radius_from_counts is radius_from_lower_bound of the Clopper-Pearson bound, bit for bit
    np.testing.assert_array_equal(radius_from_lower_bound(lower_confidence_bound(counts, n, 0.001), 1.0)[1], fixed)


# --- real certifier calls ------------------------------------------------------------------------------

class Step(nn.Module):
    """f(x) = [x > 0] on inputs [B, 1]: scores (-x, x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x, x], dim=1)


def step_certifier(kind: str, sigma: float, n: int, alpha: float, radii, batch_size: int = 50_000, seed: int = 0):
    options = dict(n0=20, n=n, alpha=alpha, batch_size=batch_size, seed=seed, sequential=True, radii=radii,
                   check_range=False)   # inputs are signed distances, not pixels
    if kind == "cohen":
        return CohenRS(Step(), sigma=sigma, **options)
    return FaRSMonteCarlo(nn.Identity(), Step(), sigma=sigma, **options)


@pytest.mark.parametrize("kind", ["cohen", "fars"])
@pytest.mark.parametrize("alpha,where", [(0.1, 1.0), (0.1, 1.1), (0.05, 0.9)])
def test_real_sequential_certify_is_sound_on_the_step_model(kind, alpha, where):
    """300 independent certifications (one per example index) at x = m: a wrong answer (class 0, or
    class 1 with a radius above m) happens with probability <= alpha."""
    sigma, runs, p_a = 0.5, 300, 0.9
    m = sigma * stats.norm.ppf(p_a)
    certifier = step_certifier(kind, sigma, 4000, alpha, (where * m,))
    cert = certifier.certify(torch.full((runs, 1), m), indices=torch.arange(runs))
    pred, radius = cert.prediction.numpy(), cert.radius.numpy()
    wrong = int(((pred == 0) | ((pred == 1) & (radius > m))).sum())
    assert at_most_alpha(wrong, runs, alpha), f"{wrong}/{runs}"
    assert np.all(radius[pred == ABSTAIN] == 0)
    samples = cert.samples.numpy()
    assert cert.samples.dtype == torch.int64 and cert.samples.shape == (runs,)
    assert bool(((samples >= 20 + 100) & (samples <= 20 + 4000)).all())


def test_easy_example_stops_early_and_a_coin_flip_stops_by_futility():
    sigma, cap = 0.5, 100_000
    certifier = step_certifier("cohen", sigma, cap, 0.001, (0.25, 0.5))
    cert = certifier.certify(torch.tensor([[5.0], [0.0]]))
    easy, coin = cert.samples.tolist()
    # x = 5 (pA = 1 - 1e-23): 0.5 is certified after the first rounds
    assert cert.prediction[0] == 1 and cert.radius[0] >= 0.5 and easy <= 20 + 400
    # x = 0 (pA = 1/2): the upper bound soon shows radius 0.25 out of reach; abstain long before the cap
    assert cert.prediction[1] == ABSTAIN and cert.radius[1] == 0 and coin < 20 + cap // 10


def test_without_early_stopping_the_counts_are_the_fixed_n_counts():
    """The rounds continue one estimation stream: drawn in rounds [0, 100), [100, 200), ... up to n it holds
    the same samples, so the same counts, as fixed-n CERTIFY's single draw of n (n spans two noise blocks)."""
    n = MAX_BLOCK_SAMPLES + 300
    certifier = CohenRS(nn.Linear(2, 3), sigma=0.5, n0=10, n=n, batch_size=5000, check_range=False)
    x, indices = torch.rand(2, 2), torch.tensor([4, 9])
    with torch.inference_mode():
        classes = torch.tensor([1, 2])
        full = certifier.class_counts(x, indices, n, Stage.ESTIMATION, classes)
        for row in range(2):
            source = certifier._noise_source(x[row:row + 1], indices[row:row + 1], n, Stage.ESTIMATION)
            total, start = 0, 0
            for end in round_ends(n):
                total += int(certifier._class_counts(x[row:row + 1], source, classes[row:row + 1], start, end)[0])
                start = end
            assert total == int(full[row])


def test_noise_source_ranges_continue_the_stream():
    """Samples [start, stop) drawn in any cut of [0, n) are the rows of the single draw of [0, n)."""
    n, shape = MAX_BLOCK_SAMPLES + 50, (2,)
    source = NoiseSource(5, Stage.ESTIMATION, torch.tensor([3, 8]), n, shape, torch.device("cpu"), torch.float32)
    whole = torch.cat([b.noise for b in source.batches(40_000)])
    for cuts in ([0, 100, 300, 700, MAX_BLOCK_SAMPLES - 7, n], [0, 1, n]):
        fresh = NoiseSource(5, Stage.ESTIMATION, torch.tensor([3, 8]), n, shape, torch.device("cpu"), torch.float32)
        parts = {0: [], 1: []}
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            for batch in fresh.batches(999, lo, hi):
                at = 0
                for segment in batch.segments:
                    parts[segment.row].append(batch.noise[at:at + segment.size])
                    at += segment.size
        assert torch.equal(torch.cat([torch.cat(parts[0]), torch.cat(parts[1])]), whole)
    with pytest.raises(ValueError, match="sample range"):
        next(plan_batches(1, 10, 4, 3, start=5, stop=11))


@pytest.mark.parametrize("kind", ["cohen", "fars"])
def test_sequential_certificates_do_not_depend_on_batching(kind):
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(5, 3)
    indices = torch.tensor([7, 2, 11, 0, 5])

    def make(batch_size: int):
        options = dict(n0=30, n=3000, alpha=0.01, batch_size=batch_size, seed=4, sequential=True, radii=(0.1, 0.4))
        if kind == "cohen":
            return CohenRS(head, sigma=0.25, **options)
        return FaRSMonteCarlo(nn.Identity(), head, sigma=0.25, **options)

    reference = make(64).certify(x, indices)
    for batch_size in (7, 1000, 5000):
        other = make(batch_size).certify(x, indices)
        assert torch.equal(other.prediction, reference.prediction) and torch.equal(other.radius, reference.radius)
        assert torch.equal(other.samples, reference.samples)
    alone = [make(64).certify(x[i:i + 1], indices[i:i + 1]) for i in range(5)]
    assert torch.equal(torch.cat([a.radius for a in alone]), reference.radius)
    assert torch.equal(torch.cat([a.samples for a in alone]), reference.samples)
    flipped = make(64).certify(x.flip(0), indices.flip(0))
    assert torch.equal(flipped.radius.flip(0), reference.radius)
    assert bool((reference.samples <= 30 + 3000).all()) and bool((reference.samples >= 130).all())


# --- samples per example, for every method --------------------------------------------------------------

def test_fixed_n_certificates_report_int64_samples_per_input():
    cert = CohenRS(nn.Linear(2, 3), sigma=0.5, n0=7, n=50).certify(torch.rand(4, 2))
    assert cert.samples.dtype == torch.int64 and cert.samples.tolist() == [57] * 4


def test_certificate_samples_broadcast_and_validation():
    prediction, radius = torch.tensor([0, 1, -1]), torch.zeros(3, dtype=torch.float64)
    assert Certificate(prediction, radius, 0, 0.0).samples.tolist() == [0, 0, 0]
    assert Certificate(prediction, radius, torch.tensor([1, 2, 3], dtype=torch.int32), 0.0).samples.dtype == torch.int64
    with pytest.raises(ValueError, match="shape"):
        Certificate(prediction, radius, torch.tensor([1, 2]), 0.0)
    with pytest.raises(ValueError, match=">= 0"):
        Certificate(prediction, radius, torch.tensor([1, -2, 3]), 0.0)
    with pytest.raises(ValueError, match=">= 0"):
        Certificate(prediction, radius, -1, 0.0)
    with pytest.raises(TypeError, match="integer"):
        Certificate(prediction, radius, torch.tensor([1.0, 2.0, 3.0]), 0.0)
    with pytest.raises(TypeError, match="samples"):
        Certificate(prediction, radius, 1.5, 0.0)


# --- argument errors -------------------------------------------------------------------------------------

def mc(kind: str, **kw):
    if kind == "cohen":
        return CohenRS(nn.Linear(2, 3), **{"sigma": 0.5, "n0": 5, "n": 50, **kw})
    return FaRSMonteCarlo(nn.Identity(), nn.Linear(2, 3), **{"sigma": 0.5, "n0": 5, "n": 50, **kw})


@pytest.mark.parametrize("kind", ["cohen", "fars"])
@pytest.mark.parametrize("radii,match", [(None, "needs the target radii"), ((), "at least one"),
                                         ((0.1, -0.2), "finite and >= 0"), ((math.nan,), "finite and >= 0"),
                                         ((0.1, math.inf), "finite and >= 0")])
def test_bad_radii_with_sequential(kind, radii, match):
    with pytest.raises(ValueError, match=match):
        mc(kind, sequential=True, radii=radii)


@pytest.mark.parametrize("kind", ["cohen", "fars"])
def test_radii_are_sorted_and_refused_without_sequential(kind):
    assert mc(kind, sequential=True, radii=[0.3, 0.0, 0.1]).radii == (0.0, 0.1, 0.3)
    assert check_radii(np.array([0.2, 0.1])) == (0.1, 0.2)
    with pytest.raises(ValueError, match="sequential=True"):
        mc(kind, radii=(0.1,))


@pytest.mark.parametrize("kind", ["cohen", "fars"])
@pytest.mark.parametrize("sequential", [False, True])
def test_sigma_that_overflows_float32_is_refused(kind, sequential):
    extra = dict(sequential=True, radii=(0.1,)) if sequential else {}
    for sigma in (1e300, 1e37):
        with pytest.raises(ValueError, match=r"sigma=1e\+(300|37) .*float32"):
            mc(kind, sigma=sigma, **extra).certify(torch.rand(2, 2))
    assert float(torch.finfo(torch.float32).max) / NOISE_BOUND > 1e36
    mc(kind, sigma=1e36, **extra).certify(torch.rand(1, 2))    # large but representable: runs


def test_sigma_1e300_is_fine_in_float64():
    model = nn.Linear(2, 3).double()
    cert = CohenRS(model, sigma=1e300, n0=5, n=50).certify(torch.rand(2, 2, dtype=torch.float64))
    assert len(cert) == 2


@pytest.mark.parametrize("kind", ["cohen", "fars"])
@pytest.mark.parametrize("sequential", [False, True])
def test_inputs_outside_the_unit_interval_are_refused(kind, sequential):
    extra = dict(sequential=True, radii=(0.1,)) if sequential else {}
    x = torch.tensor([[0.5, 1.25], [-0.5, 0.0]])
    with pytest.raises(ValueError, match=r"\[0, 1\].*min -0\.5 and max 1\.25"):
        mc(kind, **extra).certify(x)
    with pytest.raises(ValueError, match="check_range=False"):
        mc(kind, **extra).predict(x)
    cert = mc(kind, check_range=False, **extra).certify(x)          # the explicit opt-out
    assert len(cert) == 2
    mc(kind, **extra).certify(torch.tensor([[0.0, 1.0]]))           # the closed interval is fine
