"""Timing one network of the size sweep: cohen's batch size, the (method, n, mode) jobs, the plain-forward
references and the throughput of a many-image call.

Each certify call is timed through the certificate's own ``seconds`` (device synchronised), warm-up
excluded, with the process CPU time (user + system) and minor page faults of the call beside it
(:func:`bench.perf.n_sweep.certify_with_usage`); the jobs of one size run in a fixed order that is reversed
on every other round, and the median over rounds and images is kept.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from baselines import CohenRS
from baselines.cohen import MEMORY_FORMATS
from fars import Certifier

from ...certify.batch_size import BATCH_CANDIDATES, best_batch_size, best_memory_format, plain_batch
from .. import cost_model as cm
from ..n_sweep import certify_with_usage, time_certifier
from .builders import FP32, make_certifier
from .layouts import Network
from .settings import CPU_BATCH_CANDIDATES, SweepConfig, log

#: (certifier, images, indices, usage=list or None) -> seconds per image; ``usage`` receives per image the
#: process CPU seconds, page faults, prediction and radius of a call (:func:`bench.perf.n_sweep.time_certifier`)
Timer = Callable[..., list[float]]
#: one timed job: (method, n, cohen mode; ``-`` for the FaRS methods)
Job = tuple[str, int, str]


def same_batch_ns(ns: tuple[int, int], batch_size: int) -> tuple[int, int]:
    """Cohen's two n rounded up to multiples of ``batch_size`` (the higher at least one batch above the lower),
    so that the estimation of both runs only full batches of that size and the ratio of their times tests
    linearity in n, not a change of batch size."""
    low = max(1, math.ceil(ns[0] / batch_size)) * batch_size
    high = max(low + batch_size, math.ceil(ns[1] / batch_size) * batch_size)
    return low, high


def batch_candidates(config: SweepConfig, device: torch.device) -> tuple[int, ...]:
    """Cohen's batch sizes the search tries on ``device``: ``config.cohen_batch_candidates`` when given, else
    :data:`CPU_BATCH_CANDIDATES` on a CPU and the CUDA list of :data:`BATCH_CANDIDATES` on a GPU."""
    if config.cohen_batch_candidates:
        return config.cohen_batch_candidates
    return CPU_BATCH_CANDIDATES if device.type == "cpu" else BATCH_CANDIDATES["cuda"]


def resolve_batch(net: Network, config: SweepConfig) -> tuple[SweepConfig, pd.DataFrame | None]:
    """The size's settings with cohen's batch size fixed and its two n on that batch size
    (:func:`same_batch_ns`): ``config.cohen_batch_size`` when given, else the throughput-best batch of a
    plain forward of ``net`` (:func:`best_batch_size`, one timed call per candidate after a warm-up, candidates
    at most cohen's higher n), and cohen's memory format the given one, else (``auto``) the faster for a plain
    forward of that batch (:func:`best_memory_format`). Returns the settings and the search's table (None
    when the batch size was given)."""
    search = None
    size = config.cohen_batch_size
    if size < 1:
        candidates = batch_candidates(config, net.images.device)
        size, search = best_batch_size(net.plain, net.spec.input_shape, net.images.device, candidates=candidates,
                                       repeats=1, max_samples=max(config.cohen_ns[1], min(candidates)))
    memory_format = config.cohen_memory_format
    if memory_format == "auto":
        memory_format, _ = best_memory_format(net.plain, net.spec.input_shape, size, net.images.device)
    return dataclasses.replace(config, cohen_batch_size=size, cohen_memory_format=memory_format,
                               cohen_ns=same_batch_ns(config.cohen_ns, size)), search


def _warm_up(certifier: CohenRS, image: torch.Tensor, index: torch.Tensor) -> None:
    """One call of ``certifier`` itself at one batch of n (its compiled network, if any, built for both the
    selection's and the estimation's batch shapes), its n and n0 restored after."""
    n, n0 = certifier.n, certifier.n0
    try:
        certifier.n, certifier.n0 = certifier.batch_size, min(n0, certifier.batch_size)
        certifier.certify(image, indices=index)
    finally:
        certifier.n, certifier.n0 = n, n0


def default_timer(certifier: Certifier, images: torch.Tensor, indices: torch.Tensor,
                  usage: list[dict[str, float]] | None = None) -> list[float]:
    """Seconds per image: :func:`time_certifier` for the fast methods; cohen (seconds to minutes per call)
    is warmed up by one call at one batch of n (:func:`_warm_up`; two for a compiled network) and then timed
    once per image. ``usage``
    receives each image's process CPU seconds, page faults, prediction and radius."""
    if not isinstance(certifier, CohenRS):
        return time_certifier(certifier, images, indices, usage=usage)
    _warm_up(certifier, images[:1], indices[:1])
    if hasattr(certifier.model, "_orig_mod"):
        # a torch.compile'd network (an OptimizedModule): its first calls recompile for the shapes and guards
        # they meet (a dynamic batch dimension, the SLL layers' weight memo), a second call settles them
        _warm_up(certifier, images[:1], indices[:1])
    seconds = []
    for i in range(len(images)):
        wall, cpu, faults, cert = certify_with_usage(certifier, images[i:i + 1], indices[i:i + 1])
        seconds.append(wall)
        if usage is not None:
            usage.append({"cpu_seconds": cpu, "page_faults": float(faults),
                          "prediction": float(cert.prediction[0]), "radius": float(cert.radius[0])})
    return seconds


def timing_jobs(name: str, config: SweepConfig) -> list[Job]:
    """The jobs timed on the size ``name``: fars-closed, fars-mc at ``fars_ns`` and the target n, cohen at its
    two n in fp32 and in each of ``cohen_modes``, and fp32 cohen at the target n when ``name`` is in
    ``cohen_direct``."""
    jobs: list[Job] = [("fars-closed", 0, "-")]
    jobs += [("fars-mc", n, "-") for n in sorted(set(config.fars_ns) | {config.target_n})]
    fp32 = sorted(set(config.cohen_ns) | ({config.target_n} if name in config.cohen_direct else set()))
    jobs += [("cohen", n, FP32) for n in fp32]
    return jobs + [("cohen", n, mode) for mode in config.cohen_modes for n in sorted(set(config.cohen_ns))]


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def time_size(net: Network, config: SweepConfig, timer: Timer = default_timer) -> pd.DataFrame:
    """Measured seconds per image of every job of :func:`timing_jobs` on ``net``: rows (method, n, mode,
    seconds, seconds_p25, seconds_p75, calls, cpu_seconds, page_faults: medians per call of the wall
    seconds, the process CPU seconds and the minor page faults; prediction and radius of the first image;
    same_as_fp32: the fraction of images whose certificate equals the fp32 cohen row's at that n;
    certified_accuracy at radius 0 when the images have labels). The job order is reversed on every other
    round; cohen at the target n runs once, on the first image."""
    jobs = timing_jobs(net.spec.name, config)
    times: dict[Job, list[float]] = {job: [] for job in jobs}
    usage: dict[Job, list[dict[str, float]]] = {job: [] for job in jobs}
    for r in range(max(1, config.rounds)):
        for method, n, mode in (jobs if r % 2 == 0 else jobs[::-1]):
            direct = method == "cohen" and n == config.target_n
            if direct and r > 0:
                continue   # minutes per call: measured once (one round, one image)
            images = net.images[:1] if direct else net.images
            indices = net.indices[:len(images)]
            log(config, f"  {net.spec.name}: {method}{'' if mode in ('-', FP32) else ' ' + mode} n={n} round {r + 1}")
            certifier = make_certifier(method, net, n, config, FP32 if mode == "-" else mode)
            times[(method, n, mode)] += timer(certifier, images, indices, usage=usage[(method, n, mode)])
    rows = []
    for (method, n, mode), seconds in times.items():
        s = np.asarray(seconds, dtype=float)
        used = usage[(method, n, mode)][:len(net.images) if method != "cohen" or n != config.target_n else 1]
        certificates = [(u["prediction"], u["radius"]) for u in used if "prediction" in u]
        fp32 = [(u["prediction"], u["radius"]) for u in usage.get(("cohen", n, FP32), []) if "prediction" in u]
        same = (float(np.mean([a == b for a, b in zip(certificates, fp32, strict=False)]))
                if mode not in ("-", FP32) and certificates and fp32 else math.nan)
        accuracy = math.nan
        if net.labels is not None and certificates:
            labels = net.labels[:len(certificates)].tolist()
            accuracy = float(np.mean([p == float(y) for (p, _), y in zip(certificates, labels, strict=True)]))
        rows.append({"method": method, "n": n, "mode": mode, "seconds": float(np.median(s)),
                     "seconds_p25": float(np.percentile(s, 25)), "seconds_p75": float(np.percentile(s, 75)),
                     "calls": len(s), "cpu_seconds": _median([u["cpu_seconds"] for u in usage[(method, n, mode)]]),
                     "page_faults": _median([u["page_faults"] for u in usage[(method, n, mode)]]),
                     "prediction": certificates[0][0] if certificates else math.nan,
                     "radius": certificates[0][1] if certificates else math.nan,
                     "same_as_fp32": same, "certified_accuracy": accuracy})
    return pd.DataFrame(rows)


def reference_forwards(net: Network, config: SweepConfig) -> tuple[cm.PlainForward, float]:
    """The plain forwards: batched at cohen's batch size (per sample), and one image timed against
    fars-closed in alternating blocks (:func:`cost_model.paired_single_image`). Returns the reference
    and fars-closed's paired median seconds."""
    batch = plain_batch(net.spec.input_shape, config.cohen_batch_size, net.images.device)
    if config.cohen_memory_format in MEMORY_FORMATS and batch.dim() == 4:   # as cohen's noisy batches are
        batch = batch.contiguous(memory_format=MEMORY_FORMATS[config.cohen_memory_format])
    batched = cm.plain_forward_seconds(net.plain, batch, repeats=3)
    closed = make_certifier("fars-closed", net, 0, config)
    single, closed_seconds = cm.paired_single_image(net.plain, closed, net.images, net.indices, rounds=3, calls=11)
    return cm.PlainForward(config.cohen_batch_size, batched / config.cohen_batch_size, single,
                           paired="fars-closed and the forward timed in alternating blocks"), closed_seconds


def throughput_rows(net: Network, config: SweepConfig) -> list[dict[str, Any]]:
    """Images per second with ``throughput_images`` images in one ``certify`` call (batched backbone) of
    fars-closed and fars-mc at ``target_n``, against a plain forward of the same images in one batch.

    A batched call's time is attributed evenly: seconds per image = the call's seconds / its images.
    """
    count = config.throughput_images
    if net.spec.layout is None:
        from ...data import load_embedded
        images = load_embedded(limit=count)[0].to(net.images.device)
    else:
        generator = torch.Generator().manual_seed(config.seed + 1)
        images = torch.rand(count, *net.spec.input_shape, generator=generator).to(net.images.device)
    indices = torch.arange(len(images))
    plain = cm.plain_forward_seconds(net.plain, images, repeats=3)
    calls_by_method = {"plain-forward": (0, plain)}
    for method, n in (("fars-closed", 0), ("fars-mc", config.target_n)):
        certifier = make_certifier(method, net, n, config)
        certifier.certify(images[:1], indices=indices[:1])   # warm-up
        calls = [float(certifier.certify(images, indices=indices).seconds) for _ in range(max(1, config.rounds))]
        calls_by_method[method] = (n, float(np.median(calls)))
    return [{"size": net.spec.name, "method": method, "n": n, "images_per_call": len(images),
             "seconds_per_call": seconds, "seconds_per_image": seconds / len(images),
             "images_per_second": len(images) / seconds, "ratio_to_plain": seconds / plain,
             "attribution": "seconds_per_image = seconds of one certify call / images in the call"}
            for method, (n, seconds) in calls_by_method.items()]
