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

from . import distributed as dist_
from .batch_size import best_batch_size, fars_batch_size
from .results import COLUMNS, format_row, read_done
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

    In a multi-process run every rank passes the same ``done`` and takes its round-robin share of the
    pending pairs; pairs are processed run by run, in image order, as a one-process run does.
    """
    if done is None:
        done = read_done(tsv)
    pending = [(r, i) for r, run in enumerate(runs) for i in range(len(images))
               if (run.key, int(indices[i])) not in done]
    mine = dist_.my_share(pending, context)
    timing = ShardTiming(context.rank, str(images.device))
    abort_after = _test_abort_after(context)
    start = time.perf_counter()
    tag = f"[rank {context.rank}/{context.world_size}] " if context.distributed else ""
    new_file = not tsv.is_file()
    tsv.parent.mkdir(parents=True, exist_ok=True)
    with open(tsv, "a", encoding="utf-8") as handle:
        if new_file:
            handle.write("\t".join(COLUMNS) + "\n")
            handle.flush()
        for r, group in itertools.groupby(mine, key=lambda item: item[0]):
            run, positions = runs[r], [i for _, i in group]
            # warm-up call (not recorded): allocator, kernels and caches, so the first timed image is typical
            run.certifier.certify(images[:1], indices=indices[:1])
            desc = tag + f"{run.method} {run.model}" + ("" if math.isnan(run.sigma) else f" σ={run.sigma:g}")
            bar = tqdm(positions, desc=desc, disable=not progress or not context.is_main, file=sys.stderr, leave=True)
            for i in bar:
                cert = run.certifier.certify(images[i:i + 1], indices=indices[i:i + 1])
                handle.write(format_row(run, int(indices[i]), int(labels[i]), int(cert.prediction[0]),
                                        float(cert.radius[0]), cert.seconds, cert.samples))
                handle.flush()
                os.fsync(handle.fileno())
                timing.rows += 1
                timing.seconds += cert.seconds
                if abort_after is not None and timing.rows >= abort_after:
                    os.kill(os.getpid(), signal.SIGKILL)  # fault injection for the resume tests
    timing.wall = time.perf_counter() - start
    return timing


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


def choose_batch_sizes(runs: list[Run], setting: str, image_shape: tuple[int, ...], device: torch.device,
                       max_samples: int, progress: bool = True) -> dict[str, int]:
    """Batch size of every Monte Carlo run (``setting``: an integer, or 'auto'); sets it on the certifier.

    'auto': cohen at the throughput-best batch of a plain forward of its network (searched once per
    network on this device), fars-mc by its sampler (:func:`~bench.certify.batch_size.fars_batch_size`).
    Certificates do not depend on the batch size (an example's noise is fixed by the seed and its index).
    """
    chosen: dict[str, int] = {}
    searched: dict[int, int] = {}
    for run in runs:
        certifier = run.certifier
        if not hasattr(certifier, "batch_size"):
            continue
        if setting != "auto":
            size = int(setting)
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
    return chosen
