"""Aggregations for `cost-report` and `cache-stats` (the ledger and cache only record)."""

from __future__ import annotations

import calendar
import re
import time
from collections import defaultdict

from llmctl.config import AlertsConfig, LLMConfig, StateConfig
from llmctl.datadir import DataDir
from llmctl.errors import InputError
from llmctl.llm.alerts import spend_alerts
from llmctl.llm.cache import ResponseCache
from llmctl.llm.ledger import Ledger
from llmctl.stats import day_start, month_start, percentile

DIMENSIONS = ("day", "provider", "model", "command", "tag")
SHARED_DIMENSIONS = ("machine", *DIMENSIONS)  # cost-report --shared: the team's rows, per machine too


def parse_when(value: str | None, now: float, flag: str) -> float | None:
    """'2026-11-01', '7d' (days ago) or 'today' -> epoch seconds (UTC)."""
    if value is None:
        return None
    v = value.strip().lower()
    if v == "today":
        return day_start(now)
    if m := re.fullmatch(r"(\d+)d", v):
        if int(m.group(1)) > 36500:  # before 1926: a typo, and a date out of range
            raise InputError(f"{flag} '{value}': at most 36500d (100 years); or give YYYY-MM-DD")
        return day_start(now) - int(m.group(1)) * 86400
    try:
        return float(calendar.timegm(time.strptime(v, "%Y-%m-%d")))
    except ValueError:
        raise InputError(f"{flag} '{value}': use YYYY-MM-DD, 'today' or a number of days like 7d") from None


def iso(ts: float | None) -> str | None:
    import datetime as dt

    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


def _summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    errors = [r for r in rows if r["status"] == "error"]
    hits = [r for r in rows if r["status"] == "cache_hit"]
    calls = ok + errors
    latencies = [r["latency_ms"] for r in ok if r["latency_ms"] is not None]
    return {
        "requests": len({r["request_id"] for r in rows}),
        "attempts": len(calls),
        "ok": len(ok),
        "errors": len(errors),
        "error_rate": round(len(errors) / len(calls), 4) if calls else 0.0,  # errors / attempts
        "cache_hits": len(hits),
        "refused": sum(1 for r in rows if r["status"] == "refused"),
        # every attempt that was billed: an answer, and a failed one whose text had arrived (a cut
        # stream, a client that left), as budgets count them (Ledger.spent)
        "tokens_in": sum(r["tokens_in"] or 0 for r in calls),
        "tokens_out": sum(r["tokens_out"] or 0 for r in calls),
        "estimated_usage_calls": sum(1 for r in calls if r["usage_source"] == "estimated"),
        # null, never a silent 0, when no billed call of the group had a price
        "cost_usd": (round(sum(r["cost_usd"] or 0 for r in calls), 10)
                     if not calls or any(r["cost_usd"] is not None for r in calls) else None),
        "unknown_cost_calls": sum(1 for r in ok if r["cost_usd"] is None),
        "saved_by_cache_usd": round(sum(r["saved_usd"] or 0 for r in hits), 10),
        "latency_ms_p50": percentile(latencies, 0.5),
        "latency_ms_p95": percentile(latencies, 0.95),
    }


def _tag_budgets(b, spent: dict[str, tuple[float, float]]) -> dict:
    """The per-tag limits (llm.budget.tags) with what each tag spent today and this month."""
    if not b.tags:
        return {}
    return {"tags": {t: {"daily": {"spent_usd": round(spent[t][0], 10), "limit_usd": lim.daily_usd},
                         "monthly": {"spent_usd": round(spent[t][1], 10), "limit_usd": lim.monthly_usd}}
                     for t, lim in b.tags.items()}}


def cost_report(data: DataDir, cfg: LLMConfig, since: float | None, until: float | None,
                now: float, shared: StateConfig | None = None, alerts: AlertsConfig | None = None) -> dict:
    """This machine's ledger; ``shared`` (a redis state section): every machine's published rows.
    ``alerts``: also the spend alerts of the days and hours in the range (default: yesterday and today)."""
    if shared is not None:
        return _shared_report(data, cfg, shared, since, until, now, alerts)
    path = data.ledger
    rows: list[dict] = []
    found: list[dict] = []
    if path.exists():
        ledger = Ledger(path)
        try:
            rows = ledger.rows(since, until)
            spent_today = ledger.spent(day_start(now))
            spent_month = ledger.spent(month_start(now))
            tag_spent = {t: (ledger.spent(day_start(now), t), ledger.spent(month_start(now), t))
                         for t in cfg.budget.tags}
            if alerts is not None:
                found = _alerts(lambda a, b: ledger.rows(a, b), alerts, since, until, now)
        finally:
            ledger.close()
    else:
        spent_today = spent_month = 0.0
        tag_spent = {t: (0.0, 0.0) for t in cfg.budget.tags}
    breakdowns: dict[str, dict[str, dict]] = {}
    for dim in DIMENSIONS:
        groups: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            groups[str(r[dim] if r[dim] is not None else "-")].append(r)
        breakdowns[dim] = {k: _summary(v) for k, v in sorted(groups.items())}
    b = cfg.budget
    return {
        "since": since, "until": until, "ledger": str(path),
        "totals": _summary(rows),
        "by": breakdowns,
        "budget": {
            "daily": {"spent_usd": round(spent_today, 10), "limit_usd": b.daily_usd},
            "monthly": {"spent_usd": round(spent_month, 10), "limit_usd": b.monthly_usd},
            "on_exceed": b.on_exceed,
            **_tag_budgets(b, tag_spent),
        },
        **({"alerts": found} if alerts is not None else {}),
    }


def _alerts(fetch, cfg: AlertsConfig, since: float | None, until: float | None, now: float) -> list[dict]:
    """Spend alerts for the periods in [since, until) (default: yesterday and today), each judged
    against the ``baseline_days`` before it (``alerts.py``)."""
    start = since if since is not None else day_start(now) - 86400
    end = until if until is not None else now + 1
    return spend_alerts(fetch(start - cfg.baseline_days * 86400, end), cfg, start, end)


def _breakdowns(rows: list[dict], dims: tuple[str, ...]) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for dim in dims:
        groups: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            groups[str(r[dim] if r.get(dim) is not None else "-")].append(r)
        out[dim] = {k: _summary(v) for k, v in sorted(groups.items())}
    return out


def _shared_report(data: DataDir, cfg: LLMConfig, state: StateConfig, since: float | None,
                   until: float | None, now: float, alerts: AlertsConfig | None) -> dict:
    """The team's spend from the shared state (state.backend: redis): this machine's unpublished
    rows are published first; the budget block is the team's (the shared counters)."""
    import sys

    from llmctl.llm.state import RedisState

    if state.backend != "redis":
        raise InputError("--shared reports the team's ledger from the shared state: set state.backend: redis")
    store = RedisState(state, data, lambda m: sys.stderr.write(f"warning: {m}\n"))
    try:
        rows = store.shared_rows(since, until, now)
        b = cfg.budget
        since_rows = {p: [r for r in store.shared_rows(start(now), None, now) if r["status"] == "ok"]
                      for p, start in (("daily", day_start), ("monthly", month_start))}
        spent = {p: sum(r["cost_usd"] or 0 for r in got) for p, got in since_rows.items()}
        tag_spent = {t: tuple(sum(r["cost_usd"] or 0 for r in since_rows[p] if r.get("tag") == t)
                              for p in ("daily", "monthly")) for t in b.tags}
        found = (_alerts(lambda a, b: store.shared_rows(a, b, now), alerts, since, until, now)
                 if alerts is not None else None)
    finally:
        store.close()
    return {
        "since": since, "until": until, "shared": store.where, "machines": len({r["machine"] for r in rows}),
        "ledgers": len({r["ledger"] for r in rows}),
        "totals": _summary(rows),
        "by": _breakdowns(rows, SHARED_DIMENSIONS),
        "budget": {
            "daily": {"spent_usd": round(spent["daily"], 10), "limit_usd": b.daily_usd},
            "monthly": {"spent_usd": round(spent["monthly"], 10), "limit_usd": b.monthly_usd},
            "on_exceed": b.on_exceed,
            **_tag_budgets(b, tag_spent),
        },
        **({"alerts": found} if found is not None else {}),
    }


def cache_stats(data: DataDir, now: float, *, clear: bool = False, prune: bool = False,
                shared: StateConfig | None = None, warn=lambda message: None) -> dict:
    """The answer cache's report; with ``shared`` (state.backend: redis) the team's cache in Redis,
    the one queries use (or, state.on_unavailable: local while Redis is down, this machine's)."""
    if shared is not None and shared.backend == "redis":
        from llmctl.llm.state import RedisCache, RedisState

        state = RedisState(shared, data, warn)
        try:
            return _cache_report(RedisCache(state), now, clear, prune,
                                 f"{state.where} (keys {shared.key_prefix}cache:*)", None)
        except state.errors as exc:
            state.refused_credentials(exc)
            if shared.on_unavailable != "local":
                from llmctl.errors import SharedStateUnavailable

                raise SharedStateUnavailable(
                    f"Shared state unreachable (Redis at {state.where}, {type(exc).__name__}): cannot report the "
                    "team's answer cache; start Redis, or set state.on_unavailable: local to see this machine's "
                    "cache file") from None
            warn(f"shared state unreachable (Redis at {state.where}): this machine's cache file is shown")
        finally:
            state.redis.close()
            state.local.close()
    path = data.cache
    if not path.exists():
        return {"path": str(path), "exists": False, "entries": 0}
    cache = ResponseCache(path)
    try:
        size = sum(p.stat().st_size for p in path.parent.glob("cache.sqlite*") if p.is_file()
                   and "corrupt" not in p.name)
        return _cache_report(cache, now, clear, prune, str(path), size)
    finally:
        cache.close()


def _cache_report(cache, now: float, clear: bool, prune: bool, where: str, size: int | None) -> dict:
    removed = {"cleared": cache.clear() if clear else 0, "pruned": cache.prune_expired(now) if prune else 0}
    stats = cache.stats()
    summary = cache.summary(now)

    def rate(kind: str) -> float | None:
        lookups = stats.get(f"lookups_{kind}", 0)
        return round(stats.get(f"hits_{kind}", 0) / lookups, 4) if lookups else None

    for field in ("oldest", "newest"):  # ISO 8601, UTC
        summary[field] = iso(summary[field])
    return {
        "path": where, "exists": True, **summary, "size_bytes": size,
        "lookups": {"exact": int(stats.get("lookups_exact", 0)),
                    "semantic": int(stats.get("lookups_semantic", 0))},
        "hits": {"exact": int(stats.get("hits_exact", 0)), "semantic": int(stats.get("hits_semantic", 0))},
        "hit_rate": {"exact": rate("exact"), "semantic": rate("semantic")},
        "saved": {"tokens": int(stats.get("saved_tokens", 0)), "usd": round(stats.get("saved_usd", 0), 8),
                  "unpriced_hits": int(stats.get("hits_unpriced", 0))},
        "invalidations": int(stats.get("invalidations", 0)),
        **removed,
    }
