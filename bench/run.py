"""``python -m bench.run``: certify test images with every method, time them, and write the results.

Outputs in ``--out`` (default ``runs/<dataset>/<preset>/`` under the current directory, git-ignored):

* ``certify.tsv``: one row per (run, example) with Cohen's columns ``idx label predict radius correct
  time`` plus ``method model sigma samples seconds``; appended and flushed row by row, so an
  interrupted run loses nothing and re-running the same command resumes where it stopped;
* ``manifest.json``: configuration (models and images identified by content), package versions,
  device, git commit, start and end times;
* ``summary.csv``, ``summary.md``, ``certified_accuracy.csv`` and the plots (see :mod:`bench.report`);
* with the scaling stage, ``scaling.csv/png`` and the cost model; with the attack stage, the audit files.

Several processes or GPUs: ``torchrun --nproc-per-node N -m bench.run ...`` shards the examples across
the N ranks and merges their results into the same files, equal row for row to a one-process run
(see :mod:`bench.certify.distributed`). This module is a command-line leaf: nothing imports it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli import checked, cli_exit, writable_dir
from .cli_help import DefaultsHelpFormatter
from .config import ConfigError, load_experiment
from .env import (
    THREADS_PER_CPU,
    cpu_allocator,
    device_name,
    full_fp32,
    max_threads,
    portable_path,
    resolve_device,
    runs_dir,
    tune_cpu_allocator,
)
from .methods import METHODS
from .names import DATASET_NAMES, HEAD_KINDS
from .provenance import git_commit, package_versions
from .units import parse_radius

if TYPE_CHECKING:   # the stages import PyTorch and the pipeline when they run, after the flags are parsed
    import torch

    from .certify import distributed as dist_
    from .certify.runs import MonteCarloSettings, Run
    from .models.experiment import ExperimentModels

PRESETS: dict[str, dict[str, Any]] = {
    # CPU-sized: the whole default run takes a few minutes on 2 cores.
    "quick": dict(n0=100, n=1000, alpha=0.001, num_images=100, skip=10, sigma=[0.12, 0.25, 0.5],
                  scaling_ns=[100, 1_000, 10_000]),
    # Cohen et al.'s settings: n0 = 100, n = 100,000, alpha = 0.001, 500 images.
    "paper": dict(n0=100, n=100_000, alpha=0.001, num_images=500, skip=2, sigma=[0.12, 0.25, 0.5],
                  scaling_ns=[100, 1_000, 10_000, 100_000]),
}


#: noisy samples per image (``n``, ``n0``, each ``--scaling-ns`` value) above which a run needs
#: ``--allow-long-run``: 100 times Cohen et al.'s n = 100,000 (their ResNet-110 took about 17 s per CIFAR-10
#: image at n = 100,000 on a 2019 GPU, so this bound is already about half an hour per image there)
LONG_RUN_SAMPLES = 10_000_000
#: the largest sample count at all: counts are stored as int64 (the ``samples`` column, the noise streams)
MAX_SAMPLES = 2 ** 63 - 1
#: longest --dist-timeout-hours (a year): a finished rank waits at most this long for the others
MAX_DIST_TIMEOUT_HOURS = 24 * 365

#: the experiment ``python -m bench.run`` runs without ``--config`` (``make run``)
DEFAULT_CONFIG = Path(__file__).resolve().parent / "embedded" / "fashion-mnist-quick.toml"
#: settings neither a preset nor the experiment file sets, and their defaults
DEFAULTS: dict[str, Any] = dict(dataset="fashion-mnist", data_root=None, methods=list(METHODS), heads=list(HEAD_KINDS),
                                seed=0, batch_size="auto", scaling_images=2, attack=True, out=None, radii=None,
                                threads=None, sequential=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Certify test images with Cohen RS, FaRS (Monte Carlo, closed form, bound propagation) and the "
                    "Lipschitz margin on the same images; time each method (device synchronised) and write per-example "
                    "TSV, summary tables and plots. The experiment (dataset, models, methods, sigmas, n0, n, "
                    "alpha, images) is a TOML file (--config; default bench/embedded/fashion-mnist-quick.toml, the "
                    "offline default); every flag below overrides the file, and keys neither sets come from "
                    "--preset. Re-running the same command resumes an interrupted run. Launch with "
                    "`torchrun --nproc-per-node N -m bench.run ...` to shard the images over N processes (one GPU "
                    "each when there are several); the merged results equal a one-process run.",
        formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--config", type=Path, default=None,
                        help="experiment file (TOML; see configs/ and the README's 'Certify your own model'); "
                             f"default: {portable_path(DEFAULT_CONFIG)}")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="defaults for the keys the experiment file leaves out (default: the file's `preset`, "
                             "else quick). quick: CPU-sized n and image count; paper: n0=100, n=100000, "
                             "alpha=0.001, 500 images")
    parser.add_argument("--dataset", default=None, choices=sorted(DATASET_NAMES),
                        help="evaluation dataset (default: the experiment file's). fashion-mnist without --data-root "
                             "uses the embedded 1,000-image evaluation subset shipped with the repo "
                             "(fashion-mnist-embedded names it explicitly); with --data-root, the full test set there")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="dataset folder (default: the experiment file's data_root, else $FARS_DATA_ROOT, else "
                             "data/ in the checkout)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="image-file datasets (imagenet, imagenette, tiny-imagenet, imagefolder): centre-crop "
                             "size (0: no crop; default: the file's image_size, else the dataset's)")
    parser.add_argument("--resize", type=int, default=None,
                        help="image-file datasets: resize the shorter side to this before the crop (0: no resize; "
                             "default: the file's resize, else the dataset's)")
    parser.add_argument("--models", type=Path, default=None,
                        help="a checkpoint folder written by `python -m bench.train`, certified instead of the "
                             "experiment file's [models.*] tables")
    parser.add_argument("--methods", nargs="+", default=None, choices=METHODS,
                        help="methods to run (default: the experiment file's, else all)")
    parser.add_argument("--heads", nargs="+", default=None, choices=HEAD_KINDS,
                        help="heads of a checkpoint folder to certify (default: all)")
    parser.add_argument("--sigma", nargs="+", type=float, default=None,
                        help="noise levels of the Monte Carlo methods (input space for cohen, embedding space for "
                             "fars-mc); a model trained with noise (cnn-noiseS, a model table's `sigma`) runs only at "
                             "its own")
    parser.add_argument("--n", "--num-samples", dest="n", type=int, default=None,
                        help="Monte Carlo estimation samples per image (the cap with --sequential; under torchrun "
                             "write --num-samples: torchrun reads --n as an abbreviation of its own flags)")
    parser.add_argument("--n0", type=int, default=None, help="Monte Carlo selection samples per image")
    parser.add_argument("--allow-long-run", action="store_true",
                        help=f"accept more than {LONG_RUN_SAMPLES:,} samples per image (--n, --n0, --scaling-ns); "
                             "the plan printed after one pilot image per run gives the estimated time")
    parser.add_argument("--alpha", type=float, default=None, help="failure probability of each Monte Carlo certificate")
    parser.add_argument("--num-images", type=int, default=None, help="number of test images to certify")
    parser.add_argument("--skip", type=int, default=None, help="certify every SKIP-th image of the evaluation set")
    parser.add_argument("--sequential", action="store_const", const=True, default=None,
                        help="anytime-valid sequential CERTIFY for cohen and fars-mc: estimation samples in growing "
                             "rounds under a time-uniform confidence sequence, stopping once every --radii value is "
                             "decided (certified, or out of reach); --n is then the cap. Default: Cohen's fixed-n "
                             "CERTIFY (the reference)")
    parser.add_argument("--radii", type=parse_radius, nargs="+", default=None,
                        help="radii reported in the tables and figures, as numbers or fractions (36/255) (default: "
                             "the experiment file's, else the dataset's: the FaRS paper's, Cohen's and SLL's where "
                             "they apply)")
    parser.add_argument("--width", nargs="+", default=["full"], metavar="W",
                        help="width of the report's figures: 'column' (3.3 in), 'full' (7 in) or inches; several "
                             "write several (the first with the plain names, the others with _column/_full)")
    parser.add_argument("--scaling-ns", type=int, nargs="*", default=None,
                        help="after certifying, time cohen and fars-mc on sll+ce at these n (seconds per image "
                             "versus n, with fars-closed as the floor) and write scaling.csv/png; the flag with "
                             "no value skips the sweep (it needs a checkpoint folder with a ce head)")
    parser.add_argument("--scaling-images", type=int, default=None,
                        help="images timed per point of the scaling sweep (default 2)")
    parser.add_argument("--batch-size", default=None,
                        help="noisy samples per forward pass: an integer for every Monte Carlo method, or 'auto' "
                             "(default): cohen at the throughput-best batch of a plain forward of its network on this "
                             "device (searched), fars-mc at 65,536 with the projected sampler (linear heads) and "
                             "10,000 with the direct one. Results do not depend on it (noise is per example)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of this process (default: the CPUs this process may use, divided among "
                             "the torchrun processes, so that timings are not slowed by oversubscription; at most "
                             f"{THREADS_PER_CPU} per CPU of the machine)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...")
    parser.add_argument("--seed", type=int, default=None,
                        help="global seed; with an image's index it fixes that image's noise (default 0)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the experiment file's `out`, else runs/<dataset>/<preset> for "
                             "the default experiment and runs/<file name>/<preset> for others, under the current "
                             "directory, which git ignores; the committed reference results are regenerated with "
                             "`make results`)")
    parser.add_argument("--overwrite", action="store_true", help="discard earlier results in --out instead of resuming")
    parser.add_argument("--no-attack", action="store_true",
                        help="skip the attack stage (python -m bench.attack with its defaults: empirical robust "
                             "accuracy, soundness audit of every certificate, paper-criterion audit, smoothed-"
                             "classifier check, Lipschitz audit); run `python -m bench.attack --results OUT` for "
                             "other settings")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--dist-timeout-hours", type=float, default=48.0,
                        help="under torchrun: how long a rank that finished its shard waits for the others "
                             f"(finite, at most {MAX_DIST_TIMEOUT_HOURS})")
    _preset_defaults_in_help(parser)
    return parser


def _preset_defaults_in_help(parser: argparse.ArgumentParser) -> None:
    """Say in ``--help`` what each preset sets a preset-driven flag to."""
    for action in parser._actions:
        if action.dest in PRESETS["quick"]:
            values = "; ".join(f"{name}: {_show(preset[action.dest])}" for name, preset in PRESETS.items())
            action.help = f"{action.help} (default: the experiment file's, else from --preset, {values})"


def _show(value: Any) -> str:
    return " ".join(f"{v:g}" for v in value) if isinstance(value, list) else f"{value:g}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The run's settings: each flag given, else the experiment file's key, else the preset's, else the default.

    ``args.experiment`` is the parsed file; ``args.model_tables`` its model tables (empty with ``--models``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    from .data import IMAGE_FILE_DATASETS, canonical_name, reported_radii
    config_path = DEFAULT_CONFIG if args.config is None else args.config
    try:
        experiment = load_experiment(config_path)
    except ConfigError as err:
        parser.error(str(err))
    file = experiment.settings
    args.preset = args.preset or file.get("preset", "quick")
    if args.preset not in PRESETS:
        parser.error(f"{config_path}: unknown preset {args.preset!r}; choose from {', '.join(sorted(PRESETS))}")
    if args.no_attack:
        args.attack = False
    else:
        args.attack = None
    for key, default in {**DEFAULTS, **PRESETS[args.preset]}.items():
        if getattr(args, key, None) is None:
            setattr(args, key, file.get(key, default))
    for key in ("image_size", "resize"):   # 0 in a flag or the file: none; absent: the dataset's own
        if getattr(args, key) is None and key in file:
            setattr(args, key, file[key] or 0)
    try:
        args.dataset = canonical_name(args.dataset)
    except ValueError as err:
        parser.error(f"{config_path}: {err}")
    args.batch_size = str(args.batch_size)
    args.experiment = experiment
    _check_settings(parser, args)
    if args.radii is None:
        args.radii = list(reported_radii(args.dataset))
    if args.models is not None:
        args.model_tables = []
    elif experiment.models:
        args.model_tables = list(experiment.models)
    else:
        parser.error(f"{config_path} names no models: add [models.NAME] tables or pass --models DIR")
    if args.out is None:
        name = args.dataset if experiment.path == DEFAULT_CONFIG.resolve() else experiment.path.stem
        args.out = runs_dir(name, args.preset)
    if (args.image_size is not None or args.resize is not None) and args.dataset not in IMAGE_FILE_DATASETS:
        parser.error(f"--image-size/--resize (image_size/resize) apply to the image-file datasets "
                     f"({', '.join(IMAGE_FILE_DATASETS)}), not to {args.dataset}, whose images have one size")
    if args.data_root is not None and not Path(args.data_root).expanduser().is_dir():
        parser.error(f"--data-root {args.data_root} is not a folder (give the folder that holds the dataset's files)")
    checked(parser, lambda: writable_dir(args.out))   # a bad --out fails now, not after the certification
    return args


def _is_width(value: str) -> bool:
    """Whether ``value`` is a figure width :func:`~bench.report.plots.figure_width` accepts."""
    from .report.plots import figure_width  # matplotlib: imported when the settings are checked, not for --help

    try:
        figure_width(value)
    except ValueError:
        return False
    return True


def _check_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every setting in range, whichever of the flags, the file or the preset gave it."""
    methods_ok = all(m in METHODS for m in args.methods)
    heads_ok = all(h in HEAD_KINDS for h in args.heads)
    checks = [
        (methods_ok, f"unknown method in {args.methods}; choose from {', '.join(METHODS)}"),
        (heads_ok, f"unknown head in {args.heads}; choose from {', '.join(HEAD_KINDS)}"),
        (args.n >= 1, "--n must be >= 1"), (args.n0 >= 1, "--n0 must be >= 1"),
        (args.n0 + args.n <= MAX_SAMPLES, f"--n0 + --n ({args.n0} + {args.n}) must not exceed {MAX_SAMPLES} "
                                          "(2**63 - 1: sample counts are int64)"),
        (args.n0 <= args.n, f"--n0 ({args.n0}) must not exceed --n ({args.n})"),
        (0 < args.alpha < 1, "--alpha must lie in (0, 1)"),
        (len(args.sigma) > 0 and all(s > 0 and math.isfinite(s) for s in args.sigma),
         "--sigma values must be finite and > 0"),
        (args.num_images >= 1, "--num-images must be >= 1"), (args.skip >= 1, "--skip must be >= 1"),
        (args.batch_size == "auto" or (args.batch_size.isdigit() and int(args.batch_size) >= 1),
         "--batch-size must be 'auto' or an integer >= 1"), (args.seed >= 0, "--seed must be >= 0"),
        (all(n >= 1 for n in args.scaling_ns), "--scaling-ns values must be >= 1"),
        (args.scaling_images >= 1, "--scaling-images must be >= 1"),
        (args.threads is None or args.threads >= 1, "--threads must be >= 1"),
        (args.threads is None or args.threads <= max_threads(),
         f"--threads {args.threads} is more than {max_threads()} ({THREADS_PER_CPU} per CPU of this machine)"),
        (args.radii is None or all(r >= 0 and math.isfinite(r) for r in args.radii),
         "--radii values must be finite and >= 0"),
        (0 < args.dist_timeout_hours <= MAX_DIST_TIMEOUT_HOURS,
         f"--dist-timeout-hours must be > 0 and at most {MAX_DIST_TIMEOUT_HOURS} (a year), got "
         f"{args.dist_timeout_hours}"),
        (all(_is_width(w) for w in args.width), f"--width {' '.join(map(str, args.width))}: use column, full or "
                                                  "inches between 2 and 20"),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    _check_budget(parser, args)


def _check_budget(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse sample counts above :data:`LONG_RUN_SAMPLES` per image unless ``--allow-long-run`` says they are
    meant (a typo such as ``--n 10000000000000`` would otherwise sample for years before its plan is printed)."""
    counts = [("--n", args.n), ("--n0", args.n0), *(("--scaling-ns", n) for n in args.scaling_ns)]
    for flag, count in counts:
        if count > MAX_SAMPLES:
            parser.error(f"{flag} {count} exceeds {MAX_SAMPLES} (2**63 - 1: sample counts are int64)")
        if count > LONG_RUN_SAMPLES and not args.allow_long_run:
            parser.error(f"{flag} {count:,} samples per image is above {LONG_RUN_SAMPLES:,} (100x Cohen et al.'s "
                         f"n = 100,000, about {count / 100_000:,.0f}x their per-image time): pass --allow-long-run "
                         "if it is meant")


def run_config(args: argparse.Namespace, models: ExperimentModels, images: torch.Tensor, labels: torch.Tensor,
               indices: torch.Tensor) -> dict[str, Any]:
    """What decides the results, and nothing machine-specific (a resumed run must match it exactly).

    Models are identified by the content hashes of their checkpoints, the images by a hash of their
    pixels, labels and dataset indices, so the same run resumes from any folder or clone.
    """
    from .data.selection import images_fingerprint

    keys = ("dataset", "methods", "heads", "sigma", "n", "n0", "alpha", "num_images", "skip", "seed", "sequential")
    config = {k: getattr(args, k) for k in keys}
    if args.sequential:   # where sequential sampling stops depends on the target radii
        config["radii"] = list(args.radii)
    config["models"] = models.fingerprint()
    config["images"] = images_fingerprint(images, labels, indices)
    return config


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    from smoothing.checks import NonFiniteScoresError

    from .certify import distributed as dist_
    from .certify.manifest import ResumeError
    from .models import CheckpointError

    context = dist_.context_from_env()
    dist_.init(context, args.dist_timeout_hours)
    try:
        with dist_.output_lock(args.out, context):   # one run at a time owns --out
            return _run(args, context)
    except (ResumeError, CheckpointError, NonFiniteScoresError) as err:
        raise SystemExit(f"error: {err}") from None
    except KeyboardInterrupt:
        tsv = args.out / "certify.tsv"
        kept = f"every finished row is kept in {tsv}" if tsv.is_file() else "no row was finished yet"
        print(f"\ninterrupted: {kept}; re-run the same command to resume where it stopped", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        dist_.shutdown(context)


def _run(args: argparse.Namespace, context: dist_.Context) -> Path:
    """The stages of a run: inputs, output folder, runs, certification, then (rank 0) reports and audits."""
    from .certify import distributed as dist_
    from .certify.machine import default_threads, machine_state, set_threads
    from .certify.results import merge_results
    from .certify.runner import timing_summary

    threads = args.threads or default_threads(context.world_size)
    set_threads(threads)   # no effect on results; no oversubscription, so timings mean what they say
    process = {"cpu_allocator_tuned": tune_cpu_allocator(),  # no effect on results; steadier CPU timings
               "precision": full_fp32(), "machine": machine_state(threads)}
    device = dist_.rank_device(resolve_device(args.device), context)
    models, images, labels, indices = _load_inputs(args, device)
    config = run_config(args, models, images, labels, indices)
    _prepare_output(args.out, config, args.overwrite, context)
    runs, mc, batch_sizes = _build_runs(args, models, tuple(images.shape[1:]), device, context)
    manifest = _start_manifest(args, config, models, runs, mc, batch_sizes, device, context, process, len(images),
                                [int(i) for i in indices])
    timings = _certify_stage(args, runs, images, labels, indices, context)
    if not context.is_main:
        return args.out
    tsv = args.out / "certify.tsv"
    total = merge_results(args.out, tsv, runs, indices)
    timing = timing_summary(timings)
    scaling = _scaling_stage(args, models, images, indices, manifest)
    _report_stage(args, tsv, scaling, timing, total, manifest)
    problems = _attack_stage(args, models, images, labels, indices, mc, manifest)
    _finish(args.out, manifest, timing, total)
    if problems:
        banner = "!" * 100
        print("\n".join([banner, "SOUNDNESS FAILURE: a certificate of a sound method was broken", *problems, banner]),
              file=sys.stderr)
        raise SystemExit(3)
    return args.out


def _load_inputs(args: argparse.Namespace, device: torch.device
                 ) -> tuple[ExperimentModels, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The experiment's models (its model tables, or the ``--models`` folder) on ``device`` and the
    selected test images (images on ``device``).

    Models whose input shape or classes are not the dataset's are refused before any image is read or
    downloaded (from the registered shape and classes; an image-file dataset's shape from its ``image_size``),
    and their shape is checked again on the images read (an image folder without a crop).
    """
    from .data.selection import select_images
    from .models.experiment import load_experiment_models, models_from_folder

    try:
        if args.model_tables:
            models = load_experiment_models(args.model_tables, args.dataset, args.heads)
        else:
            models = models_from_folder(args.models, args.dataset, args.heads)
    except ValueError as err:   # CheckpointError, ModelSpecError: a model that cannot be used as asked
        raise SystemExit(f"error: cannot load the models: {err}") from None
    sizes: dict[str, Any] = {k: v or None for k in ("image_size", "resize") if (v := getattr(args, k)) is not None}
    shape, classes = _dataset_shape_and_classes(args, sizes)
    if shape is not None:
        _refuse_misfits(args.dataset, models, shape, classes)   # before any image is read or downloaded
    models.to(device)
    try:
        images, labels, indices = select_images(args.dataset, args.data_root, args.num_images, args.skip, **sizes)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    _refuse_misfits(args.dataset, models, tuple(images.shape[1:]), classes)
    return models, images.to(device), labels, indices


def _dataset_shape_and_classes(args: argparse.Namespace, sizes: dict[str, Any]
                               ) -> tuple[tuple[int, ...] | None, int | None]:
    """The dataset's image shape (None when only its images say: an image folder without a crop) and its
    number of classes (None when the registry does not fix it), read from the registry, not from the data."""
    from .data import dataset_spec

    root = args.data_root if args.dataset == "imagefolder" else None
    classes = dataset_spec(args.dataset, root).num_classes
    try:
        shape: tuple[int, ...] | None = tuple(dataset_spec(args.dataset, None, **sizes).input_shape)
    except ValueError:   # image_size None: the shape is that of the images themselves
        shape = None
    return shape, classes


def _refuse_misfits(dataset: str, models: ExperimentModels, shape: tuple[int, ...], classes: int | None) -> None:
    """``SystemExit`` with one line naming each model whose input shape is not ``shape`` or whose classes are
    not ``classes`` (labels would be compared with the classes of another label space)."""
    wrong = [f"{e.model.name} takes {tuple(e.model.input_shape)}" for e in models.entries
             if tuple(e.model.input_shape) != shape]
    if wrong:
        raise SystemExit(f"error: the {dataset} images are {shape} but {'; '.join(wrong)}: "
                         "certify each model on the dataset it was built for (image_size/resize for image folders)")
    other = [f"{e.model.name} has {e.model.num_classes}" for e in models.entries
             if classes is not None and e.model.num_classes != classes]
    if other:
        raise SystemExit(f"error: {dataset} has {classes} classes but {'; '.join(other)}: certify each model on "
                         "the dataset whose classes it predicts")


def _prepare_output(out: Path, config: dict[str, Any], overwrite: bool, context: dist_.Context) -> None:
    """Create ``out``; with ``overwrite`` delete its results, else refuse results of another configuration."""
    from .certify import distributed as dist_
    from .certify.manifest import check_resumable

    out.mkdir(parents=True, exist_ok=True)
    tsv = out / "certify.tsv"
    if overwrite:
        dist_.barrier(context)  # every rank has parsed its flags before rank 0 deletes anything
        if context.is_main:
            tsv.unlink(missing_ok=True)
            for shard in dist_.shard_files(out):
                shard.unlink()
        return
    check_resumable(out, config, has_results=tsv.is_file() or bool(dist_.shard_files(out)))


def _build_runs(args: argparse.Namespace, models: ExperimentModels, image_shape: tuple[int, ...], device: torch.device,
                context: dist_.Context) -> tuple[list[Run], MonteCarloSettings, dict[str, int]]:
    """Every run of the chosen methods, heads and sigmas, with its batch size set (returned by run key)."""
    from .certify.runner import choose_batch_sizes
    from .certify.runs import MonteCarloSettings, RunError, build_runs

    default_batch = 1000 if args.batch_size == "auto" else int(args.batch_size)
    mc = MonteCarloSettings(n0=args.n0, n=args.n, alpha=args.alpha, batch_size=default_batch, seed=args.seed,
                            sequential=args.sequential, radii=tuple(sorted(args.radii)))
    try:
        runs = build_runs(models.entries, tuple(args.methods), tuple(args.sigma), mc)
    except RunError as err:
        raise SystemExit(f"error: {err}") from None
    if not runs:
        raise SystemExit(f"error: no run matches: {_why_no_run(args, models)}")
    batch_sizes = choose_batch_sizes(runs, args.batch_size, image_shape, device, args.n0 + args.n,
                                     progress=not args.no_progress and context.is_main)
    return runs, mc, batch_sizes


def _why_no_run(args: argparse.Namespace, models: ExperimentModels) -> str:
    """Why --methods/--sigma and the models make no run (what each model can be certified by)."""
    from .certify.runs import supported_methods

    able = "; ".join(f"{e.model.name}: {', '.join(e.methods or supported_methods(e.model))}"
                     + ("" if e.sigmas is None else f" at sigma {', '.join(f'{s:g}' for s in e.sigmas)}")
                     for e in models.entries)
    return (f"--methods {' '.join(args.methods)} at --sigma {' '.join(f'{s:g}' for s in args.sigma)}, but the models "
            f"take ({able}); FaRS methods need a model with a Lipschitz backbone, head and constant "
            "(see the README's model formats)")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _start_manifest(args: argparse.Namespace, config: dict[str, Any], models: ExperimentModels, runs: list[Run],
                    mc: MonteCarloSettings, batch_sizes: dict[str, int], device: torch.device,
                    context: dist_.Context, process: dict[str, Any], images: int,
                    image_indices: list[int]) -> dict[str, Any]:
    """The manifest as the run starts (rank 0 writes it; ``first_started`` survives resumes). ``runs`` and
    ``image_indices`` (the selected images' dataset indices) say which rows belong to the run
    (``python -m bench.report`` keeps only those)."""
    import torch

    from .certify.manifest import read_manifest, write_manifest
    from .certify.runner import memory_formats

    manifest = {
        "config": config, "preset": args.preset, "monte_carlo": asdict(mc), "device": str(device),
        "device_name": device_name(device), "torch_threads": torch.get_num_threads(), "machine": process["machine"],
        "processes": context.world_size, "batch_sizes": batch_sizes, "precision": process["precision"],
        "memory_formats": memory_formats(runs),
        "cpu_allocator_tuned": process["cpu_allocator_tuned"], "cpu_allocator": cpu_allocator(),
        "versions": package_versions(), "git_commit": git_commit(),
        "experiment_file": portable_path(args.experiment.path),
        "models_dir": None if args.models is None else portable_path(args.models),
        "data_root": None if args.data_root is None else portable_path(args.data_root),
        "models": models.describe(),
        "backbone_lipschitz": None if models.zoo is None else models.zoo.backbone_meta["lipschitz"],
        "runs": [r.key for r in runs], "radii": list(args.radii),
        "images": images, "image_indices": image_indices, "started": _now(),
    }
    if context.is_main:
        previous = None if args.overwrite else read_manifest(args.out)
        if previous is not None:
            manifest["first_started"] = previous.get("first_started", previous.get("started"))
        write_manifest(args.out, manifest)
    return manifest


def _certify_stage(args: argparse.Namespace, runs: list[Run], images: torch.Tensor, labels: torch.Tensor,
                   indices: torch.Tensor, context: dist_.Context) -> list[Any]:
    """Certify every pending (run, image) pair; returns every rank's timing."""
    from .certify import distributed as dist_
    from .certify.results import check_rows, read_done, read_lines
    from .certify.runner import certify_all

    out, tsv = args.out, args.out / "certify.tsv"
    # Every rank must see the same finished rows before any rank appends: repair, barrier, read, barrier.
    target = dist_.shard_path(out, context.rank) if context.distributed else tsv
    dist_.barrier(context)
    dist_.check_shared_folder(out, context)
    read_lines(target, repair=True)
    if context.is_main:
        read_lines(tsv, repair=True)
    dist_.barrier(context)
    done = read_done(tsv, *[s for s in dist_.shard_files(out) if s != tsv])
    for path in (tsv, *dist_.shard_files(out)):   # a resumed row must be one these runs could write
        check_rows(path, read_lines(path), runs)
    dist_.barrier(context)
    mine = certify_all(runs, images, labels, indices, target, progress=not args.no_progress, done=done,
                       context=context)
    return dist_.all_gather(context, mine)


def _scaling_stage(args: argparse.Namespace, models: ExperimentModels, images: torch.Tensor, indices: torch.Tensor,
                   manifest: dict[str, Any]) -> Any:
    """Seconds per image versus n on one model with a Lipschitz split, and the cost model (skipped without
    ``--scaling-ns``; which model, and why each other one is skipped: :func:`bench.perf.scaling.scaling_model`)."""
    from .perf.scaling import scaling_stage

    if not args.scaling_ns:
        return None
    k = args.scaling_images
    table, record = scaling_stage([e.model for e in models.entries], images[:k], indices[:k], args.scaling_ns,
                                  args.out, n0=args.n0, alpha=args.alpha, seed=args.seed,
                                  batch_size=None if args.batch_size == "auto" else int(args.batch_size),
                                  progress=not args.no_progress)
    if record is not None:
        manifest["scaling"] = record
    return table


def _report_stage(args: argparse.Namespace, tsv: Path, scaling: Any, timing: dict[str, Any], total: int,
                  manifest: dict[str, Any]) -> None:
    """summary.csv/md, certified_accuracy.csv and the plots; summary.md carries the run's timing and a warning
    when the machine was too busy for the timings to be trusted, both from the manifest (recorded there
    first, so that ``python -m bench.report`` regenerates the same file)."""
    from .certify.machine import noisy_timing_warnings, usage_by_run
    from .certify.manifest import write_manifest
    from .report import write_reports

    out = args.out
    warnings = noisy_timing_warnings(manifest["machine"], _seconds_by_run(tsv), usage_by_run(tsv, manifest["device"]))
    manifest["timing"], manifest["timing_warnings"] = timing, warnings
    write_manifest(out, manifest)   # the summary's sources on disk before the summary
    reports = write_reports(tsv, out, radii=sorted({0.0, *args.radii}), scaling=scaling, manifest=manifest,
                            widths=args.width)
    for warning in warnings:
        print(f"warning: noisy timings: {warning}", file=sys.stderr)
    written = sorted({p.name for p in reports.values() if p.parent == out} | ({"cohen/"} if (out / "cohen").is_dir()
                                                                              else set()))
    print(f"wrote {timing['rows']} new rows ({total} in all) to {tsv}; reports: {', '.join(written)}", file=sys.stderr)


def _seconds_by_run(tsv: Path) -> list[tuple[str, Any]]:
    """Per run of fixed work per image (every row the same number of samples): its rows' seconds."""
    from .report import read_results

    frame = read_results(tsv)
    groups = frame.groupby(["method", "model", "sigma"], dropna=False, sort=True)
    return [(f"{m} {model}" + ("" if s != s else f" σ={s:g}"), g["seconds"].to_numpy())
            for (m, model, s), g in groups if g["samples"].nunique() == 1]


def _attack_stage(args: argparse.Namespace, models: ExperimentModels, images: torch.Tensor, labels: torch.Tensor,
                  indices: torch.Tensor, mc: MonteCarloSettings, manifest: dict[str, Any]) -> list[str]:
    """The attack stage (:func:`bench.audit.robustness.run_robustness`); returns the soundness failures."""
    from .audit.robustness import RobustnessSettings, run_robustness, soundness_failures

    if not args.attack:
        return []
    settings = RobustnessSettings(seed=args.seed)
    run_robustness(models, images, labels, indices, args.out / "certify.tsv", args.out, mc, settings,
                   progress=not args.no_progress, verbose=False)
    manifest["attack"] = settings.describe()
    return soundness_failures(args.out)


def _finish(out: Path, manifest: dict[str, Any], timing: dict[str, Any], total: int) -> None:
    """Complete the manifest and print the summary."""
    from .certify.manifest import write_manifest

    manifest["finished"] = _now()
    manifest["rows_written_by_last_invocation"] = timing["rows"]
    manifest["rows_total"] = total
    manifest["timing"] = timing
    write_manifest(out, manifest)
    summary = out / "summary.md"
    if summary.is_file():
        print(summary.read_text())


if __name__ == "__main__":
    cli_exit(main)
