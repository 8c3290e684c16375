"""The trained models of an experiment, loaded and validated from one checkpoint folder.

Model names: ``sll+KIND`` is the frozen SLL backbone followed by the head of that kind; ``cnn-noiseS``
is Cohen's CNN trained with Gaussian noise of std S.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fars.crown import is_relu_head

from ..common.methods import methods_needing
from . import checkpoints as ckpt
from .loaded import LoadedModel
from .networks import HEAD_KINDS

#: the methods that certify a Lipschitz split (backbone + head)
FARS_METHODS = methods_needing("split", "linear-head", "relu-head")


@dataclass(frozen=True)
class ExperimentModel:
    """A model of an experiment and the runs it takes part in.

    ``methods``: the methods that certify it (``None``: every method of the experiment it supports);
    ``sigmas``: the noise levels of its Monte Carlo runs (``None``: the experiment's; a model trained
    with noise is certified at its training level only).
    """

    model: LoadedModel
    methods: tuple[str, ...] | None = None
    sigmas: tuple[float, ...] | None = None


@dataclass
class ModelZoo:
    """Loaded, validated checkpoints of one experiment (all in eval mode on ``device``)."""

    backbone: nn.Module
    backbone_meta: dict[str, Any]
    heads: dict[str, tuple[nn.Module, dict[str, Any]]] = field(default_factory=dict)
    cnns: dict[float, tuple[nn.Module, dict[str, Any]]] = field(default_factory=dict)

    @property
    def lipschitz(self) -> float:
        """The backbone's declared (proven, audited) Lipschitz constant."""
        return float(self.backbone_meta["lipschitz"]["declared"])

    def to(self, device: torch.device) -> ModelZoo:
        self.backbone.to(device)
        for module, _ in list(self.heads.values()) + list(self.cnns.values()):
            module.to(device)
        return self

    def fingerprint(self) -> dict[str, str]:
        """Content hash (SHA-256 of the state dict) of every checkpoint, by name: what identifies the
        models of a run wherever the files lie (compared when a run resumes)."""
        return {name: str(meta["state_sha256"]) for name, meta in self._metas().items()}

    def _metas(self) -> dict[str, dict[str, Any]]:
        metas = [self.backbone_meta] + [m for _, m in self.heads.values()] + [m for _, m in self.cnns.values()]
        return {m["name"]: m for m in metas}

    def experiment_models(self, heads: Sequence[str] | None = None) -> list[ExperimentModel]:
        """The folder's models as an experiment sees them, in run order: ``sll+KIND`` for each head of
        ``heads`` (default: all) present, then ``cnn-noiseS`` by sigma.

        ``sll+ce`` is certified by every method, the other heads by the FaRS methods and the Lipschitz
        margin (Cohen on the whole SLL network needs one head only), each CNN by ``cohen`` at its own
        training sigma. Fingerprints join the backbone's and the head's checkpoint hashes.
        """
        entries = []
        for kind in HEAD_KINDS:
            if kind not in self.heads or (heads is not None and kind not in heads):
                continue
            model = self.split_model(kind)
            # closed forms for linear heads, bound propagation for ReLU heads
            head = model.head
            fars = methods_needing("split", "linear-head" if isinstance(head, nn.Linear) else
                                   "relu-head" if head is not None and is_relu_head(head) else "split")
            entries.append(ExperimentModel(model, None if kind == "ce" else fars))
        for sigma in sorted(self.cnns):
            cnn, meta = self.cnns[sigma]
            model = LoadedModel(
                name=f"cnn-noise{sigma:.2f}", network=cnn, backbone=None, head=None, lipschitz=None,
                input_shape=_input_shape(meta), num_classes=int(meta["architecture"]["num_classes"]),
                format="fars-bench", fingerprint=str(meta["state_sha256"]))
            entries.append(ExperimentModel(model, ("cohen",), (sigma,)))
        return entries

    def split_model(self, kind: str = "ce") -> LoadedModel:
        """``sll+KIND``: the backbone followed by the head of that kind, as a :class:`LoadedModel`.

        Its fingerprint joins the backbone's and the head's checkpoint hashes; its ``details`` carry the
        backbone's checkpoint name (``backbone``) and the Lipschitz record of its sidecar
        (``backbone_lipschitz``: the declared constant and the audit stored at training), which the
        Lipschitz audit of a run reports beside its own.

        Raises:
            CheckpointError: the folder holds no head of that kind.
        """
        if kind not in self.heads:
            raise ckpt.CheckpointError(f"the models have no head-{kind} checkpoint (heads: "
                                       f"{', '.join(sorted(self.heads)) or 'none'})")
        head, meta = self.heads[kind]
        return LoadedModel(
            name=f"sll+{kind}", network=nn.Sequential(self.backbone, head).eval(), backbone=self.backbone,
            head=head, lipschitz=self.lipschitz, input_shape=_input_shape(self.backbone_meta),
            num_classes=int(meta["architecture"]["num_classes"]), format="fars-bench",
            fingerprint=f"{self.backbone_meta['state_sha256']}+{meta['state_sha256']}",
            details=backbone_details(self.backbone_meta))

    def describe(self) -> dict[str, Any]:
        """Name, hash and accuracy of every checkpoint (for the run manifest)."""
        return {name: {"sha256": m["state_sha256"], "clean_accuracy": m.get("clean_accuracy"),
                       "git_commit": m.get("git_commit")} for name, m in self._metas().items()}


def backbone_details(meta: dict[str, Any]) -> dict[str, Any]:
    """What a split model of a checkpoint folder records of its backbone's sidecar ``meta``: the checkpoint's
    name and its Lipschitz record (``declared`` constant, stored ``audit``)."""
    return {"backbone": meta["name"], "backbone_lipschitz": meta["lipschitz"]}


def _input_shape(meta: dict[str, Any]) -> tuple[int, int, int]:
    arch = meta["architecture"]
    return (int(arch["in_channels"]), int(arch["image_size"]), int(arch["image_size"]))


def load_zoo(directory: str | Path) -> ModelZoo:
    """Load ``sll-backbone``, every ``head-KIND`` and every ``cnn-noiseS`` checkpoint in ``directory``."""
    directory = Path(directory)
    if not (directory / "sll-backbone.json").is_file():
        raise ckpt.CheckpointError(
            f"no sll-backbone checkpoint in {directory} (an experiment file's relative `checkpoint` is read from "
            f"the file's own folder); train one with `python -m bench.train --out {directory}`")
    backbone, meta = ckpt.load_backbone(directory / "sll-backbone")
    zoo = ModelZoo(backbone, meta)
    for kind in HEAD_KINDS:
        if (directory / f"head-{kind}.json").is_file():
            head, head_meta = ckpt.load_head(directory / f"head-{kind}", meta)
            # the file name decides how the head is used (which method, which label in the results):
            # a head of another kind saved under this name (a swapped or copied pair of files) is refused
            recorded = (head_meta.get("architecture", {}).get("kind"), head_meta.get("name", f"head-{kind}"))
            if recorded != (kind, f"head-{kind}"):
                raise ckpt.CheckpointError(
                    f"{directory / f'head-{kind}'} holds the {recorded[0]!r} head saved as {recorded[1]!r}, "
                    f"not a {kind!r} head: the checkpoint files were renamed or swapped")
            zoo.heads[kind] = (head, head_meta)
    for sidecar in sorted(directory.glob("cnn-noise*.json")):
        model, cnn_meta = ckpt.load_cnn(sidecar.with_suffix(""))
        zoo.cnns[float(cnn_meta["noise_sigma"])] = (model, cnn_meta)
    return zoo
