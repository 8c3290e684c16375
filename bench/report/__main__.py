"""Command line of :func:`~bench.report.write.write_reports`: ``python -m bench.report RUN_DIR``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..common.cli import cli_exit
from ..common.units import parse_radius
from .metrics import PAPER_RADII
from .paper_metrics import check_monte_carlo_radii, rows_of_run
from .read import REQUIRED_COLUMNS, check_unique_rows, import_cohen, read_results
from .write import DEFAULT_FORMATS, FORMATS, monte_carlo_settings, write_reports

#: columns of an attack-results table (``--empirical``, ``robustness.csv``)
EMPIRICAL_COLUMNS = ("model", "radius", "accuracy")


def _read_table(path: str | Path, columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a CSV or TSV (by extension; '.tsv' -> tab); ValueError naming the file when ``columns`` are missing."""
    path = Path(path)
    table = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(columns)}, found {list(table.columns)}")
    return table


def _read_manifest(path: Path, given: bool) -> dict | None:
    """The run manifest at ``path`` (None when absent and not ``given`` on the command line).

    Raises:
        ValueError: a ``--manifest`` that does not exist, a file that is not JSON or not a JSON object.
    """
    if not path.is_file():
        if given:
            raise ValueError(f"--manifest {path} does not exist (or is not a file)")
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not a run manifest: a JSON object is expected, got a {type(manifest).__name__}")
    return manifest


def _check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse flag values no run can have (exit 2, one line)."""
    bad_radii = [r for r in args.radii or () if not (math.isfinite(r) and r >= 0)]
    if bad_radii:
        parser.error(f"--radii values must be finite and >= 0, got {bad_radii[0]}")
    if args.n is not None and args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    if args.alpha is not None and not 0 < args.alpha < 1:
        parser.error(f"--alpha must lie in (0, 1), got {args.alpha}")


def _lipschitz_by_model(manifest: dict | None) -> dict[str, float]:
    """Each model's backbone constant recorded in the manifest (``models.NAME.lipschitz``), where it has one."""
    models = (manifest or {}).get("models")
    if not isinstance(models, dict):
        return {}
    return {str(name): float(entry["lipschitz"]) for name, entry in models.items()
            if isinstance(entry, dict) and isinstance(entry.get("lipschitz"), (int, float))
            and not isinstance(entry.get("lipschitz"), bool)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description=(
            "Regenerate the certification reports of a run directory from its per-example "
            "TSV (RUN_DIR/certify.tsv, columns: " + " ".join(REQUIRED_COLUMNS) + "). Writes "
            "summary.csv, summary.md (certified accuracy at l2 radii 0/0.05/0.1/0.2/0.3, ACR, "
            "abstention rate, seconds per image, speed-up vs the Cohen et al. run on the same model and "
            "sigma), certified_accuracy.csv (fine radius grid, long format), "
            "certified_accuracy.png, time_budget.png, speedup.md and speedup.png (a table only, when the run "
            "recorded noisy timings); plus PDF copies, the tables "
            "table_certified/table1/table2 (.md and .tex, 95 percent Clopper-Pearson intervals) and cohen/*.tsv "
            "(each run in Cohen et al.'s result-file format). summary.md keeps the sections the run wrote: its "
            "timing and noisy-timing warning (from manifest.json) and the attack stage's audit (RUN_DIR/soundness.md), "
            "so that regenerating a finished run's report rewrites the same file."
        ),
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory containing certify.tsv")
    parser.add_argument("--tsv", type=Path, default=None,
                        help="per-example TSV to read (default: RUN_DIR/certify.tsv)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where to write the reports (default: RUN_DIR)")
    parser.add_argument("--empirical", type=Path, default=None,
                        help="optional CSV/TSV with columns model,radius,accuracy (attack results) "
                             "drawn on certified_accuracy.png (black, in the model's line style) with --attacks")
    parser.add_argument("--scaling", type=Path, default=None,
                        help="optional CSV/TSV with columns method,model,n,seconds[,seconds_p25,seconds_p75]; "
                             "also writes scaling.png")
    parser.add_argument("--attacks", action="store_true",
                        help="draw the attack (empirical) curves on certified_accuracy.png: from --empirical, "
                             "else RUN_DIR/robustness.csv")
    parser.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                        help="report only these methods (e.g. cohen fars-mc fars-closed lipschitz-margin)")
    parser.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                        help="report only these models (e.g. sll+ce cnn-noise0.25)")
    parser.add_argument("--sigma", nargs="+", type=float, default=None, metavar="SIGMA",
                        help="report only runs at these noise levels; deterministic runs (no sigma) are kept as "
                             "references (drop them with --methods)")
    parser.add_argument("--radii", nargs="+", type=parse_radius, default=None, metavar="R",
                        help="l2 radii of every table and the time-budget panels, as numbers or fractions "
                             "(36/255 is printed as 36/255) (default: the run's, from its manifest, else "
                             "0 0.05 0.1 0.2 0.3)")
    parser.add_argument("--width", nargs="+", default=["full"], metavar="W",
                        help="figure width: 'column' (3.3 in), 'full' (7 in) or inches; several write several "
                             "(the first with the plain names, the others with _column/_full/_<W>in)")
    parser.add_argument("--per-sigma", action="store_true",
                        help="certified_accuracy with one panel per sigma and model instead of the envelope "
                             "over sigma")
    parser.add_argument("--format", nargs="+", default=list(DEFAULT_FORMATS), choices=FORMATS, dest="formats",
                        metavar="FMT", help="figure formats among png, pdf, svg (default: png pdf; png is always "
                                            "written)")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="manifest.json with CERTIFY's n and alpha for the Monte Carlo cut-off "
                             "(default: RUN_DIR/manifest.json when present)")
    parser.add_argument("--n", type=int, default=None,
                        help="CERTIFY's number of samples n (overrides the manifest)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="CERTIFY's failure probability alpha (overrides the manifest)")
    parser.add_argument("--import-cohen", nargs="+", type=Path, default=None, metavar="FILE",
                        help="also report these result files of Cohen et al.'s code/certify.py (columns idx label "
                             "predict radius correct time) as runs of method 'cohen'; the model and sigma come from "
                             "the file name (e.g. cohen_cnn_sigma0.25.tsv, or .../noise_0.25/test/sigma_0.25)")
    return parser


def _run_radii(manifest: dict | None) -> list[float] | None:
    """The radii a run reported (``manifest.json``'s ``radii``, with 0 for the clean accuracy), if recorded."""
    radii = (manifest or {}).get("radii")
    return sorted({0.0, *(float(r) for r in radii)}) if radii else None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m bench.report RUN_DIR``.

    Prints one ``name path`` line per written file and returns 0; on invalid
    input prints one ``error: ...`` line to stderr and returns 2 (a missing TSV
    is an argparse usage error, exit status 2).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    _check_flags(parser, args)
    tsv = args.tsv or args.run_dir / "certify.tsv"
    if not tsv.is_file() and not args.import_cohen:
        parser.error(f"no such file: {tsv}")
    out_dir = args.out_dir or args.run_dir
    manifest_path = args.manifest or args.run_dir / "manifest.json"
    try:
        manifest = _read_manifest(manifest_path, given=args.manifest is not None)
    except ValueError as exc:
        parser.error(str(exc))
    run_n, run_alpha = monte_carlo_settings(manifest)
    n, alpha, lipschitz = args.n or run_n, args.alpha or run_alpha, _lipschitz_by_model(manifest)
    try:
        frames = []
        if tsv.is_file():   # Cohen files alone make a report too
            frame = read_results(tsv)
            check_monte_carlo_radii(frame, str(tsv), n, alpha, lipschitz, first_line=2)
            frame, dropped = rows_of_run(frame, manifest)
            if len(dropped):
                first = dropped.iloc[0]
                print(f"warning: {tsv}: {len(dropped)} row(s) of runs or images that {manifest_path} does not list "
                      f"were left out (e.g. {first['method']} {first['model']} on image {int(first['idx'])})",
                      file=sys.stderr)
            frames.append(frame)
        for path in args.import_cohen or ():
            imported = import_cohen(path)
            check_monte_carlo_radii(imported, str(path), n, alpha, lipschitz, first_line=2)
            frames.append(imported)
        results = pd.concat(frames, ignore_index=True)
        check_unique_rows(results, "--import-cohen" if args.import_cohen else str(tsv))
        empirical = _read_table(args.empirical, EMPIRICAL_COLUMNS) if args.empirical else None
        if args.attacks and empirical is None and (args.run_dir / "robustness.csv").is_file():
            empirical = _read_table(args.run_dir / "robustness.csv", EMPIRICAL_COLUMNS)
        paths = write_reports(
            results,
            out_dir,
            radii=args.radii or _run_radii(manifest) or PAPER_RADII,
            empirical=empirical,
            scaling=_read_table(args.scaling) if args.scaling else None,
            manifest=manifest,
            n=args.n,
            alpha=args.alpha,
            formats=args.formats,
            methods=args.methods,
            models=args.models,
            sigmas=args.sigma,
            attacks=args.attacks,
            robustness=_read_table(args.run_dir / "robustness.csv")
            if (args.run_dir / "robustness.csv").is_file() else None,
            run_dir=args.run_dir,
            widths=args.width,
            per_sigma=args.per_sigma,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, p in paths.items():
        print(f"{name:24s} {p}")
    return 0


if __name__ == "__main__":
    cli_exit(main)
