"""``python -m bench.train [all|backbone|heads|cnn] ...``: train the harness's default models.

Command-line leaf over :mod:`bench.models.training`. Checkpoints go to ``runs/models/<dataset>/`` by
default; the shipped ones in ``bench/embedded/models/`` are replaced only when ``--out`` names that
folder explicitly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fars import BackboneConfig

from .data import dataset_spec
from .env import resolve_device, runs_dir
from .models.networks import HEAD_KINDS
from .models.training import DEFAULT_SIGMAS, TrainConfig, train_backbone, train_cnns, train_heads


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.train",
        description="Train the harness's default models (SLL backbone, FaRS heads, Cohen's noise-trained CNNs). "
                    "Seeded and resumable: re-running an interrupted command continues from the last epoch.")
    parser.add_argument("what", nargs="?", default="all", choices=("all", "backbone", "heads", "cnn"),
                        help="which models to train (heads need the backbone in --out); default: all")
    parser.add_argument("--dataset", default="fashion-mnist", help="dataset name (default: fashion-mnist)")
    parser.add_argument("--out", type=Path, default=None,
                        help="checkpoint folder (default: runs/models/DATASET under the current directory; "
                             "pass bench/embedded/models to replace the shipped default models)")
    parser.add_argument("--seed", type=int, default=0, help="global seed (default: 0)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...")
    parser.add_argument("--backbone-epochs", type=int, default=TrainConfig.backbone_epochs,
                        help=f"epochs of the SLL backbone (default: {TrainConfig.backbone_epochs})")
    parser.add_argument("--head-epochs", type=int, default=TrainConfig.head_epochs,
                        help=f"epochs of each head on the frozen backbone (default: {TrainConfig.head_epochs})")
    parser.add_argument("--cnn-epochs", type=int, default=TrainConfig.cnn_epochs,
                        help=f"epochs of each of Cohen's noise-trained CNNs (default: {TrainConfig.cnn_epochs})")
    parser.add_argument("--heads", nargs="+", default=list(HEAD_KINDS), choices=HEAD_KINDS, help="head kinds to train")
    parser.add_argument("--sigmas", nargs="+", type=float, default=list(DEFAULT_SIGMAS),
                        help="noise levels of Cohen's CNNs (default: 0.12 0.25 0.5)")
    parser.add_argument("--train-limit", type=int, default=None,
                        help="use only the first N training images (smoke tests)")
    parser.add_argument("--test-limit", type=int, default=None,
                        help="evaluate on the first N test images only (smoke tests; shipped models use all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for name in ("backbone_epochs", "head_epochs", "cnn_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if any(s <= 0 for s in args.sigmas):
        parser.error("--sigmas must all be > 0")
    if args.out is None:
        args.out = runs_dir("models", args.dataset)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    spec = dataset_spec(args.dataset)
    c, h, _ = spec.input_shape
    backbone_cfg = BackboneConfig(in_channels=c, image_size=h)
    cfg = TrainConfig(dataset=args.dataset, seed=args.seed, backbone_epochs=args.backbone_epochs,
                      head_epochs=args.head_epochs, cnn_epochs=args.cnn_epochs, cnn_sigmas=tuple(args.sigmas),
                      train_limit=args.train_limit, test_limit=args.test_limit, backbone=backbone_cfg)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    if args.what in ("all", "backbone"):
        train_backbone(cfg, args.out, device, progress)
    if args.what in ("all", "heads"):
        train_heads(cfg, args.out, device, tuple(args.heads), progress)
    if args.what in ("all", "cnn"):
        train_cnns(cfg, args.out, device, progress)


if __name__ == "__main__":
    main()
