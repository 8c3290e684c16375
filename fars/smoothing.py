"""Monte Carlo statistics of randomized smoothing, written once for every sampled method.

Cohen et al. (2019), CERTIFY: with g(x) = argmax_c P[f(x + eps) = c], eps ~ N(0, sigma^2 I),

1. draw ``n0`` noisy samples and take the most frequent class cA (selection);
2. draw ``n`` *fresh* samples and count nA, the samples classified cA (estimation);
3. pA_lower = one-sided (1 - alpha) Clopper-Pearson lower bound on P[f(x + eps) = cA];
4. abstain if pA_lower < 1/2, else g is constant on the l2 ball of radius sigma * Phi^-1(pA_lower).

Guarantee: with probability >= 1 - alpha over the estimation samples, a non-abstaining answer is
g's prediction and the radius is certified for g. Cohen RS samples in input space; FaRS samples in
the embedding space of an L-Lipschitz backbone and divides the radius by L (FaRS, Proposition 1).
Subclasses of :class:`MonteCarloCertifier` only say *where* the noise goes (:meth:`_encode`) and
*what* classifies a noisy point (:meth:`_classify`).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from scipy import special
from scipy.stats import binomtest, norm

from .certificate import (
    ABSTAIN,
    LOW_PRECISION,
    SMALLEST_NORMAL,
    UNIT,
    Certificate,
    call_model,
    check_alpha,
    check_count,
    check_indices,
    check_inputs,
    check_positive,
    timed,
)
from .noise import NoiseBatch, NoiseSource, Stage, check_seed


#: the Clopper-Pearson bound is lowered by this relative amount: scipy's ``betaincinv`` returns the
#: exact quantile to within about 0.6 ulp (checked against 50-digit arithmetic in the tests), above
#: it about half of the time; 64 ulps make the returned bound lie below the exact one
BOUND_SLACK = 64 * UNIT
#: the radius is lowered by this relative amount, for ``ndtri``'s few ulps, the product by sigma and
#: the division by the Lipschitz constant
RADIUS_SLACK = 16 * UNIT


def lower_confidence_bound(successes: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion (vectorised).

    The alpha-quantile of Beta(k, n - k + 1), 0 for k = 0, lowered by :data:`BOUND_SLACK` (relative)
    so that the float returned is at most the exact quantile: P[Binomial(n, p) >= k] <= alpha at the
    returned p, which is what the (1 - alpha) guarantee needs. Computed by the routine behind
    statsmodels' ``proportion_confint(k, n, 2 alpha, method="beta")`` (``special.betaincinv``)
    without the wrappers' ~100 us per call (the tests check agreement to 1e-12 and the inequality in
    50-digit arithmetic).
    """
    successes = np.asarray(successes)
    positive = np.maximum(successes, 1)             # betaincinv needs a > 0; k = 0 is masked below
    low = special.betaincinv(positive, trials - positive + 1, alpha) * (1 - BOUND_SLACK)
    return np.where(successes > 0, np.nan_to_num(low, nan=0.0), 0.0)


def radius_from_counts(n_a: np.ndarray, n: int, sigma: float, alpha: float,
                       lipschitz: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(certified mask, radius) from the estimation counts of the selected class.

    radius = sigma * Phi^-1(pA_lower) / lipschitz, lowered by :data:`RADIUS_SLACK` (relative) so that
    the float is at most the exact value at the returned pA_lower (itself at most the exact
    Clopper-Pearson bound). The mask is False where pA_lower is below 1/2 (abstain); radius is 0 there.
    """
    p_lower = lower_confidence_bound(n_a, n, alpha)
    certified = p_lower >= 0.5
    radius = sigma * special.ndtri(np.clip(p_lower, 0.5, 1.0)) * (1 - RADIUS_SLACK)   # ndtri = norm.ppf
    if lipschitz != 1.0:   # after the slack, so the radius for L is exactly the radius for 1 divided by L
        radius = radius / lipschitz
    # a subnormal radius (a tiny sigma or a huge L) has lost the relative slack: report 0
    return certified, np.where(certified & (radius >= SMALLEST_NORMAL), radius, 0.0)


def max_certifiable_radius(n: int, sigma: float, alpha: float) -> float:
    """The largest radius CERTIFY can return with n samples: sigma * Phi^-1(alpha^(1/n))."""
    return float(sigma * norm.ppf(alpha ** (1.0 / n)))


def binomial_abstain(n_a: np.ndarray, n_b: np.ndarray, alpha: float) -> np.ndarray:
    """PREDICT's test: True where a two-sided binomial test of n_a of n_a + n_b at p = 1/2 has p > alpha."""
    return np.array([binomtest(int(a), int(a + b), 0.5).pvalue > alpha for a, b in zip(n_a, n_b)], dtype=bool)


def _any_training(module: torch.nn.Module) -> bool:
    """Whether ``module`` or any submodule is in training mode (a plain walk: cheaper than ``modules()``)."""
    stack = [module]
    while stack:
        m = stack.pop()
        if m is not None:                    # a registered child may be None
            if m.training:
                return True
            stack.extend(m._modules.values())
    return False


class evaluating:  # noqa: N801 (used like a function: ``with evaluating(model): ...``)
    """Put modules in eval mode for the block (no dropout, frozen batch-norm) and restore them after.

    Every submodule gets its own mode back (a frozen batch-norm inside a training model stays frozen).
    When everything is already in eval mode nothing is switched (certification calls this per image,
    so it is a plain class rather than a generator-based context manager).
    """

    __slots__ = ("modules", "switched")

    def __init__(self, *modules: torch.nn.Module) -> None:
        self.modules = modules
        self.switched: list = []

    def __enter__(self) -> None:
        self.switched = [(top, [(m, m.training) for m in top.modules()]) for top in self.modules
                         if _any_training(top)]
        try:
            for top, _ in self.switched:
                top.eval()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        for _, saved in self.switched:
            for m, mode in saved:   # through train(), which a module may override
                m.train(mode)
            for m, mode in saved:   # then exactly, also for a module shared by several parents
                m.training = mode


def argmax_is(scores: torch.Tensor, c: int) -> torch.Tensor:
    """Boolean [m]: ``scores.argmax(dim=1) == c``, without computing the argmax of every row.

    argmax takes the first maximal index and counts NaN as maximal, so row i votes for c exactly when
    either s_c is NaN and no earlier score is, or no score is NaN, s_c > s_j for j < c and s_c >= s_j
    for j > c. The two maxima are column-block reductions (amax propagates NaN, which is what the
    rule needs), cheap in either memory layout of ``scores``.
    """
    columns = scores.T                      # [K, m]; rows of it are the classes
    own = columns[c]
    wins = torch.ones_like(own, dtype=torch.bool)
    before = columns[:c].amax(dim=0) if c > 0 else None
    if before is not None:
        wins &= own > before
    if c + 1 < columns.shape[0]:
        wins &= own >= columns[c + 1:].amax(dim=0)
    nan = torch.isnan(own)
    if before is not None:
        nan &= ~torch.isnan(before)
    return wins | nan


class MonteCarloCertifier:
    """CERTIFY and PREDICT of a smoothed classifier, shared by Cohen RS and FaRS Monte Carlo.

    Args:
        sigma: noise standard deviation in the space where noise is added (> 0).
        n0: selection samples per input (>= 1).
        n: estimation samples per input (>= 1).
        alpha: failure probability of the certificate, in (0, 1).
        batch_size: noisy points per forward pass (examples share a batch when n is small).
        seed: global seed; with an example's index it decides all of that example's noise.
        lipschitz: Lipschitz constant L of whatever maps inputs to the noisy space; radii are divided by it.
    """

    name = "monte-carlo"

    def __init__(self, sigma: float, n0: int, n: int, alpha: float, batch_size: int, seed: int,
                 lipschitz: float = 1.0) -> None:
        self.sigma = check_positive("sigma", sigma)
        self.n0 = check_count("n0", n0)
        self.n = check_count("n", n)
        self.alpha = check_alpha(alpha)
        self.batch_size = check_count("batch_size", batch_size)
        self.seed = check_seed(seed)
        self.lipschitz = check_positive("lipschitz", lipschitz)

    # --- what subclasses define ----------------------------------------------------------------
    def _modules(self) -> tuple[torch.nn.Module, ...]:
        raise NotImplementedError

    def _device(self) -> torch.device:
        raise NotImplementedError

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """The points around which noise is drawn, [B, ...] (the inputs, or their embeddings)."""
        raise NotImplementedError

    def _classify(self, points: torch.Tensor) -> torch.Tensor:
        """Scores [m, K] of the base classifier at m noisy points."""
        raise NotImplementedError

    def _noise_shape(self, centers: torch.Tensor) -> tuple[int, ...]:
        """Shape of one sample's standard normal noise (by default, that of a center)."""
        return tuple(centers.shape[1:])

    def _perturb(self, centers: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noisy points centers + sigma * noise; ``centers`` is [m, ...] or a single center [1, ...]
        broadcast over the batch."""
        return torch.add(centers, noise, alpha=self.sigma)

    # --- the shared statistics -----------------------------------------------------------------
    def _noisy_scores(self, centers: torch.Tensor, indices: torch.Tensor, num: int,
                      stage: Stage) -> Iterator[tuple[NoiseBatch, torch.Tensor | None, torch.Tensor]]:
        """For each forward batch: (noise batch, row of each sample or None when the batch belongs to one
        example, scores [m, K] of the base classifier at the noisy points)."""
        if centers.dtype in LOW_PRECISION:
            raise TypeError(f"the noisy space is {centers.dtype}: Monte Carlo certification runs in float32 or "
                            "float64 (low-precision sampling can break the guarantee, Voracek & Hein 2023)")
        source = NoiseSource(self.seed, stage, indices, num, self._noise_shape(centers),
                             centers.device, centers.dtype)
        for batch in source.batches(self.batch_size):
            row = batch.row
            if row is not None:   # one example: its center broadcasts over the batch (no gather)
                yield batch, None, self._classify(self._perturb(centers[row:row + 1], batch.noise))
            else:
                rows = batch.rows()
                yield batch, rows, self._classify(self._perturb(centers.index_select(0, rows), batch.noise))

    def sample_counts(self, centers: torch.Tensor, indices: torch.Tensor, num: int, stage: Stage) -> torch.Tensor:
        """Class counts int64 [B, K] of the base classifier over ``num`` noisy samples per center."""
        counts: torch.Tensor | None = None
        for batch, rows, scores in self._noisy_scores(centers, indices, num, stage):
            if counts is None:
                counts = torch.zeros(centers.shape[0], scores.shape[1], dtype=torch.int64, device=centers.device)
            classes = counts.shape[1]
            # max(dim).indices has argmax's semantics (first maximal index, NaN counts as maximal) and its
            # CPU kernel is ~1.6x faster on [batch, few classes] scores
            votes = scores.max(dim=1).indices
            if rows is None:
                counts[batch.row] += torch.bincount(votes, minlength=classes)
            else:
                hits = rows * classes + votes
                counts.view(-1).index_add_(0, hits, torch.ones_like(hits))
        assert counts is not None
        return counts

    def class_counts(self, centers: torch.Tensor, indices: torch.Tensor, num: int, stage: Stage,
                     classes: torch.Tensor) -> torch.Tensor:
        """int64 [B]: of ``num`` noisy samples per center, how many the base classifier assigns to
        ``classes[b]``; exactly ``sample_counts(...)[b, classes[b]]`` (same noise, same argmax rule).

        CERTIFY's estimation needs only this count, and for a batch of one example it is found without
        a full vote (:func:`argmax_is`), which on few classes is several times cheaper.
        """
        targets = [int(c) for c in classes.cpu()]
        classes = classes.to(centers.device)
        counts = torch.zeros(centers.shape[0], dtype=torch.int64, device=centers.device)
        for batch, rows, scores in self._noisy_scores(centers, indices, num, stage):
            if rows is None:
                counts[batch.row] += argmax_is(scores, targets[batch.row]).sum()
            else:
                hits = scores.max(dim=1).indices == classes.index_select(0, rows)
                counts.index_add_(0, rows, hits.to(torch.int64))
        return counts

    def _prepare(self, x: torch.Tensor, indices: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        x = check_inputs(x, self._device())
        return x, check_indices(indices, x.shape[0])

    def certify(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> Certificate:
        """CERTIFY each input of the batch ``x`` ([B, ...], pixels in [0, 1]).

        ``indices`` (int [B], default ``arange(B)``) are the examples' dataset indices: with ``seed``
        they decide each example's noise, so results do not depend on batching.
        """
        device = self._device()
        with timed(device) as elapsed:   # the whole call: validation, both stages, the confidence bound
            x, indices = self._prepare(x, indices)
            with torch.inference_mode(), evaluating(*self._modules()):
                centers = self._encode(x)
                selection = self.sample_counts(centers, indices, self.n0, Stage.SELECTION)
                top = selection.argmax(dim=1)
                n_a = self.class_counts(centers, indices, self.n, Stage.ESTIMATION, top)
                n_a, top = n_a.cpu().numpy(), top.cpu()
            certified, radius = radius_from_counts(n_a, self.n, self.sigma, self.alpha, self.lipschitz)
            prediction = torch.where(torch.from_numpy(certified), top, torch.full_like(top, ABSTAIN))
            radius_t = torch.from_numpy(radius).to(torch.float64)
        return Certificate(prediction, radius_t, samples=self.n0 + self.n, seconds=elapsed[0])

    def predict(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> Certificate:
        """PREDICT (Cohen et al.): the smoothed class, or abstain when a binomial test of the top two
        counts over ``n`` samples cannot tell them apart at level ``alpha``.

        Returns a :class:`Certificate` whose radius is 0 everywhere (a prediction, not a certificate).
        With probability >= 1 - alpha, a non-abstaining answer equals the smoothed classifier's class.
        """
        device = self._device()
        with timed(device) as elapsed:   # the whole call: validation, sampling, the binomial test
            x, indices = self._prepare(x, indices)
            with torch.inference_mode(), evaluating(*self._modules()):
                counts = self.sample_counts(self._encode(x), indices, self.n, Stage.PREDICTION)
                if counts.shape[1] < 2:
                    raise ValueError("the classifier returns a single score per input; PREDICT needs >= 2 classes")
                top2 = counts.topk(2, dim=1)
                values, classes = top2.values.cpu().numpy(), top2.indices[:, 0].cpu()
            abstain = torch.from_numpy(binomial_abstain(values[:, 0], values[:, 1], self.alpha))
            prediction = torch.where(abstain, torch.full_like(classes, ABSTAIN), classes)
        return Certificate(prediction, torch.zeros(len(prediction), dtype=torch.float64),
                           samples=self.n, seconds=elapsed[0])


def validate_classifier(model: torch.nn.Module, what: str) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{what} must be a torch.nn.Module, got {type(model).__name__}")
    return model


__all__ = [
    "MonteCarloCertifier",
    "lower_confidence_bound",
    "radius_from_counts",
    "max_certifiable_radius",
    "binomial_abstain",
    "argmax_is",
    "evaluating",
    "validate_classifier",
    "call_model",
]
