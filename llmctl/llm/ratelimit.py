"""Client-side rate limits per provider, shared by every thread of the process.

A provider's ``requests_per_minute`` and ``tokens_per_minute`` are two token buckets that
refill continuously. Each holds one second's worth (at least one request), because providers
enforce per-minute limits over shorter windows: a burst of a whole minute's requests at once
is refused even when the minute's total is allowed. A request larger than its bucket waits
for a full bucket and leaves it in debt, so the long-run rate still holds. A request's tokens
are its prompt plus ``max_answer_tokens``, which is what providers count when it arrives.

The server's word wins over the configuration: a 429's ``Retry-After`` pauses every caller of
that provider, not only the one that got it, and ``x-ratelimit-remaining-*`` running out
pauses them until ``x-ratelimit-reset-*``.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Mapping

from llmctl.errors import ProviderError


class RateLimitWait(ProviderError):
    """A provider's rate limit would hold the request past llm.deadline: nothing was sent, and the
    gateway moves on to the next provider; with none left, this is the error."""

    def __init__(self, provider: str, wait: float):
        super().__init__(f"Gave up: provider '{provider}' is rate limited for {wait:.0f} s more, past llm.deadline: "
                         "raise llm.deadline, lower the request rate, or add a fallback provider")
        self.provider, self.wait = provider, wait


class _Bucket:
    def __init__(self, per_minute: float, now: float):
        self.rate = per_minute / 60
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.at = now

    def wait(self, n: float, now: float) -> float:
        """Seconds until ``n`` may be taken (a request larger than the bucket needs it full)."""
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now
        short = min(n, self.capacity) - self.level
        return short / self.rate if short > 0 else 0.0


class Limiter:
    def __init__(self, name: str, requests_per_minute: float | None, tokens_per_minute: float | None, clock):
        self.name = name
        self.clock = clock
        now = clock.monotonic()
        self.requests = _Bucket(requests_per_minute, now) if requests_per_minute else None
        self.tokens = _Bucket(tokens_per_minute, now) if tokens_per_minute else None
        self.paused_until = 0.0
        self.waited = 0.0  # seconds callers spent waiting here, for reports
        self._lock = threading.Lock()

    def acquire(self, tokens: int, deadline: float) -> None:
        """Block until one request of ``tokens`` may be sent; raise if that is past ``deadline``."""
        while True:
            with self._lock:
                now = self.clock.monotonic()
                wait = max(self.paused_until - now,
                           self.requests.wait(1, now) if self.requests else 0.0,
                           self.tokens.wait(tokens, now) if self.tokens else 0.0)
                if wait < 1e-6:  # not a rounding error's wait, which a sleep could not end
                    if self.requests:
                        self.requests.level -= 1
                    if self.tokens:
                        self.tokens.level -= tokens
                    return
                self.waited += min(wait, 1.0)
            if now + wait > deadline:
                raise RateLimitWait(self.name, wait)
            self.clock.sleep(min(wait, 1.0))  # short naps: a pause or another thread may change the wait

    def pause(self, seconds: float) -> None:
        """Nobody calls this provider for ``seconds`` (a 429's Retry-After)."""
        with self._lock:
            self.paused_until = max(self.paused_until, self.clock.monotonic() + seconds)

    def observe(self, headers: Mapping[str, str] | None, tokens: int) -> None:
        """Pause when the server says its requests, or tokens for a request like this one, ran out."""
        if not headers:
            return
        for kind, need in (("requests", 1), ("tokens", tokens)):
            remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
            reset = duration(headers.get(f"x-ratelimit-reset-{kind}"))
            if remaining is not None and reset is not None and remaining < need:
                self.pause(reset)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(value: str | None) -> float | None:
    """Seconds in an ``x-ratelimit-reset-*`` value: '1s', '6m0s', '59.5s', '20ms', or a bare number."""
    if not value:
        return None
    plain = _number(value)
    if plain is not None:
        return max(0.0, plain)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", value.strip())
    if not parts or "".join(n + u for n, u in parts) != value.strip():
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


_limiters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def limiter_for(provider, clock) -> Limiter:
    """The process's one limiter for this provider (per clock: tests run on their own)."""
    key = (provider.name, provider.base_url, provider.model, provider.requests_per_minute,
           provider.tokens_per_minute)
    with _registry_lock:
        per_clock = _limiters.setdefault(clock, {})
        if key not in per_clock:
            per_clock[key] = Limiter(provider.name, provider.requests_per_minute, provider.tokens_per_minute,
                                     clock)
        return per_clock[key]
