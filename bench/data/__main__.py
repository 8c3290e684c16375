"""``python -m bench.data``: list the datasets, show one (``info NAME``), rebuild the embedded subset.

``build-embedded`` regenerates ``bench/embedded/fashion_mnist_eval.npz`` (and its JSON sidecar) byte for
byte from the Fashion-MNIST test idx files. Errors are one line on stderr (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from .base import DatasetUnavailableError, EmbeddedDataError, IdxFormatError
from .embedded import EMBEDDED_PATH, EMBEDDED_PER_CLASS, build_embedded_subset, sidecar_path
from .idx import find_idx_files
from .registry import DATASETS, canonical_name, dataset_spec, load_dataset

#: What a bad name, tree or file raises: reported as one line, without a traceback.
EXPECTED_ERRORS = (DatasetUnavailableError, EmbeddedDataError, IdxFormatError, ValueError, OSError)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _info(name: str, data_root: str | None, download: bool) -> int:
    spec = dataset_spec(name, data_root if canonical_name(name) == "imagefolder" else None)
    print(f"{spec.name}: {spec.description}")
    print(f"  num_classes: {spec.num_classes}")
    print(f"  input_shape: {spec.input_shape}")
    print(f"  class_names: {', '.join(spec.class_names) if spec.class_names else '(from the tree)'}")
    if spec.name in ("fashion-mnist", "mnist"):
        for split in spec.splits:
            files = find_idx_files(spec.name, split, data_root)
            print(f"  {split} files: {', '.join(map(str, files)) if files else 'not found locally'}")
    if spec.name == "fashion-mnist-embedded":
        record = json.loads(sidecar_path(EMBEDDED_PATH).read_text())
        print(f"  file: {EMBEDDED_PATH} ({EMBEDDED_PATH.stat().st_size} bytes, sha256 {record.get('sha256')})")
    status = 0
    for split in spec.splits:
        try:
            ds = load_dataset(spec.name, split, data_root, download=download)
        except EXPECTED_ERRORS as exc:
            print(f"  {split}: unavailable - {exc}")
            status = 1
            continue
        if len(ds) == 0:
            print(f"  {split}: 0 items")
            continue
        x, y = ds[0]
        counts = None
        targets = getattr(ds, "targets", None)
        if targets is not None:
            counts = torch.bincount(torch.as_tensor(targets), minlength=len(spec.class_names) or 0).tolist()
        print(f"  {split}: {len(ds)} items; item 0: {tuple(x.shape)} {x.dtype} in [{float(x.min()):.3f}, "
              f"{float(x.max()):.3f}], label {y}" + (f"; per class {counts}" if counts else ""))
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.data {list,info NAME,build-embedded}``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.data",
                                     description="Datasets by name: list them, show one, rebuild the embedded subset.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the registered datasets")
    info = sub.add_parser("info", help="print a dataset's spec and split sizes")
    info.add_argument("name")
    info.add_argument("--data-root", default=None, help="data root (for imagefolder: the tree)")
    info.add_argument("--download", action="store_true", help="allow downloading missing files")
    build = sub.add_parser("build-embedded", help="regenerate the embedded Fashion-MNIST evaluation subset")
    build.add_argument("--source-dir", default=None, help="folder with t10k-*-ubyte(.gz) (default: usual lookup)")
    build.add_argument("--out", default=str(EMBEDDED_PATH), help=f"output .npz (default: {EMBEDDED_PATH})")
    build.add_argument("--per-class", type=_positive_int, default=EMBEDDED_PER_CLASS)
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for spec in DATASETS.values():
                print(f"{spec.name:24s} {str(spec.num_classes or '?'):>3s} classes  {spec.input_shape}  "
                      f"{spec.description}")
            return 0
        if args.command == "info":
            return _info(args.name, args.data_root, args.download)
        record = build_embedded_subset(args.out, args.source_dir, args.per_class)
        print(f"wrote {args.out}: {record['count']} images, {record['size_bytes']} bytes, sha256 {record['sha256']}")
        print(f"wrote {sidecar_path(Path(args.out))}")
        return 0
    except EXPECTED_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
