"""Proven bounds on float64 round-off: the one rounding bound of the deterministic certificates.

``fars-closed`` (:mod:`fars.closed_form`), ``fars-crown`` (:mod:`fars.crown`) and ``lipschitz-margin``
(:mod:`baselines.lipschitz_margin`) compute their radii in float64 and lower them by a proven bound on
their rounding error. Every such bound is built here from the same two pieces:

* :func:`rounding_factor`: a relative bound for a sum of n rounded terms, used as
  ``|computed - exact| <= rounding_factor(n) * (the same sum of absolute values, as computed)``;
* :func:`norm_upper_bound`: ||v||_2 rounded up, without underflow or overflow.

Source: Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., sections 2.2 and 3.1-3.5:
with unit round-off u = 2^-53, a float64 sum of n terms (or dot product of length n, in any order, with
or without fused multiply-adds) has |fl(x^T y) - x^T y| <= gamma_n |x|^T |y|, gamma_n = n u / (1 - n u),
while no product is subnormal. Each product in the subnormal range adds an absolute error of at most
:data:`TINY`.
"""

from __future__ import annotations

import torch

from .certificate import UNIT

#: the smallest positive float64 (subnormal): a product that underflows is off by at most this much
TINY = 2.0 ** -1074
#: the largest n for which :func:`rounding_factor` is defined (n u <= 1/4)
MAX_TERMS = 2 ** 51


def rounding_factor(terms: int) -> float:
    """4 n u for n = ``terms``: a relative bound on the rounding error of a float64 sum of n terms.

    4 n u >= 2 gamma_n (for n u <= 1/2): twice the standard bound gamma_n (Higham, sections 3.1-3.5),
    the factor 2 also covering the rounding of the bound itself. For an error bound E computed in
    floating point from nonnegative terms (a sum of at most m < 2^51 rounded products), the computed
    value is >= E (1 - gamma_m) >= E / 2, so ``rounding_factor(n) * computed`` >= gamma_n E (the last
    product's own rounding included).

    Raises:
        ValueError: ``terms`` < 0 or above :data:`MAX_TERMS` (the bound needs n u <= 1/4).
    """
    if not 0 <= terms <= MAX_TERMS:
        raise ValueError(f"rounding_factor needs 0 <= terms <= 2^51, got {terms}")
    return 4 * terms * UNIT


def norm_upper_bound(v: torch.Tensor) -> torch.Tensor:
    """An upper bound on ||v||_2 over the last dimension (float64, shape ``v.shape[:-1]``); exactly 0 for v = 0.

    Entries are scaled by max |v_i| so that tiny or huge entries neither underflow nor overflow; the norm
    is rounded up by :func:`rounding_factor` of n + 4 (the n divisions and squares, the sum, the square root
    and the product each round by at most u, the sum by gamma_n), and by :data:`TINY` where the products are
    subnormal (their error is absolute there).
    """
    v = v.double()
    scale = v.abs().amax(dim=-1)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    norm = scale * torch.linalg.vector_norm(v / safe[..., None], dim=-1) * (1 + rounding_factor(v.shape[-1] + 4))
    return torch.where(scale > 0, norm + TINY, norm)   # + TINY changes nothing above the subnormal range


__all__ = ["TINY", "MAX_TERMS", "rounding_factor", "norm_upper_bound"]
