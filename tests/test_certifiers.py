"""The one certifier factory (:mod:`bench.certify.certifiers`) and the scaling stage's choice of model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from baselines import CohenRS, LipschitzMargin
from bench.certify.certifiers import (
    CohenOptions,
    MonteCarloSettings,
    RunError,
    build_certifier,
    supported_methods,
)
from bench.common.methods import METHODS
from bench.models import LoadedModel
from bench.perf.n_sweep import scaling_model
from fars import FaRSClosedForm, FaRSCrown, FaRSMonteCarlo

MC = MonteCarloSettings(n0=5, n=30, alpha=0.01, batch_size=16, seed=3)


def model(name: str, head: nn.Module | None, lipschitz: float = 1.5) -> LoadedModel:
    """A [1, 4, 4] classifier: flatten (the backbone) then ``head``; ``head=None``: no split (a plain network)."""
    if head is None:
        return LoadedModel(name=name, network=nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), backbone=None,
                           head=None, lipschitz=None, input_shape=(1, 4, 4), num_classes=3, format="torch",
                           fingerprint="0" * 64)
    backbone = nn.Flatten()
    return LoadedModel(name=name, network=nn.Sequential(backbone, head), backbone=backbone, head=head,
                       lipschitz=lipschitz, input_shape=(1, 4, 4), num_classes=3, format="torch",
                       fingerprint="0" * 64)


def linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(16, 3)


def relu_head() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def test_every_registered_method_builds_its_certifier() -> None:
    split = model("split", linear())
    expected = {"cohen": CohenRS, "fars-mc": FaRSMonteCarlo, "fars-closed": FaRSClosedForm,
                "lipschitz-margin": LipschitzMargin}
    for method, cls in expected.items():
        assert type(build_certifier(method, split, 0.25, MC)) is cls, method
    assert type(build_certifier("fars-crown", model("mlp", relu_head()))) is FaRSCrown
    assert set(expected) | {"fars-crown"} == set(METHODS)


def test_the_factory_passes_the_settings_on() -> None:
    split = model("split", linear())
    options = CohenOptions(precision="bf16", memory_format="channels_last")
    cohen = build_certifier("cohen", split, 0.25, MC, cohen=options)
    assert isinstance(cohen, CohenRS)
    assert (cohen.sigma, cohen.n0, cohen.n, cohen.alpha, cohen.batch_size, cohen.seed) == (0.25, 5, 30, 0.01, 16, 3)
    assert (cohen.precision, cohen.memory_format, cohen.model) == ("bf16", "channels_last", split.network)
    fars = build_certifier("fars-mc", split, 0.5, MonteCarloSettings(5, 30, 0.01, 16, 3, sequential=True, radii=(0.1,)))
    assert isinstance(fars, FaRSMonteCarlo)
    assert fars.sigma == 0.5 and fars.lipschitz == 1.5 and fars.sequential and tuple(fars.radii) == (0.1,)
    # the same certificates as the classes built by hand
    x = torch.rand(3, 1, 4, 4)
    head = split.head
    assert isinstance(head, nn.Linear)
    by_hand = FaRSClosedForm(nn.Flatten(), head, lipschitz=1.5).certify(x)
    built = build_certifier("fars-closed", split).certify(x)
    assert torch.equal(built.radius, by_hand.radius) and torch.equal(built.prediction, by_hand.prediction)
    # the Lipschitz margin's constant L * ||W||_2, rounded up
    margin = build_certifier("lipschitz-margin", split)
    assert isinstance(margin, LipschitzMargin)
    spectral = float(torch.linalg.matrix_norm(head.weight.detach().double(), ord=2))
    assert margin.lipschitz == math.nextafter(1.5 * spectral, math.inf)


def test_the_factory_refuses_what_a_model_cannot_take() -> None:
    plain, mlp = model("plain", None), model("mlp", relu_head())
    assert supported_methods(plain) == ("cohen",)
    with pytest.raises(RunError, match="'plain' cannot be certified by fars-mc: it has no Lipschitz"):
        build_certifier("fars-mc", plain, 0.25, MC)
    with pytest.raises(RunError, match="'mlp' cannot be certified by fars-closed: its head"):
        build_certifier("fars-closed", mlp)
    with pytest.raises(ValueError, match="unknown method 'smooth'"):
        build_certifier("smooth", plain)
    with pytest.raises(ValueError, match="Monte Carlo method"):
        build_certifier("cohen", plain)


def test_the_scaling_stage_times_the_first_model_with_a_split_and_a_linear_head() -> None:
    plain, mlp = model("plain", None), model("mlp", relu_head())
    first, second = model("a", linear()), model("b", linear(2))
    chosen, line = scaling_model([mlp, plain, first, second])
    assert chosen is first
    assert line == ("scaling sweep: times a with cohen, fars-mc, fars-closed; skipped: mlp (one model per sweep), "
                    "plain (no Lipschitz split), b (one model per sweep)")
    # a ReLU head alone: timed without the closed-form floor, and the line says so
    chosen, line = scaling_model([plain, mlp])
    assert chosen is mlp and line.startswith("scaling sweep: times mlp with cohen, fars-mc (no fars-closed floor")
    # a name picks the model; a model without a split, or a name of none, is refused
    assert scaling_model([plain, first, second], "b")[0] is second
    with pytest.raises(ValueError, match="'plain' has no Lipschitz"):
        scaling_model([plain, first], "plain")
    with pytest.raises(ValueError, match="no model called 'c'"):
        scaling_model([plain, first], "c")
    # nothing with a split: skipped, in one line naming each model
    assert scaling_model([plain]) == (None, "scaling sweep skipped: no model has a Lipschitz backbone/head split; "
                                            "skipped: plain (no Lipschitz split)")
