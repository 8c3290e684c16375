"""``python -m bench.run``: certify test images with every method, time them, and write the results.

Outputs in ``--out`` (default ``runs/<dataset>/<preset>/`` under the current directory, git-ignored):

* ``certify.tsv``: one row per (run, example) with Cohen's columns ``idx label predict radius correct
  time`` plus ``method model sigma samples seconds``; appended and flushed row by row, so an
  interrupted run loses nothing and re-running the same command resumes where it stopped;
* ``manifest.json``: configuration (models and images identified by content), package versions,
  device, git commit, start and end times;
* ``summary.csv``, ``summary.md``, ``certified_accuracy.csv`` and the plots (see :mod:`bench.report`);
* with the scaling stage, ``scaling.csv/png`` and the cost model; with the attack stage, the audit files.

Several processes or GPUs: ``torchrun --nproc-per-node N -m bench.run ...`` shards the examples across
the N ranks and merges their results into the same files, equal row for row to a one-process run
(see :mod:`bench.certify.distributed`). This module is a command-line leaf: nothing imports it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from smoothing.certificate import NonFiniteScoresError

from .audit.robustness import RobustnessSettings, run_robustness, soundness_failures
from .certify import distributed as dist_
from .certify.manifest import ResumeError, check_resumable, read_manifest, write_manifest
from .certify.results import merge_results, read_done, read_lines
from .certify.runner import certify_all, choose_batch_sizes, timing_markdown, timing_summary
from .certify.runs import METHODS, MonteCarloSettings, Run, build_runs
from .cli_help import DefaultsHelpFormatter
from .data import DATASETS
from .data.selection import images_fingerprint, select_images
from .env import EMBEDDED_MODELS, device_name, full_fp32, portable_path, resolve_device, runs_dir, tune_cpu_allocator
from .models import HEAD_KINDS, CheckpointError, ModelZoo, load_zoo
from .perf.scaling import scaling_stage
from .provenance import git_commit, package_versions
from .report import write_reports

PRESETS: dict[str, dict[str, Any]] = {
    # CPU-sized: the whole default run takes a few minutes on 2 cores.
    "quick": dict(n0=100, n=1000, alpha=0.001, num_images=100, skip=10, sigma=[0.12, 0.25, 0.5],
                  scaling_ns=[100, 1_000, 10_000]),
    # Cohen et al.'s settings: n0 = 100, n = 100,000, alpha = 0.001, 500 images.
    "paper": dict(n0=100, n=100_000, alpha=0.001, num_images=500, skip=2, sigma=[0.12, 0.25, 0.5],
                  scaling_ns=[100, 1_000, 10_000, 100_000]),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Certify test images with Cohen RS, FaRS (Monte Carlo and closed form) and the Lipschitz "
                    "margin on the same images; time each method (device synchronised) and write per-example "
                    "TSV, summary tables and plots. Re-running the same command resumes an interrupted run. "
                    "Launch with `torchrun --nproc-per-node N -m bench.run ...` to shard the images over N "
                    "processes (one GPU each when there are several); the merged results equal a one-process run.",
        formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                        help="quick: CPU-sized n and image count; paper: n0=100, n=100000, alpha=0.001, 500 images. "
                             "Flags below override the preset.")
    parser.add_argument("--dataset", default="fashion-mnist", choices=sorted(DATASETS),
                        help="fashion-mnist without --data-root uses the embedded 1,000-image evaluation subset "
                             "shipped with the repo (fashion-mnist-embedded names it explicitly); with --data-root, "
                             "the full test set found there")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="dataset folder for datasets other than the embedded one")
    parser.add_argument("--models", type=Path, default=None,
                        help="checkpoint folder written by `python -m bench.train` (default for fashion-mnist: the "
                             "shipped models in bench/embedded/models)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to run")
    parser.add_argument("--heads", nargs="+", default=list(HEAD_KINDS), choices=HEAD_KINDS, help="FaRS heads to use")
    parser.add_argument("--sigma", nargs="+", type=float, default=None,
                        help="noise levels of the Monte Carlo methods (input space for cohen, embedding space for "
                             "fars-mc); cohen on a CNN runs only at the sigma that CNN was trained with")
    parser.add_argument("--n", "--num-samples", dest="n", type=int, default=None,
                        help="Monte Carlo estimation samples per image (under torchrun write --num-samples: "
                             "torchrun reads --n as an abbreviation of its own flags)")
    parser.add_argument("--n0", type=int, default=None, help="Monte Carlo selection samples per image")
    parser.add_argument("--alpha", type=float, default=None, help="failure probability of each Monte Carlo certificate")
    parser.add_argument("--num-images", type=int, default=None, help="number of test images to certify")
    parser.add_argument("--skip", type=int, default=None, help="certify every SKIP-th image of the evaluation set")
    parser.add_argument("--scaling-ns", type=int, nargs="*", default=None,
                        help="after certifying, time cohen and fars-mc on sll+ce at these n (seconds per image "
                             "versus n, with fars-closed as the floor) and write scaling.csv/png; the flag with "
                             "no value skips the sweep")
    parser.add_argument("--scaling-images", type=int, default=2, help="images timed per point of the scaling sweep")
    parser.add_argument("--batch-size", default="auto",
                        help="noisy samples per forward pass: an integer for every Monte Carlo method, or 'auto': "
                             "cohen at the throughput-best batch of a plain forward of its network on this device "
                             "(searched), fars-mc at 65,536 with the projected sampler (linear heads) and 10,000 with "
                             "the direct one. Results do not depend on it (noise is per example)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...")
    parser.add_argument("--seed", type=int, default=0,
                        help="global seed; with an image's index it fixes that image's noise")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: runs/<dataset>/<preset> under the current directory, which git "
                             "ignores; the committed reference results are regenerated with `make results`)")
    parser.add_argument("--overwrite", action="store_true", help="discard earlier results in --out instead of resuming")
    parser.add_argument("--no-attack", action="store_true",
                        help="skip the attack stage (python -m bench.attack with its defaults: empirical robust "
                             "accuracy, soundness audit of every certificate, paper-criterion audit, smoothed-"
                             "classifier check, Lipschitz audit); run `python -m bench.attack --results OUT` for "
                             "other settings")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--dist-timeout-hours", type=float, default=48.0,
                        help="under torchrun: how long a rank that finished its shard waits for the others")
    _preset_defaults_in_help(parser)
    return parser


def _preset_defaults_in_help(parser: argparse.ArgumentParser) -> None:
    """Say in ``--help`` what each preset sets a preset-driven flag to."""
    for action in parser._actions:
        if action.dest in PRESETS["quick"]:
            values = "; ".join(f"{name}: {_show(preset[action.dest])}" for name, preset in PRESETS.items())
            action.help = f"{action.help} (default from --preset, {values})"


def _show(value: Any) -> str:
    return " ".join(f"{v:g}" for v in value) if isinstance(value, list) else f"{value:g}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    checks = [
        (args.n >= 1, "--n must be >= 1"), (args.n0 >= 1, "--n0 must be >= 1"),
        (args.n0 <= args.n, f"--n0 ({args.n0}) must not exceed --n ({args.n})"),
        (0 < args.alpha < 1, "--alpha must lie in (0, 1)"),
        (all(s > 0 and math.isfinite(s) for s in args.sigma), "--sigma values must be > 0"),
        (args.num_images >= 1, "--num-images must be >= 1"), (args.skip >= 1, "--skip must be >= 1"),
        (args.batch_size == "auto" or (args.batch_size.isdigit() and int(args.batch_size) >= 1),
         "--batch-size must be 'auto' or an integer >= 1"), (args.seed >= 0, "--seed must be >= 0"),
        (all(n >= 1 for n in args.scaling_ns), "--scaling-ns values must be >= 1"),
        (args.scaling_images >= 1, "--scaling-images must be >= 1"),
        (args.dist_timeout_hours > 0, "--dist-timeout-hours must be > 0"),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    if args.models is None:
        if args.dataset not in ("fashion-mnist", "fashion-mnist-embedded"):
            parser.error(f"--models is required for --dataset {args.dataset} (train with `python -m bench.train "
                         f"--dataset {args.dataset} --out DIR`)")
        args.models = EMBEDDED_MODELS
    if args.out is None:
        args.out = runs_dir(args.dataset, args.preset)
    return args
def run_config(args: argparse.Namespace, zoo: ModelZoo, images: torch.Tensor, labels: torch.Tensor,
               indices: torch.Tensor) -> dict[str, Any]:
    """What decides the results, and nothing machine-specific (a resumed run must match it exactly).

    Models are identified by the content hashes of their checkpoints, the images by a hash of their
    pixels, labels and dataset indices, so the same run resumes from any folder or clone.
    """
    keys = ("dataset", "methods", "heads", "sigma", "n", "n0", "alpha", "num_images", "skip", "seed")
    config = {k: getattr(args, k) for k in keys}
    config["models"] = zoo.fingerprint()
    config["images"] = images_fingerprint(images, labels, indices)
    return config


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    context = dist_.context_from_env()
    dist_.init(context, args.dist_timeout_hours)
    try:
        return _run(args, context)
    except (ResumeError, CheckpointError, NonFiniteScoresError) as err:
        raise SystemExit(f"error: {err}") from None
    finally:
        dist_.shutdown(context)


def _run(args: argparse.Namespace, context: dist_.Context) -> Path:
    """The stages of a run: inputs, output folder, runs, certification, then (rank 0) reports and audits."""
    process = {"cpu_allocator_tuned": tune_cpu_allocator(),  # no effect on results; steadier CPU timings
               "precision": full_fp32()}
    device = dist_.rank_device(resolve_device(args.device), context)
    zoo, images, labels, indices = _load_inputs(args, device)
    config = run_config(args, zoo, images, labels, indices)
    _prepare_output(args.out, config, args.overwrite, context)
    runs, mc, batch_sizes = _build_runs(args, zoo, tuple(images.shape[1:]), device, context)
    manifest = _start_manifest(args, config, zoo, runs, mc, batch_sizes, device, context, process, len(images))
    timings = _certify_stage(args, runs, images, labels, indices, context)
    if not context.is_main:
        return args.out
    tsv = args.out / "certify.tsv"
    total = merge_results(args.out, tsv, runs, indices)
    timing = timing_summary(timings)
    scaling = _scaling_stage(args, zoo, images, indices, manifest)
    _report_stage(args.out, tsv, scaling, timing, total)
    problems = _attack_stage(args, zoo, images, labels, indices, mc, manifest)
    _finish(args.out, manifest, timing, total)
    if problems:
        banner = "!" * 100
        print("\n".join([banner, "SOUNDNESS FAILURE: a certificate of a sound method was broken", *problems, banner]),
              file=sys.stderr)
        raise SystemExit(3)
    return args.out


def _load_inputs(args: argparse.Namespace, device: torch.device
                 ) -> tuple[ModelZoo, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The checkpoints of ``--models`` on ``device`` and the selected test images (images on ``device``)."""
    try:
        zoo = load_zoo(args.models).to(device)
    except CheckpointError as err:
        raise SystemExit(f"cannot load the models: {err}") from None
    try:
        images, labels, indices = select_images(args.dataset, args.data_root, args.num_images, args.skip)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    return zoo, images.to(device), labels, indices


def _prepare_output(out: Path, config: dict[str, Any], overwrite: bool, context: dist_.Context) -> None:
    """Create ``out``; with ``overwrite`` delete its results, else refuse results of another configuration."""
    out.mkdir(parents=True, exist_ok=True)
    tsv = out / "certify.tsv"
    if overwrite:
        dist_.barrier(context)  # every rank has parsed its flags before rank 0 deletes anything
        if context.is_main:
            tsv.unlink(missing_ok=True)
            for shard in dist_.shard_files(out):
                shard.unlink()
        return
    check_resumable(out, config, has_results=tsv.is_file() or bool(dist_.shard_files(out)))


def _build_runs(args: argparse.Namespace, zoo: ModelZoo, image_shape: tuple[int, ...], device: torch.device,
                context: dist_.Context) -> tuple[list[Run], MonteCarloSettings, dict[str, int]]:
    """Every run of the chosen methods, heads and sigmas, with its batch size set (returned by run key)."""
    default_batch = 1000 if args.batch_size == "auto" else int(args.batch_size)
    mc = MonteCarloSettings(n0=args.n0, n=args.n, alpha=args.alpha, batch_size=default_batch, seed=args.seed)
    runs = build_runs(zoo, tuple(args.methods), tuple(args.sigma), mc, tuple(args.heads))
    if not runs:
        raise SystemExit("no run matches the chosen --methods/--heads/--sigma and the available models")
    batch_sizes = choose_batch_sizes(runs, args.batch_size, image_shape, device, args.n0 + args.n,
                                     progress=not args.no_progress and context.is_main)
    return runs, mc, batch_sizes


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _start_manifest(args: argparse.Namespace, config: dict[str, Any], zoo: ModelZoo, runs: list[Run],
                    mc: MonteCarloSettings, batch_sizes: dict[str, int], device: torch.device,
                    context: dist_.Context, process: dict[str, Any], images: int) -> dict[str, Any]:
    """The manifest as the run starts (rank 0 writes it; ``first_started`` survives resumes)."""
    manifest = {
        "config": config, "preset": args.preset, "monte_carlo": asdict(mc), "device": str(device),
        "device_name": device_name(device), "torch_threads": torch.get_num_threads(),
        "processes": context.world_size, "batch_sizes": batch_sizes, "precision": process["precision"],
        "cpu_allocator_tuned": process["cpu_allocator_tuned"],
        "versions": package_versions(), "git_commit": git_commit(),
        "models_dir": portable_path(args.models),
        "data_root": None if args.data_root is None else portable_path(args.data_root),
        "models": zoo.describe(), "backbone_lipschitz": zoo.backbone_meta["lipschitz"], "runs": [r.key for r in runs],
        "images": images, "started": _now(),
    }
    if context.is_main:
        previous = None if args.overwrite else read_manifest(args.out)
        if previous is not None:
            manifest["first_started"] = previous.get("first_started", previous.get("started"))
        write_manifest(args.out, manifest)
    return manifest


def _certify_stage(args: argparse.Namespace, runs: list[Run], images: torch.Tensor, labels: torch.Tensor,
                   indices: torch.Tensor, context: dist_.Context) -> list[Any]:
    """Certify every pending (run, image) pair; returns every rank's timing."""
    out, tsv = args.out, args.out / "certify.tsv"
    # Every rank must see the same finished rows before any rank appends: repair, barrier, read, barrier.
    target = dist_.shard_path(out, context.rank) if context.distributed else tsv
    dist_.barrier(context)
    dist_.check_shared_folder(out, context)
    read_lines(target, repair=True)
    if context.is_main:
        read_lines(tsv, repair=True)
    dist_.barrier(context)
    done = read_done(tsv, *[s for s in dist_.shard_files(out) if s != tsv])
    dist_.barrier(context)
    mine = certify_all(runs, images, labels, indices, target, progress=not args.no_progress, done=done,
                       context=context)
    return dist_.all_gather(context, mine)


def _scaling_stage(args: argparse.Namespace, zoo: ModelZoo, images: torch.Tensor, indices: torch.Tensor,
                   manifest: dict[str, Any]) -> Any:
    """Seconds per image versus n on ``sll+ce`` and the cost model (skipped without ``--scaling-ns`` or a ce head)."""
    if not args.scaling_ns or "ce" not in zoo.heads:
        return None
    k = args.scaling_images
    table, record = scaling_stage(zoo, images[:k], indices[:k], args.scaling_ns, args.out, n0=args.n0,
                                  alpha=args.alpha, seed=args.seed,
                                  batch_size=None if args.batch_size == "auto" else int(args.batch_size),
                                  progress=not args.no_progress)
    manifest["scaling"] = record
    return table


def _report_stage(out: Path, tsv: Path, scaling: Any, timing: dict[str, Any], total: int) -> None:
    """summary.csv/md, certified_accuracy.csv and the plots, with the run's timing appended to summary.md."""
    reports = write_reports(tsv, out, scaling=scaling)
    summary = out / "summary.md"
    if summary.is_file():
        summary.write_text(summary.read_text().rstrip("\n") + "\n" + timing_markdown(timing))
    print(f"wrote {timing['rows']} new rows ({total} in all) to {tsv}; reports: "
          f"{', '.join(p.name for p in reports.values())}", file=sys.stderr)


def _attack_stage(args: argparse.Namespace, zoo: ModelZoo, images: torch.Tensor, labels: torch.Tensor,
                  indices: torch.Tensor, mc: MonteCarloSettings, manifest: dict[str, Any]) -> list[str]:
    """The attack stage (:func:`bench.audit.robustness.run_robustness`); returns the soundness failures."""
    if args.no_attack:
        return []
    settings = RobustnessSettings(seed=args.seed)
    run_robustness(zoo, images, labels, indices, args.out / "certify.tsv", args.out, mc, settings,
                   progress=not args.no_progress, verbose=False)
    manifest["attack"] = settings.describe()
    return soundness_failures(args.out)


def _finish(out: Path, manifest: dict[str, Any], timing: dict[str, Any], total: int) -> None:
    """Complete the manifest and print the summary."""
    manifest["finished"] = _now()
    manifest["rows_written_by_last_invocation"] = timing["rows"]
    manifest["rows_total"] = total
    manifest["timing"] = timing
    write_manifest(out, manifest)
    summary = out / "summary.md"
    if summary.is_file():
        print(summary.read_text())


if __name__ == "__main__":
    main()
