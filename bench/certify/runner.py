"""``python -m bench.run``: certify test images with every method, time them, and write the results.

Outputs in ``--out`` (default ``results/<dataset>/<preset>/``):

* ``certify.tsv``: one row per (run, example) with Cohen's columns ``idx label predict radius correct
  time`` plus ``method model sigma samples seconds``; appended and flushed row by row, so an
  interrupted run loses nothing and re-running the same command resumes where it stopped;
* ``manifest.json``: configuration, package versions, device, git commit, start and end times;
* ``summary.csv``, ``summary.md``, ``certified_accuracy.csv`` and the plots (see :mod:`bench.report`).

Several processes or GPUs: ``torchrun --nproc-per-node N -m bench.run ...`` shards the examples across
the N ranks and merges their results into the same files, equal row for row to a one-process run
(see :mod:`bench.distributed`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import itertools
import math
import os
import platform
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import checkpoints as ckpt
from . import distributed as dist_
from .datasets import DATASETS, load_dataset, load_embedded
from .models import HEAD_KINDS
from .train import DEFAULT_DIR, resolve_device
from .zoo import METHODS, MonteCarloSettings, Run, build_runs, load_zoo

REPO_ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("idx", "label", "predict", "radius", "correct", "time", "method", "model", "sigma", "samples", "seconds")

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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                        help="quick: CPU-sized n and image count; paper: n0=100, n=100000, alpha=0.001, 500 images. "
                             "Flags below override the preset.")
    parser.add_argument("--dataset", default="fashion-mnist", choices=sorted(DATASETS),
                        help="fashion-mnist uses the embedded 1,000-image evaluation subset shipped with the repo")
    parser.add_argument("--data-root", type=Path, default=None, help="dataset folder for datasets other than the embedded one")
    parser.add_argument("--models", type=Path, default=None,
                        help=f"checkpoint folder written by `python -m bench.train` (default for fashion-mnist: {DEFAULT_DIR})")
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
                             "versus n, with fars-closed as the floor) and write scaling.csv/png; none: skip")
    parser.add_argument("--scaling-images", type=int, default=2, help="images timed per point of the scaling sweep")
    parser.add_argument("--batch-size", default="auto",
                        help="noisy samples per forward pass: an integer for every Monte Carlo method, or 'auto': "
                             "cohen at the throughput-best batch of a plain forward of its network on this device "
                             "(searched), fars-mc at 65,536 with the projected sampler (linear heads) and 10,000 with the "
                             "direct one. Results do not depend on it (noise is per example)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...")
    parser.add_argument("--seed", type=int, default=0, help="global seed; with an image's index it fixes that image's noise")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: results/<dataset>/<preset>)")
    parser.add_argument("--overwrite", action="store_true", help="discard earlier results in --out instead of resuming")
    parser.add_argument("--no-attack", action="store_true",
                        help="skip the attack stage (python -m bench.attack with its defaults: empirical robust "
                             "accuracy, soundness audit of every certificate, paper-criterion audit, smoothed-classifier "
                             "check, Lipschitz audit); run `python -m bench.attack --results OUT` for other settings")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--dist-timeout-hours", type=float, default=48.0,
                        help="under torchrun: how long a rank that finished its shard waits for the others")
    return parser


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
        args.models = DEFAULT_DIR
    if args.out is None:
        args.out = REPO_ROOT / "results" / args.dataset / args.preset
    return args


def load_images(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images [N, C, H, W] in [0, 1], labels [N], dataset indices [N]) of the selected test images."""
    if args.dataset == "fashion-mnist-embedded" or (args.dataset == "fashion-mnist" and args.data_root is None):
        images, labels, indices = load_embedded()
    else:
        dataset = load_dataset(args.dataset, "test", data_root=args.data_root)
        wanted = list(range(0, len(dataset), args.skip))[:args.num_images]
        items = [dataset[i] for i in wanted]
        return (torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items]),
                torch.tensor(wanted, dtype=torch.int64))
    pick = torch.arange(0, len(images), args.skip)[:args.num_images]
    return images[pick], labels[pick], indices[pick]


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """What decides the results (a resumed run must match it exactly)."""
    keys = ("dataset", "methods", "heads", "sigma", "n", "n0", "alpha", "num_images", "skip", "seed")
    config = {k: getattr(args, k) for k in keys}
    config["models"] = str(args.models)
    config["data_root"] = None if args.data_root is None else str(args.data_root)
    return config


def row_key(line: str) -> tuple[str, int]:
    """(run key, dataset index) of a data line of the results TSV."""
    f = dict(zip(COLUMNS, line.split("\t")))
    sigma = float(f["sigma"]) if f["sigma"] not in ("", "nan") else math.nan
    return f"{f['method']}|{f['model']}|{'-' if math.isnan(sigma) else f'{sigma:g}'}", int(f["idx"])


def read_lines(tsv: Path, repair: bool = False) -> list[str]:
    """The complete data lines of a results TSV (none if it does not exist).

    A partial last line (a crash in the middle of a write) is ignored; with ``repair`` it is also cut
    from the file, which only the process that appends to ``tsv`` may do.
    """
    if not tsv.is_file():
        return []
    text = tsv.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        if repair:
            tsv.write_text(text)
    lines = text.splitlines()
    if not lines or tuple(lines[0].split("\t")) != COLUMNS:
        raise SystemExit(f"{tsv} is not a results file of this harness (unexpected header); use --overwrite or --out")
    return lines[1:]


def read_done(tsv: Path, *more: Path) -> set[tuple[str, int]]:
    """(run key, idx) of the complete rows in ``tsv`` and the files ``more`` (read only); repairs ``tsv``."""
    lines = read_lines(tsv, repair=True)
    for path in more:
        lines += read_lines(path)
    return {row_key(line) for line in lines}


def format_row(run: Run, idx: int, label: int, prediction: int, radius: float, seconds: float, samples: int) -> str:
    correct = int(prediction == label)
    sigma = "" if math.isnan(run.sigma) else f"{run.sigma:g}"
    values = (idx, label, prediction, f"{radius:.6g}", correct, str(_dt.timedelta(seconds=seconds)), run.method,
              run.model, sigma, samples, f"{seconds:.6g}")
    return "\t".join(str(v) for v in values) + "\n"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


@dataclass
class ShardTiming:
    """What one process certified in one invocation and how long it took."""

    rank: int
    device: str
    rows: int = 0
    seconds: float = 0.0      # sum of the per-example certify times
    wall: float = 0.0         # wall-clock time of the whole certification stage


def certify_all(runs: list[Run], images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, tsv: Path,
                progress: bool = True, done: set[tuple[str, int]] | None = None,
                context: dist_.Context = dist_.Context()) -> ShardTiming:
    """Certify every (run, image) pair not in ``done`` (default: the rows already in ``tsv``), appending rows to ``tsv``.

    In a multi-process run every rank passes the same ``done`` and takes its round-robin share of the
    pending pairs; pairs are processed run by run, in image order, as a one-process run does.
    """
    if done is None:
        done = read_done(tsv)
    pending = [(r, i) for r, run in enumerate(runs) for i in range(len(images))
               if (run.key, int(indices[i])) not in done]
    mine = dist_.my_share(pending, context)
    timing = ShardTiming(context.rank, str(images.device))
    abort_after = _test_abort_after(context)
    start = time.perf_counter()
    tag = f"[rank {context.rank}/{context.world_size}] " if context.distributed else ""
    new_file = not tsv.is_file()
    tsv.parent.mkdir(parents=True, exist_ok=True)
    with open(tsv, "a", encoding="utf-8") as handle:
        if new_file:
            handle.write("\t".join(COLUMNS) + "\n")
            handle.flush()
        for r, group in itertools.groupby(mine, key=lambda item: item[0]):
            run, positions = runs[r], [i for _, i in group]
            # warm-up call (not recorded): allocator, kernels and caches, so the first timed image is typical
            run.certifier.certify(images[:1], indices=indices[:1])
            desc = tag + f"{run.method} {run.model}" + ("" if math.isnan(run.sigma) else f" σ={run.sigma:g}")
            for i in tqdm(positions, desc=desc, disable=not progress or not context.is_main, file=sys.stderr, leave=True):
                cert = run.certifier.certify(images[i:i + 1], indices=indices[i:i + 1])
                handle.write(format_row(run, int(indices[i]), int(labels[i]), int(cert.prediction[0]),
                                        float(cert.radius[0]), cert.seconds, cert.samples))
                handle.flush()
                os.fsync(handle.fileno())
                timing.rows += 1
                timing.seconds += cert.seconds
                if abort_after is not None and timing.rows >= abort_after:
                    os.kill(os.getpid(), signal.SIGKILL)  # fault injection for the resume tests
    timing.wall = time.perf_counter() - start
    return timing


def _test_abort_after(context: dist_.Context) -> int | None:
    """Fault injection for tests: ``BENCH_RUN_KILL_RANK=R:K`` kills rank R (SIGKILL) after K new rows."""
    spec = os.environ.get("BENCH_RUN_KILL_RANK")
    if not spec:
        return None
    rank, rows = (int(v) for v in spec.split(":"))
    return rows if rank == context.rank else None


def merge_results(out: Path, tsv: Path, runs: list[Run], indices: torch.Tensor) -> int:
    """Merge ``tsv`` and every shard file into ``tsv`` in one-process order (atomic); removes the shards.

    Returns the number of data rows of the merged file.
    """
    shards = dist_.shard_files(out)
    order = {(run.key, int(idx)): r * len(indices) + p for r, run in enumerate(runs) for p, idx in enumerate(indices)}
    header = "\t".join(COLUMNS)
    lines = dist_.merge_rows(header, [read_lines(tsv)] + [read_lines(s) for s in shards], order, row_key)
    tmp = tsv.with_name(tsv.name + ".merging")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write("\n".join([header, *lines]) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, tsv)
    for shard in shards:
        shard.unlink()
    folder = out / dist_.SHARD_DIR
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return len(lines)


def timing_summary(timings: list[ShardTiming]) -> dict[str, Any]:
    """Wall time of the certification stage versus the per-example seconds it added up to."""
    wall = max(t.wall for t in timings)
    seconds = sum(t.seconds for t in timings)
    return {
        "processes": len(timings), "rows": sum(t.rows for t in timings), "wall_seconds": wall,
        "per_example_seconds_sum": seconds,
        # how much faster than certifying the same rows one after the other in one process, if each row
        # took as long as it did here (ranks sharing a CPU slow each other down, so on CPUs compare with
        # the wall time of a real one-process run, also in the manifest)
        "speedup_vs_sequential": seconds / wall if wall > 0 else math.nan,
        "ranks": [asdict(t) for t in timings],
    }


def timing_markdown(summary: dict[str, Any]) -> str:
    lines = ["", "## Run timing (this invocation)", "",
             f"- processes: {summary['processes']}; rows certified: {summary['rows']}",
             f"- wall time of the certification stage: {summary['wall_seconds']:.2f} s",
             f"- sum of per-example certify times: {summary['per_example_seconds_sum']:.2f} s "
             f"(the `seconds` column; what one process would spend at these per-example speeds)"]
    if summary["processes"] > 1:
        lines += [f"- speedup of {summary['processes']} processes over one process certifying the same rows at the "
                  f"per-example speeds measured here: {summary['speedup_vs_sequential']:.2f}x (wall time includes "
                  "warm-up and waiting for the slowest rank). With a GPU per rank this is the speedup over one "
                  "process; ranks that share CPU cores slow each other down, so there compare the wall time with a "
                  "one-process run's"]
        lines += ["", "| rank | device | rows | per-example seconds (sum) | wall seconds |", "|---:|---|---:|---:|---:|"]
        lines += [f"| {t['rank']} | {t['device']} | {t['rows']} | {t['seconds']:.2f} | {t['wall']:.2f} |"
                  for t in summary["ranks"]]
    return "\n".join(lines) + "\n"


def full_fp32() -> dict[str, bool]:
    """Certify in true fp32: no TF32 in CUDA matmuls and convolutions (PyTorch enables it for cuDNN convs).

    Returns the settings, for the manifest. Lower precision stays an explicit opt-in (``CohenRS(precision=)``).
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return {"cuda_matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32}


def choose_batch_sizes(runs: list[Run], setting: str, image_shape: tuple[int, ...], device: torch.device,
                       max_samples: int, progress: bool = True) -> dict[str, int]:
    """Batch size of every Monte Carlo run (``setting``: an integer, or 'auto'); sets it on the certifier.

    'auto': cohen at the throughput-best batch of a plain forward of its network (searched once per
    network on this device), fars-mc by its sampler (:func:`bench.scaling.fars_batch_size`). Certificates do not
    depend on the batch size (an example's noise is fixed by the seed and its index).
    """
    from .scaling import best_batch_size, fars_batch_size

    chosen: dict[str, int] = {}
    searched: dict[int, int] = {}
    for run in runs:
        certifier = run.certifier
        if not hasattr(certifier, "batch_size"):
            continue
        if setting != "auto":
            size = int(setting)
        elif run.method == "cohen":
            model = certifier.model
            if id(model) not in searched:
                searched[id(model)], _ = best_batch_size(model, image_shape, device, max_samples=max_samples)
                if progress:
                    print(f"cohen batch size for {run.model}: {searched[id(model)]} (throughput-best plain forward)",
                          file=sys.stderr)
            size = searched[id(model)]
        else:
            size = fars_batch_size(certifier)
        certifier.batch_size = size
        chosen[run.key] = size
    return chosen


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    context = dist_.context_from_env()
    dist_.init(context, args.dist_timeout_hours)
    try:
        return _main(args, context)
    finally:
        dist_.shutdown(context)


def _main(args: argparse.Namespace, context: dist_.Context) -> Path:
    from . import cost_model as cm

    allocator_tuned = cm.tune_cpu_allocator()  # no effect on results; steadier CPU timings
    precision = full_fp32()
    device = dist_.rank_device(resolve_device(args.device), context)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    tsv, manifest_path = out / "certify.tsv", out / "manifest.json"
    config = run_config(args)
    if args.overwrite:
        dist_.barrier(context)  # every rank has parsed its flags before rank 0 deletes anything
        if context.is_main:
            tsv.unlink(missing_ok=True)
            for shard in dist_.shard_files(out):
                shard.unlink()
    elif manifest_path.is_file() and (tsv.is_file() or dist_.shard_files(out)):
        previous = json.loads(manifest_path.read_text()).get("config")
        if previous != config:
            changed = sorted(k for k in set(config) | set(previous or {}) if (previous or {}).get(k) != config.get(k))
            raise SystemExit(f"{out} holds results of a different configuration (differs in: {', '.join(changed)}); "
                             "re-run with the same flags to resume, or use --overwrite or another --out")
    try:
        zoo = load_zoo(args.models).to(device)
    except ckpt.CheckpointError as err:
        raise SystemExit(f"cannot load the models: {err}") from None
    images, labels, indices = load_images(args)
    images = images.to(device)
    default_batch = 1000 if args.batch_size == "auto" else int(args.batch_size)
    mc = MonteCarloSettings(n0=args.n0, n=args.n, alpha=args.alpha, batch_size=default_batch, seed=args.seed)
    runs = build_runs(zoo, tuple(args.methods), tuple(args.sigma), mc, tuple(args.heads))
    if not runs:
        raise SystemExit("no run matches the chosen --methods/--heads/--sigma and the available models")
    batch_sizes = choose_batch_sizes(runs, args.batch_size, tuple(images.shape[1:]), device, args.n0 + args.n,
                                     progress=not args.no_progress and context.is_main)
    manifest = {
        "config": config, "preset": args.preset, "monte_carlo": asdict(mc), "device": str(device),
        "device_name": device_name(device), "torch_threads": torch.get_num_threads(),
        "processes": context.world_size, "batch_sizes": batch_sizes, "precision": precision,
        "cpu_allocator_tuned": allocator_tuned,
        "versions": ckpt.package_versions(), "git_commit": ckpt.git_commit(), "models": zoo.describe(),
        "backbone_lipschitz": zoo.backbone_meta["lipschitz"], "runs": [r.key for r in runs],
        "images": len(images), "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if context.is_main:
        if manifest_path.is_file() and not args.overwrite:
            previous = json.loads(manifest_path.read_text())
            manifest["first_started"] = previous.get("first_started", previous.get("started"))
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")

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
    mine = certify_all(runs, images, labels, indices, target, progress=not args.no_progress, done=done, context=context)
    timings = dist_.all_gather(context, mine)
    if not context.is_main:
        return out
    total = merge_results(out, tsv, runs, indices)
    timing = timing_summary(timings)
    from .report import write_reports

    scaling = None
    if args.scaling_ns and "ce" in zoo.heads:
        from .scaling import FARS_BATCH_SIZE, best_batch_size, scaling_table, write_cost_model

        cohen_bs = fars_bs = default_batch
        if args.batch_size == "auto":
            network = torch.nn.Sequential(zoo.backbone, zoo.heads["ce"][0])
            cohen_bs, _ = best_batch_size(network, tuple(images.shape[1:]), device,
                                          max_samples=max(args.scaling_ns) + args.n0)
            fars_bs = FARS_BATCH_SIZE
        scaling = scaling_table(zoo, images[:args.scaling_images], indices[:args.scaling_images],
                                tuple(sorted(args.scaling_ns)), sigma=0.25, n0=args.n0, alpha=args.alpha,
                                batch_size=default_batch, seed=args.seed, methods=("cohen", "fars-mc", "fars-closed"),
                                progress=not args.no_progress, cohen_batch_size=cohen_bs, fars_batch_size=fars_bs)
        scaling.to_csv(out / "scaling.csv", index=False)
        _, targets = write_cost_model(zoo, images[:args.scaling_images], scaling, out, batch_size=cohen_bs,
                                      indices=indices[:args.scaling_images], echo=False)
        manifest["scaling"] = {"ns": sorted(args.scaling_ns), "images": args.scaling_images, "sigma": 0.25,
                               "model": "sll+ce", "cohen_batch_size": cohen_bs, "fars_batch_size": fars_bs,
                               "targets": {row["target"]: row["met"] for row in targets.to_dict("records")}}
    reports = write_reports(tsv, out, scaling=scaling)
    summary = out / "summary.md"
    if summary.is_file():
        summary.write_text(summary.read_text().rstrip("\n") + "\n" + timing_markdown(timing))
    problems: list[str] = []
    if not args.no_attack:
        from .attack import RobustnessSettings, run_robustness, soundness_failures

        settings = RobustnessSettings(seed=args.seed)
        run_robustness(zoo, images, labels, indices, tsv, out, mc, settings, progress=not args.no_progress,
                       verbose=False)
        problems = soundness_failures(out)
        manifest["attack"] = settings.describe()
    manifest["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    manifest["rows_written_by_last_invocation"] = timing["rows"]
    manifest["rows_total"] = total
    manifest["timing"] = timing
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {timing['rows']} new rows ({total} in all) to {tsv}; reports: "
          f"{', '.join(p.name for p in reports.values())}", file=sys.stderr)
    if summary.is_file():
        print(summary.read_text())
    if problems:
        banner = "!" * 100
        print("\n".join([banner, "SOUNDNESS FAILURE: a certificate of a sound method was broken", *problems, banner]),
              file=sys.stderr)
        raise SystemExit(3)
    return out


if __name__ == "__main__":
    main()
