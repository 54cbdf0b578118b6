"""OpenTelemetry traces over OTLP/HTTP (protobuf): one trace per query or eval case.

Off by default and free when off: nothing from ``opentelemetry`` is imported unless
``telemetry.otlp_endpoint`` is set, and every hook below is a plain function that returns
at once without an active trace.

A trace is ``llmctl.query`` (or ``llmctl.eval_case``) with a child span per retrieval stage the
pipeline already times (``search/pipeline.py``'s clock: load, embed, dense, bm25, fusion,
fetch, rerank, pack) carrying retrieval attributes (``llmctl.retrieval.k``, ``.hits``,
``.top_score``), and a ``chat <model>`` span per model attempt -- and per cache hit or refusal --
drawn from its ledger row, with GenAI semantic-convention attributes
(``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.usage.input_tokens`` / ``output_tokens``, ``error.type``) plus ``llmctl.cost_usd``,
``llmctl.cache`` and ``llmctl.attempt``. No span carries a question, prompt or document text
unless ``llm.store_prompts`` is true; then the root span has ``llmctl.question``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

_active: contextvars.ContextVar[Any] = contextvars.ContextVar("llmctl_trace", default=None)
_providers: dict[tuple, Any] = {}
_lock = threading.Lock()


class _Trace:
    def __init__(self, tracer, store_prompts: bool):
        self.tracer = tracer
        self.store_prompts = store_prompts


def _tracer(cfg) -> Any:
    """The process's tracer for this endpoint (made once; its batch exporter is flushed per trace)."""
    t = cfg.telemetry
    key = (t.otlp_endpoint, t.service_name, t.timeout)
    with _lock:
        if key not in _providers:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
                from opentelemetry.sdk.resources import Resource
                from opentelemetry.sdk.trace import TracerProvider
                from opentelemetry.sdk.trace.export import BatchSpanProcessor
            except ImportError as exc:  # a trimmed install: say how to get it back
                from llmctl.errors import ConfigError

                raise ConfigError(f"telemetry.otlp_endpoint is set but OpenTelemetry is missing ({exc}): "
                                  "pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http") from None
            endpoint = t.otlp_endpoint.rstrip("/")
            if not endpoint.endswith("/v1/traces"):
                endpoint += "/v1/traces"
            _one_line_warnings(endpoint)
            provider = TracerProvider(resource=Resource.create({"service.name": t.service_name}))
            provider.add_span_processor(BatchSpanProcessor(_resting(OTLPSpanExporter)(endpoint=endpoint,
                                                                                      timeout=t.timeout)))
            _providers[key] = provider
        return _providers[key]


REST_S = 60.0  # after a failed export, traces are dropped for this long instead of waiting again


def _resting(exporter_class):
    """The exporter, made to rest after a failure: a collector that is down costs one wait
    (telemetry.timeout) per minute, not one per trace (an eval flushes once per case)."""
    import time

    from opentelemetry.sdk.trace.export import SpanExportResult

    class Resting(exporter_class):
        until = 0.0

        def export(self, spans):
            if time.monotonic() < self.until:
                return SpanExportResult.FAILURE
            result = super().export(spans)
            if result != SpanExportResult.SUCCESS:
                self.until = time.monotonic() + REST_S
            return result

    return Resting


class _OneLine(logging.Handler):
    """The SDK's export warnings (one per retry, with the HTTP library's whole error) as one line
    on stderr, once per process: a collector that is down must not bury the answer."""

    def __init__(self, endpoint: str):
        super().__init__(logging.WARNING)
        self.endpoint, self.said = endpoint, False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.said:
            self.said = True
            why = "connection refused" if "refused" in record.getMessage().lower() else \
                " ".join(record.getMessage().split())[:160]
            sys.stderr.write(f"warning: telemetry: traces are not reaching {self.endpoint} ({why}); answers are "
                             f"not affected; traces are dropped for a minute at a time while it is down\n")


def _one_line_warnings(endpoint: str) -> None:
    """Route the SDK's warnings through one _OneLine handler, which speaks once for each new endpoint."""
    log = logging.getLogger("opentelemetry")
    handler = next((h for h in log.handlers if isinstance(h, _OneLine)), None)
    if handler is None:
        log.addHandler(_OneLine(endpoint))
        log.propagate = False
    else:
        handler.endpoint, handler.said = endpoint, False


@contextlib.contextmanager
def trace(cfg, name: str, question: str | None = None, **attrs) -> Iterator[Any]:
    """One trace (a root span) around a query or an eval case; nothing at all when telemetry is off.
    Yields a handle (None when off) that ``resume`` continues the trace with, on another thread
    and after this block ended: an eval case's answer, asked later on a worker thread."""
    if not cfg.telemetry.otlp_endpoint:
        yield None
        return
    provider = _tracer(cfg)
    tracer = provider.get_tracer("llmctl")
    state = _Trace(tracer, cfg.llm.store_prompts)
    if question is not None and state.store_prompts:
        attrs["llmctl.question"] = question
    token = _active.set(state)
    try:
        with tracer.start_as_current_span(name, attributes=_clean(attrs)) as span:
            try:
                from opentelemetry import context

                yield (state, context.get_current(), provider, cfg.telemetry.timeout)
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__name__)
                raise
    finally:
        _active.reset(token)
        provider.force_flush(int(cfg.telemetry.timeout * 1000))


@contextlib.contextmanager
def resume(handle: Any) -> Iterator[None]:
    """Continue the trace ``handle`` came from (``trace``'s): spans made here join it."""
    if handle is None:
        yield
        return
    from opentelemetry import context

    state, ctx, provider, timeout = handle
    token, attached = _active.set(state), context.attach(ctx)
    try:
        yield
    finally:
        context.detach(attached)
        _active.reset(token)
        provider.force_flush(int(timeout * 1000))


@contextlib.contextmanager
def span(name: str, **attrs) -> Iterator[None]:
    """A child span of the current trace; nothing without one."""
    state = _active.get()
    if state is None:
        yield
        return
    with state.tracer.start_as_current_span(name, attributes=_clean(attrs)):
        yield


def annotate(**attrs) -> None:
    """Attributes on the current span (dots in names are written as '__' in the keywords)."""
    if _active.get() is None:
        return
    from opentelemetry import trace as otel

    otel.get_current_span().set_attributes(_clean({k.replace("__", "."): v for k, v in attrs.items()}))


def attempt(row, ended: float) -> None:
    """A finished model attempt (or cache hit, or refusal) as a span, from its ledger row."""
    state = _active.get()
    if state is None:
        return
    end_ns = int(ended * 1e9)
    start_ns = end_ns - int((row.latency_ms or 0.0) * 1e6)
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": row.provider,
             "gen_ai.request.model": row.model, "gen_ai.response.model": row.model if row.status == "ok" else None,
             "gen_ai.usage.input_tokens": row.tokens_in, "gen_ai.usage.output_tokens": row.tokens_out,
             "llmctl.status": row.status, "llmctl.attempt": row.attempt, "llmctl.cost_usd": row.cost_usd,
             "llmctl.cache": row.cache or "miss", "llmctl.cache_hit": row.status == "cache_hit",
             "llmctl.cache_similarity": row.similarity, "llmctl.route": row.route,
             "error.type": row.error_class}
    s = state.tracer.start_span(f"chat {row.model}", start_time=start_ns, attributes=_clean(attrs))
    if row.status in ("error", "refused"):
        from opentelemetry.trace import Status, StatusCode

        s.set_status(Status(StatusCode.ERROR, row.error_class or row.status))
    s.end(end_time=end_ns)


def _clean(attrs: dict) -> dict:
    return {k: v for k, v in attrs.items() if v is not None}
