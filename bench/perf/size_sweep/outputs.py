"""The size sweep's outputs: the figure, the goals as PASS / MISS lines, the warnings about the timings,
and ``size_sweep.md`` with the CSVs and ``manifest.json`` beside it (:func:`write_outputs`, their one writer)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot import

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ...certify.machine import busy_warning  # noqa: E402
from ...report import markdown_table  # noqa: E402
from ...report.plots import save_figure  # noqa: E402
from .. import cost_model as cm  # noqa: E402
from .builders import FP32  # noqa: E402
from .extrapolation import LINEAR_TOLERANCE  # noqa: E402
from .layouts import DEFAULT_NETWORK  # noqa: E402
from .settings import TARGET_N  # noqa: E402

#: the performance goals the sweep checks
CLOSED_FORWARD_GOAL = 1.1
MC_FLOOR_GOAL_DEFAULT = 1.25
MC_FLOOR_GOAL_SMALL = 1.5
LIMIT_FRACTION_GOAL = 0.85
THROUGHPUT_GOAL = 1.3
#: a CPU row whose process CPU time is below this fraction of its wall time ran while other processes
#: held the cores (one torch thread keeps one core busy the whole call on a quiet machine)
CPU_SHARE_LIMIT = 0.8
#: rows shorter than this (seconds) are not judged by their CPU share (getrusage's resolution)
CPU_SHARE_MIN_SECONDS = 0.05
#: cohen rows with more minor page faults per sample than this spend kernel time zeroing fresh memory
FAULTS_PER_SAMPLE_LIMIT = 50.0


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


def timing_warnings(table: pd.DataFrame, machine_state: dict[str, Any] | None) -> list[str]:
    """Reasons to distrust the timings: a busy machine by its load average at the start
    (:func:`bench.certify.machine.busy_warning`), CPU rows whose process CPU time (user + system) fell
    below :data:`CPU_SHARE_LIMIT` of their wall time (other processes held the cores during them), and
    cohen rows paying many page faults per sample."""
    warnings = []
    if machine_state:
        busy = busy_warning(machine_state.get("load_average_1min"), int(machine_state.get("usable_cpus") or 1),
                            int(machine_state.get("torch_threads") or 1))
        if busy:
            warnings.append(busy)
    if table.empty or "cpu_share" not in table:
        return warnings
    cpu = table[(table["device"] == "cpu") & (table["source"] == "measured") & table["cpu_share"].notna()
                & (table["seconds"] >= CPU_SHARE_MIN_SECONDS)]
    low = cpu[cpu["cpu_share"] < CPU_SHARE_LIMIT]
    if not low.empty:
        rows = ", ".join(f"{r['size']} {r['method']}{'' if r['mode'] in ('-', FP32) else ' ' + r['mode']} "
                         f"n={int(r['n']):,} ({r['cpu_share']:.0%})" for _, r in low.iterrows())
        warnings.append(f"noisy machine: {len(low)} of {len(cpu)} timed rows ran on a CPU for less than "
                        f"{CPU_SHARE_LIMIT:.0%} of their wall time (other processes held the cores): {rows}. Their "
                        "wall seconds overstate the cost; the cpu_seconds column is the process's own CPU time")
    faults = table[(table["method"] == "cohen") & (table["page_faults_per_sample"] > FAULTS_PER_SAMPLE_LIMIT)]
    for _, r in faults.iterrows():
        warnings.append(f"{r['size']} cohen n={int(r['n']):,}: {r['page_faults_per_sample']:.0f} page faults per "
                        "sample (kernel time zeroing fresh memory on its batches; the manifest's cpu_allocator says "
                        "how the allocator was set)")
    return warnings


def cohen_section(table: pd.DataFrame, target_n: int) -> list[str]:
    """The markdown of cohen at ``target_n`` per size and mode: seconds per image, how they were obtained (the
    two n and batch size of the line), CPU time, the speedup of fars-mc over that row, the mode's speedup over
    fp32 at the measured n and whether its certificates equal fp32's."""
    def fmt(x: Any, digits: str = ".3g") -> str:
        return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, digits)

    rows = []
    for size, group in table[table["method"] == "cohen"].groupby("size", sort=False):
        for mode, sub in group.groupby("mode", sort=False):
            at = sub[sub["n"] == target_n]
            if at.empty:
                continue
            row = at.iloc[0]
            measured = sub[sub["source"] == "measured"].sort_values("n")
            points = ", ".join(f"{int(r['n']):,}: {r['seconds']:.3g} s (cpu {r['cpu_seconds']:.3g} s)"
                               for _, r in measured.iterrows() if int(r["n"]) != target_n)
            speedups = measured["cpu_speedup_of_mode"].dropna()
            same = measured["same_as_fp32"].dropna()
            rows.append((size, f"cohen {mode}", fmt(float(row["seconds"])), fmt(float(row["cpu_seconds"])),
                         row["source"], int(row["batch_size"]), points, fmt(row.get("linear_ratio"), ".3f"),
                         cm.fmt_ratio(row["fars_mc_speedup"]), cm.fmt_ratio(row["fars_mc_cpu_speedup"]),
                         cm.fmt_ratio(float(speedups.median())) if not speedups.empty else "—",
                         f"{same.mean():.0%}" if not same.empty else "—"))
    if not rows:
        return []
    return [f"## Cohen at n = {target_n:,} on every size", "",
            "`measured`: one certify call at that n; `extrapolated`: on the straight line through the two measured n "
            "(both whole multiples of the batch size, so every estimation batch is full) after the linearity check "
            f"(CPU time ratio / (n0 + n) ratio within {LINEAR_TOLERANCE:.0%}); wall and CPU seconds each on their "
            "own line. Fast modes (tf32, bf16, compiled, ...) are "
            "opt-ins that change the computed classifier: each has its own certificates, compared with fp32's on "
            "the same images and noise (the last column: the share of its measured n and images whose "
            "certificate, class and radius, equals fp32's).", "",
            markdown_table(["size", "row", f"seconds at n = {target_n:,}", "cpu s", "source", "batch",
                            "measured n: wall (cpu)", "time ratio / samples ratio", "fars-mc speedup",
                            "fars-mc cpu speedup", "mode vs fp32 (cpu)", "same certificate as fp32"], rows), ""]


def sweep_markdown(table: pd.DataFrame, throughput: pd.DataFrame, memory: pd.DataFrame, notes: list[str],
                   warnings: list[str], machine: cm.Machine, target_n: int = TARGET_N) -> str:
    """``size_sweep.md``: the table, cohen at the target n, the goals as PASS/MISS lines, the warnings about
    the timings, throughput, memory and notes."""
    def fmt(x: Any, digits: str = ".3g") -> str:
        return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, digits)

    view = table.assign(n=table["n"].map(lambda v: f"{int(v):,}" if v else "—"))
    rows = [(r["size"], fmt(float(r["parameters"]), ".3g"), cm.fmt_count(r["flops_per_image"]),
             r["method"] if r["mode"] in ("-", FP32) and r["method"] != "cohen" else f"{r['method']} {r['mode']}",
             r["n"], fmt(r["seconds"]), fmt(r["cpu_seconds"]), r["source"], fmt(r["floor_s"]),
             cm.fmt_ratio(r["ratio_to_floor"]), cm.fmt_ratio(r["measured_speedup"]), cm.fmt_ratio(r["cpu_speedup"]),
             cm.fmt_ratio(r["predicted_speedup"]), cm.fmt_ratio(r["limit"]))
            for _, r in view.iterrows()]
    parts = [f"# Speedup versus model size (n = {target_n:,})", "",
             f"Machine: {machine.describe()}; torch {torch.__version__}.",
             "Seconds per image (wall) with the process CPU seconds (user + system) of the same call beside them; "
             "`extrapolated`: cohen's time from two smaller n on a straight line after the linearity check, "
             "`measured` otherwise. Floor: the cost model's (bench.perf.cost_model). Limit: cohen's time / one "
             "plain single-image forward. Speedups are over fp32 cohen (`cohen fp32`), of wall seconds (measured "
             "speedup) and of process CPU seconds (cpu speedup, the steadier on a shared machine); the fast modes' "
             "rows are in the next section.", "",
             markdown_table(["size", "params", "flops/image", "method", "n", "seconds", "cpu s", "source", "floor",
                             "measured/floor", "measured speedup", "cpu speedup", "predicted speedup", "limit"],
                            rows), "",
             *cohen_section(table, target_n),
             "## Goals", "", "```", *goal_lines(table, throughput, target_n), "```", ""]
    if warnings:
        parts += ["## Warning: noisy timings", "", *[f"- {w}" for w in warnings], ""]
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


def extrapolation_notes(table: pd.DataFrame) -> list[str]:
    """A note per size and cohen mode whose time at the target n is neither measured nor extrapolated."""
    notes: list[str] = []
    if table.empty:
        return notes
    for (size, mode), group in table[table["method"] == "cohen"].groupby(["size", "mode"], sort=False):
        if (group["source"] == "not-comparable").any():
            notes.append(f"{size} cohen {mode}: its two n are not whole multiples of its batch size, so they ran at "
                         "different batch sizes; linearity not checked, not extrapolated")
        if (group["source"] == "not-linear").any():
            ratio = float(group["linear_ratio"].dropna().iloc[0])
            notes.append(f"{size} cohen {mode}: time not linear in n (time ratio / (n0 + n) ratio = {ratio:.2f}, "
                         f"tolerance {LINEAR_TOLERANCE:.0%}); not extrapolated, no speedup at the target n")
    return notes


def write_outputs(out: Path, tables: list[pd.DataFrame], throughput: list[dict[str, Any]],
                  memory: list[dict[str, Any]], notes: list[str], machine: cm.Machine, target_n: int,
                  manifest: dict[str, Any]) -> str:
    """Write the CSVs, the plot, ``size_sweep.md`` and ``manifest.json`` of the sizes done so far; returns the md.
    The warnings about the timings (:func:`timing_warnings`, from ``manifest["machine_state"]`` and the rows)
    go to the markdown and the manifest."""
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    notes = notes + extrapolation_notes(table)
    warnings = timing_warnings(table, manifest.get("machine_state"))
    throughput_df, memory_df = pd.DataFrame(throughput), pd.DataFrame(memory)
    table.to_csv(out / "speedup_vs_size.csv", index=False)
    throughput_df.to_csv(out / "throughput.csv", index=False)
    memory_df.to_csv(out / "memory.csv", index=False)
    if not table.empty:
        plot_speedup_vs_size(table, out / "speedup_vs_size.png", target_n)
    text = sweep_markdown(table, throughput_df, memory_df, notes, warnings, machine, target_n) if not table.empty \
        else "# Speedup versus model size\n\nNo size was timed.\n" + "".join(f"\n- {n}" for n in notes) + "\n"
    (out / "size_sweep.md").write_text(text)
    (out / "manifest.json").write_text(json.dumps({**manifest, "notes": notes, "timing_warnings": warnings},
                                                  indent=2, default=str) + "\n")
    return text
