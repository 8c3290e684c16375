"""Monte Carlo CERTIFY and PREDICT of randomized smoothing, written once for every sampled method.

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

Sequential CERTIFY (``sequential=True``, target ``radii``): step 1 as above; step 2 draws the
estimation samples in geometric rounds (:func:`smoothing.confidence_sequence.round_ends`: 100, 200, 400, ...
samples in all, the last round cut so the total never exceeds the cap ``n``) and after each round bounds
pA by the anytime-valid beta-binomial mixture confidence sequence; it stops when the certified radius
reaches ``max(radii)``, when the sequence's upper bound shows that the next target radius cannot be
reached (futility, which includes abstention), or at the cap (:func:`smoothing.confidence_sequence.should_stop`).
The certificate is that of the lower bound at the stop, valid at any stopping time (Ville's inequality),
so the guarantee is the same (1 - alpha) one. Round k continues the estimation stream of cap ``n``:
sample j of an example is the same noise whatever the rounds, the batch size or the batch.

Steps 1-2 (the sampling, with the deterministic noise of :mod:`smoothing.noise`) are here; steps 3-4
and PREDICT's test are the count statistics of :mod:`smoothing.statistics`. Part of the
method-neutral core.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .certificate import ABSTAIN, Certificate
from .checks import (
    LOW_PRECISION,
    all_finite,
    check_alpha,
    check_count,
    check_finite_scores,
    check_indices,
    check_inputs,
    check_lipschitz,
    check_module_precision,
    check_positive,
    evaluating,
    fixed_weights,
    timed,
)
from .confidence_sequence import check_radii, confidence_sequence, round_ends, should_stop
from .noise import NoiseSource, Stage, check_seed
from .statistics import binomial_abstain, radius_from_counts, radius_from_lower_bound

#: a bound on |standard normal| used to refuse sigmas whose noise overflows the noisy space's dtype
#: (P[|N(0, 1)| > 40] is about 1e-350: no draw of any float generator reaches it)
NOISE_BOUND = 40.0


def check_sigma_fits(sigma: float, dtype: torch.dtype) -> None:
    """Refuse a sigma whose noise would overflow ``dtype`` (sigma * NOISE_BOUND above ``finfo(dtype).max``).

    Overflowed noise is +-inf, and the classifier's votes on such points say nothing about the smoothed
    classifier (``fars-mc --sigma 1e300`` on float32 embeddings certified class 0 at radius 1.5e300).

    Raises:
        ValueError: naming sigma and the dtype.
    """
    largest = torch.finfo(dtype).max
    if not math.isfinite(sigma * NOISE_BOUND) or sigma * NOISE_BOUND > largest:
        raise ValueError(f"sigma={sigma:g} is too large for the noisy space's dtype {dtype}: sigma * noise overflows "
                         f"(sigma * {NOISE_BOUND:g} > {largest:g}); use a smaller sigma or a float64 model")


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
        sequential: sequential CERTIFY (module doc): ``n`` becomes the cap on estimation samples per input.
        radii: the target radii of sequential CERTIFY (pixel units, finite, >= 0; stored sorted); required
            with ``sequential=True`` and refused without it.
        check_range: refuse inputs outside [0, 1] (the pixel range of the radii's units); False accepts any
            finite inputs.

    Raises:
        TypeError / ValueError: for arguments of the wrong type or out of range, naming them.
    """

    name = "monte-carlo"

    def __init__(self, sigma: float, n0: int, n: int, alpha: float, batch_size: int, seed: int,
                 lipschitz: float = 1.0, *, sequential: bool = False, radii: Sequence[float] | None = None,
                 check_range: bool = True) -> None:
        self.sigma = check_positive("sigma", sigma)
        self.n0 = check_count("n0", n0)
        self.n = check_count("n", n)
        self.alpha = check_alpha(alpha)
        self.batch_size = check_count("batch_size", batch_size)
        self.seed = check_seed(seed)
        self.lipschitz = check_lipschitz(lipschitz)
        self.sequential = bool(sequential)
        if not self.sequential and radii is not None:
            raise ValueError("radii are the targets of sequential certification: pass sequential=True with them")
        self.radii: tuple[float, ...] | None = check_radii(radii) if self.sequential else None
        self.check_range = bool(check_range)

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
    def _noise_source(self, centers: torch.Tensor, indices: torch.Tensor, num: int, stage: Stage) -> NoiseSource:
        """The noise of ``stage`` for the examples ``indices`` (streams of ``num`` samples), after checking
        that the noisy space can hold it."""
        if centers.dtype in LOW_PRECISION:
            raise TypeError(f"the noisy space is {centers.dtype}: Monte Carlo certification runs in float32 or "
                            "float64 (low-precision sampling can break the guarantee, Voracek & Hein 2023)")
        check_sigma_fits(self.sigma, centers.dtype)
        return NoiseSource(self.seed, stage, indices, num, self._noise_shape(centers), centers.device, centers.dtype)

    def _noisy_scores(self, centers: torch.Tensor, source: NoiseSource, start: int = 0,
                      stop: int | None = None) -> Iterator[tuple[int | torch.Tensor, torch.Tensor]]:
        """For each forward batch of samples ``[start, stop)`` of ``source``: (rows, scores [m, K] of the base
        classifier at the noisy points), where ``rows`` is the example's row (an int) when the batch belongs
        to one example, else the row of each sample (int64 [m])."""
        # non-finite scores must not vote; the flag stays on the device (no sync per batch) and is
        # checked once, after the last batch, before the consumer returns any count
        finite = torch.ones((), dtype=torch.bool, device=centers.device)
        for batch in source.batches(self.batch_size, start, stop):
            row = batch.row
            if row is not None:   # one example: its center broadcasts over the batch (no gather)
                key: int | torch.Tensor = row
                scores = self._classify(self._perturb(centers[row:row + 1], batch.noise))
            else:
                key = batch.rows()
                scores = self._classify(self._perturb(centers.index_select(0, key), batch.noise))
            finite &= all_finite(scores)
            yield key, scores
        check_finite_scores(finite, "the base classifier")

    def sample_counts(self, centers: torch.Tensor, indices: torch.Tensor, num: int, stage: Stage) -> torch.Tensor:
        """Class counts int64 [B, K] of the base classifier over ``num`` noisy samples per center."""
        counts: torch.Tensor | None = None
        for rows, scores in self._noisy_scores(centers, self._noise_source(centers, indices, num, stage)):
            if counts is None:
                counts = torch.zeros(centers.shape[0], scores.shape[1], dtype=torch.int64, device=centers.device)
            classes = counts.shape[1]
            # max(dim).indices has argmax's semantics (first maximal index, NaN counts as maximal) and its
            # CPU kernel is ~1.6x faster on [batch, few classes] scores
            votes = scores.max(dim=1).indices
            if isinstance(rows, int):
                counts[rows] += torch.bincount(votes, minlength=classes)
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
        return self._class_counts(centers, self._noise_source(centers, indices, num, stage), classes)

    def _class_counts(self, centers: torch.Tensor, source: NoiseSource, classes: torch.Tensor, start: int = 0,
                      stop: int | None = None) -> torch.Tensor:
        """int64 [B]: of samples ``[start, stop)`` of ``source`` per center, how many vote ``classes[b]``."""
        targets = [int(c) for c in classes.cpu()]
        classes = classes.to(centers.device)
        counts = torch.zeros(centers.shape[0], dtype=torch.int64, device=centers.device)
        for rows, scores in self._noisy_scores(centers, source, start, stop):
            if isinstance(rows, int):
                counts[rows] += argmax_is(scores, targets[rows]).sum()
            else:
                hits = scores.max(dim=1).indices == classes.index_select(0, rows)
                counts.index_add_(0, rows, hits.to(torch.int64))
        return counts

    def _sequential_estimate(self, centers: torch.Tensor, indices: torch.Tensor,
                             classes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Sequential estimation (module doc): (lower, used) for each example: float64 [B], the lower end of
        the confidence sequence on P[f(x + eps) = classes[b]] when sampling stopped, and int64 [B], the
        estimation samples drawn (<= ``n``).

        Examples are sampled one after the other (each round needs the previous one's counts), each with
        its own noise source, so the block of the stream last drawn is reused by the next round; each
        bound is computed for one example at a time, so an example's result never depends on its batch.
        """
        assert self.radii is not None
        ends = round_ends(self.n)
        lowers = np.zeros(centers.shape[0], dtype=np.float64)
        used = np.zeros(centers.shape[0], dtype=np.int64)
        for row in range(centers.shape[0]):
            center, target = centers[row:row + 1], classes[row:row + 1]
            source = self._noise_source(center, indices[row:row + 1], self.n, Stage.ESTIMATION)
            count, start = 0, 0
            for end in ends:
                count += int(self._class_counts(center, source, target, start, end)[0])
                start = end
                lower, upper = confidence_sequence(np.array([count]), np.array([end]), self.alpha)
                if should_stop(lower, upper, self.radii, self.sigma, self.lipschitz)[0]:
                    break
            lowers[row], used[row] = lower[0], start
        return lowers, used

    def _prepare(self, x: torch.Tensor, indices: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        for module in self._modules():
            check_module_precision(module, f"the model ({type(module).__name__})")
        x = check_inputs(x, self._device(), check_range=self.check_range)
        return x, check_indices(indices, x.shape[0])

    def certify(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> Certificate:
        """CERTIFY each input of the batch ``x`` ([B, ...], pixels in [0, 1]).

        ``indices`` (int [B], default ``arange(B)``) are the examples' dataset indices: with ``seed``
        they decide each example's noise, so results do not depend on batching.

        Returns a :class:`Certificate` whose ``samples`` (int64 [B]) is ``n0`` + the estimation samples
        used: ``n0 + n`` for fixed-n CERTIFY, at most that for sequential CERTIFY.

        Raises:
            TypeError / ValueError: invalid inputs or indices (:func:`check_inputs`, outside [0, 1] unless
                ``check_range=False``), a model with float16 or bfloat16 weights (TypeError,
                :func:`check_module_precision`), a sigma that overflows the noisy space's dtype, non-finite scores.
        """
        device = self._device()
        with timed(device) as elapsed:   # the whole call: validation, both stages, the confidence bound
            x, indices = self._prepare(x, indices)
            with torch.inference_mode(), evaluating(*self._modules()), fixed_weights():
                centers = self._encode(x)
                selection = self.sample_counts(centers, indices, self.n0, Stage.SELECTION)
                top = selection.argmax(dim=1)
                if self.sequential:
                    lower, used = self._sequential_estimate(centers, indices, top)
                else:
                    estimation = self.class_counts(centers, indices, self.n, Stage.ESTIMATION, top)
                    n_a, used = estimation.cpu().numpy(), np.full(len(top), self.n, dtype=np.int64)
                top = top.cpu()
            if self.sequential:   # the bound of the last round = radius_from_sequence(n_a, used, ...)
                certified, radius = radius_from_lower_bound(lower, self.sigma, self.lipschitz)
            else:
                certified, radius = radius_from_counts(n_a, self.n, self.sigma, self.alpha, self.lipschitz)
            prediction = torch.where(torch.from_numpy(certified), top, torch.full_like(top, ABSTAIN))
            radius_t = torch.from_numpy(radius).to(torch.float64)
        return Certificate(prediction, radius_t, samples=torch.from_numpy(used + self.n0), seconds=elapsed[0])

    def predict(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> Certificate:
        """PREDICT (Cohen et al.): the smoothed class, or abstain when a binomial test of the top two
        counts over ``n`` samples cannot tell them apart at level ``alpha``.

        Returns a :class:`Certificate` whose radius is 0 everywhere (a prediction, not a certificate).
        With probability >= 1 - alpha, a non-abstaining answer equals the smoothed classifier's class.
        """
        device = self._device()
        with timed(device) as elapsed:   # the whole call: validation, sampling, the binomial test
            x, indices = self._prepare(x, indices)
            with torch.inference_mode(), evaluating(*self._modules()), fixed_weights():
                counts = self.sample_counts(self._encode(x), indices, self.n, Stage.PREDICTION)
                if counts.shape[1] < 2:
                    raise ValueError("the classifier returns a single score per input; PREDICT needs >= 2 classes")
                top2 = counts.topk(2, dim=1)
                values, classes = top2.values.cpu().numpy(), top2.indices[:, 0].cpu()
            abstain = torch.from_numpy(binomial_abstain(values[:, 0], values[:, 1], self.alpha))
            prediction = torch.where(abstain, torch.full_like(classes, ABSTAIN), classes)
        return Certificate(prediction, torch.zeros(len(prediction), dtype=torch.float64),
                           samples=self.n, seconds=elapsed[0])


__all__ = [
    "NOISE_BOUND",
    "MonteCarloCertifier",
    "argmax_is",
    "check_sigma_fits",
]
