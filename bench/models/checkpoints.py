"""Checkpoints: a state dict (``NAME.pt``) and a JSON sidecar (``NAME.json``) that says what it is.

Loading validates every sidecar field it uses (:func:`validate_sidecar`), rebuilds the architecture
from the sidecar and loads the state dict strictly; any mismatch (missing or unexpected keys, shapes,
a sidecar for another file, a tensor that is sparse or not of the model's dtype (these checkpoints are
float32: nothing is cast), a head trained on another backbone, a backbone whose audited Lipschitz
lower bound exceeds its declared constant, a field of the wrong type or out of range, an image size
that is not its dataset's, NaN or inf in a weight) raises :class:`CheckpointError` with a message
naming the file and the field or tensor.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import pickle
import re
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from fars import BackboneConfig, SLLBackbone
from fars.audit import LipschitzAudit

from ..common.files import sha256_file
from ..common.provenance import git_commit, package_versions
from ..data import dataset_spec
from .keys import mismatch_message
from .loaded import check_dense, check_weight_dtypes
from .networks import CNNConfig, HeadConfig, SmallCNN, build_head

_ModuleT = TypeVar("_ModuleT", bound=nn.Module)

FORMAT = 1
#: Relative slack allowed between an audited lower bound and the declared Lipschitz constant (float round-off).
AUDIT_TOLERANCE = 1e-4
#: the largest layer size, depth, class count or image side a sidecar may give (none of this harness's
#: models comes near it; a larger number would only build a model too big for memory, or for ever)
MAX_ARCHITECTURE_VALUE = 1 << 16
#: the most parameters a checkpoint's architecture may have (4 GiB of float32; SLL "small" has 41M)
MAX_PARAMETERS = 1 << 30
#: the kinds of checkpoint, and the architecture config each is built from
KINDS = ("backbone", "head", "cnn")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked (missing, corrupted, or mismatched)."""


def paths(stem: str | Path) -> tuple[Path, Path]:
    """(``STEM.pt``, ``STEM.json``); names may contain dots (``cnn-noise0.25``), so suffixes are appended."""
    stem = Path(stem)
    if stem.suffix in (".pt", ".json"):
        stem = stem.with_suffix("")
    return stem.with_name(stem.name + ".pt"), stem.with_name(stem.name + ".json")


def save_checkpoint(model: nn.Module, stem: str | Path, sidecar: dict[str, Any]) -> dict[str, Any]:
    """Write ``stem.pt`` (state dict) and ``stem.json`` (sidecar + provenance); returns the sidecar."""
    weights, meta = paths(stem)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, weights)
    full = {
        "format": FORMAT,
        "name": weights.stem,
        **sidecar,
        "state_sha256": sha256_file(weights),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    meta.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return full


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a JSON number (an int or float, not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_architecture(sidecar: dict[str, Any], kind: str, where: str) -> None:
    arch = sidecar.get("architecture")
    if not isinstance(arch, dict):
        raise CheckpointError(f"{where}: field 'architecture' must be an object of layer sizes, got {arch!r}")
    for key, value in arch.items():
        if key == "kind":
            if not isinstance(value, str):
                raise CheckpointError(f"{where}: field 'architecture.kind' must be a string, got {value!r}")
        elif not _positive_int(value) or value > MAX_ARCHITECTURE_VALUE:
            raise CheckpointError(f"{where}: field 'architecture.{key}' must be an integer >= 1 and <= "
                                  f"{MAX_ARCHITECTURE_VALUE}, got {value!r}")
    dataset = sidecar.get("dataset")
    if dataset is None or kind == "head":
        return
    if not isinstance(dataset, str):
        raise CheckpointError(f"{where}: field 'dataset' must be a dataset name, got {dataset!r}")
    try:
        shape = dataset_spec(dataset).input_shape
    except ValueError:
        return   # a data set this checkout does not know: nothing to compare with
    recorded = (arch.get("in_channels", 1), arch.get("image_size", 28))   # the configs' defaults
    if recorded != (shape[0], shape[1]):
        raise CheckpointError(
            f"{where}: fields 'architecture.in_channels'/'image_size' say {recorded[0]}x{recorded[1]}x{recorded[1]} "
            f"inputs, but its dataset {dataset!r} has {shape[0]}x{shape[1]}x{shape[2]} images")


def validate_sidecar(sidecar: Any, kind: str | None, path: str | Path) -> dict[str, Any]:
    """Check the type and range of every sidecar field that loading and certification use; returns it.

    Fields: ``format`` (== :data:`FORMAT`), ``kind`` (one of :data:`KINDS`, == ``kind`` when given),
    ``name`` (a non-empty string), ``state_sha256`` (64 lower-case hex digits), ``architecture`` (an
    object of integer sizes >= 1, and a string ``kind`` for heads; ``in_channels`` and ``image_size``
    those of the recorded ``dataset`` when this checkout knows it); for a backbone ``lipschitz.declared``
    (a finite number >= the architecture's proven constant) and ``lipschitz.audited_lower_bound`` (a
    finite number >= 0 and at most the declared constant, up to :data:`AUDIT_TOLERANCE`); for a head
    ``backbone_sha256`` (64 hex digits); for a CNN ``noise_sigma`` (a finite number > 0), when present.

    Raises:
        CheckpointError: naming ``path`` and the field that is missing, of the wrong type or out of range.
    """
    where = str(path)
    if not isinstance(sidecar, dict):
        raise CheckpointError(f"{where}: a sidecar must be a JSON object, got {type(sidecar).__name__}")
    fmt = sidecar.get("format")
    if isinstance(fmt, bool) or fmt != FORMAT:
        raise CheckpointError(f"{where}: unsupported checkpoint format {fmt!r} (field 'format', expected {FORMAT})")
    recorded = sidecar.get("kind")
    if recorded not in KINDS:
        raise CheckpointError(f"{where}: field 'kind' must be one of {', '.join(KINDS)}, got {recorded!r}")
    if kind is not None and recorded != kind:
        raise CheckpointError(f"{where} holds a {recorded!r} checkpoint, expected {kind!r}")
    name = sidecar.get("name")
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{where}: field 'name' must be a non-empty string, got {name!r}")
    digests = ["state_sha256"] + (["backbone_sha256"] if recorded == "head" else [])
    for field in digests:
        digest = sidecar.get(field)
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise CheckpointError(f"{where}: field {field!r} must be a SHA-256 (64 hex digits), got {digest!r}")
    _check_architecture(sidecar, recorded, where)
    if recorded == "backbone":
        lip = sidecar.get("lipschitz")
        if not isinstance(lip, dict) or "declared" not in lip or "audited_lower_bound" not in lip:
            raise CheckpointError(f"{where}: the sidecar records no declared/audited Lipschitz constant "
                                  "(field 'lipschitz' with 'declared' and 'audited_lower_bound')")
        declared, audited = _number(lip["declared"]), _number(lip["audited_lower_bound"])
        if declared is None or not math.isfinite(declared) or declared <= 0:
            raise CheckpointError(f"{where}: field 'lipschitz.declared' must be a finite number > 0, "
                                  f"got {lip['declared']!r}")
        if audited is None or not math.isfinite(audited) or audited < 0:
            raise CheckpointError(f"{where}: field 'lipschitz.audited_lower_bound' must be a finite number >= 0, "
                                  f"got {lip['audited_lower_bound']!r}")
        if declared < SLLBackbone.LIPSCHITZ:
            raise CheckpointError(f"{where}: declared Lipschitz constant {declared} is below the architecture's "
                                  f"proven bound {SLLBackbone.LIPSCHITZ}")
        if audited > declared * (1 + AUDIT_TOLERANCE):
            raise CheckpointError(f"{where}: audited Lipschitz lower bound {audited:.6f} exceeds the declared "
                                  f"constant {declared}: its certificates would be unsound")
    if recorded == "cnn" and "noise_sigma" in sidecar:
        sigma = _number(sidecar["noise_sigma"])
        if sigma is None or not math.isfinite(sigma) or sigma <= 0:
            raise CheckpointError(f"{where}: field 'noise_sigma' must be a finite number > 0, "
                                  f"got {sidecar['noise_sigma']!r}")
    return sidecar


def read_sidecar(stem: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The sidecar of a checkpoint, validated (:func:`validate_sidecar`) and checked against its state file's hash.

    Raises:
        CheckpointError: a missing or unreadable file, invalid JSON, a field :func:`validate_sidecar`
            refuses, or a state file whose SHA-256 is not the recorded one.
    """
    weights, meta = paths(stem)
    for p in (weights, meta):
        if not p.is_file():
            raise CheckpointError(f"checkpoint file {p} does not exist")
    try:
        sidecar = json.loads(meta.read_text())
        actual = sha256_file(weights)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{meta} is not valid JSON: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"cannot read checkpoint {stem}: {err}") from None
    validate_sidecar(sidecar, kind, meta)
    if sidecar["state_sha256"] != actual:
        raise CheckpointError(f"{weights} does not match its sidecar {meta} (sha256 {actual[:12]} != "
                              f"{str(sidecar.get('state_sha256'))[:12]}): mixed-up or modified checkpoint")
    return sidecar


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``: loaded with ``weights_only=True`` (no code runs), a non-empty dict of
    tensors, every floating-point one finite.

    Raises:
        CheckpointError: an unreadable or empty file, a file that is not a plain-tensor PyTorch file, one
            that holds no dict of tensors, a sparse tensor, or a tensor holding NaN or inf (named).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError) as err:
        reason = " ".join(str(err).split(".")[0].split()) or type(err).__name__
        raise CheckpointError(f"{path} is not a state dict saved by torch.save (an empty, truncated or foreign "
                              f"file; it was not loaded as code): {reason}") from None
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path} must hold a non-empty dict of tensors (a state dict), got "
                              f"{'an empty dict' if isinstance(state, dict) else type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is not a tensor ({type(value).__name__}): not a state dict")
    check_dense(state, lambda message: CheckpointError(f"{path}: {message}"))
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: tensor {key!r} holds NaN or inf: a corrupted or diverged model")
    return state


def _load_state(model: _ModuleT, stem: str | Path) -> _ModuleT:
    weights, _ = paths(stem)
    state = read_state(weights)
    expected = model.state_dict()
    mismatch = mismatch_message(weights, "the architecture in its sidecar",
                                {k: tuple(v.shape) for k, v in expected.items()},
                                {k: tuple(v.shape) for k, v in state.items()})
    if mismatch:
        raise CheckpointError(mismatch)
    check_weight_dtypes(state, expected, lambda message: CheckpointError(f"{weights}: {message}"), cast=False)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _build(factory: Any, config_cls: type, sidecar: dict[str, Any], meta: str) -> Any:
    """``factory(config)`` with the config built from the sidecar's architecture; CheckpointError on failure."""
    try:
        if hasattr(config_cls, "from_dict"):
            config = config_cls.from_dict(sidecar["architecture"])
        else:
            config = config_cls(**sidecar["architecture"])
        with torch.device("meta"):   # sized before anything is allocated
            parameters = sum(p.numel() for p in factory(config).parameters())
        if parameters > MAX_PARAMETERS:
            raise CheckpointError(f"{meta}: its architecture has {parameters:,} parameters, more than "
                                  f"{MAX_PARAMETERS:,}: not a checkpoint of this harness")
        return factory(config)
    except (KeyError, TypeError, ValueError, RuntimeError, MemoryError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{meta}: bad architecture config: {err}") from None


def load_backbone(stem: str | Path) -> tuple[SLLBackbone, dict[str, Any]]:
    """Load an SLL backbone; refuse it when its recorded audit exceeds its declared Lipschitz constant.

    Raises:
        CheckpointError: see :func:`read_sidecar`, :func:`read_state`; weights that do not fit the architecture.
    """
    sidecar = read_sidecar(stem, "backbone")
    return _load_state(_build(SLLBackbone, BackboneConfig, sidecar, str(stem)), stem), sidecar


def load_head(stem: str | Path, backbone_sidecar: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Load a head and check that it was trained on exactly this backbone checkpoint.

    Raises:
        CheckpointError: as :func:`load_backbone`; a head of another backbone or embedding size.
    """
    sidecar = read_sidecar(stem, "head")
    parent = sidecar.get("backbone_sha256")
    if parent != backbone_sidecar.get("state_sha256"):
        raise CheckpointError(f"{stem} was trained on backbone {str(parent)[:12]}, not on "
                              f"{backbone_sidecar.get('name')} ({str(backbone_sidecar.get('state_sha256'))[:12]})")
    head = _build(build_head, HeadConfig, sidecar, str(stem))
    embedding_dim = sidecar["architecture"].get("embedding_dim")
    if embedding_dim != backbone_sidecar["architecture"].get("embedding_dim"):
        raise CheckpointError(f"{stem}: head expects embeddings of size {embedding_dim}, backbone gives "
                              f"{backbone_sidecar['architecture'].get('embedding_dim')}")
    return _load_state(head, stem), sidecar


def load_cnn(stem: str | Path) -> tuple[SmallCNN, dict[str, Any]]:
    """Load one of Cohen's noise-trained CNNs.

    Raises:
        CheckpointError: as :func:`load_backbone`.
    """
    sidecar = read_sidecar(stem, "cnn")
    return _load_state(_build(SmallCNN, CNNConfig, sidecar, str(stem)), stem), sidecar


def audit_record(audit: LipschitzAudit, declared: float) -> dict[str, Any]:
    """The sidecar's ``lipschitz`` entry for an audited backbone."""
    return {"declared": declared, "audited_lower_bound": audit.lower_bound, "audit": audit.to_dict()}
