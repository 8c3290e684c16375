"""The method-neutral core of randomized-smoothing certification, shared by ``fars`` and ``baselines``.

* :mod:`smoothing.certificate`: the :class:`Certificate` record every method returns, the
  :class:`Certifier` protocol and the radius helpers;
* :mod:`smoothing.checks`: the input, model and score checks and the helpers every ``certify`` call runs
  (eval mode, weights declared fixed, timing);
* :mod:`smoothing.statistics`: CERTIFY/PREDICT statistics on vote counts (Clopper-Pearson bound,
  certified radius, PREDICT's binomial test);
* :mod:`smoothing.confidence_sequence`: the anytime-valid beta-binomial mixture confidence sequence and the stopping
  rule of sequential CERTIFY;
* :mod:`smoothing.monte_carlo`: :class:`MonteCarloCertifier`, the sampling side of CERTIFY (fixed-n or
  sequential) and PREDICT;
* :mod:`smoothing.noise`: deterministic per-example Gaussian noise.

Nothing here depends on a particular method: ``fars`` and ``baselines`` import it, never the reverse.
"""

from .certificate import (
    ABSTAIN,
    LARGEST_FINITE,
    SMALLEST_NORMAL,
    UNIT,
    Certificate,
    Certifier,
    divide_radius,
    flush_subnormal,
)
from .checks import (
    INDEX_MAX,
    LOW_PRECISION,
    NonFiniteScoresError,
    all_finite,
    call_model,
    check_alpha,
    check_count,
    check_finite_scores,
    check_indices,
    check_inputs,
    check_lipschitz,
    check_module_precision,
    check_positive,
    check_unit_range,
    evaluating,
    fixed_weights,
    fixed_weights_epoch,
    module_device,
    synchronize,
    timed,
    validate_classifier,
)
from .confidence_sequence import (
    FIRST_ROUND,
    check_radii,
    confidence_sequence,
    log_mixture_ratio,
    lower_confidence_sequence,
    round_ends,
    should_stop,
)
from .monte_carlo import NOISE_BOUND, MonteCarloCertifier, argmax_is, check_sigma_fits
from .noise import (
    BLOCK_ELEMENTS,
    MAX_BLOCK_SAMPLES,
    NoiseBatch,
    NoiseSource,
    Segment,
    Stage,
    block_seed,
    block_size,
    check_seed,
    plan_batches,
)
from .statistics import (
    BOUND_SLACK,
    RADIUS_SLACK,
    binomial_abstain,
    lower_confidence_bound,
    max_certifiable_radius,
    radius_from_counts,
    radius_from_lower_bound,
    radius_from_sequence,
)

__all__ = [
    # certificate
    "ABSTAIN",
    "INDEX_MAX",
    "UNIT",
    "SMALLEST_NORMAL",
    "LARGEST_FINITE",
    "LOW_PRECISION",
    "Certificate",
    "Certifier",
    "check_lipschitz",
    "check_module_precision",
    "check_positive",
    "divide_radius",
    "check_count",
    "check_alpha",
    "module_device",
    "check_inputs",
    "check_unit_range",
    "check_indices",
    "flush_subnormal",
    "NonFiniteScoresError",
    "call_model",
    "all_finite",
    "check_finite_scores",
    "validate_classifier",
    "evaluating",
    "fixed_weights",
    "fixed_weights_epoch",
    "synchronize",
    "timed",
    # statistics
    "BOUND_SLACK",
    "RADIUS_SLACK",
    "lower_confidence_bound",
    "radius_from_counts",
    "radius_from_lower_bound",
    "radius_from_sequence",
    "max_certifiable_radius",
    "binomial_abstain",
    # sequential
    "FIRST_ROUND",
    "log_mixture_ratio",
    "confidence_sequence",
    "lower_confidence_sequence",
    "round_ends",
    "check_radii",
    "should_stop",
    # monte_carlo
    "NOISE_BOUND",
    "MonteCarloCertifier",
    "argmax_is",
    "check_sigma_fits",
    # noise
    "BLOCK_ELEMENTS",
    "MAX_BLOCK_SAMPLES",
    "Stage",
    "block_size",
    "block_seed",
    "check_seed",
    "Segment",
    "plan_batches",
    "NoiseBatch",
    "NoiseSource",
]
