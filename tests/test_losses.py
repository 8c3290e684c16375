"""Training losses: sparsemax is a correct Euclidean projection, margin offsets match the certificate."""

import math

import torch
import torch.nn.functional as F

from fars import linear_head_radius
from fars.losses import SLL_OFFSET, SLL_TEMPERATURE, certified_margin_loss, head_sparsemax_loss, sll_loss, sparsemax


def test_sparsemax_is_the_projection_onto_the_simplex():
    torch.manual_seed(0)
    z = torch.randn(200, 10, dtype=torch.float64) * 3
    p = sparsemax(z, dim=-1)
    assert torch.allclose(p.sum(1), torch.ones(200, dtype=torch.float64))
    assert bool((p >= 0).all())
    # KKT conditions of min ||p - z||^2 on the simplex: p = max(z - tau, 0) with one tau per row
    support = p > 0
    tau = ((z - p) * support).sum(1) / support.sum(1)
    assert torch.allclose(p, torch.clamp(z - tau[:, None], min=0), atol=1e-10)
    # no other point of the simplex is closer to z (random feasible competitors)
    q = torch.distributions.Dirichlet(torch.ones(10, dtype=torch.float64)).sample((200,))
    assert bool(((p - z).norm(dim=1) <= (q - z).norm(dim=1) + 1e-12).all())
    # the threshold uses the full top-k sum (the public FaRS code used k-1 and did not sum to one)
    zs, _ = z.sort(dim=1, descending=True)
    k = support.sum(1)
    top_k_sum = torch.stack([zs[i, : k[i]].sum() for i in range(200)])
    assert torch.allclose(tau, (top_k_sum - 1) / k)


def test_sparsemax_keeps_the_argmax_and_its_loss_gradient():
    torch.manual_seed(1)
    z = torch.randn(50, 7, requires_grad=True)
    y = torch.randint(0, 7, (50,))
    assert torch.equal(sparsemax(z.detach(), dim=-1).argmax(1), z.detach().argmax(1))
    head_sparsemax_loss(z, y).backward()
    expected = (sparsemax(z.detach(), dim=-1) - F.one_hot(y, 7)) / 50
    assert torch.allclose(z.grad, expected, atol=1e-6)


def test_sll_loss_is_scaled_cross_entropy_with_offset():
    logits = torch.tensor([[2.0, 1.0, -1.0]])
    y = torch.tensor([0])
    manual = F.cross_entropy((logits - torch.tensor([[SLL_OFFSET, 0, 0]])) / SLL_TEMPERATURE, y) * SLL_TEMPERATURE
    assert torch.isclose(sll_loss(logits, y), manual)
    assert math.isclose(SLL_OFFSET, 1.5 * math.sqrt(2))


def test_certified_margin_loss_offsets_equal_the_closed_form_condition():
    """Zero-offset logits win exactly when the closed-form certificate holds at epsilon."""
    torch.manual_seed(2)
    head = torch.nn.Linear(5, 4)
    z = torch.randn(300, 5)
    eps = 0.1
    s = head(z)
    y = s.argmax(1)
    gaps = torch.linalg.vector_norm(head.weight[y][:, None] - head.weight[None], dim=2)
    shifted = s + eps * gaps
    shifted_wins = (shifted.gather(1, y[:, None]) >= shifted).all(1)
    _, radius = linear_head_radius(z, head.weight, head.bias)
    assert torch.equal(shifted_wins, radius >= eps)
    loss = certified_margin_loss(s, y, head.weight, eps)
    assert torch.isclose(loss, F.cross_entropy(shifted, y))
