"""The machine a run is timed on: CPU threads without oversubscription, its state, and when timings are noisy.

Timings are only comparable when each process has its CPUs to itself. Two things break that here: more
torch threads than the CPUs the process may use (oversubscription: on a busy 2-core machine
``fars-closed`` took 216 ms per image with 2 threads and 3 ms with 1), and other processes keeping the
CPUs busy. :func:`default_threads` avoids the first; :func:`machine_state` records the second in the
manifest, and :func:`noisy_timing_warnings` says in the summary when the figures should not be trusted,
as pyperf warns on untuned systems.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from ..cli import UsageError
from ..env import THREADS_PER_CPU, max_threads

#: a load average above this fraction of a CPU per CPU this process does not use means another process
#: competes for the CPUs
BUSY_LOAD_MARGIN = 0.5
#: timings of one run whose 90th percentile exceeds this multiple of its 10th are called noisy
SPREAD_LIMIT = 3.0
#: runs with fewer rows than this are not judged by their spread
SPREAD_MIN_ROWS = 10


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


def noisy_timing_warnings(state: dict[str, Any], seconds_by_run: Iterable[tuple[str, np.ndarray]]) -> list[str]:
    """Every reason to distrust the run's timings: a busy machine (from :func:`machine_state` at the
    start of the run) and runs whose timings spread widely."""
    busy = busy_warning(state.get("load_average_1min"), int(state.get("usable_cpus") or 1),
                        int(state.get("torch_threads") or 1))
    return ([busy] if busy else []) + spread_warnings(seconds_by_run)


def noisy_timing_markdown(warnings: list[str]) -> str:
    """The summary's warning section ('' when the timings look clean)."""
    if not warnings:
        return ""
    lines = ["", "## Warning: noisy timings", "",
             "The seconds in this summary were measured on a machine that was not quiet; re-run on an idle machine "
             "(or with fewer --threads) before quoting them:", ""]
    return "\n".join(lines + [f"- {w}" for w in warnings]) + "\n"


__all__ = ["busy_warning", "default_threads", "load_average", "machine_state", "noisy_timing_markdown",
           "noisy_timing_warnings", "max_threads", "set_threads", "spread_warnings", "usable_cpus"]
