"""``python -m bench.scaling``: seconds per image versus the number of Monte Carlo samples n.

Times ``cohen`` and ``fars-mc`` on the same SLL network (``sll+ce``: backbone and linear head) at
n = 1e2 ... 1e5, and ``fars-closed`` (no sampling) as the flat floor, on the first images of the
evaluation set. Each certify call is timed with the device synchronised, after a warm-up call; a fast call
is repeated (about 0.25 s of calls, at most 25) and its median kept.
Writes ``scaling.csv`` and ``scaling.png`` to ``--out`` (default ``results/<dataset>/scaling``), then
the cost model (:mod:`bench.cost_model`: flops, bytes, the machine's floor, measured / floor and the
issue-6 targets) as ``cost_model.csv``, ``cost_targets.csv`` and ``cost_model.md``.

Cohen's batch size can be searched (``--cohen-batch-size auto``: the throughput-best batch of a plain
forward, :func:`best_batch_size`); ``fars-mc`` has its own batch size (``--fars-batch-size``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from baselines import CohenRS
from fars import FaRSClosedForm, FaRSMonteCarlo

from . import checkpoints as ckpt
from . import cost_model as cm
from .datasets import load_embedded
from .report import plot_scaling
from .run import REPO_ROOT, device_name, full_fp32
from .train import DEFAULT_DIR, resolve_device
from .zoo import load_zoo

DEFAULT_NS = (100, 1_000, 10_000, 100_000)
#: batch sizes tried by :func:`best_batch_size` (noisy samples per forward pass)
#: (on a 2-core CPU the activations of ~256 samples fit the caches: 2.3x the throughput of 1024)
BATCH_CANDIDATES = {"cpu": (64, 128, 256, 512, 1024, 2048, 4096), "cuda": (1024, 4096, 16384, 32768, 65536)}
#: fars-mc's batch size with the projected sampler (as in this sweep): 10 noise coordinates per sample, so
#: one batch is one whole noise block (fars.noise.MAX_BLOCK_SAMPLES) and the per-batch work is amortised
FARS_BATCH_SIZE = 1 << 16
#: fars-mc's batch size with the direct sampler (noise of the embedding's dimension; an MLP head's hidden
#: layer per sample): smaller batches keep the activations in cache (10,000 measured 1.2x faster than 65,536)
FARS_DIRECT_BATCH_SIZE = 10_000


def fars_batch_size(certifier) -> int:
    """The batch size ``--batch-size auto`` gives a FaRSMonteCarlo certifier (by its sampler)."""
    return FARS_BATCH_SIZE if getattr(certifier, "sampler", "direct") == "projected" else FARS_DIRECT_BATCH_SIZE


def time_certifier(certifier, images: torch.Tensor, indices: torch.Tensor, min_seconds: float = 0.25,
                   max_repeats: int = 25) -> list[float]:
    """Seconds of one ``certify`` call per image (after one untimed warm-up call).

    A fast call is repeated (until ``min_seconds`` of calls or ``max_repeats`` calls) and its median
    is kept, so a millisecond-scale method is not judged on one call disturbed by the machine; a
    call's noise is decided by the seed and the image's index, so the repeats compute the same thing.
    """
    certifier.certify(images[:1], indices=indices[:1])
    seconds = []
    for i in range(len(images)):
        calls = [certifier.certify(images[i:i + 1], indices=indices[i:i + 1]).seconds]
        while sum(calls) < min_seconds and len(calls) < max_repeats:
            calls.append(certifier.certify(images[i:i + 1], indices=indices[i:i + 1]).seconds)
        seconds.append(float(np.median(calls)))
    return seconds


def scaling_table(zoo, images: torch.Tensor, indices: torch.Tensor, ns: tuple[int, ...], sigma: float, n0: int,
                  alpha: float, batch_size: int, seed: int, methods: tuple[str, ...], progress: bool = True, *,
                  cohen_batch_size: int | None = None, fars_batch_size: int | None = None, cohen_compile: bool = False,
                  cohen_precision: str = "fp32") -> pd.DataFrame:
    """Rows (method, model, n, samples, seconds, seconds_p25, seconds_p75, images, batch_size, precision,
    compiled) of median seconds per image.

    ``batch_size`` is the default of both sampled methods; ``cohen_batch_size`` / ``fars_batch_size``
    override it per method. ``cohen_compile`` and ``cohen_precision`` are CohenRS's opt-in speed options
    (off / fp32 by default), recorded in the ``compiled`` and ``precision`` columns.
    """
    backbone, head = zoo.backbone, zoo.heads["ce"][0]
    network = torch.nn.Sequential(backbone, head)
    rows = []
    jobs = [(m, n) for n in ns for m in methods if m in ("cohen", "fars-mc")]
    if "fars-closed" in methods:
        jobs.append(("fars-closed", 0))
    sizes = {"cohen": cohen_batch_size or batch_size, "fars-mc": fars_batch_size or batch_size, "fars-closed": 1}
    for method, n in tqdm(jobs, desc="scaling", disable=not progress, file=sys.stderr):
        kwargs = dict(n0=min(n0, n), n=n, alpha=alpha, batch_size=sizes[method], seed=seed)
        precision, compiled = "fp32", False
        if method == "cohen":
            certifier = CohenRS(network, sigma, **kwargs, compile=cohen_compile, precision=cohen_precision)
            precision, compiled = cohen_precision, cohen_compile
        elif method == "fars-mc":
            certifier = FaRSMonteCarlo(backbone, head, sigma, lipschitz=zoo.lipschitz, **kwargs)
        else:
            certifier = FaRSClosedForm(backbone, head, lipschitz=zoo.lipschitz)
        seconds = np.array(time_certifier(certifier, images, indices))
        rows.append({"method": method, "model": "sll+ce", "n": n, "samples": 0 if n == 0 else min(n0, n) + n,
                     "seconds": float(np.median(seconds)), "seconds_p25": float(np.percentile(seconds, 25)),
                     "seconds_p75": float(np.percentile(seconds, 75)), "images": len(seconds),
                     "batch_size": sizes[method], "precision": precision, "compiled": compiled})
    return pd.DataFrame(rows)


def best_batch_size(model: torch.nn.Module, input_shape: Sequence[int], device: torch.device | str,
                    candidates: Sequence[int] | None = None, repeats: int = 3,
                    max_samples: int | None = None) -> tuple[int, pd.DataFrame]:
    """The batch size of highest throughput of a plain forward of ``model`` (inference mode), and the table.

    Each candidate is timed on a noisy-looking batch (best of ``repeats`` after a warm-up); candidates
    above ``max_samples`` are skipped, and on CUDA a candidate that runs out of memory ends the search.
    Returns ``(best, frame)`` with columns ``batch_size, seconds_per_sample, samples_per_second``.
    """
    device = torch.device(device)
    candidates = tuple(candidates or BATCH_CANDIDATES.get(device.type, BATCH_CANDIDATES["cuda"]))
    if not candidates or any(int(c) < 1 for c in candidates):
        raise ValueError("candidates must be batch sizes >= 1")
    rows = []
    mode = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for size in sorted({int(c) for c in candidates}):
                if max_samples is not None and size > max_samples and rows:
                    break
                try:
                    batch = cm.plain_batch(tuple(input_shape), size, device)
                    seconds = cm.best_seconds(lambda: model(batch), device, repeats)
                except torch.cuda.OutOfMemoryError:
                    if not rows:
                        raise
                    break
                finally:
                    batch = None
                rows.append({"batch_size": size, "seconds_per_sample": seconds / size,
                             "samples_per_second": size / seconds})
    finally:
        model.train(mode)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    frame = pd.DataFrame(rows)
    best = int(frame.loc[frame["samples_per_second"].idxmax(), "batch_size"])
    return best, frame


def write_cost_model(zoo, images: torch.Tensor, scaling_df: pd.DataFrame, out: Path, *,
                     machine: cm.Machine | None = None, batch_size: int = 1000, plain_repeats: int = 5,
                     echo: bool = True, indices: torch.Tensor | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cost model of a scaling run: writes ``cost_model.csv``, ``cost_targets.csv`` and ``cost_model.md``.

    Counts flops and bytes of ``sll+ce`` (``zoo.backbone`` + ``zoo.heads["ce"][0]``), measures the
    machine once (unless ``machine`` is given) and the plain-forward references (batched at cohen's batch
    size from ``scaling_df``, else ``batch_size``; compiled when cohen was; and one single image from
    ``images``), and compares them with ``scaling_df``'s measured seconds. When ``scaling_df`` has
    fars-closed, it and the single-image forward are re-timed side by side (:func:`cost_model.paired_single_image`
    on ``images`` with their dataset ``indices``). Returns (table, targets); prints the markdown when ``echo``.
    """
    backbone, head = zoo.backbone, zoo.heads["ce"][0]
    network = torch.nn.Sequential(backbone, head).eval()
    device = images.device
    costs = cm.network_costs(backbone, head, tuple(images.shape[1:]))
    machine = machine or cm.measure_machine(device)
    cohen_rows = scaling_df[scaling_df["method"] == "cohen"] if "method" in scaling_df else scaling_df.iloc[:0]
    plain_bs, compiled = batch_size, False
    if not cohen_rows.empty:
        if "batch_size" in cohen_rows:
            plain_bs = int(cohen_rows["batch_size"].iloc[-1])
        if "compiled" in cohen_rows:
            compiled = bool(cohen_rows["compiled"].iloc[-1])
    plain = cm.measure_plain_forward(network, images[:1], plain_bs, repeats=plain_repeats,
                                     compiled=torch.compile(network) if compiled else None)
    closed = scaling_df["method"] == "fars-closed" if "method" in scaling_df else None
    if closed is not None and closed.any():
        # fars-closed against the single-image forward: both timed in alternating blocks, same images
        rounds, calls = 5, 21
        indices = torch.arange(len(images)) if indices is None else indices
        single, certify = cm.paired_single_image(network, FaRSClosedForm(backbone, head, lipschitz=zoo.lipschitz),
                                                 images, indices, rounds=rounds, calls=calls)
        plain = dataclasses.replace(plain, single=single, paired=(
            f"fars-closed and this forward timed in alternating blocks: {rounds} rounds x {len(images)} images x "
            f"{calls} calls each, medians; fars-closed's row uses that median, scaling.csv the sweep's"))
        scaling_df = scaling_df.copy()
        scaling_df.loc[closed, "seconds"] = certify
    table = cm.cost_table(costs, scaling_df, machine, plain, batch_size=batch_size)
    targets = cm.targets_table(table)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "cost_model.csv", index=False)
    targets.to_csv(out / "cost_targets.csv", index=False)
    notes = []
    if "precision" in scaling_df and (scaling_df["precision"].astype(str) != "fp32").any():
        notes.append("LOW PRECISION: cohen ran its forward in "
                     f"{', '.join(sorted(set(scaling_df['precision'].astype(str)) - {'fp32'}))} (explicit opt-in).")
    if compiled:
        notes.append("cohen ran a torch.compile'd network (opt-in); its plain-forward reference is compiled too.")
    text = cm.cost_markdown(table, targets, machine, plain, costs, note=" ".join(notes))
    (out / "cost_model.md").write_text(text)
    (out / "machine.json").write_text(json.dumps({**machine.as_dict(), "plain_forward": vars(plain)}, indent=2) + "\n")
    if echo:
        print(text)
    return table, targets


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaling", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Seconds per image versus n for cohen and fars-mc on the same SLL network, with fars-closed "
                    "as the flat floor. Writes scaling.csv and scaling.png, then the cost model (flops, bytes, the "
                    "machine's floor, measured/floor and the issue-6 targets): cost_model.csv/md, cost_targets.csv.")
    parser.add_argument("--models", type=Path, default=DEFAULT_DIR, help="checkpoint folder")
    parser.add_argument("--ns", type=int, nargs="+", default=list(DEFAULT_NS), help="values of n to time")
    parser.add_argument("--images", type=int, default=3, help="images timed per point (median reported)")
    parser.add_argument("--sigma", type=float, default=0.25, help="noise level")
    parser.add_argument("--n0", type=int, default=100, help="selection samples (capped at n)")
    parser.add_argument("--alpha", type=float, default=0.001, help="failure probability")
    parser.add_argument("--batch-size", type=int, default=1000, help="noisy samples per forward pass (both methods)")
    parser.add_argument("--cohen-batch-size", default="auto",
                        help="cohen's batch size: an integer, or 'auto' to search the throughput-best batch of a plain "
                             "forward of the network on this device")
    parser.add_argument("--fars-batch-size", type=int, default=FARS_BATCH_SIZE, help="fars-mc's batch size")
    parser.add_argument("--cohen-compile", action="store_true",
                        help="opt-in: run cohen's network through torch.compile (logits differ at round-off level)")
    parser.add_argument("--cohen-precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="opt-in lower precision for cohen's forward (autocast); recorded in the results")
    parser.add_argument("--no-cost-model", action="store_true", help="skip the cost model (cost_model.csv/md)")
    parser.add_argument("--methods", nargs="+", default=["cohen", "fars-mc", "fars-closed"],
                        choices=["cohen", "fars-mc", "fars-closed"])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op CPU threads (0: torch's default); the machine is measured with the same")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "fashion-mnist" / "scaling")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.ns) or args.images < 1 or args.sigma <= 0 or not 0 < args.alpha < 1:
        parser.error("--ns and --images must be >= 1, --sigma > 0, --alpha in (0, 1)")
    if args.batch_size < 1 or args.fars_batch_size < 1:
        parser.error("batch sizes must be >= 1")
    if args.cohen_batch_size not in (None, "auto") and (not str(args.cohen_batch_size).isdigit()
                                                        or int(args.cohen_batch_size) < 1):
        parser.error("--cohen-batch-size must be an integer >= 1 or 'auto'")
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator_tuned = cm.tune_cpu_allocator()
    precision = full_fp32()
    device = resolve_device(args.device)
    try:
        zoo = load_zoo(args.models).to(device)
    except ckpt.CheckpointError as err:
        raise SystemExit(f"cannot load the models: {err}") from None
    if "ce" not in zoo.heads:
        raise SystemExit(f"{args.models} has no head-ce checkpoint")
    images, _, indices = load_embedded(limit=args.images)
    images = images.to(device)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    search = None
    cohen_bs = args.batch_size
    if args.cohen_batch_size == "auto":
        network = torch.nn.Sequential(zoo.backbone, zoo.heads["ce"][0])
        cohen_bs, search = best_batch_size(network, tuple(images.shape[1:]), device,
                                           max_samples=max(args.ns) + min(args.n0, max(args.ns)))
        print(f"cohen batch size: {cohen_bs} (throughput of a plain forward)\n{search.to_string(index=False)}",
              file=sys.stderr)
    elif args.cohen_batch_size is not None:
        cohen_bs = int(args.cohen_batch_size)
    table = scaling_table(zoo, images, indices, tuple(sorted(args.ns)), args.sigma, args.n0, args.alpha,
                          args.batch_size, args.seed, tuple(args.methods), progress=not args.no_progress,
                          cohen_batch_size=cohen_bs, fars_batch_size=args.fars_batch_size,
                          cohen_compile=args.cohen_compile, cohen_precision=args.cohen_precision)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "scaling.csv", index=False)
    if search is not None:
        search.to_csv(args.out / "batch_search.csv", index=False)
    plot_scaling(table, args.out / "scaling.png", title=f"Seconds per image versus n ({device_name(device)})")
    manifest = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "device": str(device), "device_name": device_name(device), "versions": ckpt.package_versions(),
                "git_commit": ckpt.git_commit(), "started": started,
                "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    manifest.update(allocator_tuned=allocator_tuned, torch_threads=torch.get_num_threads(), precision=precision)
    print(table.to_string(index=False))
    if not args.no_cost_model:
        _, targets = write_cost_model(zoo, images, table, args.out, batch_size=cohen_bs, indices=indices)
        manifest["targets"] = {row["target"]: row["met"] for row in targets.to_dict("records")}
    manifest["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return args.out


if __name__ == "__main__":
    main()
