"""Deprecated: moved to :mod:`smoothing.certificate` (import from ``smoothing`` or ``smoothing.certificate``)."""

import warnings

from smoothing.certificate import *  # noqa: F403 - this module is only an alias of smoothing.certificate
from smoothing.certificate import __all__  # noqa: F401

warnings.warn("fars.certificate is deprecated: import from smoothing.certificate (or smoothing) instead",
              DeprecationWarning, stacklevel=2)
