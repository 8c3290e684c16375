"""The rows of ``speedup_vs_size.csv`` for one network: measured times set against the cost model, cohen at
the target n in every mode, and the speedups of the FaRS methods over each cohen row."""

from __future__ import annotations

import math

import pandas as pd
import torch

from .. import cost_model as cm
from .builders import FP32
from .extrapolation import Extrapolation, cohen_at_target
from .layouts import Network
from .settings import SweepConfig

#: what the timing columns of a row are
TIMING = ("median seconds of one-image certify calls (the certificate's seconds, device synchronised, warm-up "
          "excluded) over images and rounds, with the median process CPU seconds (user + system) and minor page "
          "faults of one call; fars-closed: paired with the plain forward")


def flops_per_image(costs: cm.NetworkCosts) -> float:
    """Flops of one plain single-image forward (backbone + head) by the cost model's counter."""
    return float(costs.backbone.flops(1, 1) + costs.head.flops(1, 1))


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


def _with_targets(measured: pd.DataFrame, config: SweepConfig
                  ) -> tuple[pd.DataFrame, dict[str, Extrapolation | None]]:
    """``measured`` with a cohen row at the target n for every mode (measured, extrapolated or without
    seconds) and the linearity check of each mode."""
    measured = measured.copy()
    measured["source"] = "measured"
    checks: dict[str, Extrapolation | None] = {}
    extra = []
    for mode in dict.fromkeys(measured.loc[measured["method"] == "cohen", "mode"]):
        row, check = cohen_at_target(measured, config, str(mode))
        checks[str(mode)] = check
        at = (measured["method"] == "cohen") & (measured["mode"] == mode) & (measured["n"] == config.target_n)
        if not at.any():
            extra.append(row)
    if extra:
        measured = pd.concat([measured, pd.DataFrame(extra)], ignore_index=True)
    return measured, checks


def size_rows(net: Network, config: SweepConfig, costs: cm.NetworkCosts, machine: cm.Machine,
              measured: pd.DataFrame, plain: cm.PlainForward, closed_paired: float) -> pd.DataFrame:
    """The size's rows of ``speedup_vs_size.csv`` (see :mod:`bench.perf.size_sweep`)."""
    measured, checks = _with_targets(measured, config)
    closed = measured["method"] == "fars-closed"
    measured.loc[closed, "seconds"] = closed_paired    # the paired median, against the paired forward
    batch = {"cohen": config.cohen_batch_size, "fars-mc": config.fars_batch_size, "fars-closed": 1}
    measured["model"] = net.spec.name
    measured["batch_size"] = measured["method"].map(batch)
    measured["samples"] = [0 if m == "fars-closed" else min(config.n0, n) + n
                           for m, n in zip(measured["method"], measured["n"], strict=True)]
    table = cm.cost_table(costs, measured, machine, plain)
    for column in ("mode", "source", "seconds_p25", "seconds_p75", "cpu_seconds", "page_faults", "prediction",
                   "radius", "same_as_fp32", "certified_accuracy"):
        table[column] = list(measured[column]) if column in measured else math.nan
    table["cpu_share"] = table["cpu_seconds"] / table["seconds"]
    table["page_faults_per_sample"] = [f / s if s else f for f, s in zip(table["page_faults"], table["samples"],
                                                                         strict=True)]
    table.insert(0, "size", net.spec.name)
    table.insert(1, "input_shape", "x".join(map(str, net.spec.input_shape)))
    table.insert(2, "parameters", net.parameters)
    table.insert(3, "flops_per_image", flops_per_image(costs))
    table["extrapolated"] = table["source"] == "extrapolated"
    table["plain_single_s"] = plain.single
    table["plain_batched_per_sample_s"] = plain.per_sample
    for column in ("linear_ratio", "linear_ratio_n", "predicted_speedup", "predicted_speedup_flops",
                   "measured_speedup", "cpu_speedup", "limit", "fraction_of_limit", "fars_mc_speedup",
                   "fars_mc_cpu_speedup", "speedup_of_mode", "cpu_speedup_of_mode"):
        table[column] = math.nan
    table["linear"] = None
    for mode, check in checks.items():
        at = (table["method"] == "cohen") & (table["mode"] == mode)
        if check is not None:
            table.loc[at, "linear_ratio"] = check.ratio
            table.loc[at, "linear_ratio_n"] = check.ratio_n
            table.loc[at, "linear"] = check.linear
    target = table["n"] == config.target_n
    cohen = table[(table["method"] == "cohen") & (table["mode"] == FP32) & target].iloc[0]
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
        table.loc[at, "cpu_speedup"] = float(cohen["cpu_seconds"]) / float(row["cpu_seconds"])
        table.loc[at, "limit"] = limit
        table.loc[at, "fraction_of_limit"] = cohen_s / float(row["seconds"]) / limit
        table.loc[at, "speedup_source"] = str(cohen["source"])
    mc = table[(table["method"] == "fars-mc") & target]
    if not mc.empty:
        at = (table["method"] == "cohen") & target
        table.loc[at, "fars_mc_speedup"] = table.loc[at, "seconds"] / float(mc["seconds"].iloc[0])
        table.loc[at, "fars_mc_cpu_speedup"] = table.loc[at, "cpu_seconds"] / float(mc["cpu_seconds"].iloc[0])
    # each fast mode against fp32 cohen at the same n
    fp32 = table[(table["method"] == "cohen") & (table["mode"] == FP32)].set_index("n")
    modes = (table["method"] == "cohen") & (table["mode"] != FP32)
    for column, ratio in (("seconds", "speedup_of_mode"), ("cpu_seconds", "cpu_speedup_of_mode")):
        table.loc[modes, ratio] = [fp32[column].get(n, math.nan) / s
                                   for n, s in zip(table.loc[modes, "n"], table.loc[modes, column], strict=True)]
    table["timing"] = TIMING
    table["device"] = str(net.images.device)
    table["threads"] = torch.get_num_threads()
    return table
