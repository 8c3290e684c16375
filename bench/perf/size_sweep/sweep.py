"""The size sweep's driver: one network after the other, each counted, timed and compared, the outputs
rewritten after each."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path
from typing import Any

import pandas as pd

from .. import cost_model as cm
from .builders import applicable_modes
from .layouts import SizeSpec, available_bytes, build_network, estimated_bytes
from .memory import memory_rows
from .outputs import write_outputs
from .rows import flops_per_image, predicted, size_rows
from .settings import SweepConfig, log
from .timing import Timer, default_timer, reference_forwards, resolve_batch, throughput_rows, time_size

#: the fraction of the memory available that a network may be estimated to need (else it is skipped)
MEMORY_FRACTION = 0.5
#: the batch size the memory estimate assumes before cohen's batch size is searched
ESTIMATE_BATCH = 256


@dataclasses.dataclass
class SizeResult:
    """One network's results: its rows, the cost model's prediction, throughput rows and cohen's settings."""

    table: pd.DataFrame
    prediction: dict[str, float]
    throughput: list[dict[str, Any]]
    config: SweepConfig
    batch_search: list[dict[str, Any]]


def sweep_size(spec: SizeSpec, config: SweepConfig, machine: cm.Machine, timer: Timer = default_timer) -> SizeResult:
    """One network: fix cohen's batch size and two n (:func:`resolve_batch`), count, predict, time, compare."""
    net = build_network(spec, config.device, config.images)
    config, search = resolve_batch(net, config)
    log(config, f"{spec.name}: cohen batch size {config.cohen_batch_size}, memory format {config.cohen_memory_format}, "
                f"cohen n {config.cohen_ns}")
    costs = cm.network_costs(net.backbone, net.head, spec.input_shape)
    prediction = predicted(costs, machine, config)
    log(config, f"{spec.name}: {net.parameters:,} parameters, {cm.fmt_count(flops_per_image(costs))} flops per "
                f"image; predicted fars-mc speedup at n={config.target_n:,}: "
                f"{prediction['predicted_speedup_mc']:,.0f}x (cost model floors)")
    plain, closed_paired = reference_forwards(net, config)
    measured = time_size(net, config, timer)
    table = size_rows(net, config, costs, machine, measured, plain, closed_paired)
    throughput = throughput_rows(net, config) if spec.name in config.throughput_sizes else []
    return SizeResult(table, prediction, throughput, config,
                      [] if search is None else search.to_dict("records"))


def run_size_sweep(config: SweepConfig, out: Path, *, machine: cm.Machine | None = None,
                   timer: Timer = default_timer, manifest_extra: dict[str, Any] | None = None) -> pd.DataFrame:
    """Run the sweep over ``config.specs`` and write every output to ``out`` (see :mod:`bench.perf.size_sweep`).

    The outputs are rewritten after each size, so a sweep stopped part way (a time budget) keeps the sizes
    it finished (``manifest.json``'s ``finished`` is empty until the last). Networks whose estimated memory
    exceeds half of what is available are skipped with a note; cohen fast modes that do not apply to the
    device (TF32 on a CPU) are left out with a note. ``timer`` times a certifier on images (tests give a
    fake one). Returns ``speedup_vs_size.csv``'s table.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    machine = machine or cm.measure_machine(config.device)
    modes, notes = applicable_modes(config.cohen_modes, config.device)
    config = dataclasses.replace(config, cohen_modes=modes)
    tables: list[pd.DataFrame] = []
    throughput: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    predictions: dict[str, dict[str, float]] = {}
    cohen: dict[str, dict[str, Any]] = {}
    manifest = {"config": config.as_dict(), "machine": machine.as_dict(), "predictions": predictions,
                "cohen_per_size": cohen, "started": started, "finished": None, **(manifest_extra or {})}
    text = ""
    for i, spec in enumerate(config.specs):
        batch = config.cohen_batch_size or ESTIMATE_BATCH
        need, have = estimated_bytes(spec, batch), available_bytes(config.device)
        if need > MEMORY_FRACTION * have:
            notes.append(f"{spec.name} ({'x'.join(map(str, spec.input_shape))}) skipped: estimated "
                         f"{need / 2 ** 30:.1f} GiB, more than {MEMORY_FRACTION:.0%} of the "
                         f"{have / 2 ** 30:.1f} GiB available")
            log(config, notes[-1])
        else:
            result = sweep_size(spec, config, machine, timer)
            tables.append(result.table)
            throughput += result.throughput
            predictions[spec.name] = result.prediction
            cohen[spec.name] = {"batch_size": result.config.cohen_batch_size, "ns": list(result.config.cohen_ns),
                                "memory_format": result.config.cohen_memory_format,
                                "batch_search": result.batch_search}
            if config.memory:
                memory += memory_rows(spec, result.config)
        if i == len(config.specs) - 1:
            manifest["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        pending = [s.name for s in config.specs[i + 1:]]
        partial = [f"partial: sizes not timed yet (the sweep is running, or was stopped): {', '.join(pending)}"]
        text = write_outputs(out, tables, throughput, memory, notes + (partial if pending else []), machine,
                             config.target_n, manifest)
    if config.progress:
        print(text)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
