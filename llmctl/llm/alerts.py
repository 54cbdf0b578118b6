"""Spend alerts: a day or hour far above its own trailing baseline (``cost-report --alerts``).

For every day and hour checked, per provider and tag (and for all calls together when several
providers or tags were active), three metrics are compared with the same period's values over
the ``baseline_days`` before it (an hour with the same hour of each of those days, so a job that
runs at noon every day is its own baseline at noon):

* ``spend_usd`` (priced successful calls), ``calls`` (attempts: successes and errors),
  ``error_rate`` (errors / attempts; only periods with ``min_attempts`` count, in the baseline
  too);
* an alert fires when the value is above ``max(factor x median, median + mad_k x MAD, floor)``:
  the ratio catches a jump from a steady level, the median absolute deviation keeps a noisy
  series from alerting on its usual swings, and the floor (``min_daily_usd`` /
  ``min_hourly_usd``, ``min_calls``, ``min_error_rate``) keeps small absolute numbers quiet --
  a day of $0.03 after a baseline of $0.01 is not an incident.

Robust statistics (median, MAD) rather than mean and standard deviation: one earlier incident
in the baseline would otherwise raise the bar for the next one.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict

from llmctl.config import AlertsConfig
from llmctl.money import money

PERIODS = {"day": 86400, "hour": 3600}
METRICS = ("spend_usd", "calls", "error_rate")


def _bucket_values(rows: list[dict], size: int) -> dict[tuple[str, str], dict[int, list[float]]]:
    """(provider, tag) -> period index -> [spend, attempts, errors]; ('*', '*') is every call."""
    table: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0, 0]))
    for r in rows:
        if r["status"] not in ("ok", "error"):
            continue
        b = int(r["ts"] // size)
        for scope in ((str(r["provider"] or "-"), str(r["tag"] or "-")), ("*", "*")):
            v = table[scope][b]
            v[0] += r["cost_usd"] or 0.0  # a failed attempt is billed too when text had arrived (a cut stream)
            v[1] += 1
            v[2] += r["status"] == "error"
    return table


def _metric(v: list[float] | None, metric: str, min_attempts: int) -> float | None:
    spend, attempts, errors = v or (0.0, 0, 0)
    if metric == "spend_usd":
        return spend
    if metric == "calls":
        return float(attempts)
    return errors / attempts if attempts >= min_attempts else None


def _show(metric: str, x: float) -> str:
    if metric == "spend_usd":
        return money(x)
    if metric == "error_rate":
        return f"{x:.1%}"
    return f"{x:g}"


def spend_alerts(rows: list[dict], cfg: AlertsConfig, start: float, end: float) -> list[dict]:
    """Alerts for the days and hours that start in [start, end); ``rows`` must reach back
    ``cfg.baseline_days`` before ``start`` (their baseline)."""
    out: list[dict] = []
    for period, size in PERIODS.items():
        floors = {"spend_usd": cfg.min_daily_usd if period == "day" else cfg.min_hourly_usd,
                  "calls": float(cfg.min_calls), "error_rate": cfg.min_error_rate}
        per_day = 86400 // size  # the same period of each earlier day: a day is 1 back, an hour 24
        table = _bucket_values(rows, size)
        for scope, buckets in table.items():
            if scope == ("*", "*") and len(table) <= 2:
                continue  # one provider and tag: the total says the same again
            for b in sorted(buckets):
                if not (start <= b * size < end):
                    continue
                for metric in METRICS:
                    value = _metric(buckets[b], metric, cfg.min_attempts)
                    if value is None:
                        continue
                    base = [x for d in range(1, cfg.baseline_days + 1)
                            if (x := _metric(buckets.get(b - d * per_day), metric, cfg.min_attempts)) is not None]
                    med = statistics.median(base) if base else 0.0
                    mad = statistics.median(abs(x - med) for x in base) if base else 0.0
                    bars = (cfg.factor * med, med + cfg.mad_k * mad, floors[metric])
                    threshold = max(bars)
                    if value <= threshold:
                        continue
                    when = dt.datetime.fromtimestamp(b * size, dt.timezone.utc)
                    label = when.strftime("%Y-%m-%d" if period == "day" else "%Y-%m-%dT%H:00Z")
                    provider, tag = scope
                    where = "all calls" if scope == ("*", "*") else f"provider {provider}, tag {tag}"
                    rule = (f"{metric} {_show(metric, value)} > max({cfg.factor:g}x median {_show(metric, med)}, "
                            f"median + {cfg.mad_k:g}*MAD {_show(metric, bars[1])}, floor "
                            f"{_show(metric, floors[metric])}) over the {cfg.baseline_days} days before")
                    out.append({"period": period, "start": label, "provider": provider, "tag": tag,
                                "metric": metric, "value": round(value, 10), "median": round(med, 10),
                                "mad": round(mad, 10), "threshold": round(threshold, 10),
                                "baseline_periods": len(base), "rule": rule,
                                "message": f"{period} {label}, {where}: {rule}"})
    return out
