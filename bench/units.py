"""Units as people read them: the one duration format of every table, plan and figure of the harness, and
the precision radii are written with in the results file.

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


__all__ = ["CUTOFF_SLACK", "RADIUS_DIGITS", "fmt_seconds"]
