"""``python -m bench.train [all|backbone|heads|cnn] ...``: train the harness's default models.

Command-line leaf over :mod:`bench.models.training`. Checkpoints go to ``runs/models/<dataset>/`` by
default; the shipped ones in ``bench/embedded/models/`` are replaced only with ``--out`` naming that
folder and ``--overwrite-shipped``. Data is read from ``--data-root`` (default ``data/`` of the
checkout; no environment variable is consulted). Errors are one line on stderr (:mod:`bench.common.cli`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from fars import BackboneConfig

from .common.cli import checked, cli_exit, writable_dir
from .common.cli_help import DefaultsHelpFormatter
from .common.env import EMBEDDED_MODELS, REPO_ROOT, resolve_device, runs_dir
from .common.files import is_within
from .data import canonical_name, dataset_spec
from .models.networks import HEAD_KINDS
from .models.training import (
    DEFAULT_SIGMAS,
    TrainConfig,
    cifar_sized,
    default_epochs,
    train_backbone,
    train_cnns,
    train_heads,
)

#: where data sets are looked for without --data-root (git-ignored)
DEFAULT_DATA_ROOT = REPO_ROOT / "data"


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bench.train", formatter_class=DefaultsHelpFormatter,
        description="Train the harness's default models (SLL backbone, FaRS heads, Cohen's noise-trained CNNs). "
                    "Seeded and resumable: re-running an interrupted command continues from the last epoch. "
                    "CIFAR-sized data (3x32x32) is trained with random crops (padding 4) and horizontal flips "
                    "and longer default schedules.")
    parser.add_argument("what", nargs="?", default="all", choices=("all", "backbone", "heads", "cnn"),
                        help="which models to train (heads need the backbone in --out)")
    parser.add_argument("--dataset", default="fashion-mnist",
                        help="dataset name (python -m bench.data list); imagefolder needs --data-root")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder holding the data set's files (default: data/ of the checkout, git-ignored; "
                             "downloads land there); for imagefolder, the ImageFolder tree itself")
    parser.add_argument("--out", type=Path, default=None,
                        help="checkpoint folder (default: runs/models/DATASET under the current directory)")
    parser.add_argument("--overwrite-shipped", action="store_true",
                        help="allow --out to be bench/embedded/models, replacing the shipped default models")
    parser.add_argument("--seed", type=int, default=0, help="global seed")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...")
    small, cifar = default_epochs((1, 28, 28)), default_epochs((3, 32, 32))
    for index, stage in enumerate(("backbone", "head", "cnn")):
        what = {"backbone": "the SLL backbone", "head": "each head on the frozen backbone",
                "cnn": "each of Cohen's noise-trained CNNs"}[stage]
        parser.add_argument(f"--{stage}-epochs", type=int, default=None,
                            help=f"epochs of {what} (default: {small[index]}, {cifar[index]} for CIFAR-sized data)")
    parser.add_argument("--heads", nargs="+", default=list(HEAD_KINDS), choices=HEAD_KINDS, help="head kinds to train")
    parser.add_argument("--sigmas", nargs="+", type=float, default=list(DEFAULT_SIGMAS),
                        help="noise levels of Cohen's CNNs")
    parser.add_argument("--audit-images", type=int, default=defaults.audit_images,
                        help="test images of the backbone's post-training Lipschitz audit")
    parser.add_argument("--audit-iterations", type=int, default=defaults.audit_iterations,
                        help="power iterations and pair-ascent steps per image of that audit")
    parser.add_argument("--train-limit", type=int, default=None,
                        help="use only the first N training images (smoke tests)")
    parser.add_argument("--test-limit", type=int, default=None,
                        help="evaluate on the first N test images only (smoke tests; shipped models use all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed flags, checked, with the dataset-dependent defaults filled in.

    Raises:
        SystemExit: (2) a flag out of range, an unknown dataset, imagefolder without --data-root, a
            --data-root that does not exist or is a file, an --out that is a file, cannot be written, or
            is the shipped models' folder without --overwrite-shipped.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.dataset = canonical_name(args.dataset)
    except ValueError as err:
        parser.error(str(err))
    for name in ("backbone_epochs", "head_epochs", "cnn_epochs", "audit_images", "audit_iterations",
                 "train_limit", "test_limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if any(not math.isfinite(s) or s <= 0 for s in args.sigmas):
        parser.error("--sigmas must all be finite and > 0")
    if args.dataset == "fashion-mnist-embedded":
        parser.error("fashion-mnist-embedded is an evaluation subset (test split only); train on fashion-mnist")
    if args.data_root is None:
        if args.dataset == "imagefolder":
            parser.error("--dataset imagefolder needs --data-root: the ImageFolder tree "
                         "(<root>/{train,val|test}/CLASS/*.png or <root>/CLASS/*)")
        args.data_root = DEFAULT_DATA_ROOT
    else:
        args.data_root = args.data_root.expanduser()
        if not args.data_root.exists():
            parser.error(f"--data-root {args.data_root} does not exist (create it to download the data set there)")
        if not args.data_root.is_dir():
            parser.error(f"--data-root {args.data_root} is a file, not a folder")
    if args.out is None:
        args.out = runs_dir("models", args.dataset)
    if is_within(args.out, EMBEDDED_MODELS) and not args.overwrite_shipped:   # through a link or a bind mount too
        parser.error(f"--out {args.out} is (or lies in) {EMBEDDED_MODELS}, the shipped default models; add "
                     "--overwrite-shipped to replace them")
    args.out = checked(parser, lambda: writable_dir(args.out))
    args.device = checked(parser, lambda: resolve_device(args.device))
    return args


def main(argv: list[str] | None = None) -> None:
    """Train what the flags ask for.

    Raises:
        SystemExit: see :func:`parse_args`; an unknown --device.
        ValueError, bench.data.DatasetUnavailableError, bench.models.CheckpointError: data or models
            that cannot be used (turned into one line by :func:`bench.common.cli.run_cli`).
    """
    args = parse_args(argv)
    spec = dataset_spec(args.dataset, args.data_root if args.dataset == "imagefolder" else None)
    c, h, _ = spec.input_shape
    epochs = default_epochs(spec.input_shape)
    backbone_cfg = BackboneConfig(in_channels=c, image_size=h)
    cfg = TrainConfig(dataset=args.dataset, seed=args.seed,
                      backbone_epochs=args.backbone_epochs or epochs[0], head_epochs=args.head_epochs or epochs[1],
                      cnn_epochs=args.cnn_epochs or epochs[2], cnn_sigmas=tuple(args.sigmas),
                      train_limit=args.train_limit, test_limit=args.test_limit, augment=cifar_sized(spec.input_shape),
                      audit_images=args.audit_images, audit_iterations=args.audit_iterations,
                      data_root=str(args.data_root), backbone=backbone_cfg)
    device = args.device
    torch.manual_seed(args.seed)
    progress = not args.no_progress
    if args.what in ("all", "backbone"):
        train_backbone(cfg, args.out, device, progress)
    if args.what in ("all", "heads"):
        train_heads(cfg, args.out, device, tuple(args.heads), progress)
    if args.what in ("all", "cnn"):
        train_cnns(cfg, args.out, device, progress)


if __name__ == "__main__":
    cli_exit(main)
