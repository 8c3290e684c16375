"""The size sweep's settings (:class:`SweepConfig`, the flags of ``python -m bench.scaling --sizes``) and the
numbers every part of it is stated at."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from ...certify.batch_size import FARS_BATCH_SIZE
from .layouts import DEFAULT_NETWORK, SizeSpec

#: the n every speedup and goal is stated at
TARGET_N = 100_000
FARS_MC_NS = (10_000, 100_000)
#: the two n cohen is measured at (each rounded up to a multiple of its batch size, :func:`same_batch_ns`)
COHEN_NS = (1_000, 2_000)
#: cohen's memory is measured at these n on the sizes not measured directly at TARGET_N (its peak is set by
#: the batch size, not n; two n above one batch show that without minutes of sampling per probe)
COHEN_MEMORY_NS = (1_000, 2_000)
#: cohen's batch sizes tried per size on the CPU when none is given (the throughput-best plain forward,
#: :func:`bench.certify.batch_size.best_batch_size`); on CUDA its list for the device
CPU_BATCH_CANDIDATES = (128, 256, 512, 1024)


@dataclass(frozen=True)
class SweepConfig:
    """Settings of one size sweep (the flags of ``python -m bench.scaling --sizes``).

    ``cohen_batch_size`` 0 means: searched per size (:func:`bench.perf.size_sweep.timing.resolve_batch`),
    among ``cohen_batch_candidates`` (empty: :data:`CPU_BATCH_CANDIDATES` on the CPU, the CUDA list of
    :data:`bench.certify.batch_size.BATCH_CANDIDATES` on a GPU). ``cohen_modes`` (names of
    :data:`bench.perf.n_sweep.COHEN_MODES`) adds cohen rows in those opt-in fast modes beside the fp32 ones.
    ``cohen_memory_format`` ``auto`` means: the faster of contiguous and channels_last for a plain forward of
    cohen's batch, measured per size (:func:`bench.certify.batch_size.best_memory_format`).
    """

    specs: list[SizeSpec]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    images: int = 1
    rounds: int = 2
    sigma: float = 0.25
    n0: int = 100
    alpha: float = 0.001
    target_n: int = TARGET_N
    fars_ns: tuple[int, ...] = FARS_MC_NS
    cohen_ns: tuple[int, int] = COHEN_NS
    cohen_direct: tuple[str, ...] = ("small",)
    cohen_batch_size: int = 0
    cohen_batch_candidates: tuple[int, ...] = ()
    cohen_modes: tuple[str, ...] = ()
    cohen_memory_format: str = "auto"
    fars_batch_size: int = FARS_BATCH_SIZE
    throughput_sizes: tuple[str, ...] = (DEFAULT_NETWORK, "small")
    throughput_images: int = 32
    memory: bool = True
    memory_ns: tuple[int, int] = (10_000, TARGET_N)
    cohen_memory_ns: tuple[int, int] = COHEN_MEMORY_NS
    seed: int = 0
    progress: bool = True

    def as_dict(self) -> dict[str, Any]:
        d = {k.name: getattr(self, k.name) for k in dataclasses.fields(self)}
        d["specs"] = [s.as_dict() for s in self.specs]
        d["device"] = str(self.device)
        return d


def log(config: SweepConfig, message: str) -> None:
    """A progress line on stderr (unless ``config.progress`` is off)."""
    if config.progress:
        print(message, file=sys.stderr, flush=True)
