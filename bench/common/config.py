"""Experiments as files: one TOML file per experiment, read and checked before anything runs.

An experiment file holds the settings of ``python -m bench.run`` (command-line flags override them)
and one ``[models.NAME]`` table per model::

    preset = "quick"                 # numeric defaults (n0, n, alpha, images, sigmas) for keys left out
    dataset = "cifar10"
    data_root = "../data"            # relative to this file
    methods = ["cohen", "fars-mc", "fars-closed"]
    sigma = [0.25, 0.5]
    radii = [0.25, 0.5, 0.75, 1.0]   # reported radii (default: the dataset's)

    [attack]                         # the attack stage's settings (default: the preset's; attack = false: none)
    steps = 10
    radii = [0.5, 1.0]

    [models.resnet110]
    format = "cohen"                 # fars-bench, cohen, sll or torch (see bench.models.load_model)
    checkpoint = "models/cifar10/resnet110/noise_0.25/checkpoint.pth.tar"   # relative to this file
    arch = "cifar_resnet110"
    sigma = [0.25]                   # runs of this model only at these noise levels (a noise-trained model)

The keys ``methods`` and ``sigma`` of a model table restrict the runs of that model; every other key
is the model format's own and goes to :func:`bench.models.load_model` with ``name``, ``dataset`` (the
experiment's unless the table names one) and the paths resolved. A ``fars-bench`` table without
``head`` or ``cnn_sigma`` stands for every model of its checkpoint folder (``sll+KIND`` and
``cnn-noiseS``, as ``python -m bench.train`` writes them).

The ``[attack]`` table's keys are :data:`ATTACK_SETTINGS` (the fields of
:class:`bench.common.experiment.AttackSettings`). Unknown keys and wrong types raise :class:`ConfigError` naming
the key and the file. Nothing here loads a model or a dataset: this module only reads and checks the file
(the stage before data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

#: the settings an experiment file may hold, with the type each must have
SETTINGS: dict[str, str] = {
    "preset": "str", "dataset": "str", "data_root": "path", "methods": "list[str]", "heads": "list[str]",
    "sigma": "list[float]", "n": "int", "n0": "int", "alpha": "float", "num_images": "int", "skip": "int",
    "radii": "list[float]", "seed": "int", "batch_size": "int|auto", "scaling_ns": "list[int]",
    "scaling_images": "int", "attack": "bool|table", "out": "path", "threads": "int", "sequential": "bool",
    "image_size": "int|none", "resize": "int|none",
}
#: the keys of the ``[attack]`` table (the attack stage's settings, :class:`bench.common.experiment.AttackSettings`)
#: and the type each must have
ATTACK_SETTINGS: dict[str, str] = {
    "enabled": "bool", "radii": "list[float]", "steps": "int", "restarts": "int", "targets": "int|all",
    "audit_targets": "int|all", "min_norm_steps": "int", "mc_sample": "int", "smooth_samples": "int",
    "smooth_steps": "int", "lipschitz_images": "int",
}
#: the largest experiment file read (an experiment is a few hundred bytes; a device or a huge file is a mistake)
MAX_CONFIG_BYTES = 1 << 20
#: keys of a ``[models.NAME]`` table read here (the rest belong to the model's format)
MODEL_RUN_KEYS = ("methods", "sigma")
#: keys of a model table that hold paths, resolved against the experiment file's folder
MODEL_PATH_KEYS = ("checkpoint",)


class ConfigError(ValueError):
    """An experiment file that cannot be used: unreadable, not TOML, an unknown key or a wrong type."""


@dataclass(frozen=True)
class ModelTable:
    """One ``[models.NAME]`` table: what :func:`bench.models.load_model` receives (``spec``) and the
    run restrictions (``methods``, ``sigmas``: None means the experiment's)."""

    name: str
    spec: dict[str, Any]
    methods: tuple[str, ...] | None = None
    sigmas: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ExperimentFile:
    """A parsed experiment file: ``settings`` by key (only the keys the file sets, paths absolute)
    and its model tables in file order."""

    path: Path
    settings: dict[str, Any] = field(default_factory=dict)
    models: tuple[ModelTable, ...] = ()


def load_experiment(path: str | Path) -> ExperimentFile:
    """Read and check the experiment file at ``path``.

    Paths in it (``data_root`` and each model's ``checkpoint``) are relative to the file's folder;
    ``out`` is relative to the current directory (outputs belong where the command runs).

    Raises:
        ConfigError: the file is missing or unreadable, not a regular file (a device such as ``/dev/zero``),
            larger than :data:`MAX_CONFIG_BYTES`, not TOML, or holds an unknown key or a value of the wrong
            type (the message names the key and the file).
    """
    path = Path(path).expanduser()
    table = _read_toml(path)
    base = path.resolve().parent
    models_table = table.pop("models", {})
    settings = {key: _setting(key, value, path, base) for key, value in table.items()}
    if not isinstance(models_table, dict):
        raise ConfigError(f"{path}: 'models' must be a table of [models.NAME] tables")
    models = tuple(_model_table(name, spec, path, base, settings.get("dataset"))
                   for name, spec in models_table.items())
    return ExperimentFile(path.resolve(), settings, models)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        if not path.exists():
            raise ConfigError(f"experiment file {path} does not exist")
        if not path.is_file():   # a folder, a device (/dev/zero never ends), a pipe (blocks)
            raise ConfigError(f"experiment file {path} is not a regular file")
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"experiment file {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB: "
                              "not an experiment file")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read experiment file {path}: {err}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None


def _setting(key: str, value: Any, path: Path, base: Path) -> Any:
    """``value`` of top-level ``key`` checked against :data:`SETTINGS` (paths made absolute)."""
    if key not in SETTINGS:
        raise ConfigError(f"{path}: unknown key {key!r}; known keys: {', '.join(sorted(SETTINGS))} and "
                          "[models.NAME] tables")
    kind = SETTINGS[key]
    where = f"{path}: key {key!r}"
    if kind == "path":
        text = _typed(value, str, where, "a path string")
        resolved = Path(text).expanduser()
        return resolved if resolved.is_absolute() or key == "out" else (base / resolved).resolve()
    if kind == "int|none":   # TOML has no null: 0 says "none" (no crop / no resize)
        number = _int(value, where)
        if number < 0:
            raise ConfigError(f"{where} must be >= 0 (0: none), got {number}")
        return number or None
    if kind == "bool|table":   # `attack = false`, or an [attack] table of the attack stage's settings
        if isinstance(value, dict):
            return _attack_table(value, path)
        return _typed(value, bool, where, "true or false, or an [attack] table")
    if kind == "int|auto":
        if value == "auto":
            return value
        return _positive_int(value, where)
    checkers = {"str": lambda v: _typed(v, str, where, "a string"), "int": lambda v: _int(v, where),
                "float": lambda v: _finite(v, where), "bool": lambda v: _typed(v, bool, where, "true or false"),
                "list[str]": lambda v: [_typed(x, str, where, "a list of strings") for x in _list(v, where)],
                "list[float]": lambda v: [_finite(x, where) for x in _list(v, where)],
                "list[int]": lambda v: [_int(x, where) for x in _list(v, where)]}
    return checkers[kind](value)


def _attack_table(table: dict[str, Any], path: Path) -> dict[str, Any]:
    """The ``[attack]`` table checked against :data:`ATTACK_SETTINGS` (``"all"`` for every class where a
    count of target classes is asked becomes None)."""
    settings: dict[str, Any] = {}
    for key, value in table.items():
        if key not in ATTACK_SETTINGS:
            raise ConfigError(f"{path}: unknown key {key!r} in [attack]; known keys: "
                              f"{', '.join(sorted(ATTACK_SETTINGS))}")
        where = f"{path}: [attack] key {key!r}"
        kind = ATTACK_SETTINGS[key]
        if kind == "int|all":
            settings[key] = None if value == "all" else _int(value, where)
        elif kind == "bool":
            settings[key] = _typed(value, bool, where, "true or false")
        elif kind == "int":
            settings[key] = _int(value, where)
        else:
            settings[key] = [_finite(x, where) for x in _list(value, where)]
    return settings


def _model_table(name: str, spec: Any, path: Path, base: Path, dataset: str | None) -> ModelTable:
    where = f"{path}: [models.{name}]"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a table (write [models.{name}] and its keys)")
    spec = dict(spec)
    if not isinstance(spec.get("format"), str):
        raise ConfigError(f"{where} needs a 'format' key (fars-bench, cohen, sll or torch)")
    methods = spec.pop("methods", None)
    sigmas = spec.pop("sigma", None)
    if methods is not None:
        methods = tuple(_typed(m, str, f"{where} key 'methods'", "a list of strings")
                        for m in _list(methods, f"{where} key 'methods'"))
    if sigmas is not None:
        sigmas = tuple(_finite(s, f"{where} key 'sigma'") for s in _list(sigmas, f"{where} key 'sigma'"))
    for key in MODEL_PATH_KEYS:
        if key in spec:
            text = Path(_typed(spec[key], str, f"{where} key {key!r}", "a path string")).expanduser()
            spec[key] = str(text if text.is_absolute() else (base / text).resolve())
    spec["name"] = name
    if dataset is not None:
        spec.setdefault("dataset", dataset)
    return ModelTable(name, spec, methods, sigmas)


def _typed(value: Any, kind: type, where: str, what: str) -> Any:
    # bool is an int in Python: a flag given where a number is wanted is a mistake, and the reverse too
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {what}, got {value!r} ({type(value).__name__})")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list (write [a, b]), got {value!r}")
    return value


def _int(value: Any, where: str) -> int:
    return int(_typed(value, int, where, "an integer"))


def _positive_int(value: Any, where: str) -> int:
    number = _int(value, where)
    if number < 1:
        raise ConfigError(f"{where} must be >= 1, got {number}")
    return number


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    return float(value)


__all__ = ["ATTACK_SETTINGS", "ConfigError", "ExperimentFile", "MODEL_RUN_KEYS", "ModelTable", "SETTINGS",
           "load_experiment"]
