"""Peak memory of one ``certify`` call per method, each measured in a fresh process on the CPU.

On the CPU a probe runs in a fresh subprocess (:func:`measure_memory`), so one measurement's peak does not
hide another's: the peak resident memory over the first call minus the resident memory before it (Linux's
``VmHWM``, reset just before the call, else the growth of ``ru_maxrss``). On CUDA, in this process,
``torch.cuda.max_memory_allocated`` minus the memory allocated before the call (peak statistics reset first).
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pandas as pd
import torch

from .builders import make_certifier
from .layouts import SizeSpec, build_network
from .settings import SweepConfig, log


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
                      cohen_batch_size=config["cohen_batch_size"], fars_batch_size=config["fars_batch_size"],
                      cohen_memory_format=config.get("cohen_memory_format", "contiguous"))
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
                "fars_batch_size": config.fars_batch_size, "cohen_memory_format": config.cohen_memory_format}
    if config.device.type == "cuda":
        return memory_probe(spec.as_dict(), method, n, settings)
    code = ("import json, sys; from bench.perf.size_sweep.memory import memory_probe; "
            "print(json.dumps(memory_probe(*json.loads(sys.argv[1]))))")
    root = Path(__file__).resolve().parents[3]
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
        log(config, f"  {spec.name}: memory of {method} n={n}")
        rows.append(measure_memory(spec, method, n, config))
    frame = pd.DataFrame(rows)
    for method, group in frame.groupby("method"):
        peaks = group["peak_bytes"].astype(float).to_numpy()
        grows = bool(len(peaks) > 1 and peaks[-1] > 1.1 * peaks[0] + (16 << 20))
        for row in rows:
            if row["method"] == method:
                row["grows_with_n"] = grows
    return rows
