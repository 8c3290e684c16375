"""Certify every (run, image) pair of an experiment, one image per call, appending rows as it goes.

Each call is timed by the method itself (``Certificate.seconds``: device synchronised, validation and
confidence bounds included), after one untimed warm-up call per run. Under ``torchrun`` every rank
takes its round-robin share of the pending pairs (:mod:`bench.certify.distributed`).
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from baselines import CohenRS
from baselines.cohen import MEMORY_FORMATS

from ..common.env import process_usage
from ..common.units import fmt_seconds
from . import distributed as dist_
from .batch_size import best_batch_size, best_memory_format, fars_batch_size
from .results_file import COLUMNS, format_row, read_done
from .runs import Run


@dataclass
class ShardTiming:
    """What one process certified in one invocation and how long it took."""

    rank: int
    device: str
    rows: int = 0
    seconds: float = 0.0      # sum of the per-example certify times
    wall: float = 0.0         # wall-clock time of the whole certification stage


def certify_all(runs: list[Run], images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, tsv: Path,
                progress: bool = True, done: set[tuple[str, int]] | None = None,
                context: dist_.Context = dist_.Context()) -> ShardTiming:
    """Certify every (run, image) pair not in ``done`` (default: the rows in ``tsv``), appending rows to ``tsv``.

    Stages: (1) a pilot: for each run with pending pairs, one untimed warm-up call and its first pending
    image (timed and written, like every other); (2) the plan, printed with ``progress``: runs, images,
    n and the time each run will take at its pilot's speed; (3) the remaining pairs, run by run in image
    order, under one progress bar counted in pilot-estimated seconds, so its ETA weighs a Cohen image
    as the pilot measured it, not as one of many equal steps.

    In a multi-process run every rank passes the same ``done`` and takes its round-robin share of the
    pending pairs.
    """
    if done is None:
        done = read_done(tsv)
    pending = [(r, i) for r, run in enumerate(runs) for i in range(len(images))
               if (run.key, int(indices[i])) not in done]
    mine = dist_.my_share(pending, context)
    by_run = {r: [i for _, i in group] for r, group in itertools.groupby(mine, key=lambda item: item[0])}
    timing = ShardTiming(context.rank, str(images.device))
    start = time.perf_counter()
    show = progress and context.is_main and bool(by_run)   # nothing pending: no empty bars
    tsv.parent.mkdir(parents=True, exist_ok=True)
    with _RowWriter(tsv, timing, _test_abort_after(context)) as writer:
        pilot = _pilot_stage(runs, by_run, images, labels, indices, writer, show)
        if show:
            print(plan_text(runs, by_run, pilot, context), file=sys.stderr)
        _certify_stage(runs, by_run, pilot, images, labels, indices, writer, show, context)
    timing.wall = time.perf_counter() - start
    return timing


class _RowWriter:
    """Appends result rows to the TSV, flushed and synced one by one (an interruption loses nothing)."""

    def __init__(self, tsv: Path, timing: ShardTiming, abort_after: int | None) -> None:
        self.tsv, self.timing, self.abort_after = tsv, timing, abort_after

    def __enter__(self) -> _RowWriter:
        new_file = not self.tsv.is_file()
        self.handle = open(self.tsv, "a", encoding="utf-8")   # noqa: SIM115 - closed by __exit__
        if new_file:
            self.handle.write("\t".join(COLUMNS) + "\n")
            self.handle.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def certify(self, run: Run, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, i: int) -> float:
        """Certify image ``i`` with ``run``, write its row (with the call's process CPU time and minor page faults,
        :func:`bench.common.env.process_usage`); returns the call's seconds."""
        cpu, faults = process_usage()
        cert = run.certifier.certify(images[i:i + 1], indices=indices[i:i + 1])
        cpu_after, faults_after = process_usage()
        self.handle.write(format_row(run, int(indices[i]), int(labels[i]), int(cert.prediction[0]),
                                     float(cert.radius[0]), cert.seconds, int(cert.samples[0]), cpu_after - cpu,
                                     faults_after - faults))
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.timing.rows += 1
        self.timing.seconds += cert.seconds
        if self.abort_after is not None and self.timing.rows >= self.abort_after:
            os.kill(os.getpid(), signal.SIGKILL)  # fault injection for the resume tests
        return cert.seconds


def _pilot_stage(runs: list[Run], by_run: dict[int, list[int]], images: torch.Tensor, labels: torch.Tensor,
                 indices: torch.Tensor, writer: _RowWriter, show: bool) -> dict[int, float]:
    """Per run: a warm-up call (not recorded: allocator, kernels, caches), then its first pending image,
    recorded; returns the seconds of that image by run (the plan's estimate per image)."""
    seconds = {}
    for r, positions in tqdm(list(by_run.items()), desc="pilot (one image per run)", disable=not show,
                             file=sys.stderr, leave=False):
        run = runs[r]
        run.certifier.certify(images[:1], indices=indices[:1])
        seconds[r] = writer.certify(run, images, labels, indices, positions[0])
    return seconds


def plan_text(runs: list[Run], by_run: dict[int, list[int]], pilot: dict[int, float],
              context: dist_.Context = dist_.Context()) -> str:
    """The plan of the certification stage: each run's images and samples, and its estimated time (the
    pilot image's seconds times the images left), with the total."""
    lines = [f"plan{f' (rank {context.rank} of {context.world_size})' if context.distributed else ''}: "
             f"{len(by_run)} run(s), {sum(len(p) for p in by_run.values())} image(s) to certify"]
    total = 0.0
    for k, (r, positions) in enumerate(by_run.items(), start=1):
        run = runs[r]
        estimate = pilot[r] * (len(positions) - 1)
        total += estimate
        samples = getattr(run.certifier, "n", None)
        lines.append(f"  {k:>3}/{len(by_run)} {run.key:<40} {len(positions):>5} image(s)"
                     f"{'' if samples is None else f', n = {samples:,}'}, {fmt_seconds(pilot[r])}/image, "
                     f"about {fmt_seconds(estimate)} left")
    lines.append(f"  estimated time left: {fmt_seconds(total)} (from one pilot image per run)")
    return "\n".join(lines)


def _certify_stage(runs: list[Run], by_run: dict[int, list[int]], pilot: dict[int, float], images: torch.Tensor,
                   labels: torch.Tensor, indices: torch.Tensor, writer: _RowWriter, show: bool,
                   context: dist_.Context) -> None:
    """Every pending image after the pilot's, under one bar in estimated seconds (run k of N in its text)."""
    tag = f"[rank {context.rank}/{context.world_size}] " if context.distributed else ""
    total = sum(pilot[r] * (len(p) - 1) for r, p in by_run.items())
    with tqdm(total=total, disable=not show, file=sys.stderr, unit="s", unit_scale=True,
              bar_format="{l_bar}{bar}| {elapsed}<{remaining} (estimated) {postfix}") as bar:
        for k, (r, positions) in enumerate(by_run.items(), start=1):
            run = runs[r]
            bar.set_description(f"{tag}run {k}/{len(by_run)}: {run.method} {run.model}"
                                + ("" if math.isnan(run.sigma) else f" σ={run.sigma:g}"))
            for i in positions[1:]:
                writer.certify(run, images, labels, indices, i)
                bar.update(pilot[r])


def _test_abort_after(context: dist_.Context) -> int | None:
    """Fault injection for tests: ``BENCH_RUN_KILL_RANK=R:K`` kills rank R (SIGKILL) after K new rows."""
    spec = os.environ.get("BENCH_RUN_KILL_RANK")
    if not spec:
        return None
    rank, rows = (int(v) for v in spec.split(":"))
    return rows if rank == context.rank else None


def timing_summary(timings: list[ShardTiming]) -> dict[str, Any]:
    """Wall time of the certification stage versus the per-example seconds it added up to."""
    wall = max(t.wall for t in timings)
    seconds = sum(t.seconds for t in timings)
    return {
        "processes": len(timings), "rows": sum(t.rows for t in timings), "wall_seconds": wall,
        "per_example_seconds_sum": seconds,
        # how much faster than certifying the same rows one after the other in one process, if each row
        # took as long as it did here (ranks sharing a CPU slow each other down, so on CPUs compare with
        # the wall time of a real one-process run, also in the manifest)
        "speedup_vs_sequential": seconds / wall if wall > 0 else math.nan,
        "ranks": [asdict(t) for t in timings],
    }


def timing_markdown(summary: dict[str, Any]) -> str:
    lines = ["", "## Run timing (this invocation)", "",
             f"- processes: {summary['processes']}; rows certified: {summary['rows']}",
             f"- wall time of the certification stage: {summary['wall_seconds']:.2f} s",
             f"- sum of per-example certify times: {summary['per_example_seconds_sum']:.2f} s "
             f"(the `seconds` column; what one process would spend at these per-example speeds)"]
    if summary["processes"] > 1:
        lines += [f"- speedup of {summary['processes']} processes over one process certifying the same rows at the "
                  f"per-example speeds measured here: {summary['speedup_vs_sequential']:.2f}x (wall time includes "
                  "warm-up and waiting for the slowest rank). With a GPU per rank this is the speedup over one "
                  "process; ranks that share CPU cores slow each other down, so there compare the wall time with a "
                  "one-process run's"]
        lines += ["", "| rank | device | rows | per-example seconds (sum) | wall seconds |",
                  "|---:|---|---:|---:|---:|"]
        lines += [f"| {t['rank']} | {t['device']} | {t['rows']} | {t['seconds']:.2f} | {t['wall']:.2f} |"
                  for t in summary["ranks"]]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Tuning:
    """What :func:`choose_batch_sizes` chose, by run key: every Monte Carlo run's batch size and every cohen
    run's memory format (a manifest's ``batch_sizes`` and ``memory_formats``)."""

    batch_sizes: dict[str, int]
    memory_formats: dict[str, str]

    @classmethod
    def of(cls, runs: list[Run], batch_sizes: dict[str, int]) -> Tuning:
        return cls(dict(batch_sizes), memory_formats(runs))


def kept_tuning(manifest: dict[str, Any] | None, device: torch.device) -> Tuning | None:
    """The choices recorded by the manifest of the run being resumed, when it ran on ``device``; else None.

    A resumed run keeps them: the memory format changes a convolution's round-off, so every row of a run must
    come from the network evaluated in one format (and nothing is measured twice)."""
    if manifest is None or manifest.get("device") != str(device):
        return None
    sizes, formats = manifest.get("batch_sizes"), manifest.get("memory_formats")
    if not isinstance(sizes, dict) or not isinstance(formats, dict):
        return None
    return Tuning({str(k): int(v) for k, v in sizes.items() if isinstance(v, int) and v >= 1},
                  {str(k): str(v) for k, v in formats.items() if v in MEMORY_FORMATS})


def choose_batch_sizes(runs: list[Run], setting: str, image_shape: tuple[int, ...], device: torch.device,
                       max_samples: int, progress: bool = True, memory_format: str = "auto",
                       kept: Tuning | None = None) -> dict[str, int]:
    """Batch size of every Monte Carlo run (``setting``: an integer, or 'auto') and memory format of every cohen
    run (``memory_format``: 'auto' or a name of :data:`baselines.cohen.MEMORY_FORMATS`); sets them on the
    certifiers and returns the batch sizes by run key (:func:`memory_formats` reads the formats back).
    ``kept`` (:func:`kept_tuning`, or rank 0's choice under torchrun) replaces each 'auto' choice it holds
    for a run, without a measurement.

    Batch size 'auto': cohen at the throughput-best batch of a plain forward of its network (searched once per
    network on this device), fars-mc by its sampler (:func:`~bench.certify.batch_size.fars_batch_size`).
    Certificates do not depend on the batch size (an example's noise is fixed by the seed and its index).
    Memory format 'auto': the faster one for a plain forward of cohen's batch on this device
    (:func:`~bench.certify.batch_size.best_memory_format`, measured once per network; contiguous for inputs
    that are not images); the certificates are those of the network as evaluated in that format.
    """
    if memory_format != "auto" and memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be 'auto' or one of {', '.join(MEMORY_FORMATS)}, got {memory_format!r}")
    chosen: dict[str, int] = {}
    searched: dict[int, int] = {}
    formats: dict[tuple[int, int], str] = {}
    for run in runs:
        certifier = run.certifier
        if not hasattr(certifier, "batch_size"):
            continue
        if setting != "auto":
            size = int(setting)
        elif kept is not None and run.key in kept.batch_sizes:
            size = kept.batch_sizes[run.key]
        elif run.method == "cohen":
            assert isinstance(certifier, CohenRS)  # build_runs makes every cohen run a CohenRS
            model = certifier.model
            if id(model) not in searched:
                searched[id(model)], _ = best_batch_size(model, image_shape, device, max_samples=max_samples)
                if progress:
                    print(f"cohen batch size for {run.model}: {searched[id(model)]} (throughput-best plain forward)",
                          file=sys.stderr)
            size = searched[id(model)]
        else:
            size = fars_batch_size(certifier)
        certifier.batch_size = size
        chosen[run.key] = size
        if isinstance(certifier, CohenRS):
            if memory_format == "auto" and kept is not None and run.key in kept.memory_formats:
                certifier.memory_format = kept.memory_formats[run.key]
                continue
            key = (id(certifier.model), size)
            if key not in formats:
                formats[key] = memory_format if memory_format != "auto" else _measured_format(
                    certifier.model, image_shape, min(size, max_samples), device, run.model, progress)
            certifier.memory_format = formats[key]
    if progress and kept is not None and any(key in kept.batch_sizes or key in kept.memory_formats
                                             for key in chosen):
        print("batch sizes and memory formats: kept from the run being resumed (its manifest)", file=sys.stderr)
    return chosen


def _measured_format(model: torch.nn.Module, image_shape: tuple[int, ...], batch_size: int, device: torch.device,
                     name: str, progress: bool) -> str:
    """The faster memory format of ``model`` at ``batch_size`` (:func:`best_memory_format`), said on stderr."""
    best, seconds = best_memory_format(model, image_shape, batch_size, device)
    if progress and seconds:
        timings = ", ".join(f"{fmt} {value * 1e3:.1f} ms" for fmt, value in seconds.items())
        print(f"cohen memory format for {name}: {best} (faster plain forward of a batch of {batch_size}: {timings})",
              file=sys.stderr)
    return best


def memory_formats(runs: list[Run]) -> dict[str, str]:
    """The memory format of every cohen run by run key (what :func:`choose_batch_sizes` set)."""
    return {run.key: run.certifier.memory_format for run in runs if isinstance(run.certifier, CohenRS)}
