"""The one rounding bound of the deterministic certificates (:mod:`smoothing.rounding`), checked in exact arithmetic."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from baselines import lipschitz_margin
from fars import closed_form, crown
from smoothing.certificate import UNIT
from smoothing.rounding import MAX_TERMS, TINY, norm_upper_bound, rounding_factor


@pytest.mark.parametrize("terms", [0, 1, 2, 5, 68, 1000, 2 ** 20, 2 ** 40, MAX_TERMS])
def test_rounding_factor_is_at_least_twice_gamma_n(terms: int) -> None:
    u = Fraction(UNIT)
    gamma = terms * u / (1 - terms * u)
    assert Fraction(rounding_factor(terms)) >= 2 * gamma


def test_rounding_factor_refuses_counts_outside_its_range() -> None:
    for terms in (-1, MAX_TERMS + 1):
        with pytest.raises(ValueError, match="terms"):
            rounding_factor(terms)


def _exact_dot(x: torch.Tensor, y: torch.Tensor) -> Fraction:
    return sum((Fraction(a) * Fraction(b) for a, b in zip(x.tolist(), y.tolist(), strict=True)), Fraction(0))


@pytest.mark.parametrize("seed", range(6))
def test_dot_products_stay_within_the_bound(seed: int) -> None:
    """|fl(x^T y) - x^T y| <= rounding_factor(n) fl(|x|^T |y|), on dot products with heavy cancellation."""
    g = torch.Generator().manual_seed(seed)
    n = 1 + 7 * seed
    for _ in range(50):
        x = torch.randn(n, generator=g, dtype=torch.float64) * torch.exp(8 * torch.randn(n, generator=g,
                                                                                           dtype=torch.float64))
        y = torch.randn(n, generator=g, dtype=torch.float64)
        y[-1] = -float(x[:-1] @ y[:-1]) / float(x[-1])   # sum close to 0: the relative error is at its largest
        computed = Fraction(float(x @ y))
        size = float(x.abs() @ y.abs())
        assert abs(computed - _exact_dot(x, y)) <= Fraction(rounding_factor(n)) * Fraction(size) + n * Fraction(TINY)


@pytest.mark.parametrize("scale", [1.0, 2.0 ** -1070, 2.0 ** -540, 2.0 ** 500, 1e300])
def test_norm_upper_bound_is_above_the_exact_norm(scale: float) -> None:
    g = torch.Generator().manual_seed(1)
    v = torch.randn(20, 13, generator=g, dtype=torch.float64) * scale
    v[0] = 0.0
    v[1] = scale   # all entries equal: the worst case of the scaled sum
    bound = norm_upper_bound(v)
    assert float(bound[0]) == 0.0
    for row, b in zip(v.tolist(), bound.tolist(), strict=True):
        assert Fraction(b) ** 2 >= sum(Fraction(a) ** 2 for a in row)


def test_every_deterministic_certificate_uses_the_one_bound() -> None:
    """One implementation: the closed form, the Lipschitz margin and CROWN share smoothing.rounding's helpers."""
    assert closed_form.rounding_factor is rounding_factor and closed_form.norm_upper_bound is norm_upper_bound
    assert lipschitz_margin.rounding_factor is rounding_factor
    assert lipschitz_margin.norm_upper_bound is norm_upper_bound
    assert crown.rounding_factor is rounding_factor and crown.norm_upper_bound is norm_upper_bound
