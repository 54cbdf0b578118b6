"""Small shared arithmetic: percentiles and UTC period starts."""

from __future__ import annotations

import calendar
import time


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 1]) of the values, or None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def day_start(ts: float) -> float:
    """Start of the UTC day containing ts."""
    t = time.gmtime(ts)
    return float(calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0)))


def month_start(ts: float) -> float:
    """Start of the UTC month containing ts."""
    t = time.gmtime(ts)
    return float(calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)))
