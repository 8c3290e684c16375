"""FaRS closed form: the exact certified radius of a linear head on a Lipschitz backbone."""

from __future__ import annotations

import torch

from .certificate import ABSTAIN, Certificate, check_indices, check_inputs, check_positive, module_device, timed
from .memo import WeightDerived
from .smoothing import evaluating, validate_classifier


Geometry = tuple[torch.Tensor, "torch.Tensor | None", torch.Tensor]


def head_geometry(weight: torch.Tensor, bias: torch.Tensor | None) -> Geometry:
    """(W, b, G) of a linear head in float64: G[c, j] = ||w_c - w_j||_2 (the [K, K] pairwise gaps)."""
    w = weight.detach().double()
    b = None if bias is None else bias.detach().double()
    return w, b, torch.linalg.vector_norm(w[:, None, :] - w[None, :, :], dim=2)


def linear_head_radius(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       geometry: Geometry | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, radius) of the linear classifier argmax(W z + b) at embeddings z [B, d].

    radius = min_{j != c} (s_c - s_j) / ||w_c - w_j||_2 is the exact l2 distance from z to the set
    where another class ties or wins (a union of half-spaces). Computed in float64. A class whose row
    equals w_c can never overtake c (infinite distance); a tie at z abstains with radius 0.
    ``geometry`` is :func:`head_geometry` of (weight, bias), when the caller already has it.
    """
    w, b, pairwise = geometry if geometry is not None else head_geometry(weight, bias)
    s = z.double() @ w.T if b is None else torch.addmm(b, z.double(), w.T)
    top = s.argmax(dim=1)
    margin = s.gather(1, top[:, None]) - s                                     # [B, K], >= 0
    # margin / ||w_c - w_j||: +inf where w_j = w_c and the margin is positive (j never overtakes c);
    # the j = c entry is set to +inf; a zero margin (a tie) abstains below
    distance = margin / pairwise.index_select(0, top)
    distance.scatter_(1, top[:, None], float("inf"))
    tie = (margin <= 0).sum(dim=1) > 1                                         # a rival j != c ties c
    radius = distance.min(dim=1).values.masked_fill_(tie, 0.0)
    prediction = top.masked_fill_(tie, ABSTAIN)
    return prediction, radius


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
            prediction, radius = prediction.cpu(), (radius / self.lipschitz).cpu()
        return Certificate(prediction, radius, samples=0, seconds=elapsed[0])
