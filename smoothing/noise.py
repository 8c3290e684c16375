"""Deterministic Gaussian noise for Monte Carlo certification.

How an example's noise is decided
---------------------------------
The samples of one example form a stream cut into *blocks* of ``block_size(dim)`` consecutive samples
(a power of two that depends only on the number of noise coordinates per sample, ``dim``). Block ``b``
of stage ``s`` (selection, estimation or prediction) of example ``i`` is drawn by a fresh
``torch.Generator`` on the model's device, seeded with ``numpy.random.SeedSequence([seed, s, i, b])``
(a well-mixed 63-bit seed). The last block of a stage is cut to the samples the stage needs, so
sample ``j`` of example ``i`` is a function of ``(seed, stage, i, j // block, n)`` and the device
type alone: not of the batch size, of which other examples share a batch, of their order, of the
process that computes it, or of the range ``[start, stop)`` of the stream a call draws (sequential
CERTIFY draws its estimation stream of cap ``n`` in rounds that continue it: :meth:`NoiseSource.batches`).
CPU and CUDA generators are different algorithms, so CPU and CUDA runs draw different (equally valid)
noise.

Selection (``n0`` samples) and estimation (``n`` samples) use different stages, so the samples that
pick the class are never reused to estimate its probability, as CERTIFY requires.

Part of the method-neutral core.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch

#: A block holds at most this many noise coordinates (16 MiB in fp32) ...
BLOCK_ELEMENTS = 1 << 22
#: ... and at most this many samples (low-dimensional noise, e.g. FaRS's projected sampler with 10
#: coordinates, gets few large blocks: a generator's set-up is paid per block).
MAX_BLOCK_SAMPLES = 1 << 16


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


def plan_batches(rows: int, num_samples: int, block: int, batch_size: int, start: int = 0,
                 stop: int | None = None) -> Iterator[list[Segment]]:
    """Cut samples ``[start, stop)`` (default: all ``num_samples``) of each of ``rows`` examples into forward
    batches of <= ``batch_size`` samples.

    Examples follow each other in the batches, so several examples share a batch when ``stop - start``
    is smaller than ``batch_size``; an example of at least ``batch_size`` samples gets batches of its own
    (the last one short), so that every batch of it belongs to one example: the certifiers' single-example
    path (a broadcast center, a vote without gathers), the same batches as a call for that example alone.
    A block is split across batches when it is larger than a batch. A sample keeps its place
    in its example's stream (block ``j // block``, offset ``j % block``) whatever ``start`` is, so drawing
    ``[0, m)`` then ``[m, n)`` visits the same samples as drawing ``[0, n)`` (sequential certification).

    Raises:
        ValueError: unless 0 <= start <= stop <= num_samples.
    """
    stop = num_samples if stop is None else stop
    if not 0 <= start <= stop <= num_samples:
        raise ValueError(f"sample range [{start}, {stop}) must lie within [0, {num_samples}]")
    batch: list[Segment] = []
    room = batch_size
    own = stop - start >= batch_size           # each example fills a batch: none shares one
    for row in range(rows):
        if own and batch:
            yield batch
            batch, room = [], batch_size
        at = start
        while at < stop:
            b = at // block
            end = min(block, stop - b * block)     # this block's part of [start, stop), as offsets in the block
            lo = at - b * block
            while lo < end:
                take = min(room, end - lo)
                batch.append(Segment(row, b, lo, lo + take))
                lo += take
                room -= take
                if room == 0:
                    yield batch
                    batch, room = [], batch_size
            at = (b + 1) * block
    if batch:
        yield batch


@dataclass(frozen=True)
class NoiseBatch:
    """One forward batch: ``noise`` [m, *shape] holds the samples of ``segments``, in order."""

    noise: torch.Tensor
    segments: tuple[Segment, ...]

    @property
    def row(self) -> int | None:
        """The row of every sample when the batch belongs to a single example (the usual case for large n),
        else None."""
        first, last = self.segments[0].row, self.segments[-1].row  # rows never decrease within a batch
        return first if first == last else None

    def rows(self) -> torch.Tensor:
        """The row of each sample, int64 [m] on the noise's device."""
        return torch.repeat_interleave(
            torch.tensor([s.row for s in self.segments]), torch.tensor([s.size for s in self.segments])
        ).to(self.noise.device, non_blocking=True)


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

    def _length(self, block: int) -> int:
        return min(self.block, self.num_samples - block * self.block)

    def _fill(self, row: int, block: int, out: torch.Tensor) -> torch.Tensor:
        """Write block ``block`` of row ``row`` into ``out`` (contiguous, [length, *shape])."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(block_seed(self.seed, self.stage, self.indices[row], block))
        return torch.randn(out.shape, generator=generator, device=self.device, dtype=self.dtype, out=out)

    def draw(self, row: int, block: int) -> torch.Tensor:
        """Block ``block`` of row ``row``: [length, *shape] standard normal samples."""
        if self._cached is not None and self._cached[:2] == (row, block):
            return self._cached[2]
        noise = self._fill(row, block, torch.empty((self._length(block), *self.shape), device=self.device,
                                                   dtype=self.dtype))
        self._cached = (row, block, noise)
        return noise

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[NoiseBatch]:
        """Yield the forward batches in order: each batch's noise and the segments it holds.

        Only samples ``[start, stop)`` of each example's stream of ``num_samples`` (default: all of them):
        sample j is the same tensor whatever range it is drawn in, since blocks are always drawn at their full
        length for ``num_samples`` and then sliced (the block last drawn is kept for the next call).
        """
        for segments in plan_batches(len(self.indices), self.num_samples, self.block, batch_size, start, stop):
            if len(segments) == 1:
                s = segments[0]
                noise = self.draw(s.row, s.block)[s.lo:s.hi]
            else:
                # several blocks: written straight into one batch tensor (no concatenation afterwards)
                noise = torch.empty((sum(s.size for s in segments), *self.shape), device=self.device, dtype=self.dtype)
                at = 0
                for s in segments:
                    out = noise[at:at + s.size]
                    cached = self._cached is not None and self._cached[:2] == (s.row, s.block)
                    if s.lo == 0 and s.hi == self._length(s.block) and not cached:
                        self._fill(s.row, s.block, out)    # a whole block, needed by no other batch
                    else:
                        out.copy_(self.draw(s.row, s.block)[s.lo:s.hi])
                    at += s.size
            yield NoiseBatch(noise, tuple(segments))


__all__ = [
    "BLOCK_ELEMENTS",
    "MAX_BLOCK_SAMPLES",
    "Stage",
    "block_size",
    "block_seed",
    "check_seed",
    "Segment",
    "plan_batches",
    "NoiseBatch",
    "NoiseSource",
]
