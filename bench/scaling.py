"""``python -m bench.scaling``: seconds per image versus the number of Monte Carlo samples n.

Times ``cohen`` and ``fars-mc`` on the same SLL network (``sll+ce``: backbone and linear head) at
n = 1e2 ... 1e5, and ``fars-closed`` (no sampling) as the flat floor, on the first images of the
evaluation set. Each certify call is timed with the device synchronised, after a warm-up call.
Writes ``scaling.csv`` and ``scaling.png`` to ``--out`` (default ``results/<dataset>/scaling``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from baselines import CohenRS
from fars import FaRSClosedForm, FaRSMonteCarlo

from . import checkpoints as ckpt
from .datasets import load_embedded
from .report import plot_scaling
from .run import REPO_ROOT, device_name
from .train import DEFAULT_DIR, resolve_device
from .zoo import load_zoo

DEFAULT_NS = (100, 1_000, 10_000, 100_000)


def time_certifier(certifier, images: torch.Tensor, indices: torch.Tensor) -> list[float]:
    """Seconds of one ``certify`` call per image (after one untimed warm-up call)."""
    certifier.certify(images[:1], indices=indices[:1])
    return [certifier.certify(images[i:i + 1], indices=indices[i:i + 1]).seconds for i in range(len(images))]


def scaling_table(zoo, images: torch.Tensor, indices: torch.Tensor, ns: tuple[int, ...], sigma: float, n0: int,
                  alpha: float, batch_size: int, seed: int, methods: tuple[str, ...], progress: bool = True) -> pd.DataFrame:
    """Rows (method, model, n, samples, seconds, seconds_p25, seconds_p75, images) of median seconds per image."""
    backbone, head = zoo.backbone, zoo.heads["ce"][0]
    network = torch.nn.Sequential(backbone, head)
    rows = []
    jobs = [(m, n) for n in ns for m in methods if m in ("cohen", "fars-mc")]
    if "fars-closed" in methods:
        jobs.append(("fars-closed", 0))
    for method, n in tqdm(jobs, desc="scaling", disable=not progress, file=sys.stderr):
        kwargs = dict(n0=min(n0, n), n=n, alpha=alpha, batch_size=batch_size, seed=seed)
        if method == "cohen":
            certifier = CohenRS(network, sigma, **kwargs)
        elif method == "fars-mc":
            certifier = FaRSMonteCarlo(backbone, head, sigma, lipschitz=zoo.lipschitz, **kwargs)
        else:
            certifier = FaRSClosedForm(backbone, head, lipschitz=zoo.lipschitz)
        seconds = np.array(time_certifier(certifier, images, indices))
        rows.append({"method": method, "model": "sll+ce", "n": n, "samples": 0 if n == 0 else min(n0, n) + n,
                     "seconds": float(np.median(seconds)), "seconds_p25": float(np.percentile(seconds, 25)),
                     "seconds_p75": float(np.percentile(seconds, 75)), "images": len(seconds)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaling", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Seconds per image versus n for cohen and fars-mc on the same SLL network, with fars-closed "
                    "as the flat floor. Writes scaling.csv and scaling.png.")
    parser.add_argument("--models", type=Path, default=DEFAULT_DIR, help="checkpoint folder")
    parser.add_argument("--ns", type=int, nargs="+", default=list(DEFAULT_NS), help="values of n to time")
    parser.add_argument("--images", type=int, default=3, help="images timed per point (median reported)")
    parser.add_argument("--sigma", type=float, default=0.25, help="noise level")
    parser.add_argument("--n0", type=int, default=100, help="selection samples (capped at n)")
    parser.add_argument("--alpha", type=float, default=0.001, help="failure probability")
    parser.add_argument("--batch-size", type=int, default=1000, help="noisy samples per forward pass")
    parser.add_argument("--methods", nargs="+", default=["cohen", "fars-mc", "fars-closed"],
                        choices=["cohen", "fars-mc", "fars-closed"])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "fashion-mnist" / "scaling")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.ns) or args.images < 1 or args.sigma <= 0 or not 0 < args.alpha < 1:
        parser.error("--ns and --images must be >= 1, --sigma > 0, --alpha in (0, 1)")
    device = resolve_device(args.device)
    try:
        zoo = load_zoo(args.models).to(device)
    except ckpt.CheckpointError as err:
        raise SystemExit(f"cannot load the models: {err}") from None
    if "ce" not in zoo.heads:
        raise SystemExit(f"{args.models} has no head-ce checkpoint")
    images, _, indices = load_embedded(limit=args.images)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    table = scaling_table(zoo, images.to(device), indices, tuple(sorted(args.ns)), args.sigma, args.n0, args.alpha,
                          args.batch_size, args.seed, tuple(args.methods), progress=not args.no_progress)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "scaling.csv", index=False)
    plot_scaling(table, args.out / "scaling.png", title=f"Seconds per image versus n ({device_name(device)})")
    manifest = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "device": str(device), "device_name": device_name(device), "versions": ckpt.package_versions(),
                "git_commit": ckpt.git_commit(), "started": started,
                "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(table.to_string(index=False))
    return args.out


if __name__ == "__main__":
    main()
