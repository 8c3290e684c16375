"""The trained models of an experiment and the method runs built on them.

A *run* is one certify method on one model at one sigma, e.g. ``fars-mc`` on ``sll+mlp`` at 0.25.
Model names: ``sll+KIND`` is the frozen SLL backbone followed by the head of that kind; ``cnn-noiseS``
is Cohen's CNN trained with Gaussian noise of std S.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from baselines import CohenRS, LipschitzMargin
from fars import Certifier, FaRSClosedForm, FaRSMonteCarlo

from . import checkpoints as ckpt
from .models import HEAD_KINDS

METHODS = ("cohen", "fars-mc", "fars-closed", "lipschitz-margin")


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

    def to(self, device: torch.device) -> "ModelZoo":
        self.backbone.to(device)
        for module, _ in list(self.heads.values()) + list(self.cnns.values()):
            module.to(device)
        return self

    def describe(self) -> dict[str, Any]:
        """Name, hash and accuracy of every checkpoint (for the run manifest)."""
        metas = [self.backbone_meta] + [m for _, m in self.heads.values()] + [m for _, m in self.cnns.values()]
        return {m["name"]: {"sha256": m["state_sha256"], "clean_accuracy": m.get("clean_accuracy"),
                            "git_commit": m.get("git_commit")} for m in metas}


def load_zoo(directory: str | Path) -> ModelZoo:
    """Load ``sll-backbone``, every ``head-KIND`` and every ``cnn-noiseS`` checkpoint in ``directory``."""
    directory = Path(directory)
    if not (directory / "sll-backbone.json").is_file():
        raise ckpt.CheckpointError(
            f"no sll-backbone checkpoint in {directory}; train one with `python -m bench.train --out {directory}`")
    backbone, meta = ckpt.load_backbone(directory / "sll-backbone")
    zoo = ModelZoo(backbone, meta)
    for kind in HEAD_KINDS:
        if (directory / f"head-{kind}.json").is_file():
            zoo.heads[kind] = ckpt.load_head(directory / f"head-{kind}", meta)
    for sidecar in sorted(directory.glob("cnn-noise*.json")):
        model, cnn_meta = ckpt.load_cnn(sidecar.with_suffix(""))
        zoo.cnns[float(cnn_meta["noise_sigma"])] = (model, cnn_meta)
    return zoo


@dataclass
class Run:
    """One method on one model at one sigma (NaN for deterministic methods)."""

    method: str
    model: str
    sigma: float
    certifier: Certifier

    @property
    def key(self) -> str:
        return f"{self.method}|{self.model}|{'-' if math.isnan(self.sigma) else f'{self.sigma:g}'}"


@dataclass(frozen=True)
class MonteCarloSettings:
    n0: int
    n: int
    alpha: float
    batch_size: int
    seed: int


def build_runs(zoo: ModelZoo, methods: tuple[str, ...], sigmas: tuple[float, ...], mc: MonteCarloSettings,
               heads: tuple[str, ...] = HEAD_KINDS) -> list[Run]:
    """Every run of ``methods`` the zoo supports, in a stable order.

    * ``cohen``: on the SLL network ``sll+ce`` at each sigma, and on each CNN whose training sigma is listed;
    * ``fars-mc``: on every head at each sigma (noise in embedding space);
    * ``fars-closed``: on every linear head;
    * ``lipschitz-margin``: on every linear head, with the logit map's constant L * ||W||_2.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    mc_kwargs = dict(n0=mc.n0, n=mc.n, alpha=mc.alpha, batch_size=mc.batch_size, seed=mc.seed)
    available = [k for k in heads if k in zoo.heads]
    linear = [k for k in available if isinstance(zoo.heads[k][0], nn.Linear)]
    runs: list[Run] = []
    builders: dict[str, Callable[[], None]] = {}

    def cohen() -> None:
        if "ce" in zoo.heads:
            network = nn.Sequential(zoo.backbone, zoo.heads["ce"][0])
            runs.extend(Run("cohen", "sll+ce", s, CohenRS(network, s, **mc_kwargs)) for s in sigmas)
        for s in sigmas:
            match = [t for t in zoo.cnns if math.isclose(t, s, rel_tol=1e-6)]
            if match:
                runs.append(Run("cohen", f"cnn-noise{match[0]:.2f}", s, CohenRS(zoo.cnns[match[0]][0], s, **mc_kwargs)))

    def fars_mc() -> None:
        for kind in available:
            runs.extend(Run("fars-mc", f"sll+{kind}", s,
                            FaRSMonteCarlo(zoo.backbone, zoo.heads[kind][0], s, lipschitz=zoo.lipschitz, **mc_kwargs))
                        for s in sigmas)

    def fars_closed() -> None:
        runs.extend(Run("fars-closed", f"sll+{k}", math.nan,
                        FaRSClosedForm(zoo.backbone, zoo.heads[k][0], lipschitz=zoo.lipschitz)) for k in linear)

    def lipschitz_margin() -> None:
        for kind in linear:
            head = zoo.heads[kind][0]
            with torch.no_grad():
                spectral = float(torch.linalg.matrix_norm(head.weight.detach().double(), ord=2))
            # round the constant up so float round-off can never make it too small
            constant = math.nextafter(zoo.lipschitz * spectral, math.inf)
            runs.append(Run("lipschitz-margin", f"sll+{kind}", math.nan,
                            LipschitzMargin(nn.Sequential(zoo.backbone, head), lipschitz=constant)))

    builders = {"cohen": cohen, "fars-mc": fars_mc, "fars-closed": fars_closed, "lipschitz-margin": lipschitz_margin}
    for method in methods:
        builders[method]()
    return runs
