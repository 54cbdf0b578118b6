"""Everything sent to a model goes through here: routing, cache, budgets, retries, fallback, ledger.

Order of a call: route (optional) -> exact cache -> semantic cache (opt-in) -> providers
in order, a budget reservation at that provider's prices before every attempt (an unpriced
provider is not called under a budget; see ``ledger.py``: the attempt's worst case is held
against the budget across threads and processes, then settled with the real cost or
released on failure) and a wait for its client-side rate limits
(``ratelimit.py``) before every attempt, each with capped, jittered exponential
backoff on retryable failures (connection, timeout, stall, 429, 5xx, malformed reply),
honouring Retry-After, within ``llm.deadline`` -> ledger row for every attempt -> cache.
Authentication and bad-request errors stop at once. A context-length error moves on to
the next provider with a larger window.

With a cassette (``eval --record`` / ``--replay``, see ``cassette.py``) the cache is not used:
recording keeps every answer the model gives, replaying answers from the cassette alone.

A streamed answer that fails *after* text reached the user is not retried (that would
print the beginning twice): the call ends with ``AnswerInterrupted``. Without a stream
consumer (``--json``, eval), such failures are retried like any other.
"""

from __future__ import annotations

import copy
import functools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from llmctl import telemetry
from llmctl.config import Config, LLMConfig, ProviderConfig, StateConfig
from llmctl.datadir import DataDir
from llmctl.errors import BudgetExceeded, ConfigError, ProviderError, SharedStateUnavailable
from llmctl.llm import policy
from llmctl.llm.cache import CacheHit, is_time_sensitive, request_key
from llmctl.llm.cassette import Cassette
from llmctl.llm.client import AttemptFailed, Completion, api_key, attempt, rough_tokens
from llmctl.llm.ledger import Row
from llmctl.llm.ratelimit import RateLimitWait
from llmctl.llm.state import open_state
from llmctl.money import money

log = logging.getLogger("llmctl.llm")
RESERVATION_MARGIN_S = 60.0  # a crashed caller's reservation expires this long after its attempt could have


def _unpriced(provider: ProviderConfig) -> str:
    """Under a budget an unpriced provider is never called: its cost could not be counted."""
    return (f"provider '{provider.name}' has no price configured, so its cost cannot be counted against "
            "llm.budget (set price_input_per_1m and price_output_per_1m; 0 for a free local server)")


def _key_or_none(provider: ProviderConfig) -> str | None:
    try:
        return api_key(provider, "")
    except ProviderError:
        return None


def usable_providers(cfg: LLMConfig, config_source: str) -> list[ProviderConfig]:
    """Providers whose API key is set; raises when there is none (checked before any work)."""
    if not cfg.providers:
        raise ProviderError("No LLM provider configured: add one under llm.providers")
    usable = [p for p in cfg.providers if _key_or_none(p) is not None]
    if not usable:
        api_key(cfg.providers[0], config_source)  # raises the missing-key error
    return usable


class Clock:
    """Wall time for the ledger, monotonic time for deadlines, sleep for backoff (tests inject)."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK = Clock()  # one clock, so every gateway of the process shares its providers' rate limiters


class AnswerInterrupted(ProviderError):
    """The stream failed after part of the answer was shown; not retried to avoid duplicate text."""

    def __init__(self, message: str, partial: str):
        super().__init__(message)
        self.partial = partial


@dataclass
class _Call:
    """One ``Gateway.complete`` call: what was asked, and what its steps have found so far."""

    messages: list[dict]
    question: str
    chunk_ids: list[str]
    sources: list[dict]
    on_token: Callable[[str], None] | None
    request_id: str
    order: list[ProviderConfig]  # routed (llm.routing), before llm.budget.on_exceed: cheaper
    route: dict | None
    prompt_tokens: int
    keys: dict[str, str]  # each provider's exact-cache key
    cacheable: bool
    vector: object = None  # the question's embedding, once the semantic cache computed it
    deadline: float = 0.0  # monotonic: llm.deadline from the first attempt's start
    shown: list[str] = field(default_factory=list)  # streamed text the user has seen
    attempts: list[dict] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # budget refusals
    min_window: int = 0  # after a context-length error: only larger windows are tried
    last: AttemptFailed | None = None
    past_deadline: tuple[float, AttemptFailed] | None = None  # a wait llm.deadline did not allow, after what
    rate_wait: RateLimitWait | None = None  # a provider's rate limit held the request past llm.deadline
    billed: float = 0.0  # what failed attempts that were billed (cut streams) cost

    def emit(self, text: str) -> None:
        self.shown.append(text)
        self.on_token(text)


class Gateway:
    _view = False  # a per-call view (for_call) shares its gateway's files and closes nothing

    def __init__(self, cfg: LLMConfig, data: DataDir, *, config_source: str = "config",
                 command: str = "query", tag: str | None = None, clock: Clock | None = None,
                 rng: random.Random | None = None, count_tokens: Callable[[str], int] | None = None,
                 embed: Callable[[str], object] | None = None, warn: Callable[[str], None] | None = None,
                 cassette: Cassette | None = None, state: StateConfig | None = None, lazy_cache: bool = False):
        self.cfg = cfg
        self.data = data
        self.source = config_source
        self.command = command
        self.tag = tag
        self.clock = clock or SYSTEM_CLOCK
        self.rng = rng or random.Random()
        self.count = count_tokens or rough_tokens
        self.embed = embed
        self.warn = warn or (lambda msg: log.warning(msg))
        near = [t for t in cfg.budget.tags if tag and t != tag and t.casefold() == tag.casefold()]
        if near:  # tags are exact: --tag CI is not under the 'ci' budget
            self.warn(f"tag '{tag}' has no budget; llm.budget.tags has '{near[0]}' (tags are case-sensitive)")
        # The one place the state backend is chosen (state.backend: sqlite files or a shared Redis):
        # the ledger, cache, budget reservations and rate limiters below all come from it.
        self.state = open_state(state, self.data, self.warn)
        self.ledger = self.state.ledger  # this machine's, always complete
        self.cassette = cassette  # record or replay (eval): answers come from the model or the cassette only
        wants_cache = cfg.cache.enabled and cassette is None and not lazy_cache
        self.cache = self.state.open_cache(self.clock.now()) if wants_cache else None

    def close(self) -> None:
        if self._view:
            return  # a view's files belong to the gateway it was made from
        self.state.close()
        if self.cache:
            self.cache.close()

    def for_call(self, *, cfg: LLMConfig | None = None, command: str | None = None, tag: str | None = None,
                 warn: Callable[[str], None] | None = None, cassette: Cassette | None = None,
                 count_tokens: Callable[[str], int] | None = None,
                 embed: Callable[[str], object] | None = None) -> Gateway:
        """This gateway for one call's settings: the same ledger, cache and rate limiters (nothing is
        opened again), with its own command, tag, warnings, token counter and, for eval, its own
        LLM settings or cassette (which bypasses the cache). Closing it closes nothing."""
        view = copy.copy(self)
        view._view = True
        view.cfg = cfg or self.cfg
        view.command = command or self.command
        view.tag = tag
        view.warn = warn or self.warn
        view.cassette = cassette
        view.count = count_tokens or self.count
        view.embed = embed or self.embed
        self.state.warn = view.warn  # one call at a time uses a thread's gateway (GatewayPool)
        if cassette is not None or not view.cfg.cache.enabled:
            view.cache = None
        elif self.cache is None:  # the first call here that wants the cache opens it, once
            self.cache = view.cache = self.state.open_cache(self.clock.now())
        return view

    # -- helpers ----------------------------------------------------------------------
    def _row(self, request_id: str, status: str, settles: str | None = None, **kw) -> None:
        """The one ledger writer; it also keeps questions out when llm.store_prompts is false.
        ``settles``: the attempt's budget reservation, replaced by this row in one transaction."""
        row = Row(command=self.command, request_id=request_id, status=status, tag=self.tag, **kw)
        if not self.cfg.store_prompts:
            row.question = None
        ts = self.clock.now()
        self.state.record(row, ts, settles=settles)
        telemetry.attempt(row, ts)  # a span of the query's trace when telemetry is on
        log.info("llm %s provider=%s model=%s tokens=%s/%s cost=%s latency_ms=%s cache=%s%s",
                 status, row.provider, row.model, "-" if row.tokens_in is None else row.tokens_in,
                 "-" if row.tokens_out is None else row.tokens_out,
                 money(row.cost_usd) if row.cost_usd is not None or status == "ok" else "-",
                 row.latency_ms and round(row.latency_ms), row.cache,
                 f" error={row.error_class}" if row.error_class else "")

    def _order(self, question: str) -> tuple[list[ProviderConfig], dict | None]:
        providers = list(self.cfg.providers)
        r = self.cfg.routing
        if not r.enabled:
            return providers, None
        kind, reason = policy.route(question, r)
        wanted = r.simple_provider if kind == "simple" else r.complex_provider
        first = [p for p in providers if p.name == wanted]
        info = {"class": kind, "reason": reason, "provider": wanted}
        return first + [p for p in providers if p.name != wanted], info

    def _params(self) -> dict:
        return {"temperature": self.cfg.temperature, "max_tokens": self.cfg.max_answer_tokens}

    def _scope(self, provider: ProviderConfig) -> str:
        return request_key(provider.base_url, provider.model,
                           [{"role": "system", "content": self.cfg.system_prompt or ""}], self._params())

    def _estimate(self, provider: ProviderConfig, prompt_tokens: int) -> float | None:
        return policy.cost(provider, prompt_tokens, self.cfg.max_answer_tokens)

    def _budget_problem(self, provider: ProviderConfig, prompt_tokens: int) -> str | None:
        """Why calling ``provider`` now would break a budget, or None (a check: nothing is held)."""
        if not self.cfg.budget.limited:
            return None
        estimate = self._estimate(provider, prompt_tokens)
        if estimate is None:
            return _unpriced(provider)
        over = self.state.over_budget(self.cfg.budget, estimate, self.clock.now(), self.tag)
        return over and f"{over}; a call to '{provider.name}' would add about {money(estimate)}"

    def _reserve(self, provider: ProviderConfig, prompt_tokens: int) -> tuple[str | None, str | None]:
        """Before an attempt: (reservation, None) once its worst case (prompt tokens +
        max_answer_tokens at ``provider``'s prices) is held against every limit, atomically for
        all threads and processes; (None, why) when it does not fit; (None, None) without a budget.
        The attempt's ledger row settles the reservation (``_row(settles=...)``), else ``_release``."""
        if not self.cfg.budget.limited:
            return None, None
        estimate = self._estimate(provider, prompt_tokens)
        if estimate is None:
            return None, _unpriced(provider)
        now = self.clock.now()
        held, over = self.state.reserve(self.cfg.budget, estimate, now, expires=now + self._hold_for(provider),
                                        tag=self.tag, command=self.command, provider=provider.name)
        return held, over and f"{over}; a call to '{provider.name}' would add about {money(estimate)}"

    def _hold_for(self, provider: ProviderConfig) -> float:
        """Seconds a reservation outlives a caller that died: one attempt can wait for the rate
        limiter until llm.deadline, then take the provider's timeout plus one stall, plus a margin."""
        return self.cfg.deadline + provider.timeout + provider.stall_timeout + RESERVATION_MARGIN_S

    def _release(self, reservation: str | None) -> None:
        self.state.release(reservation)

    def _refused_unshared(self, request_id: str, provider: ProviderConfig, n: int, question: str,
                          held: str | None) -> None:
        self._row(request_id, "refused", settles=held, provider=provider.name, model=provider.model,
                  error_class="state_unavailable", attempt=n, question=question)

    def usable_providers(self) -> list[ProviderConfig]:
        return usable_providers(self.cfg, self.source)

    # -- the call ---------------------------------------------------------------------
    def complete(self, messages: list[dict], *, question: str, chunk_ids: list[str],
                 sources: list[dict], on_token: Callable[[str], None] | None = None) -> Completion:
        """Answer from the cache, else from the providers in order (each tried until it answers,
        refuses or runs out of retries), else raise why none answered."""
        if self.cassette is not None and (self.cassette.mode == "replay" or self.cassette.has(
                messages, self.cfg.temperature, self.cfg.max_answer_tokens)):  # recorded already: resumed
            return self._replay(messages, question, on_token)
        self.usable_providers()
        call = self._call(messages, question, chunk_ids, sources, on_token)
        hit = self._cached(call)
        if hit:
            return hit
        order = self._cheaper_first(call.order, call.prompt_tokens)
        call.deadline = self.clock.monotonic() + self.cfg.deadline
        for provider in order:
            key = self._usable_key(call, provider)
            if key is None:
                continue
            comp = self._attempts(call, provider, key)
            if comp is not None:
                return comp
            if provider is not order[-1] and (call.last is not None or call.refusals):
                why = call.last.kind if call.last is not None else "budget"
                self.warn(f"provider '{provider.name}' failed ({why}); falling back to the next one")
        error = self._give_up(call)
        error.attempts = call.attempts  # what was tried: `query --json` lists them beside the error
        raise error

    def _call(self, messages: list[dict], question: str, chunk_ids: list[str], sources: list[dict],
              on_token: Callable[[str], None] | None) -> _Call:
        order, route_info = self._order(question)
        return _Call(messages, question, chunk_ids, sources, on_token, uuid.uuid4().hex[:12], order, route_info,
                     sum(self.count(m["content"]) for m in messages),
                     {p.name: request_key(p.base_url, p.model, messages, self._params()) for p in order},
                     self.cache is not None and (self.cfg.temperature == 0 or not self.cfg.cache.only_deterministic))

    def _cached(self, call: _Call) -> Completion | None:
        """The cache lookup: a cached answer served (and its ledger row written), or None; the
        question's vector, when one was computed, is kept on ``call`` to store a fresh answer with."""
        if not call.cacheable:
            return None
        hit, call.vector = self._lookup(call.order, call.keys, call.question, call.chunk_ids)
        return self._serve(hit, call.request_id, call.route, call.on_token, call.question) if hit else None

    def _usable_key(self, call: _Call, provider: ProviderConfig) -> str | None:
        """``provider``'s API key, or None when it is skipped (its window is too small for a
        context-length error already met, or its key is not set)."""
        if provider.context_window <= call.min_window:
            call.attempts.append({"provider": provider.name, "skipped": "context window too small"})
            return None
        key = _key_or_none(provider)
        if key is None:
            call.attempts.append({"provider": provider.name, "skipped": f"{provider.api_key_env} is not set"})
            self.warn(f"provider '{provider.name}' skipped: {provider.api_key_env} is not set")
        return key

    def _attempts(self, call: _Call, provider: ProviderConfig, key: str) -> Completion | None:
        """One provider's attempts (1 + its retries, each after a budget reservation and its rate
        limits): its answer, or None to fall back to the next provider (a budget refusal, a
        context-length error, retries used up). Raises what ends the whole call."""
        limiter = self.state.limiter(provider, self.clock)
        needed = call.prompt_tokens + self.cfg.max_answer_tokens  # what providers count against a limit
        route = call.route and call.route["class"]
        for n in range(1, provider.retries + 2):
            try:
                held, problem = self._reserve(provider, call.prompt_tokens)  # before every attempt
            except SharedStateUnavailable:  # the budget could not be held across machines
                self._refused_unshared(call.request_id, provider, n, call.question, None)
                raise
            if problem:
                self._row(call.request_id, "refused", provider=provider.name, model=provider.model,
                          error_class="budget", attempt=n, question=call.question)
                call.attempts.append({"provider": provider.name, "attempt": n, "refused": problem})
                call.refusals.append(problem)
                return None
            started = time.perf_counter()
            try:
                comp = attempt(provider, call.messages, temperature=self.cfg.temperature,
                               max_tokens=self.cfg.max_answer_tokens, key=key,
                               on_token=call.emit if call.on_token else None,
                               before_send=functools.partial(limiter.acquire, needed, call.deadline))
            except KeyboardInterrupt:
                self._row(call.request_id, "error", settles=held, provider=provider.name, model=provider.model,
                          latency_ms=(time.perf_counter() - started) * 1000, error_class="interrupted",
                          attempt=n, route=route, question=call.question,
                          **self._billed(provider, call.prompt_tokens, "".join(call.shown)))
                raise
            except AttemptFailed as f:
                call.last = f
                latency = (time.perf_counter() - started) * 1000
                call.attempts.append({"provider": provider.name, "attempt": n, "error": f.kind, "message": str(f)})
                billed = self._billed(provider, call.prompt_tokens, f.partial)
                call.billed += billed.get("cost_usd") or 0.0
                self._row(call.request_id, "error", settles=held, provider=provider.name, model=provider.model,
                          latency_ms=latency, error_class=f.kind, attempt=n, route=route, question=call.question,
                          **billed)
                delay = self._retry_delay(call, provider, n, f)
                if f.kind == "rate_limit" and f.retry_after and delay is None:
                    limiter.pause(f.retry_after)  # moving on: other callers still hold off this provider
                if delay is None:
                    return None
                if f.kind == "rate_limit":  # every caller of this provider holds off, not only this one
                    limiter.pause(delay)
                self.warn(f"{f}; retrying in {delay:.1f} s (attempt {n + 1} of {provider.retries + 1})")
                self.clock.sleep(delay)
                continue
            except SharedStateUnavailable:  # the shared rate limit could not be taken: nothing was sent
                self._refused_unshared(call.request_id, provider, n, call.question, held)
                raise
            except RateLimitWait as wait:  # held past llm.deadline before sending: the next provider may answer
                self._release(held)
                call.attempts.append({"provider": provider.name, "attempt": n, "skipped": str(wait)})
                call.rate_wait = wait
                return None
            except BaseException:
                if call.shown:  # text had arrived (the reader went away: a closed pipe, a dropped client): billed
                    self._row(call.request_id, "error", settles=held, provider=provider.name, model=provider.model,
                              latency_ms=(time.perf_counter() - started) * 1000, error_class="client_gone",
                              attempt=n, route=route, question=call.question,
                              **self._billed(provider, call.prompt_tokens, "".join(call.shown)))
                else:  # e.g. an error while the rate limiter waited: nothing was sent or spent
                    self._release(held)
                raise
            limiter.observe(comp.headers, needed)
            comp = self._finish(comp, provider, call.messages, call.request_id, n, call.route, call.attempts,
                                call.keys[provider.name], call.chunk_ids, call.sources, call.question, call.vector,
                                call.cacheable, settles=held)
            if call.billed and comp.cost_usd is not None:  # the answer's cost includes the cut attempts before it
                comp.cost_usd += call.billed
            return comp
        return None

    def _billed(self, provider: ProviderConfig, prompt_tokens: int, partial: str) -> dict:
        """A stream cut after text arrived was billed: the prompt, and the text sent. Its tokens,
        counted here, and its cost go in the row, so budgets see repeated mid-stream failures."""
        if not partial:
            return {}
        out = self.count(partial)
        return {"tokens_in": prompt_tokens, "tokens_out": out, "usage_source": "estimated",
                "cost_usd": policy.cost(provider, prompt_tokens, out)}

    def _retry_delay(self, call: _Call, provider: ProviderConfig, n: int, f: AttemptFailed) -> float | None:
        """After failed attempt ``n``: seconds to wait before the next one, None to move on to the
        next provider; raises when the call must stop (text already shown, a non-retryable
        error, llm.deadline)."""
        if call.shown:
            raise AnswerInterrupted(
                f"Answer interrupted after {len(call.shown)} chunks: {f}. Not retried, so the "
                "text shown is not repeated; run again, or use --json to retry transparently",
                "".join(call.shown)) from None
        if f.kind == "context_length":
            call.min_window = provider.context_window
            return None
        if not f.retryable:
            raise ProviderError(f"Provider {f}") from None
        if n > provider.retries:
            return None
        delay = policy.backoff(n, self.cfg.backoff_base, self.cfg.backoff_cap, f.retry_after, self.rng)
        if self.clock.monotonic() + delay > call.deadline:  # no time for this provider: the next one may answer
            call.past_deadline = delay, f
            return None
        return delay

    def _lookup(self, order: list[ProviderConfig], keys: dict[str, str], question: str,
                chunk_ids: list[str]) -> tuple[CacheHit | None, object]:
        """(a cached answer for any of the providers, exact first then semantic, or None; the
        question's vector when one was computed, so a fresh answer is stored with it)."""
        now = self.clock.now()
        for i, p in enumerate(order):  # one lookup for the hit rate, however many providers
            hit = self.cache.get_exact(keys[p.name], now, count=i == 0)
            if hit:
                return hit, None
        if not (self.cfg.cache.semantic and self.embed is not None):
            return None, None
        vector = self.embed(question)
        for i, p in enumerate(order):
            hit, seen = self.cache.get_semantic(vector, question, self._scope(p), self.cfg.cache.semantic_threshold,
                                                now, chunk_ids=chunk_ids, count=i == 0)
            if hit:
                return hit, vector
            if seen.get("rejected"):
                log.info("semantic cache: near miss %s", seen["rejected"])
        return None, vector

    def _give_up(self, call: _Call) -> Exception:
        """The error when no provider answered: a budget refusal wins (it is the user's to lift)."""
        refusals, last = call.refusals, call.last
        if refusals and set(refusals) <= {_unpriced(p) for p in self.cfg.providers}:
            # not money spent: providers the budget cannot count (the message says what to set)
            return ConfigError(refusals[0] + (f" (after '{last}')" if last is not None else ""))
        if refusals:  # nothing answered, and at least one provider was not called for money
            hint = ("only cached answers are allowed now (llm.budget.on_exceed: cache_only)"
                    if self.cfg.budget.on_exceed == "cache_only"
                    else "raise the limit in llm.budget or wait for the next period")
            more = f" (and {len(refusals) - 1} more refusal(s))" if len(refusals) > 1 else ""
            before = f" (after '{last}')" if last is not None else ""
            return BudgetExceeded(f"Budget exceeded: {refusals[0]}{more}{before}; {hint}")
        if last is None:
            return call.rate_wait or ProviderError("No provider could take the request")
        if call.past_deadline is not None and call.past_deadline[1] is last:
            wait = call.past_deadline[0]
            return ProviderError(f"Gave up: the next retry ({wait:.0f} s away) would pass llm.deadline "
                                 f"({self.cfg.deadline:g} s); last error: {last}; raise llm.deadline, or add a "
                                 "fallback provider")
        return ProviderError(f"All providers failed; last error: {last}")

    def _cheaper_first(self, order: list[ProviderConfig], prompt_tokens: int) -> list[ProviderConfig]:
        """llm.budget.on_exceed 'cheaper': when the first provider would break the budget, try the
        priced providers that fit it, cheapest first."""
        if self.cfg.budget.on_exceed != "cheaper" or self._budget_problem(order[0], prompt_tokens) is None:
            return order
        fitting = sorted((p for p in order if self._budget_problem(p, prompt_tokens) is None),
                         key=lambda p: self._estimate(p, prompt_tokens))
        if fitting:
            self.warn(f"{self._budget_problem(order[0], prompt_tokens)}; using the cheaper provider "
                      f"'{fitting[0].name}'")
            return fitting
        return order

    def _replay(self, messages: list[dict], question: str, on_token) -> Completion:
        """No provider, key or budget is involved: the cassette answers, or the call fails."""
        comp = self.cassette.replay(messages, self.cfg.temperature, self.cfg.max_answer_tokens, question)
        if on_token:
            on_token(comp.text)
        self._row(uuid.uuid4().hex[:12], "cache_hit", provider=comp.provider, model=comp.model, tokens_in=0,
                  tokens_out=0, cost_usd=0.0, latency_ms=0.0, cache="replay", question=question)
        return comp

    def _serve(self, hit: CacheHit, request_id: str, route_info, on_token, question) -> Completion:
        if hit.kind == "semantic":  # name the question reused: a semantic hit is a judgement and may be wrong
            self.warn(f"semantic cache: this is the cached answer to an earlier question, "
                      f"{hit.question!r} (similarity {hit.similarity:.3f})")
        if on_token:
            on_token(hit.answer)
        self._row(request_id, "cache_hit", provider=hit.provider, model=hit.model, tokens_in=0,
                  tokens_out=0, cost_usd=0.0, latency_ms=0.0, cache=hit.kind, similarity=hit.similarity,
                  saved_usd=hit.cost_usd, question=question)
        return Completion(hit.answer, hit.provider, hit.model, hit.usage.get("prompt_tokens"),
                          hit.usage.get("completion_tokens"), hit.usage.get("source") == "provider",
                          "stop", cost_usd=0.0, cache=hit.kind, similarity=hit.similarity,
                          cached_question=hit.question if hit.kind == "semantic" else None,
                          route=route_info, sources=hit.sources)

    def _finish(self, comp: Completion, provider: ProviderConfig, messages, request_id, n, route_info,
                attempts, key, chunk_ids, sources, question, vector, cacheable,
                settles: str | None = None) -> Completion:
        if not comp.usage_reported:
            comp.prompt_tokens = sum(self.count(m["content"]) for m in messages)
            comp.completion_tokens = self.count(comp.text)
        comp.cost_usd = policy.cost(provider, comp.prompt_tokens, comp.completion_tokens)
        if comp.cost_usd is None:
            self.warn(f"no price configured for provider '{provider.name}' ({provider.model}): "
                      "cost recorded as unknown (set price_input_per_1m / price_output_per_1m)")
        comp.attempts = attempts + [{"provider": provider.name, "attempt": n, "ok": True}]
        comp.route = route_info
        self._row(request_id, "ok", settles=settles, provider=provider.name, model=provider.model,
                  tokens_in=comp.prompt_tokens, tokens_out=comp.completion_tokens,
                  usage_source="provider" if comp.usage_reported else "estimated",
                  cost_usd=comp.cost_usd, latency_ms=comp.latency_s * 1000, attempt=n,
                  route=route_info and route_info["class"], question=question)
        if comp.truncated:
            self.warn(f"the answer was cut at llm.max_answer_tokens ({self.cfg.max_answer_tokens}) and is "
                      "incomplete (not cached): raise llm.max_answer_tokens for a complete answer")
        if cacheable and comp.finish_reason == "stop":
            ttl = (self.cfg.cache.time_sensitive_ttl_minutes * 60 if is_time_sensitive(question)
                   else self.cfg.cache.ttl_hours * 3600)
            if self.cfg.cache.semantic and vector is None and self.embed is not None:
                vector = self.embed(question)
            hit = CacheHit(key, "exact", comp.text, provider.name, provider.model, comp.usage(),
                           comp.cost_usd, sources)
            self.cache.put(key, self._scope(provider), self.clock.now(), ttl, hit, chunk_ids,
                           question if self.cfg.store_prompts else None,
                           vector if self.cfg.cache.semantic else None)
        if self.cassette is not None:
            self.cassette.record(messages, self.cfg.temperature, self.cfg.max_answer_tokens, comp)
        return comp


class GatewayPool:
    """One Gateway per thread for a Workspace: its ledger, cache and rate limiters are opened once
    per thread (SQLite connections stay in the thread that opened them) and shared by every call
    made there, through ``Gateway.for_call``."""

    def __init__(self, cfg: Config, data: DataDir):
        self.cfg, self.data, self.source, self.state = cfg.llm, data, cfg.source, cfg.state
        self._local = threading.local()
        self._all: list[Gateway] = []
        self._lock = threading.Lock()

    def call(self, **settings) -> Gateway:
        """A gateway for one call (see ``Gateway.for_call`` for ``settings``)."""
        root = getattr(self._local, "gateway", None)
        if root is None:
            root = Gateway(self.cfg, self.data, config_source=self.source, state=self.state, lazy_cache=True)
            self._local.gateway = root
            with self._lock:
                self._all.append(root)
        return root.for_call(**settings)

    def close(self) -> None:
        """Close every thread's gateway (the Workspace does, when it closes)."""
        with self._lock:
            roots, self._all = self._all, []
        for root in roots:
            root.close()
        self._local = threading.local()
