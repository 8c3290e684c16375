"""1-Lipschitz layers (l2) for FaRS backbones: SLL residual layers (Araujo et al., ICLR 2023) and the
plain parts a backbone needs around them.

Every module here is 1-Lipschitz in l2 for any value of its parameters; each class states why.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .memo import WeightDerived


def sll_rescaling(gram_abs: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """t_i = 1 / sum_j |G_ij| q_j / q_i with q = exp(log_q); t_i = 0 where the row sum is 0 or not finite.

    ``gram_abs`` holds |G| (G = W W^T for a dense layer, the summed self-convolution of the kernel
    for a conv layer). Why this is enough: diag(1/t) - G is diagonally dominant after the similarity
    by diag(q), hence positive semidefinite, which is the condition of SLL's Theorem 3. Any t smaller
    than the formula's stays sound, so a row sum that overflows gives t_i = 0 (the unit is switched off).
    """
    ratio = torch.exp(log_q[None, :] - log_q[:, None])                 # q_j / q_i
    rows = torch.where(gram_abs > 0, gram_abs * ratio, torch.zeros_like(gram_abs)).sum(dim=1)
    ok = (rows > 0) & torch.isfinite(rows)
    t = 1.0 / torch.where(ok, rows, torch.ones_like(rows))
    return torch.where(ok & torch.isfinite(t), t, torch.zeros_like(t))


def residual(x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """x - 2 * update, as one operation (no tensor for 2 * update); equal bit for bit to the two operations,
    since doubling is exact in binary floating point (barring overflow)."""
    return torch.sub(x, update, alpha=2)


class SLLDense(nn.Module):
    """SLL dense residual layer: y = x - 2 W^T diag(t) ReLU(W x + b), W of shape (inner, features).

    1-Lipschitz in l2 for all W, b, q (SLL, Theorem 3), with t from :func:`sll_rescaling` on |W W^T|.
    """

    def __init__(self, features: int, inner: int) -> None:
        super().__init__()
        self.features, self.inner = features, inner
        self.weight = nn.Parameter(torch.empty(inner, features))
        self.bias = nn.Parameter(torch.empty(inner))
        self.log_q = nn.Parameter(torch.zeros(inner))
        nn.init.xavier_normal_(self.weight)
        bound = 1 / math.sqrt(features)
        nn.init.uniform_(self.bias, -bound, bound)
        self.memo = WeightDerived()

    def rescaling(self) -> torch.Tensor:
        return sll_rescaling((self.weight @ self.weight.T).abs(), self.log_q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.memo.get((self.weight, self.log_q), self.rescaling)
        hidden = F.linear(x, self.weight, self.bias)
        hidden = hidden.relu_().mul_(t) if not torch.is_grad_enabled() else F.relu(hidden) * t
        return residual(x, F.linear(hidden, self.weight.T))

    def extra_repr(self) -> str:
        return f"features={self.features}, inner={self.inner}"


class SLLConv2d(nn.Module):
    """SLL convolutional residual layer: y = x - 2 K^T (t * ReLU(K x + b)), K a (inner, channels, k, k)
    convolution with zero padding k // 2 and K^T its adjoint (the transposed convolution).

    t comes from the row sums of |K * K| over all spatial offsets (the kernel of the full-plane
    operator K K^T). Zero padding restricts K K^T to a principal submatrix of the full-plane operator
    and composes with a projection, both of which keep the diagonal-dominance bound, so the layer is
    1-Lipschitz in l2 on images of any size. Odd kernel sizes only (so shapes are kept).
    """

    def __init__(self, channels: int, inner: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        self.channels, self.inner, self.kernel_size = channels, inner, kernel_size
        self.weight = nn.Parameter(torch.empty(inner, channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(inner))
        self.log_q = nn.Parameter(torch.zeros(inner))
        nn.init.xavier_normal_(self.weight)
        self.memo = WeightDerived()

    def rescaling(self) -> torch.Tensor:
        k = self.kernel_size
        self_conv = F.conv2d(self.weight, self.weight, padding=k - 1)  # [inner, inner, 2k-1, 2k-1]
        return sll_rescaling(self_conv.abs().sum(dim=(2, 3)), self.log_q)

    def _channel_rescaling(self) -> torch.Tensor:
        return self.rescaling()[None, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel_size // 2
        t = self.memo.get((self.weight, self.log_q), self._channel_rescaling)    # [1, inner, 1, 1]
        hidden = F.conv2d(x, self.weight, self.bias, padding=pad)
        hidden = hidden.relu_().mul_(t) if not torch.is_grad_enabled() else F.relu(hidden) * t
        return residual(x, F.conv_transpose2d(hidden, self.weight, padding=pad))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, inner={self.inner}, kernel_size={self.kernel_size}"


class PadChannels(nn.Module):
    """Append zero channels: [B, C, H, W] -> [B, out_channels, H, W]. An isometry (1-Lipschitz)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError("PadChannels can only add channels")
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} channels, got {x.shape[1]}")
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}"


class LipschitzAvgPool2d(nn.Module):
    """Non-overlapping k x k window sum divided by k (average pooling times k).

    1-Lipschitz: by Cauchy-Schwarz, |sum of k^2 values| <= k * ||values||_2, and windows are disjoint.
    (Plain average pooling is 1/k-Lipschitz and shrinks the signal needlessly.)
    """

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        return F.avg_pool2d(x, k, stride=k, divisor_override=k)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class SpectralLinear(nn.Module):
    """Linear map W / max(1, ||W||_2) + b: spectral norm <= 1, hence 1-Lipschitz in l2.

    ||W||_2 is the exact largest singular value (from the eigenvalues of the Gram matrix in float64),
    not a power-iteration estimate, so the bound holds at every step of training and at test time.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.orthogonal_(self.weight)
        self.memo = WeightDerived()

    def spectral_norm(self) -> torch.Tensor:
        """||W||_2 = sqrt(largest eigenvalue of the small Gram matrix), in float64 (differentiable).

        Exact up to float64 round-off; much cheaper than an SVD of W when one side is small.
        """
        w = self.weight.double()
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        # the 1e-6 margin absorbs the round-off of the division in fp32, so ||W / norm||_2 <= 1 holds exactly
        return (torch.linalg.eigvalsh(gram)[-1].clamp_min(0).sqrt() * (1 + 1e-6)).to(self.weight.dtype)

    def _normalized(self) -> torch.Tensor:
        return self.weight / torch.clamp(self.spectral_norm(), min=1.0)

    def normalized_weight(self) -> torch.Tensor:
        # a k x k eigenproblem (k = the smaller side) and a division of W, memoised only for the exact
        # current weights
        return self.memo.get((self.weight,), self._normalized)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class NormalizedLinear(nn.Module):
    """Linear map with rows of unit l2 norm: each output is 1-Lipschitz, the whole map is
    sqrt(out_features)-Lipschitz in the worst case (its spectral norm is at most the Frobenius norm)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.orthogonal_(self.weight)
        self.memo = WeightDerived()

    def _normalized(self) -> torch.Tensor:
        return F.normalize(self.weight, dim=1)

    def normalized_weight(self) -> torch.Tensor:
        if "memo" not in self.__dict__:   # a module pickled by a version without the memo
            self.memo = WeightDerived()
        return self.memo.get((self.weight,), self._normalized)   # for the exact current weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
