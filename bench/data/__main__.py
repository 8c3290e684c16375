"""``python -m bench.data``: list the datasets, show one (``info NAME``), rebuild the embedded subset.

``list`` and ``info`` show each dataset's metadata too: the radii the papers report on it, Cohen et al.'s test
selection where there is one, the normalisation constants (informational) and, for the image-file datasets,
the size settings (``info NAME --image-size N --resize N``; 0 = none).

``build-embedded`` regenerates ``bench/embedded/fashion_mnist_eval.npz`` (and its JSON sidecar) byte for
byte from the Fashion-MNIST test idx files; it writes into ``bench/embedded`` only with
``--overwrite-shipped``. Errors are one line on stderr (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..common.cli import cli_exit
from ..common.files import is_within
from .base import DatasetUnavailableError, EmbeddedDataError, IdxFormatError
from .cifar import CIFAR_LAYOUTS, official_md5_matches
from .embedded import EMBEDDED_DIR, EMBEDDED_PATH, EMBEDDED_PER_CLASS, build_embedded_subset, sidecar_path
from .idx import find_idx_files
from .registry import DATASETS, UNSET, DatasetSpec, SizeSetting, canonical_name, dataset_spec, load_dataset

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


def _size(text: str) -> int:
    """A ``--image-size``/``--resize`` value: pixels, 0 for none."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = none), got {value}")
    return value


def _radii(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.4g}" for v in values)


def _metadata_lines(spec: DatasetSpec) -> list[str]:
    """The papers' metadata of a spec: normalisation constants, radii, Cohen's selection, size settings."""
    lines = [f"  mean / std (informational, not applied): {spec.mean or '-'} / {spec.std or '-'}",
             f"  reported radii: {_radii(spec.reported_radii)}"]
    lines += [f"    {paper}: {_radii(radii)}" for paper, radii in spec.radii_by_paper]
    if spec.cohen_selection is not None:
        sel = spec.cohen_selection
        lines.append(f"  Cohen et al. selection: skip {sel.skip}, {sel.num_images} images ({sel.source})")
    if spec.image_options is not None:
        lines.append(f"  image settings: {spec.image_options.describe()} (image_size={spec.image_options.image_size}, "
                     f"resize={spec.image_options.resize})")
    return lines


def _info(name: str, data_root: str | None, download: bool, image_size: SizeSetting = UNSET,
          resize: SizeSetting = UNSET) -> int:
    key = canonical_name(name)
    spec = dataset_spec(key, data_root if key in ("imagefolder", "tiny-imagenet") else None,
                        image_size=image_size, resize=resize)
    print(f"{spec.name}: {spec.description}")
    print(f"  num_classes: {spec.num_classes}")
    print(f"  input_shape: {spec.input_shape}")
    print(f"  class_names: {', '.join(spec.class_names) if spec.class_names else '(from the tree)'}")
    for line in _metadata_lines(spec):
        print(line)
    if spec.name in CIFAR_LAYOUTS:
        matches = official_md5_matches(spec.name, data_root)
        present = {f: m for f, m in matches.items() if m is not None}
        if present:
            official = sum(bool(m) for m in present.values())
            print(f"  official MD5: {official} of {len(present)} files present match torchvision's record"
                  + ("" if official == len(present) else " (not the official files; loading checks structure)"))
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
            ds = load_dataset(spec.name, split, data_root, download=download, image_size=image_size, resize=resize)
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
    info.add_argument("--image-size", type=_size, default=UNSET,
                      help="image-file datasets: centre crop size in pixels (0 = no crop)")
    info.add_argument("--resize", type=_size, default=UNSET,
                      help="image-file datasets: shorter side resized to this (0 = no resize)")
    build = sub.add_parser("build-embedded", help="regenerate the embedded Fashion-MNIST evaluation subset")
    build.add_argument("--source-dir", default=None, help="folder with t10k-*-ubyte(.gz) (default: usual lookup)")
    build.add_argument("--out", default=str(EMBEDDED_PATH), help=f"output .npz (default: {EMBEDDED_PATH})")
    build.add_argument("--per-class", type=_positive_int, default=EMBEDDED_PER_CLASS)
    build.add_argument("--overwrite-shipped", action="store_true",
                       help=f"allow --out to lie in {EMBEDDED_DIR}, replacing the shipped subset and its sidecar")
    args = parser.parse_args(argv)
    if args.command == "build-embedded" and is_within(Path(args.out).expanduser().parent, EMBEDDED_DIR) \
            and not args.overwrite_shipped:   # compared as real folders: a link or a bind mount is seen through
        build.error(f"--out {args.out} lies in {EMBEDDED_DIR}, the shipped files; add --overwrite-shipped to replace "
                    "them, or give --out another path")
    try:
        if args.command == "list":
            for spec in DATASETS.values():
                selection = spec.cohen_selection
                extra = f"; Cohen selection: skip {selection.skip}, {selection.num_images}" if selection else ""
                print(f"{spec.name:24s} {str(spec.num_classes or '?'):>4s} classes  {str(spec.input_shape):15s} "
                      f"{spec.description}\n{'':26s}radii: {_radii(spec.reported_radii)}{extra}")
            return 0
        if args.command == "info":
            return _info(args.name, args.data_root, args.download, args.image_size, args.resize)
        record = build_embedded_subset(args.out, args.source_dir, args.per_class)
        print(f"wrote {args.out}: {record['count']} images, {record['size_bytes']} bytes, sha256 {record['sha256']}")
        print(f"wrote {sidecar_path(Path(args.out))}")
        return 0
    except EXPECTED_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    cli_exit(main)
