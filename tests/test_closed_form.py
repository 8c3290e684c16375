"""FaRS closed form and the Lipschitz-margin certificate on linear classifiers, where the exact
certified radius is known: the l2 distance from z to the nearest point where another class ties or wins.

Everything here runs in float64 so that "exact" can be checked to ~1e-9.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from baselines import LipschitzMargin
from fars import ABSTAIN, FaRSClosedForm, linear_head_radius
from fars.closed_form import (
    SCALAR_ROWS,
    HeadGeometry,
    _abs_max_scalar,
    _argmax_scalar,
    _radius_scalar,
    _radius_tensor,
    norm_scale,
    rounding_factor,
)

DTYPE = torch.float64


def make_head(d: int, k: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    head = nn.Linear(d, k, dtype=DTYPE)
    with torch.no_grad():
        head.weight.normal_()
        head.bias.normal_()
    return head


def scores(head: nn.Linear, z: torch.Tensor) -> torch.Tensor:
    s = z.to(DTYPE) @ head.weight.detach().T
    return s if head.bias is None else s + head.bias.detach()


def brute_force_radius(head: nn.Linear, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent loop-based reference: min over rivals of (s_c - s_j) / ||w_c - w_j||."""
    w = head.weight.detach()
    s = scores(head, z)
    preds, radii = [], []
    for row in s:
        c = int(row.argmax())
        best = math.inf
        for j in range(len(row)):
            if j == c:
                continue
            gap = float(torch.linalg.vector_norm(w[c] - w[j]))
            best = min(best, float(row[c] - row[j]) / gap)
        preds.append(c)
        radii.append(best)
    return torch.tensor(preds), torch.tensor(radii, dtype=DTYPE)


def worst_rival(head: nn.Linear, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Index j* of the rival whose boundary is nearest, per row."""
    w = head.weight.detach()
    s = scores(head, z)
    margin = s.gather(1, c[:, None]) - s
    gaps = torch.linalg.vector_norm(w[c][:, None, :] - w[None, :, :], dim=2)
    dist = margin / gaps.clamp_min(1e-300)
    dist.scatter_(1, c[:, None], math.inf)
    return dist.argmin(dim=1)


def pgd_on_sphere(head: nn.Linear, z: torch.Tensor, c: torch.Tensor, radius: torch.Tensor,
                  steps: int = 40, seed: int = 0) -> torch.Tensor:
    """Max over found deltas with ||delta|| = radius of max_{j != c} (s_j - s_c)(z + delta) (per row).

    Projected gradient ascent on the sphere, one run per rival j (from a random start), on the gap
    s_j - s_c; a soft maximum over rivals would get stuck at the local maximum of the wrong rival.
    """
    gen = torch.Generator().manual_seed(seed)
    # Certificates are produced under torch.inference_mode(); clone to use them with autograd.
    z, c, radius = z.clone(), c.clone(), radius.clone()
    w = head.weight.detach()
    b = 0.0 if head.bias is None else head.bias.detach()
    best = torch.full((z.shape[0],), -math.inf, dtype=DTYPE)
    r = radius[:, None]
    for j in range(w.shape[0]):
        rows = c != j

        def gap(delta: torch.Tensor, j: int = j) -> torch.Tensor:
            s = (z + delta) @ w.T + b
            return s[:, j] - s.gather(1, c[:, None])[:, 0]

        delta = torch.randn(z.shape, generator=gen, dtype=DTYPE)
        delta = delta / delta.norm(dim=1, keepdim=True) * r
        for _ in range(steps):
            delta.requires_grad_(True)
            g = gap(delta)
            best = torch.where(rows, torch.maximum(best, g.detach()), best)
            (grad,) = torch.autograd.grad(g.sum(), delta)
            with torch.no_grad():
                delta = delta + 0.5 * r * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-300)
                delta = delta / delta.norm(dim=1, keepdim=True) * r
        with torch.no_grad():
            best = torch.where(rows, torch.maximum(best, gap(delta)), best)
    return best


@pytest.fixture(params=[0, 1, 2])
def setup(request):
    d, k, batch = 6, 5, 64
    head = make_head(d, k, seed=request.param)
    torch.manual_seed(100 + request.param)
    z = torch.randn(batch, d, dtype=DTYPE) * 2
    return head, z


def test_radius_matches_independent_formula(setup):
    head, z = setup
    cert = FaRSClosedForm(nn.Identity(), head, check_range=False).certify(z)
    ref_pred, ref_rad = brute_force_radius(head, z)
    assert cert.prediction.dtype == torch.int64 and cert.radius.dtype == torch.float64
    assert bool((cert.samples == 0).all()) and cert.seconds >= 0
    assert torch.equal(cert.prediction, ref_pred)
    torch.testing.assert_close(cert.radius, ref_rad, rtol=1e-12, atol=1e-12)
    assert bool((cert.radius > 0).all())


def test_step_just_beyond_radius_along_worst_direction_flips(setup):
    """(a) r is not an under-estimate: moving r (1 + 1e-6) + 1e-12 toward the nearest rival's boundary
    makes that rival tie or win."""
    head, z = setup
    cert = FaRSClosedForm(nn.Identity(), head, check_range=False).certify(z)
    c, r = cert.prediction, cert.radius
    j = worst_rival(head, z, c)
    w = head.weight.detach()
    u = w[j] - w[c]
    u = u / u.norm(dim=1, keepdim=True)
    z_adv = z + (r * (1 + 1e-6) + 1e-12)[:, None] * u
    s = scores(head, z_adv)
    s_j, s_c = s.gather(1, j[:, None])[:, 0], s.gather(1, c[:, None])[:, 0]
    assert bool((s_j >= s_c).all())
    assert bool(((s.argmax(dim=1) != c) | (s_j == s_c)).all())
    # The model itself (an nn.Module on the identity backbone) changes its decision too.
    assert bool((head(z_adv).argmax(dim=1) != c).all())
    # ... while at 0.999 r along the same direction it has not.
    s_in = scores(head, z + (0.999 * r)[:, None] * u)
    assert bool((s_in.argmax(dim=1) == c).all())


def test_no_flip_inside_radius_random_directions(setup):
    """(b) Hundreds of random directions at 0.999 r: the argmax never changes."""
    head, z = setup
    cert = FaRSClosedForm(nn.Identity(), head, check_range=False).certify(z)
    c, r = cert.prediction, cert.radius
    gen = torch.Generator().manual_seed(7)
    dirs = 400
    u = torch.randn(z.shape[0], dirs, z.shape[1], generator=gen, dtype=DTYPE)
    u = u / u.norm(dim=2, keepdim=True)
    pts = z[:, None, :] + 0.999 * r[:, None, None] * u
    s = scores(head, pts.reshape(-1, z.shape[1])).reshape(z.shape[0], dirs, -1)
    assert bool((s.argmax(dim=2) == c[:, None]).all())


def test_no_flip_inside_radius_adversarial_directions(setup):
    """(b) Toward each rival's boundary, and PGD on the sphere of radius 0.999 r: never flips."""
    head, z = setup
    cert = FaRSClosedForm(nn.Identity(), head, check_range=False).certify(z)
    c, r = cert.prediction, cert.radius
    w = head.weight.detach()
    k = w.shape[0]
    for j in range(k):
        rows = c != j
        u = w[j] - w[c[rows]]
        u = u / u.norm(dim=1, keepdim=True)
        s = scores(head, z[rows] + (0.999 * r[rows])[:, None] * u)
        assert bool((s.argmax(dim=1) == c[rows]).all()), f"flip toward class {j}"
    best_gap = pgd_on_sphere(head, z, c, 0.999 * r)
    assert bool((best_gap < 0).all()), f"PGD found a rival that ties or wins: {best_gap.max()}"
    # PGD is not toothless: at 1.001 r it finds the flip for every row.
    gap_out = pgd_on_sphere(head, z, c, 1.001 * r)
    assert bool((gap_out > 0).all())


def test_lipschitz_divides_radius(setup):
    """(c) lipschitz = 2 halves every radius, same predictions."""
    head, z = setup
    one = FaRSClosedForm(nn.Identity(), head, check_range=False).certify(z)
    two = FaRSClosedForm(nn.Identity(), head, lipschitz=2, check_range=False).certify(z)
    assert torch.equal(one.prediction, two.prediction)
    torch.testing.assert_close(two.radius, one.radius / 2, rtol=1e-15, atol=0)


def test_ties_abstain_with_zero_radius():
    """(d) A tie for the top score abstains with radius 0; a tie below the top does not matter."""
    head = nn.Linear(2, 3, dtype=DTYPE)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=DTYPE))
        head.bias.zero_()
    z = torch.tensor([[1.0, 1.0],     # s = (1, 1, -2): top tie -> abstain
                      [0.0, 0.0],     # s = (0, 0, 0): three-way tie -> abstain
                      [2.0, 1.0],     # s = (2, 1, -3): class 0
                      [-1.0, -1.0]],  # s = (-1, -1, 2): class 2, tie between 0 and 1 below the top
                     dtype=DTYPE)
    cert = FaRSClosedForm(nn.Identity(), head, check_range=False).certify(z)
    assert cert.prediction.tolist() == [ABSTAIN, ABSTAIN, 0, 2]
    assert cert.radius[0] == 0 and cert.radius[1] == 0
    assert cert.radius[2] == pytest.approx(1 / math.sqrt(2))              # (2 - 1) / ||(1, -1)||
    assert cert.radius[3] == pytest.approx(3 / math.sqrt(5))              # (2 - (-1)) / ||(-2, -1)||
    # Same through LipschitzMargin on the same linear map (its margin is also 0 at a tie).
    lm = LipschitzMargin(head, lipschitz=float(torch.linalg.matrix_norm(head.weight.detach(), ord=2)),
                         check_range=False)
    cm = lm.certify(z)
    assert cm.prediction[:2].tolist() == [ABSTAIN, ABSTAIN]
    assert cm.radius[:2].tolist() == [0.0, 0.0]


def test_identical_rows():
    """(e) Two identical rows: with a smaller bias the copy can never win (infinite distance to it),
    the radius stays finite from the other classes and is still exact."""
    torch.manual_seed(3)
    d, k = 4, 4
    head = make_head(d, k, seed=3)
    with torch.no_grad():
        head.weight[0] = head.weight[1]
        head.bias[0] = head.bias[1] - 0.5
    z = torch.randn(300, d, dtype=DTYPE) * 3
    cert = FaRSClosedForm(nn.Identity(), head, check_range=False).certify(z)
    assert bool((cert.prediction != 0).all())
    assert bool((cert.prediction != ABSTAIN).all())
    assert bool(torch.isfinite(cert.radius).all()) and bool((cert.radius > 0).all())
    assert bool((cert.prediction == 1).any()), "class 1 should win somewhere for this test to bite"
    # Exactness where class 1 wins: equals the min over the classes 2, 3 (class 0 is at infinite distance).
    w, s = head.weight.detach(), scores(head, z)
    won = cert.prediction == 1
    expected = torch.stack([(s[won, 1] - s[won, j]) / (w[1] - w[j]).norm() for j in (2, 3)]).min(dim=0).values
    torch.testing.assert_close(cert.radius[won], expected, rtol=1e-12, atol=1e-12)
    # And soundness: random directions at 0.999 r never flip.
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(z.shape[0], 200, d, generator=gen, dtype=DTYPE)
    u = u / u.norm(dim=2, keepdim=True)
    pts = z[:, None] + 0.999 * cert.radius[:, None, None] * u
    assert bool((scores(head, pts.reshape(-1, d)).argmax(1).reshape(z.shape[0], -1) == cert.prediction[:, None]).all())


def test_identical_rows_and_biases_tie_when_on_top():
    head = make_head(3, 3, seed=5)
    with torch.no_grad():
        head.weight[2] = head.weight[0]
        head.bias[2] = head.bias[0]
    torch.manual_seed(5)
    z = torch.randn(200, 3, dtype=DTYPE) * 3
    cert = FaRSClosedForm(nn.Identity(), head, check_range=False).certify(z)
    s = scores(head, z)
    zero_on_top = s.argmax(dim=1) == 0
    assert bool(zero_on_top.any()) and bool((~zero_on_top).any())
    assert bool((cert.prediction[zero_on_top] == ABSTAIN).all())
    assert bool((cert.radius[zero_on_top] == 0).all())
    assert bool((cert.prediction[~zero_on_top] == 1).all())
    assert bool(torch.isfinite(cert.radius).all())


def test_non_linear_head_is_rejected():
    """(f)"""
    with pytest.raises(TypeError, match="nn.Linear"):
        FaRSClosedForm(nn.Identity(), nn.Sequential(nn.Linear(3, 2)))
    with pytest.raises(TypeError, match="nn.Linear"):
        FaRSClosedForm(nn.Identity(), nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))


def test_closed_form_through_a_backbone_scaled_by_lipschitz():
    """A backbone z = 3 x (3-Lipschitz): the pixel-space radius is r_z / 3, and is exact."""
    head = make_head(5, 4, seed=11)
    backbone = nn.Linear(5, 5, bias=False, dtype=DTYPE)
    with torch.no_grad():
        backbone.weight.copy_(3 * torch.eye(5, dtype=DTYPE))
    torch.manual_seed(11)
    x = torch.randn(40, 5, dtype=DTYPE)
    cert = FaRSClosedForm(backbone, head, lipschitz=3.0, check_range=False).certify(x)
    _, rz = brute_force_radius(head, 3 * x)
    torch.testing.assert_close(cert.radius, rz / 3, rtol=1e-12, atol=1e-12)


def test_linear_head_radius_float32_inputs_computed_in_float64():
    head = make_head(4, 3, seed=9)
    torch.manual_seed(9)
    z = torch.randn(20, 4)
    pred, rad = linear_head_radius(z, head.weight.float(), head.bias.float())
    assert rad.dtype == torch.float64
    ref_pred, ref_rad = brute_force_radius(head, z.double())
    assert torch.equal(pred, ref_pred)
    torch.testing.assert_close(rad, ref_rad, rtol=1e-6, atol=1e-6)


# --- LipschitzMargin ----------------------------------------------------------------------------

def linear_with_spectral_norm(d: int, k: int, lipschitz: float, seed: int) -> nn.Linear:
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(k, k, generator=gen, dtype=DTYPE))
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=DTYPE))
    m = min(d, k)
    sv = torch.rand(m, generator=gen, dtype=DTYPE) * lipschitz
    sv[0] = lipschitz
    a = u[:, :m] @ torch.diag(sv) @ v[:, :m].T
    layer = nn.Linear(d, k, dtype=DTYPE)
    with torch.no_grad():
        layer.weight.copy_(a)
        layer.bias.copy_(torch.randn(k, generator=gen, dtype=DTYPE))
    return layer


@pytest.mark.parametrize("lipschitz", [0.5, 1.0, 3.0])
def test_lipschitz_margin_formula_and_soundness(lipschitz):
    model = linear_with_spectral_norm(6, 4, lipschitz, seed=int(lipschitz * 10))
    assert float(torch.linalg.matrix_norm(model.weight.detach(), ord=2)) == pytest.approx(lipschitz, rel=1e-12)
    torch.manual_seed(1)
    x = torch.randn(64, 6, dtype=DTYPE)
    cert = LipschitzMargin(model, lipschitz=lipschitz, check_range=False).certify(x)
    s = scores(model, x)
    top2 = s.topk(2, dim=1)
    assert torch.equal(cert.prediction, top2.indices[:, 0])
    torch.testing.assert_close(cert.radius, (top2.values[:, 0] - top2.values[:, 1]) / (math.sqrt(2) * lipschitz),
                               rtol=1e-12, atol=1e-12)
    assert bool((cert.samples == 0).all())
    # Never larger than the exact distance (the closed form on the same linear map).
    exact = FaRSClosedForm(nn.Identity(), model, check_range=False).certify(x)
    assert bool((cert.radius <= exact.radius * (1 + 1e-12)).all())
    # Attacks at 0.999 r: each rival's gradient direction (the worst case for a linear map), random, PGD.
    c, r = cert.prediction, cert.radius
    w = model.weight.detach()
    for j in range(w.shape[0]):
        rows = c != j
        u = w[j] - w[c[rows]]
        u = u / u.norm(dim=1, keepdim=True)
        assert bool((scores(model, x[rows] + (0.999 * r[rows])[:, None] * u).argmax(1) == c[rows]).all())
    gen = torch.Generator().manual_seed(2)
    u = torch.randn(x.shape[0], 300, 6, generator=gen, dtype=DTYPE)
    u = u / u.norm(dim=2, keepdim=True)
    pts = (x[:, None] + 0.999 * r[:, None, None] * u).reshape(-1, 6)
    assert bool((scores(model, pts).argmax(1).reshape(x.shape[0], -1) == c[:, None]).all())
    assert bool((pgd_on_sphere(model, x, c, 0.999 * r) < 0).all())


def test_lipschitz_margin_is_tight_for_scaled_identity():
    """For s = L x (rows L e_i, ||e_c - e_j|| L = sqrt(2) L) the margin bound is the exact distance:
    a step of r (1 + 1e-6) along e_j - e_c flips the prediction."""
    lipschitz, d = 2.5, 5
    model = nn.Linear(d, d, bias=False, dtype=DTYPE)
    with torch.no_grad():
        model.weight.copy_(lipschitz * torch.eye(d, dtype=DTYPE))
    torch.manual_seed(4)
    x = torch.randn(50, d, dtype=DTYPE)
    cert = LipschitzMargin(model, lipschitz=lipschitz, check_range=False).certify(x)
    exact = FaRSClosedForm(nn.Identity(), model, check_range=False).certify(x)
    torch.testing.assert_close(cert.radius, exact.radius, rtol=1e-12, atol=1e-12)
    c = cert.prediction
    j = x.topk(2, dim=1).indices[:, 1]
    u = (torch.nn.functional.one_hot(j, d) - torch.nn.functional.one_hot(c, d)).to(DTYPE) / math.sqrt(2)
    s = scores(model, x + (cert.radius * (1 + 1e-6) + 1e-12)[:, None] * u)
    assert bool((s.gather(1, j[:, None]) >= s.gather(1, c[:, None])).all())


def test_lipschitz_margin_halves_with_double_constant():
    model = linear_with_spectral_norm(4, 3, 1.0, seed=0)
    x = torch.randn(10, 4, dtype=DTYPE)
    a = LipschitzMargin(model, lipschitz=1.0, check_range=False).certify(x)
    b = LipschitzMargin(model, lipschitz=2.0, check_range=False).certify(x)
    assert torch.equal(a.prediction, b.prediction)
    torch.testing.assert_close(b.radius, a.radius / 2, rtol=1e-15, atol=0)


def test_memoised_head_geometry_follows_weight_updates():
    """The head's float64 weights and pairwise gaps are memoised; an in-place update, a write through
    .data and a loaded state dict must each give the certificate of the new head."""
    torch.manual_seed(0)
    head = nn.Linear(6, 4)
    certifier = FaRSClosedForm(nn.Identity(), head, check_range=False)
    x = torch.randn(16, 6)
    before = certifier.certify(x)
    updates = [lambda: head.weight.mul_(1.5), lambda: head.bias.data.add_(0.3),
               lambda: head.load_state_dict({"weight": torch.randn(4, 6), "bias": torch.randn(4)})]
    for update in updates:
        with torch.no_grad():
            update()
        fresh = FaRSClosedForm(nn.Identity(), nn.Linear(6, 4), check_range=False)
        fresh.head.load_state_dict(head.state_dict())
        got, want = certifier.certify(x), fresh.certify(x)
        assert torch.equal(got.prediction, want.prediction) and torch.equal(got.radius, want.radius)
        assert not torch.equal(got.radius, before.radius)
        before = got


@settings(max_examples=400, deadline=None)
@given(data=st.data(), rows=st.integers(1, 6), k=st.integers(1, 5))
def test_scalar_and_tensor_bookkeeping_agree_bit_for_bit(data, rows, k):
    """Single images take the Python-float path, large batches the tensor path: same float64 operations,
    so identical predictions and radii, also with ties, identical head rows (gap 0), NaN and inf logits."""
    values = st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0, 1e-300, 1e-310, 5e-324, float("nan"), float("inf"),
                              float("-inf")])
    s = torch.tensor(data.draw(st.lists(values, min_size=rows * k, max_size=rows * k)), dtype=torch.float64)
    gaps = torch.tensor(data.draw(st.lists(st.sampled_from([0.0, 1.0, 0.3, 2.5, 1e-300, 1e300]), min_size=k * k,
                                           max_size=k * k)),
                        dtype=torch.float64).view(k, k)
    gaps = torch.maximum(gaps, gaps.T).fill_diagonal_(0.0)     # symmetric, zero diagonal, like ||w_c - w_j||
    sizes = st.sampled_from([0.0, 1.0, 3.0, 1e300, float("inf"), float("nan")])
    z_norm = torch.tensor(data.draw(st.lists(sizes, min_size=rows, max_size=rows)), dtype=torch.float64)
    row_norms = torch.tensor(data.draw(st.lists(sizes, min_size=k, max_size=k)), dtype=torch.float64)
    abs_bias = torch.tensor(data.draw(st.lists(sizes, min_size=k, max_size=k)), dtype=torch.float64)
    g = HeadGeometry(torch.zeros(k, 1), None, row_norms, abs_bias, gaps)
    gamma = data.draw(st.sampled_from([0.0, rounding_factor(5), 0.25]))
    absolute = data.draw(st.sampled_from([0.0, 3 * 2.0 ** -1074, 0.25]))
    scalar = _radius_scalar(s.view(rows, k).tolist(), z_norm.tolist(), g, gamma, absolute)
    tensor = _radius_tensor(s.view(rows, k), z_norm, g, gamma, absolute)
    assert torch.equal(scalar[0], tensor[0]), (s, gaps)
    assert torch.equal(scalar[1], tensor[1]), (s, gaps)
    argmax = s.view(rows, k).argmax(dim=1)
    assert ((scalar[0] == argmax) | (scalar[0] == ABSTAIN)).all()


@settings(max_examples=400, deadline=None)
@given(row=st.lists(st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 1e-310, 1e308, -1e308, float("nan"),
                                     float("inf"), float("-inf")]), min_size=1, max_size=7))
def test_scalar_argmax_and_abs_max_follow_torch(row):
    """The single-image path picks the class and the embedding's size bound with Python floats: the same
    class as torch's argmax (first maximum, NaN counts as maximal) and the same bound bit for bit (amax
    propagates NaN; Python's max alone would skip it)."""
    t = torch.tensor([row], dtype=torch.float64)
    assert _argmax_scalar(row) == int(t.argmax(dim=1))
    scale = norm_scale(len(row))
    want = float(t.abs().amax(dim=1) * scale)
    got = _abs_max_scalar(row) * scale
    assert got == want or (math.isnan(got) and math.isnan(want))


def test_norm_scale_bounds_the_euclidean_norm():
    """Z = max |z_i| norm_scale(d) >= ||z||_2, also at the worst case z = (1, ..., 1), checked exactly."""
    from fractions import Fraction

    for d in (1, 2, 3, 10, 64, 512, 2048, 10**6):
        scale = Fraction(norm_scale(d))
        assert scale * scale >= d
        for m in (1.0, 0.1, 3.7e-200, 1.3e200):
            bound = Fraction(m * norm_scale(d))                    # the product, rounded as computed
            assert bound * bound >= d * Fraction(m) ** 2


def test_tensor_path_radius_is_a_lower_bound_in_exact_arithmetic():
    """Batches beyond SCALAR_ROWS take the tensor path: every row is checked against exact Fractions too."""
    gen = torch.Generator().manual_seed(3)
    for scale_w, scale_b in ((1.0, 1.0), (1e-170, 0.0), (1e30, 1e17), (1.0, 1e300)):
        weight = torch.randn(4, 3, generator=gen, dtype=torch.float64) * scale_w
        weight[1] = weight[0]
        bias = torch.randn(4, generator=gen, dtype=torch.float64) * scale_b
        z = torch.randn(SCALAR_ROWS + 5, 3, generator=gen, dtype=torch.float64)
        prediction, radius = linear_head_radius(z, weight, bias)
        for i in range(len(z)):
            if int(prediction[i]) == ABSTAIN:
                assert float(radius[i]) == 0.0
            else:
                _exact_check(z[i], weight, bias, int(prediction[i]), float(radius[i]))


def test_batch_sizes_take_both_paths_and_agree():
    """A batch larger than SCALAR_ROWS gives the certificates of its images certified one by one (the float64
    matmul of the logits may round differently for different batch sizes: radii agree to round-off)."""
    torch.manual_seed(0)
    certifier = FaRSClosedForm(nn.Identity(), nn.Linear(6, 4), check_range=False)
    x = torch.randn(SCALAR_ROWS * 3, 6)
    batch = certifier.certify(x)
    single = [certifier.certify(x[i:i + 1]) for i in range(len(x))]
    assert torch.equal(batch.prediction, torch.cat([c.prediction for c in single]))
    torch.testing.assert_close(batch.radius, torch.cat([c.radius for c in single]), rtol=1e-12, atol=0)


def _exact_check(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, prediction: int, radius: float) -> None:
    """In exact rational arithmetic on the stored values: the prediction is the argmax, and the radius is
    at most every margin over its gap (compared as squares, so no square root is needed)."""
    from fractions import Fraction

    zf = [Fraction(v) for v in z.double().tolist()]
    w = [[Fraction(v) for v in row] for row in weight.double().tolist()]
    b = [Fraction(v) for v in bias.double().tolist()]
    logits = [sum(wi * zi for wi, zi in zip(row, zf, strict=True)) + bk for row, bk in zip(w, b, strict=True)]
    c = prediction
    r = None if math.isinf(radius) else Fraction(radius)   # infinite: no rival may have a finite distance
    for j in range(len(w)):
        if j == c:
            continue
        margin = logits[c] - logits[j]
        assert margin > 0, "the certified class is the exact argmax"
        gap2 = sum((a - bb) ** 2 for a, bb in zip(w[c], w[j], strict=True))
        if gap2 == 0:
            continue                                   # identical rows: j can never overtake c
        assert r is not None and r * r * gap2 <= margin * margin, f"radius {radius} exceeds the distance to {j}"


@settings(max_examples=300, deadline=None)
@given(data=st.data(), k=st.integers(2, 5), d=st.integers(1, 6))
def test_radius_is_a_lower_bound_in_exact_arithmetic(data, k, d):
    """Huge biases (whose logits lose the w.z part to rounding), tiny or huge weights (whose gaps under- or
    overflow naively), near ties: the radius never exceeds the exact distance, checked with Fractions."""
    scale_w = data.draw(st.sampled_from([1e-170, 1e-30, 2.0 ** -600, 1.0, 1e30]))
    scale_z = data.draw(st.sampled_from([1.0, 2.0 ** -474, 2.0 ** -1000, 2.0 ** -1070]))
    scale_b = data.draw(st.sampled_from([0.0, 1.0, 1e17, 1e300]))
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 10_000)))
    weight = torch.randn(k, d, generator=gen, dtype=torch.float64) * scale_w
    if data.draw(st.booleans()):
        weight[1] = weight[0]                          # identical rows
    bias = torch.randn(k, generator=gen, dtype=torch.float64) * scale_b
    if data.draw(st.booleans()):
        bias[:] = bias[0]                              # equal biases: the w.z part decides
    z = torch.randn(1, d, generator=gen, dtype=torch.float64) * scale_z
    prediction, radius = linear_head_radius(z, weight, bias)
    if int(prediction) == ABSTAIN:
        assert float(radius) == 0.0
        return
    _exact_check(z[0], weight, bias, int(prediction), float(radius))


def test_huge_equal_biases_and_tiny_rows_are_handled():
    """The two cases a review found against the plain float64 formula: equal biases of 1e17 (the logits
    round away w.z; the plain formula gave 8x the true radius) and rows of 1e-170 (the gap underflowed
    to 0 and the radius became infinite)."""
    w = torch.tensor([[9.0], [7.0]], dtype=torch.float64)
    b = torch.tensor([1e17, 1e17], dtype=torch.float64)
    prediction, radius = linear_head_radius(torch.tensor([[1.0]], dtype=torch.float64), w, b)
    assert int(prediction) == ABSTAIN or float(radius) <= 1.0
    w = torch.tensor([[1e-170, 0.0], [0.0, 0.0]], dtype=torch.float64)
    prediction, radius = linear_head_radius(torch.tensor([[1.0, 0.0]], dtype=torch.float64), w,
                                            torch.zeros(2, dtype=torch.float64))
    assert int(prediction) == 0 and 0.999 < float(radius) <= 1.0


@pytest.mark.parametrize("rows", [1, SCALAR_ROWS + 1])
def test_underflowing_products_do_not_break_the_bound(rows):
    """Two cases a review found: products that underflow to -0 (the computed logits said class 0 while class 1
    wins exactly, and the relative error bound underflowed to 0 too), and a subnormal quotient that rounded up
    to more than the exact distance. Checked against exact Fractions on both paths."""
    a = 2.0 ** -600
    weight = torch.tensor([[a] * 4, [0.0] * 4], dtype=torch.float64)
    bias = torch.zeros(2, dtype=torch.float64)
    z = torch.tensor([[-2.0 ** -475] * 3 + [2.0 ** -474]], dtype=torch.float64).repeat(rows, 1)
    prediction, radius = linear_head_radius(z, weight, bias)
    for i in range(rows):
        if int(prediction[i]) != ABSTAIN:
            _exact_check(z[i], weight, bias, int(prediction[i]), float(radius[i]))
    weight = torch.tensor([[1.5, 1.5], [0.0, 0.0]], dtype=torch.float64)
    z = torch.full((rows, 2), 2.0 ** -1074, dtype=torch.float64)
    prediction, radius = linear_head_radius(z, weight, bias)
    for i in range(rows):
        if int(prediction[i]) != ABSTAIN:
            _exact_check(z[i], weight, bias, int(prediction[i]), float(radius[i]))


def test_rounding_margin_is_negligible_at_realistic_scales():
    """The proven bound costs ~1e-12 of radius (embedding units) on a head with logits of order 1-10
    (``rounding_factor(d + 4)`` = 4 (d + 4) u of the logits' size)."""
    torch.manual_seed(0)
    head = nn.Linear(64, 10)
    z = torch.randn(256, 64)
    prediction, radius = linear_head_radius(z, head.weight, head.bias)
    s = (z.double() @ head.weight.double().T + head.bias.double())
    top = s.argmax(dim=1)
    w = head.weight.double()
    plain = ((s.gather(1, top[:, None]) - s) / (w[top][:, None, :] - w[None]).norm(dim=2)).masked_fill(
        torch.nn.functional.one_hot(top, 10).bool(), float("inf")).amin(dim=1)
    assert torch.equal(prediction, top)
    assert (radius <= plain).all() and (plain - radius).max() < 2e-12


def test_head_geometry_in_chunks_equals_all_at_once(monkeypatch):
    """Large heads form their pairwise differences a few rows at a time; the gaps must not change."""
    import fars.closed_form as cf

    torch.manual_seed(0)
    head = nn.Linear(7, 13)
    whole = cf.head_geometry(head.weight, head.bias)
    monkeypatch.setattr(cf, "GEOMETRY_CHUNK_ELEMENTS", 3 * 13 * 7)   # 3 rows per chunk, a short last chunk
    chunked = cf.head_geometry(head.weight, head.bias)
    assert torch.equal(whole.gaps, chunked.gaps) and whole.rivals == chunked.rivals
    assert (chunked.gaps.diagonal() == 0).all() and torch.equal(chunked.gaps, chunked.gaps.T)


# --- inputs: dtypes, devices, range ------------------------------------------------------------------------------


def _float32_pair(seed: int = 0) -> tuple[nn.Module, nn.Linear]:
    """A float32 backbone (1-Lipschitz: a linear map of spectral norm 1) and a float32 linear head."""
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 6, bias=False))
    with torch.no_grad():
        backbone[1].weight /= torch.linalg.matrix_norm(backbone[1].weight, ord=2)
    return backbone, nn.Linear(6, 4)


def test_float64_inputs_to_a_float32_model_are_certified_around_the_given_inputs():
    """float64 inputs are rounded to the model's float32 for the forward pass; the radius is lowered by the
    distance between the inputs and their rounded copy, so that it holds around the inputs as given."""
    backbone, head = _float32_pair()
    x64 = torch.rand(40, 1, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    offset = (x64 - x64.float().double()).flatten(1).norm(dim=1)
    assert bool((offset > 0).all())
    for make in (lambda: FaRSClosedForm(backbone, head), lambda: LipschitzMargin(nn.Sequential(backbone, head))):
        certifier = make()
        wide, rounded = certifier.certify(x64), certifier.certify(x64.float())
        kept = wide.prediction != ABSTAIN
        assert bool(kept.any())
        assert torch.equal(wide.prediction[kept], rounded.prediction[kept])
        assert bool((wide.radius <= rounded.radius - offset * (1 - 1e-9)).all())
        assert torch.allclose(wide.radius[kept], rounded.radius[kept] - offset[kept], rtol=1e-12, atol=1e-12)


def test_float32_inputs_to_a_float64_model_are_converted_exactly():
    head = make_head(6, 4, seed=3)
    z = torch.rand(8, 6)
    for certifier in (FaRSClosedForm(nn.Identity(), head), LipschitzMargin(head)):
        a, b = certifier.certify(z), certifier.certify(z.double())
        assert torch.equal(a.prediction, b.prediction) and torch.equal(a.radius, b.radius)


def test_inputs_or_models_on_the_meta_device_are_refused_clearly():
    backbone, head = _float32_pair()
    x = torch.rand(2, 1, 3, 4)
    for certifier in (FaRSClosedForm(backbone, head), LipschitzMargin(nn.Sequential(backbone, head))):
        with pytest.raises(ValueError, match="inputs are on the 'meta' device"):
            certifier.certify(x.to("meta"))
    meta_backbone, meta_head = _float32_pair()
    meta_backbone.to("meta")
    meta_head.to("meta")
    meta_network = nn.Sequential(meta_backbone, meta_head)
    for certifier in (FaRSClosedForm(meta_backbone, meta_head), LipschitzMargin(meta_network)):
        with pytest.raises(ValueError, match="parameters are on the 'meta' device"):
            certifier.certify(x)


def test_inputs_outside_the_unit_range_need_the_explicit_opt_out():
    backbone, head = _float32_pair()
    x = torch.rand(3, 1, 3, 4) * 2 - 0.5
    for make in (lambda **k: FaRSClosedForm(backbone, head, **k),
                 lambda **k: LipschitzMargin(nn.Sequential(backbone, head), **k)):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            make().certify(x)
        cert = make(check_range=False).certify(x)
        assert cert.radius.shape == (3,)


_THREADS_SCRIPT = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from bench.data import load_embedded
from bench.common.env import EMBEDDED_MODELS
from bench.models import load_zoo
from fars import FaRSClosedForm
zoo = load_zoo(EMBEDDED_MODELS)
x, _, _ = load_embedded(limit=20)
cert = FaRSClosedForm(zoo.backbone, zoo.heads["ce"][0], lipschitz=zoo.lipschitz).certify(x)
print(json.dumps({"threads": torch.get_num_threads(), "prediction": cert.prediction.tolist(),
                  "radius": [r.hex() for r in cert.radius.tolist()]}))
"""


def test_thread_count_changes_closed_form_radii_by_at_most_the_stated_tolerance():
    """The backbone's float32 reductions are ordered by the thread count: predictions agree and radii agree
    to 1e-5 absolute (the tolerance FaRSClosedForm's docstring states), in one process per thread count."""
    import json
    import os
    import subprocess
    import sys

    from bench.common.env import REPO_ROOT

    results = []
    for threads in (1, 2):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        done = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT, str(threads)], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=300, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    one, two = results
    assert (one["threads"], two["threads"]) == (1, 2)
    assert one["prediction"] == two["prediction"]
    radii = [[float.fromhex(r) for r in result["radius"]] for result in results]
    assert max(abs(a - b) for a, b in zip(*radii, strict=True)) <= 1e-5
