"""FaRS Monte Carlo: randomized smoothing of the head only, with noise in embedding space."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from smoothing.checks import call_model, module_device, validate_classifier
from smoothing.monte_carlo import MonteCarloCertifier

from .memo import WeightDerived

SAMPLERS = ("auto", "direct", "projected")


def gaussian_factor(weight: torch.Tensor) -> torch.Tensor:
    """A matrix F [k, k] with F F^T = W W^T for W [k, d] (Cholesky, or a PSD square root when singular).

    If eps ~ N(0, sigma^2 I_d), then W eps and F u with u ~ N(0, sigma^2 I_k) have the same law
    N(0, sigma^2 W W^T): noise can be drawn in the k-dimensional image of W instead of in R^d.
    """
    gram = weight.detach().double() @ weight.detach().double().T
    factor, info = torch.linalg.cholesky_ex(gram)
    if int(info) != 0:  # rank-deficient: Q diag(sqrt(lambda)) is an exact square root
        eigenvalues, vectors = torch.linalg.eigh(gram)
        factor = vectors * eigenvalues.clamp_min(0).sqrt()
    return factor.to(weight.dtype)


class _Layers:
    """Apply modules in order: the rest of a Sequential head (its own modules, no new container)."""

    def __init__(self, layers: list[nn.Module]) -> None:
        self.layers = layers

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def split_first_linear(head: nn.Module) -> tuple[nn.Linear, Callable[[torch.Tensor], torch.Tensor]] | None:
    """(first layer, rest) when the head is exactly an ``nn.Linear`` or an ``nn.Sequential`` starting with one;
    None otherwise.

    Exact types only: a subclass may compute something else in ``forward`` (a residual, a weight
    normalisation), and the projected sampler is exact only for the plain affine map W z + b.
    """
    if type(head) is nn.Linear:
        return head, nn.Identity()
    if type(head) is nn.Sequential and len(head) > 0 and type(head[0]) is nn.Linear:
        return head[0], _Layers(list(head)[1:])
    return None


class FaRSMonteCarlo(MonteCarloCertifier):
    """CERTIFY (Cohen et al.) applied to ``head`` at z = backbone(x), noise N(0, sigma^2 I) on z.

    Cost per input: one backbone pass and ``n0 + n`` head passes. Guarantee: with probability
    >= 1 - alpha, the smoothed head g(z) is constant on the ball of radius r_z around z; if the
    backbone is ``lipschitz``-Lipschitz in l2, then g(backbone(.)) is constant on the ball of radius
    r_z / lipschitz around x in pixel space (FaRS, Proposition 1). ``sigma`` is in embedding units.
    Any ``nn.Module`` head works (linear or multi-layer).

    ``sampler``: ``direct`` draws d-dimensional noise on z. ``projected`` (for a head starting with
    an ``nn.Linear`` W of k < d outputs) draws k-dimensional noise u and uses W z + b + F u with
    F F^T = W W^T: the first layer's noisy output has exactly the same law N(W z + b, sigma^2 W W^T),
    so the smoothed classifier and the certificate are the same, with fewer random numbers and flops.
    ``auto`` picks ``projected`` when it applies and ``direct`` otherwise.

    ``sequential=True`` with target ``radii`` (pixel units) runs sequential CERTIFY
    (:mod:`smoothing.monte_carlo`; ``n`` is the cap); ``check_range=False`` accepts inputs outside [0, 1].
    """

    name = "fars-mc"

    def __init__(self, backbone: torch.nn.Module, head: torch.nn.Module, sigma: float, lipschitz: float = 1.0,
                 n0: int = 100, n: int = 100_000, alpha: float = 0.001, batch_size: int = 10_000,
                 seed: int = 0, sampler: str = "auto", *, sequential: bool = False,
                 radii: Sequence[float] | None = None, check_range: bool = True) -> None:
        super().__init__(sigma, n0, n, alpha, batch_size, seed, lipschitz=lipschitz, sequential=sequential,
                         radii=radii, check_range=check_range)
        self.backbone = validate_classifier(backbone, "backbone")
        self.head = validate_classifier(head, "head")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        split = split_first_linear(head)
        projectable = split is not None and split[0].out_features < split[0].in_features
        if sampler == "projected" and not projectable:
            raise ValueError("sampler='projected' needs a head whose first layer is an nn.Linear narrower than its "
                             "input")
        self.sampler = "projected" if (sampler == "auto" and projectable) or sampler == "projected" else "direct"
        # taken from the head on every call
        self._split: tuple[nn.Linear, Callable[[torch.Tensor], torch.Tensor]] | None = None
        self._factor: torch.Tensor | None = None
        self._factor_memo = WeightDerived()

    def _modules(self) -> tuple[torch.nn.Module, ...]:
        return (self.backbone, self.head)

    def _device(self) -> torch.device:
        return module_device(self.backbone)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.backbone(x)
        if not isinstance(z, torch.Tensor) or z.dim() < 2 or z.shape[0] != x.shape[0]:
            raise ValueError("backbone must return a batch of embeddings [B, ...]")
        if self.sampler == "direct":
            return z
        self._split = split_first_linear(self.head)   # per call: the head's layers may have been replaced
        if self._split is None or self._split[0].out_features >= self._split[0].in_features:
            raise ValueError("the head no longer starts with an nn.Linear narrower than its input, which the projected "
                             "sampler needs; build a new FaRSMonteCarlo for the changed head")
        first = self._split[0]
        if z.dim() != 2 or z.shape[1] != first.in_features:
            raise ValueError(f"backbone returns embeddings of shape {tuple(z.shape)}, the head expects "
                             f"[B, {first.in_features}]")
        # noisy logits are W z + b + (sigma F) u; F is memoised for the head's exact current weights
        self._factor = self._factor_memo.get((first.weight,), lambda: gaussian_factor(first.weight)) * self.sigma
        return first(z)

    def _perturb(self, centers: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self._factor is None:
            return super()._perturb(centers, noise)
        # computed as [k, m] = (sigma F) u^T + centers^T, returned as its [m, k] view: for small k the
        # product is ~2x faster in this layout, and the vote reads each class as a contiguous row
        return torch.mm(self._factor, noise.T).add_(centers.T).T

    def _classify(self, points: torch.Tensor) -> torch.Tensor:
        if self.sampler == "direct":
            return call_model(self.head, points, "head")
        assert self._split is not None
        return call_model(self._split[1], points, "head")
