"""``python -m bench.sequential``: sequential versus fixed-n CERTIFY on the same images.

Command-line leaf over :mod:`bench.perf.sequential_compare`: certifies every image with ``cohen`` and ``fars-mc``
on ``sll+ce`` at each fixed n of a grid and sequentially at the cap, and writes ``sequential_examples.csv``,
``sequential.csv``, ``sequential.md`` (table and PASS/MISS verdict), ``time_budget_sequential.png/.pdf`` and
``manifest.json`` to ``--out``. Errors are one line on stderr (:mod:`bench.common.cli`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from baselines.cohen import MEMORY_FORMATS

from .certify.batch_size import best_batch_size, best_memory_format
from .certify.machine import default_threads, machine_state, set_threads
from .common.cli import UsageError, batch_size_or_auto, checked, cli_exit, writable_dir
from .common.cli_help import DefaultsHelpFormatter
from .common.env import (
    EMBEDDED_MODELS,
    cpu_allocator,
    device_name,
    portable_path,
    resolve_device,
    runs_dir,
    tune_cpu_allocator,
)
from .common.provenance import git_commit, package_versions
from .data import DATASETS
from .data.selection import select_images
from .models import CheckpointError, LoadedModel, load_zoo
from .perf.sequential_compare import (
    DEFAULT_CAP,
    DEFAULT_FIXED_NS,
    DEFAULT_RADII,
    METHODS,
    CompareSettings,
    certify_examples,
    write_outputs,
)


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The parser and the parsed flags (unchecked)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.sequential", formatter_class=DefaultsHelpFormatter,
        description="Sequential (anytime-valid) versus fixed-n CERTIFY for cohen and fars-mc on sll+ce, on the "
                    "same images: samples and seconds per image and certified accuracy at each radius. Writes "
                    "sequential_examples.csv, sequential.csv, sequential.md (with the PASS/MISS verdict against "
                    "the goals), time_budget_sequential.png/.pdf and manifest.json.")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: runs/fashion-mnist/sequential)")
    parser.add_argument("--models", type=Path, default=EMBEDDED_MODELS, help="checkpoint folder (needs head-ce)")
    parser.add_argument("--n", type=int, default=DEFAULT_CAP,
                        help="the cap: sequential CERTIFY's most estimation samples, and the fixed n it is compared "
                             "with (added to --fixed-ns)")
    parser.add_argument("--fixed-ns", type=int, nargs="+", default=list(DEFAULT_FIXED_NS),
                        help="the fixed-n grid of the time-budget picture")
    parser.add_argument("--images", type=int, default=100,
                        help="images certified (the first of every --skip-th embedded test image)")
    parser.add_argument("--skip", type=int, default=10, help="take every skip-th image of the embedded test set")
    parser.add_argument("--sigma", type=float, default=0.25, help="noise level")
    parser.add_argument("--alpha", type=float, default=0.001, help="failure probability of each certificate")
    parser.add_argument("--n0", type=int, default=100, help="selection samples per image")
    parser.add_argument("--radii", type=float, nargs="+", default=list(DEFAULT_RADII),
                        help="target radii of sequential CERTIFY and the reported radii (l2, [0, 1] pixels)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                        help="methods compared")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="torch intra-op CPU threads (default: the CPUs this process may use)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--seed", type=int, default=0, help="global seed; with an image's index it fixes its noise")
    parser.add_argument("--batch-size", type=batch_size_or_auto, default=None,
                        help="cohen's noisy samples per forward pass: an integer, or 'auto' for the throughput-best "
                             "batch of a plain forward on this device (default: auto)")
    parser.add_argument("--cohen-memory-format", default="auto", choices=["auto", *MEMORY_FORMATS],
                        help="memory format of cohen's noisy batches: 'auto' takes the faster for a plain forward of "
                             "cohen's batch on this device, as bench.run does")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser, parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> CompareSettings:
    """The settings of the flags; :class:`UsageError` for a value out of range."""
    if not math.isfinite(args.sigma) or args.sigma <= 0:
        raise UsageError(f"--sigma must be a finite number > 0, got {args.sigma}")
    if not 0 < args.alpha < 1:
        raise UsageError(f"--alpha must be in (0, 1), got {args.alpha}")
    for flag, values in (("--n", [args.n]), ("--fixed-ns", args.fixed_ns), ("--images", [args.images]),
                         ("--skip", [args.skip]), ("--n0", [args.n0]), ("--threads", [args.threads])):
        if any(v < 1 for v in values):
            raise UsageError(f"{flag} must be >= 1, got {' '.join(map(str, values))}")
    if any(not math.isfinite(r) or r < 0 for r in args.radii):
        raise UsageError(f"--radii must be finite and >= 0, got {' '.join(map(str, args.radii))}")
    return CompareSettings(methods=tuple(dict.fromkeys(args.methods)), sigma=args.sigma, alpha=args.alpha,
                           n0=args.n0, cap=args.n, fixed_ns=tuple(args.fixed_ns),
                           radii=tuple(sorted(set(args.radii))), images=args.images, skip=args.skip,
                           seed=args.seed, batch_size=args.batch_size or 1000).check()


def main(argv: list[str] | None = None) -> Path:
    """Run the comparison, write the outputs; returns the output folder.

    Raises:
        SystemExit: (2) a flag out of range (``--n 0``, a ``--sigma`` that is not a finite number > 0, more
            ``--images`` than the embedded set holds at that ``--skip``, ...), an ``--out`` that is a file or
            cannot be written, an unknown ``--device``.
        bench.models.CheckpointError: models that cannot be loaded, or no head-ce among them.
    """
    parser, args = parse_args(argv)
    settings = checked(parser, lambda: check_args(args))
    # more images than the embedded set holds at that skip: a usage error, before the long work
    checked(parser, lambda: select_images("fashion-mnist", None, settings.images, settings.skip))
    device = checked(parser, lambda: resolve_device(args.device))
    model, fingerprint = load_models(args.models, device)   # before --out is created: a bad folder leaves nothing
    out = checked(parser, lambda: writable_dir(args.out or runs_dir("fashion-mnist", "sequential")))
    set_threads(args.threads)
    tune_cpu_allocator()   # no effect on results; no page-fault churn in the timings (bench.common.env)
    state = machine_state(args.threads)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    settings, search = choose_batch_size(settings, model, device, args.batch_size)
    settings = choose_memory_format(settings, model, device, args.cohen_memory_format)
    examples = certify_examples(settings, model, device, progress=not args.no_progress)
    name = device_name(device)
    paths = write_outputs(examples, settings, out, machine=state, device=name, on_cpu=device.type == "cpu")
    if search is not None:
        search.to_csv(out / "batch_search.csv", index=False)
    manifest = manifest_record(args, settings, out, state, name, device, fingerprint, started)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(paths["markdown"].read_text())
    return out


def load_models(models: Path, device: torch.device) -> tuple[LoadedModel, dict[str, str]]:
    """``sll+ce`` of the checkpoint folder ``models``, on ``device``, and the folder's fingerprint (for the
    manifest); :class:`CheckpointError` without a ``ce`` head."""
    zoo = load_zoo(models)
    if "ce" not in zoo.heads:
        raise CheckpointError(f"{models} has no head-ce checkpoint (the comparison certifies sll+ce)")
    return zoo.split_model("ce").to(device), zoo.fingerprint()


def choose_batch_size(settings: CompareSettings, model: LoadedModel, device: torch.device,
                      batch_size: int | None) -> tuple[CompareSettings, pd.DataFrame | None]:
    """``settings`` with cohen's batch size: ``batch_size`` when given, else the throughput-best batch of a plain
    forward of ``model``'s network on ``device`` (as ``python -m bench.scaling``), with the search's table."""
    if batch_size is not None:
        return dataclasses.replace(settings, batch_size=batch_size), None
    if "cohen" not in settings.methods:
        return settings, None
    size, search = best_batch_size(model.network, DATASETS["fashion-mnist"].input_shape, device,
                                   max_samples=max(settings.grid) + settings.n0)
    print(f"cohen batch size: {size} (throughput of a plain forward)", file=sys.stderr)
    return dataclasses.replace(settings, batch_size=size), search


def choose_memory_format(settings: CompareSettings, model: LoadedModel, device: torch.device,
                         memory_format: str) -> CompareSettings:
    """``settings`` with cohen's memory format: ``memory_format`` when not 'auto', else the faster one for a plain
    forward of cohen's batch of ``model``'s network on ``device`` (as ``python -m bench.run``)."""
    if memory_format != "auto" or "cohen" not in settings.methods:
        chosen = "contiguous" if memory_format == "auto" else memory_format
        return dataclasses.replace(settings, cohen_memory_format=chosen)
    best, seconds = best_memory_format(model.network, DATASETS["fashion-mnist"].input_shape,
                                       min(settings.batch_size, max(settings.grid) + settings.n0), device)
    timings = ", ".join(f"{name} {value * 1e3:.1f} ms" for name, value in seconds.items())
    print(f"cohen memory format: {best} (faster plain forward{': ' + timings if timings else ''})", file=sys.stderr)
    return dataclasses.replace(settings, cohen_memory_format=best)


def manifest_record(args: argparse.Namespace, settings: CompareSettings, out: Path, state: dict[str, Any], name: str,
                    device: torch.device, models: dict[str, Any], started: str) -> dict[str, Any]:
    """``manifest.json``: the flags, the settings run, the machine's state at the start, versions, git commit,
    device and the models' fingerprints."""
    flags = {k: (portable_path(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return {"command": "python -m bench.sequential", "flags": flags, "settings": settings.record(),
            "models_dir": portable_path(args.models), "models": models, "out": portable_path(out),
            "machine": state, "cpu_allocator": cpu_allocator(),
            "device": str(device), "device_name": name, "versions": package_versions(),
            "git_commit": git_commit(), "started": started,
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


if __name__ == "__main__":
    cli_exit(main)
