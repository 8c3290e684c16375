"""Command line of :func:`~bench.report.write.write_reports`: ``python -m bench.report RUN_DIR``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .results import REQUIRED_COLUMNS
from .write import write_reports


def _read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or TSV (by extension; '.tsv' -> tab)."""
    path = Path(path)
    return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description=(
            "Regenerate the certification reports of a run directory from its per-example "
            "TSV (RUN_DIR/certify.tsv, columns: " + " ".join(REQUIRED_COLUMNS) + "). Writes "
            "summary.csv, summary.md (certified accuracy at l2 radii 0/0.05/0.1/0.2/0.3, ACR, "
            "abstention rate, seconds per image, speed-up vs Cohen et al. on the same backbone "
            "family), certified_accuracy.csv (fine radius grid, long format), "
            "certified_accuracy.png and speedup.png."
        ),
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory containing certify.tsv")
    parser.add_argument("--tsv", type=Path, default=None,
                        help="per-example TSV to read (default: RUN_DIR/certify.tsv)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where to write the reports (default: RUN_DIR)")
    parser.add_argument("--empirical", type=Path, default=None,
                        help="optional CSV/TSV with columns model,radius,accuracy (attack results) "
                             "overlaid as dashed lines on certified_accuracy.png")
    parser.add_argument("--scaling", type=Path, default=None,
                        help="optional CSV/TSV with columns method,model,n,seconds[,seconds_p25,seconds_p75]; "
                             "also writes scaling.png")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m bench.report RUN_DIR``.

    Prints one ``name path`` line per written file and returns 0; on invalid
    input prints one ``error: ...`` line to stderr and returns 2 (a missing TSV
    is an argparse usage error, exit status 2).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    tsv = args.tsv or args.run_dir / "certify.tsv"
    if not tsv.is_file():
        parser.error(f"no such file: {tsv}")
    out_dir = args.out_dir or args.run_dir
    try:
        paths = write_reports(
            tsv,
            out_dir,
            empirical=_read_table(args.empirical) if args.empirical else None,
            scaling=_read_table(args.scaling) if args.scaling else None,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, p in paths.items():
        print(f"{name:24s} {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
