"""Statistics of the Monte Carlo certificates (smoothing.statistics), checked against independent formulas and,
above all, against a smoothed classifier whose true certified radius is known exactly.

The 1-D model f(x) = [x > 0] smoothed with N(0, s^2) noise at x = m gives pA = Phi(m / s) and the
smoothed classifier g(x') = [x' > 0] (for |x'| > 0), so the true certified radius at m is exactly m.
A certificate is wrong when it returns class 0, or class 1 with a radius > m; CERTIFY promises this
happens with probability <= alpha. The exact probability of that event and the exact expected radius
follow from the binomial distribution of the counts; the tests compare the empirical figures over
hundreds of independent certifications (one per example index) with those exact values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.proportion import proportion_confint
from torch import nn

from baselines import CohenRS
from fars import ABSTAIN, FaRSMonteCarlo, max_certifiable_radius
from smoothing.monte_carlo import argmax_is
from smoothing.noise import Stage
from smoothing.statistics import binomial_abstain, lower_confidence_bound, radius_from_counts

#: significance of the statistical assertions below (false alarm rate of one assertion)
SIGNIFICANCE = 1e-6


class Step(nn.Module):
    """f(x) = [x > 0] on inputs [B, 1]: scores (-x, x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x, x], dim=1)


# --- independent reference formulas --------------------------------------------------------------

def cp_lower(k: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound by the beta quantile (independent of statsmodels)."""
    k = np.asarray(k)
    with np.errstate(invalid="ignore"):
        low = stats.beta.ppf(alpha, np.maximum(k, 1), n - k + 1)
    return np.where(k > 0, low, 0.0)


def reference_radius(k: np.ndarray, n: int, sigma: float, alpha: float) -> np.ndarray:
    low = cp_lower(k, n, alpha)
    return np.where(low >= 0.5, sigma * stats.norm.ppf(np.clip(low, 0.5, 1.0)), 0.0)


def certify_law(m: float, sigma: float, n0: int, n: int, alpha: float) -> dict[str, float]:
    """Exact law of CERTIFY on the step model at x = m: probability of a wrong certificate, mean and
    standard deviation of the returned radius, probability of abstaining."""
    p_a = stats.norm.cdf(m / sigma)
    # Selection: class 1 wins iff its count among n0 exceeds n0 / 2 (argmax breaks ties toward class 0).
    sel1 = stats.binom.sf(n0 // 2, n0, p_a)          # P[N1 > n0 / 2]
    sel0 = 1.0 - sel1
    k = np.arange(n + 1)
    r = reference_radius(k, n, sigma, alpha)
    pmf1 = stats.binom.pmf(k, n, p_a)               # counts of class 1 when class 1 is selected
    pmf0 = stats.binom.pmf(k, n, 1.0 - p_a)         # counts of class 0 when class 0 is selected
    certified = cp_lower(k, n, alpha) >= 0.5
    # Wrong: class 1 with a radius beyond m, or class 0 certified at all.
    wrong = sel1 * pmf1[r > m].sum() + sel0 * pmf0[certified].sum()
    mean = sel1 * (pmf1 * r).sum() + sel0 * (pmf0 * r).sum()
    second = sel1 * (pmf1 * r ** 2).sum() + sel0 * (pmf0 * r ** 2).sum()
    abstain = sel1 * pmf1[~certified].sum() + sel0 * pmf0[~certified].sum()
    return {"p_a": p_a, "wrong": wrong, "mean": mean, "std": math.sqrt(max(second - mean ** 2, 0.0)),
            "abstain": abstain}


# --- unit checks of the formulas -----------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 10, 100, 1000, 100_000])
@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.2])
def test_lower_confidence_bound_matches_statsmodels_and_beta_quantile(n, alpha):
    k = np.unique(np.linspace(0, n, num=min(n + 1, 41)).astype(int))
    ours = lower_confidence_bound(k, n, alpha)
    expected = proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]
    expected = np.where(k > 0, np.nan_to_num(expected, nan=0.0), 0.0)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours, cp_lower(k, n, alpha), rtol=1e-9, atol=1e-12)
    assert ours[0] == 0.0 and k[0] == 0
    assert np.all(np.diff(ours) > 0), "the bound must increase with the count"
    assert np.all(ours < k / n + 1e-15), "a lower bound never exceeds the point estimate"


def test_lower_confidence_bound_at_all_successes():
    # nA = n: the bound solves p^n = alpha.
    for n in (1, 10, 1000):
        assert lower_confidence_bound(np.array([n]), n, 0.01)[0] == pytest.approx(0.01 ** (1 / n), rel=1e-9)


def test_radius_from_counts_abstains_iff_bound_below_half():
    n, sigma, alpha = 200, 0.5, 0.01
    k = np.arange(n + 1)
    certified, radius = radius_from_counts(k, n, sigma, alpha)
    bound = cp_lower(k, n, alpha)
    np.testing.assert_array_equal(certified, bound >= 0.5)
    assert not certified[n // 2], "nA = n / 2 cannot certify"
    assert certified[-1]
    np.testing.assert_array_equal(radius[~certified], 0.0)
    np.testing.assert_allclose(radius, reference_radius(k, n, sigma, alpha), rtol=1e-9, atol=1e-12)
    assert np.all(np.diff(radius[certified]) > 0)


def _binomial_tail(n: int, k: int, p: float):
    """P[Binomial(n, p) >= k] in 50-digit arithmetic, summed from i = n down (few terms when k is near n)."""
    import mpmath

    with mpmath.workdps(50):
        p = mpmath.mpf(p)
        term = p ** n
        total = term
        for i in range(n, k, -1):                  # term(i - 1) = term(i) * i / (n - i + 1) * (1 - p) / p
            term = term * i / (n - i + 1) * (1 - p) / p
            total += term
        return total


@pytest.mark.parametrize("n", [10, 100, 1000, 10_000, 100_000, 1_000_000])
@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05])
def test_bound_and_radius_lie_below_the_exact_values(n, alpha):
    """scipy's quantile is within ~0.6 ulp of the exact Clopper-Pearson bound but above it about half of
    the time (P[X >= k] then exceeds alpha by up to 4e-11 relative). The returned bound must satisfy
    P[Binomial(n, p) >= k] <= alpha exactly, and the radius must not exceed sigma Phi^-1(p) / L, both
    checked in 50-digit arithmetic; the radius's own slack costs less than 1e-12 of it."""
    import mpmath

    ks = {n, n - 1, n - 2, n - 10, int(n * 0.999), int(n * 0.99), n - 2000}
    if n <= 1000:
        ks |= {n // 2 + 1, int(n * 0.6), int(n * 0.9)}
    ks = np.array(sorted(k for k in ks if n // 2 < k <= n and n - k <= 3000))
    sigma, lipschitz = 0.37, 1.3
    bound = lower_confidence_bound(ks, n, alpha)
    certified, radius = radius_from_counts(ks, n, sigma, alpha, lipschitz)
    for k, p, ok, r in zip(ks.tolist(), bound.tolist(), certified.tolist(), radius.tolist(), strict=True):
        assert _binomial_tail(n, k, p) <= alpha, (n, k, alpha)
        if not ok:
            assert r == 0.0
            continue
        with mpmath.workdps(50):
            exact = sigma * mpmath.sqrt(2) * mpmath.erfinv(2 * mpmath.mpf(p) - 1) / lipschitz
            assert mpmath.mpf(r) <= exact, (n, k, alpha)
            assert mpmath.mpf(r) >= exact * (1 - mpmath.mpf("1e-12"))


@pytest.mark.parametrize("n,expected", [(100_000, 3.81), (10_000, 3.20), (1000, 2.46)])
def test_max_certifiable_radius_facts(n, expected):
    assert max_certifiable_radius(n, 1.0, 0.001) == pytest.approx(expected, abs=0.006)
    assert max_certifiable_radius(n, 0.25, 0.001) == pytest.approx(0.25 * expected, abs=0.0015)
    _, radius = radius_from_counts(np.array([n]), n, 1.0, 0.001)
    assert radius[0] == pytest.approx(max_certifiable_radius(n, 1.0, 0.001), rel=1e-9)


def test_binomial_abstain_matches_scipy():
    rng = np.random.default_rng(0)
    n_a = rng.integers(0, 60, size=200)
    n_b = rng.integers(0, 60, size=200)
    n_a, n_b = np.maximum(n_a, n_b), np.minimum(n_a, n_b)
    keep = n_a + n_b > 0
    n_a, n_b = n_a[keep], n_b[keep]
    ours = binomial_abstain(n_a, n_b, 0.05)
    ref = np.array([stats.binomtest(int(a), int(a + b), 0.5).pvalue > 0.05 for a, b in zip(n_a, n_b, strict=True)])
    np.testing.assert_array_equal(ours, ref)
    assert ours.any() and (~ours).any()


# --- soundness on a classifier with a known certified radius ---------------------------------------

#: unit direction of the projected variant: the head reads s = W z with W = DIRECTION (one row)
DIRECTION = torch.tensor([0.6, 0.8])
KINDS = ["cohen", "fars", "fars-projected"]


def make_certifier(kind: str, sigma: float, n0: int, n: int, alpha: float, seed: int, **options):
    """A certifier of the step classifier, and a function mapping the signed distance m to its inputs.

    The inputs are signed distances, not [0, 1] pixels, so the range check is off; ``options`` go to the
    certifier (e.g. ``sequential=True, radii=...``).

    ``fars-projected``: z in R^2, head = Step(W z) with W = DIRECTION (unit norm), so the smoothed head
    is [DIRECTION . z > 0] and the true radius at z = m DIRECTION is m again; its first layer is a
    narrowing nn.Linear, so the projected sampler draws the noise of W z (1-D) instead of z (2-D).
    """
    if kind == "cohen":
        certifier = CohenRS(Step(), sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=50_000, seed=seed,
                            check_range=False, **options)
    elif kind == "fars":
        certifier = FaRSMonteCarlo(nn.Identity(), Step(), sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=50_000,
                                   seed=seed, check_range=False, **options)
        assert certifier.sampler == "direct"
    else:
        first = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            first.weight.copy_(DIRECTION[None])
        certifier = FaRSMonteCarlo(nn.Identity(), nn.Sequential(first, Step()), sigma=sigma, n0=n0, n=n,
                                   alpha=alpha, batch_size=50_000, seed=seed, check_range=False, **options)
        assert certifier.sampler == "projected"
        return certifier, lambda m, count: (m * DIRECTION).repeat(count, 1)
    return certifier, lambda m, count: torch.full((count, 1), float(m))


# (p_A, sigma, n0, n, alpha): a comfortable margin, and one where selection sometimes picks the wrong class.
SETTINGS = [(0.85, 1.0, 50, 500, 0.1), (0.6, 0.5, 10, 200, 0.05)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("p_a,sigma,n0,n,alpha", SETTINGS)
def test_certify_is_sound_and_matches_exact_law(kind, p_a, sigma, n0, n, alpha):
    runs = 800
    m = sigma * stats.norm.ppf(p_a)
    law = certify_law(m, sigma, n0, n, alpha)
    assert law["wrong"] <= alpha, "Clopper-Pearson + selection must keep the error below alpha"
    certifier, at = make_certifier(kind, sigma, n0, n, alpha, seed=12345)
    x = at(m, runs)
    cert = certifier.certify(x, indices=torch.arange(runs))          # independent noise per index
    pred, radius = cert.prediction.numpy(), cert.radius.numpy()
    assert cert.samples.dtype == torch.int64 and cert.samples.tolist() == [n0 + n] * runs
    assert set(np.unique(pred)) <= {ABSTAIN, 0, 1}
    assert np.all(radius[pred == ABSTAIN] == 0) and np.all(radius >= 0)

    wrong = int(((pred == 0) | ((pred == 1) & (radius > m))).sum())
    # Soundness: the failure count fits a Binomial(runs, alpha) (at significance 1e-6).
    assert wrong <= stats.binom.isf(SIGNIFICANCE, runs, alpha), f"{wrong}/{runs} certificates exceed the true radius"
    # And it fits the exact law of the implementation's math (it is not merely small by luck).
    assert stats.binomtest(wrong, runs, law["wrong"]).pvalue > SIGNIFICANCE, (wrong, runs, law["wrong"])
    abstained = int((pred == ABSTAIN).sum())
    assert stats.binomtest(abstained, runs, law["abstain"]).pvalue > SIGNIFICANCE, (abstained, law["abstain"])

    # Not needlessly conservative: the mean radius equals the exact expectation of sigma Phi^-1(CP lower
    # bound at level alpha), to within 6 standard errors. A two-sided (alpha / 2) bound, reuse of the
    # selection samples or a lost sigma factor would all move the mean by many standard errors.
    se = law["std"] / math.sqrt(runs)
    assert abs(radius.mean() - law["mean"]) < 6 * se + 1e-12, (radius.mean(), law["mean"], se)
    if p_a >= 0.8:
        too_strict = certify_law(m, sigma, n0, n, alpha / 2)["mean"]
        assert law["mean"] - too_strict > 6 * se, "the test must be able to tell alpha from alpha / 2"
        # An anchor in absolute terms: the exact expectation is 0.913 m at p_A = 0.85, n = 500, alpha = 0.1.
        assert radius.mean() > 0.85 * m
    else:
        # Near p_A = 1/2 selection often picks class 0 (then it must abstain): exercised here.
        assert int((pred == ABSTAIN).sum()) > runs // 4


@pytest.mark.parametrize("kind", KINDS)
def test_certify_radius_scales_with_sigma_and_never_exceeds_the_cap(kind):
    n, alpha = 300, 0.01
    for sigma in (0.25, 1.0):
        certifier, at = make_certifier(kind, sigma, 10, n, alpha, seed=1)
        cert = certifier.certify(at(50.0, 200))     # p_A = 1 to machine precision: every count is n
        assert bool((cert.prediction == 1).all())
        np.testing.assert_allclose(cert.radius.numpy(), max_certifiable_radius(n, sigma, alpha), rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_predict_at_exact_tie_rarely_answers(kind):
    """m = 0: p_A = 1/2 exactly, g has no class; PREDICT may answer with probability <= alpha."""
    runs, n, alpha = 1500, 100, 0.1
    certifier, at = make_certifier(kind, 1.0, 10, n, alpha, seed=3)
    out = certifier.predict(at(0.0, runs), indices=torch.arange(runs))
    answered = int((out.prediction != ABSTAIN).sum())
    assert bool((out.radius == 0).all()) and out.samples.tolist() == [n] * runs
    assert answered <= stats.binom.isf(SIGNIFICANCE, runs, alpha), f"{answered}/{runs} answers at a tie"
    # Exact rate: two-sided binomial test on Binomial(n, 1/2) counts.
    k = np.arange(n + 1)
    rejects = np.array([stats.binomtest(int(max(a, n - a)), n, 0.5).pvalue <= alpha for a in k])
    exact = stats.binom.pmf(k, n, 0.5)[rejects].sum()
    assert exact <= alpha
    assert stats.binomtest(answered, runs, exact).pvalue > SIGNIFICANCE, (answered, runs, exact)


@pytest.mark.parametrize("kind", KINDS)
def test_predict_with_a_large_margin_gives_class_one(kind):
    certifier, at = make_certifier(kind, 0.5, 10, 200, 0.001, seed=4)
    out = certifier.predict(at(2.0, 100))
    assert bool((out.prediction == 1).all())
    out = certifier.predict(at(-2.0, 100))
    assert bool((out.prediction == 0).all())


# --- the noise itself ------------------------------------------------------------------------------

class Recorder(nn.Module):
    """The step model that also records every point it classifies."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return torch.cat([-x[:, :1], x[:, :1]], dim=1)


def test_selection_samples_are_not_reused_and_noise_is_gaussian():
    sigma, n0, n = 0.7, 64, 512
    model = Recorder()
    x = torch.tensor([[0.3, -1.0, 2.0]])
    CohenRS(model, sigma=sigma, n0=n0, n=n, alpha=0.01, batch_size=100, seed=9, check_range=False).certify(x)
    seen = torch.cat(model.seen)
    assert seen.shape == (n0 + n, 3), "one forward evaluation per selection and estimation sample"
    selection, estimation = seen[:n0], seen[n0:]
    # No selection sample reappears in the estimation stage.
    assert not bool((selection[:, None, :] == estimation[None, :, :]).all(dim=2).any())
    noise = ((seen - x) / sigma).flatten().double().numpy()
    # Unclipped N(0, sigma^2) noise on every coordinate (a KS test against the standard normal).
    assert stats.kstest(noise, "norm").pvalue > SIGNIFICANCE
    assert noise.min() < -2 and noise.max() > 2
    assert abs(noise.std() - 1) < 0.06
    # Coordinates are not correlated with each other.
    corr = np.corrcoef(((seen - x) / sigma).double().numpy().T)
    assert np.all(np.abs(corr - np.eye(3)) < 0.15)


# --- the vote: class_counts (CERTIFY's estimation) equals the full vote ------------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.data(), m=st.integers(1, 12), k=st.integers(1, 6), transposed=st.booleans())
def test_argmax_is_matches_argmax_with_ties_and_nan(data, m, k, transposed):
    """Few distinct values make ties common; NaN anywhere must follow argmax (first NaN wins)."""
    values = data.draw(st.lists(st.sampled_from([0.0, 1.0, -1.0, 2.0, float("nan"), float("inf"), -0.0]),
                                min_size=m * k, max_size=m * k))
    scores = torch.tensor(values).view(m, k)
    if transposed:   # the projected sampler hands over a [m, K] view of a [K, m] tensor
        scores = scores.T.contiguous().T
    for c in range(k):
        assert torch.equal(argmax_is(scores, c), scores.argmax(dim=1) == c), (scores, c)


class RoundedScores(nn.Module):
    """Scores rounded to a coarse grid, so noisy samples often tie between classes."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(self.linear(x.flatten(1)) * 2) / 2


@pytest.mark.parametrize("kind", ["cohen", "fars-projected"])
@pytest.mark.parametrize("batch_size", [5, 64, 1000])
def test_class_counts_equal_the_full_vote(kind, batch_size):
    """Single-example batches (the fast path) and shared batches give exactly the full vote's counts."""
    torch.manual_seed(0)
    if kind == "cohen":
        certifier = CohenRS(RoundedScores(6, 4), sigma=0.7, n0=10, n=300, batch_size=batch_size)
    else:
        certifier = FaRSMonteCarlo(nn.Identity(), nn.Linear(6, 4), sigma=0.7, n0=10, n=300, batch_size=batch_size,
                                   sampler="projected")
    x = torch.rand(5, 6)
    indices = torch.tensor([3, 1, 4, 1, 5])
    with torch.inference_mode():
        centers = certifier._encode(x)
        full = certifier.sample_counts(centers, indices, 300, Stage.ESTIMATION)
        for classes in (full.argmax(dim=1), torch.tensor([0, 1, 2, 3, 0]), torch.tensor([3, 3, 3, 3, 3])):
            counts = certifier.class_counts(centers, indices, 300, Stage.ESTIMATION, classes)
            assert torch.equal(counts, full.gather(1, classes[:, None])[:, 0])
    assert (full.sum(dim=1) == 300).all()
