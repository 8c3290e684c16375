"""FaRS closed form: the exact certified radius of a linear head on a Lipschitz backbone."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .certificate import ABSTAIN, Certificate, check_indices, check_inputs, check_positive, module_device, timed
from .memo import WeightDerived
from .smoothing import evaluating, validate_classifier


#: batches up to this size are finished with Python floats (see :func:`linear_head_radius`)
SCALAR_ROWS = 16


@dataclass(frozen=True)
class HeadGeometry:
    """A linear head in float64: ``weight`` [K, d], ``bias`` [K] or None, ``gaps[c, j]`` = ||w_c - w_j||_2
    ([K, K]), and ``gap_rows``, the same gaps as Python floats."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    gaps: torch.Tensor
    gap_rows: list[list[float]]


def head_geometry(weight: torch.Tensor, bias: torch.Tensor | None) -> HeadGeometry:
    """The :class:`HeadGeometry` of the linear head (weight, bias)."""
    w = weight.detach().double()
    b = None if bias is None else bias.detach().double()
    gaps = torch.linalg.vector_norm(w[:, None, :] - w[None, :, :], dim=2)
    return HeadGeometry(w, b, gaps, gaps.tolist())


def _radius_tensor(s: torch.Tensor, gaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    top = s.argmax(dim=1)[:, None]
    # (s_c - s_j) / ||w_c - w_j||: +inf where w_j = w_c and the margin is positive (j never overtakes c)
    distance = torch.sub(s.gather(1, top), s).div_(gaps.index_select(0, top[:, 0]))
    distance.scatter_(1, top, math.inf)                                       # j = c is not a rival
    nearest = distance.amin(dim=1)                                            # NaN propagates
    certified = nearest > 0
    return torch.where(certified, top[:, 0], ABSTAIN).cpu(), torch.where(certified, nearest, 0.0).cpu()


def _radius_scalar(s: torch.Tensor, gap_rows: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    # the same IEEE float64 operations as _radius_tensor, one row at a time (no per-op dispatch cost)
    predictions, radii = [], []
    for row in s.tolist():
        c, top = 0, row[0]
        for j in range(1, len(row)):           # argmax: the first maximal entry, NaN counts as maximal
            v = row[j]
            if v > top or (v != v and top == top):
                c, top = j, v
        nearest = math.inf
        for j, v in enumerate(row):
            if j == c:
                continue
            margin, gap = top - v, gap_rows[c][j]
            distance = margin / gap if gap != 0 else (math.inf if margin > 0 else math.nan)
            if distance != distance:           # NaN propagates, as in amin
                nearest = math.nan
                break
            nearest = min(nearest, distance)
        certified = nearest > 0
        predictions.append(c if certified else ABSTAIN)
        radii.append(nearest if certified else 0.0)
    return torch.tensor(predictions, dtype=torch.int64), torch.tensor(radii, dtype=torch.float64)


def linear_head_radius(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       geometry: HeadGeometry | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, radius) of the linear classifier argmax(W z + b) at embeddings z [B, d], on the CPU.

    radius = min_{j != c} (s_c - s_j) / ||w_c - w_j||_2 is the exact l2 distance from z to the set
    where another class ties or wins (a union of half-spaces). Computed in float64. A class whose row
    equals w_c can never overtake c (infinite distance). A tie at z (a zero margin: distance 0, or
    0/0 for a rival with the same row and bias) or NaN logits abstain with radius 0.
    ``geometry`` is :func:`head_geometry` of (weight, bias), when the caller already has it.

    The logits s are one float64 matmul; the per-class bookkeeping runs as tensor ops, or for up to
    :data:`SCALAR_ROWS` rows (a single image) as the same float64 operations on Python floats, which
    avoids the fixed cost of a dozen tensor ops. Both give bit-identical results (tested).
    """
    g = geometry if geometry is not None else head_geometry(weight, bias)
    s = z.double() @ g.weight.T if g.bias is None else torch.addmm(g.bias, z.double(), g.weight.T)
    if s.shape[0] <= SCALAR_ROWS:
        return _radius_scalar(s, g.gap_rows)
    return _radius_tensor(s, g.gaps)


class FaRSClosedForm:
    """Deterministic FaRS certificate for a one-layer linear head s = W z + b on z = backbone(x).

    r_x = min_{j != c} (s_c - s_j) / ||w_c - w_j||_2 / lipschitz, exact in embedding space, sound in
    pixel space when the backbone is ``lipschitz``-Lipschitz in l2. No sampling (``samples`` = 0),
    abstains only on ties.
    """

    name = "fars-closed"

    def __init__(self, backbone: torch.nn.Module, head: torch.nn.Linear, lipschitz: float = 1.0) -> None:
        self.backbone = validate_classifier(backbone, "backbone")
        if not isinstance(head, torch.nn.Linear):
            raise TypeError(
                f"the closed form needs a one-layer nn.Linear head, got {type(head).__name__}; "
                "use FaRSMonteCarlo for other heads"
            )
        self.head = head
        self.lipschitz = check_positive("lipschitz", lipschitz)
        self._geometry = WeightDerived()   # the head's float64 weights and pairwise gaps, for its current weights

    def certify(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> Certificate:
        x = check_inputs(x, module_device(self.backbone))
        check_indices(indices, x.shape[0])
        with timed(x.device) as elapsed, torch.inference_mode(), evaluating(self.backbone, self.head):
            z = self.backbone(x)
            if z.dim() != 2 or z.shape[1] != self.head.in_features:
                raise ValueError(
                    f"backbone returns embeddings of shape {tuple(z.shape)}, the head expects [B, {self.head.in_features}]"
                )
            params = (self.head.weight,) if self.head.bias is None else (self.head.weight, self.head.bias)
            geometry = self._geometry.get(params, lambda: head_geometry(self.head.weight, self.head.bias))
            prediction, radius = linear_head_radius(z, self.head.weight, self.head.bias, geometry)
            if self.lipschitz != 1.0:   # x / 1.0 == x exactly: skipping the division changes nothing
                radius = radius / self.lipschitz
        return Certificate(prediction, radius, samples=0, seconds=elapsed[0])
