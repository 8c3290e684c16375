"""Speedup versus model size: the SLL authors' layouts, timed and set against the cost model.

``python -m bench.scaling --sizes small medium large xlarge`` runs :func:`run_size_sweep`. For each
network (the SLL layouts of :data:`bench.models.sll_format.SLL_SIZES` at CIFAR size 3x32x32 with 10
classes and random, seeded weights; ``default``: the shipped Fashion-MNIST network ``sll+ce`` on the
embedded images; optionally SLL small at the FaRS paper's 3x224x224, 1000 classes, when its estimated
memory fits) it writes, to ``--out`` (default ``runs/sizes``):

* ``speedup_vs_size.csv``: one row per (size, method, n): flops per image (the cost model's
  ``FlopCounterMode`` counter on backbone + head, :func:`bench.perf.cost_model.network_costs`; 2 flops
  per multiply-add), parameters, seconds per image, ``source`` (``measured``, ``extrapolated`` or
  ``not-linear``), the cost model's floor and measured / floor, and on the n = ``target_n`` rows of
  fars-mc and fars-closed the speedup over cohen: ``predicted_speedup`` (cohen's floor / the method's
  floor, from the counted flops, bytes and normals), ``predicted_speedup_flops`` (the flops ratio alone),
  ``measured_speedup`` (cohen's seconds / the method's seconds) and ``limit`` (cohen's seconds / one
  plain single-image forward: ``fars-mc`` runs one backbone pass, so it cannot beat that).
* ``speedup_vs_size.png`` / ``.pdf``: speedup of fars-mc and fars-closed over cohen at n = ``target_n``
  versus flops per image, log-log; points whose cohen time is extrapolated are hollow and labelled.
* ``throughput.csv``: images per second when ``throughput_images`` images go in one ``certify`` call
  (the backbone runs batched), against a batched plain forward of the same images. Per-image time of a
  batched call is attributed evenly: ``seconds_per_image`` = the call's seconds / its images.
* ``memory.csv``: peak memory of one ``certify`` call per method at two n: on the CPU, in a fresh
  subprocess per measurement, the peak resident memory over the first call minus the resident memory
  before it (after the network is built; Linux's ``VmHWM``, reset just before the call, else the growth of
  ``resource.getrusage(RUSAGE_SELF).ru_maxrss``); on CUDA, in this process, ``torch.cuda.max_memory_allocated`` minus
  the memory allocated before the call (peak statistics reset first). The ``how`` column says which.
* ``size_sweep.md``: the table and the performance goals as PASS / MISS lines (printed, never asserted);
  ``manifest.json``: settings, machine state, versions, git commit.

What is measured and what is extrapolated: ``fars-closed`` and ``fars-mc`` (n = 1e4, 1e5) are always
measured. ``cohen`` is measured at two smaller n (default 1e3, 1e4); when the ratio of its times is
within 10% of the ratio of the samples drawn, n0 + n (:func:`linear_in_n`; the plain ratio of the n is
recorded too, ``linear_ratio_n``) its time at ``target_n`` is extrapolated on the
straight line through the two points (time = a + b n) and labelled ``extrapolated``; otherwise it is
reported as ``not-linear`` and not extrapolated (no speedup at ``target_n`` then). For the sizes in
``cohen_direct`` cohen is also measured at ``target_n`` on one image, and that measured row is used.

Timing: each call through the certificate's own ``seconds`` (device synchronised,
:func:`bench.perf.scaling.time_certifier`), warm-up excluded; the methods of one size run in a fixed
order that is reversed on every other round (``rounds``), and the median over rounds and images is kept.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot import

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from baselines import CohenRS  # noqa: E402
from fars import Certifier, FaRSClosedForm, FaRSMonteCarlo  # noqa: E402
from fars.sll import LipschitzAvgPool2d, PadChannels, SLLConv2d, SLLDense  # noqa: E402

from ..certify.batch_size import FARS_BATCH_SIZE, plain_batch  # noqa: E402
from ..models.normalization import InputNormalization  # noqa: E402
from ..models.sll_format import IMAGENET_MEAN, SLL_DATASETS, SLL_SIZES, SLLLayout, build_sll_network  # noqa: E402
from ..report import markdown_table  # noqa: E402
from ..report.plots import save_figure  # noqa: E402
from . import cost_model as cm  # noqa: E402
from .scaling import certify_with_usage, time_certifier  # noqa: E402

#: the n every speedup and goal is stated at
TARGET_N = 100_000
FARS_MC_NS = (10_000, 100_000)
COHEN_NS = (1_000, 10_000)
#: cohen's memory is measured at these n on the sizes not measured directly at TARGET_N (its peak is set by
#: the batch size, not n; two n above one batch show that without minutes of sampling per probe)
COHEN_MEMORY_NS = (1_000, 2_000)
#: relative tolerance of the linearity check: time ratio / n ratio within 1 +- this
LINEAR_TOLERANCE = 0.10
#: the fraction of the memory available that a network may be estimated to need (else it is skipped)
MEMORY_FRACTION = 0.5
#: the name of the shipped Fashion-MNIST network in ``--sizes``
DEFAULT_NETWORK = "default"
PAPER_INPUT = "small@224"
#: the performance goals the sweep checks
CLOSED_FORWARD_GOAL = 1.1
MC_FLOOR_GOAL_DEFAULT = 1.25
MC_FLOOR_GOAL_SMALL = 1.5
LIMIT_FRACTION_GOAL = 0.85
THROUGHPUT_GOAL = 1.3
#: cohen's batch size for ``--cohen-batch-size auto``, (CPU, CUDA): on 2 CPU cores the throughput of a plain
#: forward is flat from 256 up (bench.certify.batch_size); a GPU needs thousands of samples per call to be busy
AUTO_COHEN_BATCH = (256, 4096)

#: (certifier, images, indices, usage=list or None) -> seconds per image; ``usage`` receives per image the
#: process CPU seconds and page faults of a call (:func:`bench.perf.scaling.time_certifier`)
Timer = Callable[..., list[float]]


# --- the networks --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SizeSpec:
    """One network of the sweep: an SLL layout at ``side`` x ``side`` RGB inputs, or the shipped network."""

    name: str
    layout: SLLLayout | None = None   # None: the shipped network (``default``)
    side: int = 32
    classes: int = 10
    seed: int = 0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, 28, 28) if self.layout is None else (3, self.side, self.side)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layout": None if self.layout is None else dataclasses.asdict(self.layout),
                "side": self.side, "classes": self.classes, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SizeSpec:
        layout = None if d["layout"] is None else SLLLayout(**d["layout"])
        return cls(d["name"], layout, int(d["side"]), int(d["classes"]), int(d["seed"]))


def named_spec(name: str, seed: int = 0) -> SizeSpec:
    """``default``, one of :data:`SLL_SIZES` at CIFAR size, or ``small@224`` (the FaRS paper's input)."""
    if name == DEFAULT_NETWORK:
        return SizeSpec(name, None, seed=seed)
    if name == PAPER_INPUT:
        return SizeSpec(name, SLL_SIZES["small"], side=224, classes=1000, seed=seed)
    if name not in SLL_SIZES:
        raise ValueError(f"unknown size {name!r}; choose from {', '.join([DEFAULT_NETWORK, *SLL_SIZES])}")
    return SizeSpec(name, SLL_SIZES[name], seed=seed)


def estimated_bytes(spec: SizeSpec, batch_size: int) -> int:
    """Rough peak bytes of timing ``spec``: parameters three times (weights, the SLL memo's copy, its
    rescaling) plus four activations of the widest layer per sample of a cohen batch."""
    if spec.layout is None:
        return 1 << 30
    lay = spec.layout
    feats = lay.width * (spec.side // 4) ** 2
    params = (lay.n_conv * (lay.conv_inner * lay.width * 9 + 2 * lay.conv_inner)
              + lay.n_dense * (lay.dense_inner * feats + 2 * lay.dense_inner) + spec.classes * (feats + 1))
    activations = 4 * max(lay.width * spec.side ** 2, lay.dense_inner, feats)
    return 4 * (3 * params + batch_size * activations)


def available_bytes(device: torch.device) -> int:
    """Memory available for the sweep: free CUDA memory, or MemAvailable of /proc/meminfo (else 8 GiB)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


@dataclass
class Network:
    """A built network of the sweep: backbone, linear head, Lipschitz constant and the images to certify."""

    spec: SizeSpec
    backbone: nn.Module
    head: nn.Linear
    lipschitz: float
    images: torch.Tensor
    indices: torch.Tensor

    @property
    def plain(self) -> nn.Module:
        return nn.Sequential(self.backbone, self.head).eval()

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.plain.parameters())


def _sll_at_side(layout: SLLLayout, side: int, classes: int) -> tuple[nn.Module, nn.Linear]:
    """The SLL authors' architecture (as :func:`build_sll_network`) for an input side that none of their
    datasets has (224: the FaRS paper's ImageNet input, ImageNet mean shift)."""
    feats = layout.width * (side // 4) ** 2
    layers: list[nn.Module] = [InputNormalization(IMAGENET_MEAN), PadChannels(3, layout.width)]
    layers += [SLLConv2d(layout.width, layout.conv_inner, 3) for _ in range(layout.n_conv)]
    layers += [LipschitzAvgPool2d(4), nn.Flatten()]
    layers += [SLLDense(feats, layout.dense_inner) for _ in range(layout.n_dense)]
    return nn.Sequential(*layers), nn.Linear(feats, classes)


def build_network(spec: SizeSpec, device: torch.device, images: int) -> Network:
    """Build ``spec`` (random weights from ``spec.seed``; uniform random pixels) or load the shipped network."""
    if spec.layout is None:
        from ..data import load_embedded
        from ..env import EMBEDDED_MODELS
        from ..models import load_zoo
        zoo = load_zoo(EMBEDDED_MODELS).to(device)
        x, _, idx = load_embedded(limit=images)
        head = cast(nn.Linear, zoo.heads["ce"][0])   # the ce head is one nn.Linear (build_head)
        return Network(spec, zoo.backbone.eval(), head.eval(), zoo.lipschitz, x.to(device), idx)
    torch.manual_seed(spec.seed)
    if spec.side == SLL_DATASETS["cifar10"].side and spec.classes == SLL_DATASETS["cifar10"].num_classes:
        net = build_sll_network(spec.layout, "cifar10")
        backbone, head = cast(nn.Module, net.backbone), cast(nn.Linear, net.head)
    else:
        backbone, head = _sll_at_side(spec.layout, spec.side, spec.classes)
    generator = torch.Generator().manual_seed(spec.seed)
    x = torch.rand(images, *spec.input_shape, generator=generator)
    # the shift (std 1) and the SLL layers are 1-Lipschitz in l2 pixel units
    return Network(spec, backbone.to(device).eval(), head.to(device).eval(), 1.0, x.to(device),
                   torch.arange(images))


# --- settings ------------------------------------------------------------------------------------

@dataclass
class SweepConfig:
    """Settings of one size sweep (the flags of ``python -m bench.scaling --sizes``)."""

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
    cohen_batch_size: int = 256
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


def _log(config: SweepConfig, message: str) -> None:
    if config.progress:
        print(message, file=sys.stderr, flush=True)


# --- timing --------------------------------------------------------------------------------------

def make_certifier(method: str, net: Network, n: int, config: SweepConfig) -> Certifier:
    """The certifier of ``method`` at ``n`` samples on ``net`` (n is ignored by fars-closed)."""
    n0 = min(config.n0, n) if n else 0
    if method == "cohen":
        return CohenRS(net.plain, config.sigma, n0=n0, n=n, alpha=config.alpha,
                       batch_size=config.cohen_batch_size, seed=config.seed)
    if method == "fars-mc":
        return FaRSMonteCarlo(net.backbone, net.head, config.sigma, lipschitz=net.lipschitz, n0=n0, n=n,
                              alpha=config.alpha, batch_size=config.fars_batch_size, seed=config.seed)
    if method == "fars-closed":
        return FaRSClosedForm(net.backbone, net.head, lipschitz=net.lipschitz)
    raise ValueError(f"unknown method {method!r}")


def default_timer(certifier: Certifier, images: torch.Tensor, indices: torch.Tensor,
                  usage: list[dict[str, float]] | None = None) -> list[float]:
    """Seconds per image: :func:`time_certifier` for the fast methods; cohen (seconds to minutes per call)
    is warmed up by a one-batch CohenRS on the same network and then timed once per image. ``usage``
    receives each image's process CPU seconds and page faults (:func:`time_certifier`)."""
    if not isinstance(certifier, CohenRS):
        return time_certifier(certifier, images, indices, usage=usage)
    warm = CohenRS(certifier.model, certifier.sigma, n0=min(certifier.n0, certifier.batch_size),
                   n=certifier.batch_size, alpha=certifier.alpha, batch_size=certifier.batch_size,
                   seed=certifier.seed)
    warm.certify(images[:1], indices=indices[:1])
    seconds = []
    for i in range(len(images)):
        wall, cpu, faults, _ = certify_with_usage(certifier, images[i:i + 1], indices[i:i + 1])
        seconds.append(wall)
        if usage is not None:
            usage.append({"cpu_seconds": cpu, "page_faults": float(faults)})
    return seconds


def timing_jobs(spec: SizeSpec, config: SweepConfig) -> list[tuple[str, int]]:
    """(method, n) pairs timed on ``spec``: fars-closed, fars-mc at ``fars_ns``, cohen at ``cohen_ns`` (and
    at ``target_n`` when ``spec`` is in ``cohen_direct``)."""
    jobs = [("fars-closed", 0)] + [("fars-mc", n) for n in sorted(set(config.fars_ns) | {config.target_n})]
    cohen = sorted(set(config.cohen_ns) | ({config.target_n} if spec.name in config.cohen_direct else set()))
    return jobs + [("cohen", n) for n in cohen]


def time_size(net: Network, config: SweepConfig, timer: Timer = default_timer) -> pd.DataFrame:
    """Measured seconds per image of every job of :func:`timing_jobs` on ``net``: rows (method, n,
    seconds, seconds_p25, seconds_p75, calls, cpu_seconds, page_faults: medians per call of the wall seconds,
    the process CPU seconds and the minor page faults). The job order is reversed on every other round."""
    jobs = timing_jobs(net.spec, config)
    times: dict[tuple[str, int], list[float]] = {job: [] for job in jobs}
    usage: dict[tuple[str, int], list[dict[str, float]]] = {job: [] for job in jobs}
    for r in range(max(1, config.rounds)):
        for method, n in (jobs if r % 2 == 0 else jobs[::-1]):
            if method == "cohen" and n == config.target_n and r > 0:
                continue   # minutes per call: measured once (one round, the images of the sweep)
            images = net.images[:1] if method == "cohen" and n == config.target_n else net.images
            indices = net.indices[:len(images)]
            _log(config, f"  {net.spec.name}: {method} n={n} round {r + 1}")
            times[(method, n)] += timer(make_certifier(method, net, n, config), images, indices,
                                        usage=usage[(method, n)])
    rows = []
    for (method, n), seconds in times.items():
        s = np.asarray(seconds, dtype=float)
        used = usage[(method, n)]
        rows.append({"method": method, "n": n, "seconds": float(np.median(s)),
                     "seconds_p25": float(np.percentile(s, 25)), "seconds_p75": float(np.percentile(s, 75)),
                     "calls": len(s),
                     "cpu_seconds": float(np.median([u["cpu_seconds"] for u in used])) if used else math.nan,
                     "page_faults": float(np.median([u["page_faults"] for u in used])) if used else math.nan})
    return pd.DataFrame(rows)


# --- linearity and extrapolation -----------------------------------------------------------------

@dataclass(frozen=True)
class Extrapolation:
    """Cohen's time at ``target_n`` from two measured n: the linearity check and the line through them."""

    n_low: int
    n_high: int
    seconds_low: float
    seconds_high: float
    target_n: int
    ratio: float            # (seconds_high / seconds_low) / ((n_high + offset) / (n_low + offset))
    linear: bool            # |ratio - 1| <= tolerance
    seconds: float          # extrapolated seconds at target_n (NaN when not linear)
    ratio_n: float = math.nan   # (seconds_high / seconds_low) / (n_high / n_low): the plain ratio of the n


def linear_in_n(n_low: int, seconds_low: float, n_high: int, seconds_high: float, target_n: int,
                tolerance: float = LINEAR_TOLERANCE, offset: int = 0) -> Extrapolation:
    """Check that time is linear in n (the ratio of the times within ``tolerance`` of the ratio of the n)
    and, only then, extrapolate to ``target_n`` on the straight line through the two points.

    ``offset``: samples drawn besides the n (cohen's n0 selection samples), so that the check compares the
    times with the ratio of the samples drawn, n0 + n: with n0 = 100 at n = 1e3 and 1e4 the plain ratio of
    the n expects 0.92 of the time ratio a cost proportional to the samples gives, which leaves a 10%
    tolerance almost no room for noise. Both ratios are recorded (``ratio``, ``ratio_n``).
    """
    if not 0 < n_low < n_high or seconds_low <= 0 or offset < 0:
        raise ValueError("need 0 < n_low < n_high, a positive time at n_low and offset >= 0")
    times = seconds_high / seconds_low
    ratio = times / ((n_high + offset) / (n_low + offset))
    linear = abs(ratio - 1.0) <= tolerance
    slope = (seconds_high - seconds_low) / (n_high - n_low)
    seconds = seconds_high + slope * (target_n - n_high) if linear else math.nan
    return Extrapolation(n_low, n_high, seconds_low, seconds_high, target_n, ratio, linear, seconds,
                         times / (n_high / n_low))


def cohen_at_target(measured: pd.DataFrame, config: SweepConfig) -> tuple[dict[str, Any], Extrapolation | None]:
    """Cohen's row at ``target_n``: measured when it was, else extrapolated from ``cohen_ns`` when linear,
    else a ``not-linear`` row without seconds. The check compares two n run at the same batch size: with
    the smaller n below cohen's batch size it is not made (a ``not-comparable`` row unless measured).
    Returns (row, the extrapolation or None)."""
    cohen = measured[measured["method"] == "cohen"].set_index("n")["seconds"]
    low, high = sorted(config.cohen_ns)
    check = None
    if low < config.cohen_batch_size:
        # below one batch the estimation runs one short batch, above it full ones: two batch sizes, whose
        # costs per sample differ, so the ratio of the times would not test linearity in n
        if config.target_n in cohen.index:
            return {"method": "cohen", "n": config.target_n, "seconds": float(cohen[config.target_n]),
                    "source": "measured"}, None
        return {"method": "cohen", "n": config.target_n, "seconds": math.nan, "source": "not-comparable"}, None
    if low in cohen.index and high in cohen.index:
        check = linear_in_n(low, float(cohen[low]), high, float(cohen[high]), config.target_n,
                            offset=min(config.n0, low))   # n0 = min(n0, n) selection samples at both n
    if config.target_n in cohen.index:
        return {"method": "cohen", "n": config.target_n, "seconds": float(cohen[config.target_n]),
                "source": "measured"}, check
    if check is None:
        return {"method": "cohen", "n": config.target_n, "seconds": math.nan, "source": "not-measured"}, None
    return {"method": "cohen", "n": config.target_n, "seconds": check.seconds,
            "source": "extrapolated" if check.linear else "not-linear"}, check


# --- the cost model ------------------------------------------------------------------------------

def flops_per_image(costs: cm.NetworkCosts) -> float:
    """Flops of one plain single-image forward (backbone + head) by the cost model's counter."""
    return float(costs.backbone.flops(1, 1) + costs.head.flops(1, 1))


def reference_forwards(net: Network, config: SweepConfig) -> tuple[cm.PlainForward, float]:
    """The plain forwards: batched at cohen's batch size (per sample), and one image timed against
    fars-closed in alternating blocks (:func:`cost_model.paired_single_image`). Returns the reference
    and fars-closed's paired median seconds."""
    batch = plain_batch(net.spec.input_shape, config.cohen_batch_size, net.images.device)
    batched = cm.plain_forward_seconds(net.plain, batch, repeats=3)
    closed = make_certifier("fars-closed", net, 0, config)
    single, closed_seconds = cm.paired_single_image(net.plain, closed, net.images, net.indices, rounds=3, calls=11)
    return cm.PlainForward(config.cohen_batch_size, batched / config.cohen_batch_size, single,
                           paired="fars-closed and the forward timed in alternating blocks"), closed_seconds


def size_rows(net: Network, config: SweepConfig, costs: cm.NetworkCosts, machine: cm.Machine,
              measured: pd.DataFrame, plain: cm.PlainForward, closed_paired: float) -> pd.DataFrame:
    """The size's rows of ``speedup_vs_size.csv`` (see the module doc)."""
    measured = measured.copy()
    measured["source"] = "measured"
    cohen_row, check = cohen_at_target(measured, config)
    if not (measured["method"].eq("cohen") & measured["n"].eq(config.target_n)).any():
        measured = pd.concat([measured, pd.DataFrame([cohen_row])], ignore_index=True)
    closed = measured["method"] == "fars-closed"
    measured.loc[closed, "seconds"] = closed_paired    # the paired median, against the paired forward
    batch = {"cohen": config.cohen_batch_size, "fars-mc": config.fars_batch_size, "fars-closed": 1}
    measured["model"] = net.spec.name
    measured["batch_size"] = measured["method"].map(batch)
    measured["samples"] = [0 if m == "fars-closed" else min(config.n0, n) + n
                           for m, n in zip(measured["method"], measured["n"], strict=True)]
    table = cm.cost_table(costs, measured, machine, plain)
    table["source"] = list(measured["source"])
    table["seconds_p25"] = list(measured.get("seconds_p25", pd.Series(math.nan, index=measured.index)))
    table["seconds_p75"] = list(measured.get("seconds_p75", pd.Series(math.nan, index=measured.index)))
    table.insert(0, "size", net.spec.name)
    table.insert(1, "input_shape", "x".join(map(str, net.spec.input_shape)))
    table.insert(2, "parameters", net.parameters)
    table.insert(3, "flops_per_image", flops_per_image(costs))
    table["extrapolated"] = table["source"] == "extrapolated"
    table["plain_single_s"] = plain.single
    table["plain_batched_per_sample_s"] = plain.per_sample
    table["linear_ratio"] = math.nan if check is None else check.ratio      # over the samples n0 + n
    table["linear_ratio_n"] = math.nan if check is None else check.ratio_n  # over the n alone
    table["linear"] = None if check is None else check.linear
    for column in ("predicted_speedup", "predicted_speedup_flops", "measured_speedup", "limit",
                   "fraction_of_limit"):
        table[column] = math.nan
    cohen = table[(table["method"] == "cohen") & (table["n"] == config.target_n)].iloc[0]
    cohen_s = float(cohen["seconds"])
    limit = cohen_s / plain.single if plain.single > 0 else math.nan
    for method in ("fars-mc", "fars-closed"):
        at = (table["method"] == method) & (table["n"] == (config.target_n if method == "fars-mc" else 0))
        if not at.any():
            continue
        row = table[at].iloc[0]
        table.loc[at, "predicted_speedup"] = float(cohen["floor_s"]) / float(row["floor_s"])
        table.loc[at, "predicted_speedup_flops"] = float(cohen["flops"]) / float(row["flops"])
        table.loc[at, "measured_speedup"] = cohen_s / float(row["seconds"])
        table.loc[at, "limit"] = limit
        table.loc[at, "fraction_of_limit"] = cohen_s / float(row["seconds"]) / limit
        table.loc[at, "speedup_source"] = str(cohen["source"])
    table["timing"] = ("median seconds of one-image certify calls (the certificate's seconds, device synchronised, "
                       "warm-up excluded) over images and rounds; fars-closed: paired with the plain forward")
    table["device"] = str(net.images.device)
    table["threads"] = torch.get_num_threads()
    return table


def predicted(costs: cm.NetworkCosts, machine: cm.Machine, config: SweepConfig) -> dict[str, float]:
    """The cost model's prediction before any timing: floors at ``target_n`` and their ratio."""
    floors = {}
    for method, n, bs in (("cohen", config.target_n, config.cohen_batch_size),
                          ("fars-mc", config.target_n, config.fars_batch_size), ("fars-closed", 0, 1)):
        phases = cm.method_phases(method, costs, min(config.n0, n) if n else 0, n, bs)
        floors[method] = sum(p.floor(machine) for p in phases.values())
    return {"floor_cohen_s": floors["cohen"], "floor_fars_mc_s": floors["fars-mc"],
            "floor_fars_closed_s": floors["fars-closed"],
            "predicted_speedup_mc": floors["cohen"] / floors["fars-mc"]}


# --- throughput ----------------------------------------------------------------------------------

def throughput_rows(net: Network, config: SweepConfig) -> list[dict[str, Any]]:
    """Images per second with ``throughput_images`` images in one ``certify`` call (batched backbone) of
    fars-closed and fars-mc at ``target_n``, against a plain forward of the same images in one batch.

    A batched call's time is attributed evenly: seconds per image = the call's seconds / its images.
    """
    count = config.throughput_images
    if net.spec.layout is None:
        from ..data import load_embedded
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


# --- memory --------------------------------------------------------------------------------------

def proc_status_bytes(key: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {key}")


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: ``5`` to ``/proc/self/clear_refs`` resets ``VmHWM``); False
    where that is not possible (then :func:`memory_probe` falls back to ``ru_maxrss``, which cannot be reset)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return proc_status_bytes("VmHWM") <= proc_status_bytes("VmRSS") + (1 << 20)
    except OSError:
        return False


def memory_probe(spec: dict[str, Any], method: str, n: int, config: dict[str, Any]) -> dict[str, Any]:
    """Peak memory of one ``certify`` call, in this process (run it in a fresh one: :func:`measure_memory`).

    CPU: the peak resident memory of the first call above the resident memory before it, after the network
    and the images are built (so one-time allocations of the call, such as the SLL rescaling memo, are
    included): Linux's ``VmHWM`` reset just before the call (:func:`reset_peak_rss`), elsewhere the growth of
    ``ru_maxrss`` (which misses a call that peaks lower than building the network did); CUDA:
    ``max_memory_allocated`` minus the memory allocated before the call, after a warm-up call at n <= 100.
    """
    device = torch.device(config["device"])
    torch.set_num_threads(int(config.get("threads", 1)))
    cfg = SweepConfig([], device=device, sigma=config["sigma"], n0=config["n0"], alpha=config["alpha"],
                      cohen_batch_size=config["cohen_batch_size"], fars_batch_size=config["fars_batch_size"])
    net = build_network(SizeSpec.from_dict(spec), device, 1)
    certifier = make_certifier(method, net, n, cfg)
    if device.type == "cuda":
        make_certifier(method, net, min(n, 100) if n else 0, cfg).certify(net.images, indices=net.indices)
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        certifier.certify(net.images, indices=net.indices)
        peak, how = torch.cuda.max_memory_allocated(device) - before, "cuda max_memory_allocated - allocated before"
        del net, certifier
        torch.cuda.empty_cache()
        baseline = before
    elif reset_peak_rss():
        baseline = proc_status_bytes("VmRSS")
        certifier.certify(net.images, indices=net.indices)
        peak = proc_status_bytes("VmHWM") - baseline
        how = "peak RSS (VmHWM, reset before the call) - RSS before, fresh subprocess"
    else:
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        certifier.certify(net.images, indices=net.indices)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
        how = "ru_maxrss growth over the first call (0 when building the network peaked higher), fresh subprocess"
    return {"size": spec["name"], "method": method, "n": n, "peak_bytes": int(peak), "baseline_bytes": int(baseline),
            "how": how}


def measure_memory(spec: SizeSpec, method: str, n: int, config: SweepConfig) -> dict[str, Any]:
    """:func:`memory_probe` in a fresh Python process on the CPU (so one measurement's peak does not hide
    another's); in this process on CUDA, where the allocator's peak statistics are reset per call (a fresh
    process would pay CUDA's start-up for every probe)."""
    settings = {"device": str(config.device), "threads": torch.get_num_threads(), "sigma": config.sigma,
                "n0": config.n0, "alpha": config.alpha, "cohen_batch_size": config.cohen_batch_size,
                "fars_batch_size": config.fars_batch_size}
    if config.device.type == "cuda":
        return memory_probe(spec.as_dict(), method, n, settings)
    code = ("import json, sys; from bench.perf.size_sweep import memory_probe; "
            "print(json.dumps(memory_probe(*json.loads(sys.argv[1]))))")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code, json.dumps([spec.as_dict(), method, n, settings])],
                          capture_output=True, text=True, cwd=root, env=env, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no output"]
        return {"size": spec.name, "method": method, "n": n, "peak_bytes": math.nan, "baseline_bytes": math.nan,
                "how": f"probe failed: {lines[-1]}"}
    return cast(dict[str, Any], json.loads(done.stdout.strip().splitlines()[-1]))


def memory_rows(spec: SizeSpec, config: SweepConfig) -> list[dict[str, Any]]:
    """Peak memory per method at two n (fars-closed once): fars-mc at ``memory_ns``, cohen at ``cohen_memory_ns``
    (its peak is one forward batch whatever n is, so two small n show that it does not grow, where a probe
    at n = 1e5 on a large network would cost minutes for the same number)."""
    cohen_ns = config.cohen_memory_ns
    jobs = [("fars-closed", 0)] + [("fars-mc", n) for n in config.memory_ns] + [("cohen", n) for n in cohen_ns]
    rows = []
    for method, n in jobs:
        _log(config, f"  {spec.name}: memory of {method} n={n}")
        rows.append(measure_memory(spec, method, n, config))
    frame = pd.DataFrame(rows)
    for method, group in frame.groupby("method"):
        peaks = group["peak_bytes"].astype(float).to_numpy()
        grows = bool(len(peaks) > 1 and peaks[-1] > 1.1 * peaks[0] + (16 << 20))
        for row in rows:
            if row["method"] == method:
                row["grows_with_n"] = grows
    return rows


# --- outputs -------------------------------------------------------------------------------------

def plot_speedup_vs_size(table: pd.DataFrame, out_path: Path, target_n: int = TARGET_N) -> Path:
    """Speedup over cohen at ``target_n`` against flops per image (log-log), fars-mc and fars-closed;
    hollow markers where cohen's time is extrapolated, every point labelled with its size."""
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    styles = {"fars-mc": ("tab:blue", "o"), "fars-closed": ("tab:orange", "s")}
    for method, (color, marker) in styles.items():
        rows = table[(table["method"] == method) & table["measured_speedup"].notna()].sort_values("flops_per_image")
        if rows.empty:
            continue
        ax.plot(rows["flops_per_image"], rows["measured_speedup"], color=color, lw=1, alpha=0.6)
        for _, row in rows.iterrows():
            hollow = row.get("speedup_source") == "extrapolated"
            ax.scatter(row["flops_per_image"], row["measured_speedup"], marker=marker, s=30, zorder=3,
                       facecolors="white" if hollow else color, edgecolors=color)
            ax.annotate(f"{row['size']}" + (" (extrapolated)" if hollow else ""),
                        (row["flops_per_image"], row["measured_speedup"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=6)
        ax.plot([], [], color=color, marker=marker, label=method)
    limits = table[table["method"] == "fars-mc"].dropna(subset=["limit"]).sort_values("flops_per_image")
    if not limits.empty:
        ax.plot(limits["flops_per_image"], limits["limit"], color="grey", ls="--", lw=1, marker="x", ms=4,
                label="limit: cohen / one plain forward")
    ax.scatter([], [], marker="o", facecolors="white", edgecolors="grey", label="cohen extrapolated (hollow)")
    if table["measured_speedup"].notna().any():
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no speedup: cohen's time at this n neither measured nor extrapolated",
                transform=ax.transAxes, ha="center", fontsize=7)
    ax.margins(x=0.25, y=0.15)
    ax.set_xlabel("flops per image (one forward, cost model's counter)")
    ax.set_ylabel(f"speedup over cohen at n = {target_n:,}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    return save_figure(fig, out_path, formats=("pdf",))


def goal_lines(table: pd.DataFrame, throughput: pd.DataFrame, target_n: int = TARGET_N) -> list[str]:
    """The performance goals as ``PASS`` / ``MISS`` lines (``n/a`` when not measured); printed, never asserted."""
    def verdict(ok: bool | None) -> str:
        return "n/a " if ok is None else ("PASS" if ok else "MISS")

    lines = []
    for _, row in table[table["method"] == "fars-closed"].iterrows():
        value = float(row["ratio_to_reference"])
        lines.append(f"{verdict(value <= CLOSED_FORWARD_GOAL)} fars-closed / plain single forward on {row['size']}: "
                     f"{value:.2f}x (goal <= {CLOSED_FORWARD_GOAL}x)")
    for size, goal in ((DEFAULT_NETWORK, MC_FLOOR_GOAL_DEFAULT), ("small", MC_FLOOR_GOAL_SMALL)):
        rows = table[(table["size"] == size) & (table["method"] == "fars-mc") & (table["n"] == target_n)]
        value = float(rows["ratio_to_floor"].iloc[0]) if not rows.empty else math.nan
        ok = None if not math.isfinite(value) else value <= goal
        lines.append(f"{verdict(ok)} fars-mc / floor at n={target_n:,} on {size}: {value:.2f}x (goal <= {goal}x)")
    mc = table[(table["method"] == "fars-mc") & table["measured_speedup"].notna()].sort_values("flops_per_image")
    grows = None if len(mc) < 2 else bool(np.all(np.diff(mc["measured_speedup"].to_numpy()) > 0))
    series = ", ".join(f"{r['size']} {r['measured_speedup']:,.0f}x" for _, r in mc.iterrows())
    lines.append(f"{verdict(grows)} speedup of fars-mc over cohen grows with size: {series or 'none'}")
    small = mc[mc["size"] == "small"]
    fraction = float(small["fraction_of_limit"].iloc[0]) if not small.empty else math.nan
    ok = None if not math.isfinite(fraction) else fraction >= LIMIT_FRACTION_GOAL
    lines.append(f"{verdict(ok)} fars-mc speedup / limit on small: {fraction:.2f} (goal >= {LIMIT_FRACTION_GOAL})")
    if not throughput.empty:
        for size, group in throughput.groupby("size"):
            rows = group[group["method"] == "fars-mc"]
            if rows.empty:
                continue
            value = float(rows["ratio_to_plain"].iloc[0])
            lines.append(f"{verdict(value <= THROUGHPUT_GOAL)} fars-mc batched per image / batched plain forward "
                         f"on {size}: {value:.2f}x (goal <= {THROUGHPUT_GOAL}x)")
    return lines


def sweep_markdown(table: pd.DataFrame, throughput: pd.DataFrame, memory: pd.DataFrame, notes: list[str],
                   machine: cm.Machine, target_n: int = TARGET_N) -> str:
    """``size_sweep.md``: the table, the goals as PASS/MISS lines, throughput, memory and notes."""
    def fmt(x: Any, digits: str = ".3g") -> str:
        return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, digits)

    view = table.assign(n=table["n"].map(lambda v: f"{int(v):,}" if v else "—"))
    rows = [(r["size"], fmt(float(r["parameters"]), ".3g"), cm.fmt_count(r["flops_per_image"]), r["method"], r["n"],
             fmt(r["seconds"]), r["source"], fmt(r["floor_s"]), cm.fmt_ratio(r["ratio_to_floor"]),
             cm.fmt_ratio(r["measured_speedup"]), cm.fmt_ratio(r["predicted_speedup"]), cm.fmt_ratio(r["limit"]))
            for _, r in view.iterrows()]
    parts = [f"# Speedup versus model size (n = {target_n:,})", "",
             f"Machine: {machine.describe()}; torch {torch.__version__}.",
             "Seconds per image; `extrapolated`: cohen's time from two smaller n on a straight line after the "
             "linearity check, `measured` otherwise. Floor: the cost model's (bench.perf.cost_model). "
             "Limit: cohen's time / one plain single-image forward.", "",
             markdown_table(["size", "params", "flops/image", "method", "n", "seconds", "source", "floor",
                             "measured/floor", "measured speedup", "predicted speedup", "limit"], rows),
             "", "## Goals", "", "```", *goal_lines(table, throughput, target_n), "```", ""]
    if not throughput.empty:
        parts += ["## Throughput (one certify call on many images; seconds per image = call / images)", "",
                  markdown_table(["size", "method", "n", "images", "images/s", "x plain batched"],
                                 [(r["size"], r["method"], r["n"], r["images_per_call"], fmt(r["images_per_second"]),
                                   cm.fmt_ratio(r["ratio_to_plain"])) for _, r in throughput.iterrows()]), ""]
    if not memory.empty:
        parts += ["## Peak memory of one certify call", "",
                  markdown_table(["size", "method", "n", "peak MiB", "grows with n", "how"],
                                 [(r["size"], r["method"], r["n"], fmt(float(r["peak_bytes"]) / 2 ** 20, ".1f"),
                                   r.get("grows_with_n"), r["how"]) for _, r in memory.iterrows()]), ""]
    if notes:
        parts += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    return "\n".join(parts)


# --- the sweep -----------------------------------------------------------------------------------

def sweep_size(spec: SizeSpec, config: SweepConfig, machine: cm.Machine, timer: Timer = default_timer
               ) -> tuple[pd.DataFrame, dict[str, float], list[dict[str, Any]]]:
    """One network: count, predict, time, compare. Returns (rows, prediction, throughput rows)."""
    net = build_network(spec, config.device, config.images)
    costs = cm.network_costs(net.backbone, net.head, spec.input_shape)
    prediction = predicted(costs, machine, config)
    _log(config, f"{spec.name}: {net.parameters:,} parameters, {cm.fmt_count(flops_per_image(costs))} flops per "
                 f"image; predicted fars-mc speedup at n={config.target_n:,}: "
                 f"{prediction['predicted_speedup_mc']:,.0f}x (cost model floors)")
    plain, closed_paired = reference_forwards(net, config)
    measured = time_size(net, config, timer)
    table = size_rows(net, config, costs, machine, measured, plain, closed_paired)
    throughput = throughput_rows(net, config) if spec.name in config.throughput_sizes else []
    return table, prediction, throughput


def run_size_sweep(config: SweepConfig, out: Path, *, machine: cm.Machine | None = None,
                   timer: Timer = default_timer, manifest_extra: dict[str, Any] | None = None) -> pd.DataFrame:
    """Run the sweep over ``config.specs`` and write every output to ``out`` (see the module doc).

    The outputs are rewritten after each size, so a sweep stopped part way (a time budget) keeps the sizes
    it finished (``manifest.json``'s ``finished`` is empty until the last). Networks whose estimated memory
    exceeds half of what is available are skipped with a note. ``timer`` times a certifier on images
    (tests give a fake one). Returns ``speedup_vs_size.csv``'s table.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    machine = machine or cm.measure_machine(config.device)
    notes: list[str] = []
    tables: list[pd.DataFrame] = []
    throughput: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    predictions: dict[str, dict[str, float]] = {}
    manifest = {"config": config.as_dict(), "machine": machine.as_dict(), "predictions": predictions,
                "notes": notes, "started": started, "finished": None, **(manifest_extra or {})}
    text = ""
    for i, spec in enumerate(config.specs):
        need, have = estimated_bytes(spec, config.cohen_batch_size), available_bytes(config.device)
        if need > MEMORY_FRACTION * have:
            notes.append(f"{spec.name} ({'x'.join(map(str, spec.input_shape))}) skipped: estimated "
                         f"{need / 2 ** 30:.1f} GiB, more than {MEMORY_FRACTION:.0%} of the "
                         f"{have / 2 ** 30:.1f} GiB available")
            _log(config, notes[-1])
        else:
            table, prediction, rows = sweep_size(spec, config, machine, timer)
            tables.append(table)
            throughput += rows
            predictions[spec.name] = prediction
            if config.memory:
                memory += memory_rows(spec, config)
        if i == len(config.specs) - 1:
            manifest["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        text = write_outputs(out, tables, throughput, memory, list(notes), machine, config.target_n, manifest)
    if config.progress:
        print(text)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def write_outputs(out: Path, tables: list[pd.DataFrame], throughput: list[dict[str, Any]],
                  memory: list[dict[str, Any]], notes: list[str], machine: cm.Machine, target_n: int,
                  manifest: dict[str, Any]) -> str:
    """Write the CSVs, the plot, ``size_sweep.md`` and ``manifest.json`` of the sizes done so far; returns the md."""
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    extrapolation_notes(table, notes)
    throughput_df, memory_df = pd.DataFrame(throughput), pd.DataFrame(memory)
    table.to_csv(out / "speedup_vs_size.csv", index=False)
    throughput_df.to_csv(out / "throughput.csv", index=False)
    memory_df.to_csv(out / "memory.csv", index=False)
    if not table.empty:
        plot_speedup_vs_size(table, out / "speedup_vs_size.png", target_n)
    text = sweep_markdown(table, throughput_df, memory_df, notes, machine, target_n) if not table.empty \
        else "# Speedup versus model size\n\nNo size was timed.\n" + "".join(f"\n- {n}" for n in notes) + "\n"
    (out / "size_sweep.md").write_text(text)
    (out / "manifest.json").write_text(json.dumps({**manifest, "notes": notes}, indent=2, default=str) + "\n")
    return text


def extrapolation_notes(table: pd.DataFrame, notes: list[str]) -> None:
    """A note per size whose cohen time was not linear in n (and so not extrapolated)."""
    if table.empty:
        return
    for size, group in table.groupby("size"):
        if (group["source"] == "not-comparable").any():
            notes.append(f"{size}: cohen's smaller n is below its batch size, so its two n ran at different batch "
                         "sizes; linearity not checked, not extrapolated (use --cohen-ns at or above the batch size)")
        if (group["source"] == "not-linear").any():
            ratio = float(group["linear_ratio"].iloc[0])
            notes.append(f"{size}: cohen's time is not linear in n (time ratio / (n0 + n) ratio = {ratio:.2f}, "
                         f"tolerance {LINEAR_TOLERANCE:.0%}); not extrapolated, no speedup at the target n")


def parse_sizes(names: Sequence[str], paper_input: bool = False, seed: int = 0) -> list[SizeSpec]:
    """The specs of ``--sizes`` (and ``small@224`` with ``--paper-input``); raises ValueError for an unknown name."""
    specs = [named_spec(name, seed) for name in dict.fromkeys(names)]
    if paper_input:
        specs.append(named_spec(PAPER_INPUT, seed))
    return specs


__all__ = ["SizeSpec", "SweepConfig", "Extrapolation", "linear_in_n", "named_spec", "parse_sizes", "build_network",
           "time_size", "timing_jobs", "size_rows", "throughput_rows", "memory_probe", "measure_memory",
           "plot_speedup_vs_size", "goal_lines", "run_size_sweep", "estimated_bytes", "flops_per_image"]
