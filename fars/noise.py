"""Deprecated: moved to :mod:`smoothing.noise` (import from ``smoothing`` or ``smoothing.noise``)."""

import warnings

from smoothing.noise import *  # noqa: F403 - this module is only an alias of smoothing.noise
from smoothing.noise import __all__  # noqa: F401

warnings.warn("fars.noise is deprecated: import from smoothing.noise (or smoothing) instead",
              DeprecationWarning, stacklevel=2)
