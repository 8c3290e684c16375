"""The experiment of ``python -m bench.run``: one frozen, typed :class:`Experiment`, built once.

Each setting comes from the command line, else the experiment file (:mod:`bench.common.config`), else the
preset (:data:`PRESETS`), else :data:`DEFAULTS`; :func:`parse_args` resolves them in that order and
builds the :class:`Experiment`, whose parts check their values in their constructors (a bad value is
an :class:`ExperimentError` with one line naming the flag). ``argparse`` stays in this module: every
stage of ``bench.run`` takes the typed part it needs. Tests build an :class:`Experiment` directly.

This module imports no PyTorch at import time (``--help`` stays fast); checks that need the dataset
registry or the figure widths import them when an experiment is built.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .cli import checked, writable_dir
from .cli_help import DefaultsHelpFormatter
from .config import ConfigError, ModelTable, load_experiment
from .env import THREADS_PER_CPU, max_threads, portable_path, runs_dir
from .methods import METHODS
from .names import DATASET_NAMES, HEAD_KINDS
from .units import figure_width, parse_radius

#: noisy samples per image (``n``, ``n0``, each ``--scaling-ns`` value) above which a run needs
#: ``--allow-long-run``: 100 times Cohen et al.'s n = 100,000 (their ResNet-110 took about 17 s per CIFAR-10
#: image at n = 100,000 on a 2019 GPU, so this bound is already about half an hour per image there)
LONG_RUN_SAMPLES = 10_000_000
#: the largest sample count at all: counts are stored as int64 (the ``samples`` column, the noise streams)
MAX_SAMPLES = 2 ** 63 - 1
#: longest --dist-timeout-hours (a year): a finished rank waits at most this long for the others
MAX_DIST_TIMEOUT_HOURS = 24 * 365

#: the experiment ``python -m bench.run`` runs without ``--config`` (``make run``)
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "embedded" / "fashion-mnist.toml"


class ExperimentError(ValueError):
    """A setting out of range (the message is one line naming the flag or key)."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ExperimentError(message)


# ------------------------------------------------------------------------------ the parts


@dataclass(frozen=True)
class AttackSettings:
    """The attack stage's settings (``[attack]`` in an experiment file; :mod:`bench.audit.robustness`
    turns them into its :class:`~bench.audit.robustness.RobustnessSettings`).

    Attributes:
        enabled: run the attack stage (``--no-attack``: no).
        radii: radii where the full PGD runs (the paper radii 0.05/0.1/0.2/0.3 are always added).
        steps, restarts, targets: the PGD attack for empirical robust accuracy (``targets`` runner-up
            classes per restart; None: every class).
        audit_targets: runner-up classes attacked per restart in the 0.999 r audit (None: all classes).
        min_norm_steps: steps of the minimum-norm search run first on every example.
        mc_sample: certified examples per Monte Carlo run attacked on the smoothed classifier.
        smooth_samples, smooth_steps: noise draws per step and steps of that attack.
        lipschitz_images: images of the fresh Lipschitz audit of the backbone.
    """

    enabled: bool = True
    radii: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 1.5)
    steps: int = 20
    restarts: int = 2
    targets: int | None = 1
    audit_targets: int | None = 3
    min_norm_steps: int = 60
    mc_sample: int = 10
    smooth_samples: int = 16
    smooth_steps: int = 20
    lipschitz_images: int = 16

    def __post_init__(self) -> None:
        _require(self.steps >= 1, "attack steps must be >= 1")
        _require(self.restarts >= 1, "attack restarts must be >= 1")
        _require(self.targets is None or self.targets >= 0, "attack targets must be >= 0 or 'all'")
        _require(self.audit_targets is None or self.audit_targets >= 0, "attack audit_targets must be >= 0 or 'all'")
        _require(all(r > 0 and math.isfinite(r) for r in self.radii), "attack radii must be finite and > 0")
        _require(self.min_norm_steps >= 1, "attack min_norm_steps must be >= 1")
        _require(self.mc_sample >= 0, "attack mc_sample must be >= 0")
        _require(self.smooth_samples >= 1 and self.smooth_steps >= 1,
                 "attack smooth_samples/smooth_steps must be >= 1")
        _require(self.lipschitz_images >= 1, "attack lipschitz_images must be >= 1")

    def record(self) -> dict[str, Any]:
        """The settings as JSON values (what decides the attack stage's outputs; ``enabled`` aside)."""
        values = asdict(self)
        del values["enabled"]
        values["radii"] = list(self.radii)
        return values


@dataclass(frozen=True)
class Selection:
    """Which images: the dataset, where it is, how many, which, and the image-file datasets' crop."""

    dataset: str
    num_images: int
    skip: int
    data_root: Path | None = None
    image_size: int | None = None   # None: the dataset's own; 0: no crop
    resize: int | None = None       # None: the dataset's own; 0: no resize

    def __post_init__(self) -> None:
        from ..data import IMAGE_FILE_DATASETS

        _require(self.num_images >= 1, "--num-images must be >= 1")
        _require(self.skip >= 1, "--skip must be >= 1")
        _require((self.image_size is None and self.resize is None) or self.dataset in IMAGE_FILE_DATASETS,
                 f"--image-size/--resize (image_size/resize) apply to the image-file datasets "
                 f"({', '.join(IMAGE_FILE_DATASETS)}), not to {self.dataset}, whose images have one size")
        _require(self.data_root is None or Path(self.data_root).expanduser().is_dir(),
                 f"--data-root {self.data_root} is not a folder (give the folder that holds the dataset's files)")

    def sizes(self) -> dict[str, int | None]:
        """The crop and resize given (keyword arguments of the image selection; None: none)."""
        return {k: v or None for k, v in (("image_size", self.image_size), ("resize", self.resize)) if v is not None}


@dataclass(frozen=True)
class ModelSource:
    """The models: the experiment file's ``[models.NAME]`` tables, or a checkpoint folder (``--models``)."""

    tables: tuple[ModelTable, ...] = ()
    folder: Path | None = None
    heads: tuple[str, ...] = HEAD_KINDS

    def __post_init__(self) -> None:
        _require(all(h in HEAD_KINDS for h in self.heads),
                 f"unknown head in {list(self.heads)}; choose from {', '.join(HEAD_KINDS)}")


@dataclass(frozen=True)
class MonteCarlo:
    """CERTIFY's sample counts and level (with ``sequential``, ``n`` is the cap)."""

    n0: int
    n: int
    alpha: float
    sequential: bool = False

    def __post_init__(self) -> None:
        _require(self.n >= 1, "--n must be >= 1")
        _require(self.n0 >= 1, "--n0 must be >= 1")
        _require(self.n0 + self.n <= MAX_SAMPLES, f"--n0 + --n ({self.n0} + {self.n}) must not exceed {MAX_SAMPLES} "
                                                  "(2**63 - 1: sample counts are int64)")
        _require(self.n0 <= self.n, f"--n0 ({self.n0}) must not exceed --n ({self.n})")
        _require(0 < self.alpha < 1, "--alpha must lie in (0, 1)")


@dataclass(frozen=True)
class Scaling:
    """The scaling stage: seconds per image versus n at ``ns`` (empty: no stage) on ``images`` images."""

    ns: tuple[int, ...] = ()
    images: int = 2

    def __post_init__(self) -> None:
        _require(all(n >= 1 for n in self.ns), "--scaling-ns values must be >= 1")
        _require(self.images >= 1, "--scaling-images must be >= 1")


@dataclass(frozen=True)
class Runtime:
    """How the run executes (none of it changes a certificate): device, threads, seed, batch size, bars."""

    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    batch_size: int | None = None   # None: 'auto'
    progress: bool = True
    dist_timeout_hours: float = 48.0

    def __post_init__(self) -> None:
        _require(self.batch_size is None or self.batch_size >= 1, "--batch-size must be 'auto' or an integer >= 1")
        _require(self.seed >= 0, "--seed must be >= 0")
        _require(self.threads is None or self.threads >= 1, "--threads must be >= 1")
        _require(self.threads is None or self.threads <= max_threads(),
                 f"--threads {self.threads} is more than {max_threads()} ({THREADS_PER_CPU} per CPU of this machine)")
        _require(0 < self.dist_timeout_hours <= MAX_DIST_TIMEOUT_HOURS,
                 f"--dist-timeout-hours must be > 0 and at most {MAX_DIST_TIMEOUT_HOURS} (a year), got "
                 f"{self.dist_timeout_hours}")

    @property
    def batch_name(self) -> str:
        """The batch size as the batch-size search takes it: ``'auto'`` or the integer."""
        return "auto" if self.batch_size is None else str(self.batch_size)


@dataclass(frozen=True)
class Output:
    """Where the results go and how the figures are drawn."""

    out: Path
    overwrite: bool = False
    widths: tuple[str, ...] = ("full",)

    def __post_init__(self) -> None:
        _require(all(_is_width(w) for w in self.widths),
                 f"--width {' '.join(map(str, self.widths))}: use column, full or inches between 2 and 20")


def _is_width(value: str) -> bool:
    """Whether ``value`` is a figure width :func:`~bench.common.units.figure_width` accepts."""
    try:
        figure_width(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Experiment:
    """One run of ``python -m bench.run``: every setting, typed and checked.

    ``file`` is the experiment file read (its model tables are in ``models``); ``radii`` are the reported
    radii (and the sequential mode's targets).
    """

    file: Path
    preset: str
    selection: Selection
    models: ModelSource
    methods: tuple[str, ...]
    sigmas: tuple[float, ...]
    radii: tuple[float, ...]
    monte_carlo: MonteCarlo
    output: Output
    scaling: Scaling = field(default_factory=Scaling)
    attack: AttackSettings = field(default_factory=AttackSettings)
    runtime: Runtime = field(default_factory=Runtime)
    allow_long_run: bool = False

    def __post_init__(self) -> None:
        _require(all(m in METHODS for m in self.methods),
                 f"unknown method in {list(self.methods)}; choose from {', '.join(METHODS)}")
        _require(len(self.sigmas) > 0 and all(s > 0 and math.isfinite(s) for s in self.sigmas),
                 "--sigma values must be finite and > 0")
        _require(all(r >= 0 and math.isfinite(r) for r in self.radii), "--radii values must be finite and >= 0")
        counts = [("--n", self.monte_carlo.n), ("--n0", self.monte_carlo.n0),
                  *(("--scaling-ns", n) for n in self.scaling.ns)]
        for flag, count in counts:   # a typo such as --n 10000000000000 would sample for years before its plan
            _require(count <= MAX_SAMPLES, f"{flag} {count} exceeds {MAX_SAMPLES} (2**63 - 1: sample counts are int64)")
            _require(count <= LONG_RUN_SAMPLES or self.allow_long_run,
                     f"{flag} {count:,} samples per image is above {LONG_RUN_SAMPLES:,} (100x Cohen et al.'s "
                     f"n = 100,000, about {count / 100_000:,.0f}x their per-image time): pass --allow-long-run "
                     "if it is meant")

    def run_config(self) -> dict[str, Any]:
        """The settings that decide the certificates, nothing machine-specific (a resumed run must match
        them exactly; ``bench.run`` adds the models' and images' content hashes)."""
        mc = self.monte_carlo
        config: dict[str, Any] = {
            "dataset": self.selection.dataset, "methods": list(self.methods), "heads": list(self.models.heads),
            "sigma": list(self.sigmas), "n": mc.n, "n0": mc.n0, "alpha": mc.alpha,
            "num_images": self.selection.num_images, "skip": self.selection.skip, "seed": self.runtime.seed,
            "sequential": mc.sequential}
        if mc.sequential:   # where sequential sampling stops depends on the target radii
            config["radii"] = list(self.radii)
        return config

    def record(self) -> dict[str, Any]:
        """The whole experiment as JSON values (the manifest's ``experiment``; paths portable)."""
        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return portable_path(value)
            if isinstance(value, ModelTable):
                return value.name
            if isinstance(value, (tuple, list)):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        return {f.name: plain(_shallow(getattr(self, f.name))) for f in fields(self)}


def _shallow(value: Any) -> Any:
    """A dataclass part as a dict of its fields (model tables kept as objects), anything else as it is."""
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, ModelTable):
        return {f.name: getattr(value, f.name) for f in fields(value)}
    return value


# ------------------------------------------------------------------------------ presets and the command line

#: defaults for the keys the experiment file leaves out; ``attack`` holds :class:`AttackSettings` fields
PRESETS: dict[str, dict[str, Any]] = {
    # The default experiment: the quick preset's n on 20 images and a light attack stage (a weaker audit,
    # not a looser check: every certificate is still attacked; --preset quick runs the full one).
    "default": dict(n0=100, n=1000, alpha=0.001, num_images=20, skip=50, sigma=[0.12, 0.25, 0.5],
                    scaling_ns=[100, 1_000, 10_000],
                    attack=dict(radii=[0.5, 1.0], steps=5, restarts=1, targets=1, audit_targets=1,
                                min_norm_steps=20, mc_sample=1, smooth_samples=4, smooth_steps=5,
                                lipschitz_images=4)),
    # CPU-sized reference run (the committed results/fashion-mnist/quick): 100 images, the full attack.
    "quick": dict(n0=100, n=1000, alpha=0.001, num_images=100, skip=10, sigma=[0.12, 0.25, 0.5],
                  scaling_ns=[100, 1_000, 10_000], attack={}),
    # Cohen et al.'s settings: n0 = 100, n = 100,000, alpha = 0.001, 500 images.
    "paper": dict(n0=100, n=100_000, alpha=0.001, num_images=500, skip=2, sigma=[0.12, 0.25, 0.5],
                  scaling_ns=[100, 1_000, 10_000, 100_000], attack={}),
}
#: the preset of an experiment file that names none
DEFAULT_PRESET = "quick"
#: settings neither a preset nor the experiment file sets, and their defaults
DEFAULTS: dict[str, Any] = dict(dataset="fashion-mnist", data_root=None, methods=list(METHODS), heads=list(HEAD_KINDS),
                                seed=0, batch_size="auto", scaling_images=2, out=None, radii=None,
                                threads=None, sequential=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Certify test images with Cohen RS, FaRS (Monte Carlo, closed form, bound propagation) and the "
                    "Lipschitz margin on the same images; time each method (device synchronised) and write per-example "
                    "TSV, summary tables and plots. Stages: certify, scaling, attack, report; each stage whose "
                    "inputs and settings are unchanged is skipped, so re-running the same command resumes an "
                    "interrupted run. The experiment (dataset, models, methods, sigmas, n0, n, alpha, images, "
                    "[attack]) is a TOML file (--config; default bench/embedded/fashion-mnist.toml, the "
                    "offline default); every flag below overrides the file, and keys neither sets come from "
                    "--preset. Launch with "
                    "`torchrun --nproc-per-node N -m bench.run ...` to shard the images over N processes (one GPU "
                    "each when there are several); the merged results equal a one-process run.",
        formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--config", type=Path, default=None,
                        help="experiment file (TOML; see configs/ and the README's 'Certify your own model'); "
                             f"default: {portable_path(DEFAULT_CONFIG)}")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="defaults for the keys the experiment file leaves out (default: the file's `preset`, "
                             f"else {DEFAULT_PRESET}). default: the default experiment's (20 images, a light "
                             "attack); quick: CPU-sized n and 100 images, the full attack (the committed "
                             "results); paper: n0=100, n=100000, alpha=0.001, 500 images")
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
                        help="skip the attack stage (empirical robust accuracy, soundness audit of every "
                             "certificate, paper-criterion audit, smoothed-classifier check, Lipschitz audit; its "
                             "settings are the experiment file's [attack] table, else the preset's); "
                             "`python -m bench.attack --results OUT` attacks a finished run with other settings")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--dist-timeout-hours", type=float, default=48.0,
                        help="under torchrun: how long a rank that finished its shard waits for the others "
                             f"(finite, at most {MAX_DIST_TIMEOUT_HOURS})")
    _preset_defaults_in_help(parser)
    return parser


def _preset_defaults_in_help(parser: argparse.ArgumentParser) -> None:
    """Say in ``--help`` what each preset sets a preset-driven flag to."""
    for action in parser._actions:
        if action.dest in PRESETS["quick"] and action.dest != "attack":
            values = "; ".join(f"{name}: {_show(preset[action.dest])}" for name, preset in PRESETS.items())
            action.help = f"{action.help} (default: the experiment file's, else from --preset, {values})"


def _show(value: Any) -> str:
    return " ".join(f"{v:g}" for v in value) if isinstance(value, list) else f"{value:g}"


def parse_args(argv: list[str] | None = None) -> Experiment:
    """The run's :class:`Experiment`: each flag given, else the experiment file's key, else the preset's,
    else the default. A value out of range exits 2 with one ``error:`` line (``argparse``'s)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    config_path = DEFAULT_CONFIG if args.config is None else args.config
    try:
        experiment = from_settings(args, config_path)
    except (ConfigError, ExperimentError) as err:
        parser.error(str(err))
    checked(parser, lambda: writable_dir(experiment.output.out))   # a bad --out fails now, not after certifying
    return experiment


def from_settings(args: argparse.Namespace, config_path: Path) -> Experiment:
    """Resolve flags (``args``, None where not given) > the file at ``config_path`` > preset > defaults.

    Raises:
        ConfigError: the experiment file cannot be used. ExperimentError: a setting out of range.
    """
    from ..data import canonical_name, reported_radii

    file = load_experiment(config_path)
    given = file.settings
    preset = args.preset or given.get("preset", DEFAULT_PRESET)
    _require(preset in PRESETS, f"{config_path}: unknown preset {preset!r}; choose from {', '.join(sorted(PRESETS))}")
    base = {**DEFAULTS, **PRESETS[preset]}

    def value(key: str) -> Any:
        flag = getattr(args, key, None)
        return flag if flag is not None else given.get(key, base.get(key))

    try:
        dataset = canonical_name(value("dataset"))
    except ValueError as err:
        raise ExperimentError(f"{config_path}: {err}") from None
    sizes = {}
    for key in ("image_size", "resize"):   # 0 in a flag or the file: none; absent: the dataset's own
        flag = getattr(args, key)
        sizes[key] = flag if flag is not None else (given[key] or 0 if key in given else None)
    radii = value("radii")
    if radii is None:
        radii = list(reported_radii(dataset))
    if args.models is None and not file.models:
        raise ExperimentError(f"{config_path} names no models: add [models.NAME] tables or pass --models DIR")
    out = value("out")
    if out is None:
        name = dataset if file.path == DEFAULT_CONFIG.resolve() else file.path.stem
        out = runs_dir(name, preset)
    batch = str(value("batch_size"))
    _require(batch == "auto" or (batch.isdigit() and int(batch) >= 1), "--batch-size must be 'auto' or an integer >= 1")
    attack = _attack_settings(PRESETS[preset].get("attack", {}), given.get("attack"), no_attack=args.no_attack)
    return Experiment(
        file=file.path, preset=preset,
        selection=Selection(dataset, value("num_images"), value("skip"), value("data_root"), **sizes),
        models=ModelSource(() if args.models is not None else tuple(file.models), args.models,
                           tuple(value("heads"))),
        methods=tuple(value("methods")), sigmas=tuple(value("sigma")), radii=tuple(radii),
        monte_carlo=MonteCarlo(value("n0"), value("n"), value("alpha"), bool(value("sequential"))),
        output=Output(Path(out), args.overwrite, tuple(args.width)),
        scaling=Scaling(tuple(value("scaling_ns")), value("scaling_images")),
        attack=attack,
        runtime=Runtime(args.device, value("threads"), value("seed"), None if batch == "auto" else int(batch),
                        not args.no_progress, args.dist_timeout_hours),
        allow_long_run=args.allow_long_run)


def _attack_settings(preset: dict[str, Any], given: bool | dict[str, Any] | None, no_attack: bool) -> AttackSettings:
    """The attack stage's settings: the file's ``[attack]`` table (or ``attack = false``) over the preset's."""
    table = {} if given is None or isinstance(given, bool) else dict(given)
    values = {**preset, **table}
    if "radii" in values:
        values["radii"] = tuple(float(r) for r in values["radii"])
    settings = AttackSettings(**values)
    enabled = settings.enabled and given is not False and not no_attack
    return replace(settings, enabled=enabled)


__all__ = ["AttackSettings", "DEFAULT_CONFIG", "DEFAULTS", "Experiment", "ExperimentError", "LONG_RUN_SAMPLES",
           "MAX_SAMPLES", "ModelSource", "MonteCarlo", "Output", "PRESETS", "Runtime", "Scaling", "Selection",
           "build_parser", "from_settings", "parse_args"]
