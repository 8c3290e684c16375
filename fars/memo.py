"""A memo for values derived from parameters (an SLL rescaling, a spectral norm, a head's geometry)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def _detached(value):
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    return value


class WeightDerived:
    """Memo of a value computed from parameters, for inference.

    Certification calls a frozen model once per image, and recomputing weight-derived factors
    dominated that single-image forward. The memo is used only when autograd is off (inference or
    no-grad), and only for the exact parameter values it was computed from: every call compares the
    parameters with a stored copy (shape, dtype, device and every element), so an in-place update, a
    loaded state dict, a write through ``.data`` or a moved module can never see a stale value. With
    autograd on it is bypassed. ``compute`` returns a tensor or a tuple of tensors.
    """

    def __init__(self) -> None:
        self._inputs: tuple[torch.Tensor, ...] | None = None
        self._value = None

    def _matches(self, params: tuple[torch.Tensor, ...]) -> bool:
        stored = self._inputs
        return stored is not None and len(stored) == len(params) and all(
            a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
            for a, b in zip(stored, params, strict=True))

    def get(self, params: tuple[torch.Tensor, ...], compute: Callable[[], T]) -> T:
        if torch.is_grad_enabled():
            return compute()
        if not self._matches(params):
            self._value = _detached(compute())
            self._inputs = tuple(p.detach().clone() for p in params)
        assert self._value is not None
        return self._value

    def __deepcopy__(self, memo: dict) -> WeightDerived:
        return WeightDerived()  # a copy starts empty (it may be converted to another dtype or device)
