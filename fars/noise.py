"""Deterministic Gaussian noise for Monte Carlo certification.

How an example's noise is decided
---------------------------------
The samples of one example form a stream cut into *blocks* of ``block_size(dim)`` consecutive samples
(a power of two that depends only on the number of noise coordinates per sample, ``dim``). Block ``b``
of stage ``s`` (selection, estimation or prediction) of example ``i`` is drawn by a fresh
``torch.Generator`` on the model's device, seeded with ``numpy.random.SeedSequence([seed, s, i, b])``
(a well-mixed 63-bit seed). The last block of a stage is cut to the samples the stage needs, so
sample ``j`` of example ``i`` is a function of ``(seed, stage, i, j // block, n)`` and the device
type alone: not of the batch size, of which other examples share a batch, of their order, or of the
process that computes it. CPU and CUDA generators are different algorithms, so CPU and CUDA runs draw
different (equally valid) noise.

Selection (``n0`` samples) and estimation (``n`` samples) use different stages, so the samples that
pick the class are never reused to estimate its probability, as CERTIFY requires.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from enum import IntEnum
from typing import Iterator

import numpy as np
import torch

#: A block holds at most this many noise coordinates (16 MiB in fp32) ...
BLOCK_ELEMENTS = 1 << 22
#: ... and at most this many samples.
MAX_BLOCK_SAMPLES = 1 << 12


class Stage(IntEnum):
    """Independent noise streams of one example."""

    SELECTION = 0
    ESTIMATION = 1
    PREDICTION = 2


def block_size(dim: int) -> int:
    """Samples per noise block for samples of ``dim`` coordinates (a power of two)."""
    if dim < 1:
        raise ValueError(f"noise dimension must be >= 1, got {dim}")
    fit = max(1, BLOCK_ELEMENTS // dim)
    return min(MAX_BLOCK_SAMPLES, 1 << (fit.bit_length() - 1))


def block_seed(seed: int, stage: int, index: int, block: int) -> int:
    """The generator seed of one block: a hash of the four integers (numpy's SeedSequence)."""
    words = np.random.SeedSequence([seed, stage, index, block]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])  # < 2**63, accepted by every torch generator


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return seed


@dataclass(frozen=True)
class Segment:
    """Samples ``[lo, hi)`` of block ``block`` of the example in row ``row`` of the batch."""

    row: int
    block: int
    lo: int
    hi: int

    @property
    def size(self) -> int:
        return self.hi - self.lo


def plan_batches(rows: int, num_samples: int, block: int, batch_size: int) -> Iterator[list[Segment]]:
    """Cut ``rows`` examples x ``num_samples`` samples into forward batches of <= ``batch_size``.

    Examples follow each other in the batches, so several examples share a batch when
    ``num_samples`` is small, and a block is split across batches when it is larger than a batch.
    """
    batch: list[Segment] = []
    room = batch_size
    for row in range(rows):
        for b in range((num_samples + block - 1) // block):
            length = min(block, num_samples - b * block)
            lo = 0
            while lo < length:
                take = min(room, length - lo)
                batch.append(Segment(row, b, lo, lo + take))
                lo += take
                room -= take
                if room == 0:
                    yield batch
                    batch, room = [], batch_size
    if batch:
        yield batch


class NoiseSource:
    """Standard normal noise blocks for one stage of a batch of examples (see the module doc)."""

    def __init__(self, seed: int, stage: Stage, indices: torch.Tensor, num_samples: int,
                 shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> None:
        self.seed = seed
        self.stage = int(stage)
        self.indices = [int(i) for i in indices]
        self.num_samples = num_samples
        self.shape = tuple(shape)
        self.device = device
        self.dtype = dtype
        self.block = block_size(int(np.prod(self.shape, dtype=np.int64)))
        self._cached: tuple[int, int, torch.Tensor] | None = None

    def draw(self, row: int, block: int) -> torch.Tensor:
        """Block ``block`` of row ``row``: [length, *shape] standard normal samples."""
        if self._cached is not None and self._cached[:2] == (row, block):
            return self._cached[2]
        length = min(self.block, self.num_samples - block * self.block)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(block_seed(self.seed, self.stage, self.indices[row], block))
        noise = torch.randn((length, *self.shape), generator=generator, device=self.device, dtype=self.dtype)
        self._cached = (row, block, noise)
        return noise

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(rows, noise)`` per forward batch: the row of each sample and its noise."""
        for segments in plan_batches(len(self.indices), self.num_samples, self.block, batch_size):
            parts = [self.draw(s.row, s.block)[s.lo:s.hi] for s in segments]
            noise = parts[0] if len(parts) == 1 else torch.cat(parts)
            rows = torch.repeat_interleave(
                torch.tensor([s.row for s in segments]), torch.tensor([s.size for s in segments])
            ).to(self.device, non_blocking=True)
            yield rows, noise
