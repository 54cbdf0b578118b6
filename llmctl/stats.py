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


def paired_bootstrap(diffs: list[float], resamples: int = 10_000, seed: int = 0) -> dict:
    """Paired comparison over cases (``diffs``: this run minus the other, per case): the mean
    difference, its 95% bootstrap CI, a two-sided p-value (the share of resampled means, shifted
    to a zero mean, at least as far from zero as the one observed) and wins/losses/ties."""
    import numpy as np

    d = np.asarray(diffs, dtype=np.float64)
    mean = float(d.mean())
    means = d[np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))].mean(1)
    p = (np.count_nonzero(np.abs(means - mean) >= abs(mean) - 1e-12) + 1) / (resamples + 1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"delta": round(mean, 6), "ci95": [round(float(lo), 6), round(float(hi), 6)],
            "p_value": round(float(p), 4), "wins": int((d > 1e-12).sum()), "losses": int((d < -1e-12).sum()),
            "ties": int((np.abs(d) <= 1e-12).sum())}
