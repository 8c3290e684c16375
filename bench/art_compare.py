"""``python -m bench.art_compare``: our Cohen RS side by side with IBM ART's on the same network.

Command-line leaf over :mod:`bench.perf.peers` (which says how ART's CERTIFY maps onto ours). Errors
are one line on stderr (:mod:`bench.common.cli`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from baselines.cohen import MEMORY_FORMATS

from .certify.batch_size import best_batch_size, best_memory_format
from .certify.machine import set_threads
from .common.cli import checked, cli_exit, writable_dir
from .common.cli_help import DefaultsHelpFormatter
from .common.env import EMBEDDED_MODELS, cpu_allocator, device_name, resolve_device, runs_dir, tune_cpu_allocator
from .common.provenance import git_commit, package_versions
from .data import load_embedded
from .models import CheckpointError, load_zoo
from .perf.peers import art_smoothing_class, art_version, compare, write


def main(argv: list[str] | None = None) -> Path:
    """Certify with both implementations and write the comparison; returns the output folder.

    Raises:
        SystemExit: (2) a flag out of range, an --out that is a file or cannot be written; (1) IBM ART is not
            installed; an unknown --device.
        bench.models.CheckpointError: models that cannot be loaded, or no head-ce among them.
    """
    parser = argparse.ArgumentParser(
        prog="python -m bench.art_compare", formatter_class=DefaultsHelpFormatter,
        description="Certify the same images with our CohenRS and IBM ART's PyTorchRandomizedSmoothing on sll+ce "
                    "(same sigma, n0, n, alpha); compare radii (KS test), predictions and seconds per image.")
    parser.add_argument("--models", type=Path, default=EMBEDDED_MODELS, help="checkpoint folder")
    parser.add_argument("--images", type=int, default=20, help="images certified by both (K)")
    parser.add_argument("--skip", type=int, default=10, help="take every SKIP-th image of the evaluation set")
    parser.add_argument("--sigma", type=float, default=0.25, help="noise level (pixel space)")
    parser.add_argument("--n0", type=int, default=100, help="selection samples (ART's sample_size)")
    parser.add_argument("--n", type=int, default=10_000, help="estimation samples (ART's certify(n=...))")
    parser.add_argument("--alpha", type=float, default=0.001, help="failure probability")
    parser.add_argument("--batch-size", default="auto",
                        help="noisy samples per forward pass, the same for both: an integer, or 'auto' for the "
                             "throughput-best batch of a plain forward on this device "
                             "(bench.certify.batch_size.best_batch_size)")
    parser.add_argument("--cohen-memory-format", default="auto", choices=["auto", *MEMORY_FORMATS],
                        help="memory format of our noisy batches: 'auto' takes the faster for a plain forward of the "
                             "batch on this device, as bench.run does (ART's batches stay contiguous)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--seed", type=int, default=0, help="our noise seed, and NumPy's global seed for ART")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: runs/fashion-mnist/art; the committed reference is "
                             "results/fashion-mnist/art)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.batch_size != "auto" and (not str(args.batch_size).isdigit() or int(args.batch_size) < 1):
        parser.error("--batch-size must be an integer >= 1 or 'auto'")
    if not math.isfinite(args.sigma) or args.sigma <= 0:
        parser.error(f"--sigma must be a finite number > 0, got {args.sigma}")
    if min(args.images, args.skip, args.n0, args.n) < 1 or not 0 < args.alpha < 1:
        parser.error("--images, --skip, --n0, --n must be >= 1, --alpha in (0, 1)")
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    if args.out is None:
        args.out = runs_dir("fashion-mnist", "art")
    args.out = checked(parser, lambda: writable_dir(args.out))
    device = checked(parser, lambda: resolve_device(args.device))
    if args.threads:   # at most a few per CPU (far more crashes torch's thread pool)
        checked(parser, lambda: set_threads(args.threads))
    allocator_tuned = tune_cpu_allocator()  # page-fault churn otherwise dominates CPU timings (both sides alike)
    art_smoothing_class()   # ARTMissing (how to install it) before anything else
    zoo = load_zoo(args.models)
    if "ce" not in zoo.heads:
        raise CheckpointError(f"{args.models} has no head-ce checkpoint (the comparison certifies sll+ce)")
    network = zoo.split_model("ce").to(device).network
    images, labels, indices = load_embedded()
    pick = torch.arange(0, len(images), args.skip)[:args.images]
    if args.batch_size == "auto":
        batch_size, _ = best_batch_size(network, tuple(images.shape[1:]), device, max_samples=args.n + args.n0)
    else:
        batch_size = int(args.batch_size)
    memory_format = args.cohen_memory_format
    if memory_format == "auto":
        memory_format, _ = best_memory_format(network, tuple(images.shape[1:]), min(batch_size, args.n + args.n0),
                                              device)
    frame, summary = compare(network, images[pick].to(device), labels[pick], indices[pick], args.sigma, args.n0,
                             args.n, args.alpha, batch_size, args.seed, progress=not args.no_progress,
                             memory_format=memory_format)
    name = device_name(device)
    summary.update(device=str(device), device_name=name, art_version=art_version(),
                   torch_threads=torch.get_num_threads(),
                   allocator_tuned=allocator_tuned, cpu_allocator=cpu_allocator(),
                   versions=package_versions(), git_commit=git_commit())
    write(frame, summary, args.out, name)
    print((args.out / "art_comparison.md").read_text())
    return args.out


if __name__ == "__main__":
    cli_exit(main)
