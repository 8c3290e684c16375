"""The checks and helpers every ``certify`` call runs, shared by every method.

Argument checks (:func:`check_positive`, :func:`check_count`, :func:`check_alpha`, :func:`check_lipschitz`),
input and index validation (:func:`check_inputs`, :func:`check_unit_range`, :func:`check_indices`), the
model's precision (:func:`check_module_precision`) and scores (:func:`call_model`, :func:`all_finite`,
:func:`check_finite_scores`), and the context of a call: eval mode (:class:`evaluating`), weights declared
fixed (:class:`fixed_weights`), its device (:func:`module_device`) and wall time (:class:`timed`). Part of
the method-neutral core.
"""

from __future__ import annotations

import itertools
import math
import numbers
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from .certificate import SMALLEST_NORMAL

#: the largest example index (indices are stored as int64)
INDEX_MAX = 2 ** 63 - 1
#: dtypes refused for certification (round-off and low-precision sampling can break the guarantees)
LOW_PRECISION = (torch.float16, torch.bfloat16)


# --- argument and input validation -----------------------------------------------------------------------

def check_positive(name: str, value: float) -> float:
    """``value`` as a float, or a ValueError when it is not a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def check_lipschitz(value: float) -> float:
    """A Lipschitz constant as a float: a finite number > 0 that is a normal float (>= :data:`SMALLEST_NORMAL`).

    A subnormal constant has lost the relative precision the radius's slack relies on, and dividing by it
    overflows; radii are divided by the constant with :func:`divide_radius`, which never returns inf for a
    finite radius.

    Raises:
        TypeError: not a number. ValueError: not finite, not > 0, or subnormal.
    """
    value = check_positive("lipschitz", value)
    if value < SMALLEST_NORMAL:
        raise ValueError(f"lipschitz must be at least {SMALLEST_NORMAL:g} (a normal float), got {value:g}")
    return value


def check_count(name: str, value: int) -> int:
    """``value`` as an int, or an error when it is not an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float, or a ValueError when it is not in the open interval (0, 1)."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a number, got {type(alpha).__name__}")
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return float(alpha)


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module without any).

    The same order as ``module.parameters()`` / ``buffers()`` (the module, then its children, depth
    first), with a plain walk: this runs on every certify call, where ``parameters()`` costs ~15 us.
    """
    for kind in ("_parameters", "_buffers"):
        stack = [module]
        while stack:
            m = stack.pop()
            for tensor in getattr(m, kind).values():
                if tensor is not None:
                    return tensor.device
            stack.extend(reversed([child for child in m._modules.values() if child is not None]))
    return torch.device("cpu")


def check_inputs(x: torch.Tensor, device: torch.device, min_rank: int = 2, check_range: bool = True) -> torch.Tensor:
    """Validate a batch of inputs and move it to ``device``.

    Every radius of this project is an l2 distance between [0, 1] pixel images, so by default inputs
    outside [0, 1] are refused (a normalised or [0, 255] image would get radii in other units without any
    warning). Every certifier passes its own ``check_range`` constructor flag (default True);
    ``check_range=False`` accepts any finite inputs (synthetic or pre-scaled data, whose radii are then in
    those units).

    Raises TypeError for a non-tensor or non-floating tensor, ValueError for a batch of the wrong
    rank, an empty batch, NaN/Inf entries, or (``check_range``) entries outside [0, 1].
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(x).__name__}")
    dtype = x.dtype
    if not dtype.is_floating_point:
        raise TypeError(f"inputs must be a floating-point tensor, got dtype {dtype}")
    if dtype in LOW_PRECISION:
        raise TypeError(f"inputs are {dtype}: certification runs in float32 or float64 (sampling and margins in "
                        "lower precision can break the guarantees, Voracek & Hein 2023); convert model and inputs")
    shape = x.shape
    if len(shape) < min_rank:
        raise ValueError(
            f"inputs must be a batch [B, ...] of rank >= {min_rank}, got shape {tuple(shape)}"
            " (add a batch dimension with x.unsqueeze(0) for a single input)"
        )
    if shape[0] == 0:
        raise ValueError("inputs hold an empty batch")
    # a finite sum means finite entries (NaN and inf propagate); only a non-finite sum needs the full check
    if not math.isfinite(x.sum().item()) and not bool(torch.isfinite(x).all()):
        raise ValueError("inputs contain NaN or Inf")
    if check_range:
        check_unit_range(x)
    if x.device != device:
        try:
            x = x.to(device)
        except (RuntimeError, AssertionError) as err:  # e.g. CUDA tensor on a machine without CUDA
            raise ValueError(f"inputs on {x.device} cannot be moved to the model's device {device}: {err}") from None
    return x


def check_unit_range(x: torch.Tensor) -> None:
    """Refuse a batch with entries outside [0, 1] (the pixel range that defines the radii's units).

    Raises:
        ValueError: naming the minimum and maximum found.
    """
    if x.numel() == 0:
        return
    low, high = (float(v) for v in torch.aminmax(x.detach()))
    if low < 0.0 or high > 1.0:
        raise ValueError(f"inputs must be pixels in [0, 1] (radii are l2 distances in [0,1]-pixel units), found "
                         f"min {low:g} and max {high:g}; scale the images to [0, 1], or pass check_range=False to "
                         "the certifier to certify inputs in other units")


def check_indices(indices: torch.Tensor | None, batch: int) -> torch.Tensor:
    """Example indices as int64 [B] on the CPU; ``arange(B)`` when none are given."""
    if indices is None:
        return torch.arange(batch, dtype=torch.int64)
    if not isinstance(indices, torch.Tensor):
        indices = torch.as_tensor(indices)
    dtype = indices.dtype
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool or indices.dim() != 1:
        raise TypeError("indices must be a 1-D integer tensor")
    if indices.shape[0] != batch:
        raise ValueError(f"got {indices.shape[0]} indices for a batch of {batch} inputs")
    # this runs on every certify call: a few CPU indices are checked in Python, cheaper than a tensor op
    on_cpu = indices.is_cpu
    if dtype == getattr(torch, "uint64", None):    # few ops support uint64; its values >= 2^63 would wrap negative
        if max(indices.tolist(), default=0) > INDEX_MAX:
            raise ValueError(f"indices must be <= {INDEX_MAX} (they are stored as int64)")
        smallest = 0
    elif on_cpu and batch <= 64:
        smallest = min(indices.tolist(), default=0)
    else:
        smallest = int(indices.min()) if batch else 0
    if smallest < 0:
        raise ValueError("indices must be >= 0")
    return indices if on_cpu and dtype == torch.int64 else indices.to(device="cpu", dtype=torch.int64)


class NonFiniteScoresError(ValueError):
    """A model returned NaN or infinite scores: no vote or margin may be built on them."""


def call_model(model: Callable[[torch.Tensor], Any], x: torch.Tensor, what: str) -> torch.Tensor:
    """Run ``model`` (a module, or any callable such as a compiled module) on ``x`` and check that it
    returns a batch [B, K] of scores (finiteness is checked by :func:`check_finite_scores`, once per
    forward for a single pass, once per stage for Monte Carlo, so no device sync per batch).

    Raises:
        ValueError: the output is not a [B, K] tensor for the B inputs.
    """
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{what} must return scores of shape [B, K] for a batch of {x.shape[0]}, got {shape}")
    return out


def all_finite(scores: torch.Tensor) -> torch.Tensor:
    """Boolean scalar tensor (on the scores' device, no sync): every entry of ``scores`` is finite.

    One min/max pass: NaN propagates into both, +inf is the max, -inf the min, so the pair is finite
    exactly when every score is. About 10x cheaper than ``torch.isfinite(scores).all()``, which writes a
    boolean copy of the scores (it cost as much as drawing the noise in fars-mc at n = 1e5). The pass
    reads the scores in their memory order (a column-major [m, K] block is reduced through its transpose).
    """
    if scores.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=scores.device)
    flat = scores.T if scores.dim() == 2 and not scores.is_contiguous() and scores.T.is_contiguous() else scores
    low, high = torch.aminmax(flat)
    return torch.isfinite(low) & torch.isfinite(high)


def check_finite_scores(finite: torch.Tensor | bool, what: str) -> None:
    """Refuse scores that are not all finite; ``finite`` is :func:`all_finite` of the scores (or the
    AND of it over several batches, kept on the device until this one check).

    Raises:
        NonFiniteScoresError: a score was NaN or infinite. ``argmax`` counts NaN as maximal, so such
            scores would vote for a class (and certify it at the largest radius) instead of failing.
    """
    if not bool(finite):
        raise NonFiniteScoresError(f"{what} returned non-finite scores (NaN or inf); check its weights and, for "
                                   "sampled methods, that sigma is not too large for float32")


def check_module_precision(module: torch.nn.Module, what: str) -> None:
    """Refuse a module with low-precision (float16 / bfloat16) parameters or buffers.

    Raises:
        TypeError: naming ``what`` and the dtype: certification runs in float32 or float64 (a low-precision
            forward can break the guarantees, Voracek & Hein 2023; Cohen RS offers ``precision="bf16"``, an
            autocast forward of a float32 model, as an explicit opt-in).
    """
    stack = [module]   # a plain walk (as module_device): this runs on every certify call
    while stack:
        m = stack.pop()
        for tensor in (*m._parameters.values(), *m._buffers.values()):
            if tensor is not None and tensor.dtype in LOW_PRECISION:
                dtype = str(tensor.dtype).removeprefix("torch.")
                raise TypeError(f"{what} has {dtype} weights: certification runs in float32 or float64 (low "
                                "precision can break the guarantees, Voracek & Hein 2023); convert it with .float()")
        stack.extend(child for child in m._modules.values() if child is not None)


def validate_classifier(model: torch.nn.Module, what: str) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{what} must be a torch.nn.Module, got {type(model).__name__}")
    return model


# --- eval mode ------------------------------------------------------------------------------------

def _any_training(module: torch.nn.Module) -> bool:
    """Whether ``module`` or any submodule is in training mode (a plain walk: cheaper than ``modules()``)."""
    stack: list[torch.nn.Module | None] = [module]
    while stack:
        m = stack.pop()
        if m is not None:                    # a registered child may be None
            if m.training:
                return True
            stack.extend(m._modules.values())
    return False


class evaluating:  # noqa: N801 (used like a function: ``with evaluating(model): ...``)
    """Put modules in eval mode for the block (no dropout, frozen batch-norm) and restore them after.

    Every submodule gets its own mode back (a frozen batch-norm inside a training model stays frozen).
    When everything is already in eval mode nothing is switched (certification calls this per image,
    so it is a plain class rather than a generator-based context manager).
    """

    __slots__ = ("modules", "switched")

    def __init__(self, *modules: torch.nn.Module) -> None:
        self.modules = modules
        self.switched: list = []

    def __enter__(self) -> None:
        self.switched = [(top, [(m, m.training) for m in top.modules()]) for top in self.modules
                         if _any_training(top)]
        try:
            for top, _ in self.switched:
                top.eval()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        for _, saved in self.switched:
            for m, mode in saved:   # through train(), which a module may override
                m.train(mode)
            for m, mode in saved:   # then exactly, also for a module shared by several parents
                m.training = mode


# --- fixed weights ------------------------------------------------------------------------------

_EPOCHS = itertools.count(1)
_FIXED = threading.local()


class fixed_weights:  # noqa: N801 (used like a function: ``with fixed_weights(): ...``)
    """Declare that no parameter is written through ``.data`` (or any other path that does not bump its
    version counter) while the block runs: a certify call, whose weights are fixed.

    Memos of weight-derived values (:class:`fars.memo.WeightDerived`) then compare every parameter's
    values with their stored copy once per block, and after that only its identity, storage and version
    counter: no read of the weights and no host synchronisation per forward pass. An in-place update
    under ``no_grad`` (an optimizer step, ``load_state_dict``) bumps the version counter and is still seen.
    Blocks nest (the outermost one counts); the state is per thread. :func:`fixed_weights_epoch` names the
    current block.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        depth = getattr(_FIXED, "depth", 0)
        if depth == 0:
            _FIXED.epoch = next(_EPOCHS)
        _FIXED.depth = depth + 1

    def __exit__(self, *exc) -> None:
        _FIXED.depth -= 1
        if _FIXED.depth == 0:
            _FIXED.epoch = None


def fixed_weights_epoch() -> int | None:
    """A number unique to the outermost :class:`fixed_weights` block running in this thread; None outside one."""
    return getattr(_FIXED, "epoch", None)


# --- timing -----------------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` so that a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class timed:  # noqa: N801 (used like a function: ``with timed(device) as elapsed: ...``)
    """Context manager measuring wall time with ``device`` synchronised at both ends.

    Yields a one-element list that holds the elapsed seconds once the block ends. A plain class rather
    than a generator-based context manager: certification times every single-image call with it, and
    the generator machinery cost ~10 us per call there.
    """

    __slots__ = ("device", "box", "start")

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.box = [0.0]
        self.start = 0.0

    def __enter__(self) -> list[float]:
        synchronize(self.device)
        self.start = time.perf_counter()
        return self.box

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.box[0] = time.perf_counter() - self.start


__all__ = [
    "INDEX_MAX",
    "LOW_PRECISION",
    "NonFiniteScoresError",
    "all_finite",
    "call_model",
    "check_alpha",
    "check_count",
    "check_finite_scores",
    "check_indices",
    "check_inputs",
    "check_lipschitz",
    "check_module_precision",
    "check_positive",
    "check_unit_range",
    "evaluating",
    "fixed_weights",
    "fixed_weights_epoch",
    "module_device",
    "synchronize",
    "timed",
    "validate_classifier",
]
