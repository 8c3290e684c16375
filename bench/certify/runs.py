"""The method runs of an experiment: one certify method on one model at one sigma.

A *run* is, e.g., ``fars-mc`` on ``sll+mlp`` at 0.25; :func:`build_runs` makes every run a loaded
:class:`~bench.models.zoo.ModelZoo` supports, in a stable order (the order of the results file).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from baselines import CohenRS, LipschitzMargin
from fars import Certifier, FaRSClosedForm, FaRSMonteCarlo

from ..models.networks import HEAD_KINDS
from ..models.zoo import ModelZoo

METHODS = ("cohen", "fars-mc", "fars-closed", "lipschitz-margin")


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
    available = [k for k in heads if k in zoo.heads]
    linear: dict[str, nn.Linear] = {}
    for k in available:
        candidate = zoo.heads[k][0]
        if isinstance(candidate, nn.Linear):
            linear[k] = candidate
    runs: list[Run] = []
    builders: dict[str, Callable[[], None]] = {}

    def cohen() -> None:
        if "ce" in zoo.heads:
            network = nn.Sequential(zoo.backbone, zoo.heads["ce"][0])
            runs.extend(Run("cohen", "sll+ce", s, CohenRS(network, s, n0=mc.n0, n=mc.n, alpha=mc.alpha,
                                                          batch_size=mc.batch_size, seed=mc.seed))
                        for s in sigmas)
        for s in sigmas:
            match = [t for t in zoo.cnns if math.isclose(t, s, rel_tol=1e-6)]
            if match:
                runs.append(Run("cohen", f"cnn-noise{match[0]:.2f}", s,
                                CohenRS(zoo.cnns[match[0]][0], s, n0=mc.n0, n=mc.n, alpha=mc.alpha,
                                        batch_size=mc.batch_size, seed=mc.seed)))

    def fars_mc() -> None:
        for kind in available:
            runs.extend(Run("fars-mc", f"sll+{kind}", s,
                            FaRSMonteCarlo(zoo.backbone, zoo.heads[kind][0], s, lipschitz=zoo.lipschitz, n0=mc.n0,
                                           n=mc.n, alpha=mc.alpha, batch_size=mc.batch_size, seed=mc.seed))
                        for s in sigmas)

    def fars_closed() -> None:
        runs.extend(Run("fars-closed", f"sll+{k}", math.nan,
                        FaRSClosedForm(zoo.backbone, head, lipschitz=zoo.lipschitz)) for k, head in linear.items())

    def lipschitz_margin() -> None:
        for kind, head in linear.items():
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
