"""``python -m bench.run``: certify test images with every method, time them, and write the results.

Outputs in ``--out`` (default ``results/<dataset>/<preset>/``):

* ``certify.tsv``: one row per (run, example) with Cohen's columns ``idx label predict radius correct
  time`` plus ``method model sigma samples seconds``; appended and flushed row by row, so an
  interrupted run loses nothing and re-running the same command resumes where it stopped;
* ``manifest.json``: configuration, package versions, device, git commit, start and end times;
* ``summary.csv``, ``summary.md``, ``certified_accuracy.csv`` and the plots (see :mod:`bench.report`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import checkpoints as ckpt
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
                    "TSV, summary tables and plots. Re-running the same command resumes an interrupted run.",
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
    parser.add_argument("--n", type=int, default=None, help="Monte Carlo estimation samples per image")
    parser.add_argument("--n0", type=int, default=None, help="Monte Carlo selection samples per image")
    parser.add_argument("--alpha", type=float, default=None, help="failure probability of each Monte Carlo certificate")
    parser.add_argument("--num-images", type=int, default=None, help="number of test images to certify")
    parser.add_argument("--skip", type=int, default=None, help="certify every SKIP-th image of the evaluation set")
    parser.add_argument("--scaling-ns", type=int, nargs="*", default=None,
                        help="after certifying, time cohen and fars-mc on sll+ce at these n (seconds per image "
                             "versus n, with fars-closed as the floor) and write scaling.csv/png; none: skip")
    parser.add_argument("--scaling-images", type=int, default=2, help="images timed per point of the scaling sweep")
    parser.add_argument("--batch-size", type=int, default=1000, help="noisy samples per forward pass")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...")
    parser.add_argument("--seed", type=int, default=0, help="global seed; with an image's index it fixes that image's noise")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: results/<dataset>/<preset>)")
    parser.add_argument("--overwrite", action="store_true", help="discard earlier results in --out instead of resuming")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
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
        (args.batch_size >= 1, "--batch-size must be >= 1"), (args.seed >= 0, "--seed must be >= 0"),
        (all(n >= 1 for n in args.scaling_ns), "--scaling-ns values must be >= 1"),
        (args.scaling_images >= 1, "--scaling-images must be >= 1"),
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


def read_done(tsv: Path) -> set[tuple[str, int]]:
    """(run key, idx) of the complete rows already in ``tsv``; drops a partial last line left by a crash."""
    if not tsv.is_file():
        return set()
    text = tsv.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        tsv.write_text(text)
    lines = text.splitlines()
    if not lines or tuple(lines[0].split("\t")) != COLUMNS:
        raise SystemExit(f"{tsv} is not a results file of this harness (unexpected header); use --overwrite or --out")
    done = set()
    for line in lines[1:]:
        f = dict(zip(COLUMNS, line.split("\t")))
        sigma = float(f["sigma"]) if f["sigma"] not in ("", "nan") else math.nan
        done.add((f"{f['method']}|{f['model']}|{'-' if math.isnan(sigma) else f'{sigma:g}'}", int(f["idx"])))
    return done


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


def certify_all(runs: list[Run], images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, tsv: Path,
                progress: bool = True) -> int:
    """Certify every image with every run, appending rows to ``tsv``; returns the number of new rows."""
    done = read_done(tsv)
    new_file = not tsv.is_file()
    written = 0
    with open(tsv, "a", encoding="utf-8") as handle:
        if new_file:
            handle.write("\t".join(COLUMNS) + "\n")
        for run in runs:
            pending = [i for i in range(len(images)) if (run.key, int(indices[i])) not in done]
            if not pending:
                continue
            # warm-up call (not recorded): allocator, kernels and caches, so the first timed image is typical
            run.certifier.certify(images[:1], indices=indices[:1])
            for i in tqdm(pending, desc=f"{run.method} {run.model}" + ("" if math.isnan(run.sigma) else f" σ={run.sigma:g}"),
                          disable=not progress, file=sys.stderr, leave=True):
                cert = run.certifier.certify(images[i:i + 1], indices=indices[i:i + 1])
                handle.write(format_row(run, int(indices[i]), int(labels[i]), int(cert.prediction[0]),
                                        float(cert.radius[0]), cert.seconds, cert.samples))
                handle.flush()
                os.fsync(handle.fileno())
                written += 1
    return written


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    device = resolve_device(args.device)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    tsv, manifest_path = out / "certify.tsv", out / "manifest.json"
    config = run_config(args)
    if args.overwrite:
        tsv.unlink(missing_ok=True)
    elif manifest_path.is_file() and tsv.is_file():
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
    mc = MonteCarloSettings(n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch_size, seed=args.seed)
    runs = build_runs(zoo, tuple(args.methods), tuple(args.sigma), mc, tuple(args.heads))
    if not runs:
        raise SystemExit("no run matches the chosen --methods/--heads/--sigma and the available models")
    manifest = {
        "config": config, "preset": args.preset, "monte_carlo": asdict(mc), "device": str(device),
        "device_name": device_name(device), "torch_threads": torch.get_num_threads(),
        "versions": ckpt.package_versions(), "git_commit": ckpt.git_commit(), "models": zoo.describe(),
        "backbone_lipschitz": zoo.backbone_meta["lipschitz"], "runs": [r.key for r in runs],
        "images": len(images), "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if manifest_path.is_file() and not args.overwrite:
        manifest["first_started"] = json.loads(manifest_path.read_text()).get("first_started",
                                                                           json.loads(manifest_path.read_text()).get("started"))
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    written = certify_all(runs, images, labels, indices, tsv, progress=not args.no_progress)
    from .report import write_reports

    scaling = None
    if args.scaling_ns and "ce" in zoo.heads:
        from .scaling import scaling_table

        scaling = scaling_table(zoo, images[:args.scaling_images], indices[:args.scaling_images],
                                tuple(sorted(args.scaling_ns)), sigma=0.25, n0=args.n0, alpha=args.alpha,
                                batch_size=args.batch_size, seed=args.seed, methods=("cohen", "fars-mc", "fars-closed"),
                                progress=not args.no_progress)
        scaling.to_csv(out / "scaling.csv", index=False)
        manifest["scaling"] = {"ns": sorted(args.scaling_ns), "images": args.scaling_images, "sigma": 0.25,
                               "model": "sll+ce"}
    reports = write_reports(tsv, out, scaling=scaling)
    manifest["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    manifest["rows_written_by_last_invocation"] = written
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {written} new rows to {tsv}; reports: {', '.join(p.name for p in reports.values())}", file=sys.stderr)
    summary = out / "summary.md"
    if summary.is_file():
        print(summary.read_text())
    return out


if __name__ == "__main__":
    main()
