"""The machine a run is timed on: CPU threads without oversubscription, its state, and when timings are noisy.

Timings are only comparable when each process has its CPUs to itself. Two things break that here: more
torch threads than the CPUs the process may use (oversubscription: on a busy 2-core machine
``fars-closed`` took 216 ms per image with 2 threads and 3 ms with 1), and other processes keeping the
CPUs busy. :func:`default_threads` avoids the first; :func:`machine_state` records the second in the
manifest, and :func:`noisy_timing_warnings` says in the summary when the figures should not be trusted,
as pyperf warns on untuned systems: a busy machine at the start, per-image times that spread widely, a
CPU run whose process CPU time fell well below its wall time (it waited for the CPUs while it should
have been computing) and calls that spent their time in page faults (memory mapped and zeroed afresh).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..common.cli import UsageError
from ..common.env import THREADS_PER_CPU, max_threads
from .results_file import COLUMNS, read_lines

#: a load average above this fraction of a CPU per CPU this process does not use means another process
#: competes for the CPUs
BUSY_LOAD_MARGIN = 0.5
#: timings of one run whose 90th percentile exceeds this multiple of its 10th are called noisy
SPREAD_LIMIT = 3.0
#: runs with fewer rows than this are not judged by their spread
SPREAD_MIN_ROWS = 10
#: a CPU run whose process CPU time is below this fraction of its wall time was starved of the CPUs: a
#: certify call on a CPU computes all the time, on at least one thread
STARVED_CPU_FRACTION = 0.8
#: minor page faults per second of CPU time above which a run's times are mostly the kernel zeroing fresh
#: memory (a 4 KiB page zeroed and mapped costs about 0.5-1 us: 100,000 faults/s is 5-10% of the time)
PAGE_FAULT_RATE_LIMIT = 100_000.0


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def default_threads(processes: int = 1) -> int:
    """Torch threads per process when ``processes`` processes share this machine: the usable CPUs divided
    among them, at least 1 (on a GPU the CPU threads hardly matter)."""
    return max(1, usable_cpus() // max(1, processes))


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for torch's intra-op work (inter-op threads are not used here).

    Raises:
        UsageError: ``threads`` below 1 or above :func:`max_threads`.
    """
    if not 1 <= threads <= max_threads():
        raise UsageError(f"--threads {threads}: must be between 1 and {max_threads()} "
                         f"({THREADS_PER_CPU} per CPU of this machine)")
    torch.set_num_threads(threads)


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), or None where the OS has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def machine_state(threads: int) -> dict[str, Any]:
    """What the manifest records about the machine at the start of a run."""
    return {"load_average_1min": load_average(), "usable_cpus": usable_cpus(), "cpu_count": os.cpu_count(),
            "torch_threads": threads}


def busy_warning(load: float | None, cpus: int, threads: int) -> str | None:
    """A warning when the load average says other processes compete for the CPUs of this run.

    This run itself accounts for up to ``threads`` runnable threads; more than ``cpus - threads`` +
    :data:`BUSY_LOAD_MARGIN` others on average means some of them share this run's CPUs.
    """
    if load is None:
        return None
    others = load - min(threads, cpus)
    if others <= max(0, cpus - threads) + BUSY_LOAD_MARGIN:
        return None
    return (f"the machine was busy: load average {load:.2f} on {cpus} usable CPU(s) with {threads} thread(s) of "
            f"this run, so about {others:.1f} other runnable thread(s) competed for the CPUs; absolute times are "
            "slower than on an idle machine and ratios between methods may be off")


def spread_warnings(seconds_by_run: Iterable[tuple[str, np.ndarray]]) -> list[str]:
    """Warnings for runs whose per-example times spread more than :data:`SPREAD_LIMIT` (90th / 10th
    percentile): the work per example of a fixed-n or deterministic method is the same for every
    image, so a wide spread is the machine's noise, not the method's."""
    warnings = []
    for key, seconds in seconds_by_run:
        seconds = np.asarray(seconds, dtype=float)
        seconds = seconds[np.isfinite(seconds)]
        if len(seconds) < SPREAD_MIN_ROWS:
            continue
        low, high = np.percentile(seconds, [10, 90])
        if low > 0 and high / low > SPREAD_LIMIT:
            warnings.append(f"{key}: per-image times vary {high / low:.1f}x between the 10th and 90th percentile "
                            f"({low * 1e3:.3g} ms to {high * 1e3:.3g} ms)")
    return warnings


def usage_warnings(usage_by_run: Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> list[str]:
    """Warnings from the process usage of CPU runs: ``(key, wall seconds, CPU seconds, page faults)`` per row.

    A run whose CPU time (user + system, every thread) adds up to less than :data:`STARVED_CPU_FRACTION` of
    its wall time waited for the CPUs while it should have been computing (another process held them), so its
    wall times are the machine's, not the method's. A run with more than :data:`PAGE_FAULT_RATE_LIMIT` minor
    page faults per CPU second spent a large share of its time in the kernel mapping and zeroing memory (an
    allocator that returns large blocks to the system), a cost of the process, not of the method. Rows
    without usage (NaN) are left out.
    """
    starved: list[tuple[str, float, float, float]] = []   # key, CPU share, CPU seconds, wall seconds
    faulting: list[tuple[str, float, float]] = []          # key, faults per image, faults per CPU second
    for key, wall, cpu, faults in usage_by_run:
        wall, cpu, faults = (np.asarray(a, dtype=float) for a in (wall, cpu, faults))
        known = np.isfinite(wall) & np.isfinite(cpu)
        total_wall, total_cpu = float(wall[known].sum()), float(cpu[known].sum())
        if total_wall > 0 and total_cpu < STARVED_CPU_FRACTION * total_wall:
            starved.append((key, total_cpu / total_wall, total_cpu, total_wall))
        counted = known & np.isfinite(faults)
        fault_total, fault_cpu = float(faults[counted].sum()), float(cpu[counted].sum())
        if fault_cpu > 0 and fault_total / fault_cpu > PAGE_FAULT_RATE_LIMIT:
            faulting.append((key, fault_total / max(1, int(counted.sum())), fault_total / fault_cpu))
    return _starved_warnings(starved) + _fault_warnings(faulting)


def _starved_warnings(starved: list[tuple[str, float, float, float]]) -> list[str]:
    """One line for the starved runs (the run's own figures when there is one)."""
    if len(starved) == 1:
        key, share, cpu, wall = starved[0]
        return [f"{key}: the process ran {share:.0%} of its wall time (CPU {cpu:.3g} s of {wall:.3g} s): it waited "
                "for the CPUs, so its times are inflated by other processes"]
    if not starved:
        return []
    lowest = min(starved, key=lambda s: s[1])
    highest = max(s[1] for s in starved)
    return [f"{len(starved)} runs ran {lowest[1]:.0%} to {highest:.0%} of their wall time on the CPU (lowest: "
            f"{lowest[0]}): they waited for the CPUs, so their times are inflated by other processes"]


def _fault_warnings(faulting: list[tuple[str, float, float]]) -> list[str]:
    """One line for the runs bound by page faults (the run's own figures when there is one)."""
    if not faulting:
        return []
    key, per_image, per_second = max(faulting, key=lambda f: f[2])
    which = f"{key}:" if len(faulting) == 1 else f"{len(faulting)} runs (most: {key}):"
    return [f"{which} {per_image:,.0f} minor page faults per image ({per_second:,.0f} per CPU second): its time "
            "includes the kernel zeroing freshly mapped memory (is the allocator tuned? "
            "bench.common.env.tune_cpu_allocator)"]


def usage_by_run(tsv: Path, device: str) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Per run of the results file ``tsv`` (:mod:`bench.certify.results_file`): (key, wall seconds, CPU seconds, page
    faults) of its rows, for :func:`usage_warnings`; none when the run's ``device`` is not the CPU (a process
    waiting for a GPU is not starved)."""
    if not str(device).startswith("cpu"):
        return []
    at = {name: COLUMNS.index(name) for name in ("method", "model", "sigma", "seconds", "cpu_seconds", "page_faults")}
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for line in read_lines(tsv):
        fields = line.split("\t")
        key = f"{fields[at['method']]} {fields[at['model']]}"
        sigma = fields[at["sigma"]].strip()
        try:
            if sigma and math.isfinite(float(sigma)):
                key += f" σ={float(sigma):g}"
        except ValueError:
            pass
        rows.setdefault(key, []).append((float(fields[at["seconds"]]), float(fields[at["cpu_seconds"]]),
                                         float(fields[at["page_faults"]])))
    columns = [(key, np.array(values, dtype=float)) for key, values in sorted(rows.items())]
    return [(key, table[:, 0], table[:, 1], table[:, 2]) for key, table in columns]


def noisy_timing_warnings(state: dict[str, Any], seconds_by_run: Iterable[tuple[str, np.ndarray]],
                          usage: Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = ()) -> list[str]:
    """Every reason to distrust the run's timings: a busy machine (from :func:`machine_state` at the
    start of the run), runs whose timings spread widely, and (``usage``, :func:`usage_by_run`) CPU runs that
    were starved of the CPUs or spent their time in page faults (:func:`usage_warnings`)."""
    busy = busy_warning(state.get("load_average_1min"), int(state.get("usable_cpus") or 1),
                        int(state.get("torch_threads") or 1))
    return ([busy] if busy else []) + spread_warnings(seconds_by_run) + usage_warnings(usage)


def noisy_timing_markdown(warnings: list[str]) -> str:
    """The summary's warning section ('' when the timings look clean)."""
    if not warnings:
        return ""
    lines = ["", "## Warning: noisy timings", "",
             "The seconds in this summary were measured on a machine that was not quiet; re-run on an idle machine "
             "(or with fewer --threads) before quoting them:", ""]
    return "\n".join(lines + [f"- {w}" for w in warnings]) + "\n"


__all__ = ["busy_warning", "default_threads", "load_average", "machine_state", "noisy_timing_markdown",
           "noisy_timing_warnings", "max_threads", "set_threads", "spread_warnings", "usable_cpus", "usage_by_run",
           "usage_warnings"]
