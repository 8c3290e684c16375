"""Empirical audit of a network's l2 Lipschitz constant.

Two lower bounds on the true constant L, both sound as *lower* bounds (they can only under-estimate):

* the largest singular value of the Jacobian J at given inputs, by power iteration on J^T J with
  forward-mode (jvp) and reverse-mode (vjp) autograd;
* the largest ratio ||e(x) - e(x')|| / ||x - x'|| over pairs found by gradient ascent from the given
  inputs (random starting offsets at several scales).

If either exceeds the declared constant (by more than float round-off), the declared constant - and
every certificate that divides by it - is wrong.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.func import jvp, vjp


@dataclass(frozen=True)
class LipschitzAudit:
    """Lower bounds on the l2 Lipschitz constant found by :func:`audit_lipschitz`."""

    jacobian: float   # largest Jacobian spectral norm found (power iteration)
    pairs: float      # largest ||e(x) - e(x')|| / ||x - x'|| found (gradient ascent)
    inputs: int       # number of starting inputs

    @property
    def lower_bound(self) -> float:
        return max(self.jacobian, self.pairs)

    def confirms(self, declared: float, tolerance: float = 1e-4) -> bool:
        """True when nothing found exceeds ``declared * (1 + tolerance)``."""
        return self.lower_bound <= declared * (1 + tolerance)

    def to_dict(self) -> dict:
        return {**asdict(self), "lower_bound": self.lower_bound}


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def _jvp(model: nn.Module, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """J(x) v by forward-mode autograd (``torch.func.jvp``), same shape as ``model(x)``.

    The first forward-mode call of a process makes torch import ``torch._decomp.decompositions_for_jvp``,
    which registers torch's own decompositions through ``torch.jit.script`` and so emits torch's
    "`torch.jit.script` is deprecated" FutureWarning; nothing here is scripted. Exactly that warning,
    from the module that emits it, is ignored; every other warning passes.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning,
                                module=r"torch\.jit\._script")
        return jvp(model, (x,), (v,))[1]   # (output, jvp_out)


#: the pair-ascent starting offsets ||delta|| of :func:`pair_ratios`
PAIR_SCALES = (1e-3, 1e-1, 1.0)


def _no_step() -> None:
    return None


def jacobian_norms(model: nn.Module, x: torch.Tensor, iterations: int = 50, seed: int = 0,
                   step: Callable[[], None] = _no_step) -> torch.Tensor:
    """Per-input estimates [B] of ||J(x)||_2 by power iteration on J^T J (lower bounds).

    Assumes the model treats batch elements independently (no batch statistics), which holds in eval mode.
    ``step`` is called after each iteration (a progress bar's update).
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    v = v / _flat_norm(v).view(-1, *[1] * (x.dim() - 1))
    best = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    pullback = vjp(model, x)[1]      # (output, vjp_fn): without has_aux, no third element
    for _ in range(iterations):
        jv = _jvp(model, x, v)
        best = torch.maximum(best, _flat_norm(jv))
        (jtjv,) = pullback(jv)
        norm = _flat_norm(jtjv).clamp_min(1e-30)
        v = jtjv / norm.view(-1, *[1] * (x.dim() - 1))
        step()
    return best.detach()


def pair_ratios(model: nn.Module, x: torch.Tensor, steps: int = 100, scales: tuple[float, ...] = PAIR_SCALES,
                lr: float = 0.01, seed: int = 0, step: Callable[[], None] = _no_step) -> torch.Tensor:
    """Largest ||e(a) - e(b)|| / ||a - b|| per input [B] found by Adam ascent from a = x, b = x + delta,
    with ||delta|| started at each of ``scales`` (lower bounds on L). ``step`` is called after each ascent step."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    best = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    shape = (-1, *[1] * (x.dim() - 1))
    for scale in scales:
        delta = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        delta = delta / _flat_norm(delta).view(shape) * scale
        a = x.detach().clone().requires_grad_(True)
        d = delta.requires_grad_(True)
        optimizer = torch.optim.Adam([a, d], lr=lr * scale)
        for _ in range(steps):
            ratio = _flat_norm(model(a + d) - model(a)) / _flat_norm(d).clamp_min(1e-30)
            best = torch.maximum(best, ratio.detach())
            optimizer.zero_grad()
            (-ratio.sum()).backward()
            optimizer.step()
            step()
        with torch.no_grad():
            ratio = _flat_norm(model(a + d) - model(a)) / _flat_norm(d).clamp_min(1e-30)
            best = torch.maximum(best, ratio)
    return best


def audit_steps(power_iterations: int, pair_steps: int) -> int:
    """How many steps :func:`audit_lipschitz` takes (each a forward and a backward pass on all its inputs):
    the power iterations, then the pair-ascent steps at each of :data:`PAIR_SCALES`."""
    return power_iterations + pair_steps * len(PAIR_SCALES)


def audit_lipschitz(model: nn.Module, inputs: torch.Tensor, power_iterations: int = 50, pair_steps: int = 100,
                    seed: int = 0, dtype: torch.dtype = torch.float64,
                    step: Callable[[], None] = _no_step) -> LipschitzAudit:
    """Audit ``model`` at ``inputs`` ([B, ...]); returns the largest lower bounds on L that were found.

    The audit runs on a copy of the model in ``dtype`` (float64 by default, so that round-off of
    nearby pairs cannot pass for a Lipschitz violation), in eval mode; ``model`` is not changed.
    ``step`` is called after each of its :func:`audit_steps` steps (a progress bar's update).
    """
    audited = copy.deepcopy(model).to(dtype)
    for p in audited.parameters():
        p.requires_grad_(False)
    audited.eval()
    x = inputs.detach().to(next(audited.parameters(), inputs).device, dtype)
    jac = jacobian_norms(audited, x, power_iterations, seed, step=step)
    pairs = pair_ratios(audited, x, pair_steps, seed=seed, step=step)
    return LipschitzAudit(jacobian=float(jac.max()), pairs=float(pairs.max()), inputs=int(x.shape[0]))
