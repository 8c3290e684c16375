"""The method runs of an experiment: one certify method on one model at one sigma.

A *run* is, e.g., ``fars-mc`` on ``sll+mlp`` at 0.25; :func:`build_runs` makes every run the models of an
experiment support, in a stable order (the order of the results file).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from baselines import CohenRS, LipschitzMargin
from fars import Certifier, FaRSClosedForm, FaRSCrown, FaRSMonteCarlo
from fars.crown import is_relu_head

from ..methods import METHODS, methods_needing
from ..models.loaded import LoadedModel
from ..models.networks import HEAD_KINDS
from ..models.zoo import ExperimentModel, ModelZoo


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
    """CERTIFY's settings of every Monte Carlo run; with ``sequential``, ``n`` is the cap and sampling
    stops once ``radii`` are decided (see :mod:`smoothing.sequential`)."""

    n0: int
    n: int
    alpha: float
    batch_size: int
    seed: int
    sequential: bool = False
    radii: tuple[float, ...] = ()

    def sequential_options(self) -> dict[str, Any]:
        """Keyword arguments of a Monte Carlo certifier for this mode (none for fixed n)."""
        return {"sequential": True, "radii": self.radii} if self.sequential else {}


class RunError(ValueError):
    """A run the experiment asks for that its model cannot take (e.g. a FaRS method on a model without a
    Lipschitz backbone)."""


def build_runs(models: ModelZoo | Sequence[ExperimentModel], methods: tuple[str, ...], sigmas: tuple[float, ...],
               mc: MonteCarloSettings, heads: tuple[str, ...] = HEAD_KINDS) -> list[Run]:
    """Every run of ``methods`` the models support, in a stable order: by method, then model, then sigma.

    ``models`` is the experiment's models (a checkpoint folder's :class:`ModelZoo` stands for its
    :meth:`~ModelZoo.experiment_models` with ``heads``). A model takes part in

    * ``cohen``: at each sigma, on its whole network (input-space noise);
    * ``fars-mc``: at each sigma, when it has a Lipschitz backbone and a head (noise in embedding space,
      radius divided by the backbone's constant L);
    * ``fars-closed``: when its head is one ``nn.Linear`` (the exact margin certificate);
    * ``lipschitz-margin``: the same heads, with the logit map's constant L * ||W||_2;
    * ``fars-crown``: when its head is a network of ``nn.Linear`` and ``nn.ReLU`` layers other than one
      ``nn.Linear`` (bound propagation; a linear head has the exact ``fars-closed``);

    each limited by the model's own ``methods`` and ``sigmas`` (see :class:`ExperimentModel`).

    Raises:
        ValueError: an unknown method. RunError: a model whose own ``methods`` name one it cannot take.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    entries = models.experiment_models(heads) if isinstance(models, ModelZoo) else list(models)
    for entry in entries:
        _check_supported(entry)
    runs: list[Run] = []
    for method in methods:
        for entry in entries:
            if method in supported_methods(entry.model) and (entry.methods is None or method in entry.methods):
                runs.extend(_method_runs(method, entry, sigmas, mc))
    return runs


def supported_methods(model: LoadedModel) -> tuple[str, ...]:
    """The methods that can certify ``model`` (in run order; what each needs is in :mod:`bench.methods`)."""
    split = model.backbone is not None and model.head is not None and model.lipschitz is not None
    needs = ["network"]
    if split:
        needs.append("split")
        if isinstance(model.head, nn.Linear):
            needs.append("linear-head")
        elif model.head is not None and is_relu_head(model.head):
            needs.append("relu-head")
    return methods_needing(*needs)


def _check_supported(entry: ExperimentModel) -> None:
    wanted = entry.methods or ()
    unknown = [m for m in wanted if m not in METHODS]
    if unknown:
        raise RunError(f"model {entry.model.name!r}: unknown methods {unknown}; choose from {', '.join(METHODS)}")
    supported = supported_methods(entry.model)
    refused = [m for m in wanted if m not in supported]
    if refused:
        why = ("it has no Lipschitz backbone/head split (certify it with cohen only)" if "fars-mc" in refused else
               f"its head does not have the layers these methods need (it can be certified by {', '.join(supported)})")
        raise RunError(f"model {entry.model.name!r} cannot be certified by {', '.join(refused)}: {why}")


def _sigmas_of(entry: ExperimentModel, sigmas: tuple[float, ...]) -> list[float]:
    if entry.sigmas is None:
        return list(sigmas)
    return [s for s in sigmas if any(math.isclose(s, t, rel_tol=1e-6) for t in entry.sigmas)]


def _method_runs(method: str, entry: ExperimentModel, sigmas: tuple[float, ...], mc: MonteCarloSettings) -> list[Run]:
    """The runs of ``method`` on one model (one per sigma for the Monte Carlo methods)."""
    model = entry.model
    name = model.name
    levels = _sigmas_of(entry, sigmas)
    if method == "cohen":
        return [Run("cohen", name, s, CohenRS(model.network, s, n0=mc.n0, n=mc.n, alpha=mc.alpha,
                                              batch_size=mc.batch_size, seed=mc.seed, **mc.sequential_options()))
                for s in levels]
    assert model.backbone is not None and model.head is not None and model.lipschitz is not None
    if method == "fars-mc":
        return [Run("fars-mc", name, s, FaRSMonteCarlo(model.backbone, model.head, s, lipschitz=model.lipschitz,
                                                       n0=mc.n0, n=mc.n, alpha=mc.alpha, batch_size=mc.batch_size,
                                                       seed=mc.seed, **mc.sequential_options()))
                for s in levels]
    head = model.head
    if method == "fars-crown":
        return [Run("fars-crown", name, math.nan, FaRSCrown(model.backbone, head, lipschitz=model.lipschitz))]
    assert isinstance(head, nn.Linear)
    if method == "fars-closed":
        return [Run("fars-closed", name, math.nan, FaRSClosedForm(model.backbone, head, lipschitz=model.lipschitz))]
    with torch.no_grad():
        spectral = float(torch.linalg.matrix_norm(head.weight.detach().double(), ord=2))
    # round the constant up so float round-off can never make it too small
    constant = math.nextafter(model.lipschitz * spectral, math.inf)
    return [Run("lipschitz-margin", name, math.nan,
                LipschitzMargin(nn.Sequential(model.backbone, head), lipschitz=constant))]
