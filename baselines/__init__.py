"""Reference methods the harness compares FaRS with."""

from .cohen import CohenRS
from .lipschitz_margin import LipschitzMargin

__all__ = ["CohenRS", "LipschitzMargin"]
