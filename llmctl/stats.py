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


EXACT_UP_TO = 16  # units: up to 2^16 sign assignments are enumerated


def sign_flip_p(sums, total: float) -> tuple[float, float] | None:
    """Exact sign-flip (randomisation) test of a paired mean, ``sums`` per independent unit (a case,
    or a cluster's total) over ``total`` cases: (one-sided p for a drop, two-sided p), or None past
    EXACT_UP_TO units. Under "no difference" each unit's sign is a coin flip, so with n units no
    p-value is below 2^-n: with 2 cases that both dropped, 0.25. The bootstrap alone has no such
    floor: when every difference is the same its resamples do not vary, and its p is 1/(B+1)."""
    import numpy as np

    sums = np.asarray(sums, dtype=np.float64)
    n = len(sums)
    if n > EXACT_UP_TO:
        return None
    signs = 1.0 - 2.0 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
    means, observed = signs @ sums / total, sums.sum() / total
    return float(np.mean(means <= observed + 1e-12)), float(np.mean(np.abs(means) >= abs(observed) - 1e-12))


def paired_bootstrap(diffs: list[float], resamples: int = 10_000, seed: int = 0) -> dict:
    """Paired comparison over cases (``diffs``: this run minus the other, per case): the mean
    difference, its 95% bootstrap CI, a two-sided p-value (the share of resampled means, shifted
    to a zero mean, at least as far from zero as the one observed; never below the exact sign-flip
    test's with few cases, ``sign_flip_p``) and wins/losses/ties."""
    import numpy as np

    d = np.asarray(diffs, dtype=np.float64)
    mean = float(d.mean())
    means = d[np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))].mean(1)
    p = (np.count_nonzero(np.abs(means - mean) >= abs(mean) - 1e-12) + 1) / (resamples + 1)
    exact = sign_flip_p(d, len(d))
    if exact is not None:  # the larger: a degenerate bootstrap must not claim what n cases cannot show
        p = max(p, exact[1])
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"delta": round(mean, 6), "ci95": [round(float(lo), 6), round(float(hi), 6)],
            "p_value": round(float(p), 4), "wins": int((d > 1e-12).sum()), "losses": int((d < -1e-12).sum()),
            "ties": int((np.abs(d) <= 1e-12).sum())}
