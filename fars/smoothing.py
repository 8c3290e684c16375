"""Deprecated: moved to :mod:`smoothing.statistics`, :mod:`smoothing.monte_carlo` and :mod:`smoothing.certificate`."""

import warnings

from smoothing.certificate import (
    ABSTAIN,
    LOW_PRECISION,
    SMALLEST_NORMAL,
    UNIT,
    Certificate,
    call_model,
    check_alpha,
    check_count,
    check_indices,
    check_inputs,
    check_positive,
    evaluating,
    timed,
    validate_classifier,
)
from smoothing.monte_carlo import MonteCarloCertifier, argmax_is
from smoothing.noise import NoiseBatch, NoiseSource, Stage, check_seed
from smoothing.statistics import (
    BOUND_SLACK,
    RADIUS_SLACK,
    binomial_abstain,
    lower_confidence_bound,
    max_certifiable_radius,
    radius_from_counts,
)

__all__ = [
    "MonteCarloCertifier",
    "lower_confidence_bound",
    "radius_from_counts",
    "max_certifiable_radius",
    "binomial_abstain",
    "argmax_is",
    "evaluating",
    "validate_classifier",
    "call_model",
    # also reachable here before the move (constants, and names this module imported)
    "BOUND_SLACK",
    "RADIUS_SLACK",
    "ABSTAIN",
    "LOW_PRECISION",
    "SMALLEST_NORMAL",
    "UNIT",
    "Certificate",
    "check_alpha",
    "check_count",
    "check_indices",
    "check_inputs",
    "check_positive",
    "timed",
    "NoiseBatch",
    "NoiseSource",
    "Stage",
    "check_seed",
]

warnings.warn("fars.smoothing is deprecated: import from smoothing.statistics, smoothing.monte_carlo or "
              "smoothing.certificate (or smoothing) instead", DeprecationWarning, stacklevel=2)
