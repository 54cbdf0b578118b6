"""The call ledger: one SQLite row per attempt (success, failure, retry, cache hit, refusal)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from llmctl.errors import IndexStateError
from llmctl.llm.store import connect
from llmctl.money import money
from llmctl.stats import day_start, month_start

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    day TEXT NOT NULL,
    command TEXT NOT NULL,
    request_id TEXT NOT NULL,
    provider TEXT,
    model TEXT,
    tokens_in INTEGER,
    tokens_out INTEGER,
    usage_source TEXT,
    cost_usd REAL,
    latency_ms REAL,
    status TEXT NOT NULL,
    error_class TEXT,
    attempt INTEGER,
    cache TEXT,
    similarity REAL,
    saved_usd REAL,
    tag TEXT,
    route TEXT,
    question TEXT
);
CREATE INDEX IF NOT EXISTS calls_ts ON calls(ts);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,          -- the provider's batch id
    fingerprint TEXT NOT NULL,    -- provider, model, parameters and every request's key
    command TEXT NOT NULL,
    provider TEXT NOT NULL,
    created REAL NOT NULL,
    status TEXT NOT NULL,         -- submitted | collected (its items are in `calls`) | a terminal failure
    requests INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_fingerprint ON batches(fingerprint);
"""


@dataclass
class Row:
    command: str
    request_id: str
    status: str  # ok | error | cache_hit | refused
    provider: str | None = None
    model: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    usage_source: str | None = None  # provider | estimated
    cost_usd: float | None = None  # None: price unknown
    latency_ms: float | None = None
    error_class: str | None = None
    attempt: int | None = None
    cache: str | None = None  # exact | semantic
    similarity: float | None = None
    saved_usd: float | None = None
    tag: str | None = None
    route: str | None = None
    question: str | None = None


def day_of(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


class Ledger:
    def __init__(self, path: Path, shared: bool = False):
        self.path = path
        self.db = connect(path, SCHEMA, "ledger", shared=shared)  # shared: the caller serialises threads

    def record(self, row: Row, ts: float) -> None:
        data = asdict(row)
        cols = ", ".join(["ts", "day", *data])
        marks = ", ".join("?" * (len(data) + 2))
        try:
            self.db.execute(f"INSERT INTO calls ({cols}) VALUES ({marks})", [ts, day_of(ts), *data.values()])
        except sqlite3.Error as exc:  # locked past the busy timeout, disk full, ...
            raise IndexStateError(f"Cannot write to the ledger {self.path} ({exc}): the call was not "
                                  "recorded; check the disk and other llmctl processes") from None

    def spent(self, since_ts: float, tag: str | None = None) -> float:
        sql = "SELECT COALESCE(SUM(cost_usd), 0) FROM calls WHERE ts >= ?"
        args: list = [since_ts]
        if tag is not None:
            sql += " AND tag = ?"
            args.append(tag)
        return float(self.db.execute(sql, args).fetchone()[0])

    def rows(self, since_ts: float | None = None, until_ts: float | None = None) -> list[dict]:
        sql, args = "SELECT * FROM calls WHERE 1=1", []
        if since_ts is not None:
            sql += " AND ts >= ?"
            args.append(since_ts)
        if until_ts is not None:
            sql += " AND ts < ?"
            args.append(until_ts)
        cur = self.db.execute(sql + " ORDER BY ts, id", args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def over_budget(self, budget, estimate: float, now: float, tag: str | None = None) -> str | None:
        """'daily budget: spent $x of $y' when adding ``estimate`` USD would break a limit of
        ``budget`` (an llm.budget section), its tag's limits included; else None."""
        checks = [("daily", budget.daily_usd, day_start(now), None),
                  ("monthly", budget.monthly_usd, month_start(now), None)]
        if tag and tag in budget.tags:
            t = budget.tags[tag]
            checks += [(f"daily (tag {tag})", t.daily_usd, day_start(now), tag),
                       (f"monthly (tag {tag})", t.monthly_usd, month_start(now), tag)]
        for label, limit, since, only in checks:
            if limit is not None:
                spent = self.spent(since, only)
                if spent + estimate > limit:
                    return f"{label} budget: spent {money(spent)} of {money(limit)}"
        return None

    def batch_for(self, fingerprint: str) -> tuple[str, str] | None:
        """(id, status) of the newest batch job for exactly these requests that can still deliver."""
        return self.db.execute(
            "SELECT id, status FROM batches WHERE fingerprint = ? AND status IN ('submitted', 'collected') "
            "ORDER BY created DESC LIMIT 1", (fingerprint,)).fetchone()

    def save_batch(self, batch_id: str, fingerprint: str, command: str, provider: str, requests: int,
                   ts: float) -> None:
        self.db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, 'submitted', ?)",
                        (batch_id, fingerprint, command, provider, ts, requests))

    def batch_status(self, batch_id: str, status: str) -> None:
        self.db.execute("UPDATE batches SET status = ? WHERE id = ?", (status, batch_id))

    def close(self) -> None:
        self.db.close()
