"""The call ledger: one SQLite row per attempt (success, failure, retry, cache hit, refusal).

Budgets hold across threads and processes through *reservations*: before a model call its
worst-case cost is reserved (``reserve``: one ``BEGIN IMMEDIATE`` transaction that counts the
spend and the live reservations against every limit, then inserts the reservation), and after
it the reservation is replaced by the call's row (``record(..., settles=...)``) or dropped
(``release``). A caller that dies in between leaves a reservation that stops counting at its
``expires`` time and is deleted by the next ``reserve``.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    ts REAL NOT NULL,             -- when it was made: the day and month it counts in
    expires REAL NOT NULL,        -- from then on it is ignored (its caller died) and deleted
    cost_usd REAL NOT NULL,       -- the worst case held: prompt tokens + max_tokens of answer
    tag TEXT,
    command TEXT,
    provider TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,        -- uid: this ledger's id among the team's; published: rows up to this id
    value TEXT NOT NULL           -- were published to the shared state (state.backend: redis)
);
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

    def record(self, row: Row, ts: float, settles: str | None = None) -> int:
        """Add ``row``; ``settles``: the reservation it replaces, in the same transaction. Returns its id."""
        with self._transaction("the call was not recorded"):
            if settles is not None:
                self.db.execute("DELETE FROM reservations WHERE id = ?", (settles,))
            return self._insert([row], ts)

    def _insert(self, rows: list[Row], ts: float) -> int:
        rowid = 0
        for row in rows:
            data = asdict(row)
            cols = ", ".join(["ts", "day", *data])
            marks = ", ".join("?" * (len(data) + 2))
            rowid = self.db.execute(f"INSERT INTO calls ({cols}) VALUES ({marks})",
                                    [ts, day_of(ts), *data.values()]).lastrowid
        return rowid

    # -- publishing to the shared state (llmctl/llm/state.py) --------------------------
    def uid(self) -> str:
        """This ledger's id, made once: its rows are told apart from other machines' by it."""
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('uid', ?)", (uuid.uuid4().hex,))
        return self.db.execute("SELECT value FROM meta WHERE name = 'uid'").fetchone()[0]

    def unpublished(self, limit: int = 500) -> list[dict]:
        """The oldest rows not yet published to the shared state, oldest first."""
        done = self.db.execute("SELECT value FROM meta WHERE name = 'published'").fetchone()
        cur = self.db.execute("SELECT * FROM calls WHERE id > ? ORDER BY id LIMIT ?",
                              (int(done[0]) if done else 0, limit))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def mark_published(self, upto: int) -> None:
        self.db.execute("INSERT INTO meta VALUES ('published', ?) ON CONFLICT(name) DO UPDATE SET "
                        "value = MAX(CAST(value AS INTEGER), excluded.value)", (upto,))

    def reserve(self, budget, cost_usd: float, now: float, *, expires: float, tag: str | None = None,
                key: str | None = None, command: str | None = None,
                provider: str | None = None) -> tuple[str | None, str | None]:
        """Hold ``cost_usd`` against every limit of ``budget`` (an llm.budget section; ``tag``'s
        limits included) until it is settled, released or ``expires``: (reservation id, None), or
        (None, why) when the spend and the live reservations leave no room for it.

        One ``BEGIN IMMEDIATE`` transaction: of all threads and processes using this ledger, one
        at a time checks and reserves, so limits hold however many call at once. ``key``: the
        reservation's id (a batch job's, to be settled by a later run; one of a run that died before
        its job existed is replaced); a random one by default."""
        with self._transaction("nothing was reserved, so no model was called"):
            self.db.execute("DELETE FROM reservations WHERE expires <= ? OR id = ?", (now, key))
            over = self.over_budget(budget, cost_usd, now, tag)
            if over:
                return None, over
            rid = key or uuid.uuid4().hex
            self.db.execute("INSERT OR REPLACE INTO reservations VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (rid, now, expires, cost_usd, tag, command, provider))
            return rid, None

    def release(self, reservation: str | None) -> None:
        """Drop a reservation whose call cost nothing (it failed, or was never sent)."""
        if reservation is not None:
            with self._transaction("a reservation was not released; it will expire"):
                self.db.execute("DELETE FROM reservations WHERE id = ?", (reservation,))

    @contextmanager
    def _transaction(self, consequence: str) -> Iterator[None]:
        """A write transaction that waits (the busy timeout) for other writers; errors in one line."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:  # locked past the busy timeout, disk full, ...
            raise self._unwritable(exc, consequence) from None
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._unwritable(exc, consequence) from None
            raise

    def _unwritable(self, exc: sqlite3.Error, consequence: str) -> IndexStateError:
        return IndexStateError(f"Cannot write to the ledger {self.path} ({exc}): {consequence}; check the "
                               "disk and other llmctl processes")

    def spent(self, since_ts: float, tag: str | None = None) -> float:
        sql = "SELECT COALESCE(SUM(cost_usd), 0) FROM calls WHERE ts >= ?"
        args: list = [since_ts]
        if tag is not None:
            sql += " AND tag = ?"
            args.append(tag)
        return float(self.db.execute(sql, args).fetchone()[0])

    def reserved(self, since_ts: float, now: float, tag: str | None = None) -> float:
        """USD held by live (unexpired) reservations made since ``since_ts``."""
        sql = "SELECT COALESCE(SUM(cost_usd), 0) FROM reservations WHERE ts >= ? AND expires > ?"
        args: list = [since_ts, now]
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
        """'daily budget: spent $x of $y' when adding ``estimate`` USD to the spend and the live
        reservations would break a limit of ``budget`` (an llm.budget section), its tag's limits
        included; else None. A check only: ``reserve`` checks and holds in one transaction."""
        checks = [("daily", budget.daily_usd, day_start(now), None),
                  ("monthly", budget.monthly_usd, month_start(now), None)]
        if tag and tag in budget.tags:
            t = budget.tags[tag]
            checks += [(f"daily (tag {tag})", t.daily_usd, day_start(now), tag),
                       (f"monthly (tag {tag})", t.monthly_usd, month_start(now), tag)]
        for label, limit, since, only in checks:
            if limit is not None:
                spent, held = self.spent(since, only), self.reserved(since, now, only)
                if spent + held + estimate > limit:
                    busy = f", {money(held)} more held by calls in progress" if held else ""
                    return f"{label} budget: spent {money(spent)} of {money(limit)}{busy}"
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

    def collect_batch(self, batch_id: str, rows: list[Row], ts: float, settles: str | None) -> None:
        """A finished job's items as rows, replacing its reservation, and the job marked collected:
        one transaction, so a run stopped here records them again or not at all, never twice."""
        with self._transaction("the batch job's results were not recorded; run again to collect them"):
            self.db.execute("DELETE FROM reservations WHERE id = ?", (settles,))
            self._insert(rows, ts)
            self.db.execute("UPDATE batches SET status = 'collected' WHERE id = ?", (batch_id,))

    def batch_status(self, batch_id: str, status: str) -> None:
        self.db.execute("UPDATE batches SET status = ? WHERE id = ?", (status, batch_id))

    def close(self) -> None:
        self.db.close()
