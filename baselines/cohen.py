"""Cohen et al. (2019) randomized smoothing: Gaussian noise on the whole input."""

from __future__ import annotations

import torch

from fars.certificate import call_model, module_device
from fars.smoothing import MonteCarloCertifier, validate_classifier


class CohenRS(MonteCarloCertifier):
    """CERTIFY / PREDICT of Cohen et al. with noise N(0, sigma^2 I) added to the input pixels.

    Each certified input costs ``n0 + n`` forward passes of ``model``. Noise is added in [0, 1]
    pixel space, before any normalisation inside ``model``, and is never clipped, so radii are l2
    distances in pixel space. Guarantee (Cohen et al., Theorem 1 with Clopper-Pearson): with
    probability >= 1 - alpha, a non-abstaining prediction is the smoothed classifier's class at every
    point within the returned radius.
    """

    name = "cohen"

    def __init__(self, model: torch.nn.Module, sigma: float, n0: int = 100, n: int = 100_000,
                 alpha: float = 0.001, batch_size: int = 1000, seed: int = 0) -> None:
        super().__init__(sigma, n0, n, alpha, batch_size, seed, lipschitz=1.0)
        self.model = validate_classifier(model, "model")

    def _modules(self) -> tuple[torch.nn.Module, ...]:
        return (self.model,)

    def _device(self) -> torch.device:
        return module_device(self.model)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _classify(self, points: torch.Tensor) -> torch.Tensor:
        return call_model(self.model, points, "model")
