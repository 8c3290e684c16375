"""Batch sizes of the sampled methods (the throughput-best batch of a plain forward, and fars-mc's by sampler)
and Cohen's memory format (the faster of contiguous and channels_last for a plain forward of that batch).

Certificates do not depend on the batch size (an example's noise is fixed by the seed and its index),
so the harness picks the fastest one ('auto'). The memory format changes the order of a convolution's sums
(scores differ in the last bits), so a certificate is that of the network as evaluated in the chosen format;
:func:`best_memory_format` picks the faster one per network, and the manifest records it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import pandas as pd
import torch

from baselines.cohen import MEMORY_FORMATS
from smoothing.checks import fixed_weights, synchronize, timed


def best_seconds(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls of ``fn`` (device synchronised), after one warm-up call."""
    fn()
    best = math.inf
    for _ in range(max(1, repeats)):
        with timed(device) as elapsed:
            fn()
        best = min(best, elapsed[0])
    return best


def plain_batch(input_shape: Sequence[int], batch_size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """A batch of noisy-looking inputs: uniform [0, 1] pixels plus N(0, 0.25^2) noise (as Cohen's samples)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    x = torch.rand(batch_size, *input_shape, generator=generator, device=device)
    return x + 0.25 * torch.randn(x.shape, generator=generator, device=device)


#: batch sizes tried by :func:`best_batch_size` (noisy samples per forward pass)
#: (with the tuned allocator, bench.common.env.tune_cpu_allocator, a 2-core CPU spends the same CPU time per sample of
#: the default network at 256 and 1024; without it the larger batches' activations are mapped and zeroed afresh
#: on every forward: 196 page faults per sample at 1024, 1.7x the CPU time of 256)
BATCH_CANDIDATES = {"cpu": (64, 128, 256, 512, 1024, 2048, 4096), "cuda": (1024, 4096, 16384, 32768, 65536)}
#: fars-mc's batch size with the projected sampler (as in this sweep): 10 noise coordinates per sample, so
#: one batch is one whole noise block (smoothing.noise.MAX_BLOCK_SAMPLES) and the per-batch work is amortised
FARS_BATCH_SIZE = 1 << 16
#: fars-mc's batch size with the direct sampler (noise of the embedding's dimension; an MLP head's hidden
#: layer per sample): 10,000 measured 1.05x cheaper in CPU time than 65,536 with the tuned allocator
FARS_DIRECT_BATCH_SIZE = 10_000


def fars_batch_size(certifier: Any) -> int:
    """The batch size ``--batch-size auto`` gives a FaRSMonteCarlo certifier (by its sampler)."""
    return FARS_BATCH_SIZE if getattr(certifier, "sampler", "direct") == "projected" else FARS_DIRECT_BATCH_SIZE


def best_batch_size(model: torch.nn.Module, input_shape: Sequence[int], device: torch.device | str,
                    candidates: Sequence[int] | None = None, repeats: int = 3,
                    max_samples: int | None = None) -> tuple[int, pd.DataFrame]:
    """The batch size of highest throughput of a plain forward of ``model`` (inference mode), and the table.

    Each candidate is timed on a noisy-looking batch (best of ``repeats`` after a warm-up); candidates
    above ``max_samples`` are skipped, and on CUDA a candidate that runs out of memory ends the search.
    Returns ``(best, frame)`` with columns ``batch_size, seconds_per_sample, samples_per_second``.
    """
    device = torch.device(device)
    candidates = tuple(candidates or BATCH_CANDIDATES.get(device.type, BATCH_CANDIDATES["cuda"]))
    if not candidates or any(int(c) < 1 for c in candidates):
        raise ValueError("candidates must be batch sizes >= 1")
    rows: list[dict[str, float]] = []
    batch: torch.Tensor | None
    mode = model.training
    model.eval()
    try:
        with torch.inference_mode(), fixed_weights():   # the forwards of a certify call
            for size in sorted({int(c) for c in candidates}):
                if max_samples is not None and size > max_samples and rows:
                    break
                try:
                    batch = plain_batch(tuple(input_shape), size, device)
                    seconds = best_seconds(partial(model, batch), device, repeats)
                except torch.cuda.OutOfMemoryError:
                    if not rows:
                        raise
                    break
                finally:
                    batch = None
                rows.append({"batch_size": size, "seconds_per_sample": seconds / size,
                             "samples_per_second": size / seconds})
    finally:
        model.train(mode)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    frame = pd.DataFrame(rows)
    best = int(frame.loc[frame["samples_per_second"].idxmax(), "batch_size"])
    return best, frame


def forward_seconds(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call of ``fn``: process CPU time on a CPU (a shared machine's other work is not counted),
    wall time with the device synchronised at both ends on CUDA."""
    if device.type == "cuda":
        with timed(device) as elapsed:
            fn()
        return elapsed[0]
    synchronize(device)
    start = time.process_time()
    fn()
    return time.process_time() - start


def faster_memory_format(seconds: Mapping[str, float]) -> str:
    """The memory format of least ``seconds`` (a name of :data:`baselines.cohen.MEMORY_FORMATS`); contiguous
    unless another one is strictly faster."""
    best = "contiguous"
    for name, value in seconds.items():
        if value < seconds.get(best, math.inf):
            best = name
    return best


def best_memory_format(model: torch.nn.Module, input_shape: Sequence[int], batch_size: int,
                       device: torch.device | str, repeats: int = 3,
                       clock: Callable[[Callable[[], Any], torch.device], float] = forward_seconds,
                       ) -> tuple[str, dict[str, float]]:
    """The faster memory format of Cohen's noisy batches for a plain forward of ``model`` (inference mode).

    For image inputs (``input_shape`` of 3 dimensions: 4-d batches) a noisy-looking batch of ``batch_size``
    is given to the model in each format of :data:`baselines.cohen.MEMORY_FORMATS` (as
    :class:`~baselines.CohenRS` converts it; the model is not changed), the formats alternating, each
    format's best of ``repeats`` calls of ``clock`` (:func:`forward_seconds`) after one warm-up call each.
    Other inputs give ``contiguous`` without a measurement. Returns ``(format, seconds by format)``.
    """
    device = torch.device(device)
    if len(input_shape) != 3:
        return "contiguous", {}
    mode = model.training
    model.eval()
    try:
        with torch.inference_mode(), fixed_weights():   # the forwards of a certify call
            plain = plain_batch(tuple(input_shape), batch_size, device)
            batches = {name: plain.contiguous(memory_format=layout) for name, layout in MEMORY_FORMATS.items()}
            calls = {name: partial(model, batch) for name, batch in batches.items()}
            for call in calls.values():
                call()
            seconds = {name: math.inf for name in calls}
            for _ in range(max(1, repeats)):
                for name, call in calls.items():
                    seconds[name] = min(seconds[name], clock(call, device))
    finally:
        model.train(mode)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return faster_memory_format(seconds), seconds
