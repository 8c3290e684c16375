"""Input normalisation as the first layer of a network, so that radii stay in pixel units.

Cohen et al. (2019) put the standardisation inside the classifier and add the noise before it; SLL
(Araujo et al., 2023) shift the input by the dataset mean with a unit std. Both are the affine map below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class InputNormalization(nn.Module):
    """x -> (x - mean) / std per channel, on [B, C, H, W] float pixels in [0, 1].

    ``mean`` and ``std`` are C floats (std > 0 and finite). They are buffers that are *not* saved in
    a state dict (``persistent=False``): the published checkpoints hold no entry for this layer.
    The map is affine with linear part diag(1/std), so its l2 Lipschitz constant is 1 / min(std)
    (:attr:`lipschitz`); a Lipschitz network behind it has the product as its constant in pixel space.

    Raises ``ValueError`` for empty or mismatched ``mean``/``std``, or a std that is not positive and finite.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float] | None = None) -> None:
        super().__init__()
        std = [1.0] * len(mean) if std is None else list(std)
        if len(mean) == 0 or len(mean) != len(std):
            raise ValueError(f"mean and std must be non-empty and of the same length, got {list(mean)} and {std}")
        # checked on Python floats, so that the module can also be built on the meta device
        if not all(math.isfinite(float(s)) and float(s) > 0 for s in std):
            raise ValueError(f"std must be positive and finite, got {std}")
        if not all(math.isfinite(float(m)) for m in mean):
            raise ValueError(f"mean must be finite, got {list(mean)}")
        mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32)
        std_t = torch.tensor([float(s) for s in std], dtype=torch.float32)
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)
        # the divisor actually used is the float32 std: the constant is that of the implemented map
        self._lipschitz = 1.0 / float(np.float32(min(float(s) for s in std)))

    @property
    def channels(self) -> int:
        return int(self.mean.shape[1])

    @property
    def lipschitz(self) -> float:
        """The l2 Lipschitz constant 1 / min(std) of the map (exact, in pixel units)."""
        return self._lipschitz

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected inputs [B, {self.channels}, H, W], got {tuple(x.shape)}")
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean = [round(v, 6) for v in self.mean.flatten().tolist()]
        std = [round(v, 6) for v in self.std.flatten().tolist()]
        return f"mean={mean}, std={std}"
