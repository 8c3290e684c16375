"""Deprecated: moved to :mod:`smoothing.noise` (import from ``smoothing`` or ``smoothing.noise``)."""

import warnings

from smoothing.noise import (
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

__all__ = [
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

warnings.warn("fars.noise is deprecated: import from smoothing.noise (or smoothing) instead",
              DeprecationWarning, stacklevel=2)
