"""A memo for values derived from parameters (an SLL rescaling, a spectral norm, a head's geometry)."""

from __future__ import annotations

import ctypes
import ctypes.util
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from smoothing.checks import fixed_weights_epoch

T = TypeVar("T")


def _detached(value):
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    return value


def _load_memcmp() -> Callable[[int, int, int], int] | None:
    """The C library's ``memcmp`` (None where there is no C library to load, as on Windows)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        memcmp = libc.memcmp
    except (OSError, AttributeError, TypeError):
        return None
    memcmp.restype = ctypes.c_int
    memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    return memcmp


_MEMCMP = _load_memcmp()


def _plain_cpu(t: torch.Tensor) -> bool:
    """Whether ``t``'s values are exactly the bytes of its one contiguous block of CPU memory."""
    return (t.device.type == "cpu" and t.layout == torch.strided and t.is_contiguous() and not t.is_conj()
            and not t.is_neg() and not t.is_quantized)


def same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` (same shape, dtype and device) hold the same values, compared bit for bit.

    Contiguous CPU tensors are compared with ``memcmp`` on their bytes: about 5x faster than ``torch.equal``
    on the default backbone's 0.46 M weights (0.06 ms instead of 0.30 ms per certify call), and exact in the
    sense a memo needs: equal bytes are equal inputs to the derived computation (``torch.equal`` also calls
    -0.0 and 0.0 equal and NaN unequal to itself, where bytes tell -0.0 from 0.0 and a NaN from another).
    Other tensors are compared with ``torch.equal``.
    """
    if _MEMCMP is not None and _plain_cpu(a) and _plain_cpu(b):
        try:
            left, right = a.data_ptr(), b.data_ptr()
        except RuntimeError:   # a tensor without storage (a torch.func wrapper)
            return torch.equal(a, b)
        size = a.numel() * a.element_size()
        return size == 0 or _MEMCMP(left, right, size) == 0
    return torch.equal(a, b)


def _key(p: torch.Tensor) -> tuple[Any, ...] | None:
    """What identifies a parameter's current values without reading them: its storage, layout and version
    counter (bumped by every in-place write except one through ``.data``); None for a tensor that has no
    storage or no version counter (a torch.func wrapper, an inference tensor): it is always compared."""
    try:
        return (p.data_ptr(), p._version, p.shape, p.stride(), p.dtype, p.device)
    except RuntimeError:
        return None


class WeightDerived:
    """Memo of a value computed from parameters, for inference.

    Certification calls a frozen model once per image, and recomputing weight-derived factors dominated that
    single-image forward. The memo is used only when autograd is off (inference or no-grad), and only for the
    exact parameter values it was computed from. Outside a :class:`smoothing.checks.fixed_weights` block every
    call compares the parameters with a stored copy (shape, dtype, device and every element, bit for bit:
    :func:`same_values`), so an in-place update, a loaded state dict, a write through ``.data`` or a moved
    module can never see a stale value. Inside such a block (a certify call, whose weights are fixed) that
    comparison is made once per block; the later calls of the block check only that each parameter is the same
    tensor with the same storage, layout and version counter (no read of the weights, no host synchronisation on
    CUDA), which still sees every in-place update but one through ``.data``. With autograd on, and inside a
    ``torch.compile`` trace, it is bypassed.
    ``compute`` returns a tensor or a tuple of tensors.
    """

    def __init__(self) -> None:
        self._inputs: tuple[torch.Tensor, ...] | None = None
        self._value = None
        self._params: tuple[weakref.ref, ...] = ()
        self._keys: tuple[tuple[Any, ...] | None, ...] = ()
        self._epoch: int | None = None   # the fixed_weights block in which the values were last compared

    def _same_tensors(self, params: tuple[torch.Tensor, ...]) -> bool:
        return len(self._params) == len(params) and all(
            ref() is p and key is not None and key == _key(p)
            for ref, key, p in zip(self._params, self._keys, params, strict=True))

    def _matches(self, params: tuple[torch.Tensor, ...]) -> bool:
        stored = self._inputs
        return stored is not None and len(stored) == len(params) and all(
            a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and same_values(a, b)
            for a, b in zip(stored, params, strict=True))

    def get(self, params: tuple[torch.Tensor, ...], compute: Callable[[], T]) -> T:
        if torch.is_grad_enabled():
            return compute()
        if torch.compiler.is_compiling():
            # traced by torch.compile: the value is computed in the graph; reading the memo's state here would
            # make it a guard that changes with every certify call (a recompilation per call)
            return compute()
        epoch = fixed_weights_epoch()
        if epoch is None or epoch != self._epoch or not self._same_tensors(params):
            if not self._matches(params):
                self._value = _detached(compute())
                self._inputs = tuple(p.detach().clone() for p in params)
            self._params = tuple(weakref.ref(p) for p in params)
            self._keys = tuple(_key(p) for p in params)
            self._epoch = epoch
        assert self._value is not None
        return self._value

    def __deepcopy__(self, memo: dict) -> WeightDerived:
        return WeightDerived()  # a copy starts empty (it may be converted to another dtype or device)

    def __getstate__(self) -> dict[str, Any]:
        return {}               # a pickled module (torch.save) stores no memo: it starts empty when loaded

    def __setstate__(self, state: dict[str, Any]) -> None:
        WeightDerived.__init__(self)
