"""Bad inputs fail early with an error that names the offending parameter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from baselines import CohenRS, LipschitzMargin
from fars import Certificate, FaRSClosedForm, FaRSMonteCarlo

D, K = 4, 3


def linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(D, K)


def mc_factories():
    """Constructors of the two Monte Carlo methods taking the shared keyword arguments."""
    return {
        "cohen": lambda **kw: CohenRS(linear(), **{"sigma": 0.5, "n0": 5, "n": 20, **kw}),
        "fars-mc": lambda **kw: FaRSMonteCarlo(nn.Identity(), linear(), **{"sigma": 0.5, "n0": 5, "n": 20, **kw}),
    }


def all_certifiers():
    return {
        "cohen": CohenRS(linear(), sigma=0.5, n0=5, n=20),
        "fars-mc": FaRSMonteCarlo(nn.Identity(), linear(), sigma=0.5, n0=5, n=20),
        "fars-closed": FaRSClosedForm(nn.Identity(), linear()),
        "lipschitz-margin": LipschitzMargin(linear()),
    }


MC = sorted(mc_factories())
ALL = sorted(all_certifiers())


# --- constructor arguments -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", MC)
@pytest.mark.parametrize("sigma", [0.0, -0.25, math.nan, math.inf, -math.inf])
def test_bad_sigma(kind, sigma):
    with pytest.raises(ValueError, match="sigma"):
        mc_factories()[kind](sigma=sigma)


@pytest.mark.parametrize("kind", MC)
@pytest.mark.parametrize("sigma", ["0.5", None, True, torch.tensor(0.5)])
def test_sigma_of_the_wrong_type(kind, sigma):
    with pytest.raises(TypeError, match="sigma"):
        mc_factories()[kind](sigma=sigma)


@pytest.mark.parametrize("kind", MC)
@pytest.mark.parametrize("name", ["n0", "n", "batch_size"])
@pytest.mark.parametrize("value", [0, -1])
def test_counts_below_one(kind, name, value):
    with pytest.raises(ValueError, match=rf"^{name} must be >= 1"):
        mc_factories()[kind](**{name: value})


@pytest.mark.parametrize("kind", MC)
@pytest.mark.parametrize("name", ["n0", "n", "batch_size"])
@pytest.mark.parametrize("value", [100.0, 1.5, "100", True])
def test_non_integer_counts(kind, name, value):
    with pytest.raises(TypeError, match=rf"^{name} must be an integer"):
        mc_factories()[kind](**{name: value})


@pytest.mark.parametrize("kind", MC)
@pytest.mark.parametrize("alpha", [0, 0.0, 1, 1.0, 1.5, -0.01, math.nan])
def test_bad_alpha(kind, alpha):
    with pytest.raises(ValueError, match="alpha"):
        mc_factories()[kind](alpha=alpha)


@pytest.mark.parametrize("kind", MC)
def test_alpha_of_the_wrong_type(kind):
    with pytest.raises(TypeError, match="alpha"):
        mc_factories()[kind](alpha="0.001")


@pytest.mark.parametrize("lipschitz", [0, 0.0, -1.0, math.nan, math.inf])
@pytest.mark.parametrize("make", [
    lambda L: FaRSMonteCarlo(nn.Identity(), linear(), sigma=0.5, lipschitz=L),
    lambda L: FaRSClosedForm(nn.Identity(), linear(), lipschitz=L),
    lambda L: LipschitzMargin(linear(), lipschitz=L),
], ids=["fars-mc", "fars-closed", "lipschitz-margin"])
def test_bad_lipschitz(make, lipschitz):
    with pytest.raises(ValueError, match="lipschitz"):
        make(lipschitz)


@pytest.mark.parametrize("kind", MC)
@pytest.mark.parametrize("seed", [-1, -100])
def test_negative_seed(kind, seed):
    with pytest.raises(ValueError, match="seed"):
        mc_factories()[kind](seed=seed)


@pytest.mark.parametrize("kind", MC)
@pytest.mark.parametrize("seed", [1.5, "0", None, False])
def test_non_integer_seed(kind, seed):
    with pytest.raises(TypeError, match="seed"):
        mc_factories()[kind](seed=seed)


@pytest.mark.parametrize("head", [nn.Sequential(nn.Linear(D, K)), nn.Identity(), nn.Conv1d(1, 1, 1)])
def test_closed_form_needs_a_linear_head(head):
    with pytest.raises(TypeError, match="nn.Linear"):
        FaRSClosedForm(nn.Identity(), head)


@pytest.mark.parametrize("make,match", [
    (lambda: CohenRS(lambda x: x, sigma=0.5), "model"),
    (lambda: FaRSMonteCarlo("backbone", linear(), sigma=0.5), "backbone"),
    (lambda: FaRSMonteCarlo(nn.Identity(), torch.zeros(3), sigma=0.5), "head"),
    (lambda: FaRSClosedForm(None, linear()), "backbone"),
    (lambda: LipschitzMargin(np.eye(3)), "model"),
])
def test_models_must_be_modules(make, match):
    with pytest.raises(TypeError, match=match):
        make()


def test_bad_sampler():
    with pytest.raises(ValueError, match="sampler"):
        FaRSMonteCarlo(nn.Identity(), linear(), sigma=0.5, sampler="fastest")


# --- certify inputs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_inputs(kind, bad):
    x = torch.rand(3, D)
    x[1, 2] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        all_certifiers()[kind].certify(x)


@pytest.mark.parametrize("kind", ALL)
def test_one_dimensional_input(kind):
    with pytest.raises(ValueError, match="rank"):
        all_certifiers()[kind].certify(torch.rand(D))


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_inputs(kind, dtype):
    with pytest.raises(TypeError, match="floating-point"):
        all_certifiers()[kind].certify(torch.ones(2, D, dtype=dtype))


@pytest.mark.parametrize("kind", ALL)
def test_non_tensor_inputs(kind):
    with pytest.raises(TypeError, match="torch.Tensor"):
        all_certifiers()[kind].certify(np.zeros((2, D), dtype=np.float32))


@pytest.mark.parametrize("kind", ALL)
def test_empty_batch(kind):
    with pytest.raises(ValueError, match="empty"):
        all_certifiers()[kind].certify(torch.zeros(0, D))


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("count", [2, 4])
def test_indices_of_the_wrong_length(kind, count):
    with pytest.raises(ValueError, match="indices"):
        all_certifiers()[kind].certify(torch.rand(3, D), indices=torch.arange(count))


@pytest.mark.parametrize("kind", ALL)
def test_negative_indices(kind):
    with pytest.raises(ValueError, match="indices"):
        all_certifiers()[kind].certify(torch.rand(3, D), indices=torch.tensor([0, -1, 2]))


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("indices", [torch.tensor([0.0, 1.0, 2.0]), torch.tensor([True, False, True]),
                                     torch.arange(3)[None], torch.tensor([0j, 1j, 2j])])
def test_indices_of_the_wrong_type(kind, indices):
    with pytest.raises(TypeError, match="indices"):
        all_certifiers()[kind].certify(torch.rand(3, D), indices=indices)


@pytest.mark.parametrize("kind", MC)
def test_predict_validates_too(kind):
    c = mc_factories()[kind]()
    with pytest.raises(ValueError, match="NaN or Inf"):
        c.predict(torch.full((2, D), math.nan))
    with pytest.raises(ValueError, match="indices"):
        c.predict(torch.rand(2, D), indices=torch.arange(3))


def test_valid_indices_are_accepted_in_other_forms():
    c = all_certifiers()["cohen"]
    x = torch.rand(3, D)
    a = c.certify(x, indices=torch.tensor([4, 5, 6]))
    b = c.certify(x, indices=[4, 5, 6])
    c2 = c.certify(x, indices=np.array([4, 5, 6]))
    c3 = c.certify(x, indices=torch.tensor([4, 5, 6], dtype=torch.int32))
    assert torch.equal(a.radius, b.radius) and torch.equal(a.radius, c2.radius) and torch.equal(a.radius, c3.radius)


# --- model outputs -------------------------------------------------------------------------------------

class Flat(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1)          # [B], not [B, K]


class OneScore(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1, keepdim=True)


def test_model_must_return_a_batch_of_scores():
    with pytest.raises(ValueError, match=r"shape \[B, K\]"):
        CohenRS(Flat(), sigma=0.5, n0=2, n=4).certify(torch.rand(2, D))
    with pytest.raises(ValueError, match=r"shape \[B, K\]"):
        FaRSMonteCarlo(nn.Identity(), Flat(), sigma=0.5, n0=2, n=4).certify(torch.rand(2, D))
    with pytest.raises(ValueError, match=r"shape \[B, K\]"):
        LipschitzMargin(Flat()).certify(torch.rand(2, D))


def test_single_score_models():
    with pytest.raises(ValueError, match="2 classes"):
        LipschitzMargin(OneScore()).certify(torch.rand(2, D))
    with pytest.raises(ValueError, match="2 classes"):
        CohenRS(OneScore(), sigma=0.5, n0=2, n=4).predict(torch.rand(2, D))


def test_closed_form_embedding_width_mismatch():
    with pytest.raises(ValueError, match="embeddings"):
        FaRSClosedForm(nn.Identity(), nn.Linear(D + 1, K)).certify(torch.rand(2, D))
    with pytest.raises(ValueError, match="embeddings"):
        FaRSClosedForm(nn.Identity(), nn.Linear(D, K)).certify(torch.rand(2, 1, D))


def test_certificate_shapes_are_checked():
    with pytest.raises(ValueError, match="shape"):
        Certificate(torch.zeros(3, dtype=torch.int64), torch.zeros(2, dtype=torch.float64), 0, 0.0)
    with pytest.raises(ValueError, match="shape"):
        Certificate(torch.zeros(2, 1, dtype=torch.int64), torch.zeros(2, 1, dtype=torch.float64), 0, 0.0)
    cert = Certificate(torch.tensor([0, -1, 2]), torch.tensor([0.5, 0.0, 0.1], dtype=torch.float64), 0, 0.0)
    assert len(cert) == 3
    assert cert.certified_at(torch.tensor([0, 1, 2]), 0.1).tolist() == [True, False, True]
    assert cert.certified_at(torch.tensor([0, -1, 2]), 0.2).tolist() == [True, False, False]


# --- eval mode during certification ------------------------------------------------------------------

class CountingTrain(nn.Module):
    """A module that records every train()/eval() call it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(D, K)
        self.dropout = nn.Dropout(0.5)
        self.calls = 0
        self.seen_training: list[bool] = []

    def train(self, mode: bool = True) -> CountingTrain:
        self.calls += 1
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_training.append(self.training or self.dropout.training)
        return self.dropout(self.linear(x))


@pytest.mark.parametrize("method", ["cohen", "fars-closed", "fars-mc"])
def test_certify_runs_in_eval_mode_and_restores_every_submodule(method):
    """Mixed modes (a model in training with a frozen, eval-mode submodule) come back exactly."""
    model = CountingTrain()
    model.train()
    model.linear.eval()          # e.g. a frozen part of a model being fine-tuned
    if method == "cohen":
        certifier = CohenRS(model, sigma=0.5, n0=5, n=20, batch_size=8)
    elif method == "fars-closed":
        certifier = FaRSClosedForm(model, nn.Linear(K, 2))
    else:
        certifier = FaRSMonteCarlo(model, nn.Linear(K, 2), sigma=0.5, n0=5, n=20, batch_size=8)
    certifier.certify(torch.rand(2, D))
    assert model.seen_training and not any(model.seen_training), "every forward ran in eval mode"
    assert model.training and model.dropout.training and not model.linear.training


def test_certify_leaves_modules_already_in_eval_mode_untouched():
    """Nothing is switched (no train()/eval() calls) when the model is already in eval mode."""
    model = CountingTrain().eval()
    calls = model.calls
    FaRSClosedForm(model, nn.Linear(K, 2)).certify(torch.rand(2, D))
    CohenRS(model, sigma=0.5, n0=5, n=20, batch_size=8).certify(torch.rand(2, D))
    assert model.calls == calls
    assert not model.training and not model.dropout.training


def test_evaluating_restores_a_module_shared_by_two_parents():
    """A frozen dropout reachable from two parents in training mode stays frozen afterwards."""
    from smoothing.checks import evaluating

    shared = nn.Dropout(0.5)
    inner = nn.Sequential(shared)
    top = nn.Sequential(shared, inner).train()
    shared.eval()
    with evaluating(top):
        assert not any(m.training for m in top.modules())
    assert top.training and inner.training and not shared.training


@pytest.mark.parametrize("batch", [1, 64, 65, 300])
def test_check_indices_small_and_large_batches(batch):
    """Up to 64 CPU indices are checked in Python, more with a tensor reduction: same answers."""
    from smoothing.checks import check_indices

    good = torch.arange(batch, dtype=torch.int32)
    out = check_indices(good, batch)
    assert out.dtype == torch.int64 and torch.equal(out, good.long())
    same = torch.arange(batch)
    assert check_indices(same, batch) is same          # already int64 on the CPU: no copy
    bad = same.clone()
    bad[-1] = -1
    with pytest.raises(ValueError, match=">= 0"):
        check_indices(bad, batch)


def test_timed_measures_the_block_and_lets_errors_through():
    import time

    from smoothing.checks import timed

    with timed(torch.device("cpu")) as elapsed:
        time.sleep(0.01)
    assert 0.01 <= elapsed[0] < 5
    with pytest.raises(KeyError), timed(torch.device("cpu")) as elapsed:
        raise KeyError("not swallowed")
    assert elapsed[0] >= 0


def test_unsigned_indices_beyond_int64_are_refused():
    """numpy uint64 indices >= 2^63 would wrap to negative numbers when stored as int64."""
    from smoothing.checks import check_indices

    with pytest.raises(ValueError, match="int64"):
        check_indices(np.array([1, 2 ** 63 + 5], dtype=np.uint64), 2)
    assert check_indices(np.array([1, 2 ** 63 - 1], dtype=np.uint64), 2).tolist() == [1, 2 ** 63 - 1]


def test_subnormal_radii_are_reported_as_zero():
    """Below the normal float64 range rounding is absolute, so the ulp slack of every radius no longer keeps it
    below the exact value: a huge Lipschitz constant or a tiny sigma gives radius 0 (the class is kept)."""
    from smoothing.certificate import SMALLEST_NORMAL
    from smoothing.statistics import radius_from_counts

    torch.manual_seed(0)
    head = nn.Linear(D, 3).double()
    x = torch.rand(40, D, dtype=torch.float64)
    plain = FaRSClosedForm(nn.Identity(), head).certify(x)
    for certificate in (FaRSClosedForm(nn.Identity(), head, lipschitz=1e308).certify(x),
                        LipschitzMargin(head, lipschitz=1e308).certify(x)):
        assert torch.equal(certificate.prediction, plain.prediction)
        r = certificate.radius
        assert bool(((r == 0) | (r >= SMALLEST_NORMAL)).all()) and bool((r == 0).any())
    certified, radius = radius_from_counts(np.array([85, 95, 100]), 100, 1e-310, 0.001)
    assert certified.all() and (radius == 0).all()
    certified, radius = radius_from_counts(np.array([85, 95, 100]), 100, 1.0, 0.001, lipschitz=1e308)
    assert certified.all() and (radius == 0).all()


# --- non-finite scores never vote ---------------------------------------------------------------------

class _Poisoned(nn.Module):
    """A classifier whose scores are non-finite: NaN everywhere, or one entry set to ``value``."""

    def __init__(self, value: float, everywhere: bool) -> None:
        super().__init__()
        self.inner, self.value, self.everywhere = linear(), value, everywhere

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.inner(x)
        if self.everywhere:
            return torch.full_like(scores, self.value)
        return scores.index_fill(1, torch.tensor([K - 1]), self.value)   # the last class, on every sample


@pytest.mark.parametrize("value, everywhere", [(math.nan, True), (math.nan, False), (math.inf, False),
                                               (-math.inf, False)])
@pytest.mark.parametrize("method", ["cohen-certify", "cohen-predict", "fars-mc-certify", "fars-mc-predict",
                                    "lipschitz-margin"])
def test_non_finite_scores_are_refused_not_certified(method, value, everywhere):
    """argmax counts NaN as maximal, so NaN scores could certify class 0 at the largest radius if not refused."""
    from smoothing.checks import NonFiniteScoresError

    model = _Poisoned(value, everywhere)
    kind, _, call = method.rpartition("-") if method != "lipschitz-margin" else ("lipschitz-margin", "", "certify")
    if kind == "cohen":
        certifier = CohenRS(model, sigma=0.5, n0=5, n=20)
    elif kind == "fars-mc":
        certifier = FaRSMonteCarlo(nn.Identity(), model, sigma=0.5, n0=5, n=20, sampler="direct")
    else:
        certifier = LipschitzMargin(model, lipschitz=1.0)
    with pytest.raises(NonFiniteScoresError, match="non-finite scores"):
        getattr(certifier, call)(torch.rand(2, D))


def test_a_nan_weight_in_the_backbone_is_refused_by_fars_mc():
    backbone = nn.Linear(D, D)
    with torch.no_grad():
        backbone.weight[0, 0] = math.nan
    for sampler in ("direct", "projected"):
        certifier = FaRSMonteCarlo(backbone, linear(), sigma=0.5, n0=5, n=20, sampler=sampler)
        with pytest.raises(ValueError, match="non-finite"):
            certifier.certify(torch.rand(2, D))


class _NaNOnce(nn.Module):
    """NaN on one sample of the first forward batch only: the check must span every batch of a stage."""

    def __init__(self) -> None:
        super().__init__()
        self.inner, self.calls = linear(), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        scores = self.inner(x)
        return scores.index_fill(0, torch.tensor([0]), math.nan) if self.calls == 1 else scores


@pytest.mark.parametrize("stage_call", ["certify", "predict"])
def test_one_nan_sample_in_an_early_batch_is_refused(stage_call):
    from smoothing.checks import NonFiniteScoresError

    certifier = CohenRS(_NaNOnce(), sigma=0.5, n0=5, n=20, batch_size=4)
    with pytest.raises(NonFiniteScoresError):
        getattr(certifier, stage_call)(torch.rand(1, D))
    assert certifier.model.calls > 1      # the NaN batch was not the last one


# --- the [0, 1] input range --------------------------------------------------------------------------

def test_check_inputs_refuses_values_outside_the_unit_interval_by_default():
    from smoothing.checks import check_inputs
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match=r"\[0,1\]-pixel units.*min 0 and max 255"):
        check_inputs(torch.tensor([[0.0, 255.0]]), cpu)
    with pytest.raises(ValueError, match=r"min -2\.5 and max 0\.5"):
        check_inputs(torch.tensor([[-2.5, 0.5]]), cpu)
    assert check_inputs(torch.tensor([[-2.5, 0.5]]), cpu, check_range=False).shape == (1, 2)
    assert check_inputs(torch.tensor([[0.0, 1.0]]), cpu).shape == (1, 2)
    assert check_inputs(torch.zeros(2, 0), cpu).shape == (2, 0)       # nothing to check


@pytest.mark.parametrize("kind", MC)
def test_monte_carlo_certifiers_check_the_range_unless_told_not_to(kind):
    x = torch.rand(2, D) * 3 - 1
    with pytest.raises(ValueError, match="check_range=False"):
        mc_factories()[kind]().certify(x)
    assert len(mc_factories()[kind](check_range=False).certify(x)) == 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("layout", ["row-major", "column-major"])
def test_all_finite_catches_every_non_finite_score_in_either_layout(bad: float, layout: str) -> None:
    from smoothing.checks import all_finite

    scores = torch.randn(257, 7)
    if layout == "column-major":
        scores = scores.T.contiguous().T
    assert bool(all_finite(scores))
    for row, col in [(0, 0), (256, 6), (100, 3)]:
        broken = scores.clone()
        broken[row, col] = bad
        if layout == "column-major":
            broken = broken.T.contiguous().T
        assert not bool(all_finite(broken)), (row, col, bad)
