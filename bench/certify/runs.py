"""The method runs of an experiment: one certify method on one model at one sigma.

A *run* is, e.g., ``fars-mc`` on ``sll+mlp`` at 0.25; :func:`build_runs` makes every run the models of an
experiment support, in a stable order (the order of the results file).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fars import Certifier

from ..common.methods import METHODS, MONTE_CARLO_METHODS
from ..models.zoo import ExperimentModel
from .certifiers import MonteCarloSettings, RunError, build_certifier, supported_methods, why_unsupported


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


def build_runs(models: Sequence[ExperimentModel], methods: tuple[str, ...], sigmas: tuple[float, ...],
               mc: MonteCarloSettings) -> list[Run]:
    """Every run of ``methods`` the models support, in a stable order: by method, then model, then sigma.

    ``models`` is the experiment's models (a checkpoint folder's are its
    :meth:`~bench.models.zoo.ModelZoo.experiment_models`). A model takes part in

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
    entries = list(models)
    for entry in entries:
        _check_supported(entry)
    runs: list[Run] = []
    for method in methods:
        for entry in entries:
            if method in supported_methods(entry.model) and (entry.methods is None or method in entry.methods):
                runs.extend(_method_runs(method, entry, sigmas, mc))
    return runs


def _check_supported(entry: ExperimentModel) -> None:
    wanted = entry.methods or ()
    unknown = [m for m in wanted if m not in METHODS]
    if unknown:
        raise RunError(f"model {entry.model.name!r}: unknown methods {unknown}; choose from {', '.join(METHODS)}")
    refused = tuple(m for m in wanted if m not in supported_methods(entry.model))
    if refused:
        raise RunError(f"model {entry.model.name!r} cannot be certified by {', '.join(refused)}: "
                       f"{why_unsupported(entry.model, refused)}")


def _sigmas_of(entry: ExperimentModel, sigmas: tuple[float, ...]) -> list[float]:
    if entry.sigmas is None:
        return list(sigmas)
    return [s for s in sigmas if any(math.isclose(s, t, rel_tol=1e-6) for t in entry.sigmas)]


def _method_runs(method: str, entry: ExperimentModel, sigmas: tuple[float, ...], mc: MonteCarloSettings) -> list[Run]:
    """The runs of ``method`` on one model (one per sigma for the Monte Carlo methods), certifiers from
    :func:`~bench.certify.certifiers.build_certifier`."""
    model = entry.model
    if method in MONTE_CARLO_METHODS:
        return [Run(method, model.name, s, build_certifier(method, model, s, mc)) for s in _sigmas_of(entry, sigmas)]
    return [Run(method, model.name, math.nan, build_certifier(method, model))]


__all__ = ["MonteCarloSettings", "Run", "RunError", "build_runs", "supported_methods"]
