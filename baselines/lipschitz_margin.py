"""Deterministic margin certificate of a Lipschitz network (Tsuzuku et al. 2018; SLL, Araujo et al. 2023)."""

from __future__ import annotations

import math

import torch

from smoothing.certificate import (
    ABSTAIN,
    UNIT,
    Certificate,
    call_model,
    check_finite_scores,
    check_indices,
    check_inputs,
    check_positive,
    evaluating,
    flush_subnormal,
    module_device,
    timed,
    validate_classifier,
)


class LipschitzMargin:
    """Certify ``model`` by its logit margin: r = (s_top1 - s_top2) / (sqrt(2) * lipschitz).

    Assumption: the logit map x -> model(x) is ``lipschitz``-Lipschitz in l2 (pixel space). Then each
    difference s_c - s_j is sqrt(2) * lipschitz-Lipschitz, so the top class cannot change within r.
    Ties (zero margin) abstain. Deterministic: ``samples`` is 0. Margins are computed in float64 from
    the model's scores.
    """

    name = "lipschitz-margin"

    def __init__(self, model: torch.nn.Module, lipschitz: float = 1.0) -> None:
        self.model = validate_classifier(model, "model")
        self.lipschitz = check_positive("lipschitz", lipschitz)

    def certify(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> Certificate:
        device = module_device(self.model)
        with timed(device) as elapsed:   # the whole call: validation, forward pass, margin
            x = check_inputs(x, device)
            check_indices(indices, x.shape[0])
            with torch.inference_mode(), evaluating(self.model):
                scores = call_model(self.model, x, "model")
                check_finite_scores(torch.isfinite(scores).all(), "model")
                if scores.shape[1] < 2:
                    raise ValueError("the model returns a single score per input; a margin needs >= 2 classes")
                top2 = scores.double().topk(2, dim=1)
                margin = top2.values[:, 0] - top2.values[:, 1]
                prediction = torch.where(margin > 0, top2.indices[:, 0], torch.full_like(top2.indices[:, 0], ABSTAIN))
                # rounded down by 8 units of round-off: the margin, sqrt(2), the product and the quotient round
                radius = torch.where(margin > 0, margin / (math.sqrt(2.0) * self.lipschitz) * (1 - 8 * UNIT),
                                     torch.zeros_like(margin))
                prediction, radius = prediction.cpu(), flush_subnormal(radius).cpu()
        return Certificate(prediction, radius, samples=0, seconds=elapsed[0])
