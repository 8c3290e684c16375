"""The per-example results file of a run (``certify.tsv``): its format, reading, resuming and merging.

One tab-separated row per (run, example): Cohen et al.'s columns ``idx label predict radius correct
time`` plus ``method model sigma samples seconds cpu_seconds page_faults``: ``seconds`` is the certify call's
wall time, ``cpu_seconds`` the process CPU time (user + system, every thread) and ``page_faults`` the minor
page faults over the same call. Rows are appended and flushed one by one, so an
interrupted run loses at most the row being written (a partial last line is cut on resume).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import sys
from pathlib import Path

import torch

from smoothing import MonteCarloCertifier, max_certifiable_radius

from ..common.units import CUTOFF_SLACK, RADIUS_DIGITS
from . import distributed as dist_
from .manifest import ResumeError
from .runs import Run

COLUMNS = ("idx", "label", "predict", "radius", "correct", "time", "method", "model", "sigma", "samples", "seconds",
           "cpu_seconds", "page_faults")
#: the header of files written before the CPU time and page faults were recorded (read by the reports, not resumed)
COLUMNS_WITHOUT_USAGE = COLUMNS[:11]

#: What the ``sigma`` column holds for a deterministic run (no noise level); older files have a blank,
#: and ``nan`` is read the same way.
NO_SIGMA = "-"


class ResultsFileError(ValueError):
    """A complete data line of a results TSV that is not a row this harness writes (the message names the
    file, the line number and the value)."""


#: How each column of a data line is read (``sigma`` also accepts :data:`NO_SIGMA`, blank and ``nan``).
_COLUMN_TYPES = {"idx": int, "label": int, "predict": int, "radius": float, "correct": int, "sigma": float,
                 "samples": int, "seconds": float, "cpu_seconds": float, "page_faults": int}


def row_key(line: str) -> tuple[str, int]:
    """(run key, dataset index) of a data line of the results TSV (one :func:`read_lines` returned)."""
    f = dict(zip(COLUMNS, line.split("\t"), strict=False))
    sigma = float(f["sigma"]) if f["sigma"].strip() not in (NO_SIGMA, "", "nan", "NaN") else math.nan
    return f"{f['method']}|{f['model']}|{'-' if math.isnan(sigma) else f'{sigma:g}'}", int(f["idx"])


def check_line(line: str, tsv: Path, number: int) -> None:
    """Refuse a data line that does not have :data:`COLUMNS`' fields with their types.

    Raises:
        ResultsFileError: a short or long line, or a field that does not parse (line ``number`` of ``tsv``,
            counted from 1 with the header).
    """
    fields = line.split("\t")
    if len(fields) != len(COLUMNS):
        raise ResultsFileError(f"{tsv} line {number}: {len(fields)} fields, a result row has {len(COLUMNS)} "
                               f"({' '.join(COLUMNS)}): {line[:80]!r}; delete that line (or use --overwrite)")
    for name, value in zip(COLUMNS, fields, strict=True):
        kind = _COLUMN_TYPES.get(name)
        if kind is None or (name == "sigma" and value.strip() in (NO_SIGMA, "", "nan", "NaN")):
            continue
        try:
            kind(value)
        except ValueError:
            raise ResultsFileError(f"{tsv} line {number}: {name} = {value[:40]!r} is not "
                                   f"{'an integer' if kind is int else 'a number'}; delete that line "
                                   "(or use --overwrite)") from None


def read_lines(tsv: Path, repair: bool = False) -> list[str]:
    """The complete data lines of a results TSV (none if it does not exist).

    A partial last line (a crash in the middle of a write) is ignored; with ``repair`` it is also cut
    from the file by one ``os.truncate`` at the end of the last complete line (a crash during the repair
    leaves the file as it was or repaired, never shorter), which only the process that appends to ``tsv``
    may do.

    Raises:
        ResultsFileError: a complete line that is not a result row (:func:`check_line`).
        SystemExit: the header is not :data:`COLUMNS`.
    """
    if not tsv.is_file():
        return []
    data = tsv.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        if repair:
            os.truncate(tsv, len(data))
    try:
        lines = [line.removesuffix("\r") for line in data.decode("utf-8").split("\n")[:-1]]
    except UnicodeDecodeError as err:
        raise ResultsFileError(f"{tsv}: byte {err.start} is not UTF-8 text; not a results file of this harness "
                               "(use --overwrite or another --out)") from None
    if lines and tuple(lines[0].split("\t")) == COLUMNS_WITHOUT_USAGE:
        raise SystemExit(f"{tsv} has no cpu_seconds and page_faults columns (a file of an earlier version of this "
                         "harness): its rows cannot be resumed; use --overwrite or --out (python -m bench.report "
                         "still reads it)")
    if not lines or tuple(lines[0].split("\t")) != COLUMNS:
        raise SystemExit(f"{tsv} is not a results file of this harness (unexpected header); use --overwrite or --out")
    for number, line in enumerate(lines[1:], start=2):
        check_line(line, tsv, number)
    return lines[1:]


def read_done(tsv: Path, *more: Path) -> set[tuple[str, int]]:
    """(run key, idx) of the complete rows in ``tsv`` and the files ``more`` (read only); repairs ``tsv``."""
    lines = read_lines(tsv, repair=True)
    for path in more:
        lines += read_lines(path)
    return {row_key(line) for line in lines}


def radius_limits(runs: list[Run]) -> dict[str, float]:
    """Per run key, the largest radius its method can return: for a Monte Carlo run the cut-off
    sigma * Phi^-1(alpha^(1/n)) / L (:func:`smoothing.max_certifiable_radius`: CERTIFY's bound when all n
    samples agree; with sequential CERTIFY n is the cap), for a deterministic run +inf."""
    limits: dict[str, float] = {}
    for run in runs:
        c = run.certifier
        limits[run.key] = (max_certifiable_radius(c.n, c.sigma, c.alpha) / c.lipschitz
                           if isinstance(c, MonteCarloCertifier) else math.inf)
    return limits


def check_rows(path: Path, lines: list[str], runs: list[Run]) -> None:
    """Refuse a row of ``path`` (its data ``lines``, as :func:`read_lines` returns them) whose radius no run
    could have written: a Monte Carlo radius that is not finite or lies above its run's cut-off
    (:func:`radius_limits`, with :data:`CUTOFF_SLACK`). Rows of runs not in ``runs`` are not judged here
    (:func:`merge_results` drops them).

    Raises:
        ResumeError: naming the file, the line, the run and the value.
    """
    limits = radius_limits(runs)
    for number, line in enumerate(lines, start=2):   # line 1 is the header
        fields = line.split("\t")
        if len(fields) < len(COLUMNS):
            continue   # a short line is read_lines' and row_key's to judge
        key, idx = row_key(line)
        limit = limits.get(key)
        if limit is None or limit == math.inf:
            continue
        try:
            radius = float(fields[COLUMNS.index("radius")])
        except ValueError:
            radius = math.nan
        if not radius <= limit * (1 + CUTOFF_SLACK):
            raise ResumeError(f"{path} line {number}: radius {fields[COLUMNS.index('radius')]!r} of run {key} on "
                              f"image {idx} is above {limit:.6g}, the largest radius its CERTIFY can return "
                              "(sigma * Phi^-1(alpha^(1/n)) / L): a corrupted results file; use --overwrite or "
                              "another --out")


def format_row(run: Run, idx: int, label: int, prediction: int, radius: float, seconds: float, samples: int,
               cpu_seconds: float, page_faults: int) -> str:
    """One data line of the results TSV (Cohen et al.'s six columns, then ours); sigma :data:`NO_SIGMA` if none."""
    correct = int(prediction == label)
    sigma = NO_SIGMA if math.isnan(run.sigma) else f"{run.sigma:g}"
    values = (idx, label, prediction, f"{radius:.{RADIUS_DIGITS}g}", correct, str(_dt.timedelta(seconds=seconds)),
              run.method, run.model, sigma, samples, f"{seconds:.6g}", f"{cpu_seconds:.6g}", int(page_faults))
    return "\t".join(str(v) for v in values) + "\n"


def merge_results(out: Path, tsv: Path, runs: list[Run], indices: torch.Tensor) -> int:
    """Merge ``tsv`` and every shard file into ``tsv`` in one-process order (atomic); removes the shards.

    Only rows of ``runs`` on the selected images ``indices`` are kept: a row of another run or of an image
    the experiment does not select (a file edited or mixed up by hand) would count in the reports as an
    example of the run. Dropped rows are reported on stderr.

    Returns the number of data rows of the merged file.
    """
    shards = dist_.shard_files(out)
    order = {(run.key, int(idx)): r * len(indices) + p for r, run in enumerate(runs) for p, idx in enumerate(indices)}
    header = "\t".join(COLUMNS)
    sources = [read_lines(tsv)] + [read_lines(s) for s in shards]
    foreign = [line for lines in sources for line in lines if line != header and row_key(line) not in order]
    if foreign:
        key, idx = row_key(foreign[0])
        print(f"warning: {tsv}: dropped {len(foreign)} row(s) of runs or images this experiment does not have "
              f"(e.g. run {key}, image {idx})", file=sys.stderr)
        sources = [[line for line in lines if line == header or row_key(line) in order] for lines in sources]
    lines = dist_.merge_rows(header, sources, order, row_key)
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
