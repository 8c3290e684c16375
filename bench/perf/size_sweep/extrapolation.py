"""Cohen's time at the target n: measured, or extrapolated on a straight line from two n run at the same
batch size after a linearity check.

Cohen's cost is a per-call part (the selection's n0 samples, set-up) plus a part proportional to n, as
long as the batch size is the same: the size sweep measures it at two n that are multiples of its batch
size (:func:`bench.perf.size_sweep.timing.same_batch_ns`), checks that the ratio of the times (the process
CPU times when measured) is within :data:`LINEAR_TOLERANCE` of the ratio of the samples drawn
(:func:`linear_in_n`) and only then extrapolates the wall and the CPU seconds to the target n
(``extrapolated``; ``not-linear`` otherwise, without seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .settings import SweepConfig

#: relative tolerance of the linearity check: time ratio / samples ratio within 1 +- this
LINEAR_TOLERANCE = 0.10


@dataclass(frozen=True)
class Extrapolation:
    """Cohen's time at ``target_n`` from two measured n: the linearity check and the line through them."""

    n_low: int
    n_high: int
    seconds_low: float
    seconds_high: float
    target_n: int
    ratio: float            # (seconds_high / seconds_low) / ((n_high + offset) / (n_low + offset))
    linear: bool            # |ratio - 1| <= tolerance
    seconds: float          # extrapolated seconds at target_n (NaN when not linear)
    ratio_n: float = math.nan   # (seconds_high / seconds_low) / (n_high / n_low): the plain ratio of the n


def linear_in_n(n_low: int, seconds_low: float, n_high: int, seconds_high: float, target_n: int,
                tolerance: float = LINEAR_TOLERANCE, offset: int = 0) -> Extrapolation:
    """Check that time is linear in n (the ratio of the times within ``tolerance`` of the ratio of the n)
    and, only then, extrapolate to ``target_n`` on the straight line through the two points.

    ``offset``: samples drawn besides the n (cohen's n0 selection samples), so that the check compares the
    times with the ratio of the samples drawn, n0 + n. Both ratios are recorded (``ratio``, ``ratio_n``).
    """
    if not 0 < n_low < n_high or seconds_low <= 0 or offset < 0:
        raise ValueError("need 0 < n_low < n_high, a positive time at n_low and offset >= 0")
    times = seconds_high / seconds_low
    ratio = times / ((n_high + offset) / (n_low + offset))
    linear = abs(ratio - 1.0) <= tolerance
    slope = (seconds_high - seconds_low) / (n_high - n_low)
    seconds = seconds_high + slope * (target_n - n_high) if linear else math.nan
    return Extrapolation(n_low, n_high, seconds_low, seconds_high, target_n, ratio, linear, seconds,
                         times / (n_high / n_low))


def _line(rows: pd.DataFrame, column: str, low: int, high: int, config: SweepConfig) -> Extrapolation | None:
    """The linearity check and line of ``column`` (wall or CPU seconds) through cohen's two n, when both
    were measured with a positive finite value."""
    if column not in rows:
        return None
    values = rows.set_index("n")[column]
    if low not in values.index or high not in values.index:
        return None
    a, b = float(values[low]), float(values[high])
    if not (math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0):
        return None
    return linear_in_n(low, a, high, b, config.target_n, offset=min(config.n0, low))  # n0 at both n


def cohen_at_target(measured: pd.DataFrame, config: SweepConfig, mode: str
                    ) -> tuple[dict[str, Any], Extrapolation | None]:
    """Cohen's row in ``mode`` at ``target_n``: measured when it was, else extrapolated from ``cohen_ns``
    when linear, else a ``not-linear`` row without seconds. Two n that are not both whole multiples of
    cohen's batch size ran different batch sizes (a short last batch), so their ratio does not test
    linearity: then nothing is extrapolated (``not-comparable``).

    The wall seconds and the process CPU seconds are each extrapolated on their own line. Linearity is
    judged on the CPU seconds when both n have them (on a shared machine the wall time also counts the
    time other processes held the cores, which varies from call to call; the CPU time counts this
    process's work only), else on the wall seconds. Returns (row, the check that decided, or None)."""
    rows = measured[(measured["method"] == "cohen") & (measured["mode"] == mode)]
    seconds = rows.set_index("n")["seconds"]
    low, high = sorted(config.cohen_ns)
    base = {"method": "cohen", "n": config.target_n, "mode": mode}
    comparable = low % config.cohen_batch_size == 0 and high % config.cohen_batch_size == 0
    wall = _line(rows, "seconds", low, high, config) if comparable else None
    cpu = _line(rows, "cpu_seconds", low, high, config) if comparable else None
    check = cpu if cpu is not None else wall
    if config.target_n in seconds.index:
        return {**base, "seconds": float(seconds[config.target_n]), "source": "measured"}, check
    if not comparable:
        return {**base, "seconds": math.nan, "source": "not-comparable"}, None
    if check is None or wall is None:
        return {**base, "seconds": math.nan, "source": "not-measured"}, None
    if not check.linear:
        return {**base, "seconds": math.nan, "source": "not-linear"}, check
    line = {**base, "seconds": linear_in_n(low, wall.seconds_low, high, wall.seconds_high, config.target_n,
                                           tolerance=math.inf).seconds, "source": "extrapolated"}
    if cpu is not None:
        line["cpu_seconds"] = cpu.seconds
    return line, check
