"""``llmctl serve``: a warm local JSON API over one Workspace, on Starlette + uvicorn.

    POST /search  {"query": "...", "k": 5, "where": ["ext=md"]}   -> {"hits": [...], ...}
    POST /query   {"question": "...", "stream": false}            -> query --json's document
    GET  /chunks/<id>, GET /documents/<doc_id>, GET /status, GET /health

Every answer that is not a success is JSON ``{"error": {"message", "type"}}`` with a 4xx/5xx
status, whatever the method, path or malformed request; never a crash. Models load once; each
request reads the index published last (``Workspace.retriever``). Workspace calls block (ONNX,
SQLite, Chroma's engine), so they run on Starlette's threadpool; the event loop only parses,
checks and streams.

Who may call:
- Bound to loopback, a request must name this machine as its ``Host`` (localhost, 127.0.0.1,
  [::1], any port) and a browser's ``Origin``, when sent, must be a loopback one: else 403, so a
  web page cannot reach the API through DNS rebinding. ``serve.allowed_hosts`` /
  ``serve.allowed_origins`` extend the lists; a listed origin also gets CORS headers.
- Beyond loopback a token is required (``$LLMCTL_SERVE_TOKEN``), sent as a Bearer header; the
  Origin rule holds there too, and the Host rule once ``serve.allowed_hosts`` is set.
- A body is at most 1 MB (413) and must arrive within ``serve.read_timeout`` seconds (408).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from llmctl.errors import (
    BudgetExceeded,
    BusyError,
    ConfigError,
    IndexStateError,
    InputError,
    Interrupted,
    LlmctlError,
    ProviderError,
    UsageError,
    printable,
)
from llmctl.search.filters import where_list

if TYPE_CHECKING:
    import asyncio

    from llmctl.config import ServeConfig
    from llmctl.workspace import Workspace

TOKEN_ENV = "LLMCTL_SERVE_TOKEN"
MAX_BODY = 1 << 20
DRAINED = 16 * MAX_BODY  # a body up to this size is read to its end before the 413, so the client sees it
BACKLOG = 2048
STATUS_OF = [(UsageError, 400), (InputError, 400), (IndexStateError, 409), (BudgetExceeded, 402), (ProviderError, 502),
             (BusyError, 503), (Interrupted, 503), (ConfigError, 500), (LlmctlError, 500)]
SEARCH_KEYS = {"query", "k", "where", "rerank"}
QUERY_KEYS = SEARCH_KEYS | {"question", "stream", "tag", "no_llm"}
PREFLIGHT = {"Access-Control-Allow-Methods": "GET, POST", "Access-Control-Allow-Headers": "Authorization, Content-Type",
             "Access-Control-Max-Age": "600"}


class BadRequest(InputError):
    pass


class HTTPError(Exception):
    """An answer decided here (401, 403, 404, 408, 413), not by llmctl's core."""

    def __init__(self, code: int, message: str, *, close: bool = False):
        super().__init__(message)
        self.code, self.message, self.close = code, message, close


class ClientGone(Exception):
    """The client of a streamed answer disconnected: stop generating it."""


# -- who may call ---------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MIN_TOKEN_CHARS = 16  # beyond this machine: a token worth guessing for


def check_token(host: str) -> str | None:
    token = os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(host):
        raise ConfigError(f"serving on {host} (beyond this machine) needs a token: export {TOKEN_ENV}=<secret> "
                          "and send 'Authorization: Bearer <secret>', or use --host 127.0.0.1")
    if token is not None and not all(" " < ch < "\x7f" for ch in token):
        # a header carries ASCII; a space or an accent would make every request a 401
        raise ConfigError(f"{TOKEN_ENV} holds a space or a character outside ASCII, which no client can send "
                          "in an Authorization header: use letters, digits and punctuation (e.g. openssl rand -hex 24)")
    if token is not None and not is_loopback(host) and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{TOKEN_ENV} has {len(token)} characters; serving on {host} needs at least "
                          f"{MIN_TOKEN_CHARS} (e.g. openssl rand -hex 24)")
    return token


def host_name(header: str) -> str:
    """The name in a Host header: 'LocalHost:8765' -> 'localhost', '[::1]:8765' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def is_loopback_origin(origin: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and is_loopback(parts.hostname or "")


@dataclass(frozen=True)
class Guard:
    """The DNS-rebinding rules (Host, Origin), CORS for configured origins, and the token."""

    check_host: bool  # bound to loopback, or serve.allowed_hosts set
    hosts: frozenset[str]  # Host names admitted besides loopback ones (lowercase, no port)
    origins: frozenset[str]  # browser origins admitted besides loopback ones; these get CORS headers
    token: str | None

    @classmethod
    def of(cls, bind: str, settings: ServeConfig, token: str | None) -> Guard:
        return cls(check_host=is_loopback(bind) or bool(settings.allowed_hosts),
                   hosts=frozenset(h.strip().lower() for h in settings.allowed_hosts),
                   origins=frozenset(o.strip().lower().rstrip("/") for o in settings.allowed_origins), token=token)

    def refusal(self, headers: Headers) -> HTTPError | None:
        """Why a request may not reach the API (403), or None."""
        host = headers.get("host")
        if self.check_host and host is not None and not self._host_ok(host_name(host)):
            return HTTPError(403, f"Host {host!r} is not this machine; llmctl serve refuses it (DNS rebinding "
                                  "guard). Call it as localhost or 127.0.0.1, or add the name to serve.allowed_hosts")
        origin = headers.get("origin")
        if origin is not None and not (is_loopback_origin(origin) or self.cors_origin(origin)):
            return HTTPError(403, f"Origin {origin!r} may not call llmctl serve: a web page from another site. "
                                  "Add it to serve.allowed_origins to allow it")
        return None

    def _host_ok(self, name: str) -> bool:
        return is_loopback(name) or name in self.hosts

    def cors_origin(self, origin: str | None) -> str | None:
        """``origin`` when it is configured (it gets CORS headers), else None."""
        return origin if origin is not None and origin.strip().lower().rstrip("/") in self.origins else None

    def authorised(self, headers: Headers) -> bool:
        if self.token is None:
            return True
        scheme, _, value = headers.get("authorization", "").strip().partition(" ")
        # the scheme's case does not matter (RFC 9110 11.1); the token is compared in constant time
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())


class Gate:
    """ASGI middleware in front of the routes: the request log, the Host/Origin guard (403), CORS
    for configured origins (preflights answered here), then the token (401)."""

    def __init__(self, app: ASGIApp, guard: Guard, quiet: bool):
        self.app, self.guard, self.quiet = app, guard, quiet

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = send if self.quiet else _logged(scope, send)
        headers = Headers(scope=scope)
        refused = self.guard.refusal(headers)
        cors = self.guard.cors_origin(headers.get("origin"))
        extra = {"Access-Control-Allow-Origin": cors, "Vary": "Origin"} if cors else {}
        if refused is None and cors and scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await Response(status_code=204, headers={**extra, **PREFLIGHT})(scope, receive, send)
            return
        if refused is None and not self.guard.authorised(headers):
            refused = HTTPError(401, f"missing or wrong token: send 'Authorization: Bearer ${TOKEN_ENV}'")
        if refused is not None:
            await http_error(refused, extra)(scope, receive, send)
            return
        await self.app(scope, receive, _with_headers(send, extra) if extra else send)


def _with_headers(send: Send, headers: dict[str, str]) -> Send:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *raw]}
        await send(message)

    return sending


def _logged(scope: Scope, send: Send) -> Send:
    client = (scope.get("client") or ("-",))[0]
    # no route reads the query string: a token put there stays out; the path as sent, escaped, so a
    # request cannot forge a log line or put escape sequences on the operator's terminal
    path = printable(scope["path"]) + ("?…" if scope.get("query_string") else "")

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            try:
                sys.stderr.write(f"{time.strftime('%H:%M:%S')} {client} \"{scope['method']} {path} "
                                 f"HTTP/{scope['http_version']}\" {message['status']}\n")
            except (OSError, LlmctlError):  # a log on a full disk or a closed stderr: the answer still goes out
                pass
        await send(message)

    return sending


# -- JSON in and out ------------------------------------------------------------------
class JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False).encode()


def error_body(exc: Exception) -> tuple[int, dict]:
    for kind, code in STATUS_OF:
        if isinstance(exc, kind):
            return code, {"error": {"message": str(exc), "type": type(exc).__name__}}
    return 500, {"error": {"message": f"internal error: {type(exc).__name__}: {exc}", "type": "InternalError"}}


def http_error(exc: HTTPError, headers: dict[str, str] | None = None) -> JSON:
    extra = {**(headers or {}), **({"Connection": "close"} if exc.close else {})}
    return JSON({"error": {"message": exc.message, "type": "HTTPError"}}, exc.code, headers=extra)


def declared_length(headers: Headers) -> int | None:
    raw = headers.get("content-length")
    if raw is None:
        return None
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()):
        raise HTTPError(400, f"bad Content-Length {raw!r}", close=True)
    return int(raw)


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, at most ``limit`` bytes (413) arriving within ``timeout`` seconds (408). Either
    closes the connection; a body up to DRAINED bytes is read to its end first."""
    declared = declared_length(request.headers)
    too_big = HTTPError(413, f"request body over {limit} bytes", close=True)
    if declared is not None and declared > DRAINED:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    with anyio.move_on_after(timeout) as deadline:
        async for chunk in request.stream():
            size += len(chunk)
            if size > DRAINED:
                break
            if size <= limit:
                chunks.append(chunk)
    if deadline.cancelled_caught:
        raise HTTPError(408, f"the request body did not arrive within {timeout:g} s (serve.read_timeout)", close=True)
    if size > limit:
        raise too_big
    return b"".join(chunks)


async def read_json(request: Request) -> dict:
    raw = await read_body(request, MAX_BODY, request.app.state.settings.read_timeout)
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        # Python's advice for a huge number (raise its own digit limit) is not the client's
        why = "a number has too many digits" if "int_max_str_digits" in str(exc) else str(exc)
        raise BadRequest(f"the body is not JSON ({why})") from None
    except RecursionError:
        raise BadRequest("the body nests JSON too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def parse_search(body: dict, keys: set[str]) -> dict:
    """A JSON body as Workspace.query's arguments. Only the transport is checked here (unknown
    fields; ``where`` may be an object); the Workspace validates the values (UsageError: 400)."""
    unknown = sorted(set(body) - keys)
    if unknown:
        raise BadRequest(f"unknown field(s) {unknown}; accepted: {sorted(keys)}")
    try:
        where = where_list(body.get("where")) if body.get("where") is not None else None
    except UsageError as exc:  # the transport's shape: a 400 BadRequest, like an unknown field
        raise BadRequest(str(exc)) from None
    if "query" in body and "question" in body:
        raise BadRequest("give the text as question or as query, not both")
    name = "question" if "question" in keys else "query"
    if "query" not in body and name not in body:
        raise BadRequest(f"missing field {name!r}: the text to {'answer' if name == 'question' else 'search for'}")
    return {"text": body.get("query", body.get("question")), "k": body.get("k"), "where": where,
            "rerank": body.get("rerank")}


def search_payload(ws: Workspace, args: dict) -> dict:
    result = ws.query(args["text"], k=args["k"], where=args["where"], rerank=args["rerank"], use_llm=False)
    d = result.to_dict()
    return {"query": d["question"], "hits": d["hits"], "confidence": d["confidence"], "rerank": d["rerank"],
            "warnings": d["warnings"], "latency_ms": d["latency_ms"]}


# -- endpoints ------------------------------------------------------------------------
def _ws(request: Request) -> Workspace:
    return request.app.state.ws


async def index(request: Request) -> Response:
    return JSON({"service": "llmctl", "endpoints": ENDPOINTS})


async def health(request: Request) -> Response:
    return JSON({"ok": True})


async def status(request: Request) -> Response:
    return JSON((await run_in_threadpool(_ws(request).status)).to_dict())


async def search(request: Request) -> Response:
    args = parse_search(await read_json(request), SEARCH_KEYS)
    return JSON(await run_in_threadpool(search_payload, _ws(request), args))


async def chunk(request: Request) -> Response:
    return await _by_id(request, "chunk", _ws(request).chunk)


async def document(request: Request) -> Response:
    return await _by_id(request, "document", _ws(request).document)


async def _by_id(request: Request, what: str, get: Callable[[str], dict | None]) -> Response:
    """GET /<things>/<id>: the record, or 404."""
    key = request.path_params["key"]
    got = await run_in_threadpool(get, key)
    if got is None:
        raise HTTPError(404, f"no {what} {key!r} in the index")
    return JSON(got)


async def query(request: Request) -> Response:
    body = await read_json(request)
    args = parse_search(body, QUERY_KEYS)
    flags = {name: body.get(name, False) for name in ("stream", "no_llm")}
    for name, value in flags.items():  # the transport's own fields: the Workspace never sees them
        if not isinstance(value, bool):
            raise BadRequest(f"{name}: expected true or false, got {value!r}")
    # the body's own "stream" wins; without it, a client that accepts only events gets them
    stream = flags["stream"] if "stream" in body else "text/event-stream" in request.headers.get("accept", "")
    kw = {"k": args["k"], "where": args["where"], "rerank": args["rerank"], "tag": body.get("tag"),
          "use_llm": not flags["no_llm"]}
    ws = _ws(request)
    if stream:
        return EventStream(partial(_answer_events, ws, args["text"], kw))
    result = await _unless_abandoned(request, partial(ws.query, args["text"], **kw))
    return JSON(result.to_dict(), error_body(result.error)[0] if result.error else 200)


async def _unless_abandoned(request: Request, work: Callable[[], Any]) -> Any:
    """``work()`` on the thread pool; if the client disconnects meanwhile, the answer being
    generated stops (``client.ABANDONED``): nobody would read it, and the provider bills it."""
    from llmctl.llm.client import ABANDONED

    gone = threading.Event()

    async def watch() -> None:
        while not gone.is_set():
            if await request.is_disconnected():
                gone.set()
            await anyio.sleep(0.25)

    failed: Exception | None = None
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watch)
        token = ABANDONED.set(gone)  # copied into the worker thread's context
        try:
            result = await run_in_threadpool(work)
        except Exception as exc:  # noqa: BLE001 - raised below, outside the group (not as an ExceptionGroup)
            failed = exc
        finally:
            ABANDONED.reset(token)
            tasks.cancel_scope.cancel()
    if failed is not None:
        raise failed
    return result


Emit = Callable[[str, Any], None]


def _answer_events(ws: Workspace, text: str, kw: dict, emit: Emit) -> None:
    """A streamed answer as events: token*, warning*, error? (an answer refused or failed after
    retrieval, as the status of a JSON reply would say), then result."""
    result = ws.query(text, on_token=lambda t: emit("token", {"text": t}),
                      notify=lambda w: emit("warning", {"message": w}), **kw)
    payload = result.to_dict()
    if payload["error"]:
        emit("error", payload["error"])
    emit("result", payload)


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class EventStream(StreamingResponse):
    """Server-sent events from ``produce(emit)``, a blocking function run on the threadpool.

    The headers wait for the first event: a failure before it (a bad question, no index) is a
    JSON error with its status, as without streaming; after it, an ``error`` event. Once the
    client is gone, ``emit`` raises ClientGone, so an abandoned answer stops generating."""

    def __init__(self, produce: Callable[[Emit], None]):
        super().__init__(_nothing(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.produce = produce

    async def stream_response(self, send: Send) -> None:
        sender, items = anyio.create_memory_object_stream[bytes | Exception](math.inf)

        def put(item: bytes | Exception) -> None:
            try:
                anyio.from_thread.run_sync(sender.send_nowait, item)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                raise ClientGone from None

        def run() -> None:
            try:
                self.produce(lambda name, data: put(_event(name, data)))
            except ClientGone:
                pass
            except Exception as exc:  # noqa: BLE001 - the client's to read, as JSON or as an event
                with contextlib.suppress(ClientGone):
                    put(exc)

        async def produce() -> None:
            with sender:  # closed when the producer returns: the stream ends
                await run_in_threadpool(run)

        started = False
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(produce)
            with items:  # closed first when the client leaves: the producer's next emit fails
                async for item in items:
                    if isinstance(item, Exception) and not started:
                        code, payload = error_body(item)
                        reply = JSON(payload, code)
                        await send({"type": "http.response.start", "status": code, "headers": reply.raw_headers})
                        await send({"type": "http.response.body", "body": reply.body})
                        return
                    if not started:
                        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
                        started = True
                    chunk = item if isinstance(item, bytes) else _event("error", error_body(item)[1]["error"])
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if not started:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _nothing():
    return
    yield  # an async generator with no items: EventStream sends its own body


# -- errors as JSON -------------------------------------------------------------------
async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return http_error(exc)


async def on_routing_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 / 405 (with its Allow header), in serve's JSON."""
    assert isinstance(exc, HTTPException)
    path = request.url.path
    message = {404: f"no such endpoint {path}; see GET /",
               405: f"{path} takes {(exc.headers or {}).get('Allow', '').replace(', ', ' or ')}"}.get(exc.status_code,
                                                                                                    exc.detail)
    return JSON({"error": {"message": message, "type": "HTTPError"}}, exc.status_code, headers=exc.headers)


async def on_llmctl_error(request: Request, exc: Exception) -> Response:
    code, payload = error_body(exc)
    return JSON(payload, code)


async def on_disconnect(request: Request, exc: Exception) -> Response:
    return Response(status_code=400)  # nobody is left to read it


async def on_bug(request: Request, exc: Exception) -> Response:
    """Anything else is a bug: a JSON 500 here, and Starlette re-raises it for uvicorn's traceback."""
    code, payload = error_body(exc)
    return JSON(payload, code)


ROUTES = [Route("/", index, methods=["GET"]), Route("/health", health, methods=["GET"]),
          Route("/status", status, methods=["GET"]), Route("/search", search, methods=["POST"]),
          Route("/query", query, methods=["POST"]), Route("/chunks/{key:path}", chunk, methods=["GET"]),
          Route("/documents/{key:path}", document, methods=["GET"])]
# As a client writes them, the converter left out: "GET /chunks/{key}" (GET /chunks alone is a 404).
ENDPOINTS = sorted(f"{m} " + re.sub(r"{(\w+):\w+}", r"{\1}", r.path) for r in ROUTES for m in r.methods or ()
                   if m != "HEAD")


def build_app(ws: Workspace, *, host: str = "127.0.0.1", token: str | None = None, quiet: bool = True) -> ASGIApp:
    """The API over ``ws`` as an ASGI app, guarded for a server bound to ``host``."""
    app = Starlette(routes=ROUTES, exception_handlers={
        HTTPError: on_http_error, HTTPException: on_routing_error, LlmctlError: on_llmctl_error,
        ClientDisconnect: on_disconnect, Exception: on_bug})
    app.router.redirect_slashes = False
    app.state.ws, app.state.settings = ws, ws.cfg.serve
    return Gate(app, Guard.of(host, ws.cfg.serve, token), quiet)


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering a request it cannot parse (``Content-Length: -1``, a
    broken request line or header) in serve's JSON instead of plain text; closing a connection
    whose request line and headers have not all arrived within ``header_timeout`` seconds (uvicorn
    waits for ever, so idle or trickling connections could hold every file descriptor); and
    closing at once connections beyond ``max_connections``."""

    header_timeout = 30.0
    max_connections = 1000
    _timer: asyncio.TimerHandle | None = None
    _heard = False  # bytes of the awaited request arrived

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.abort()
            return
        self._expect_request()

    def _expect_request(self) -> None:
        """Start the clock for the next request's line and headers (on a new or kept-alive connection)."""
        self._stop_clock()
        self._cycle, self._heard = self.cycle, False
        self._timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _stop_clock(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        self._heard = True
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self._timer is not None and self.cycle is not self._cycle:  # a request's headers are in
            self._stop_clock()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._expect_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if not self._heard:  # nothing sent: just close
            self.transport.close()
            return
        self._reply_and_close(408, "RequestTimeout", f"the request line and headers did not arrive within "
                                                     f"{self.header_timeout:g} s (serve.read_timeout)")

    def send_400_response(self, msg: str) -> None:
        self._reply_and_close(400, "BadRequest", "not a valid HTTP/1.1 request (request line, a header, or "
                                                 "Content-Length)")

    def _reply_and_close(self, status: int, kind: str, message: str) -> None:
        body = json.dumps({"error": {"message": message, "type": kind}}).encode()
        reason = {400: b"Bad Request", 408: b"Request Timeout"}[status]
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, reason, len(body), body))
        self.transport.close()


class AcceptErrorsOncePerMinute(logging.Filter):
    """asyncio logs every failed accept, with a traceback, when the process runs out of file
    descriptors: thousands of lines a second under a burst of connections. One line a minute."""

    def __init__(self) -> None:
        super().__init__()
        self.last = -math.inf

    def filter(self, record: logging.LogRecord) -> bool:
        if "out of system resource" not in record.getMessage():
            return True
        now = time.monotonic()
        if now - self.last < 60:
            return False
        self.last = now
        record.exc_info, record.exc_text = None, None
        record.msg, record.args = f"{record.getMessage()} (too many connections; repeats hidden for a minute)", ()
        return True


def server_for(app: ASGIApp, *, quiet: bool = True, grace: float = 3.0, read_timeout: float = 30.0,
               max_connections: int | None = None) -> uvicorn.Server:
    """A uvicorn server for ``app``: h11 on asyncio, JSON for unparsable requests, a request's line and
    headers due within ``read_timeout`` seconds, at most ``max_connections`` open (default: 1,000, or
    half the file descriptors this process may open, so that the rest stay for the index), no
    logging setup of its own (serve logs requests itself)."""
    import resource

    if max_connections is None:
        files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        max_connections = 1000 if files == resource.RLIM_INFINITY else max(16, min(1000, files // 2))
    protocol = type("Protocol", (_Protocol,), {"header_timeout": read_timeout, "max_connections": max_connections})
    accept_log = logging.getLogger("asyncio")
    if not any(isinstance(f, AcceptErrorsOncePerMinute) for f in accept_log.filters):
        accept_log.addFilter(AcceptErrorsOncePerMinute())
    return uvicorn.Server(uvicorn.Config(
        app, http=protocol, loop="asyncio", lifespan="off", log_config=None, access_log=False,
        log_level="error" if quiet else "warning", server_header=False, backlog=BACKLOG,
        timeout_graceful_shutdown=math.ceil(grace)))


def listen(host: str, port: int) -> socket.socket:
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                    backlog=BACKLOG)
    except OSError as exc:
        import errno

        fix = ("pick another --port" if exc.errno in (errno.EADDRINUSE, errno.EACCES)
               else "check --host: an address of this machine, e.g. 127.0.0.1")
        why = str(exc.strerror or exc).split(" (while attempting")[0]  # create_server's own addition
        raise ConfigError(f"cannot listen on {host}:{port}: {why}; {fix}") from None


def serve(ws: Workspace, host: str, port: int, *, quiet: bool = False, ready=None, watch: list | None = None) -> None:
    """Serve until Ctrl-C / SIGTERM. ``ready(url)`` is called once the socket listens.
    ``watch``: paths to keep in sync meanwhile (``ingest --watch`` on a thread)."""
    token = check_token(host)
    if watch:  # a path that is not there: refused now, as ingest refuses it, not a warning while serving
        from llmctl.ingest.discover import check_paths

        check_paths([Path(p) for p in watch])
    try:
        notes = ws.warm()
    except IndexStateError as exc:  # no index yet: serve anyway, requests say what to do
        notes = [] if watch else [str(exc)]  # with --watch, the watcher is about to build it
    for note in notes:
        sys.stderr.write(f"Warning: {note}\n")
    sock = listen(host, port)
    server = server_for(build_app(ws, host=host, token=token, quiet=quiet), quiet=quiet,
                        read_timeout=ws.cfg.serve.read_timeout)
    running = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="llmctl-serve")
    running.start()
    if ready:
        ready(f"http://{host if ':' not in host else f'[{host}]'}:{sock.getsockname()[1]}")
    stop_watching = threading.Event()
    watcher = threading.Thread(target=_watch, args=(ws, watch, stop_watching), daemon=True, name="llmctl-watch")
    if watch:
        watcher.start()
    from llmctl.interrupts import stop_requests

    try:
        with stop_requests() as stop:
            while not stop and running.is_alive():
                time.sleep(0.2)
    finally:
        stop_watching.set()  # a sync stops at its next safe point, what it embedded committed
        server.should_exit = True
        running.join(timeout=10)
        if watcher.is_alive():  # not left running in native code while the interpreter exits (an abort)
            watcher.join()
        sock.close()


def _watch(ws: Workspace, paths: list, stop: threading.Event) -> None:
    def log(what) -> None:
        if isinstance(what, Exception):
            sys.stderr.write(f"Warning: watch: {what}\n")
        else:  # the line and the skipped-file warnings ingest --watch prints
            from llmctl.render import sync_summary, sync_warnings

            sys.stderr.write(f"{time.strftime('%H:%M:%S')} watch: {sync_summary(what)}\n")
            sync_warnings(what)

    try:
        ws.watch(paths, stop=stop, on_report=log, on_error=log)
    except Exception as exc:  # noqa: BLE001 - the server keeps serving what is indexed
        log(exc)
        sys.stderr.write("Warning: watch: stopped; the server keeps serving the index as it is\n")
