"""FaRS Monte Carlo against Cohen RS on the same base classifier.

With an identity backbone FaRS *is* Cohen's CERTIFY (same noise stream, same statistics). With an
orthogonal backbone Q the noise differs but Q eps ~ eps, so the radii agree in distribution; with a
backbone c Q (c-Lipschitz), noise sigma_z = c sigma and ``lipschitz = c``, FaRS gives Cohen's radii in
distribution again (Proposition 1 is tight for such a backbone).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from baselines import CohenRS
from fars import ABSTAIN, FaRSMonteCarlo

D, K = 5, 3
P_FLOOR = 1e-4


def mlp_head(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, K))


def linear_head(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(D, K)


def orthogonal(seed: int, scale: float = 1.0) -> nn.Linear:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=gen))
    layer = nn.Linear(D, D, bias=False)
    with torch.no_grad():
        layer.weight.copy_(scale * q)
    return layer


def inputs(count: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(count, D, generator=gen) * 1.5


#: inputs are standard normal embeddings, not [0, 1] pixels: the range check is off
SETTINGS = dict(n0=20, n=200, alpha=0.01, check_range=False)


@pytest.mark.parametrize("make_head", [linear_head, mlp_head])
def test_identity_backbone_is_exactly_cohen(make_head):
    """With direct sampling (noise on z itself) FaRS on an identity backbone draws Cohen's very noise."""
    head = make_head(0)
    x = inputs(64, 0)
    cohen = CohenRS(head, sigma=0.5, seed=7, batch_size=1000, **SETTINGS).certify(x)
    fars = FaRSMonteCarlo(nn.Identity(), head, sigma=0.5, seed=7, batch_size=333, sampler="direct",
                          **SETTINGS).certify(x)
    assert torch.equal(cohen.prediction, fars.prediction)
    assert torch.equal(cohen.radius, fars.radius)
    assert cohen.samples.dtype == torch.int64 and torch.equal(cohen.samples, fars.samples)
    assert cohen.samples.tolist() == [SETTINGS["n0"] + SETTINGS["n"]] * len(x)
    assert bool((cohen.radius > 0).any()) and bool((cohen.prediction != ABSTAIN).any())


def compare_in_distribution(cohen, fars) -> None:
    """Radii and predictions of two certificate sets over the same inputs agree in distribution."""
    # Rounded: the same radius computed as sigma Phi^-1(p) or (c sigma Phi^-1(p)) / c differs in the last
    # bit, and the KS statistic would count that as a jump of the whole mass at the cap nA = n.
    rc, rf = np.round(cohen.radius.numpy(), 10), np.round(fars.radius.numpy(), 10)
    assert len(np.unique(rc)) > 20, "radii should vary for the comparison to mean anything"
    ks = stats.ks_2samp(rc, rf)
    assert ks.pvalue > P_FLOOR, f"KS p = {ks.pvalue}"
    # Paired: given x the two radii are exchangeable, so each is larger with the same probability.
    diff = rf - rc
    pos, neg = int((diff > 0).sum()), int((diff < 0).sum())
    assert stats.binomtest(pos, pos + neg, 0.5).pvalue > P_FLOOR, (pos, neg)
    assert abs(rf.mean() - rc.mean()) < 0.1 * rc.mean()
    agree = float((cohen.prediction == fars.prediction).double().mean())
    assert agree > 0.85, f"predictions agree on only {agree:.2%}"
    both = (cohen.prediction != ABSTAIN) & (fars.prediction != ABSTAIN)
    assert float((cohen.prediction[both] == fars.prediction[both]).double().mean()) > 0.97


@pytest.mark.parametrize("make_head,sampler", [(linear_head, "direct"), (linear_head, "projected"),
                                               (mlp_head, "direct"), (mlp_head, "auto")])
def test_orthogonal_backbone_agrees_in_distribution(make_head, sampler):
    head, q = make_head(1), orthogonal(2)
    x = inputs(500, 1)
    sigma = 0.5
    cohen = CohenRS(nn.Sequential(q, head), sigma=sigma, seed=0, batch_size=20_000, **SETTINGS).certify(x)
    fars = FaRSMonteCarlo(q, head, sigma=sigma, seed=0, batch_size=20_000, sampler=sampler, **SETTINGS).certify(x)
    # The noise is not the same draw (it lives in another space), so results differ somewhere ...
    assert not torch.equal(cohen.radius, fars.radius)
    # ... but not in law.
    compare_in_distribution(cohen, fars)


def test_lipschitz_backbone_matches_cohen_in_distribution():
    """Backbone 3 Q is 3-Lipschitz: FaRS with sigma_z = 3 sigma and lipschitz = 3 has Cohen's law."""
    c = 3.0
    head, backbone = mlp_head(4), orthogonal(5, scale=c)
    x = inputs(500, 2)
    sigma = 0.4
    cohen = CohenRS(nn.Sequential(backbone, head), sigma=sigma, seed=1, batch_size=20_000, **SETTINGS).certify(x)
    fars = FaRSMonteCarlo(backbone, head, sigma=c * sigma, lipschitz=c, seed=1, batch_size=20_000,
                          **SETTINGS).certify(x)
    compare_in_distribution(cohen, fars)
    # Forgetting the Lipschitz constant would be caught: the radii would be 3x Cohen's.
    wrong = FaRSMonteCarlo(backbone, head, sigma=c * sigma, lipschitz=1.0, seed=1, batch_size=20_000,
                           **SETTINGS).certify(x)
    assert stats.ks_2samp(np.round(cohen.radius.numpy(), 10), np.round(wrong.radius.numpy(), 10)).pvalue < 1e-6


def test_identity_backbone_different_seeds_agree_in_distribution():
    head = mlp_head(6)
    x = inputs(500, 3)
    a = CohenRS(head, sigma=0.5, seed=0, batch_size=20_000, **SETTINGS).certify(x)
    b = FaRSMonteCarlo(nn.Identity(), head, sigma=0.5, seed=1, batch_size=20_000, **SETTINGS).certify(x)
    assert not torch.equal(a.radius, b.radius)
    compare_in_distribution(a, b)


@pytest.mark.parametrize("make_head", [mlp_head, linear_head])
@pytest.mark.parametrize("lipschitz", [2.0, 0.5, 7.3])
def test_lipschitz_divides_radii_exactly(lipschitz, make_head):
    head, backbone = make_head(8), orthogonal(9)
    x = inputs(100, 4)
    base = FaRSMonteCarlo(backbone, head, sigma=0.5, seed=3, **SETTINGS).certify(x)
    scaled = FaRSMonteCarlo(backbone, head, sigma=0.5, lipschitz=lipschitz, seed=3, **SETTINGS).certify(x)
    assert torch.equal(base.prediction, scaled.prediction)
    assert torch.equal(scaled.radius, base.radius / lipschitz)
    assert bool((base.radius > 0).sum() > 10)


# --- the projected sampler (noise drawn in the image of the head's first linear layer) ----------------

def narrow_mlp_head(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 3), nn.Tanh(), nn.Linear(3, K))


def test_sampler_choice():
    assert FaRSMonteCarlo(nn.Identity(), linear_head(0), sigma=1.0).sampler == "projected"   # 5 -> 3
    assert FaRSMonteCarlo(nn.Identity(), narrow_mlp_head(0), sigma=1.0).sampler == "projected"
    assert FaRSMonteCarlo(nn.Identity(), mlp_head(0), sigma=1.0).sampler == "direct"          # 5 -> 16
    assert FaRSMonteCarlo(nn.Identity(), linear_head(0), sigma=1.0, sampler="direct").sampler == "direct"
    with pytest.raises(ValueError, match="projected"):
        FaRSMonteCarlo(nn.Identity(), mlp_head(0), sigma=1.0, sampler="projected")
    with pytest.raises(ValueError, match="sampler"):
        FaRSMonteCarlo(nn.Identity(), mlp_head(0), sigma=1.0, sampler="fast")


@pytest.mark.parametrize("rank_deficient", [False, True])
def test_gaussian_factor_reproduces_the_covariance(rank_deficient):
    from fars.head_smoothing import gaussian_factor

    torch.manual_seed(0)
    w = torch.randn(4, 9, dtype=torch.float64)
    if rank_deficient:
        w[3] = w[0]
        w[2] = 0.0
    f = gaussian_factor(w)
    assert f.shape == (4, 4) and f.dtype == w.dtype
    torch.testing.assert_close(f @ f.T, w @ w.T, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("make_head", [linear_head, narrow_mlp_head])
def test_projected_sampler_agrees_with_cohen_in_distribution(make_head):
    head = make_head(10)
    x = inputs(500, 5)
    cohen = CohenRS(head, sigma=0.6, seed=2, batch_size=20_000, **SETTINGS).certify(x)
    fars = FaRSMonteCarlo(nn.Identity(), head, sigma=0.6, seed=2, batch_size=20_000, sampler="projected",
                          **SETTINGS).certify(x)
    assert not torch.equal(cohen.radius, fars.radius)
    compare_in_distribution(cohen, fars)


def test_projected_sampler_with_rank_deficient_first_layer():
    """Two equal rows and a zero row in the first layer: W W^T is singular, the factor comes from eigh."""
    head = narrow_mlp_head(11)
    with torch.no_grad():
        head[0].weight[2] = head[0].weight[0]
        head[0].bias[2] = head[0].bias[0]
    x = inputs(500, 6)
    cohen = CohenRS(head, sigma=0.6, seed=3, batch_size=20_000, **SETTINGS).certify(x)
    fars = FaRSMonteCarlo(nn.Identity(), head, sigma=0.6, seed=3, batch_size=20_000, sampler="projected",
                          **SETTINGS).certify(x)
    compare_in_distribution(cohen, fars)


def test_projected_sampler_follows_head_updates():
    """The factor is recomputed per call: changing the head's first layer changes the certificates."""
    head = linear_head(12)
    x = inputs(50, 7)
    certifier = FaRSMonteCarlo(nn.Identity(), head, sigma=0.5, seed=0, sampler="projected", **SETTINGS)
    before = certifier.certify(x)
    with torch.no_grad():
        head.weight.mul_(-1)
        head.bias.mul_(-1)
    after = certifier.certify(x)
    reference = FaRSMonteCarlo(nn.Identity(), head, sigma=0.5, seed=0, sampler="projected", **SETTINGS).certify(x)
    assert torch.equal(after.prediction, reference.prediction) and torch.equal(after.radius, reference.radius)
    assert not torch.equal(before.prediction, after.prediction)


class Recorder(nn.Module):
    """The rest of a head: records the points it is given, returns fixed scores."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self.seen.append(h.clone())
        return torch.cat([h[:, :1], -h[:, :1]], dim=1)


def test_projected_noise_has_the_law_of_the_first_layer_output():
    """The projected sampler's noisy first-layer outputs are N(W z + b, sigma^2 W W^T) (mean, covariance)."""
    torch.manual_seed(13)
    first = nn.Linear(D, 3)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 2.0, 0.0, 0.0, -1.0],
                                         [0.5, -1.0, 1.0, 0.0, 0.0],
                                         [0.0, 0.0, 3.0, 1.0, 1.0]]))
    recorder = Recorder()
    sigma, n = 0.7, 20_000
    z = torch.randn(1, D)
    FaRSMonteCarlo(nn.Identity(), nn.Sequential(first, recorder), sigma=sigma, n0=1, n=n,
                   sampler="projected", check_range=False).certify(z)
    h = torch.cat(recorder.seen)[1:].double()           # drop the selection sample
    assert h.shape == (n, 3)
    w = first.weight.detach().double()
    mean = (z.double() @ w.T + first.bias.detach().double())[0]
    cov = sigma ** 2 * w @ w.T
    sd = cov.diagonal().sqrt()
    torch.testing.assert_close(h.mean(dim=0), mean, rtol=0, atol=float(6 * sd.max() / n ** 0.5))
    empirical = torch.cov(h.T)
    # Entry-wise: the standard error of a sample covariance is <= sd_i sd_j sqrt(2 / n).
    assert bool(((empirical - cov).abs() <= 6 * torch.outer(sd, sd) * (2 / n) ** 0.5).all()), (empirical, cov)


def test_projected_factor_follows_head_updates():
    """The projected sampler memoises the factor F of the head's first layer; after an in-place update
    of the head it must certify exactly like a fresh certifier of the updated head."""
    torch.manual_seed(0)
    head = nn.Linear(8, 3)
    certifier = FaRSMonteCarlo(nn.Identity(), head, sigma=0.5, n0=20, n=500, batch_size=128, sampler="projected",
                               check_range=False)
    x = torch.randn(4, 8)
    certifier.certify(x)
    with torch.no_grad():
        head.weight.data.mul_(3.0)
    fresh_head = nn.Linear(8, 3)
    fresh_head.load_state_dict(head.state_dict())
    fresh = FaRSMonteCarlo(nn.Identity(), fresh_head, sigma=0.5, n0=20, n=500, batch_size=128, sampler="projected",
                               check_range=False)
    got, want = certifier.certify(x), fresh.certify(x)
    assert torch.equal(got.prediction, want.prediction) and torch.equal(got.radius, want.radius)


def test_projected_sampler_follows_a_replaced_layer_and_refuses_subclasses():
    """The head is split on every call (a replaced first layer is used, not a stale one), and only exact
    nn.Linear / nn.Sequential heads are projected: a subclass may compute something else in forward."""
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(8, 3), nn.ReLU(), nn.Linear(3, 3))
    certifier = FaRSMonteCarlo(nn.Identity(), head, sigma=0.5, n0=20, n=500, batch_size=128, sampler="projected",
                               check_range=False)
    x = torch.randn(4, 8)
    certifier.certify(x)
    head[0] = nn.Linear(8, 3)
    fresh = FaRSMonteCarlo(nn.Identity(), head, sigma=0.5, n0=20, n=500, batch_size=128, sampler="projected",
                               check_range=False)
    got, want = certifier.certify(x), fresh.certify(x)
    assert torch.equal(got.prediction, want.prediction) and torch.equal(got.radius, want.radius)
    head[0] = nn.Linear(8, 9)   # wider than its input: the projected sampler no longer applies
    head[2] = nn.Linear(9, 3)
    with pytest.raises(ValueError, match="no longer starts"):
        certifier.certify(x)

    class Residual(nn.Sequential):
        def forward(self, z):
            return super().forward(z) + z[:, :3]

    assert FaRSMonteCarlo(nn.Identity(), Residual(nn.Linear(8, 3)), sigma=0.5).sampler == "direct"

    class Scaled(nn.Linear):
        def forward(self, z):
            return 2 * super().forward(z)

    assert FaRSMonteCarlo(nn.Identity(), Scaled(8, 3), sigma=0.5).sampler == "direct"
    with pytest.raises(ValueError, match="projected"):
        FaRSMonteCarlo(nn.Identity(), Scaled(8, 3), sigma=0.5, sampler="projected")
