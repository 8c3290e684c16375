"""``python -m bench.attack --results DIR``: rerun the attack stage of a finished run with other settings.

Command-line leaf over :mod:`bench.audit.robustness` (which lists the files it writes). Errors are one
line on stderr (:mod:`bench.common.cli`).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .audit.robustness import robustness_settings, run_robustness, soundness_failures
from .certify.machine import set_threads
from .certify.runs import MonteCarloSettings
from .common.cli import checked, cli_exit, writable_dir
from .common.cli_help import DefaultsHelpFormatter
from .common.config import ModelTable, load_experiment
from .common.env import THREADS_PER_CPU, max_threads, resolve_device, stored_path
from .common.experiment import AttackSettings
from .common.files import FolderInUseError, FolderLock
from .data.selection import select_images
from .models.experiment_models import load_experiment_models, models_from_folder


def _targets(text: str) -> int | None:
    if text.lower() == "all":
        return None
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0 or 'all'")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = AttackSettings()
    parser = argparse.ArgumentParser(
        prog="python -m bench.attack",
        description=(
            "Empirical robustness and soundness audit of a certification run. Reads RESULTS/certify.tsv and "
            "RESULTS/manifest.json (from `python -m bench.run`), attacks the same images with the same models "
            "(l2: a minimum-norm search, then PGD with restarts, untargeted + runner-up targets, at each radius), "
            "and writes robustness.csv (empirical robust accuracy per model and radius, Table 2), sanity.csv "
            "(certified vs empirical accuracy of every method, violations with example ids), soundness.csv "
            "(every deterministic certificate attacked at 0.999 r: broken must be 0), "
            "paper_criterion.csv (the public FaRS code's non-certificate `logit_y / ||W|| > eps` and its "
            "sparsemax variant: how many of its claims the attack breaks), smoothed_attack.csv (SmoothAdv-style "
            "attack on the smoothed classifiers of cohen and fars-mc at 0.999 r, re-estimated with fresh noise, "
            "rate vs alpha), lipschitz_audit.json and soundness.md; then rewrites the run's report (summary.md "
            "with the audit section, Tables 1 and 2, the figures) in --out from these files. Exit status 3 when a "
            "deterministic certificate is broken or the sanity check fails for one."),
        formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--results", type=Path, required=True,
                        help="run folder holding certify.tsv and manifest.json, e.g. results/fashion-mnist/quick")
    parser.add_argument("--models", type=Path, default=None,
                        help="checkpoint folder (default: the one recorded in manifest.json)")
    parser.add_argument("--config", type=Path, default=None,
                        help="the experiment file whose [models.NAME] tables rebuild the run's models; required "
                             "for models of format \"torch\" (their factory is code: it is imported and called "
                             "only from a file named here, never from what manifest.json records)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: --results)")
    parser.add_argument("--radii", type=float, nargs="+", default=list(defaults.radii),
                        help="l2 radii (pixel space) where the full PGD runs; 0.05 0.1 0.2 0.3 are always added")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="PGD steps per run")
    parser.add_argument("--restarts", type=int, default=defaults.restarts,
                        help="PGD runs per attack kind (first from x, the others from random points in the ball)")
    parser.add_argument("--targets", type=_targets, default=defaults.targets,
                        help="runner-up classes attacked with a targeted run each, besides the untargeted run "
                             "('all': every other class)")
    parser.add_argument("--audit-targets", type=_targets, default=defaults.audit_targets,
                        help="runner-up targets in the 0.999 r audit of deterministic certificates (every restart "
                             "runs untargeted + these); 'all': every other class")
    parser.add_argument("--min-norm-steps", type=int, default=defaults.min_norm_steps,
                        help="steps of the minimum-norm search run on every example first")
    parser.add_argument("--mc-sample", type=int, default=defaults.mc_sample,
                        help="certified examples per Monte Carlo run attacked on the smoothed classifier (0: skip)")
    parser.add_argument("--smooth-samples", type=int, default=defaults.smooth_samples,
                        help="noise draws per step of the smoothed-classifier attack")
    parser.add_argument("--smooth-steps", type=int, default=defaults.smooth_steps,
                        help="steps of the smoothed-classifier attack")
    parser.add_argument("--lipschitz-images", type=int, default=defaults.lipschitz_images,
                        help="images of the fresh Lipschitz audit of the backbone")
    parser.add_argument("--seed", type=int, default=0, help="seed of random starts and of the sampled examples")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _load_manifest(results: Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    tsv, manifest = results / "certify.tsv", results / "manifest.json"
    if not tsv.is_file():
        parser.error(f"no certify.tsv in {results}: run `python -m bench.run --out {results}` first "
                     "(this command attacks the examples a certification run certified)")
    if not manifest.is_file():
        parser.error(f"no manifest.json in {results}: it records which images and Monte Carlo settings "
                     "certify.tsv used; re-run `python -m bench.run` to write it")
    try:
        record = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        parser.error(f"{manifest} is not valid JSON ({err}); re-run `python -m bench.run --out {results}` "
                     "to rewrite it")
    if not isinstance(record, dict) or not isinstance(record.get("config", {}), dict):
        parser.error(f"{manifest} is not a manifest written by `python -m bench.run` (no config object)")
    return record


def _refuse_code(parser: argparse.ArgumentParser, tables: Sequence[ModelTable], experiment_file: Path,
                 results: Path) -> None:
    """Refuse to rebuild ``torch``-format models from the experiment file a manifest names: their
    ``factory`` would be imported and called, and a results folder is data, not code."""
    factories = [f"{t.name} ({t.spec.get('factory')})" for t in tables if t.spec.get("format") == "torch"]
    if factories:
        parser.error(f"{results / 'manifest.json'} names the experiment file {experiment_file}, whose model(s) "
                     f"{', '.join(factories)} are built by calling a factory: a results folder never runs code; "
                     "pass --config FILE, the experiment file you trust, to rebuild them")


def main(argv: list[str] | None = None) -> int:
    """Attack a finished run; returns the exit status: 3 when a deterministic certificate is broken, else 0.

    Raises:
        SystemExit: (2) a flag out of range, no certify.tsv or manifest.json (or an invalid one) in --results,
            models that cannot be loaded or are not the run's, models of format "torch" without --config
            (nothing named in a results folder is imported or called), an --out that is a file or cannot be
            written or that another live process owns;
            an unknown --device.
        ValueError: a results file that cannot be read (turned into one line by :func:`bench.common.cli.run_cli`).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    checks = [(args.steps >= 1, "--steps must be >= 1"), (args.restarts >= 1, "--restarts must be >= 1"),
              (all(r > 0 and math.isfinite(r) for r in args.radii), "--radii must be > 0"),
              (args.min_norm_steps >= 1, "--min-norm-steps must be >= 1"),
              (args.mc_sample >= 0, "--mc-sample must be >= 0"),
              (args.smooth_samples >= 1 and args.smooth_steps >= 1, "--smooth-samples/--smooth-steps must be >= 1"),
              (args.lipschitz_images >= 1, "--lipschitz-images must be >= 1"),
              (1 <= args.threads <= max_threads(),
               f"--threads {args.threads}: must be between 1 and {max_threads()} ({THREADS_PER_CPU} per CPU of this "
               "machine)")]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    manifest = _load_manifest(args.results, parser)
    out = args.out or args.results
    checked(parser, lambda: writable_dir(out))
    lock = FolderLock(out, "bench.attack")   # one command at a time writes into a folder
    try:
        lock.acquire()
    except FolderInUseError as err:
        parser.error(str(err))
    try:
        return _attack(args, parser, manifest, out)
    finally:
        lock.release()


def _attack(args: argparse.Namespace, parser: argparse.ArgumentParser, manifest: dict[str, Any], out: Path) -> int:
    """The attack of :func:`main` once its flags are checked and ``out`` is owned."""
    device = checked(parser, lambda: resolve_device(args.device))
    set_threads(args.threads)   # bounded: a huge count crashes torch's thread pool
    config = manifest.get("config", {})
    # runs of earlier versions stored the models' folder as config["models"]; now config holds their hashes
    recorded = config.get("models")
    dataset = config.get("dataset", "fashion-mnist")
    if args.models is not None and args.config is not None:
        parser.error("pass --models (a checkpoint folder) or --config (an experiment file), not both")
    models = args.models if args.config is None else None
    if models is None and args.config is None:
        models = stored_path(manifest.get("models_dir") or (recorded if isinstance(recorded, str) else None))
    experiment_file = args.config or (stored_path(manifest.get("experiment_file")) if models is None else None)
    if models is None and experiment_file is None:
        parser.error(f"{args.results / 'manifest.json'} does not say where its models are: pass --models or --config")
    source = models if models is not None else experiment_file
    try:
        if models is not None:
            loaded = models_from_folder(models, dataset)
        else:
            assert experiment_file is not None
            tables = load_experiment(experiment_file).models
            if args.config is None:
                _refuse_code(parser, tables, experiment_file, args.results)
            loaded = load_experiment_models(tables, dataset, config.get("heads"))
    except (ValueError, OSError) as err:   # CheckpointError, ModelSpecError, ConfigError, a missing file
        parser.error(f"cannot load the models of {source}: {err} (pass --models or --config)")
    if isinstance(recorded, dict) and recorded != loaded.fingerprint():
        parser.error(f"the models of {source} are not the ones {args.results} was certified with "
                     "(content hashes differ); pass --models with the right folder")
    loaded.to(device)
    images, labels, indices = select_images(config.get("dataset", "fashion-mnist"),
                                            stored_path(manifest.get("data_root", config.get("data_root"))),
                                            num_images=int(config.get("num_images", 10**9)),
                                            skip=int(config.get("skip", 1)), exact=False)
    mc_record = manifest.get("monte_carlo", {})
    mc = MonteCarloSettings(n0=int(mc_record.get("n0", config.get("n0", 100))),
                            n=int(mc_record.get("n", config.get("n", 1000))),
                            alpha=float(mc_record.get("alpha", config.get("alpha", 0.001))),
                            batch_size=int(mc_record.get("batch_size", 1000)),
                            seed=int(mc_record.get("seed", config.get("seed", 0))),
                            sequential=bool(mc_record.get("sequential", False)),
                            radii=tuple(float(r) for r in mc_record.get("radii", ())))
    attack = AttackSettings(radii=tuple(args.radii), steps=args.steps, restarts=args.restarts, targets=args.targets,
                            audit_targets=args.audit_targets, min_norm_steps=args.min_norm_steps,
                            mc_sample=args.mc_sample, smooth_samples=args.smooth_samples,
                            smooth_steps=args.smooth_steps, lipschitz_images=args.lipschitz_images)
    settings = robustness_settings(attack, seed=args.seed, pgd_seed=args.seed)
    try:
        run_robustness(loaded, images.to(device), labels, indices, args.results / "certify.tsv", out, mc, settings,
                       progress=not args.no_progress)
    except KeyError as err:
        raise ValueError(f"{args.results / 'certify.tsv'} lacks an entry this run needs: {err}") from None
    _write_reports(args.results, out, manifest)
    return 3 if soundness_failures(out) else 0


def _write_reports(results: Path, out: Path, manifest: dict[str, Any]) -> None:
    """The run's report in ``out`` from its files, the attack's new ones included: ``summary.md`` with the
    audit section, Tables 1 and 2, the figures (with the run's reported radii and figure widths)."""
    import pandas as pd

    from .report import PAPER_RADII, write_reports

    radii = manifest.get("radii")
    widths = ((manifest.get("experiment") or {}).get("output") or {}).get("widths") or ["full"]
    scaling = pd.read_csv(results / "scaling.csv") if (results / "scaling.csv").is_file() else None
    write_reports(results / "certify.tsv", out, radii=sorted({0.0, *map(float, radii)}) if radii else PAPER_RADII,
                  scaling=scaling, manifest=manifest, widths=widths, run_dir=out)


if __name__ == "__main__":
    cli_exit(main)
