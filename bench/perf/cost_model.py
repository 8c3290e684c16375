"""Cost model of one certified image: flops, bytes, the machine's floor, and measured time / floor.

What is counted
---------------
* **Flops** come from ``torch.utils.flop_counter.FlopCounterMode`` on a real forward pass: matrix
  products and convolutions, 2 flops per multiply-add. Element-wise ops are not counted as flops
  (they are memory-bound and enter through the bytes). Every network is counted at two batch sizes,
  in its steady state (after one call), which splits its cost into a *per-sample* part and a
  *per-call* part. SLL layers derive a rescaling from their weights (``|W W^T|``, the self-convolution
  of a kernel; about 11x the flops of one sample on the default backbone); in inference it is
  memoised for the exact current weights (:class:`fars.memo.WeightDerived`), so the per-call part is
  the memo's comparison of the weights with its stored copy.
* **Bytes** are counted by a dispatch mode on the same forward: each aten op that is not a view reads
  its tensor inputs and writes its outputs once. This is the traffic of eager execution (no fusion,
  no cache reuse), parameters included, split per call / per sample the same way.
* **Noise**: one standard normal costs ``1 / normal_rate`` seconds, the measured rate of torch's
  generator on the device (writing the sample included). Adding it to the center (``c + sigma e``)
  costs 2 flops and 8 bytes (read the noise, write the point) per coordinate. The projected FaRS
  sampler draws k numbers per sample and forms ``W z + b + F u``: 2 k^2 flops per sample.
* **Votes**: counting reads the K scores of each sample (4 K bytes).

The machine is measured once per run (:func:`measure_machine`): fp32 matmul throughput (a large square
product), memory bandwidth (a large copy, bytes read plus bytes written) and the normal rate. The floor
of a phase is ``max(flops / throughput, bytes / bandwidth) + normals / normal_rate``, and the floor of a
method is the sum of its phases (backbone, noise, head), which run one after the other. It is a roofline
estimate of what this arithmetic and this eager traffic cannot beat on this machine; a measured time
above it is overhead (op dispatch and kernel launches, element-wise kernels below peak bandwidth,
convolutions below matmul throughput).

Cost targets, checked by :func:`targets_table` and printed by ``python -m bench.scaling``:
cohen within 1.25x of (n0 + n) x the per-sample time of a plain batched forward of the same network;
fars-mc within 2x of its floor and at least 1000x faster than cohen at n = 100,000; fars-closed within
1.1x of a plain single-image forward.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from fars.closed_form import head_geometry, linear_head_radius
from fars.head_smoothing import FaRSMonteCarlo, _Layers, split_first_linear
from smoothing.checks import fixed_weights, module_device, timed

from ..certify.batch_size import best_seconds, plain_batch
from ..common.env import cpu_allocator_tuned, device_name
from ..report import fmt_seconds, markdown_table

FP32_BYTES = 4
#: what the plain-forward reference and the floor include, stated in every cost table
REFERENCE_INCLUDES = ("The plain-forward reference includes the network's forward passes (inference mode, eval mode, "
                      "weights declared fixed as in a certify call) on synthetic noisy batches of the same size, and "
                      "excludes drawing the noise, the votes, the statistics and the input checks. The floor includes "
                      "the counted flops, the eager traffic and the normals at this machine's measured rates, and "
                      "excludes op dispatch, kernel launches and the allocator's page faults.")
#: the cost targets: the n they are stated at, and their limits
TARGET_N = 100_000
COHEN_OVERHEAD_LIMIT = 1.25
FARS_MC_FLOOR_LIMIT = 2.0
FARS_MC_SPEEDUP_LIMIT = 1000.0
FARS_CLOSED_FORWARD_LIMIT = 1.1


# --- the machine -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Machine:
    """Throughputs measured once per run on ``device`` (see :func:`measure_machine`)."""

    device: str
    name: str
    threads: int
    matmul_flops: float   # fp32 FLOP/s of a large square matmul
    bandwidth: float      # bytes/s of a large copy (read + written)
    normal_rate: float    # standard normals/s drawn by a seeded torch.Generator on the device
    allocator_tuned: bool = False  # whether tune_cpu_allocator() was applied in this process

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (f"{self.name}: fp32 matmul {self.matmul_flops / 1e9:.1f} GFLOP/s, "
                f"copy {self.bandwidth / 1e9:.1f} GB/s, "
                f"randn {self.normal_rate / 1e6:.0f} M normals/s, {self.threads} torch threads"
                + (", glibc malloc: no mmap, no trim (tune_cpu_allocator)" if self.allocator_tuned else ""))


def measure_machine(device: torch.device | str = "cpu", *, matmul_size: int | None = None,
                    copy_elements: int | None = None, normals: int | None = None, repeats: int = 3) -> Machine:
    """Measure fp32 matmul FLOP/s, copy bandwidth (bytes read + written per second) and randn rate.

    Defaults: a 2048^3 product, a 64 Mi-float (256 MiB) copy and 16 Mi normals on the CPU; 8192^3,
    512 Mi floats and 256 Mi normals on CUDA. The best of ``repeats`` runs is kept (a floor uses the
    best the machine does). The matmul runs with the current TF32 setting (off by default in PyTorch).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    size = matmul_size or (8192 if cuda else 2048)
    elements = copy_elements or (1 << 29 if cuda else 1 << 26)
    count = normals or (1 << 28 if cuda else 1 << 24)
    with torch.inference_mode():
        a = torch.rand(size, size, device=device)
        b = torch.rand(size, size, device=device)
        out = torch.empty(size, size, device=device)
        matmul = 2.0 * size ** 3 / best_seconds(partial(torch.mm, a, b, out=out), device, repeats)
        del a, b, out
        src = torch.rand(elements, device=device)
        dst = torch.empty_like(src)
        bandwidth = 2.0 * elements * FP32_BYTES / best_seconds(partial(dst.copy_, src), device, repeats)
        del src, dst
        generator = torch.Generator(device=device)
        generator.manual_seed(0)
        sample = torch.empty(count, device=device)
        rate = count / best_seconds(partial(sample.normal_, generator=generator), device, repeats)
        del sample
    return Machine(str(device), device_name(device), torch.get_num_threads(), matmul, bandwidth, rate,
                   cpu_allocator_tuned())


# --- counting a forward pass -------------------------------------------------------------------

def _tensor_bytes(t: torch.Tensor) -> int:
    """Bytes an op touches in ``t``: its elements, or its storage when that is smaller (broadcast views)."""
    logical = t.numel() * t.element_size()
    try:
        return min(logical, t.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError):
        return logical


class ByteCounter(TorchDispatchMode):
    """Sum, over every aten op that is not a view, the bytes of its tensor inputs and outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not getattr(func, "is_view", False):
            leaves = tree_flatten((args, kwargs or {}))[0] + tree_flatten(out)[0]
            self.bytes += sum(_tensor_bytes(t) for t in leaves if isinstance(t, torch.Tensor))
        return out


def count(fn: Callable[[], Any]) -> tuple[int, int]:
    """(flops, bytes) of one call of ``fn`` (under ``inference_mode``)."""
    with torch.inference_mode():
        with FlopCounterMode(display=False) as flop_counter:
            fn()
        with ByteCounter() as byte_counter:
            fn()
    return int(flop_counter.get_total_flops()), int(byte_counter.bytes)


@dataclass(frozen=True)
class ForwardCost:
    """Cost of ``module`` on a batch of b inputs: ``per_call + b * per_sample`` flops and bytes."""

    per_call_flops: int
    per_sample_flops: int
    per_call_bytes: int
    per_sample_bytes: int

    def flops(self, samples: float, calls: float) -> float:
        return calls * self.per_call_flops + samples * self.per_sample_flops

    def bytes(self, samples: float, calls: float) -> float:
        return calls * self.per_call_bytes + samples * self.per_sample_bytes


ZERO_COST = ForwardCost(0, 0, 0, 0)


def forward_cost(module: nn.Module, example: torch.Tensor, batches: tuple[int, int] = (2, 4)) -> ForwardCost:
    """Per-call and per-sample flops and bytes of ``module``, from counts at two batch sizes.

    ``example`` is one input [1, ...] (on the module's device). The module runs in eval mode; its
    training flag is restored afterwards.
    """
    small, large = batches
    if not 0 < small < large:
        raise ValueError("batches must be two increasing sizes")
    mode = module.training
    module.eval()
    try:
        inputs = [example.expand(b, *example.shape[1:]).contiguous() for b in (small, large)]
        with torch.inference_mode():
            # steady state, as after certify's warm-up: SLL factors memoised (fars.memo.WeightDerived)
            module(inputs[0])
        (f_small, b_small), (f_large, b_large) = (count(partial(module, x)) for x in inputs)
    finally:
        module.train(mode)
    span = large - small
    flops_ps, bytes_ps = (f_large - f_small) / span, (b_large - b_small) / span
    return ForwardCost(per_call_flops=int(round(max(0.0, f_small - small * flops_ps))),
                       per_sample_flops=int(round(flops_ps)),
                       per_call_bytes=int(round(max(0.0, b_small - small * bytes_ps))),
                       per_sample_bytes=int(round(bytes_ps)))


# --- per-method costs ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Phase:
    """One phase of a certify call: flops, bytes and standard normals drawn."""

    flops: float = 0.0
    bytes: float = 0.0
    normals: float = 0.0

    def floor(self, machine: Machine) -> float:
        roofline = max(self.flops / machine.matmul_flops, self.bytes / machine.bandwidth)
        return roofline + self.normals / machine.normal_rate

    def bound(self, machine: Machine) -> str:
        terms = {"compute": self.flops / machine.matmul_flops, "memory": self.bytes / machine.bandwidth,
                 "rng": self.normals / machine.normal_rate}
        return max(terms, key=lambda k: terms[k])


@dataclass(frozen=True)
class NetworkCosts:
    """Counted costs of the SLL network ``backbone`` + ``head`` that every method certifies."""

    input_dim: int
    embedding_dim: int
    classes: int
    backbone: ForwardCost
    head: ForwardCost
    sampler: str                  # FaRSMonteCarlo's choice: "projected" or "direct"
    noise_dim: int                # coordinates of fars-mc noise per sample (k or d)
    head_first: ForwardCost       # the first head layer (projected sampler: run once on z)
    head_rest: ForwardCost        # the rest of the head (projected sampler: run on every sample)
    closed_head: tuple[int, int]  # (flops, bytes) of the closed-form radius of one embedding
    factor_flops: int             # the projected sampler's Gram matrix W W^T, once per certify call


def network_costs(backbone: nn.Module, head: nn.Module, input_shape: Sequence[int],
                  sampler: str = "auto") -> NetworkCosts:
    """Count the backbone and head of the network (FlopCounterMode and :class:`ByteCounter`)."""
    device = module_device(backbone)
    x = torch.rand(1, *input_shape, device=device)
    with torch.inference_mode():
        z = backbone.eval()(x)
    embedding = torch.rand(1, z.shape[1], device=device)
    head_cost = forward_cost(head, embedding)
    with torch.inference_mode():
        classes = int(head.eval()(embedding).shape[1])
    mc = FaRSMonteCarlo(backbone, head, 1.0, sampler=sampler)
    if mc.sampler == "projected":
        split = split_first_linear(head)
        assert split is not None  # FaRSMonteCarlo picks the projected sampler only for a splittable head
        first, rest = split
        k = first.out_features
        first_cost = forward_cost(first, embedding)
        if isinstance(rest, nn.Module):
            rest_module: nn.Module = rest
        else:
            assert isinstance(rest, _Layers)  # split_first_linear's rest: nn.Identity or _Layers
            rest_module = nn.Sequential(*rest.layers)
        rest_cost = (ZERO_COST if isinstance(rest_module, nn.Identity)
                     else forward_cost(rest_module, torch.rand(1, k, device=device)))
        factor_flops = 2 * k * k * first.in_features
    else:
        k, first_cost, rest_cost, factor_flops = int(z.shape[1]), ZERO_COST, head_cost, 0
    closed = (0, 0)
    if isinstance(head, nn.Linear):
        geometry = head_geometry(head.weight, head.bias)   # memoised by FaRSClosedForm: not a per-call cost
        closed = count(lambda: linear_head_radius(embedding, head.weight, head.bias, geometry))
    return NetworkCosts(input_dim=int(np.prod(input_shape)), embedding_dim=int(z.shape[1]), classes=classes,
                        backbone=forward_cost(backbone, x), head=head_cost, sampler=mc.sampler, noise_dim=k,
                        head_first=first_cost, head_rest=rest_cost, closed_head=closed, factor_flops=factor_flops)


def calls_for(samples: int, batch_size: int) -> int:
    return math.ceil(samples / batch_size) if samples > 0 else 0


def method_phases(method: str, costs: NetworkCosts, n0: int, n: int, batch_size: int) -> dict[str, Phase]:
    """Flops, bytes and normals per certified image, by phase, for one image certified alone.

    ``cohen``: n0 + n samples through backbone and head, in ceil(n0 / bs) + ceil(n / bs) calls.
    ``fars-mc``: one backbone call on one image, then n0 + n samples through the sampled part of the head.
    ``fars-closed``: one backbone call, the head and the closed-form radius on one embedding.
    """
    samples = n0 + n
    calls = calls_for(n0, batch_size) + calls_for(n, batch_size)
    votes = samples * costs.classes * FP32_BYTES
    if method == "cohen":
        d = costs.input_dim
        return {"backbone": Phase(costs.backbone.flops(samples, calls), costs.backbone.bytes(samples, calls)),
                "noise": Phase(2.0 * samples * d, 2.0 * FP32_BYTES * samples * d, samples * d),
                "head": Phase(costs.head.flops(samples, calls), costs.head.bytes(samples, calls) + votes)}
    if method == "fars-mc":
        k = costs.noise_dim
        backbone = Phase(costs.backbone.flops(1, 1), costs.backbone.bytes(1, 1))
        if costs.sampler == "projected":
            noise = Phase(2.0 * samples * k * k, 2.0 * FP32_BYTES * samples * k, samples * k)
            head = Phase(costs.head_first.flops(1, 1) + costs.factor_flops + costs.head_rest.flops(samples, calls),
                         costs.head_first.bytes(1, 1) + costs.head_rest.bytes(samples, calls) + votes)
        else:
            noise = Phase(2.0 * samples * k, 2.0 * FP32_BYTES * samples * k, samples * k)
            head = Phase(costs.head.flops(samples, calls), costs.head.bytes(samples, calls) + votes)
        return {"backbone": backbone, "noise": noise, "head": head}
    if method == "fars-closed":
        flops, nbytes = costs.closed_head
        return {"backbone": Phase(costs.backbone.flops(1, 1), costs.backbone.bytes(1, 1)),
                "noise": Phase(),
                "head": Phase(flops, nbytes)}
    raise ValueError(f"no cost model for method {method!r}")


# --- plain forward references -------------------------------------------------------------------

_no_block = contextlib.nullcontext

def plain_forward_seconds(model: nn.Module, inputs: torch.Tensor, repeats: int = 5, per_call: bool = False) -> float:
    """Median seconds of a plain ``model(inputs)`` (inference mode, eval mode, device synchronised; the weights
    declared fixed as in a certify call, :class:`smoothing.checks.fixed_weights`: what a certify call's
    forward passes do, without the noise, the votes and the checks). ``per_call``: each timed forward is a
    call of its own (its weights' values compared once, as a deterministic certify call of one forward
    compares them); otherwise the repeats share one declaration, as the many forwards of one Monte Carlo call."""
    device = inputs.device
    mode = model.training
    model.eval()
    try:
        with torch.inference_mode(), fixed_weights():
            model(inputs)  # warm-up
        times = []
        with torch.inference_mode(), fixed_weights() if not per_call else _no_block():
            for _ in range(max(1, repeats)):
                with timed(device) as elapsed, fixed_weights() if per_call else _no_block():
                    model(inputs)
                times.append(elapsed[0])
    finally:
        model.train(mode)
    return float(np.median(times))


@dataclass(frozen=True)
class PlainForward:
    """Reference times of the plain network (backbone + head), measured once per run."""

    batch_size: int
    per_sample: float   # seconds per sample of a batched forward at ``batch_size``
    single: float       # seconds of a forward of one image
    compiled: bool = False
    paired: str = ""    # how ``single`` was timed against fars-closed (:func:`paired_single_image`), if it was


def measure_plain_forward(network: nn.Module, image: torch.Tensor, batch_size: int, repeats: int = 5,
                          single_repeats: int = 21, compiled: nn.Module | None = None) -> PlainForward:
    """Per-sample time of ``network`` batched at ``batch_size`` and the time of one single-image forward.

    ``compiled`` (a ``torch.compile`` of ``network``) is used for the batched reference when given, so
    that a compiled cohen is compared with a compiled forward; the single-image forward stays eager.
    """
    batch = plain_batch(tuple(image.shape[1:]), batch_size, image.device)
    batched = plain_forward_seconds(compiled if compiled is not None else network, batch, repeats)
    single = plain_forward_seconds(network, image[:1], single_repeats, per_call=True)
    return PlainForward(batch_size, batched / batch_size, single, compiled is not None)


def paired_single_image(network: nn.Module, certifier, images: torch.Tensor, indices: torch.Tensor,
                        rounds: int = 5, calls: int = 21) -> tuple[float, float]:
    """(plain forward, certify) median seconds for one image, timed in alternating blocks.

    Each round times, for each image, ``calls`` back-to-back plain forwards of ``network`` and
    ``calls`` back-to-back ``certifier.certify`` calls (the certificate's own ``seconds``, which covers
    the whole call), each block after one untimed call; which block goes first alternates by round.
    Both are timed warm, as in a loop over a test set, and under the same
    drift of the machine: a shared 2-core machine changes speed by several percent within seconds, more
    than the gap being measured when the two are timed at different moments.
    """
    device = images.device
    plain: list[float] = []
    certify: list[float] = []
    mode = network.training
    network.eval()
    try:
        for r in range(max(1, rounds)):
            for i in range(len(images)):
                image, index = images[i:i + 1], indices[i:i + 1]

                def forwards(image: torch.Tensor = image) -> None:
                    # each forward is one call, as each certify call is: the weights are declared fixed for
                    # that call only (their values compared once per call, as a certify call compares them)
                    with torch.inference_mode():
                        network(image)
                        for _ in range(max(1, calls)):
                            with timed(device) as elapsed, fixed_weights():
                                network(image)
                            plain.append(elapsed[0])

                def certifies(image: torch.Tensor = image, index: torch.Tensor = index) -> None:
                    certifier.certify(image, indices=index)
                    certify.extend(certifier.certify(image, indices=index).seconds for _ in range(max(1, calls)))

                # alternate which block goes first
                for block in ((forwards, certifies) if r % 2 == 0 else (certifies, forwards)):
                    block()
    finally:
        network.train(mode)
    return float(np.median(plain)), float(np.median(certify))


# --- the tables ---------------------------------------------------------------------------------

def cost_table(costs: NetworkCosts, scaling: pd.DataFrame, machine: Machine, plain: PlainForward,
               batch_size: int = 1000) -> pd.DataFrame:
    """One row per (method, n) of ``scaling``: counts, floor, measured seconds and ratios.

    ``scaling`` holds :func:`bench.scaling.scaling_table` rows (``method, model, n, samples, seconds``
    and, when present, ``batch_size``; ``batch_size`` is the fallback). Columns: flops per image by
    phase (backbone, head, noise), standard normals drawn, bytes, the floor by phase and in total with
    the resource that bounds it, the measured median seconds, ``ratio_to_floor``, and for cohen and
    fars-closed the plain-forward reference (``reference_seconds``, ``ratio_to_reference``).
    """
    rows = []
    for record in scaling.to_dict("records"):
        method, n = str(record["method"]), int(record["n"])
        n0 = int(record.get("samples", n) - n) if method != "fars-closed" else 0
        bs = record.get("batch_size", batch_size)
        bs = batch_size if bs is None or (isinstance(bs, float) and math.isnan(bs)) else int(bs)
        phases = method_phases(method, costs, n0, n, bs)
        floors = {name: phase.floor(machine) for name, phase in phases.items()}
        total = Phase(sum(p.flops for p in phases.values()), sum(p.bytes for p in phases.values()),
                      sum(p.normals for p in phases.values()))
        floor = sum(floors.values())
        dominant = max(floors, key=lambda k: floors[k])
        seconds = float(record["seconds"])
        reference, ref_kind = math.nan, ""
        if method == "cohen":
            reference, ref_kind = (n0 + n) * plain.per_sample, f"(n0+n) x batched forward (bs {plain.batch_size})"
        elif method == "fars-closed":
            reference, ref_kind = plain.single, "single-image forward"
        rows.append({
            "method": method, "model": record.get("model", ""), "n": n,
            "samples": n0 + n if method != "fars-closed" else 0,
            "batch_size": bs if method != "fars-closed" else 1,
            "sampler": costs.sampler if method == "fars-mc" else "",
            "flops_backbone": phases["backbone"].flops, "flops_head": phases["head"].flops,
            "flops_noise": phases["noise"].flops, "normals": phases["noise"].normals, "flops": total.flops,
            "bytes": total.bytes, "floor_backbone_s": floors["backbone"], "floor_noise_s": floors["noise"],
            "floor_head_s": floors["head"], "floor_s": floor,
            "bound": f"{dominant}:{phases[dominant].bound(machine)}",
            "seconds": seconds, "ratio_to_floor": seconds / floor if floor > 0 else math.nan,
            "reference": ref_kind, "reference_seconds": reference,
            "ratio_to_reference": seconds / reference if reference > 0 else math.nan,
        })
    table = pd.DataFrame(rows)
    for key, value in (("matmul_gflops", machine.matmul_flops / 1e9), ("bandwidth_gbs", machine.bandwidth / 1e9),
                       ("mnormals_per_s", machine.normal_rate / 1e6)):
        table[key] = value
    return table


def targets_table(table: pd.DataFrame, target_n: int = TARGET_N) -> pd.DataFrame:
    """The cost targets from a :func:`cost_table`: (target, method, n, value, limit, met, note).

    The n-dependent targets are read at ``target_n`` when the table has it, else at its largest n
    (noted); ``met`` is None when a method is missing.
    """
    def at(method: str) -> tuple[pd.Series | None, str]:
        rows = table[table["method"] == method]
        if rows.empty:
            return None, f"{method} not timed"
        if method == "fars-closed":
            return rows.iloc[0], ""
        exact = rows[rows["n"] == target_n]
        if not exact.empty:
            return exact.iloc[0], ""
        row = rows.loc[rows["n"].idxmax()]
        return row, f"read at n={int(row['n'])} (the target is stated at n={target_n})"

    out = []

    def add(name: str, method: str, row: pd.Series | None, value: float, limit: float, kind: str, note: str) -> None:
        met = (None if row is None or not np.isfinite(value)
               else bool(value <= limit if kind == "max" else value >= limit))
        out.append({"target": name, "method": method, "n": None if row is None else int(row["n"]),
                    "value": value, "limit": limit, "kind": "<=" if kind == "max" else ">=", "met": met, "note": note})

    cohen, note_c = at("cohen")
    add("cohen time / ((n0+n) x plain batched forward per sample)", "cohen", cohen,
        math.nan if cohen is None else float(cohen["ratio_to_reference"]), COHEN_OVERHEAD_LIMIT, "max", note_c)
    mc, note_m = at("fars-mc")
    add("fars-mc time / floor", "fars-mc", mc, math.nan if mc is None else float(mc["ratio_to_floor"]),
        FARS_MC_FLOOR_LIMIT, "max", note_m)
    speedup, note_s = math.nan, note_m or note_c
    if mc is not None and cohen is not None:
        same_n = table[(table["method"] == "cohen") & (table["n"] == mc["n"])]
        if not same_n.empty:
            speedup = float(same_n.iloc[0]["seconds"]) / float(mc["seconds"])
    add("cohen time / fars-mc time (same network, same n)", "fars-mc", mc, speedup, FARS_MC_SPEEDUP_LIMIT, "min",
        note_s)
    closed, note_f = at("fars-closed")
    add("fars-closed time / plain single-image forward", "fars-closed", closed,
        math.nan if closed is None else float(closed["ratio_to_reference"]), FARS_CLOSED_FORWARD_LIMIT, "max", note_f)
    return pd.DataFrame(out)


# --- formatting ---------------------------------------------------------------------------------

def fmt_count(x: float) -> str:
    if x is None or not np.isfinite(x):
        return "—"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def fmt_ratio(x: float) -> str:
    if x is None or not np.isfinite(x):
        return "—"
    return f"{x:,.0f}x" if x >= 100 else f"{x:.2f}x"


def cost_markdown(table: pd.DataFrame, targets: pd.DataFrame, machine: Machine, plain: PlainForward,
                  costs: NetworkCosts | None = None, note: str = "") -> str:
    view = pd.DataFrame({
        "method": table["method"], "n": table["n"].map(lambda v: f"{int(v):,}" if v else "—"),
        "batch": table["batch_size"].map(lambda v: f"{int(v):,}"),
        "backbone flops": table["flops_backbone"].map(fmt_count), "head flops": table["flops_head"].map(fmt_count),
        "noise flops": table["flops_noise"].map(fmt_count), "normals": table["normals"].map(fmt_count),
        "bytes": table["bytes"].map(fmt_count), "floor": table["floor_s"].map(fmt_seconds), "bound": table["bound"],
        "measured": table["seconds"].map(fmt_seconds), "measured/floor": table["ratio_to_floor"].map(fmt_ratio),
        "reference": table["reference_seconds"].map(fmt_seconds),
        "measured/reference": table["ratio_to_reference"].map(fmt_ratio),
    })
    goals = pd.DataFrame({
        "target": targets["target"],
        "n": targets["n"].map(lambda v: "—" if v is None or pd.isna(v) or not v else f"{int(v):,}"),
        "value": targets["value"].map(fmt_ratio), "limit": targets["kind"] + " " + targets["limit"].map(fmt_ratio),
        "met": targets["met"].map(lambda m: "n/a" if m is None or pd.isna(m) else ("MET" if m else "NOT MET")),
        "note": targets["note"],
    })
    parts = [
        "# Cost model: seconds per certified image, floor and measured",
        "",
        f"Machine ({_dt.date.today().isoformat()}): {machine.describe()}; torch {torch.__version__}.",
        f"Plain forward of the network: {fmt_seconds(plain.per_sample)} per sample batched at {plain.batch_size:,}"
        f"{' (compiled)' if plain.compiled else ''}, {fmt_seconds(plain.single)} for one image"
        f"{f' ({plain.paired})' if plain.paired else ''}.",
    ]
    if costs is not None:
        parts.append(
            f"Counts (FlopCounterMode): backbone {fmt_count(costs.backbone.per_sample_flops)} flops per sample + "
            f"{fmt_count(costs.backbone.per_call_flops)} per call (SLL rescaling memoised in inference), head "
            f"{fmt_count(costs.head.per_sample_flops)} per sample; fars-mc sampler {costs.sampler} "
            f"({costs.noise_dim} normals per sample against {costs.input_dim} for cohen).")
    parts += [
        "Floor = sum over phases (backbone, noise, head) of max(flops / matmul throughput, bytes / bandwidth) "
        "+ normals / randn rate; bound = the phase and resource that dominate it. Reference: cohen against "
        "(n0 + n) plain batched forwards, fars-closed against one plain single-image forward.",
        REFERENCE_INCLUDES,
    ]
    if note:
        parts.append(note)
    parts += ["", markdown_table(view.columns, view.itertuples(index=False)), "", "## Targets", "",
              markdown_table(goals.columns, goals.itertuples(index=False)), ""]
    return "\n".join(parts)


__all__ = [
    "Machine", "measure_machine", "ByteCounter", "count", "ForwardCost", "forward_cost", "Phase", "NetworkCosts",
    "network_costs", "method_phases", "plain_forward_seconds", "plain_batch", "PlainForward", "measure_plain_forward",
    "paired_single_image", "REFERENCE_INCLUDES",
    "cost_table", "targets_table", "cost_markdown",
]
