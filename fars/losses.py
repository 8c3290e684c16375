"""Training losses of the FaRS recipe: the SLL backbone loss and the three head losses of the paper."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from entmax import sparsemax, sparsemax_loss

#: SLL's margin offset and temperature (Araujo et al. 2023).
SLL_OFFSET = 1.5 * math.sqrt(2.0)
SLL_TEMPERATURE = 0.25


def sll_loss(logits: torch.Tensor, labels: torch.Tensor, offset: float = SLL_OFFSET,
             temperature: float = SLL_TEMPERATURE) -> torch.Tensor:
    """SLL's training loss: T * CE((logits - offset * onehot(y)) / T, y).

    Subtracting ``offset`` from the true logit asks for a margin of ``offset``; with 1-Lipschitz logits
    that is a certified radius of offset / sqrt(2) in the Lipschitz-margin certificate.
    """
    shifted = logits - offset * F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    return F.cross_entropy(shifted / temperature, labels) * temperature


def head_sparsemax_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sparsemax loss (Martins & Astudillo 2016), via the ``entmax`` package, averaged over the batch.

    Its gradient is sparsemax(logits) - onehot(y). Sparsemax keeps the argmax, so it changes training,
    not the prediction: certificates are computed on the logits.
    """
    return sparsemax_loss(logits, labels).mean()


def certified_margin_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
                          epsilon: float, lipschitz: float = 1.0) -> torch.Tensor:
    """Lipschitz-margin training for a linear head s = W z + b on an L-Lipschitz backbone.

    Adds epsilon * L * ||w_y - w_j|| to every non-target logit j before cross-entropy: the exact
    offset that makes "the closed-form certificate holds at radius epsilon" the decision rule.
    It is the pairwise (tighter) form of Tsuzuku et al.'s sqrt(2) * L * ||W||_2 * epsilon offset,
    since ||w_y - w_j|| <= sqrt(2) ||W||_2.
    """
    gaps = torch.linalg.vector_norm(weight[labels][:, None, :] - weight[None, :, :], dim=2)  # [B, K]
    return F.cross_entropy(logits + epsilon * lipschitz * gaps, labels)


__all__ = ["sll_loss", "head_sparsemax_loss", "certified_margin_loss", "sparsemax", "SLL_OFFSET", "SLL_TEMPERATURE"]
