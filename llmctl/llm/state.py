"""Where the LLM layer keeps what several callers share: the answer cache, budget reservations and
spend, rate-limit buckets, and the ledger (``state.backend``).

``StateBackend`` is what the gateway uses; ``open_state`` (called once, in ``Gateway.__init__``)
picks the implementation:

* ``LocalState`` (``sqlite``, the default): the files in ``data_dir`` -- ``ledger.sqlite``
  (reservations in one ``BEGIN IMMEDIATE`` transaction), ``cache.sqlite``, and the process's
  rate limiters. Limits hold for the processes of one machine that share a data dir.
* ``RedisState`` (``redis``): one Redis server for the team. Each machine's ledger stays local
  and complete; every row is also published to Redis (idempotently, from a watermark in the
  ledger, so rows written while Redis was down are published once it is back), and publishing
  a priced row adds its cost to the shared spend counters. A reservation is one Lua script --
  the spend plus the live reservations against every limit, then the hold, with its expiry --
  and its settlement (the row's cost in, the hold out) another, so N processes on any number
  of machines never exceed a budget. Rate limits are token buckets in Redis on the server's
  clock, and a 429's Retry-After pauses every machine. The answer cache's entries (exact and
  semantic) live in Redis with a TTL, indexed by chunk id so that an ingest anywhere
  invalidates them everywhere.

Redis unreachable or timing out: a call under a budget or a rate limit is refused with one line
(``SharedStateUnavailable``, exit 7) unless ``state.on_unavailable: local``, which says once on
stderr that limits are per machine and uses ``LocalState`` for them; the cache is a miss (never a
stale or wrong hit) and its writes are skipped. Every operation tries Redis again, so processes
recover by themselves when it is back (the scripts are loaded again after a restart).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import uuid
from pathlib import Path
from typing import Protocol

import numpy as np

from llmctl.config import BudgetConfig, ProviderConfig, StateConfig, redacted_url
from llmctl.datadir import DataDir
from llmctl.errors import ConfigError, SharedStateUnavailable
from llmctl.llm.cache import CacheHit, ResponseCache, retrieval_scope, same_question
from llmctl.llm.ledger import Ledger, Row, day_of
from llmctl.llm.ratelimit import Limiter, RateLimitWait, limiter_for
from llmctl.llm.store import CorruptFile
from llmctl.money import money

DAY_KEY_TTL = 3 * 86400
MONTH_KEY_TTL = 40 * 86400
ROWS_TTL = 400 * 86400  # the team's published ledger rows, for `cost-report --shared`
# A shared bucket refills a minute's allowance every 60.5 s: a request's time in transit to the
# provider (under half a second) cannot make it count more than the limit in a 60 s window.
SHARED_MINUTE_S = 60.5


class AnswerCache(Protocol):
    def get_exact(self, key: str, now: float, count: bool = True) -> CacheHit | None: ...

    def get_semantic(self, vector, question: str, scope: str, threshold: float, now: float,
                     chunk_ids: list[str] | None = None, count: bool = True) -> tuple[CacheHit | None, dict]: ...

    def put(self, key: str, scope: str, now: float, ttl_s: float, hit: CacheHit, chunk_ids: list[str],
            question: str | None, vector) -> None: ...

    def invalidate_chunks(self, chunk_ids: list[str]) -> int: ...

    def close(self) -> None: ...


class StateBackend(Protocol):
    ledger: Ledger  # this machine's, always complete

    def open_cache(self, now: float) -> AnswerCache: ...

    def over_budget(self, budget: BudgetConfig, estimate: float, now: float, tag: str | None) -> str | None: ...

    def reserve(self, budget: BudgetConfig, cost_usd: float, now: float, *, expires: float, tag: str | None,
                command: str | None, provider: str | None) -> tuple[str | None, str | None]: ...

    def release(self, reservation: str | None) -> None: ...

    def record(self, row: Row, ts: float, settles: str | None = None) -> None: ...

    def limiter(self, provider: ProviderConfig, clock) -> Limiter: ...

    def close(self) -> None: ...


def open_state(cfg: StateConfig | None, data: DataDir, warn) -> StateBackend:
    """The configured backend (``state.backend``); the one place it is chosen."""
    if cfg is not None and cfg.backend == "redis":
        return RedisState(cfg, data, warn)
    return LocalState(data, warn)


class LocalState:
    """SQLite files in the data dir and this process's rate limiters (one machine)."""

    def __init__(self, data: DataDir, warn):
        self.data = data
        self.warn = warn
        # shared: a GatewayPool uses each thread's files from that thread only, and closes them
        # all from the thread that closes the Workspace
        self.ledger = Ledger(self.data.ledger, shared=True)

    def open_cache(self, now: float) -> ResponseCache:
        path = self.data.cache
        try:
            return ResponseCache(path, shared=True)
        except CorruptFile:
            aside = path.with_name(f"cache.sqlite.corrupt-{int(now)}")
            path.rename(aside)
            for suffix in ("-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
            self.warn(f"the response cache {path} was unreadable; moved it to {aside.name} "
                      "and started an empty one")
            return ResponseCache(path, shared=True)

    def over_budget(self, budget, estimate, now, tag):
        return self.ledger.over_budget(budget, estimate, now, tag)

    def reserve(self, budget, cost_usd, now, *, expires, tag, command, provider):
        return self.ledger.reserve(budget, cost_usd, now, expires=expires, tag=tag, command=command,
                                   provider=provider)

    def release(self, reservation):
        self.ledger.release(reservation)

    def record(self, row, ts, settles=None):
        self.ledger.record(row, ts, settles=settles)

    def limiter(self, provider, clock):
        return limiter_for(provider, clock)

    def close(self):
        self.ledger.close()


# -- Redis ---------------------------------------------------------------------------------
# Budget limits: KEYS are (spend counter, holds hash) pairs, one per limit; a hold is
# "cost|expires" under the reservation's id. Expired holds are dropped as they are met.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local id, cost, hold, check = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local n = #KEYS / 2
for i = 1, n do
  local held = 0
  local h = redis.call('HGETALL', KEYS[2 * i])
  for j = 1, #h, 2 do
    local c, e = string.match(h[j + 1], '^([^|]+)|(.+)$')
    if tonumber(e) <= now then redis.call('HDEL', KEYS[2 * i], h[j]) else held = held + tonumber(c) end
  end
  local spent = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  if spent + held + cost > tonumber(ARGV[4 + i]) then
    return {i, tostring(spent), tostring(held)}
  end
end
if not check then
  for i = 1, n do
    redis.call('HSET', KEYS[2 * i], id, tostring(cost) .. '|' .. tostring(now + hold))
    redis.call('EXPIRE', KEYS[2 * i], tonumber(ARGV[4 + n + i]))
  end
end
return {0}
"""

# One ledger row: stored once under its field (a row published twice counts once); a priced row
# adds its cost to the spend counters (KEYS[2 .. 1 + nspend]) and its reservation's holds (the
# remaining KEYS) are dropped in the same step, so the budget never sees neither.
_PUBLISH = """
local field, row, cost, rid, nspend = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
if redis.call('HSETNX', KEYS[1], field, row) == 1 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
  if cost > 0 then
    for i = 2, 1 + nspend do
      redis.call('INCRBYFLOAT', KEYS[i], cost)
      redis.call('EXPIRE', KEYS[i], tonumber(ARGV[5 + i]))
    end
  end
end
if rid ~= '' then
  for i = 2 + nspend, #KEYS do redis.call('HDEL', KEYS[i], rid) end
end
return 1
"""

_RELEASE = """
for i = 1, #KEYS do redis.call('HDEL', KEYS[i], ARGV[1]) end
return 1
"""

# Rate limits: token buckets (level, at) on the server's clock and a pause until a time.
# ARGV: requests rate/s, capacity, tokens rate/s, capacity, tokens needed (a rate of 0: no limit).
# Returns the seconds to wait (as a string), '0' once the request was taken.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local wait = 0
local paused = tonumber(redis.call('GET', KEYS[3]) or '0')
if paused > now then wait = paused - now end
local specs = {{KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), 1},
               {KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}}
local levels = {}
for i, s in ipairs(specs) do
  if s[2] > 0 then
    local v = redis.call('HMGET', s[1], 'level', 'at')
    local level, at = tonumber(v[1]), tonumber(v[2])
    if level == nil then level, at = s[3], now end
    level = math.min(s[3], level + math.max(0, now - at) * s[2])
    levels[i] = level
    local short = math.min(s[4], s[3]) - level
    if short > 0 then wait = math.max(wait, short / s[2]) end
  end
end
if wait > 1e-6 then return tostring(wait) end
for i, s in ipairs(specs) do
  if s[2] > 0 then
    redis.call('HSET', s[1], 'level', tostring(levels[i] - s[4]), 'at', tostring(now))
    redis.call('EXPIRE', s[1], 3600)
  end
end
return '0'
"""

_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local until_ = now + tonumber(ARGV[1])
if until_ > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], tostring(until_), 'EX', math.ceil(tonumber(ARGV[1])) + 1)
end
return 1
"""

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(warn, message: str) -> None:
    """Once per process: every gateway of serve or eval would say it again."""
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    warn(message)


class RedisState:
    """One Redis server shared by the team; the ledger stays local (see the module doc)."""

    def __init__(self, cfg: StateConfig, data: DataDir, warn):
        import redis  # only with state.backend: redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.cfg = cfg
        self.warn = warn
        self.local = LocalState(data, warn)  # the ledger, and limits when Redis is down (on_unavailable: local)
        self.ledger = self.local.ledger
        self.errors = (redis.RedisError, OSError)
        password = None
        if cfg.password_env:
            password = os.environ.get(cfg.password_env)
            if password is None:
                raise ConfigError(f"state.password_env names {cfg.password_env}, which is not set "
                                  "(the Redis password is read from that environment variable)")
        # One retry without waiting: a pooled connection that died with a restarted server is
        # replaced at once; a server that is down fails fast (connection refused) or within timeout.
        self.redis = redis.Redis.from_url(cfg.url, password=password, socket_timeout=cfg.timeout,
                                          socket_connect_timeout=cfg.timeout, retry=Retry(NoBackoff(), 1),
                                          health_check_interval=30)
        self.p = cfg.key_prefix
        self.where = redacted_url(cfg.url)
        self._reserve = self.redis.register_script(_RESERVE)
        self._publish_row = self.redis.register_script(_PUBLISH)
        self._release = self.redis.register_script(_RELEASE)
        self.take = self.redis.register_script(_TAKE)
        self.pause_script = self.redis.register_script(_PAUSE)
        self._holds: dict[str, list[str]] = {}  # reservation -> the holds keys it is under
        self._uid: str | None = None
        self.machine = socket.gethostname()

    # -- when Redis is down --------------------------------------------------------------
    def refused_credentials(self, exc: Exception) -> None:
        """Raise a config error if Redis refused the password: Redis is up, the password is wrong, so
        neither waiting nor on_unavailable: local is the fix (the cache, budgets and reports alike)."""
        from redis import exceptions as rx

        if isinstance(exc, (rx.AuthenticationError, rx.AuthorizationError, rx.NoPermissionError)) or (
                isinstance(exc, rx.ResponseError) and str(exc).startswith(("WRONGPASS", "NOAUTH", "NOPERM"))):
            where = (f"the password in ${self.cfg.password_env} (state.password_env)" if self.cfg.password_env
                     else "state.password_env (name the variable that holds the Redis password)")
            raise ConfigError(f"Redis at {self.where} refused llmctl's credentials ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:120]}): check {where}") from None

    def unavailable(self, what: str, exc: Exception) -> None:
        """Raise, or (on_unavailable: local) say once that limits are per machine and return."""
        self.refused_credentials(exc)
        why = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if self.cfg.on_unavailable == "local":
            _warn_once(self.warn, f"shared state unreachable (Redis at {self.where}): budgets and rate limits "
                                  "are per machine until it is back (state.on_unavailable: local)")
            return
        raise SharedStateUnavailable(
            f"Shared state unreachable (Redis at {self.where}, {why}): the {what} cannot be held across "
            "machines, so no model was called; start Redis, or set state.on_unavailable: local to keep "
            "limits per machine meanwhile")

    # -- budgets -------------------------------------------------------------------------
    def _limits(self, budget: BudgetConfig, now: float, tag: str | None) -> list[tuple[str, float, str, int]]:
        """(label, limit, key suffix, ttl) of every limit a call tagged ``tag`` falls under."""
        day, month = day_of(now), day_of(now)[:7]
        out = [("daily", budget.daily_usd, f"d:{day}", DAY_KEY_TTL),
               ("monthly", budget.monthly_usd, f"m:{month}", MONTH_KEY_TTL)]
        if tag and tag in budget.tags:
            t = budget.tags[tag]
            out += [(f"daily (tag {tag})", t.daily_usd, f"d:{day}:tag:{tag}", DAY_KEY_TTL),
                    (f"monthly (tag {tag})", t.monthly_usd, f"m:{month}:tag:{tag}", MONTH_KEY_TTL)]
        return [x for x in out if x[1] is not None]

    def _hold(self, budget, cost_usd, now, tag, *, rid: str, hold_s: float, check: bool):
        limits = self._limits(budget, now, tag)
        if not limits:
            return None, None
        keys = [k for _, _, s, _ in limits for k in (f"{self.p}spend:{s}", f"{self.p}holds:{s}")]
        args = [rid, repr(cost_usd), repr(hold_s), "1" if check else "0", *(repr(x[1]) for x in limits),
                *(x[3] for x in limits)]
        got = self._reserve(keys=keys, args=args)
        if int(got[0]) == 0:
            return keys[1::2], None
        label, limit = limits[int(got[0]) - 1][:2]
        spent, held = float(got[1]), float(got[2])
        busy = f", {money(held)} more held by calls in progress" if held else ""
        return None, f"{label} budget: spent {money(spent)} of {money(limit)}{busy}"

    def over_budget(self, budget, estimate, now, tag):
        try:
            return self._hold(budget, estimate, now, tag, rid="", hold_s=0, check=True)[1]
        except self.errors as exc:
            self.unavailable("budget", exc)
            return self.local.over_budget(budget, estimate, now, tag)

    def reserve(self, budget, cost_usd, now, *, expires, tag, command, provider):
        rid = "r-" + uuid.uuid4().hex
        try:
            holds, over = self._hold(budget, cost_usd, now, tag, rid=rid, hold_s=max(1.0, expires - now),
                                     check=False)
        except self.errors as exc:
            self.unavailable("budget", exc)
            return self.local.reserve(budget, cost_usd, now, expires=expires, tag=tag, command=command,
                                      provider=provider)
        if over:
            return None, over
        self._holds[rid] = holds or []
        return rid, None

    def release(self, reservation):
        if reservation is None:
            return
        holds = self._holds.pop(reservation, None)
        if holds is None:  # made locally while Redis was down
            self.local.release(reservation)
            return
        try:
            self._release(keys=holds, args=[reservation])
        except self.errors:
            pass  # it expires by itself; until then it holds, which errs toward refusing

    # -- the ledger ----------------------------------------------------------------------
    def record(self, row, ts, settles=None):
        holds = self._holds.pop(settles, None) if settles is not None else None
        own = self.ledger.record(row, ts, settles=settles if holds is None else None)
        self.publish(settling=(own, settles, holds) if holds is not None else None)

    def publish(self, settling: tuple[int, str, list[str]] | None = None) -> int:
        """Publish this ledger's unpublished rows (all of them, in order); ``settling``: (row id,
        reservation, holds) -- that row's publication drops the reservation in the same step.
        Redis down: nothing is lost, the rows wait for the next call (the hold expires)."""
        published = 0
        try:
            if self._uid is None:
                self._uid = self.ledger.uid()
            while True:
                rows = self.ledger.unpublished()
                if settling is not None and not any(r["id"] == settling[0] for r in rows):
                    self._release(keys=settling[2], args=[settling[1]])  # another process published it
                    settling = None
                if not rows:
                    return published
                for r in rows:
                    mine = settling is not None and r["id"] == settling[0]
                    self._publish(r, settling[1] if mine else "", settling[2] if mine else [])
                    settling = None if mine else settling
                self.ledger.mark_published(rows[-1]["id"])
                published += len(rows)
        except self.errors:
            return published

    def _publish(self, r: dict, rid: str, holds: list[str]) -> None:
        day, month = r["day"], r["day"][:7]
        spend = [(f"{self.p}spend:d:{day}", DAY_KEY_TTL), (f"{self.p}spend:m:{month}", MONTH_KEY_TTL)]
        if r["tag"]:
            spend += [(f"{self.p}spend:d:{day}:tag:{r['tag']}", DAY_KEY_TTL),
                      (f"{self.p}spend:m:{month}:tag:{r['tag']}", MONTH_KEY_TTL)]
        cost = r["cost_usd"] if r["status"] == "ok" and r["cost_usd"] else 0.0
        data = {**{k: v for k, v in r.items() if k != "question"}, "machine": self.machine, "ledger": self._uid}
        self._publish_row(keys=[f"{self.p}ledger:{day}", *(k for k, _ in spend), *holds],
                          args=[f"{self._uid}:{r['id']}", json.dumps(data), repr(cost), rid, len(spend),
                                ROWS_TTL, *(t for _, t in spend)])

    def shared_rows(self, since: float | None, until: float | None, now: float) -> list[dict]:
        """Every published row of the team in [since, until) (``cost-report --shared``)."""
        first = since if since is not None else now - ROWS_TTL
        last = min(until if until is not None else now + 86400, now + 86400)
        days, t = [], first
        while t < last:
            days.append(day_of(t))
            t += 86400
        try:
            self.publish()  # this machine's rows first
            pipe = self.redis.pipeline(transaction=False)
            for d in days:
                pipe.hvals(f"{self.p}ledger:{d}")
            out = [json.loads(v) for vals in pipe.execute() for v in vals]
        except self.errors as exc:
            self.refused_credentials(exc)
            raise SharedStateUnavailable(f"Shared state unreachable (Redis at {self.where}, {exc}): cannot "
                                         "report the team's spend; `cost-report` without --shared reports "
                                         "this machine's ledger") from None
        return sorted((r for r in out if (since is None or r["ts"] >= since) and (until is None or r["ts"] < until)),
                      key=lambda r: (r["ts"], r["machine"], r["id"]))

    # -- rate limits and the cache -------------------------------------------------------
    def limiter(self, provider, clock):
        if not (provider.requests_per_minute or provider.tokens_per_minute):
            return limiter_for(provider, clock)  # nothing to share
        return SharedLimiter(self, provider, clock)

    def open_cache(self, now):
        return RedisCache(self)

    def close(self):
        self.publish()
        self.local.close()
        self.redis.close()


class SharedLimiter(Limiter):
    """A provider's rate limits for every machine: the buckets and the pause live in Redis."""

    def __init__(self, state: RedisState, provider: ProviderConfig, clock):
        super().__init__(provider.name, provider.requests_per_minute, provider.tokens_per_minute, clock)
        self.state = state
        self.provider = provider
        ident = hashlib.sha256(f"{provider.base_url}\0{provider.model}".encode()).hexdigest()[:16]
        base = f"{state.p}rate:{provider.name}:{ident}"
        self.keys = [f"{base}:requests", f"{base}:tokens", f"{base}:pause"]

    def acquire(self, tokens: int, deadline: float) -> None:
        p = self.provider
        rpm, tpm = p.requests_per_minute or 0, p.tokens_per_minute or 0
        args = [repr(rpm / SHARED_MINUTE_S), repr(max(1.0, rpm / SHARED_MINUTE_S)),
                repr(tpm / SHARED_MINUTE_S), repr(max(1.0, tpm / SHARED_MINUTE_S)), tokens]
        while True:
            try:
                wait = float(self.state.take(keys=self.keys, args=args))
            except self.state.errors as exc:
                self.state.unavailable("rate limit", exc)
                return limiter_for(p, self.clock).acquire(tokens, deadline)
            if wait < 1e-6:
                return
            now = self.clock.monotonic()
            self.waited += min(wait, 1.0)
            if now + wait > deadline:
                raise RateLimitWait(self.name, wait)
            self.clock.sleep(min(wait, 1.0))

    def pause(self, seconds: float) -> None:
        try:
            self.state.pause_script(keys=self.keys[2:], args=[repr(float(seconds))])
        except self.state.errors:
            limiter_for(self.provider, self.clock).pause(seconds)  # this machine holds off at least


class RedisCache:
    """The answer cache's entries in Redis: a hash per entry with a TTL, a set per chunk (so an
    ingest anywhere invalidates them) and per retrieval scope (the semantic candidates)."""

    def __init__(self, state: RedisState):
        self.state = state
        self.r = state.redis
        self.p = state.p + "cache:"

    def _bump(self, pipe, **deltas: float) -> None:
        for name, delta in deltas.items():
            if delta:
                pipe.hincrbyfloat(self.p + "stats", name, delta)

    def _hit(self, key: str, e: dict, kind: str, similarity: float | None = None,
             question: str | None = None) -> CacheHit:
        usage = json.loads(e[b"usage"])
        cost = float(e[b"cost_usd"]) if e.get(b"cost_usd") else None
        tokens = (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
        try:
            pipe = self.r.pipeline(transaction=False)
            self._bump(pipe, **{f"hits_{kind}": 1, "saved_usd": cost or 0, "saved_tokens": tokens,
                                "hits_unpriced": 1 if cost is None else 0})
            pipe.execute()
        except self.state.errors:
            pass
        return CacheHit(key, kind, e[b"answer"].decode(), e[b"provider"].decode(), e[b"model"].decode(), usage,
                        cost, json.loads(e[b"sources"]), similarity, question)

    def get_exact(self, key, now, count=True):
        try:
            if count:
                self.r.hincrbyfloat(self.p + "stats", "lookups_exact", 1)
            e = self.r.hgetall(self.p + "e:" + key)
        except self.state.errors as exc:
            _warn_once(self.state.warn, _cache_off(self.state, exc))
            return None
        return self._hit(key, e, "exact") if e else None

    def get_semantic(self, vector, question, scope, threshold, now, chunk_ids=None, count=True):
        try:
            if count:
                self.r.hincrbyfloat(self.p + "stats", "lookups_semantic", 1)
            keys = sorted(k.decode() for k in self.r.smembers(self.p + "s:" + retrieval_scope(scope, chunk_ids)))
            pipe = self.r.pipeline(transaction=False)
            for k in keys:
                pipe.hgetall(k)
            entries = pipe.execute()
        except self.state.errors as exc:
            _warn_once(self.state.warn, _cache_off(self.state, exc))
            return None, {}
        candidates = []
        for k, e in zip(keys, entries, strict=True):
            if e:  # an empty entry: expired or invalidated
                asked = e[b"question"].decode() if e.get(b"question") else None
                candidates.append(((k, e, asked), e.get(b"embedding"), asked))
        match, refused = same_question(candidates, vector, question, threshold)
        if match is None:
            return None, refused
        (k, e, asked), sim = match
        return self._hit(k[len(self.p) + 2:], e, "semantic", sim, asked), {}

    def put(self, key, scope, now, ttl_s, hit, chunk_ids, question, vector):
        entry = self.p + "e:" + key
        fields = {"provider": hit.provider, "model": hit.model, "answer": hit.answer,
                  "usage": json.dumps(hit.usage), "cost_usd": "" if hit.cost_usd is None else repr(hit.cost_usd),
                  "sources": json.dumps(hit.sources), "created": repr(now), "chunks": json.dumps(chunk_ids),
                  "question": question or "",
                  "embedding": vector.astype(np.float32).tobytes() if vector is not None else b""}
        ttl = max(1, int(ttl_s))
        try:
            pipe = self.r.pipeline(transaction=True)
            pipe.delete(entry)
            pipe.hset(entry, mapping=fields)
            pipe.expire(entry, ttl)
            for c in chunk_ids:
                pipe.sadd(self.p + "c:" + c, entry)
                pipe.expire(self.p + "c:" + c, ttl, gt=True)
                pipe.expire(self.p + "c:" + c, ttl, nx=True)
            if vector is not None:
                s = self.p + "s:" + retrieval_scope(scope, chunk_ids)
                pipe.sadd(s, entry)
                pipe.expire(s, ttl, gt=True)
                pipe.expire(s, ttl, nx=True)
            pipe.execute()
        except self.state.errors as exc:
            _warn_once(self.state.warn, _cache_off(self.state, exc))

    def invalidate_chunks(self, chunk_ids):
        """Drop, for every machine, the entries built from any of these chunks; returns how many."""
        dropped = 0
        for i in range(0, len(chunk_ids), 500):
            part = [self.p + "c:" + c for c in chunk_ids[i:i + 500]]
            pipe = self.r.pipeline(transaction=False)
            for c in part:
                pipe.smembers(c)
            entries = sorted({e for members in pipe.execute() for e in members})
            if entries:
                dropped += self.r.delete(*entries)
            self.r.delete(*part)
        if dropped:
            self.r.hincrbyfloat(self.p + "stats", "invalidations", dropped)
        return dropped

    # -- llmctl cache-stats: the same report as the local file's -------------------------------
    def _keys(self, kind: str) -> list[bytes]:
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self.p) + kind + ":*"  # the prefix taken literally
        return list(self.r.scan_iter(match=pattern, count=1000))

    def stats(self) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.r.hgetall(self.p + "stats").items()}

    def summary(self, now: float) -> dict:
        """Entries live in Redis only until their TTL: none is ever expired but still stored."""
        keys = self._keys("e")
        pipe = self.r.pipeline(transaction=False)
        for k in keys:
            pipe.hget(k, "created")
            pipe.hstrlen(k, "embedding")
        got = pipe.execute() if keys else []
        created = [float(c) for c in got[0::2] if c]
        return {"entries": len(keys), "live": len(keys), "expired": 0,
                "semantic_entries": sum(1 for n in got[1::2] if n), "oldest": min(created, default=None),
                "newest": max(created, default=None)}

    def clear(self) -> int:
        """Every cached answer of the team, with the chunk and scope sets that point to them."""
        entries = self._keys("e")
        for keys in (entries, self._keys("c"), self._keys("s")):
            for i in range(0, len(keys), 500):
                self.r.delete(*keys[i:i + 500])
        return len(entries)

    def prune_expired(self, now: float) -> int:
        return 0  # Redis drops an entry when its TTL ends

    def close(self):
        pass


def _cache_off(state: RedisState, exc: Exception) -> str:
    state.refused_credentials(exc)  # a wrong password is not an outage to wait out
    return (f"shared answer cache unreachable (Redis at {state.where}: {type(exc).__name__}); answers are "
            "not served from or saved to it until it is back")


def invalidate_answers(cfg: StateConfig, data: DataDir, chunk_ids: list[str], warn) -> int:
    """Drop the cached answers built from these chunks (an ingest changed or deleted them): the
    local cache file's and, with state.backend: redis, the team's. Chunk ids change with their
    text, so an entry missed here (Redis down) cannot be a wrong hit: it expires with its TTL."""
    if not chunk_ids:
        return 0
    dropped = 0
    path = data.cache
    if path.exists():
        cache = ResponseCache(path)
        try:
            dropped += cache.invalidate_chunks(chunk_ids)
        finally:
            cache.close()
    if cfg.backend == "redis":
        state = RedisState(cfg, data, warn)
        try:
            dropped += RedisCache(state).invalidate_chunks(chunk_ids)
        except state.errors as exc:
            warn(f"{_cache_off(state, exc)}; its entries built from the {len(chunk_ids)} changed chunk(s) "
                 "cannot be served (their ids changed) and expire with their TTL")
        finally:
            state.close()
    return dropped
