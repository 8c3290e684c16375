"""Checkpoints: a state dict (``NAME.pt``) and a JSON sidecar (``NAME.json``) that says what it is.

Loading rebuilds the architecture from the sidecar and loads the state dict strictly; any mismatch
(missing or unexpected keys, shapes, a sidecar for another file, a head trained on another backbone,
a backbone whose audited Lipschitz lower bound exceeds its declared constant) raises
:class:`CheckpointError` with a message saying what does not match.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from fars import BackboneConfig, SLLBackbone
from fars.audit import LipschitzAudit

from ..files import sha256_file
from ..provenance import git_commit, package_versions
from .networks import CNNConfig, HeadConfig, SmallCNN, build_head

_ModuleT = TypeVar("_ModuleT", bound=nn.Module)

FORMAT = 1
#: Relative slack allowed between an audited lower bound and the declared Lipschitz constant (float round-off).
AUDIT_TOLERANCE = 1e-4


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


def read_sidecar(stem: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The sidecar of a checkpoint, checked against its state file's hash and expected ``kind``."""
    weights, meta = paths(stem)
    for p in (weights, meta):
        if not p.is_file():
            raise CheckpointError(f"checkpoint file {p} does not exist")
    try:
        sidecar = json.loads(meta.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{meta} is not valid JSON: {err}") from None
    if sidecar.get("format") != FORMAT:
        raise CheckpointError(f"{meta}: unsupported checkpoint format {sidecar.get('format')!r} (expected {FORMAT})")
    if kind is not None and sidecar.get("kind") != kind:
        raise CheckpointError(f"{meta} holds a {sidecar.get('kind')!r} checkpoint, expected {kind!r}")
    actual = sha256_file(weights)
    if sidecar.get("state_sha256") != actual:
        raise CheckpointError(f"{weights} does not match its sidecar {meta} (sha256 {actual[:12]} != "
                              f"{str(sidecar.get('state_sha256'))[:12]}): mixed-up or modified checkpoint")
    return sidecar


def _load_state(model: _ModuleT, stem: str | Path) -> _ModuleT:
    weights, _ = paths(stem)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        details = "; ".join(filter(None, [
            f"missing keys {missing[:5]}" if missing else "",
            f"unexpected keys {unexpected[:5]}" if unexpected else "",
            f"shape mismatches {shapes[:5]}" if shapes else "",
        ]))
        raise CheckpointError(f"{weights} does not fit the architecture in its sidecar: {details}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def _config(cls: type, sidecar: dict[str, Any], meta: str) -> Any:
    try:
        if hasattr(cls, "from_dict"):
            return cls.from_dict(sidecar["architecture"])
        return cls(**sidecar["architecture"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{meta}: bad architecture config: {err}") from None


def load_backbone(stem: str | Path) -> tuple[SLLBackbone, dict[str, Any]]:
    """Load an SLL backbone; refuse it when its recorded audit exceeds its declared Lipschitz constant."""
    sidecar = read_sidecar(stem, "backbone")
    config = _config(BackboneConfig, sidecar, str(stem))
    lip = sidecar.get("lipschitz", {})
    declared, audited = lip.get("declared"), lip.get("audited_lower_bound")
    if declared is None or audited is None:
        raise CheckpointError(f"{stem}: the sidecar records no declared/audited Lipschitz constant")
    if declared < SLLBackbone.LIPSCHITZ:
        raise CheckpointError(f"{stem}: declared Lipschitz constant {declared} is below the architecture's proven "
                              f"bound {SLLBackbone.LIPSCHITZ}")
    if audited > declared * (1 + AUDIT_TOLERANCE):
        raise CheckpointError(f"{stem}: audited Lipschitz lower bound {audited:.6f} exceeds the declared constant "
                              f"{declared}: its certificates would be unsound")
    return _load_state(SLLBackbone(config), stem), sidecar


def load_head(stem: str | Path, backbone_sidecar: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Load a head and check that it was trained on exactly this backbone checkpoint."""
    sidecar = read_sidecar(stem, "head")
    config = _config(HeadConfig, sidecar, str(stem))
    parent = sidecar.get("backbone_sha256")
    if parent != backbone_sidecar.get("state_sha256"):
        raise CheckpointError(f"{stem} was trained on backbone {str(parent)[:12]}, not on "
                              f"{backbone_sidecar.get('name')} ({str(backbone_sidecar.get('state_sha256'))[:12]})")
    if config.embedding_dim != backbone_sidecar["architecture"]["embedding_dim"]:
        raise CheckpointError(f"{stem}: head expects embeddings of size {config.embedding_dim}, backbone gives "
                              f"{backbone_sidecar['architecture']['embedding_dim']}")
    return _load_state(build_head(config), stem), sidecar


def load_cnn(stem: str | Path) -> tuple[SmallCNN, dict[str, Any]]:
    """Load one of Cohen's noise-trained CNNs."""
    sidecar = read_sidecar(stem, "cnn")
    return _load_state(SmallCNN(_config(CNNConfig, sidecar, str(stem))), stem), sidecar


def audit_record(audit: LipschitzAudit, declared: float) -> dict[str, Any]:
    """The sidecar's ``lipschitz`` entry for an audited backbone."""
    return {"declared": declared, "audited_lower_bound": audit.lower_bound, "audit": audit.to_dict()}
