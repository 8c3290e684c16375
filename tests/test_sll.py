"""1-Lipschitz layers and backbones: exact Jacobian checks, audits under adversarial parameters, and
proof that the checks have teeth (a layer without the absolute value in its rescaling is caught).

Every bound asserted here is the declared constant 1 (plus float round-off): anything above it would
break every FaRS certificate that divides by it.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.functional import jacobian
from torch.func import functional_call, jacrev
from torch.utils._python_dispatch import TorchDispatchMode

from fars import (
    BackboneConfig,
    LipschitzAvgPool2d,
    NormalizedLinear,
    PadChannels,
    SLLConv2d,
    SLLDense,
    SpectralLinear,
    audit_lipschitz,
    build_backbone,
)
from fars.audit import LipschitzAudit
from fars.sll import sll_rescaling
from smoothing.checks import fixed_weights

TOL = 1e-5          # float32 round-off allowance on the constant 1
TOL64 = 1e-9        # the same in float64
SMALL = dict(image_size=8, conv_width=4, conv_inner=4, stages=1, conv_depth=1, dense_depth=1,
             dense_inner=16, embedding_dim=8)
FAST_AUDIT = dict(power_iterations=30, pair_steps=30)


# --- helpers ---------------------------------------------------------------------------------------

def audit64(module: nn.Module, x: torch.Tensor, **kwargs):
    """audit_lipschitz in float64 (explicitly; it is also the default).

    In float32 the audit's pair ratio ||e(x + d) - e(x)|| / ||d|| at ||d|| = 1e-3 carries a round-off
    error of ~1e-7 |e(x)| / 1e-3, up to ~1e-3, which would drown the 1e-5 tolerance; in float64 the
    floor is ~1e-13 (see test_audit_has_no_float32_false_alarm_on_identity).
    """
    return audit_lipschitz(module, x, **{**FAST_AUDIT, "dtype": torch.float64, **kwargs})


def jacobian_norm(module: nn.Module, x: torch.Tensor) -> float:
    """Exact spectral norm of the Jacobian of ``module`` at one input x (shape without batch), in float64."""
    module = copy.deepcopy(module).double().eval()
    x = x.double()

    def f(v: torch.Tensor) -> torch.Tensor:
        return module(v.view(1, *x.shape)).reshape(-1)

    jac = jacobian(f, x.reshape(-1))
    return float(torch.linalg.matrix_norm(jac, ord=2))


def randomize(layer: nn.Module, weight_scale: float = 1.0, log_q_std: float = 0.0, bias_std: float | None = None,
              seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.mul_(weight_scale)
        if hasattr(layer, "log_q") and log_q_std:
            layer.log_q.copy_(torch.randn(layer.log_q.shape, generator=gen) * log_q_std)
        if bias_std is not None:
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * bias_std)
    return layer


# Adversarial parameter settings: (weight scale, log_q std, bias std)
PARAMS = [(1.0, 0.0, None), (100.0, 0.0, 50.0), (1e-2, 0.0, 1e-2), (1.0, 5.0, 1.0), (100.0, 5.0, 10.0),
          (1.0, 30.0, 1.0)]


# --- SLLDense --------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale,log_q_std,bias_std", PARAMS)
@pytest.mark.parametrize("features,inner", [(8, 16), (16, 4)])
def test_sll_dense_exact_jacobian_at_most_one(features, inner, scale, log_q_std, bias_std):
    torch.manual_seed(features * inner)
    layer = randomize(SLLDense(features, inner), scale, log_q_std, bias_std, seed=inner)
    worst = 0.0
    for i in range(20):
        x = torch.randn(features, generator=torch.Generator().manual_seed(i)) * (scale if scale > 1 else 1.0)
        worst = max(worst, jacobian_norm(layer, x))
    assert worst <= 1 + TOL64, f"Jacobian norm {worst}"
    assert worst > 0.5   # the layer is a residual map: never collapses


@pytest.mark.parametrize("log_q", [
    torch.tensor([0.0, 200.0, -200.0, 0.0, 80.0, -80.0]),      # exp(q_j - q_i) overflows: those units are switched off
    torch.tensor([0.0, 40.0, 40.0, -40.0, 0.0, 1.0]),
    torch.linspace(-60, 60, 6),
])
def test_sll_dense_extreme_log_q_spreads(log_q):
    torch.manual_seed(0)
    layer = SLLDense(5, 6)
    with torch.no_grad():
        layer.log_q.copy_(log_q)
        layer.bias.fill_(1.0)
    t = layer.rescaling()
    assert bool(torch.isfinite(t).all()) and bool((t >= 0).all())
    for _ in range(10):
        assert jacobian_norm(layer, torch.randn(5)) <= 1 + TOL64
    assert audit64(layer, torch.randn(16, 5)).lower_bound <= 1 + TOL


def test_sll_dense_float32_jacobian():
    torch.manual_seed(1)
    layer = randomize(SLLDense(12, 24), 3.0, 5.0, 2.0, seed=1)
    x = torch.randn(12, requires_grad=False)
    jac = jacobian(lambda v: layer(v[None])[0], x)
    assert float(torch.linalg.matrix_norm(jac, ord=2)) <= 1 + TOL


def maximize_jacobian_norm(layer: nn.Module, x: torch.Tensor, steps: int = 150, lr: float = 0.05) -> float:
    """Gradient ascent on the parameters of ``layer`` (float64) to maximise ||J(x)||_2; the best value seen."""
    layer = copy.deepcopy(layer).double()
    params = {k: v.detach().clone().requires_grad_(True) for k, v in layer.named_parameters()}
    x = x.double()
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    best = 0.0

    def f(v: torch.Tensor) -> torch.Tensor:
        return functional_call(layer, params, (v.view(1, *x.shape),)).reshape(-1)

    for _ in range(steps):
        norm = torch.linalg.matrix_norm(jacrev(f)(x.reshape(-1)), ord=2)
        best = max(best, float(norm.detach()))
        optimizer.zero_grad()
        (-norm).backward()
        optimizer.step()
    return best


def test_sll_dense_survives_parameter_attack():
    """Adam on W, b, log_q maximising the exact Jacobian norm at a point: never above 1."""
    torch.manual_seed(2)
    x = torch.randn(4)
    for seed in range(2):
        torch.manual_seed(seed)
        assert maximize_jacobian_norm(SLLDense(4, 6), x) <= 1 + TOL64


# --- broken layers (no absolute value): the checks must catch them ------------------------------------

class NoAbsDense(SLLDense):
    """The FaRS-code mistake: rescaling from the *signed* Gram matrix (negative entries drop out)."""

    def rescaling(self) -> torch.Tensor:
        return sll_rescaling(self.weight @ self.weight.T, self.log_q)


class NoAbsConv(SLLConv2d):
    """The same mistake in the conv layer: the signed self-convolution summed over offsets."""

    def rescaling(self) -> torch.Tensor:
        k = self.kernel_size
        self_conv = F.conv2d(self.weight, self.weight, padding=k - 1)
        return sll_rescaling(self_conv.sum(dim=(2, 3)), self.log_q)


def anti_correlated_weights(features: int, inner: int, seed: int) -> torch.Tensor:
    """Rows +-v + small noise: the Gram matrix has large negative off-diagonal entries."""
    gen = torch.Generator().manual_seed(seed)
    v = F.normalize(torch.randn(features, generator=gen), dim=0)
    signs = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(inner)])
    return signs[:, None] * v[None, :] + 0.05 * torch.randn(inner, features, generator=gen)


def test_broken_dense_is_caught_and_correct_one_is_not():
    features, inner = 8, 8
    weight = anti_correlated_weights(features, inner, seed=0)
    x = torch.randn(16, features, generator=torch.Generator().manual_seed(1))
    results = {}
    for cls in (SLLDense, NoAbsDense):
        layer = cls(features, inner)
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.fill_(3.0)          # every unit active around x
        results[cls] = audit64(layer, x).lower_bound
        results[cls, "exact"] = max(jacobian_norm(layer, xi) for xi in x[:4])
    assert results[SLLDense] <= 1 + TOL and results[SLLDense, "exact"] <= 1 + TOL64
    assert results[NoAbsDense] > 1.01, f"audit missed the broken layer: {results[NoAbsDense]}"
    assert results[NoAbsDense, "exact"] > 1.01


def test_broken_dense_is_found_by_parameter_attack():
    """The parameter attack that cannot push SLLDense above 1 does break the signed-Gram version."""
    best = 0.0
    for seed in range(4):      # restarts: from some initialisations the ascent stays at a local optimum
        torch.manual_seed(seed)
        x = torch.randn(4)
        best = max(best, maximize_jacobian_norm(NoAbsDense(4, 6), x, steps=100))
    assert best > 1.01


def checkerboard_conv(cls: type, channels: int = 1) -> SLLConv2d:
    layer = cls(channels, 1, kernel_size=3)
    board = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]])
    with torch.no_grad():
        layer.weight.copy_(board.expand(1, channels, 3, 3))
        layer.bias.fill_(20.0)
    return layer


def test_broken_conv_is_caught_and_correct_one_is_not():
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    good = audit64(checkerboard_conv(SLLConv2d), x).lower_bound
    bad = audit_lipschitz(checkerboard_conv(NoAbsConv), x, **FAST_AUDIT).lower_bound
    assert good <= 1 + TOL
    assert bad > 1.01, f"audit missed the broken conv: {bad}"
    assert jacobian_norm(checkerboard_conv(NoAbsConv), x[0]) > 1.01
    assert jacobian_norm(checkerboard_conv(SLLConv2d), x[0]) <= 1 + TOL64


def test_broken_conv_with_random_kernel_found_by_parameter_attack():
    torch.manual_seed(3)
    x = torch.randn(1, 4, 4)
    assert maximize_jacobian_norm(NoAbsConv(1, 2), x, steps=100) > 1.01
    torch.manual_seed(3)
    assert maximize_jacobian_norm(SLLConv2d(1, 2), x, steps=100) <= 1 + TOL64


# --- SLLConv2d -------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale,log_q_std,bias_std", PARAMS)
@pytest.mark.parametrize("channels,inner,kernel,size", [(2, 3, 3, 6), (3, 2, 5, 4), (1, 4, 1, 6), (2, 2, 7, 3)])
def test_sll_conv_exact_jacobian_at_most_one(channels, inner, kernel, size, scale, log_q_std, bias_std):
    torch.manual_seed(channels * 10 + inner)
    layer = randomize(SLLConv2d(channels, inner, kernel), scale, log_q_std, bias_std, seed=kernel)
    worst = 0.0
    for i in range(5):
        x = torch.randn(channels, size, size, generator=torch.Generator().manual_seed(i))
        worst = max(worst, jacobian_norm(layer, x))
    assert worst <= 1 + TOL64, f"Jacobian norm {worst}"
    assert worst > 0.5


def test_sll_conv_survives_parameter_attack():
    torch.manual_seed(4)
    x = torch.randn(2, 4, 4)
    assert maximize_jacobian_norm(SLLConv2d(2, 2), x, steps=100) <= 1 + TOL64


def test_sll_conv_rejects_even_kernels():
    with pytest.raises(ValueError, match="kernel_size"):
        SLLConv2d(2, 2, kernel_size=2)


def test_sll_conv_q_does_not_cancel():
    """log_q must enter the rescaling (the reference code's q scaling cancelled out)."""
    torch.manual_seed(5)
    layer = SLLConv2d(2, 3)
    before = layer.rescaling().clone()
    with torch.no_grad():
        layer.log_q.copy_(torch.tensor([0.0, 2.0, -2.0]))
    assert not torch.allclose(before, layer.rescaling())


# --- audits on layers and backbones ----------------------------------------------------------------

AUDIT_PARAMS = [(1.0, 0.0), (100.0, 0.0), (1e-2, 0.0), (1.0, 5.0), (100.0, 5.0)]


@pytest.mark.parametrize("scale,log_q_std", AUDIT_PARAMS)
def test_audit_sll_dense_and_conv(scale, log_q_std):
    torch.manual_seed(6)
    dense = randomize(SLLDense(10, 20), scale, log_q_std, bias_std=scale, seed=1)
    conv = randomize(SLLConv2d(3, 4), scale, log_q_std, bias_std=scale, seed=2)
    a = audit64(dense, torch.randn(32, 10))
    b = audit64(conv, torch.randn(8, 3, 6, 6))
    for audit in (a, b):
        assert audit.lower_bound <= 1 + TOL, audit
        assert audit.confirms(1.0)
        assert audit.lower_bound > 0.5


def scaled_backbone(seed: int, scale: float = 1.0, log_q_std: float = 0.0, **overrides: int) -> nn.Module:
    torch.manual_seed(seed)
    backbone = build_backbone(**{**SMALL, **overrides})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in backbone.modules():
            if isinstance(module, (SLLDense, SLLConv2d)):
                module.weight.mul_(scale)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * scale)
                if log_q_std:
                    module.log_q.copy_(torch.randn(module.log_q.shape, generator=gen) * log_q_std)
            if isinstance(module, SpectralLinear):
                module.weight.mul_(scale)
    return backbone


@pytest.mark.parametrize("seed,scale,log_q_std", [(0, 1.0, 0.0), (1, 1.0, 0.0), (2, 100.0, 0.0), (3, 1e-2, 0.0),
                                                   (4, 1.0, 5.0), (5, 100.0, 5.0)])
def test_audit_small_backbones(seed, scale, log_q_std):
    backbone = scaled_backbone(seed, scale, log_q_std)
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    audit = audit64(backbone, x)
    assert audit.lower_bound <= 1 + TOL, audit
    assert audit.confirms(backbone.lipschitz)
    assert audit.inputs == 8
    # Exact Jacobians at a few inputs (64 -> 8 map): the audit's power iteration finds the true norm.
    exact = max(jacobian_norm(backbone, xi) for xi in x[:3])
    assert exact <= 1 + TOL64
    assert audit.jacobian >= exact * 0.95


def test_audit_backbone_two_stages_and_deeper():
    backbone = scaled_backbone(7, 3.0, 2.0, image_size=8, stages=2, conv_depth=2, dense_depth=2, in_channels=3)
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    assert audit64(backbone, x).lower_bound <= 1 + TOL
    assert jacobian_norm(backbone, x[0]) <= 1 + TOL64


# --- other 1-Lipschitz parts -----------------------------------------------------------------------

def test_pad_channels_is_an_isometry():
    pad = PadChannels(2, 5)
    x = torch.randn(2, 4, 4)
    jac = jacobian(lambda v: pad(v[None])[0].reshape(-1), x)   # [5*4*4, 2, 4, 4]
    sv = torch.linalg.svdvals(jac.reshape(5 * 16, 2 * 16))
    torch.testing.assert_close(sv, torch.ones_like(sv))
    out = pad(x[None])
    assert out.shape == (1, 5, 4, 4) and bool((out[:, 2:] == 0).all()) and torch.equal(out[:, :2], x[None])
    with pytest.raises(ValueError):
        PadChannels(3, 2)
    with pytest.raises(ValueError, match="channels"):
        pad(torch.randn(1, 3, 4, 4))


@pytest.mark.parametrize("k,size", [(2, 6), (2, 7), (3, 6), (4, 4)])
def test_lipschitz_avg_pool(k, size):
    pool = LipschitzAvgPool2d(k)
    x = torch.randn(2, size, size)
    norm = jacobian_norm(pool, x)
    assert norm <= 1 + TOL64
    assert norm == pytest.approx(1.0, abs=1e-12)        # tight: a constant window is scaled by exactly 1
    assert pool(torch.ones(1, 1, k, k)).item() == pytest.approx(k)   # sum / k


@pytest.mark.parametrize("scale", [10.0, 1.0, 0.1])
def test_spectral_linear(scale):
    torch.manual_seed(8)
    layer = SpectralLinear(12, 5)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(5, 12) * scale)
        if scale == 1.0:
            layer.weight.copy_(torch.linalg.qr(torch.randn(12, 5))[0].T)   # orthonormal rows: norm 1
    raw = float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2))
    norm = jacobian_norm(layer, torch.randn(12))
    assert norm <= 1 + TOL64
    # Divided by its norm when above 1, left alone (never scaled up) below.
    assert norm == pytest.approx(min(raw, 1.0), rel=1e-5)
    assert raw > 1.5 if scale == 10.0 else raw < 1 + 1e-6


def test_normalized_linear_rows_have_unit_norm():
    torch.manual_seed(9)
    layer = NormalizedLinear(7, 4)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(4, 7) * torch.tensor([[1e3], [1e-3], [1.0], [5.0]]))
    w = layer.normalized_weight()
    torch.testing.assert_close(w.norm(dim=1), torch.ones(4))
    jac = jacobian(lambda v: layer(v[None])[0], torch.randn(7))
    torch.testing.assert_close(jac.norm(dim=1), torch.ones(4))                  # each logit 1-Lipschitz
    assert float(torch.linalg.matrix_norm(jac, ord=2)) <= math.sqrt(4) + TOL   # whole map <= sqrt(K)


# --- backbone construction ---------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    {},
    dict(in_channels=3, image_size=8, conv_width=6, stages=2, conv_depth=1, dense_depth=0, embedding_dim=5),
    dict(stages=0, image_size=4, conv_depth=1, dense_depth=2),
    dict(image_size=7, stages=2),
    dict(conv_depth=0, dense_depth=0),
])
def test_build_backbone_shapes(overrides):
    torch.manual_seed(0)
    config = BackboneConfig(**{**SMALL, **overrides})
    backbone = build_backbone(config)
    x = torch.rand(3, config.in_channels, config.image_size, config.image_size)
    z = backbone(x)
    assert z.shape == (3, config.embedding_dim)
    assert backbone.lipschitz == 1.0
    side = config.image_size >> config.stages
    assert config.features == config.conv_width * side * side
    n_conv = sum(isinstance(m, SLLConv2d) for m in backbone.modules())
    n_dense = sum(isinstance(m, SLLDense) for m in backbone.modules())
    assert n_conv == config.conv_depth * max(config.stages, 1)
    assert n_dense == config.dense_depth
    with pytest.raises(ValueError, match="expects inputs"):
        backbone(torch.rand(3, config.in_channels, config.image_size + 1, config.image_size))


def test_build_backbone_overrides_and_round_trip():
    config = BackboneConfig(**SMALL)
    assert BackboneConfig.from_dict(config.to_dict()) == config
    backbone = build_backbone(config, embedding_dim=3)
    assert backbone.config.embedding_dim == 3 and backbone.config.image_size == 8
    assert build_backbone(**SMALL).config == config


@pytest.mark.parametrize("bad,error,match", [
    (dict(in_channels=0), ValueError, "in_channels"),
    (dict(image_size=-1), ValueError, "image_size"),
    (dict(conv_width=0), ValueError, "conv_width"),
    (dict(stages=-1), ValueError, "stages"),
    (dict(dense_depth=-2), ValueError, "dense_depth"),
    (dict(embedding_dim=0), ValueError, "embedding_dim"),
    (dict(in_channels=5, conv_width=4), ValueError, "conv_width"),
    (dict(image_size=4, stages=3), ValueError, "stages"),
    (dict(dense_inner=2.5), TypeError, "dense_inner"),
    (dict(conv_inner=True), TypeError, "conv_inner"),
    (dict(image_size="8"), TypeError, "image_size"),
])
def test_backbone_config_rejects_bad_values(bad, error, match):
    with pytest.raises(error, match=match):
        BackboneConfig(**{**SMALL, **bad})


def test_backbone_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown"):
        BackboneConfig.from_dict({**SMALL, "width": 3})


# --- audit semantics ----------------------------------------------------------------------------------

def test_audit_confirms_semantics():
    a = LipschitzAudit(jacobian=1.00005, pairs=0.9, inputs=4)
    assert a.lower_bound == 1.00005
    assert a.confirms(1.0)                       # within the default 1e-4 tolerance
    assert not a.confirms(1.0, tolerance=1e-6)
    assert not LipschitzAudit(jacobian=0.5, pairs=1.0002, inputs=1).confirms(1.0)
    assert LipschitzAudit(jacobian=2.0001, pairs=0.0, inputs=1).confirms(2.0)
    assert not LipschitzAudit(jacobian=2.001, pairs=0.0, inputs=1).confirms(2.0)
    d = a.to_dict()
    assert d["lower_bound"] == 1.00005 and d["jacobian"] == 1.00005 and d["pairs"] == 0.9 and d["inputs"] == 4


def test_audit_finds_a_known_constant_and_leaves_the_model_alone():
    """A linear map with spectral norm 3: both lower bounds reach 3 (up to round-off), never above."""
    gen = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    model = nn.Sequential(nn.Linear(6, 6, dtype=torch.float64), nn.Dropout(0.5))
    with torch.no_grad():
        model[0].weight.copy_(u @ torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.5, 0.2, 0.1], dtype=torch.float64)) @ v.T)
    model.train()
    model[0].bias.requires_grad_(False)
    before = {k: t.clone() for k, t in model.state_dict().items()}
    audit = audit_lipschitz(model, torch.randn(4, 6, generator=gen, dtype=torch.float64))   # default settings
    assert audit.jacobian == pytest.approx(3.0, rel=1e-6)
    assert audit.pairs == pytest.approx(3.0, rel=1e-4)
    assert audit.lower_bound <= 3.0 * (1 + 1e-9)
    assert audit.confirms(3.0) and not audit.confirms(2.9)
    assert model.training, "train mode restored"
    assert model[0].weight.requires_grad and not model[0].bias.requires_grad, "requires_grad flags restored"
    for k, t in model.state_dict().items():
        assert torch.equal(t, before[k]), f"{k} changed"


def test_audit_has_no_float32_false_alarm_on_identity():
    """Regression: audits used to run in the model's float32, where the pair ratio at ||d|| = 1e-3 has a
    round-off floor of ~1e-7 |e(x)| / 1e-3 (6e-4 here) and the identity failed confirms(1.0)."""
    torch.manual_seed(0)
    x = torch.randn(16, 5) * 3
    audit = audit_lipschitz(nn.Identity(), x, **FAST_AUDIT)
    assert audit.confirms(1.0, tolerance=1e-9), audit
    # The float32 floor is real, hence the float64 default (kept here as documentation of the reason).
    loose = audit_lipschitz(nn.Identity(), x, **FAST_AUDIT, dtype=torch.float32)
    assert loose.pairs > 1 + 1e-5


def test_spectral_linear_can_be_copied_and_saved_after_an_audit():
    """Regression: a normalised-weight cache filled inside the audit's torch.func transforms made
    copy.deepcopy / torch.save(module) fail with 'Cannot access storage of TensorWrapper'."""
    import io

    torch.manual_seed(0)
    backbone = build_backbone(**SMALL)
    audit_lipschitz(backbone, torch.rand(2, 1, 8, 8), power_iterations=2, pair_steps=2, dtype=torch.float32)
    clone = copy.deepcopy(backbone)
    torch.save(backbone, io.BytesIO())
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(clone(x), backbone(x))


def test_spectral_linear_sees_weight_data_writes():
    """Regression: a cache keyed on (weight._version, data_ptr) missed writes through weight.data (they do
    not bump the version counter), so the layer kept using the old weight under no_grad."""
    torch.manual_seed(0)
    layer = SpectralLinear(6, 4)
    x = torch.randn(3, 6)
    with torch.no_grad():
        layer(x)
    layer.weight.data.copy_(torch.randn(4, 6) * 0.1)
    with torch.no_grad():
        out = layer(x)
    w = layer.weight.detach()
    expected = F.linear(x, w / torch.clamp(torch.linalg.matrix_norm(w, ord=2), min=1.0), layer.bias.detach())
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_spectral_linear_cache_follows_ordinary_updates():
    """In-place updates under no_grad (optimizers, load_state_dict) and dtype changes are seen.
    (Tolerance 1e-5: the layer divides by ||W||_2 (1 + 1e-6), a deliberate round-off margin.)"""
    torch.manual_seed(0)
    layer = SpectralLinear(6, 4)
    x = torch.randn(3, 6)

    def expected() -> torch.Tensor:
        w = layer.weight.detach()
        return F.linear(x.to(w.dtype), w / torch.clamp(torch.linalg.matrix_norm(w, ord=2), min=1.0),
                        layer.bias.detach())

    with torch.no_grad():
        layer(x)
        layer.weight.mul_(7.0)
        torch.testing.assert_close(layer(x), expected(), rtol=1e-5, atol=1e-6)
    layer.load_state_dict({"weight": torch.randn(4, 6) * 0.2, "bias": torch.zeros(4)})
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected(), rtol=1e-5, atol=1e-6)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    layer(x).sum().backward()
    optimizer.step()
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), expected(), rtol=1e-5, atol=1e-6)
    layer.double()
    with torch.no_grad():
        torch.testing.assert_close(layer(x.double()), expected(), rtol=1e-5, atol=1e-6)


def _memo_layers():
    torch.manual_seed(3)
    return [SLLDense(12, 16), SLLConv2d(3, 4), SpectralLinear(12, 5)]


def _inputs_for(layer):
    return torch.randn(6, 3, 8, 8) if isinstance(layer, SLLConv2d) else torch.randn(6, 12)


@pytest.mark.parametrize("index", range(3))
def test_memoised_weight_factors_never_go_stale(index):
    """Inference reuses the rescaling / spectral norm only while the weights are exactly those it came from."""
    layer = _memo_layers()[index]
    x = _inputs_for(layer)

    def fresh():  # autograd on: always recomputed from the current weights
        with torch.enable_grad():
            return layer(x).detach()

    with torch.inference_mode():
        first = layer(x)
    assert torch.equal(first, fresh())
    with torch.no_grad():
        layer.weight.add_(0.25)                        # an in-place update (an optimizer step)
    with torch.inference_mode():
        assert torch.equal(layer(x), fresh()) and not torch.equal(layer(x), first)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    state["weight"] = torch.randn_like(state["weight"])
    layer.load_state_dict(state)                       # loaded weights
    with torch.no_grad():
        assert torch.equal(layer(x), fresh())
    double = copy.deepcopy(layer).double()             # converted copy: its own memo
    with torch.inference_mode():
        assert torch.allclose(double(x.double()).float(), fresh(), atol=1e-5)
        assert torch.equal(layer(x), fresh())


def test_memo_is_bypassed_when_autograd_records():
    layer = _memo_layers()[0]
    x = torch.randn(4, 12, requires_grad=True)
    with torch.inference_mode():
        layer(x.detach())
    layer(x).sum().backward()                          # gradients reach the rescaling's parameters
    assert layer.log_q.grad is not None and layer.log_q.grad.abs().sum() > 0


def test_a_compiled_network_is_traced_once_for_many_certify_calls():
    """Under torch.compile the memo is bypassed (its rescaling computed in the graph): a memo read inside the
    trace would become a guard on the certify call's fixed-weights block, which changes every call."""
    import torch._dynamo

    torch._dynamo.reset()
    network = nn.Sequential(SLLConv2d(3, 4), nn.Flatten(), SLLDense(3 * 5 * 5, 8)).eval()
    compiled = torch.compile(network, backend="eager", fullgraph=True)
    x = torch.rand(2, 3, 5, 5)
    with torch.inference_mode():
        expected = network(x)
    with torch._dynamo.config.patch(error_on_recompile=True), torch.inference_mode():
        for _ in range(3):
            with fixed_weights():
                assert torch.allclose(compiled(x), expected, atol=1e-6)
    torch._dynamo.reset()


def test_audit_prints_no_torch_jit_script_deprecation():
    """The audit's forward-mode product (torch.func.jvp) makes torch register its jvp decompositions
    with ``torch.jit.script`` on first use, which warns that ``torch.jit.script`` is deprecated: that
    warning is torch's own, and the audit must not pass it on to the user. A fresh interpreter, so the
    registration really happens inside the audit."""
    import subprocess
    import sys

    code = ("import torch, warnings; warnings.simplefilter('always'); from fars.audit import jacobian_norms; "
            "jacobian_norms(torch.nn.Linear(3, 2).double(), torch.rand(2, 3, dtype=torch.float64), 2)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert "torch.jit.script" not in done.stderr, done.stderr


# --- inference constants: memoised per certify call, bit for bit the plain formula -----------------

class _Ops(TorchDispatchMode):
    """Records the aten operations run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def _plain_formula(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's map written out as in its docstring, with autograd on (nothing memoised, nothing in place)."""
    with torch.enable_grad():
        if isinstance(layer, SLLDense):
            t = layer.rescaling()
            return (x - 2 * F.linear(F.relu(F.linear(x, layer.weight, layer.bias)) * t, layer.weight.T)).detach()
        if isinstance(layer, SLLConv2d):
            pad, t = layer.kernel_size // 2, layer.rescaling()[None, :, None, None]
            hidden = F.relu(F.conv2d(x, layer.weight, layer.bias, padding=pad)) * t
            return (x - 2 * F.conv_transpose2d(hidden, layer.weight, padding=pad)).detach()
        w = layer.weight
        return F.linear(x, w / torch.clamp(layer.spectral_norm(), min=1.0), layer.bias).detach()


@pytest.mark.parametrize("index", range(3))
def test_inference_inside_a_certify_block_reads_no_weights_and_matches_the_formula_bit_for_bit(index, monkeypatch):
    """Inside fixed_weights (a certify call) the memo compares the weights' values once; later forwards
    only check identity and version counters: no value comparison (torch.equal is a host sync per parameter on
    CUDA). The output is the plain formula's, bit for bit (the factor 2 folded into one subtraction, relu and t
    in place)."""
    import fars.memo as memo

    compared = []
    original = memo.same_values
    monkeypatch.setattr(memo, "same_values", lambda a, b: compared.append(1) or original(a, b))
    layer = _memo_layers()[index]
    x = _inputs_for(layer)
    with torch.inference_mode(), fixed_weights():
        first = layer(x)
        compared.clear()
        with _Ops() as recorded:
            again = layer(x)
    assert "aten.equal" not in recorded.ops and not compared
    assert torch.equal(first, again) and torch.equal(first, _plain_formula(layer, x))
    with torch.inference_mode():   # outside a block every forward compares the values
        layer(x)
    assert compared


def test_training_steps_inside_and_between_blocks_refresh_the_memo():
    """An optimizer step (in place, bumping the version counters) is seen by the next inference forward in the
    same fixed_weights block and in the next one; a write through .data between blocks is seen by the next
    block's value comparison. Each output equals the plain formula of the current weights, bit for bit."""
    torch.manual_seed(0)
    layer = SLLConv2d(3, 4)
    x = torch.randn(2, 3, 6, 6)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)

    def step() -> None:
        optimizer.zero_grad()
        layer(x).square().sum().backward()
        optimizer.step()

    def infer() -> torch.Tensor:
        with torch.inference_mode():
            return layer(x)

    seen = []
    with fixed_weights():
        seen.append(infer())
        cached = layer.memo._value
        step()
        seen.append(infer())
        assert layer.memo._value is not cached and not torch.equal(layer.memo._value, cached)
        assert torch.equal(seen[-1], _plain_formula(layer, x))
    with fixed_weights():
        step()
        seen.append(infer())
        assert torch.equal(seen[-1], _plain_formula(layer, x))
    layer.weight.data.mul_(0.5)                        # no version bump: found by the next block's comparison
    with fixed_weights():
        seen.append(infer())
        assert torch.equal(seen[-1], _plain_formula(layer, x))
    assert all(not torch.equal(a, b) for a, b in zip(seen, seen[1:], strict=False))


def test_memo_compares_weights_bit_for_bit():
    """The cross-call comparison of the memo (memcmp on contiguous CPU tensors, torch.equal otherwise) sees a
    change in the last byte, tells -0.0 from 0.0, finds a NaN equal to its own bits, and falls back to
    torch.equal for a non-contiguous tensor."""
    from fars.memo import same_values

    a = torch.randn(64, 33)
    b = a.clone()
    assert same_values(a, b)
    b.view(-1)[-1] = torch.nextafter(b.view(-1)[-1], torch.tensor(math.inf))
    assert not same_values(a, b)
    zero, negative = torch.zeros(3), torch.zeros(3)
    negative[1] = -0.0
    assert torch.equal(zero, negative) and not same_values(zero, negative)
    nan = torch.full((2,), math.nan)
    assert same_values(nan, nan.clone()) and not torch.equal(nan, nan.clone())
    assert same_values(a.T, a.clone().T) and not same_values(a.T, (a + 1).T)     # strided: torch.equal
    assert same_values(torch.empty(0), torch.empty(0))
    torch.manual_seed(0)
    layer, x = SLLDense(6, 4), torch.randn(3, 6)
    with torch.inference_mode(), fixed_weights():
        layer(x)
    layer.weight.data.view(-1)[-1] += 1.0                         # one weight, through .data (no version bump)
    with torch.inference_mode(), fixed_weights():
        after = layer(x)
    with torch.no_grad():
        t = layer.rescaling()
        expected = x - 2 * F.linear(F.relu(F.linear(x, layer.weight, layer.bias)) * t, layer.weight.T)
    assert torch.equal(after, expected)


def test_memo_of_a_pickled_module_starts_empty():
    import io

    layer = _memo_layers()[0]
    x = _inputs_for(layer)
    with torch.inference_mode(), fixed_weights():
        layer(x)
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded.memo._value is None
    with torch.inference_mode():
        assert torch.equal(loaded(x), layer(x))
