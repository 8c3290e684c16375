"""Speedup versus model size: the SLL authors' layouts, timed and set against the cost model.

``python -m bench.scaling --sizes small medium large xlarge`` runs :func:`run_size_sweep`. For each
network (the SLL layouts of :data:`bench.models.sll_format.SLL_SIZES` at CIFAR size 3x32x32 with 10
classes and random, seeded weights; ``default``: the shipped Fashion-MNIST network ``sll+ce`` on the
embedded images; optionally SLL small at the FaRS paper's 3x224x224, 1000 classes, when its estimated
memory fits) it writes, to ``--out`` (default ``runs/sizes``):

* ``speedup_vs_size.csv``: one row per (size, method, n, cohen mode): flops per image (the cost model's
  ``FlopCounterMode`` counter on backbone + head, :func:`bench.perf.cost_model.network_costs`; 2 flops
  per multiply-add), parameters, seconds per image (wall) with the process CPU seconds (user + system),
  page faults and CPU share of the same calls, ``source`` (``measured``, ``extrapolated``, ``not-linear``),
  the cost model's floor and measured / floor, and on the n = ``target_n`` rows of fars-mc and fars-closed
  the speedup over fp32 cohen: ``predicted_speedup`` (cohen's floor / the method's floor),
  ``predicted_speedup_flops`` (the flops ratio alone), ``measured_speedup`` (cohen's seconds / the method's
  seconds) and ``limit`` (cohen's seconds / one plain single-image forward). Cohen rows carry ``mode``
  (``fp32``, or an opt-in fast mode: ``tf32``, ``bf16``, ``compiled``, ...), the certificate of the first
  image (``prediction``, ``radius``), ``same_as_fp32`` for the fast modes, ``speedup_of_mode`` (fp32 /
  the mode at the same n) and at ``target_n`` ``fars_mc_speedup`` (that row / fars-mc).
* ``speedup_vs_size.png`` / ``.pdf``: speedup of fars-mc and fars-closed over fp32 cohen at n = ``target_n``
  versus flops per image, log-log; points whose cohen time is extrapolated are hollow and labelled.
* ``throughput.csv``: images per second when ``throughput_images`` images go in one ``certify`` call
  (the backbone runs batched), against a batched plain forward of the same images.
* ``memory.csv``: peak memory of one ``certify`` call per method at two n (:mod:`.memory`).
* ``size_sweep.md``: the table, cohen at ``target_n`` on every size and mode, the performance goals as
  PASS / MISS lines (printed, never asserted) and the warnings about the timings (a busy machine, rows
  whose CPU time fell short of their wall time, page faults); ``manifest.json``: settings, cohen's batch
  size, its search and its two n per size, machine state, versions, git commit.

Cohen's batch size is searched per size (the throughput-best plain forward,
:func:`bench.certify.batch_size.best_batch_size`) unless given, and its two n are rounded up to whole
multiples of it (:func:`.timing.same_batch_ns`), so that both run only full batches of the same size and
its time at ``target_n`` is extrapolated on a straight line after a linearity check (:mod:`.extrapolation`);
for the sizes in ``cohen_direct`` fp32 cohen is also measured at ``target_n`` on one image, and that
measured row is used.

The parts, one job each: :mod:`.layouts` (the networks), :mod:`.settings` (:class:`SweepConfig`),
:mod:`.certifiers` (the certifier of each method and mode), :mod:`.timing` (batch size, timed jobs,
references, throughput), :mod:`.extrapolation` (cohen at the target n), :mod:`.rows` (the table against
the cost model), :mod:`.memory` (peak-memory probes), :mod:`.outputs` (the files), :mod:`.sweep` (the driver).
"""

from __future__ import annotations

from .builders import FP32, applicable_modes, make_certifier
from .extrapolation import LINEAR_TOLERANCE, Extrapolation, cohen_at_target, linear_in_n
from .layouts import (
    DEFAULT_NETWORK,
    PAPER_INPUT,
    Network,
    SizeSpec,
    available_bytes,
    build_network,
    estimated_bytes,
    named_spec,
    parse_sizes,
)
from .memory import measure_memory, memory_probe, memory_rows
from .outputs import goal_lines, plot_speedup_vs_size, sweep_markdown, timing_warnings, write_outputs
from .rows import flops_per_image, predicted, size_rows
from .settings import COHEN_MEMORY_NS, COHEN_NS, FARS_MC_NS, TARGET_N, SweepConfig
from .sweep import run_size_sweep, sweep_size
from .timing import default_timer, resolve_batch, same_batch_ns, throughput_rows, time_size, timing_jobs

__all__ = ["COHEN_MEMORY_NS", "COHEN_NS", "DEFAULT_NETWORK", "FARS_MC_NS", "FP32", "LINEAR_TOLERANCE", "PAPER_INPUT",
           "TARGET_N", "Extrapolation", "Network", "SizeSpec", "SweepConfig", "applicable_modes", "available_bytes",
           "build_network", "cohen_at_target", "default_timer", "estimated_bytes", "flops_per_image", "goal_lines",
           "linear_in_n", "make_certifier", "measure_memory", "memory_probe", "memory_rows", "named_spec",
           "parse_sizes", "plot_speedup_vs_size", "predicted", "resolve_batch", "run_size_sweep", "same_batch_ns",
           "size_rows", "sweep_markdown", "sweep_size", "throughput_rows", "time_size", "timing_jobs",
           "timing_warnings", "write_outputs"]
