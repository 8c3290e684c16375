"""Deterministic margin certificate of a Lipschitz network (Tsuzuku et al. 2018; SLL, Araujo et al. 2023)."""

from __future__ import annotations

import itertools
import math

import torch

from smoothing.certificate import ABSTAIN, Certificate, divide_radius, flush_subnormal
from smoothing.checks import (
    all_finite,
    call_model,
    check_finite_scores,
    check_indices,
    check_inputs,
    check_lipschitz,
    evaluating,
    module_device,
    timed,
    validate_classifier,
)
from smoothing.rounding import norm_upper_bound, rounding_factor


def _model_dtype(module: torch.nn.Module) -> torch.dtype | None:
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


class LipschitzMargin:
    """Certify ``model`` by its logit margin: r = (s_top1 - s_top2) / (sqrt(2) * lipschitz).

    Assumption: the logit map x -> model(x) is ``lipschitz``-Lipschitz in l2 (pixel space). Then each
    difference s_c - s_j is sqrt(2) * lipschitz-Lipschitz, so the top class cannot change within r.
    Ties (zero margin) abstain. Deterministic: ``samples`` is 0. Margins are computed in float64 from
    the model's scores (which carry the model's own float round-off; see ``fars.FaRSClosedForm``).

    Inputs: float32 or float64, in [0, 1] (``check_range=True``, the default, refuses others: the radius
    is an l2 distance in [0, 1]-pixel units). With ``check_range=False`` any finite inputs are accepted
    and the radius is in the units of the space the inputs are given in. Inputs of a lower precision
    than the model are converted exactly; float64 inputs to a float32 model are rounded to float32 and
    the radius is lowered by their (rounded-up) distance to the rounded copy, so it holds around the
    inputs as given.

    Raises (``certify``):
        TypeError: inputs that are not a floating-point tensor of float32 or float64.
        ValueError: a wrong rank, an empty batch, NaN or inf, entries outside [0, 1] (``check_range``),
            inputs or a model on the ``meta`` device, scores of the wrong shape or fewer than 2 classes.
        NonFiniteScoresError: the model returned NaN or inf scores.
    """

    name = "lipschitz-margin"

    def __init__(self, model: torch.nn.Module, lipschitz: float = 1.0, check_range: bool = True) -> None:
        self.model = validate_classifier(model, "model")
        self.lipschitz = check_lipschitz(lipschitz)
        self.check_range = bool(check_range)

    def certify(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> Certificate:
        device = module_device(self.model)
        with timed(device) as elapsed:   # the whole call: validation, forward pass, margin
            if isinstance(x, torch.Tensor) and x.device.type == "meta":
                raise ValueError("inputs are on the 'meta' device: they have a shape but no values to certify; "
                                 "create them on the CPU or a GPU")
            if device.type == "meta":
                raise ValueError("the model's parameters are on the 'meta' device (no values): materialise it "
                                 "(module.to_empty(device=...)) and load its weights before certifying")
            x = check_inputs(x, device, check_range=self.check_range)
            check_indices(indices, x.shape[0])
            offset = None
            dtype = _model_dtype(self.model)
            if dtype is not None and x.dtype != dtype:
                converted = x.to(dtype)
                if torch.finfo(dtype).bits < torch.finfo(x.dtype).bits:
                    # ||x - converted||, rounded up: the difference is exact in float64 (the rounded copy
                    # keeps x's leading bits)
                    offset = norm_upper_bound((x.double() - converted.double()).flatten(1))
                x = converted
            with torch.inference_mode(), evaluating(self.model):
                scores = call_model(self.model, x, "model")
                check_finite_scores(all_finite(scores), "model")
                if scores.shape[1] < 2:
                    raise ValueError("the model returns a single score per input; a margin needs >= 2 classes")
                top2 = scores.double().topk(2, dim=1)
                margin = top2.values[:, 0] - top2.values[:, 1]
                # rounded down: the margin, sqrt(2), the product and the quotient round (4 operations)
                radius = divide_radius(margin, math.sqrt(2.0) * self.lipschitz) * (1 - rounding_factor(4))
                certified = margin > 0
                if offset is not None:   # around x as given: lowered by its distance to the rounded copy
                    radius = (radius - offset) * (1 - rounding_factor(1))
                    certified &= radius > 0
                prediction = torch.where(certified, top2.indices[:, 0], torch.full_like(top2.indices[:, 0], ABSTAIN))
                radius = torch.where(certified, radius, torch.zeros_like(radius))
                prediction, radius = prediction.cpu(), flush_subnormal(radius).cpu()
        return Certificate(prediction, radius, samples=0, seconds=elapsed[0])
