"""Units as people read them: the one duration format of every table, plan and figure of the harness.

Imports nothing from ``bench``; every part of it may use this module.
"""

from __future__ import annotations

import math


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


__all__ = ["fmt_seconds"]
