"""FaRS closed form: the exact certified radius of a linear head on a Lipschitz backbone."""

from __future__ import annotations

import itertools
import math
import sys
from dataclasses import dataclass
from functools import cached_property

import torch

from smoothing.certificate import ABSTAIN, SMALLEST_NORMAL, Certificate, divide_radius, flush_subnormal
from smoothing.checks import (
    check_indices,
    check_inputs,
    check_lipschitz,
    evaluating,
    timed,
    validate_classifier,
)
from smoothing.rounding import TINY, norm_upper_bound, rounding_factor

from .memo import WeightDerived

#: batches up to this size are finished with Python floats (see :func:`linear_head_radius`)
SCALAR_ROWS = 16
#: the largest finite float64
LARGEST = sys.float_info.max
#: pairwise row differences are formed in chunks of at most this many float64 entries (128 MiB), so a
#: 1000-class head with 2048-dimensional embeddings does not need K x K x d = 16 GiB at once
GEOMETRY_CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class HeadGeometry:
    """A linear head in float64: ``weight`` [K, d], ``bias`` [K] or None, ``row_norms`` >= ||w_k||_2 and
    ``abs_bias`` |b_k| (zeros without a bias) [K], ``gaps[c, j]`` >= ||w_c - w_j||_2 ([K, K]; exactly 0
    for identical rows), all rounded up; ``rivals[c]`` lists (j, gaps[c, j], row_norms[j], abs_bias[j])
    for every j != c and ``own[c]`` = (row_norms[c], abs_bias[c]), as Python floats, for the single-image
    path (built on first use: a 1000-class head's rivals take ~120 MiB of Python objects)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    row_norms: torch.Tensor
    abs_bias: torch.Tensor
    gaps: torch.Tensor

    @cached_property
    def rivals(self) -> tuple:
        norms, biases, gaps = self.row_norms.tolist(), self.abs_bias.tolist(), self.gaps.tolist()
        return tuple(tuple((j, gaps[c][j], norms[j], biases[j]) for j in range(len(norms)) if j != c)
                     for c in range(len(norms)))

    @cached_property
    def own(self) -> tuple:
        return tuple(zip(self.row_norms.tolist(), self.abs_bias.tolist(), strict=True))


def head_geometry(weight: torch.Tensor, bias: torch.Tensor | None) -> HeadGeometry:
    """The :class:`HeadGeometry` of the linear head (weight, bias).

    Norms are computed with a per-row scale (:func:`norm_upper_bound`), so tiny or huge rows neither
    underflow to 0 nor overflow, and rounded up.
    """
    w = weight.detach().double()
    b = None if bias is None else bias.detach().double()
    k, d = w.shape
    rows = max(1, GEOMETRY_CHUNK_ELEMENTS // max(1, k * d))                  # [rows, K, d] differences at a time
    gaps = torch.cat([norm_upper_bound(w[i:i + rows, None, :] - w[None, :, :]) for i in range(0, k, rows)])  # [K, K]
    row_norms = norm_upper_bound(w)
    abs_bias = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device) if b is None else b.abs()
    return HeadGeometry(w, b, row_norms, abs_bias, gaps)


def norm_scale(d: int) -> float:
    """A float >= sqrt(d) (1 + 2u) / (1 - u): ``abs_max * norm_scale(d)``, rounded to nearest, is >= ||z||_2
    for any z in R^d with max |z_i| = abs_max, since ||z||_2 <= sqrt(d) ||z||_inf (when the product is in the
    normal range; :func:`linear_head_radius` adds :data:`TINY` for a subnormal one)."""
    return math.sqrt(d) * (1 + rounding_factor(2))   # sqrt and product each round by at most u


def _abs_max_scalar(row: list[float]) -> float:
    """max_i |row_i| with ``amax``'s rule: NaN when some entry is NaN (Python's max would skip it)."""
    if math.isnan(sum(row)) and any(v != v for v in row):   # a NaN sum: some NaN, or +inf and -inf
        return math.nan
    return max(abs(max(row)), abs(min(row)))   # without NaN, the largest |z_i| is at the max or the min


def _argmax_scalar(row: list[float]) -> int:
    """``argmax``'s rule on Python floats: the first maximal entry, NaN counts as maximal."""
    if not math.isnan(sum(row)):               # no NaN: max keeps the first of equal maxima, index finds it
        return row.index(max(row))
    for j, v in enumerate(row):                # the first NaN
        if v != v:
            return j
    return row.index(max(row))                 # +inf and -inf summed to NaN, no NaN entry


def _radius_tensor(s: torch.Tensor, z_size: torch.Tensor, g: HeadGeometry, gamma: float,
                   absolute: float) -> tuple[torch.Tensor, torch.Tensor]:
    size = z_size[:, None] * g.row_norms[None, :] + g.abs_bias[None, :]      # >= |W| |z| + |b|
    gaps = g.gaps
    top = s.argmax(dim=1)[:, None]
    margin = torch.sub(s.gather(1, top), s)                                  # s_c - s_j as computed
    error = (size.gather(1, top) + size + margin.abs()) * gamma               # bound on its rounding error
    # (margin lower bound) / (gap upper bound): +inf where w_j = w_c and the margin is surely positive;
    # a finite gap whose quotient overflows gives the largest float (a lower bound), not +inf
    gap = gaps.index_select(0, top[:, 0])
    distance = torch.sub(margin, error).sub_(absolute).div_(gap)
    distance = torch.where(gap > 0, distance.clamp(max=LARGEST), distance)
    distance.scatter_(1, top, math.inf)                                       # j = c is not a rival
    nearest = distance.amin(dim=1)                                            # NaN propagates
    certified = nearest > 0
    radius = nearest * (1 - rounding_factor(1))                                         # the division's rounding
    # a subnormal quotient has an absolute, not a relative, rounding error: radius 0 (the class stays exact)
    radius = torch.where(nearest >= SMALLEST_NORMAL, radius, 0.0)
    return torch.where(certified, top[:, 0], ABSTAIN).cpu(), radius.cpu()


def _radius_scalar(s: list[list[float]], z_size: list[float], g: HeadGeometry, gamma: float,
                   absolute: float) -> tuple[torch.Tensor, torch.Tensor]:
    # the same IEEE float64 operations as _radius_tensor, one row at a time (no per-op dispatch cost)
    predictions, radii = [], []
    own, rivals = g.own, g.rivals
    for row, zs in zip(s, z_size, strict=True):
        c = _argmax_scalar(row)
        top = row[c]
        norm, bias = own[c]
        size_c = zs * norm + bias
        nearest = math.inf
        for j, gap, norm, bias in rivals[c]:
            margin = top - row[j]
            lower = margin - (size_c + (zs * norm + bias) + abs(margin)) * gamma - absolute
            if gap != 0:
                distance = min(lower / gap, LARGEST)   # min(NaN, .) stays NaN, as clamp does
            else:                              # lower / 0, as IEEE (and torch) define it
                distance = math.inf if lower > 0 else (-math.inf if lower < 0 else math.nan)
            if distance != distance:           # NaN propagates, as in amin
                nearest = math.nan
                break
            if distance < nearest:
                nearest = distance
        if nearest > 0:
            predictions.append(c)
            radii.append(nearest * (1 - rounding_factor(1)) if nearest >= SMALLEST_NORMAL else 0.0)
        else:
            predictions.append(ABSTAIN)
            radii.append(0.0)
    if len(radii) == 1:                        # one image: torch.full is the cheapest way to a tensor
        return (torch.full((1,), predictions[0], dtype=torch.int64),
                torch.full((1,), radii[0], dtype=torch.float64))
    return torch.tensor(predictions, dtype=torch.int64), torch.tensor(radii, dtype=torch.float64)


def linear_head_radius(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       geometry: HeadGeometry | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, radius) of the linear classifier argmax(W z + b) at embeddings z [B, d], on the CPU.

    The exact l2 distance from z to the set where another class ties or wins (a union of
    half-spaces) is min_{j != c} (s_c - s_j) / ||w_c - w_j||_2. The returned radius is a proven lower
    bound of it for the stored values of z, W and b (float32 or float64) in exact arithmetic: the
    logits s = W z + b are computed in float64, each margin is lowered by a bound on its rounding
    error, ``rounding_factor(d + 4)`` (S_c + S_j + |s_c - s_j|) (>= 2 gamma_{d+4}, :mod:`smoothing.rounding`)
    with S_k = ||w_k|| Z + |b_k| >= sum_i |w_ki z_i| + |b_k| (Cauchy-Schwarz, with Z = sqrt(d) max_i |z_i|
    >= ||z||_2; norms rounded up), and by
    (d + 2) x 2^-1074 for products that underflow (the relative bound does not cover them); each gap is
    rounded up, and the quotient is rounded down (a quotient below the normal range, whose rounding error
    is not relative, gives radius 0 with the class kept). A class whose row equals w_c and whose bias is surely
    lower can never overtake c (infinite distance). When some margin is not surely positive (a tie, a
    margin within round-off of 0, NaN or overflowing logits) the method abstains with radius 0.
    ``geometry`` is :func:`head_geometry` of (weight, bias), when the caller already has it.

    The per-class bookkeeping runs as tensor ops, or for up to :data:`SCALAR_ROWS` rows (a single
    image) as the same float64 operations on Python floats, which avoids the fixed cost of a dozen
    tensor ops. Both give bit-identical results for the same logits (tested); Z is exact up to one
    rounded product in both (a maximum needs no rounding), so it is identical too.
    """
    g = geometry if geometry is not None else head_geometry(weight, bias)
    z64 = z.double()
    s = z64 @ g.weight.T if g.bias is None else torch.addmm(g.bias, z64, g.weight.T)
    d = z.shape[1]
    # Z >= ||z||_2: + TINY covers a product rounded in the subnormal range and changes nothing above it
    scale, gamma, absolute = norm_scale(d), rounding_factor(d + 4), (d + 2) * TINY
    if s.shape[0] <= SCALAR_ROWS:
        z_size = [_abs_max_scalar(row) * scale + TINY for row in z64.tolist()]
        return _radius_scalar(s.tolist(), z_size, g, gamma, absolute)
    return _radius_tensor(s, z64.abs().amax(dim=1) * scale + TINY, g, gamma, absolute)


def model_dtype(module: torch.nn.Module) -> torch.dtype | None:
    """The dtype of ``module``'s first floating-point parameter or buffer (None when it has none)."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def refuse_meta(x: object, device: torch.device, what: str) -> None:
    """Refuse inputs or a model on the ``meta`` device (shapes without values: nothing can be certified).

    Raises:
        ValueError: ``x`` is a meta tensor, or ``device`` (the model's) is ``meta``.
    """
    if isinstance(x, torch.Tensor) and x.device.type == "meta":
        raise ValueError("inputs are on the 'meta' device: they have a shape but no values to certify; "
                         "create them on the CPU or a GPU")
    if device.type == "meta":
        raise ValueError(f"the {what}'s parameters are on the 'meta' device (no values): materialise it "
                         "(module.to_empty(device=...)) and load its weights before certifying")


def to_model_dtype(x: torch.Tensor, dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(``x`` in the model's ``dtype``, an upper bound [B] on ||x - converted||_2 per input, or None when exact).

    A lower-precision input is converted up exactly (offset None). A higher-precision one (float64 for a
    float32 model) is rounded to nearest; the difference is formed exactly in float64 (the rounded value
    keeps the leading bits of x), and its norm rounded up, so a radius r around the rounded input
    certifies r - offset around x.
    """
    if dtype is None or x.dtype == dtype:
        return x, None
    converted = x.to(dtype)
    if torch.finfo(dtype).bits >= torch.finfo(x.dtype).bits:
        return converted, None
    diff = (x.double() - converted.double()).flatten(1)
    return converted, norm_upper_bound(diff)


def lower_by_offset(prediction: torch.Tensor, radius: torch.Tensor,
                    offset: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, radius) around the given inputs from those around their rounded copies ``offset`` away:
    radius - offset, rounded down, abstaining (radius 0) where it is not > 0."""
    if offset is None:
        return prediction, radius
    lowered = (radius - offset.to(radius.device)) * (1 - rounding_factor(1))   # the subtraction rounds by at most 1 ulp
    keep = (lowered > 0) & (prediction != ABSTAIN)
    return (torch.where(keep, prediction, torch.full_like(prediction, ABSTAIN)),
            flush_subnormal(torch.where(keep, lowered, torch.zeros_like(lowered))))


def checked_embeddings(backbone: torch.nn.Module, x: torch.Tensor, indices: torch.Tensor | None, device: torch.device,
                       features: int, check_range: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(z = backbone(x) [B, features], offset): the inputs checked (device, range, NaN, indices) and rounded to
    the backbone's dtype (``offset``: their distance to the rounded copy, see :func:`to_model_dtype`), then
    embedded. Call it inside ``torch.inference_mode()`` and :class:`evaluating`.

    Raises:
        TypeError, ValueError: as :func:`check_inputs` and :func:`check_indices`; ValueError for embeddings of
            another shape than [B, features].
    """
    refuse_meta(x, device, "model")
    x = check_inputs(x, device, check_range=check_range)
    check_indices(indices, x.shape[0])
    x, offset = to_model_dtype(x, model_dtype(backbone))
    z = backbone(x)
    if z.dim() != 2 or z.shape[1] != features:
        raise ValueError(f"backbone returns embeddings of shape {tuple(z.shape)}, the head expects [B, {features}]")
    return z, offset


class FaRSClosedForm:
    """Deterministic FaRS certificate for a one-layer linear head s = W z + b on z = backbone(x).

    r_x = min_{j != c} (s_c - s_j) / ||w_c - w_j||_2 / lipschitz, exact in embedding space, sound in
    pixel space when the backbone is ``lipschitz``-Lipschitz in l2. No sampling (``samples`` = 0),
    abstains only on ties.

    Numerics. The embedding z = backbone(x) is computed in the backbone's dtype (float32 for the shipped
    models); everything after it (logits, margins, gaps, the division) runs in float64 with proven
    rounding bounds (:func:`linear_head_radius`), so the radius is exact (rounded down) for the embedding
    actually computed. That embedding carries the backbone's own round-off, whose value depends on the
    order of its reductions, which BLAS/oneDNN choose by the number of intra-op threads
    (``torch.set_num_threads``, ``OMP_NUM_THREADS``) and by the batch the image is in. So results are not
    bit for bit the same across thread counts: since the radius is a 1-Lipschitz function of z in l2,
    two runs differ by at most ||z_1 - z_2||_2 / lipschitz. Measured on the shipped Fashion-MNIST
    model over its 1,000 embedded images, 1 vs 2 threads: ||z_1 - z_2|| <= 2.5e-6 (6.5e-7 of ||z||),
    radii within 7e-7 absolute, predictions identical (a prediction can differ only where the margin is
    within that round-off, i.e. at a radius below ~1e-6). ``tests/test_closed_form.py`` checks 1e-5
    absolute in two processes. Like every certificate computed with a floating-point network (Cohen's
    and the Lipschitz-margin baseline alike), the guarantee is for the network evaluated in exact
    arithmetic, up to that forward round-off.

    Inputs: float32 or float64, in [0, 1] (``check_range=True``, the default, refuses others: the
    radius is an l2 distance in [0, 1]-pixel units). With ``check_range=False`` any finite inputs are
    accepted and the radius is in the units of the space the inputs are given in. Inputs of a lower
    precision than the backbone are converted exactly; inputs of a higher one (float64 for a float32
    backbone) are rounded to its dtype and the radius is lowered by the distance to the rounded copy
    (:func:`to_model_dtype`), so it holds around the inputs as given.

    Raises (``certify``):
        TypeError: inputs that are not a floating-point tensor of float32 or float64.
        ValueError: a wrong rank, an empty batch, NaN or inf, entries outside [0, 1] (``check_range``),
            inputs or a model on the ``meta`` device, embeddings of the wrong shape.
    """

    name = "fars-closed"

    def __init__(self, backbone: torch.nn.Module, head: torch.nn.Linear, lipschitz: float = 1.0,
                 check_range: bool = True) -> None:
        self.backbone = validate_classifier(backbone, "backbone")
        if not isinstance(head, torch.nn.Linear):
            raise TypeError(
                f"the closed form needs a one-layer nn.Linear head, got {type(head).__name__}; "
                "use FaRSCrown for an nn.Sequential of nn.Linear and nn.ReLU layers, or FaRSMonteCarlo for any head"
            )
        self.head = head
        self.lipschitz = check_lipschitz(lipschitz)
        self.check_range = bool(check_range)
        self._geometry = WeightDerived()   # the head's float64 weights and pairwise gaps, for its current weights

    def certify(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> Certificate:
        # the embedding feeds the head, so backbone and head share a device: read it off the head's weight
        device = self.head.weight.device
        # the whole call: validation, forward pass, radius
        with timed(device) as elapsed, torch.inference_mode(), evaluating(self.backbone, self.head):
            z, offset = checked_embeddings(self.backbone, x, indices, device, self.head.in_features,
                                           self.check_range)
            params = (self.head.weight,) if self.head.bias is None else (self.head.weight, self.head.bias)
            geometry = self._geometry.get(params, lambda: head_geometry(self.head.weight, self.head.bias))
            prediction, radius = linear_head_radius(z, self.head.weight, self.head.bias, geometry)
            if self.lipschitz != 1.0:   # x / 1.0 == x exactly: skipping the division changes nothing
                # 4 ulps of slack cover the division; an overflow is reported as the largest float
                radius = flush_subnormal(divide_radius(radius, self.lipschitz))
            prediction, radius = lower_by_offset(prediction, radius, offset)
        return Certificate(prediction, radius, samples=0, seconds=elapsed[0])
