"""Units as people read them: the one duration format and the one radius format of every table, plan and
figure of the harness, the radius a person types, the precision radii are written with in the results file,
and figure widths.

Imports nothing from ``bench``; every part of it may use this module.
"""

from __future__ import annotations

import math

#: significant digits of a radius in ``certify.tsv`` (``format_row`` writes ``f"{radius:.6g}"``)
RADIUS_DIGITS = 6
#: relative slack above the Monte Carlo cut-off sigma * Phi^-1(alpha^(1/n)) when rows are read back: the
#: file's rounding to :data:`RADIUS_DIGITS` digits may raise a radius by up to half a unit of its last
#: digit (5e-6 of itself), and the cut-off's own float error is far below that
CUTOFF_SLACK = 10.0 ** (1 - RADIUS_DIGITS)


def fmt_seconds(s: float | None) -> str:
    """Human/engineering format of a duration: '850 µs', '12.3 ms', '1.05 s', '2.5 min', '1.2 h'.

    ``s`` in seconds; three significant digits; ``'0 s'`` for 0, ``'∞'`` for an infinite duration,
    ``'—'`` when missing (None or NaN).
    """
    if s is None or math.isnan(float(s)):
        return "—"
    s = float(s)
    if math.isinf(s):
        return "∞"
    if s == 0:
        return "0 s"
    for limit, scale, unit in ((1e-3, 1e6, "µs"), (1, 1e3, "ms"), (60, 1, "s"), (3600, 1 / 60, "min")):
        if s < limit:
            return f"{s * scale:.3g} {unit}"
    return f"{s / 3600:.3g} h"


#: Pixel levels of an 8-bit image: radii such as SLL's 36/255 are multiples of 1/PIXEL_LEVELS.
PIXEL_LEVELS = 255


def fmt_radius(r: float) -> str:
    """A radius (l2, [0, 1] pixel scale) as a label: '0.05', '1', '36/255', '0.141'.

    A multiple k/255 of one pixel level that is no decimal of at most 3 places is written ``'k/255'`` (how
    SLL and others state their radii; 0.2 = 51/255 stays '0.2'); any other radius with at most 3 significant
    digits (``format(r, '.3g')``); ``'∞'`` for an infinite radius.
    """
    r = float(r)
    if math.isinf(r):
        return "∞"
    k = r * PIXEL_LEVELS
    if r > 0 and abs(r - round(r, 3)) > 1e-12 and abs(k - round(k)) < 1e-6:
        return f"{round(k)}/{PIXEL_LEVELS}"
    return f"{r:.3g}"


def parse_radius(text: str) -> float:
    """A radius typed by a person: a number (``'0.25'``) or a fraction (``'36/255'``).

    Raises ``ValueError`` for anything else, a zero denominator included.
    """
    num, slash, den = str(text).strip().partition("/")
    try:
        value = float(num) / float(den) if slash else float(num)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"not a radius: {text!r} (a number such as 0.25 or a fraction such as 36/255)") from None
    return value


__all__ = ["CUTOFF_SLACK", "PIXEL_LEVELS", "RADIUS_DIGITS", "fmt_radius", "fmt_seconds", "parse_radius"]


#: Figure widths (inches) by name: one column of a two-column paper, and the full text width.
WIDTHS: dict[str, float] = {"column": 3.3, "full": 7.0}


def figure_width(value: str | float) -> float:
    """Width in inches of ``value``: a name of :data:`WIDTHS` (``'column'``, ``'full'``) or inches (2 to 20).

    Raises ``ValueError`` for anything else.
    """
    if isinstance(value, str) and value.strip().lower() in WIDTHS:
        return WIDTHS[value.strip().lower()]
    try:
        inches = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"figure width {value!r}: use {' or '.join(WIDTHS)} or inches (2 to 20)") from None
    if not 2.0 <= inches <= 20.0:
        raise ValueError(f"figure width {value!r}: inches must be between 2 and 20")
    return inches


def width_name(inches: float) -> str:
    """``'column'`` / ``'full'`` for a width of :data:`WIDTHS`, else ``'<inches>in'`` (file-name suffixes)."""
    for name, w in WIDTHS.items():
        if math.isclose(inches, w):
            return name
    return f"{inches:g}in"
