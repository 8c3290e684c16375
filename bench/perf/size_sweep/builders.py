"""The certifier of each (method, n, cohen mode) the size sweep times on one of its networks.

The one place where the sweep builds certifiers: each method's settings come from :class:`SweepConfig`
(batch sizes, sigma, n0, alpha, seed) and cohen's opt-in fast modes from
:data:`bench.perf.n_sweep.COHEN_MODES`.
"""

from __future__ import annotations

import torch

from baselines import CohenRS
from fars import Certifier, FaRSClosedForm, FaRSMonteCarlo

from ..n_sweep import COHEN_MODES
from .layouts import Network
from .settings import SweepConfig

#: the mode of the plain cohen rows (no opt-in: fp32 tensors, TF32 off)
FP32 = "fp32"
#: fast modes that only mean something on a CUDA device (TF32 is a tensor-core format: a CPU computes fp32)
CUDA_ONLY_MODES = frozenset({"tf32"})


def applicable_modes(modes: tuple[str, ...] | list[str], device: torch.device) -> tuple[tuple[str, ...], list[str]]:
    """The cohen fast modes of ``modes`` that can be timed on ``device``, and a note for each left out
    (TF32 on a CPU: not applicable, a CPU computes those products in fp32 whatever the setting).

    Raises:
        ValueError: a name that is not a mode of :data:`COHEN_MODES`.
    """
    unknown = sorted(set(modes) - set(COHEN_MODES))
    if unknown:
        raise ValueError(f"unknown cohen mode(s) {', '.join(unknown)}; choose from {', '.join(COHEN_MODES)}")
    kept = tuple(m for m in dict.fromkeys(modes) if device.type == "cuda" or m not in CUDA_ONLY_MODES)
    notes = [f"cohen {m}: not applicable on {device.type} (TF32 is a CUDA tensor-core format; a {device.type} "
             "computes these products in fp32, so the row would repeat cohen fp32)"
             for m in dict.fromkeys(modes) if m not in kept]
    return kept, notes


def make_certifier(method: str, net: Network, n: int, config: SweepConfig, mode: str = FP32) -> Certifier:
    """The certifier of ``method`` at ``n`` samples on ``net`` (n is ignored by fars-closed); ``mode``: cohen's
    fast mode (``fp32``, or a name of :data:`COHEN_MODES`), only for cohen.

    Raises:
        ValueError: an unknown method or mode, a mode for a method other than cohen, or cohen without a
            resolved batch size (``config.cohen_batch_size`` 0).
    """
    if mode != FP32 and (method != "cohen" or mode not in COHEN_MODES):
        raise ValueError(f"mode {mode!r} is not a cohen fast mode ({', '.join(COHEN_MODES)}) for {method}")
    n0 = min(config.n0, n) if n else 0
    if method == "cohen":
        if config.cohen_batch_size < 1:
            raise ValueError("cohen's batch size is not resolved (0 means: searched per size first)")
        # the size's memory format (resolved per size), unless the mode is a memory format of its own
        options = {"memory_format": config.cohen_memory_format if config.cohen_memory_format != "auto"
                   else "contiguous", **(COHEN_MODES[mode] if mode != FP32 else {})}
        # one compiled graph per network, shared by the certifiers of every n (the row's mode says compiled)
        model = net.compiled() if options.pop("compile", False) else net.plain
        return CohenRS(model, config.sigma, n0=n0, n=n, alpha=config.alpha, batch_size=config.cohen_batch_size,
                       seed=config.seed, **options)
    if method == "fars-mc":
        return FaRSMonteCarlo(net.backbone, net.head, config.sigma, lipschitz=net.lipschitz, n0=n0, n=n,
                              alpha=config.alpha, batch_size=config.fars_batch_size, seed=config.seed)
    if method == "fars-closed":
        return FaRSClosedForm(net.backbone, net.head, lipschitz=net.lipschitz)
    raise ValueError(f"unknown method {method!r}")
