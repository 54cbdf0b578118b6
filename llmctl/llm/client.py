"""One streamed chat completion against an OpenAI-compatible endpoint, failures classified.

The official ``openai`` client is used with its own retries off: whether to retry,
fall back or serve from cache is decided by ``gateway.py``. Every failure becomes an
``AttemptFailed`` with a kind and whether it is worth retrying.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from llmctl.config import ProviderConfig, redacted_url
from llmctl.errors import ProviderError
from llmctl.kept import Kept

RETRYABLE = {"connection", "timeout", "stall", "rate_limit", "server", "malformed"}
# Set by a caller whose client may leave before the answer is complete (serve's JSON /query): once
# the event is set, the stream in progress is closed and the attempt ends as "client_gone" (billed
# for what was generated, never retried). A context variable, so it reaches the worker thread.
ABANDONED: ContextVar[threading.Event | None] = ContextVar("llmctl_abandoned", default=None)


@dataclass
class Completion:
    text: str
    provider: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage_reported: bool = False  # False: tokens were counted locally (server sent no usage)
    finish_reason: str | None = None
    latency_s: float = 0.0
    first_token_s: float | None = None
    cost_usd: float | None = None
    cache: str | None = None  # "exact" / "semantic" when served from the cache
    similarity: float | None = None
    cached_question: str | None = None  # a semantic cache hit: the earlier question it reused
    attempts: list[dict] = field(default_factory=list)
    route: dict | None = None
    interrupted: dict | None = None
    sources: list[dict] | None = None  # a cached answer's own sources (it was written from them)
    headers: dict | None = None  # the response's HTTP headers (x-ratelimit-* for the rate limiter)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "source": "provider" if self.usage_reported else "estimated"}


class AttemptFailed(Exception):
    """One attempt failed. ``kind`` names the failure class; ``partial`` is text already streamed."""

    def __init__(self, kind: str, message: str, *, status: int | None = None,
                 retry_after: float | None = None, partial: str = ""):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.partial = partial

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


def api_key(provider: ProviderConfig, config_source: str) -> str:
    if not provider.api_key_env:
        return "no-key"  # local servers (llama.cpp, Ollama, vLLM) accept anything
    key = os.environ.get(provider.api_key_env)
    if not key:
        raise ProviderError(
            f"No API key: set {provider.api_key_env} (provider '{provider.name}' in {config_source})"
        )
    if not all(" " < ch < "\x7f" for ch in key):  # an HTTP header carries printable ASCII only
        raise ProviderError(
            f"{provider.api_key_env} holds a character an HTTP header cannot carry (a space, a line break or a "
            f"non-ASCII character): set it to the key alone (provider '{provider.name}' in {config_source})")
    return key


def scrub(text: str, key: str) -> str:
    """``text`` from a provider (an error body may echo the request's headers) without ``key``,
    as sent or with any of its characters percent-encoded (sk%2D...)."""
    if len(key) < 8:
        return text
    import re

    pattern = "".join(f"(?:{re.escape(ch)}|%{ord(ch):02x})" for ch in key)  # the key is ASCII (api_key)
    return re.sub(pattern, "***", text, flags=re.IGNORECASE)


def retry_after_seconds(headers, now: float | None = None) -> float | None:
    """Retry-After as seconds: ``retry-after-ms`` (OpenAI and Azure send it, more precise), else
    ``retry-after`` as delta-seconds or an HTTP date."""
    if headers is None:
        return None
    try:
        ms = float(headers.get("retry-after-ms") or "nan")
        if ms >= 0:
            return ms / 1000
    except ValueError:
        pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (now if now is not None else time.time()))


def _is_context_error(message: str) -> bool:
    m = message.lower()
    return "context" in m and any(w in m for w in ("exceed", "too long", "maximum", "length", "size"))


_clients = Kept(8)


def openai_client(base_url: str, key: str, timeout):
    """The process's ``openai.OpenAI`` for this endpoint, key and timeout, with the client's own
    retries off. One client per endpoint keeps its connection pool (keep-alive, TLS sessions) and
    SSL context for every call, instead of a new handshake and a new SSL context (~37 ms here)
    per attempt. The client is thread-safe; the last 8 are kept, an evicted one is closed by the
    garbage collector once no call uses it."""
    import openai

    ident = (base_url, hashlib.sha256(key.encode()).hexdigest(), repr(timeout))  # no key kept as a key
    return _clients.get(ident, lambda: openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout,
                                                     max_retries=0))


def attempt(
    provider: ProviderConfig,
    messages: list[dict],
    *,
    temperature: float,
    max_tokens: int,
    key: str,
    on_token: Callable[[str], None] | None = None,
    before_send: Callable[[], None] | None = None,
) -> Completion:
    """Stream one answer; tokens go to ``on_token`` as they arrive. Raises AttemptFailed.

    ``before_send`` runs just before the request leaves (the rate limiter's wait): after the
    client is built, so a first call's imports do not bunch requests that were spaced out."""
    import openai

    # openai's own Timeout type (it re-exports its HTTP library's): never another library's object.
    timeout = openai.Timeout(provider.timeout, read=min(provider.stall_timeout, provider.timeout))
    client = openai_client(provider.base_url, key, timeout)
    if before_send:
        before_send()
    started = time.perf_counter()
    out = Completion("", provider.name, provider.model)
    parts: list[str] = []
    name = provider.name
    stream = None
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=provider.model, messages=messages, temperature=temperature, max_tokens=max_tokens,
            stream=True, stream_options={"include_usage": True},
        )
        out.headers = {k.lower(): v for k, v in raw.headers.items() if k.lower().startswith("x-ratelimit-")}
        stream = raw.parse()
        abandoned = ABANDONED.get()
        for chunk in stream:
            if abandoned is not None and abandoned.is_set():
                raise AttemptFailed("client_gone", f"the client left while '{name}' answered",
                                    partial="".join(parts))
            if time.perf_counter() - started > provider.timeout:
                raise AttemptFailed("timeout", f"'{name}' exceeded its {provider.timeout:g} s timeout",
                                    partial="".join(parts))
            if chunk.usage is not None:
                counts = (_count(chunk.usage, "prompt_tokens"), _count(chunk.usage, "completion_tokens"))
                if None not in counts:  # else the tokens are counted here, as for a reply without usage
                    out.prompt_tokens, out.completion_tokens = counts
                    out.usage_reported = True
            for choice in chunk.choices or []:
                delta = choice.delta.content if choice.delta else None
                if delta is not None and not isinstance(delta, str):
                    raise TypeError(f"delta.content is {type(delta).__name__}, not text")
                if delta:
                    if out.first_token_s is None:
                        out.first_token_s = time.perf_counter() - started
                    parts.append(delta)
                    if on_token:
                        on_token(delta)
                if choice.finish_reason:
                    out.finish_reason = choice.finish_reason
    except AttemptFailed:
        raise
    except openai.APITimeoutError:
        if parts:
            raise AttemptFailed("stall", f"'{name}' stalled: no data for {provider.stall_timeout:g} s "
                                f"after {len(parts)} chunks", partial="".join(parts)) from None
        raise AttemptFailed("timeout", f"'{name}' did not answer within "
                            f"{min(provider.stall_timeout, provider.timeout):g} s") from None
    except openai.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        if stream is not None:  # the server answered, then the connection went away
            raise AttemptFailed("connection", f"connection to '{name}' dropped mid-stream after "
                                f"{len(parts)} chunks ({type(cause).__name__})", partial="".join(parts)) from None
        raise AttemptFailed("connection", f"cannot reach '{name}' at {redacted_url(provider.base_url)} "
                            f"({type(cause).__name__})", partial="".join(parts)) from None
    except openai.APIStatusError as exc:
        raise status_failure(exc, provider, key) from None
    except openai.OpenAIError as exc:
        raise AttemptFailed("malformed", f"'{name}' sent an invalid response: {scrub(_one_line(exc), key)}",
                            partial="".join(parts)) from None
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        # Cut JSON, wrong types, missing fields, bytes that are not UTF-8 inside the stream.
        raise AttemptFailed("malformed", f"'{name}' sent a malformed stream after {len(parts)} chunks "
                            f"({type(exc).__name__}: {_one_line(exc)})", partial="".join(parts)) from None
    finally:
        if stream is not None:  # however it ended (a reader that left, too): the provider stops generating
            stream.close()
    out.text = "".join(parts)
    out.latency_s = time.perf_counter() - started
    if out.finish_reason is None:
        # Malformed bodies parse as an empty event stream: never pass that off as an answer.
        if parts:
            raise AttemptFailed("malformed", f"connection to '{name}' dropped mid-stream after {len(parts)} "
                                "chunks (the stream ended without a finish_reason)", partial=out.text)
        raise AttemptFailed("malformed", f"'{name}' sent no answer (an empty or malformed response; servers "
                            f"such as llama.cpp do this when the prompt exceeds their context: check that "
                            f"context_window ({provider.context_window}) is not larger than the server's)")
    return out


MAX_TOKENS = 10**9  # no request is billed for more: a larger count is a broken reply


def token_count(value) -> int | None:
    """A token count a provider reported: a whole number from 0 to a billion, else None (not
    trusted: a negative, absurd or non-numeric count would make the ledger's cost, and so the
    budget, wrong, or not fit the ledger at all)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS else None


def rough_tokens(text: str) -> int:
    """Tokens estimated without a tokenizer: about four characters each."""
    return len(text) // 4 + 1


def _count(usage, field: str) -> int | None:
    return token_count(getattr(usage, field, None))


def status_failure(exc, provider: ProviderConfig, key: str) -> AttemptFailed:
    """An HTTP error status (openai.APIStatusError) as a classified failure; ``key`` never in it."""
    name, status, msg = provider.name, exc.status_code, scrub(_brief(exc), key)
    if status in (401, 403):
        where = f"check {provider.api_key_env}" if provider.api_key_env else "check the server's auth"
        return AttemptFailed("auth", f"'{name}' rejected the API key (HTTP {status}): {where}", status=status)
    if status == 429:
        return AttemptFailed("rate_limit", f"'{name}' is rate limiting (HTTP 429)", status=status,
                             retry_after=retry_after_seconds(exc.response.headers))
    if status >= 500:
        return AttemptFailed("server", f"'{name}' failed (HTTP {status}): {msg}", status=status,
                             retry_after=retry_after_seconds(exc.response.headers))
    if status in (400, 413) and _is_context_error(msg):
        return AttemptFailed("context_length", f"'{name}': prompt too long for its context window ({msg})",
                             status=status)
    return AttemptFailed("bad_request", f"'{name}' refused the request (HTTP {status}): {msg}", status=status)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _brief(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        msg = body.get("message") or (body.get("error") or {}).get("message")
        if msg:
            return str(msg)[:300]
    return str(exc)[:300]
