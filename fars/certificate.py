"""Deprecated: moved to :mod:`smoothing.certificate` (import from ``smoothing`` or ``smoothing.certificate``)."""

import warnings

from smoothing.certificate import (
    ABSTAIN,
    INDEX_MAX,
    LOW_PRECISION,
    SMALLEST_NORMAL,
    UNIT,
    Certificate,
    Certifier,
    call_model,
    check_alpha,
    check_count,
    check_indices,
    check_inputs,
    check_positive,
    flush_subnormal,
    module_device,
    synchronize,
    timed,
)

__all__ = [
    "ABSTAIN",
    "INDEX_MAX",
    "UNIT",
    "SMALLEST_NORMAL",
    "LOW_PRECISION",
    "Certificate",
    "Certifier",
    "check_positive",
    "check_count",
    "check_alpha",
    "module_device",
    "check_inputs",
    "check_indices",
    "flush_subnormal",
    "call_model",
    "synchronize",
    "timed",
]

warnings.warn("fars.certificate is deprecated: import from smoothing.certificate (or smoothing) instead",
              DeprecationWarning, stacklevel=2)
