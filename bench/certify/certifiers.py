"""The one certifier factory: a method of :mod:`bench.common.methods`, a model and settings -> a
:class:`~fars.Certifier`.

Every stage builds its certifiers here: the certification runs (:func:`bench.certify.runs.build_runs`), the
attack stage (through them), the scaling sweep (:mod:`bench.perf.n_sweep`) and the sequential comparison
(:mod:`bench.perf.sequential_compare`). What each method needs of a model (its whole network, a Lipschitz split, a
linear or a ReLU head) is the registry's :attr:`~bench.common.methods.Method.needs`; :func:`supported_methods` reads
it off a :class:`~bench.models.loaded.LoadedModel`.

* ``cohen``: :class:`~baselines.CohenRS` on the whole network, noise on the input; :class:`CohenOptions` holds
  its opt-in speed options (precision, ``torch.compile``, memory format), all off by default;
* ``fars-mc``: :class:`~fars.FaRSMonteCarlo`, noise on the embedding, radius divided by the backbone's L;
* ``fars-closed``: :class:`~fars.FaRSClosedForm`, the linear head's exact margin distance divided by L;
* ``lipschitz-margin``: :class:`~baselines.LipschitzMargin` on the whole network with the logit map's
  constant L * ||W||_2 (rounded up);
* ``fars-crown``: :class:`~fars.FaRSCrown`, bound propagation through a ReLU head, divided by L.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from baselines import CohenRS, LipschitzMargin
from fars import Certifier, FaRSClosedForm, FaRSCrown, FaRSMonteCarlo
from fars.crown import is_relu_head

from ..common.methods import METHODS, MONTE_CARLO_METHODS, SPLIT_METHODS, methods_needing
from ..models.loaded import LoadedModel


@dataclass(frozen=True)
class MonteCarloSettings:
    """CERTIFY's settings of every Monte Carlo run; with ``sequential``, ``n`` is the cap and sampling
    stops once ``radii`` are decided (see :mod:`smoothing.confidence_sequence`)."""

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


@dataclass(frozen=True)
class CohenOptions:
    """``cohen``'s opt-in speed options (:class:`~baselines.CohenRS`): ``precision`` of the forward (``fp32``
    unless asked), ``compile`` (``torch.compile`` the network), ``memory_format`` (``channels_last`` converts
    the network and every noisy batch). The defaults compute the fp32 network as given."""

    precision: str = "fp32"
    compile: bool = False
    memory_format: str = "contiguous"

    def options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~baselines.CohenRS`."""
        return {"precision": self.precision, "compile": self.compile, "memory_format": self.memory_format}


class RunError(ValueError):
    """A run the experiment asks for that its model cannot take (e.g. a FaRS method on a model without a
    Lipschitz backbone)."""


def supported_methods(model: LoadedModel) -> tuple[str, ...]:
    """The methods that can certify ``model`` (in run order; what each needs is in :mod:`bench.common.methods`)."""
    split = model.backbone is not None and model.head is not None and model.lipschitz is not None
    needs = ["network"]
    if split:
        needs.append("split")
        if isinstance(model.head, nn.Linear):
            needs.append("linear-head")
        elif model.head is not None and is_relu_head(model.head):
            needs.append("relu-head")
    return methods_needing(*needs)


def why_unsupported(model: LoadedModel, methods: tuple[str, ...]) -> str:
    """Why ``model`` cannot take ``methods`` (some of which :func:`supported_methods` does not list), in words."""
    if any(m in SPLIT_METHODS for m in methods) and not model.has_split:
        return "it has no Lipschitz backbone/head split (certify it with cohen only)"
    return (f"its head does not have the layers these methods need (it can be certified by "
            f"{', '.join(supported_methods(model))})")


def build_certifier(method: str, model: LoadedModel, sigma: float | None = None,
                    mc: MonteCarloSettings | None = None, *, cohen: CohenOptions | None = None) -> Certifier:
    """The certifier of ``method`` (a name of :data:`bench.common.methods.METHODS`) on ``model``.

    Monte Carlo methods (``cohen``, ``fars-mc``) take the noise level ``sigma`` and the sampling settings
    ``mc`` (n0, n, alpha, batch size, seed, sequential mode); ``cohen`` also ``cohen`` (default
    :class:`CohenOptions`: fp32, not compiled, contiguous). Deterministic methods ignore all three.

    Raises:
        ValueError: an unknown method; a Monte Carlo method without ``sigma`` or ``mc``.
        RunError: a method ``model`` cannot take (:func:`supported_methods`), saying why.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method not in supported_methods(model):
        raise RunError(f"model {model.name!r} cannot be certified by {method}: {why_unsupported(model, (method,))}")
    if method in MONTE_CARLO_METHODS:
        if sigma is None or mc is None:
            raise ValueError(f"{method} is a Monte Carlo method: give its noise level sigma and its settings mc")
        if method == "cohen":
            return CohenRS(model.network, sigma, n0=mc.n0, n=mc.n, alpha=mc.alpha, batch_size=mc.batch_size,
                           seed=mc.seed, **mc.sequential_options(), **(cohen or CohenOptions()).options())
    backbone, head, lipschitz = model.backbone, model.head, model.lipschitz
    assert backbone is not None and head is not None and lipschitz is not None   # supported_methods: a split
    if method == "fars-mc":
        assert sigma is not None and mc is not None
        return FaRSMonteCarlo(backbone, head, sigma, lipschitz=lipschitz, n0=mc.n0, n=mc.n, alpha=mc.alpha,
                              batch_size=mc.batch_size, seed=mc.seed, **mc.sequential_options())
    if method == "fars-crown":
        return FaRSCrown(backbone, head, lipschitz=lipschitz)
    assert isinstance(head, nn.Linear)   # supported_methods: fars-closed and lipschitz-margin need one nn.Linear
    if method == "fars-closed":
        return FaRSClosedForm(backbone, head, lipschitz=lipschitz)
    with torch.no_grad():
        spectral = float(torch.linalg.matrix_norm(head.weight.detach().double(), ord=2))
    # round the constant up so float round-off can never make it too small
    constant = math.nextafter(lipschitz * spectral, math.inf)
    return LipschitzMargin(nn.Sequential(backbone, head), lipschitz=constant)


__all__ = ["CohenOptions", "MonteCarloSettings", "RunError", "build_certifier", "supported_methods",
           "why_unsupported"]
