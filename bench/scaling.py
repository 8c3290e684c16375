"""``python -m bench.scaling``: seconds per image versus n, and the cost model (floors, targets).

With ``--sizes`` it runs the model-size sweep instead (:mod:`bench.perf.size_sweep`: speedup versus model
size, throughput, peak memory; default ``--out runs/sizes``), e.g.
``python -m bench.scaling --sizes default small medium large xlarge``.

Command-line leaf over :mod:`bench.perf.n_sweep` and :mod:`bench.perf.cost_model`. Errors are one line
on stderr (:mod:`bench.common.cli`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from baselines.cohen import MEMORY_FORMATS

from .certify.batch_size import FARS_BATCH_SIZE, best_batch_size, best_memory_format
from .certify.machine import default_threads, machine_state, set_threads
from .common.cli import checked, cli_exit, writable_dir
from .common.cli_help import DefaultsHelpFormatter
from .common.env import (
    EMBEDDED_MODELS,
    cpu_allocator,
    device_name,
    full_fp32,
    portable_path,
    resolve_device,
    runs_dir,
    tune_cpu_allocator,
)
from .common.methods import SCALING_METHODS
from .common.provenance import command_line, git_commit, package_versions
from .data import load_embedded
from .models import CheckpointError, load_zoo
from .models.sll_format import SLL_SIZES
from .perf import size_sweep
from .perf.n_sweep import COHEN_MODES, DEFAULT_NS, scaling_table, write_cost_model
from .perf.size_sweep import applicable_modes
from .report import plot_scaling

#: the networks ``--sizes`` accepts
SIZE_CHOICES = (size_sweep.DEFAULT_NETWORK, *SLL_SIZES)
#: the argparse destinations of the size sweep's own flags (left out of the n sweep's manifest)
SIZE_DESTS = frozenset({"sizes", "paper_input", "target_n", "fars_ns", "cohen_ns", "cohen_direct", "rounds",
                        "throughput_sizes", "throughput_images", "no_memory", "memory_ns", "cohen_memory_ns"})


def main(argv: list[str] | None = None) -> Path:
    """Time the methods, write the outputs; returns the output folder.

    Raises:
        SystemExit: (2) a flag out of range (a sigma that is not a finite number > 0, ...), an --out that is
            a file or cannot be written; an unknown --device.
        bench.models.CheckpointError: models that cannot be loaded, or no head-ce among them.
    """
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaling", formatter_class=DefaultsHelpFormatter,
        description="Seconds per image versus n for cohen and fars-mc on the same SLL network, with fars-closed "
                    "as the flat floor. Writes scaling.csv and scaling.png, then the cost model (flops, bytes, the "
                    "machine's floor, measured/floor and the cost targets): cost_model.csv/md, cost_targets.csv.")
    parser.add_argument("--models", type=Path, default=EMBEDDED_MODELS, help="checkpoint folder")
    parser.add_argument("--ns", type=int, nargs="+", default=list(DEFAULT_NS), help="values of n to time")
    parser.add_argument("--images", type=int, default=None,
                        help="images timed per point, median reported (default: 3; 1 with --sizes)")
    parser.add_argument("--sigma", type=float, default=0.25, help="noise level")
    parser.add_argument("--n0", type=int, default=100, help="selection samples (capped at n)")
    parser.add_argument("--alpha", type=float, default=0.001, help="failure probability")
    parser.add_argument("--batch-size", type=int, default=1000, help="noisy samples per forward pass (both methods)")
    parser.add_argument("--cohen-batch-size", default="auto",
                        help="cohen's batch size: an integer, or 'auto' to search the throughput-best batch of a plain "
                             "forward of the network on this device (with --sizes: per size)")
    parser.add_argument("--fars-batch-size", type=int, default=FARS_BATCH_SIZE, help="fars-mc's batch size")
    parser.add_argument("--cohen-memory-format", default="auto", choices=["auto", *MEMORY_FORMATS],
                        help="memory format of cohen's noisy batches: 'auto' takes the faster for a plain forward of "
                             "cohen's batch on this device (with --sizes: per size), as bench.run does")
    parser.add_argument("--cohen-compile", action="store_true",
                        help="opt-in: run cohen's network through torch.compile (logits differ at round-off level)")
    parser.add_argument("--cohen-precision", default="fp32", choices=["fp32", "tf32", "bf16", "fp16"],
                        help="opt-in lower precision for cohen's forward (autocast); recorded in the results")
    parser.add_argument("--cohen-modes", nargs="*", default=[], choices=list(COHEN_MODES), metavar="MODE",
                        help="opt-in fast modes of cohen timed as rows of their own beside the fp32 one, each with its "
                             f"certified accuracy ({', '.join(COHEN_MODES)}); also with --sizes. tf32 applies to CUDA "
                             "only: on a CPU it is left out with a note (not applicable)")
    parser.add_argument("--no-cost-model", action="store_true", help="skip the cost model (cost_model.csv/md)")
    parser.add_argument("--methods", nargs="+", default=list(SCALING_METHODS), choices=SCALING_METHODS,
                        help="methods to time")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--seed", type=int, default=0, help="global seed; with an image's index it fixes its noise")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op CPU threads (0: torch's default); the machine is measured with the same "
                             "(default: 0; with --sizes, default_threads(): the usable CPUs)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: runs/fashion-mnist/scaling, with --sizes runs/sizes; the "
                             "committed reference is results/fashion-mnist/scaling, written by `make results`)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_size_arguments(parser)
    args = parser.parse_args(argv)
    if args.sizes is not None:
        return size_main(parser, args, sys.argv[1:] if argv is None else list(argv))
    stray = sorted("--" + dest.replace("_", "-") for dest in SIZE_DESTS - {"sizes"}
                   if getattr(args, dest) != parser.get_default(dest))
    if stray:
        parser.error(f"{' '.join(stray)} belong to the size sweep: add --sizes, or leave them out of the n sweep")
    args.images = 3 if args.images is None else args.images
    args.threads = 0 if args.threads is None else args.threads
    if not math.isfinite(args.sigma) or args.sigma <= 0:
        parser.error(f"--sigma must be a finite number > 0, got {args.sigma}")
    if any(n < 1 for n in args.ns) or args.images < 1 or args.n0 < 1 or not 0 < args.alpha < 1:
        parser.error("--ns, --images and --n0 must be >= 1, --alpha in (0, 1)")
    if args.batch_size < 1 or args.fars_batch_size < 1:
        parser.error("batch sizes must be >= 1")
    if args.cohen_batch_size not in (None, "auto") and (not str(args.cohen_batch_size).isdigit()
                                                        or int(args.cohen_batch_size) < 1):
        parser.error("--cohen-batch-size must be an integer >= 1 or 'auto'")
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    if args.out is None:
        args.out = runs_dir("fashion-mnist", "scaling")
    args.out = checked(parser, lambda: writable_dir(args.out))
    device = checked(parser, lambda: resolve_device(args.device))
    if args.threads:   # at most a few per CPU (far more crashes torch's thread pool)
        checked(parser, lambda: set_threads(args.threads))
    allocator_tuned = tune_cpu_allocator()
    precision = full_fp32()
    modes, mode_notes = applicable_modes(args.cohen_modes, device)
    for note in mode_notes:
        print(note, file=sys.stderr)
    zoo = load_zoo(args.models)
    if "ce" not in zoo.heads:
        raise CheckpointError(f"{args.models} has no head-ce checkpoint (the scaling sweep times sll+ce)")
    model = zoo.split_model("ce").to(device)
    images, labels, indices = load_embedded(limit=args.images)
    images = images.to(device)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    search = None
    cohen_bs = args.batch_size
    if args.cohen_batch_size == "auto":
        cohen_bs, search = best_batch_size(model.network, tuple(images.shape[1:]), device,
                                           max_samples=max(args.ns) + min(args.n0, max(args.ns)))
        print(f"cohen batch size: {cohen_bs} (throughput of a plain forward)\n{search.to_string(index=False)}",
              file=sys.stderr)
    elif args.cohen_batch_size is not None:
        cohen_bs = int(args.cohen_batch_size)
    memory_format = args.cohen_memory_format
    if memory_format == "auto":
        memory_format, _ = best_memory_format(model.network, tuple(images.shape[1:]), cohen_bs, device)
        print(f"cohen memory format: {memory_format} (the faster plain forward)", file=sys.stderr)
    table = scaling_table(model, images, indices, tuple(sorted(args.ns)), args.sigma, args.n0, args.alpha,
                          args.batch_size, args.seed, tuple(args.methods), progress=not args.no_progress,
                          cohen_batch_size=cohen_bs, fars_batch_size=args.fars_batch_size,
                          cohen_compile=args.cohen_compile, cohen_precision=args.cohen_precision,
                          cohen_modes=modes, cohen_memory_format=memory_format, labels=labels)
    table.to_csv(args.out / "scaling.csv", index=False)
    mode_rows = table[~table["mode"].isin(["fp32", "-"])]
    if not mode_rows.empty:
        print(mode_rows.to_string(index=False), file=sys.stderr)
    table = table[table["mode"].isin(["fp32", "-"])]   # the fast modes are rows of scaling.csv only
    if search is not None:
        search.to_csv(args.out / "batch_search.csv", index=False)
    plot_scaling(table, args.out / "scaling.png", device=device_name(device))
    config = {k: (portable_path(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k not in SIZE_DESTS}   # the n sweep's own settings (the size sweep's flags are not part of it)
    config["models"] = zoo.fingerprint()
    manifest: dict[str, Any] = {
        "config": config, "models_dir": portable_path(args.models),
        "device": str(device), "device_name": device_name(device), "versions": package_versions(),
        "git_commit": git_commit(), "started": started,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    manifest.update(allocator_tuned=allocator_tuned, cpu_allocator=cpu_allocator(),
                    torch_threads=torch.get_num_threads(), precision=precision, cohen_memory_format=memory_format,
                    cohen_modes=list(modes),
                    cohen_mode_notes=mode_notes)
    print(table.to_string(index=False))
    if not args.no_cost_model:
        _, targets = write_cost_model(model, images, table, args.out, batch_size=cohen_bs, indices=indices)
        manifest["targets"] = {row["target"]: row["met"] for row in targets.to_dict("records")}
    manifest["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return args.out


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the model-size sweep (``--sizes``; :mod:`bench.perf.size_sweep`)."""
    group = parser.add_argument_group(
        "model-size sweep (--sizes)", "with --sizes, the command times the SLL layouts instead of the n sweep and "
        "writes speedup_vs_size.csv/png/pdf, size_sweep.md, throughput.csv, memory.csv and manifest.json")
    group.add_argument("--sizes", nargs="+", default=None, choices=SIZE_CHOICES, metavar="SIZE",
                       help=f"networks of the size sweep, any of {', '.join(SIZE_CHOICES)}: 'default' is the shipped "
                            "Fashion-MNIST network sll+ce; the others are the SLL authors' layouts at 3x32x32, "
                            "10 classes, random seeded weights")
    group.add_argument("--paper-input", action="store_true",
                       help="also SLL small at the FaRS paper's 3x224x224 (1000 classes), if its estimated memory fits")
    group.add_argument("--target-n", type=int, default=size_sweep.TARGET_N, help="n of every speedup and goal")
    group.add_argument("--fars-ns", type=int, nargs="+", default=list(size_sweep.FARS_MC_NS),
                       help="n of fars-mc (the target n is always added)")
    group.add_argument("--cohen-ns", type=int, nargs=2, default=list(size_sweep.COHEN_NS), metavar=("LOW", "HIGH"),
                       help="the two n cohen is measured at, each rounded up to a whole multiple of its batch size, "
                            "the higher at least one batch above the lower (so both run the same batch size); its time "
                            "at the target n is extrapolated when linear")
    group.add_argument("--cohen-direct", nargs="*", default=["small"], metavar="SIZE",
                       help="sizes where cohen is also measured at the target n directly (one image)")
    group.add_argument("--rounds", type=int, default=2,
                       help="timing rounds; the method order is reversed on every other round")
    group.add_argument("--throughput-sizes", nargs="*", default=[size_sweep.DEFAULT_NETWORK, "small"], metavar="SIZE",
                       help="sizes whose throughput (many images per certify call) is measured")
    group.add_argument("--throughput-images", type=int, default=32, help="images per certify call for the throughput")
    group.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes (fresh subprocesses)")
    group.add_argument("--memory-ns", type=int, nargs=2, default=[10_000, size_sweep.TARGET_N], metavar=("LOW", "HIGH"),
                       help="the two n of fars-mc's peak-memory probes")
    group.add_argument("--cohen-memory-ns", type=int, nargs=2, default=list(size_sweep.COHEN_MEMORY_NS),
                       metavar=("LOW", "HIGH"),
                       help="the two n of cohen's peak-memory probes on every size (its peak is one forward batch "
                            "whatever n is)")


def size_main(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> Path:
    """``--sizes``: the model-size sweep (:func:`bench.perf.size_sweep.run_size_sweep`) into ``--out``;
    ``argv`` (the command's words) is recorded in the manifest with portable paths."""
    images = 1 if args.images is None else args.images
    threads = default_threads() if args.threads is None else args.threads
    ns = [args.target_n, *args.fars_ns, *args.cohen_ns, *args.memory_ns, *args.cohen_memory_ns]
    if min(ns) < 1 or images < 1 or args.rounds < 1 or args.throughput_images < 1 or args.n0 < 1:
        parser.error("n values, --images, --rounds, --throughput-images and --n0 must be >= 1")
    if not args.cohen_ns[0] < args.cohen_ns[1]:
        parser.error(f"--cohen-ns must be two increasing n, got {args.cohen_ns}")
    if not math.isfinite(args.sigma) or args.sigma <= 0 or not 0 < args.alpha < 1:
        parser.error("--sigma must be a finite number > 0 and --alpha in (0, 1)")
    for flag, names in (("--cohen-direct", args.cohen_direct), ("--throughput-sizes", args.throughput_sizes)):
        unknown = sorted(set(names) - set(SIZE_CHOICES) - {size_sweep.PAPER_INPUT})
        if unknown:
            parser.error(f"{flag}: unknown size(s) {', '.join(unknown)}; choose from {', '.join(SIZE_CHOICES)}")
    out = checked(parser, lambda: writable_dir(args.out if args.out is not None else runs_dir("sizes")))
    device = checked(parser, lambda: resolve_device(args.device))
    if threads:
        set_threads(threads)
    state = machine_state(torch.get_num_threads())
    allocator_tuned = tune_cpu_allocator()
    precision = full_fp32()
    if args.cohen_batch_size == "auto":
        cohen_bs = 0   # searched per size (bench.perf.size_sweep.timing.resolve_batch)
    elif str(args.cohen_batch_size).isdigit() and int(args.cohen_batch_size) >= 1:
        cohen_bs = int(args.cohen_batch_size)
    else:
        parser.error("--cohen-batch-size must be an integer >= 1 or 'auto'")
    config = size_sweep.SweepConfig(
        specs=checked(parser, lambda: size_sweep.parse_sizes(args.sizes, args.paper_input, args.seed)),
        device=device, images=images, rounds=args.rounds, sigma=args.sigma, n0=args.n0, alpha=args.alpha,
        target_n=args.target_n, fars_ns=tuple(args.fars_ns), cohen_ns=(args.cohen_ns[0], args.cohen_ns[1]),
        cohen_direct=tuple(args.cohen_direct), cohen_batch_size=cohen_bs, cohen_modes=tuple(args.cohen_modes),
        cohen_memory_format=args.cohen_memory_format,
        fars_batch_size=args.fars_batch_size,
        throughput_sizes=tuple(args.throughput_sizes), throughput_images=args.throughput_images,
        memory=not args.no_memory, memory_ns=(args.memory_ns[0], args.memory_ns[1]),
        cohen_memory_ns=(args.cohen_memory_ns[0], args.cohen_memory_ns[1]), seed=args.seed,
        progress=not args.no_progress)
    size_sweep.run_size_sweep(config, out, manifest_extra={
        "command": command_line("bench.scaling", argv), "machine_state": state,
        "device_name": device_name(device), "versions": package_versions(), "git_commit": git_commit(),
        "allocator_tuned": allocator_tuned, "cpu_allocator": cpu_allocator(),
        "precision": precision, "torch_threads": torch.get_num_threads()})
    return out


if __name__ == "__main__":
    cli_exit(main)
