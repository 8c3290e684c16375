"""The result record shared by every certification method, and the radius helpers.

Every method in this project (``cohen``, ``fars-mc``, ``fars-closed``, ``fars-crown``,
``lipschitz-margin``) returns a :class:`Certificate` from ``certify(x)``, so the harness can time, store and
plot them the same way. Also here: the floating-point constants the radii are rounded against and the two
radius helpers every method shares (:func:`divide_radius`, :func:`flush_subnormal`). The checks every
``certify`` call runs on its inputs and model are in :mod:`smoothing.checks`. Part of the method-neutral core.
"""

from __future__ import annotations

import numbers
import sys
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

ABSTAIN = -1
#: unit round-off of float64: a correctly rounded operation has relative error at most UNIT
UNIT = 2.0 ** -53
#: the smallest normal float64. Below it rounding errors are absolute, not relative, so the few-ulp
#: slack that keeps every radius below its exact value no longer holds: such radii are reported as 0
SMALLEST_NORMAL = sys.float_info.min
#: the largest finite float64: what a finite radius divided by a tiny constant is reported as on overflow
LARGEST_FINITE = sys.float_info.max


@dataclass(frozen=True)
class Certificate:
    """Certification result for a batch of B inputs.

    Attributes:
        prediction: int64 [B], the certified class, ``-1`` (:data:`ABSTAIN`) when the method abstains.
        radius: float64 [B], an l2 radius in input pixel space ([0, 1] pixels, shape of one input)
            inside which the prediction provably does not change (with probability >= 1 - alpha
            over the sampling for Monte Carlo methods); 0 when abstaining.
        samples: int64 [B], evaluations of the sampled part of the model per input (``n0`` + estimation
            samples for CERTIFY, fewer than the cap where sequential CERTIFY stopped early; 0 for
            deterministic methods). An int is accepted and broadcast to every input.
        seconds: wall time of the ``certify`` call from input validation to the finished prediction and
            radius (confidence bounds included), with the device synchronised at both ends; only
            wrapping them into this object is left out.
    """

    prediction: torch.Tensor
    radius: torch.Tensor
    samples: torch.Tensor
    seconds: float

    def __init__(self, prediction: torch.Tensor, radius: torch.Tensor, samples: torch.Tensor | int,
                 seconds: float) -> None:
        # written out (the dataclass keeps it) so that ``samples`` may be given as an int, while readers
        # always get the int64 [B] tensor
        if prediction.shape != radius.shape or prediction.dim() != 1:
            raise ValueError("prediction and radius must both have shape [B]")
        object.__setattr__(self, "prediction", prediction)
        object.__setattr__(self, "radius", radius)
        object.__setattr__(self, "samples", _samples_per_input(samples, int(prediction.shape[0])))
        object.__setattr__(self, "seconds", seconds)
        self.__post_init__()

    def __post_init__(self) -> None:
        for name in ("prediction", "radius"):  # tensors made under inference_mode cannot enter autograd
            tensor = getattr(self, name)
            if tensor.is_inference():
                with torch.inference_mode(False):
                    object.__setattr__(self, name, tensor.clone())

    def __len__(self) -> int:
        return int(self.prediction.shape[0])

    def certified_at(self, labels: torch.Tensor, radius: float) -> torch.Tensor:
        """Boolean [B]: correct (not abstaining) and certified at least at ``radius``."""
        labels = labels.to(self.prediction.device)
        return (self.prediction == labels) & (self.radius >= radius)


def _samples_per_input(samples: torch.Tensor | int, batch: int) -> torch.Tensor:
    """``samples`` as int64 [batch] on the CPU (an int is broadcast).

    Raises:
        TypeError: neither an integer nor an integer tensor. ValueError: wrong shape or a negative count.
    """
    if isinstance(samples, torch.Tensor):
        if samples.dtype.is_floating_point or samples.dtype.is_complex or samples.dtype == torch.bool:
            raise TypeError(f"samples must be an integer tensor, got dtype {samples.dtype}")
        if tuple(samples.shape) != (batch,):
            raise ValueError(f"samples must have shape [B] = [{batch}], got {tuple(samples.shape)}")
        with torch.inference_mode(False):
            counts = samples.detach().to(device="cpu", dtype=torch.int64).clone()
    elif isinstance(samples, numbers.Integral) and not isinstance(samples, bool):
        counts = torch.full((batch,), int(samples), dtype=torch.int64)
    else:
        raise TypeError(f"samples must be an int or an int64 [B] tensor, got {type(samples).__name__}")
    if batch and int(counts.min()) < 0:
        raise ValueError(f"samples must be >= 0, got {int(counts.min())}")
    return counts


@runtime_checkable
class Certifier(Protocol):
    """What every method offers: a ``name`` and ``certify(x) -> Certificate``."""

    name: str

    def certify(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> Certificate: ...


# --- radius helpers -------------------------------------------------------------------------

def divide_radius(radius: torch.Tensor, lipschitz: float) -> torch.Tensor:
    """``radius / lipschitz`` (FaRS, Proposition 1), with a finite radius whose quotient overflows reported
    as the largest finite float: the exact quotient exceeds it, so the bound stays a proven one and no
    finite radius becomes an infinite certificate (an infinite radius stays infinite)."""
    quotient = radius / lipschitz
    return torch.where(torch.isinf(quotient) & torch.isfinite(radius),
                       torch.full_like(quotient, LARGEST_FINITE), quotient)


def flush_subnormal(radius: torch.Tensor) -> torch.Tensor:
    """``radius`` with every value below :data:`SMALLEST_NORMAL` (a subnormal radius) replaced by 0."""
    return radius.masked_fill(radius < SMALLEST_NORMAL, 0.0)


__all__ = [
    "ABSTAIN",
    "UNIT",
    "SMALLEST_NORMAL",
    "LARGEST_FINITE",
    "Certificate",
    "Certifier",
    "divide_radius",
    "flush_subnormal",
]
