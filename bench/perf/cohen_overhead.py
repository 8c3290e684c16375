"""``python -m bench.perf.cohen_overhead``: what ``bench.run``'s Cohen costs per sample against plain forwards.

The harness's Cohen RS is only as credible as it is fast. This command times, side by side and alternating,

* ``bench.run --config FILE`` (a subprocess, ``--threads`` as given) certifying ``--images`` images with
  Cohen RS at ``--n0`` + ``--n`` samples, on an SLL network of the size sweep
  (:func:`bench.perf.size_sweep.build_network`, random weights from ``--seed``) loaded as a ``torch``-format
  model from a generated experiment file (:func:`sll_network` is its factory) and random CIFAR-shaped
  images: per sample, the ``seconds`` (wall) and ``cpu_seconds`` (process CPU time) columns of its
  ``certify.tsv`` divided by the samples of each row;
* a plain fp32 loop of the same batched forwards in this process (inference mode, eval mode, the weights
  declared fixed as in a certify call so that the SLL layers' constants are computed once, the tuned
  allocator, ``--threads``): per image, one forward of ``n0`` samples and ``n`` samples in batches of the
  size ``bench.run`` chose (its manifest's ``batch_sizes``), on pre-drawn noisy inputs (drawing the noise is
  not in the reference), in the default layout and in ``channels_last`` (model and inputs).

It prints one line per round and the medians: seconds per sample, wall and CPU, and the ratios of
``bench.run`` to each plain loop. Nothing is written outside a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from smoothing.checks import fixed_weights

from ..common.cli import UsageError, checked, cli_exit
from ..common.cli_help import DefaultsHelpFormatter
from ..common.env import tune_cpu_allocator
from ..data.cifar import write_random_cifar10
from .size_sweep import build_network, named_spec

#: the sizes of the size sweep this command builds at CIFAR-10's 3 x 32 x 32 (``default`` is a Fashion-MNIST net)
SIZES = ("small", "medium", "large", "xlarge")


def sll_network(size: str = "small", seed: int = 0) -> nn.Module:
    """The size sweep's SLL network ``size`` (backbone then linear head, random weights from ``seed``) as one
    module: the factory of the ``torch``-format model of the generated experiment file."""
    net = build_network(named_spec(size, seed), torch.device("cpu"), images=0)
    return nn.Sequential(net.backbone, net.head)


def experiment_file(folder: Path, size: str, seed: int, images: int, n0: int, n: int, sigma: float) -> Path:
    """An experiment file certifying the first ``images`` images with Cohen RS on :func:`sll_network`."""
    write_random_cifar10(folder / "data", images, seed)
    path = folder / "experiment.toml"
    path.write_text(f"""dataset = "cifar10"
data_root = "data"
methods = ["cohen"]
sigma = [{sigma!r}]
n0 = {n0}
n = {n}
num_images = {images}
skip = 1
scaling_ns = []

[models.sll-{size}]
format = "torch"
factory = "bench.perf.cohen_overhead:sll_network"
kwargs = {{size = "{size}", seed = {seed}}}
input_shape = [3, 32, 32]
num_classes = 10
""")
    return path


class BenchRunError(RuntimeError):
    """The ``bench.run`` subprocess failed or wrote no usable timing (its last line of stderr is the message)."""


@dataclass(frozen=True)
class PerSample:
    """Seconds per sample of one measurement: wall and process CPU time."""

    wall: float
    cpu: float


def run_bench(config: Path, out: Path, threads: int, batch_size: str) -> tuple[PerSample, int]:
    """``python -m bench.run --config config`` into ``out`` (overwritten): Cohen's seconds per sample from its
    ``certify.tsv`` and the batch size it used (from its manifest)."""
    command = [sys.executable, "-m", "bench.run", "--config", str(config), "--out", str(out), "--overwrite",
               "--no-attack", "--no-progress", "--threads", str(threads), "--batch-size", batch_size]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BenchRunError(f"bench.run failed with exit status {done.returncode}: {tail}")
    rows = pd.read_csv(out / "certify.tsv", sep="\t")
    rows = rows[rows["method"] == "cohen"]
    samples = float(rows["samples"].sum())
    manifest = json.loads((out / "manifest.json").read_text())
    sizes = [int(v) for v in _leaves(manifest.get("batch_sizes"))]
    if not sizes:
        raise BenchRunError(f"{out / 'manifest.json'} records no batch size")
    return PerSample(float(rows["seconds"].sum()) / samples, float(rows["cpu_seconds"].sum()) / samples), sizes[0]


def _leaves(value: object) -> list[float]:
    """The numbers in a nested manifest entry (dicts and lists), in order."""
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [float(value)] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def batch_sizes(n0: int, n: int, batch_size: int) -> list[int]:
    """The forward batches of one image's CERTIFY: ``n0`` selection samples, then ``n`` estimation samples, each
    stage cut into batches of at most ``batch_size`` (as :func:`smoothing.noise.plan_batches` cuts one example)."""
    return [min(batch_size, total - at) for total in (n0, n) for at in range(0, total, batch_size)]


def plain_loop(model: nn.Module, inputs: list[torch.Tensor], images: int) -> Callable[[], PerSample]:
    """A function timing ``images`` times the forwards of ``inputs`` (one image's batches): seconds per sample."""
    samples = images * sum(len(x) for x in inputs)

    def run() -> PerSample:
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            for _ in range(images):
                with fixed_weights():   # one certify call: the weights' values compared once
                    for x in inputs:
                        model(x)
        return PerSample((time.perf_counter() - wall) / samples, (time.process_time() - cpu) / samples)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.perf.cohen_overhead", formatter_class=DefaultsHelpFormatter,
        description="Cohen RS through python -m bench.run --config (a torch-format SLL network of the size sweep) "
                    "against a plain fp32 loop of the same batched forwards (default layout and channels_last), "
                    "alternating, with wall and process CPU time per sample.")
    parser.add_argument("--size", choices=SIZES, default="small", help="the size sweep's SLL layout (3x32x32 inputs)")
    parser.add_argument("--images", type=int, default=2, help="images certified per bench.run round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (bench.run, then the plain loops)")
    parser.add_argument("--n0", type=int, default=100, help="Cohen's selection samples per image")
    parser.add_argument("--n", type=int, default=1000, help="Cohen's estimation samples per image")
    parser.add_argument("--sigma", type=float, default=0.25, help="Cohen's noise level")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, of bench.run and of the plain loops")
    parser.add_argument("--batch-size", default="auto", help="bench.run's --batch-size (the plain loops use the same)")
    parser.add_argument("--seed", type=int, default=0, help="weights and images")
    return parser


def check_args(args: argparse.Namespace) -> None:
    for flag, value in (("--images", args.images), ("--rounds", args.rounds), ("--n0", args.n0), ("--n", args.n),
                        ("--threads", args.threads)):
        if value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    if not (math.isfinite(args.sigma) and args.sigma > 0):
        raise UsageError(f"--sigma must be a finite number > 0, got {args.sigma}")
    if args.batch_size != "auto" and not (args.batch_size.isdigit() and int(args.batch_size) >= 1):
        raise UsageError(f"--batch-size must be 'auto' or an integer >= 1, got {args.batch_size!r}")


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = build_parser()
    args = parser.parse_args(argv)
    checked(parser, lambda: check_args(args))
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    model = sll_network(args.size, args.seed).eval()
    fast = sll_network(args.size, args.seed).eval().to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(args.seed)
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="cohen-overhead-") as tmp:
        config = experiment_file(Path(tmp), args.size, args.seed, args.images, args.n0, args.n, args.sigma)
        loops: dict[str, Callable[[], PerSample]] = {}
        for r in range(args.rounds):
            bench, size = run_bench(config, Path(tmp) / "run", args.threads, args.batch_size)
            if not loops:
                image = torch.rand(1, 3, 32, 32, generator=generator)
                inputs = [image + args.sigma * torch.randn(b, 3, 32, 32, generator=generator)
                          for b in batch_sizes(args.n0, args.n, size)]
                loops = {"plain": plain_loop(model, inputs, args.images),
                         "channels_last": plain_loop(fast, [x.contiguous(memory_format=torch.channels_last)
                                                            for x in inputs], args.images)}
                for loop in loops.values():   # warm-up (the memo of the SLL constants, the kernels)
                    loop()
            measured = {"bench.run": bench, **{name: loop() for name, loop in loops.items()}}
            row: dict[str, float] = {"round": r, "batch_size": size}
            for name, per in measured.items():
                row[f"{name}_wall_ms"], row[f"{name}_cpu_ms"] = per.wall * 1e3, per.cpu * 1e3
            rows.append(row)
            print("round {round}: batch {batch_size}; ms per sample (wall / cpu): ".format(**row)
                  + "; ".join(f"{name} {row[f'{name}_wall_ms']:.3f} / {row[f'{name}_cpu_ms']:.3f}"
                              for name in measured), file=sys.stderr)
    frame = pd.DataFrame(rows)
    summary = {column: float(frame[column].median()) for column in frame.columns if column.endswith("_ms")}
    for kind in ("wall", "cpu"):
        for ref in ("plain", "channels_last"):
            summary[f"ratio_{kind}_to_{ref}"] = summary[f"bench.run_{kind}_ms"] / summary[f"{ref}_{kind}_ms"]
    print(f"median over {args.rounds} rounds, SLL {args.size}, Cohen n0 = {args.n0}, n = {args.n}, "
          f"{args.threads} thread(s):")
    for name in ("bench.run", "plain", "channels_last"):
        print(f"  {name:14s} {summary[f'{name}_wall_ms']:.3f} ms wall, {summary[f'{name}_cpu_ms']:.3f} ms CPU "
              "per sample")
    for reference in ("plain", "channels_last"):
        print(f"  bench.run / {reference}: {summary[f'ratio_wall_to_{reference}']:.3f}x wall, "
              f"{summary[f'ratio_cpu_to_{reference}']:.3f}x CPU")
    return summary


if __name__ == "__main__":
    cli_exit(main)
