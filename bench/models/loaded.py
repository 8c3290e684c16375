"""One model of an experiment, loaded from a ``[models.NAME]`` table: :func:`load_model` -> :class:`LoadedModel`.

The ``format`` key chooses the loader:

* ``fars-bench``: this project's checkpoints (:mod:`~bench.models.fars_format`);
* ``cohen``: Cohen et al.'s / Salman et al.'s ``checkpoint.pth.tar`` (:mod:`~bench.models.cohen_format`);
* ``sll``: the SLL authors' checkpoints (:mod:`~bench.models.sll_format`);
* ``torch``: any ``nn.Module`` built by a user's factory (:mod:`~bench.models.torch_format`).

Every spec is checked strictly: an unknown key, a value of the wrong type or a missing file raises
:class:`ModelSpecError` naming the model and the key. Every checkpoint is read with
``torch.load(..., map_location="cpu", weights_only=True)`` (:func:`load_weights_only`): no arbitrary unpickling.

Weights are dense tensors whose kind matches the model's (:func:`check_weight_dtypes`): a sparse tensor, or an
integer, bool or complex tensor where the model has a floating-point weight, is refused. The ``cohen``,
``sll`` and ``torch`` formats accept floating-point weights of another precision (a float64 or float16 file)
and cast them to the model's float32 on loading; each such cast is recorded in the model's ``details``
(``weights_cast``, hence in the run manifest). This project's own ``fars-bench`` checkpoints are float32 and
are refused in any other precision.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..common.files import sha256_file
from .keys import mismatch_message

#: format name -> module (in this package) whose ``load(reader)`` builds the model
FORMATS: dict[str, str] = {
    "fars-bench": "fars_format",
    "cohen": "cohen_format",
    "sll": "sll_format",
    "torch": "torch_format",
}
#: keys every spec may hold (the config loader adds ``name`` and ``dataset``)
COMMON_KEYS = ("name", "format", "dataset")


class ModelSpecError(ValueError):
    """A ``[models.NAME]`` table that cannot be loaded: unknown key, wrong type, missing or mismatched file.

    ``model`` is the model's name and ``key`` the offending key (``None`` when no single key is to blame).
    """

    def __init__(self, model: str, key: str | None, message: str) -> None:
        where = f"model {model!r}" + (f", key {key!r}" if key else "")
        super().__init__(f"{where}: {message}")
        self.model, self.key = model, key


@dataclass(frozen=True)
class LoadedModel:
    """A classifier ready to certify.

    * ``network``: the whole classifier, [B, C, H, W] float pixels in [0, 1] -> logits [B, num_classes],
      input normalisation included, in eval mode;
    * ``backbone``, ``head``: the Lipschitz split (``network(x) == head(backbone(x))``), the backbone
      including any input normalisation, or both ``None`` for a model without one;
    * ``lipschitz``: the backbone's l2 Lipschitz constant in pixel units (``None`` without a split);
    * ``input_shape`` (C, H, W), ``num_classes``, ``format`` (a key of :data:`FORMATS`);
    * ``fingerprint``: SHA-256 hex identifying the weights (of the checkpoint file, or as each format
      documents), which a resumed run compares;
    * ``details``: format-specific facts for the manifest (a copy of the mapping given).

    Raises ``ValueError`` when the split is half given or the constant is missing, not finite, or below the
    smallest normal float (a subnormal constant makes every radius overflow).
    """

    name: str
    network: nn.Module
    backbone: nn.Module | None
    head: nn.Module | None
    lipschitz: float | None
    input_shape: tuple[int, int, int]
    num_classes: int
    format: str
    fingerprint: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.backbone is None) != (self.head is None):
            raise ValueError(f"model {self.name!r}: backbone and head must both be given or both be None")
        if (self.backbone is None) != (self.lipschitz is None):
            raise ValueError(f"model {self.name!r}: a Lipschitz constant goes with a backbone/head split, "
                             "and only then")
        if self.lipschitz is not None and not (math.isfinite(self.lipschitz)
                                               and self.lipschitz >= sys.float_info.min):
            raise ValueError(f"model {self.name!r}: Lipschitz constant must be finite and at least "
                             f"{sys.float_info.min:g} (a positive normal float), got {self.lipschitz}")
        object.__setattr__(self, "details", dict(self.details))

    @property
    def has_split(self) -> bool:
        """True when the model has a Lipschitz backbone and a head (FaRS methods apply)."""
        return self.backbone is not None

    def to(self, device: torch.device | str) -> LoadedModel:
        """Move every module to ``device`` (in place); returns ``self``."""
        for module in (self.network, self.backbone, self.head):
            if module is not None:
                module.to(device)
        return self

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts for a run manifest: name, format, fingerprint, shapes, constant, format details."""
        return {
            "name": self.name,
            "format": self.format,
            "fingerprint": self.fingerprint,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "lipschitz": self.lipschitz,
            "split": self.has_split,
            **{k: _jsonable(v) for k, v in self.details.items()},
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


class SpecReader:
    """Typed, strict access to one spec table; every error is a :class:`ModelSpecError` naming the key.

    Each accessor marks its key as read, and :meth:`check_keys` refuses keys outside an allowed set.
    """

    def __init__(self, spec: Mapping[str, Any], name: str) -> None:
        self.spec, self.name = spec, name

    def error(self, key: str | None, message: str) -> ModelSpecError:
        return ModelSpecError(self.name, key, message)

    def check_keys(self, allowed: Iterable[str]) -> None:
        allowed = set(allowed) | set(COMMON_KEYS)
        unknown = sorted(set(self.spec) - allowed)
        if unknown:
            raise self.error(unknown[0], f"unknown key(s) {unknown} for format {self.spec.get('format')!r}; "
                                         f"allowed: {sorted(allowed)}")

    def has(self, key: str) -> bool:
        return key in self.spec

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.spec:
            if required:
                raise self.error(key, "is required")
            return None
        return self.spec[key]

    def string(self, key: str, required: bool = False, choices: Iterable[str] | None = None,
               default: str | None = None) -> str | None:
        value = self._get(key, required)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        if choices is not None and value not in tuple(choices):
            raise self.error(key, f"unknown value {value!r}; choose one of {', '.join(choices)}")
        return value

    def integer(self, key: str, required: bool = False, minimum: int = 1) -> int | None:
        value = self._get(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {value!r}")
        if value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        return value

    def number(self, key: str, required: bool = False, positive: bool = True) -> float | None:
        value = self._get(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value) or (positive and value <= 0):
            raise self.error(key, f"must be {'positive and ' if positive else ''}finite, got {value}")
        return value

    def numbers(self, key: str, length: int, positive: bool = False) -> tuple[float, ...] | None:
        value = self._get(key, False)
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or len(value) != length or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value):
            raise self.error(key, f"must be a list of {length} finite numbers, got {value!r}")
        if positive and any(v <= 0 for v in value):
            raise self.error(key, f"must hold positive numbers, got {value!r}")
        return tuple(float(v) for v in value)

    def shape(self, key: str, required: bool = False) -> tuple[int, int, int] | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or len(value) != 3 or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
            raise self.error(key, f"must be a list of 3 positive integers [C, H, W], got {value!r}")
        return int(value[0]), int(value[1]), int(value[2])

    def table(self, key: str, required: bool = False) -> dict[str, Any] | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise self.error(key, f"must be a table (string keys), got {value!r}")
        return dict(value)

    def path(self, key: str, required: bool = False, directory: bool = False) -> Path | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            raise self.error(key, f"must be a path string, got {value!r}")
        path = Path(value)
        if directory and not path.is_dir():
            raise self.error(key, f"folder {path} does not exist")
        if not directory and not path.is_file():
            raise self.error(key, f"file {path} does not exist")
        return path


def load_weights_only(path: Path, reader: SpecReader, key: str = "checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors, containers and plain values only.

    A file that needs any other object to unpickle (a pickled class, a ``__reduce__`` payload) is refused
    before anything runs, as is a file that is not a torch checkpoint: :class:`ModelSpecError` on ``key``.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (not a zip / truncated), EOFError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise reader.error(key, f"{path} cannot be read as a weights-only torch checkpoint "
                                f"({type(err).__name__}: {first})") from None


def state_dict_of(obj: Any, reader: SpecReader, path: Path, container_keys: tuple[str, ...],
                  key: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict (str -> Tensor) held by a loaded checkpoint: ``obj`` itself, or ``obj[k]`` for the first
    of ``container_keys`` present. Raises :class:`ModelSpecError` when there is none."""
    candidate = obj
    if isinstance(obj, Mapping):
        for k in container_keys:
            if k in obj:
                candidate = obj[k]
                break
    if not isinstance(candidate, Mapping) or not candidate or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in candidate.items()):
        wanted = " or ".join(repr(k) for k in container_keys) or "a state dict"
        raise reader.error(key, f"{path} holds no state dict (expected {wanted} mapping names to tensors)")
    return dict(candidate)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_dense(state: Mapping[str, torch.Tensor], error: Callable[[str], Exception]) -> None:
    """Refuse a tensor that is not a dense (strided) tensor, e.g. a sparse one, with ``error(message)``
    naming its key (a state dict of a model holds dense tensors; finiteness checks cannot read others)."""
    for name, value in state.items():
        if value.layout != torch.strided:
            raise error(f"tensor {name!r} is stored as {str(value.layout).removeprefix('torch.')}, not as a dense "
                        "tensor: not a model's weight")


def check_weight_dtypes(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                        error: Callable[[str], Exception], cast: bool) -> dict[str, str]:
    """Check each tensor of ``state`` against the model's entry of the same key in ``expected``.

    A floating-point entry of the model takes only a floating-point tensor: integer, bool and complex tensors
    are refused (``load_state_dict`` would convert them silently, a complex one dropping its imaginary
    part). Another floating precision is refused unless ``cast`` (the format casts), and then listed. A
    non-floating entry (``num_batches_tracked``) takes only a tensor of its own kind.

    Returns ``{key: "float64 -> float32"}`` for every tensor that loading casts (empty when none).

    Raises:
        Exception: ``error(message)``, the message naming the key and both dtypes.
    """
    casts: dict[str, str] = {}
    for name, want in expected.items():
        if name not in state or state[name].dtype == want.dtype:
            continue
        have = state[name].dtype
        change = f"{_dtype_name(have)} -> {_dtype_name(want.dtype)}"
        if want.dtype.is_floating_point:
            if not have.is_floating_point:
                raise error(f"tensor {name!r} is {_dtype_name(have)}, where the model has a {_dtype_name(want.dtype)} "
                            "weight: integer, bool and complex tensors cannot be weights")
            if not cast:
                raise error(f"tensor {name!r} is {_dtype_name(have)}; this format stores {_dtype_name(want.dtype)} "
                            "weights (a cast would change the model certified)")
            casts[name] = change
        elif have.is_floating_point or have.is_complex or (have == torch.bool) != (want.dtype == torch.bool):
            raise error(f"tensor {name!r} is {_dtype_name(have)}, where the model has a {_dtype_name(want.dtype)} "
                        "buffer")
    return casts


def casts_record(casts: Mapping[str, str]) -> dict[str, Any]:
    """What ``details["weights_cast"]`` records of :func:`check_weight_dtypes`' casts: count per change, a few
    keys."""
    changes = sorted(set(casts.values()))
    return {change: {"tensors": sum(v == change for v in casts.values()),
                     "keys": sorted(k for k, v in casts.items() if v == change)[:5]} for change in changes}


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], reader: SpecReader, path: Path,
                      key: str = "checkpoint", may_lack: tuple[str, ...] = ("num_batches_tracked",)
                      ) -> dict[str, str]:
    """Load ``state`` into ``module`` strictly; :class:`ModelSpecError` on ``key`` listing every missing,
    unexpected and mis-shaped key with its expected shape (:func:`~bench.models.keys.mismatch_message`), sparse
    tensors, tensors of a kind the model's entry cannot take (integer, bool or complex for a weight:
    :func:`check_weight_dtypes`) and non-finite tensors.

    Only buffers whose name ends with one of ``may_lack`` may be absent (batch norm's ``num_batches_tracked``,
    which older PyTorch did not save and which no eval-mode forward reads); they keep the module's value.
    Floating-point tensors of another precision are cast to the module's; returns those casts
    (``{key: "float64 -> float32"}``), which the formats record with :func:`casts_record`.
    """
    expected = module.state_dict()
    check_dense(state, lambda message: reader.error(key, f"{path}: {message}"))
    mismatch = mismatch_message(path, "the architecture", {k: tuple(v.shape) for k, v in expected.items()},
                                {k: tuple(v.shape) for k, v in state.items()}, may_lack)
    if mismatch:
        raise reader.error(key, mismatch)
    casts = check_weight_dtypes(state, expected, lambda message: reader.error(key, f"{path}: {message}"), cast=True)
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if bad:
        raise reader.error(key, f"{path} holds non-finite values in {bad[:8]}")
    full = {k: state.get(k, v) for k, v in expected.items()}
    module.load_state_dict(full, strict=True)
    return casts


def state_fingerprint(module: nn.Module) -> str:
    """SHA-256 hex of a module's state dict: every entry's name, dtype, shape and raw bytes, in key order.

    Used for a model without a checkpoint file; equal weights give equal fingerprints across runs.
    """
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_fingerprint(path: Path) -> str:
    """SHA-256 hex of a checkpoint file's bytes."""
    return sha256_file(path)


def split_network(backbone: nn.Module, head: nn.Module) -> nn.Sequential:
    """``nn.Sequential(backbone=..., head=...)``: the classifier head(backbone(x))."""
    return nn.Sequential(OrderedDict([("backbone", backbone), ("head", head)]))


def _check_dataset(model: LoadedModel, reader: SpecReader) -> None:
    """A registered dataset whose images do not have the model's input shape is refused (key ``dataset``)."""
    dataset = reader.spec.get("dataset")
    if dataset is None:
        return
    from ..data.registry import DATASETS, IMAGE_FILE_DATASETS, canonical_name
    try:
        name = canonical_name(dataset)
    except ValueError:
        return                      # a name the registry does not know (e.g. the SLL authors' cifar100)
    spec = DATASETS[name]
    if name in IMAGE_FILE_DATASETS:   # their size is a setting (image_size, resize): the run checks the images
        return
    if tuple(spec.input_shape) != tuple(model.input_shape):
        raise reader.error("dataset", f"dataset {dataset!r} has images {tuple(spec.input_shape)}, the model expects "
                                      f"{tuple(model.input_shape)}")


def load_model(spec: Mapping[str, Any]) -> LoadedModel:
    """Load the model described by one ``[models.NAME]`` table (already parsed, paths already absolute).

    ``spec`` holds ``name`` (str), ``format`` (a key of :data:`FORMATS`), optionally ``dataset`` (the
    experiment's dataset name; when the data registry knows it, its image shape must be the model's), and the
    format's own keys (see each format module). Returns the model on the CPU in eval mode.

    Raises :class:`ModelSpecError` (a ``ValueError``) naming the model and the key for an unknown key, a wrong
    type, an unknown format, a missing or unreadable file, or weights that do not fit the architecture.
    """
    if not isinstance(spec, Mapping):
        raise ModelSpecError("?", None, f"a model spec must be a table, got {type(spec).__name__}")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ModelSpecError(str(name) if name is not None else "?", "name",
                             f"must be a non-empty string, got {name!r}")
    reader = SpecReader(spec, name)
    fmt = reader.string("format", required=True, choices=tuple(FORMATS))
    reader.string("dataset")
    assert fmt is not None
    module = importlib.import_module(f"{__package__}.{FORMATS[fmt]}")
    loader: Callable[[SpecReader], LoadedModel] = module.load
    model = loader(reader)
    _check_dataset(model, reader)
    return model
