"""FaRS closed form: the exact certified radius of a linear head on a Lipschitz backbone."""

from __future__ import annotations

import torch

from .certificate import ABSTAIN, Certificate, check_indices, check_inputs, check_positive, module_device, timed
from .smoothing import evaluating, validate_classifier


def linear_head_radius(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, radius) of the linear classifier argmax(W z + b) at embeddings z [B, d].

    radius = min_{j != c} (s_c - s_j) / ||w_c - w_j||_2 is the exact l2 distance from z to the set
    where another class ties or wins (a union of half-spaces). Computed in float64. A class whose row
    equals w_c can never overtake c (infinite distance); a tie at z abstains with radius 0.
    """
    w = weight.double()
    s = z.double() @ w.T
    if bias is not None:
        s = s + bias.double()
    top = s.argmax(dim=1)
    margin = s.gather(1, top[:, None]) - s                                     # [B, K], >= 0
    gaps = torch.linalg.vector_norm(w[top][:, None, :] - w[None, :, :], dim=2)  # [B, K] ||w_c - w_j||
    inf = torch.full_like(margin, float("inf"))
    distance = torch.where(gaps > 0, margin / torch.where(gaps > 0, gaps, torch.ones_like(gaps)), inf)
    distance = torch.where((gaps == 0) & (margin <= 0), torch.zeros_like(distance), distance)
    distance.scatter_(1, top[:, None], float("inf"))                          # j = c is not a rival
    tie = ((margin <= 0) & (torch.arange(s.shape[1], device=s.device)[None, :] != top[:, None])).any(dim=1)
    radius = torch.where(tie, torch.zeros(1, dtype=s.dtype, device=s.device), distance.min(dim=1).values)
    prediction = torch.where(tie, torch.full_like(top, ABSTAIN), top)
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

    def certify(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> Certificate:
        x = check_inputs(x, module_device(self.backbone))
        check_indices(indices, x.shape[0])
        with timed(x.device) as elapsed, torch.inference_mode(), evaluating(self.backbone, self.head):
            z = self.backbone(x)
            if z.dim() != 2 or z.shape[1] != self.head.in_features:
                raise ValueError(
                    f"backbone returns embeddings of shape {tuple(z.shape)}, the head expects [B, {self.head.in_features}]"
                )
            prediction, radius = linear_head_radius(z, self.head.weight, self.head.bias)
            prediction, radius = prediction.cpu(), (radius / self.lipschitz).cpu()
        return Certificate(prediction, radius, samples=0, seconds=elapsed[0])
