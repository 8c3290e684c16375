"""FaRS with bound propagation: deterministic certificates for multi-layer ReLU heads (``fars-crown``).

A head made of ``nn.Linear`` and ``nn.ReLU`` layers is a small piecewise-linear network on the
embedding z = backbone(x). For an l2 ball of radius r around z, CROWN (Zhang et al., "Efficient Neural
Network Robustness Certification with General Activation Functions", NeurIPS 2018) bounds each margin
s_c - s_j from below by a linear function A_j z' + B_j valid on the ball, whose minimum over the ball is
A_j z + B_j - r ||A_j||_2 (Cauchy-Schwarz, the dual norm of l2 being l2). The certified radius in
embedding space is the largest r (found by bisection) at which every such bound is positive; FaRS
Proposition 1 divides it by the backbone's Lipschitz constant L.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from smoothing.certificate import ABSTAIN, Certificate, divide_radius, flush_subnormal
from smoothing.checks import check_lipschitz, check_positive, evaluating, timed, validate_classifier
from smoothing.rounding import TINY, norm_upper_bound, rounding_factor

from .closed_form import checked_embeddings, linear_head_radius, lower_by_offset
from .memo import WeightDerived

#: the layers a head may be built from, besides nn.Sequential (exact types: a subclass may compute something else)
LAYERS = (nn.Linear, nn.ReLU, nn.Identity)
#: the search for the radius stops once the bracket [certified, not certified] is within this fraction
RTOL = 1e-6
#: at most this many bound evaluations after the radius is bracketed
MAX_SEARCH_STEPS = 60
#: radii checked per input in one bound pass of the search
RADII_PER_PASS = 8
#: doublings of the first guess tried before the search gives up growing the radius
MAX_DOUBLINGS = 64


class UnsupportedHeadError(TypeError):
    """A head with a layer that bound propagation does not handle (anything but Linear, ReLU, Identity, Sequential)."""


@dataclass(frozen=True)
class ReluNetwork:
    """A head as affine layers h_i = W_i a_{i-1} + b_i (a_{-1} = z), a_i = relu(h_i) where ``relu[i]``, else h_i.

    ``weights[i]`` float64 [n_i, n_{i-1}], ``biases[i]`` float64 [n_i] (zeros without a bias), ``relu``
    one flag per layer but the last (the logits are h_{m-1}). A ReLU in front of the first layer or
    after the last one is expressed by an identity layer (exact).
    """

    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor, ...]
    relu: tuple[bool, ...]

    @cached_property
    def abs_weights(self) -> tuple[torch.Tensor, ...]:
        return tuple(w.abs() for w in self.weights)

    @cached_property
    def abs_biases(self) -> tuple[torch.Tensor, ...]:
        return tuple(b.abs() for b in self.biases)

    @cached_property
    def first_norms(self) -> torch.Tensor:
        """||row||_2 of the first layer's weight, rounded up, [n_0]."""
        return norm_upper_bound(self.weights[0])

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def linear(self) -> bool:
        """No ReLU at all: one affine layer."""
        return self.depth == 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The logits [B, K] in float64 at embeddings z [B, d] (float64)."""
        a = z
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            a = torch.addmm(b, a, w.T)
            if i < self.depth - 1 and self.relu[i]:
                a = a.clamp_min(0.0)
        return a


def _flatten(module: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
    kind = type(module)
    if kind is nn.Sequential:
        return [item for name, child in module.named_children()
                for item in _flatten(child, f"{path}.{name}" if path else name)]
    if kind in LAYERS:
        return [(path or kind.__name__, module)]
    raise UnsupportedHeadError(
        f"fars-crown certifies heads built from nn.Linear and nn.ReLU layers (in nn.Sequential); the head's layer "
        f"{path or '(the head itself)'!r} is {kind.__name__}; use fars-mc for other heads")


def head_layers(head: nn.Module) -> list[nn.Module]:
    """The head's ``nn.Linear`` and ``nn.ReLU`` layers in order (nested Sequentials flattened, Identity dropped).

    Raises:
        UnsupportedHeadError: a layer of another type (the message names it), or no ``nn.Linear`` at all.
        ValueError: consecutive Linear layers whose sizes do not chain.
    """
    layers = [m for _, m in _flatten(head, "") if type(m) is not nn.Identity]
    linears = [m for m in layers if type(m) is nn.Linear]
    if not linears:
        raise UnsupportedHeadError("fars-crown needs a head with at least one nn.Linear layer")
    for before, after in zip(linears, linears[1:], strict=False):
        if before.out_features != after.in_features:
            raise ValueError(f"the head's layers do not chain: {before} is followed by {after}")
    return layers


def is_relu_head(head: nn.Module) -> bool:
    """Whether ``head`` is a network fars-crown certifies that is not one ``nn.Linear`` (which fars-closed
    certifies exactly): an ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU`` layers."""
    if type(head) is nn.Linear:
        return False
    try:
        head_layers(head)
    except (TypeError, ValueError):
        return False
    return True


def relu_network(head: nn.Module) -> ReluNetwork:
    """The :class:`ReluNetwork` of ``head`` (weights converted to float64, which is exact).

    Raises:
        UnsupportedHeadError, ValueError: as :func:`head_layers`.
    """
    layers = head_layers(head)
    ops: list[nn.Module] = []
    for layer in layers:                          # relu(relu(x)) = relu(x)
        if not (type(layer) is nn.ReLU and ops and type(ops[-1]) is nn.ReLU):
            ops.append(layer)
    weights: list[torch.Tensor] = []
    biases: list[torch.Tensor] = []
    relu: list[bool] = []                          # relu[i]: a ReLU follows layer i
    device = next(m for m in ops if type(m) is nn.Linear).weight.device

    def add(w: torch.Tensor, b: torch.Tensor | None) -> None:
        weights.append(w.detach().double())
        biases.append(torch.zeros(w.shape[0], dtype=torch.float64, device=device) if b is None
                      else b.detach().double())
        relu.append(False)

    if type(ops[0]) is nn.ReLU:                    # relu(z): an identity layer in front (exact)
        add(torch.eye(next(m for m in ops if type(m) is nn.Linear).in_features, device=device), None)
    for op in ops:
        if type(op) is nn.ReLU:
            relu[-1] = True
        else:
            assert isinstance(op, nn.Linear)
            add(op.weight, op.bias)
    if relu[-1]:                                   # relu on the logits: an identity layer after it (exact)
        add(torch.eye(weights[-1].shape[0], device=device), None)
    return ReluNetwork(tuple(weights), tuple(biases), tuple(relu[:-1]))


# --- sound bound propagation ----------------------------------------------------------------------------

@dataclass
class _Sum:
    """A lower bound built as (sum of ``pieces``) - (sum of ``slacks``), every tensor of shape [B, S].

    Pieces are float values whose exact sum, minus the exact sum of the slacks, is a proven lower bound;
    :meth:`result` adds the rounding of both sums themselves."""

    pieces: list[torch.Tensor]
    slacks: list[torch.Tensor]

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(value, slack) [B, S]: the bound is >= value - slack in exact arithmetic (both floats)."""
        pieces = torch.stack(torch.broadcast_tensors(*self.pieces), dim=-1)
        value = pieces.sum(dim=-1)
        size = pieces.abs().sum(dim=-1)
        slack = torch.stack(torch.broadcast_tensors(*self.slacks), dim=-1).sum(dim=-1)
        terms = len(self.pieces) + len(self.slacks) + 2
        return value, (slack + rounding_factor(len(self.pieces)) * size) * (1 + rounding_factor(terms)) + TINY


def _abs_bound(lam_abs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """|lam| @ v for |lam| [B, S, n] and v [B, n] >= 0, as computed (the caller's rounding factor covers its
    relative error), plus the absolute error of products that underflow."""
    n = v.shape[-1]
    return torch.bmm(lam_abs, v[:, :, None])[:, :, 0] + 2 * n * TINY


def _relax(lam: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, acc: _Sum) -> torch.Tensor:
    """Coefficients on h from coefficients ``lam`` [B, S, n] on relu(h), with l <= h <= u ([B, n]).

    Per unit and row, CROWN's slope: the lower line alpha h (alpha = 1 if u >= -l else 0, Zhang et al.
    2018, the adaptive choice) where the coefficient M is >= 0, the upper line u / (u - l) (h - l) where
    M < 0; active and dead units pass h or nothing. Whatever float slope lam' comes out, the offset
    tau = min over h in [l, u] of (M relu(h) - lam' h), a piecewise linear function whose minimum lies at l,
    u or 0, makes M relu(h) >= lam' h + tau hold on [l, u] exactly; tau is computed with a bound on its
    rounding (three rounded operations per candidate) and added to ``acc``.
    """
    low, up = lower[:, None, :], upper[:, None, :]
    active, dead = low >= 0, up <= 0
    unstable = ~(active | dead)
    ones = torch.ones_like(low)
    slope = torch.where(unstable, up / torch.where(unstable, up - low, ones), active.to(low.dtype))
    alpha = torch.where(unstable, (up >= -low).to(low.dtype), active.to(low.dtype))
    new = torch.where(lam >= 0, lam * alpha, lam * slope)
    zero = torch.maximum(low, up.clamp(max=0.0))           # 0 clipped into [l, u]
    tau = torch.minimum(torch.minimum(lam * low.clamp_min(0.0) - new * low, lam * up.clamp_min(0.0) - new * up),
                        lam * zero.clamp_min(0.0) - new * zero)
    n = lam.shape[-1]
    reach = torch.maximum(low.abs(), up.abs())
    acc.pieces.append(tau.sum(dim=-1))
    acc.slacks.append(rounding_factor(n) * tau.abs().sum(dim=-1))
    acc.slacks.append(rounding_factor(3) * ((lam.abs() + new.abs()) * reach).sum(dim=-1) + 4 * n * TINY)
    return new


@dataclass
class _Point:
    """What every bound around z [B, d] (float64) shares, whatever the radius: |z|, and the first layer's
    pre-activations W_0 z + b_0 ([B, n_0], as computed) with a bound on their rounding error."""

    z: torch.Tensor
    z_abs: torch.Tensor
    first: torch.Tensor
    first_error: torch.Tensor

    @classmethod
    def at(cls, net: ReluNetwork, z: torch.Tensor) -> _Point:
        z_abs = z.abs()
        d = z.shape[1]
        first = z @ net.weights[0].T                                   # the bias stays a separate (exact) piece
        error = rounding_factor(d) * (z_abs @ net.abs_weights[0].T + 2 * d * TINY) + 2 * d * TINY
        return cls(z, z_abs, first, error)


@dataclass
class _Ball:
    """The l2 ball of radius r [B] around a :class:`_Point`; ``reach`` >= |z'_i| on it ((|z_i| + r) rounded up)."""

    point: _Point
    r: torch.Tensor
    reach: torch.Tensor

    @classmethod
    def around(cls, point: _Point, r: torch.Tensor) -> _Ball:
        return cls(point, r, (point.z_abs + r[:, None]) * (1 + rounding_factor(1)) + TINY)


Bounds = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _propagate(net: ReluNetwork, i: int, lam: torch.Tensor, acc: _Sum, ball: _Ball, bounds: Bounds) -> None:
    """Add to ``acc`` a lower bound of lam . a_i over the ball (a_{-1} = z'), lam [B, S, n_i] float64.

    ``bounds[k]`` = (l_k, u_k, reach_k) for every k <= i: l_k <= h_k <= u_k and |a_k| <= reach_k on the ball.
    Each product lam W_k is rounded: its error E (|E| <= gamma_n |lam| |W_k|, plus n x 2^-1074 for
    underflow) times a_{k-1} is at least -(|lam| |W_k| + ...) reach_{k-1}, which goes to the slack; at
    the input, lam . z' >= lam . z - r ||lam||_2 on the ball (Cauchy-Schwarz).
    """
    while i >= 0:
        if net.relu[i]:
            lam = _relax(lam, bounds[i][0], bounds[i][1], acc)
        w, b = net.weights[i], net.biases[i]
        n = w.shape[0]
        reach = bounds[i - 1][2] if i > 0 else ball.reach
        acc.pieces.append(lam @ b)
        size = torch.addmm(net.abs_biases[i], reach, net.abs_weights[i].T) + 2 * (w.shape[1] + 1) * TINY
        acc.slacks.append(rounding_factor(n) * _abs_bound(lam.abs(), size)
                          + 2 * n * TINY * (reach.sum(dim=-1, keepdim=True) + 1))
        lam = lam @ w
        i -= 1
    point = ball.point
    d = point.z.shape[1]
    acc.pieces.append(torch.bmm(lam, point.z[:, :, None])[:, :, 0])
    acc.slacks.append(rounding_factor(d) * _abs_bound(lam.abs(), point.z_abs) + 2 * d * TINY)
    acc.slacks.append(ball.r[:, None] * norm_upper_bound(lam) * (1 + rounding_factor(1)) + TINY)


def _lower_end(acc: _Sum) -> torch.Tensor:
    """A float <= the exact lower bound that ``acc`` holds (its value - slack, rounded down)."""
    value, slack = acc.result()
    return torch.nextafter(value - slack, torch.full_like(value, -math.inf))


def _layer_bounds(net: ReluNetwork, ball: _Ball) -> Bounds:
    """(l_i, u_i, reach_i) [B, n_i] for every hidden layer i: l_i <= h_i <= u_i on the ball (rounded outwards),
    reach_i >= |a_i| there. Layer 0 directly: W_0 z + b_0 -/+ r ||w_0k||_2; deeper layers by propagating
    the rows of +-W_i back to the input."""
    bounds: Bounds = []
    point, batch = ball.point, ball.point.z.shape[0]
    for i in range(net.depth - 1):
        w, b = net.weights[i], net.biases[i]
        n = w.shape[0]
        if i == 0:
            spread = ball.r[:, None] * net.first_norms * (1 + rounding_factor(1)) + TINY
            acc = _Sum([torch.cat([b, -b]).expand(batch, 2 * n), torch.cat([point.first, -point.first], dim=1)],
                       [torch.cat([point.first_error, point.first_error], dim=1), spread.repeat(1, 2)])
        else:
            acc = _Sum([torch.cat([b, -b]).expand(batch, 2 * n)], [])
            _propagate(net, i - 1, torch.cat([w, -w]).expand(batch, 2 * n, w.shape[1]), acc, ball, bounds)
        low = _lower_end(acc)
        lower, upper = low[:, :n], -low[:, n:]
        reach = upper.clamp_min(0.0) if net.relu[i] else torch.maximum(lower.abs(), upper.abs())
        bounds.append((lower, upper, reach))
    return bounds


def margin_bounds(net: ReluNetwork, z: torch.Tensor | _Point, c: torch.Tensor,
                  r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(value, slack), float64 [B, K]: for every z' with ||z' - z||_2 <= r and every class j,
    s_c(z') - s_j(z') >= value_j - slack_j in exact arithmetic (s the head's logits in exact arithmetic for
    the stored float64 weights). Row j = c is meaningless. NaN or infinite entries prove nothing.

    Args:
        z: float64 [B, d] embeddings; c: int64 [B] classes; r: float64 [B] radii (>= 0).
    """
    point = z if isinstance(z, _Point) else _Point.at(net, z)
    ball = _Ball.around(point, r)
    bounds = _layer_bounds(net, ball)
    w, b = net.weights[-1], net.biases[-1]
    wc, bc = w[c], b[c]                                                 # [B, n], [B]
    lam = wc[:, None, :] - w[None, :, :]                                # [B, K, n]: w_c - w_j, rounded
    reach = bounds[-1][2] if net.depth > 1 else ball.reach
    # exact margin = (w_c - w_j) a + b_c - b_j; the rounded difference is off by <= u (|w_c| + |w_j|)
    size = (net.abs_weights[-1][c][:, None, :] + net.abs_weights[-1][None]) * rounding_factor(1)
    batch, classes = point.z.shape[0], w.shape[0]
    acc = _Sum([bc[:, None].expand(batch, classes), -b[None, :].expand(batch, classes)], [_abs_bound(size, reach)])
    _propagate(net, net.depth - 2, lam, acc, ball, bounds)
    return acc.result()


def certified_at(net: ReluNetwork, z: torch.Tensor | _Point, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """bool [B]: the bound proves class c[b] the strict winner on the whole ball of radius r[b] around z[b]."""
    return _check(net, z, c, r)[0]


def _check(net: ReluNetwork, z: torch.Tensor | _Point, c: torch.Tensor,
           r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(:func:`certified_at`, min_j (value_j - slack_j) [B] as a guide for the search; NaN counts as -inf)."""
    value, slack = margin_bounds(net, z, c, r)
    proven = value > slack                                              # False on NaN
    proven.scatter_(1, c[:, None], True)
    gap = (value - slack).nan_to_num(nan=-math.inf)
    gap.scatter_(1, c[:, None], math.inf)
    return proven.all(dim=1), gap.amin(dim=1)


def relu_head_radius(net: ReluNetwork, z: torch.Tensor, rtol: float = RTOL) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction int64 [B], radius float64 [B]) in embedding units, on z's device.

    The prediction is the argmax of the float64 logits; where the bound cannot prove it the strict winner
    even at r = 0 (a tie, a margin within round-off, NaN or infinite numbers) it is -1 with radius 0.
    Otherwise the radius is the largest r for which :func:`certified_at` holds among those tried, below the
    smallest one tried that failed. Each pass checks ``RADII_PER_PASS`` radii per input at once (the cost of
    a pass is mostly fixed for small heads): first r = 0 and a geometric grid around a first guess (the
    linearised distance to the nearest boundary), doubled while all of it certifies; then, inside the
    bracket [certified, not certified], points spread evenly across it and points clustered around the
    secant's estimate on the bound's gap (offsets in geometric steps from rtol / 2 of it to the
    bracket's width), until the bracket is within
    ``rtol`` of the radius. Every returned radius has been certified itself, so its soundness does not
    depend on the bound being monotone or continuous in r.
    """
    z = z.double()
    batch = z.shape[0]
    finite = torch.isfinite(z).all(dim=1)
    z = torch.where(finite[:, None], z, torch.zeros_like(z))
    logits = net.forward(z)
    c = logits.argmax(dim=1)
    zero = torch.zeros(batch, dtype=torch.float64, device=z.device)
    width = RADII_PER_PASS
    point, many, c_many = _Point.at(net, z), _Point.at(net, z.repeat_interleave(width, dim=0)), \
        c.repeat_interleave(width)

    def check_many(radii: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(passed, gap) [B, width] for radii [B, width] in one pass."""
        passed, gap = _check(net, many, c_many, radii.reshape(-1))
        return passed.view(batch, width), gap.view(batch, width)

    def bracket(radii: torch.Tensor, valid: torch.Tensor, passed: torch.Tensor, gap: torch.Tensor,
                lo: torch.Tensor, g_lo: torch.Tensor, hi: torch.Tensor, g_hi: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The new bracket from sorted ``radii`` [B, width] in (lo, hi): the first valid one that failed
        becomes hi; the largest valid one below it that passed becomes lo."""
        failed = valid & ~passed
        first_fail = torch.where(failed.any(dim=1), failed.to(torch.int64).argmax(dim=1),
                                 torch.full_like(c, width))
        below = valid & passed & (torch.arange(width, device=z.device)[None, :] < first_fail[:, None])
        last_pass = torch.where(below.any(dim=1), width - 1 - below.flip(1).to(torch.int64).argmax(dim=1),
                                torch.full_like(c, -1))
        took_lo, took_hi = last_pass >= 0, first_fail < width
        at_lo, at_hi = last_pass.clamp_min(0)[:, None], first_fail.clamp_max(width - 1)[:, None]
        lo = torch.where(took_lo, radii.gather(1, at_lo)[:, 0], lo)
        g_lo = torch.where(took_lo, gap.gather(1, at_lo)[:, 0], g_lo)
        hi = torch.where(took_hi, radii.gather(1, at_hi)[:, 0], hi)
        g_hi = torch.where(took_hi, gap.gather(1, at_hi)[:, 0], g_hi)
        return lo, g_lo, hi, g_hi

    guess = _first_guess(net, z, c)
    guess = torch.where(torch.isfinite(guess) & (guess > 0), guess, torch.ones_like(guess))
    # r = 0, then guess x f for f evenly spaced in [0.4, 1] (where the radius lies on the shipped heads)
    grid = torch.cat([zero[:, None], guess[:, None] * torch.linspace(
        0.4, 1.0, width - 1, dtype=torch.float64, device=z.device)[None, :]], dim=1)
    passed, gap = check_many(grid)
    ok = finite & torch.isfinite(logits).all(dim=1) & passed[:, 0]
    valid = torch.ones_like(passed)
    valid[:, 0] = False
    lo, g_lo, hi, g_hi = bracket(grid, valid, passed, gap, zero, gap[:, 0], grid[:, -1] * 2, zero - math.inf)
    growing = ok & passed.all(dim=1)
    for _ in range(MAX_DOUBLINGS):                 # rare: the whole grid certified, grow it
        if not bool(growing.any()):
            break
        passed1, gap1 = _check(net, point, c, hi)
        passed1 &= growing
        lo, g_lo = torch.where(passed1, hi, lo), torch.where(passed1, gap1, g_lo)
        g_hi = torch.where(growing & ~passed1, gap1, g_hi)
        hi = torch.where(passed1, hi * 2, hi)
        growing = passed1 & torch.isfinite(hi * 2)
    spread = width // 4                            # evenly across the bracket; the rest around the secant
    steps = torch.arange(1, spread + 1, dtype=torch.float64, device=z.device) / (spread + 1)
    half = (width - spread) // 2
    powers = torch.arange(half, dtype=torch.float64, device=z.device) / max(half - 1, 1)
    for _ in range(MAX_SEARCH_STEPS):
        live = ok & (hi - lo > rtol * hi)
        if not bool(live.any()):
            break
        falsi = lo + (hi - lo) * (g_lo / (g_lo - g_hi))
        mid = torch.where(torch.isfinite(falsi) & (falsi > lo) & (falsi < hi), falsi, lo + (hi - lo) / 2)
        # offsets from rtol / 2 of mid to the bracket's width, in geometric steps
        least = mid * (rtol / 2)
        scale = least[:, None] * ((hi - lo) / least).clamp_min(1.0)[:, None] ** powers[None, :]
        radii = torch.cat([lo[:, None] + (hi - lo)[:, None] * steps[None, :], mid[:, None] - scale,
                           mid[:, None] + scale], dim=1)
        radii = torch.cat([radii, mid[:, None].expand(batch, width - radii.shape[1])], dim=1).sort(dim=1).values
        valid = live[:, None] & (radii > lo[:, None]) & (radii < hi[:, None]) & torch.isfinite(radii)
        radii = torch.where(valid, radii, lo[:, None])
        passed, gap = check_many(radii)
        lo, g_lo, hi, g_hi = bracket(radii, valid, passed, gap, lo, g_lo, hi, g_hi)
    prediction = torch.where(ok, c, torch.full_like(c, ABSTAIN))
    return prediction, torch.where(ok, lo, zero)


def _first_guess(net: ReluNetwork, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """min_j (s_c - s_j) / ||grad (s_c - s_j)|| at z [B] (the distance to the nearest boundary of the local
    linear piece): where the search starts; nothing is certified by it."""
    a, active = z, []
    for i, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        a = torch.addmm(b, a, w.T)
        if i < net.depth - 1:
            active.append((a > 0).to(a.dtype) if net.relu[i] else torch.ones_like(a))
            a = a * active[-1]
    margins = a.gather(1, c[:, None]) - a                                     # [B, K]
    w = net.weights[-1]
    grad = w[c][:, None, :] - w[None, :, :]                                   # [B, K, n]
    for i in range(net.depth - 2, -1, -1):
        grad = (grad * active[i][:, None, :]) @ net.weights[i]
    distance = margins / grad.norm(dim=2)
    distance.scatter_(1, c[:, None], math.inf)
    return distance.nan_to_num(nan=math.inf).amin(dim=1)


class FaRSCrown:
    """Deterministic FaRS certificate for a ReLU head (``nn.Linear`` / ``nn.ReLU`` layers) on z = backbone(x).

    r_x = r_z / lipschitz, r_z the largest radius (bisection, :func:`relu_head_radius`) at which CROWN's
    linear lower bounds (Zhang et al. 2018, l2 ball by Cauchy-Schwarz) prove every margin s_c - s_j
    positive on the l2 ball around z; sound in pixel space when the backbone is ``lipschitz``-Lipschitz
    in l2 (FaRS Proposition 1). No sampling (``samples`` = 0). A head that is one ``nn.Linear`` (alone or
    in an ``nn.Sequential``, no ReLU) gets the exact closed form (:func:`fars.closed_form.linear_head_radius`,
    the same radius as ``fars-closed``).

    Guarantee and its assumptions. For the embedding z actually computed (in the backbone's dtype; its
    own round-off as documented in :class:`~fars.closed_form.FaRSClosedForm`) and the head's stored
    weights, the head evaluated in exact arithmetic answers c on the whole ball of radius r_z. The bound
    propagation runs in float64; each of its sums and products is covered by a proven bound on its
    rounding error: gamma_n |x|^T |y| for a dot product of n terms (Higham, *Accuracy and Stability of
    Numerical Algorithms*, 2nd ed., section 3.1; :func:`smoothing.rounding.rounding_factor`, which is
    >= 2 gamma_n) plus 2^-1074 per product for underflow, propagated through every layer with bounds on
    the activations; intermediate pre-activation bounds are rounded outwards; every ReLU relaxation's
    offset is the minimum of the exact relaxation gap over [l, u] for the float slope actually used, so no
    slope needs to be exact. A radius is returned only after the bound at that radius was checked.
    Assumes IEEE float64 arithmetic with round-to-nearest (any summation order and fused multiply-adds
    are covered). The linear-head path inherits the closed form's guarantee.

    Inputs: float32 or float64, in [0, 1] unless ``check_range=False`` (then radii are in the inputs'
    units); float64 inputs to a float32 backbone are rounded and the radius lowered by the distance to the
    rounded copy, as in :class:`~fars.closed_form.FaRSClosedForm`. Where the embedding or the logits are
    not finite, or the margin is not provably positive at z, the method abstains (prediction -1, radius 0).

    Raises:
        UnsupportedHeadError (a TypeError): at construction, a head layer other than nn.Linear, nn.ReLU,
            nn.Identity or nn.Sequential (the message names it). ValueError: layers that do not chain.
        ``certify``: TypeError / ValueError as :class:`~fars.closed_form.FaRSClosedForm` (input type,
            rank, range, NaN, meta device, embeddings of the wrong shape).
    """

    name = "fars-crown"

    def __init__(self, backbone: nn.Module, head: nn.Module, lipschitz: float = 1.0, check_range: bool = True,
                 rtol: float = RTOL) -> None:
        self.backbone = validate_classifier(backbone, "backbone")
        self.head = validate_classifier(head, "head")
        layers = head_layers(head)                                     # refuses unsupported heads
        self._first = next(m for m in layers if type(m) is nn.Linear)
        linears = [m for m in layers if type(m) is nn.Linear]
        # one affine layer and no ReLU (nn.Linear, alone or in a Sequential): the exact closed form
        self._linear = linears[0] if len(linears) == 1 and all(type(m) is nn.Linear for m in layers) else None
        self.lipschitz = check_lipschitz(lipschitz)
        self.check_range = bool(check_range)
        self.rtol = check_positive("rtol", rtol)
        self._network = WeightDerived()

    def network(self) -> ReluNetwork:
        """The head as a :class:`ReluNetwork` for its current weights (memoised on their exact values)."""
        params = tuple(p for m in head_layers(self.head) for p in m.parameters())
        return self._network.get(params, lambda: relu_network(self.head))

    def certify(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> Certificate:
        device = self._first.weight.device
        with timed(device) as elapsed, torch.inference_mode(), evaluating(self.backbone, self.head):
            z, offset = checked_embeddings(self.backbone, x, indices, device, self._first.in_features,
                                           self.check_range)
            if self._linear is not None:    # as FaRSClosedForm: its 4 ulps of slack cover the division
                prediction, radius = linear_head_radius(z, self._linear.weight, self._linear.bias)
                radius = radius if self.lipschitz == 1.0 else flush_subnormal(divide_radius(radius, self.lipschitz))
            else:                           # the searched radius has no slack: the quotient is rounded down
                prediction, radius = relu_head_radius(self.network(), z, self.rtol)
                prediction, radius = prediction.cpu(), radius.cpu()
                if self.lipschitz != 1.0:   # an overflow is reported as the largest float, never inf
                    radius = divide_radius(radius, self.lipschitz) * (1 - rounding_factor(1))
                radius = flush_subnormal(radius)
            prediction, radius = lower_by_offset(prediction, radius, offset)
        return Certificate(prediction, radius, samples=0, seconds=elapsed[0])


__all__ = [
    "FaRSCrown",
    "ReluNetwork",
    "UnsupportedHeadError",
    "LAYERS",
    "certified_at",
    "head_layers",
    "is_relu_head",
    "margin_bounds",
    "relu_head_radius",
    "relu_network",
]
