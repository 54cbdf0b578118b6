"""``llmctl serve``: a warm local JSON API over one Workspace.

The standard library's threading HTTP server is enough here: one local client or a
handful, JSON in and out, server-sent events for streamed answers. It adds no dependency
and no event loop around code that is synchronous anyway (ONNX, SQLite, Chroma's engine).

    POST /search  {"query": "...", "k": 5, "where": ["ext=md"]}   -> {"hits": [...], ...}
    POST /query   {"question": "...", "stream": false}            -> query --json's document
    GET  /chunks/<id>, GET /documents/<doc_id>, GET /status, GET /health

Errors are JSON ``{"error": {"message", "type"}}`` with a 4xx/5xx status, never a crash.
Models load once; each request reads the index published last (``Workspace.retriever``).
Binding beyond loopback needs a token (``$LLMCTL_SERVE_TOKEN``), sent as a Bearer header.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from llmctl.errors import (
    BudgetExceeded,
    BusyError,
    ConfigError,
    IndexStateError,
    InputError,
    Interrupted,
    LlmctlError,
    ProviderError,
)

TOKEN_ENV = "LLMCTL_SERVE_TOKEN"
MAX_BODY = 1 << 20
STATUS_OF = [(InputError, 400), (IndexStateError, 409), (BudgetExceeded, 402), (ProviderError, 502),
             (BusyError, 503), (Interrupted, 503), (ConfigError, 500), (LlmctlError, 500)]
SEARCH_KEYS = {"query", "k", "where", "rerank"}
QUERY_KEYS = SEARCH_KEYS | {"question", "stream", "tag", "no_llm"}


class BadRequest(InputError):
    pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token(host: str) -> str | None:
    token = os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(host):
        raise ConfigError(f"serving on {host} (beyond this machine) needs a token: export {TOKEN_ENV}=<secret> "
                          "and send 'Authorization: Bearer <secret>', or use --host 127.0.0.1")
    return token


def parse_search(body: dict, keys: set[str]) -> dict:
    """Validated arguments for Workspace.search/query from a JSON body."""
    unknown = sorted(set(body) - keys)
    if unknown:
        raise BadRequest(f"unknown field(s) {unknown}; accepted: {sorted(keys)}")
    text = body.get("query", body.get("question"))
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("'query' must be a non-empty string")
    k = body.get("k")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 1000):
        raise BadRequest("'k' must be an integer from 1 to 1000")
    where = body.get("where") or []
    if isinstance(where, dict):
        where = [f"{f}={v}" for f, v in where.items()]
    if not isinstance(where, list) or not all(isinstance(w, str) for w in where):
        raise BadRequest("'where' must be a list of 'field=value' strings or an object {field: value}")
    rerank = body.get("rerank")
    if rerank is not None and not isinstance(rerank, bool):
        raise BadRequest("'rerank' must be true or false")
    from llmctl.search.filters import parse_where

    parse_where(where)
    return {"text": text, "k": k, "where": where, "rerank": rerank}


def search_payload(ws, args: dict) -> dict:
    result = ws.query(args["text"], k=args["k"], where=args["where"], rerank=args["rerank"], use_llm=False)
    d = result.to_dict()
    return {"query": d["question"], "hits": d["hits"], "confidence": d["confidence"], "rerank": d["rerank"],
            "warnings": d["warnings"], "latency_ms": d["latency_ms"]}


def error_body(exc: Exception) -> tuple[int, dict]:
    for kind, code in STATUS_OF:
        if isinstance(exc, kind):
            return code, {"error": {"message": str(exc), "type": type(exc).__name__}}
    return 500, {"error": {"message": f"internal error: {type(exc).__name__}: {exc}", "type": "InternalError"}}


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    # -- plumbing ---------------------------------------------------------------------
    def log_message(self, fmt, *args) -> None:
        if not self.server.quiet:
            sys.stderr.write(f"{time.strftime('%H:%M:%S')} {self.address_string()} {fmt % args}\n")

    def _send(self, code: int, payload: dict) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BadRequest("bad Content-Length") from None
        if length > MAX_BODY:
            self.close_connection = True
            if length <= 16 * MAX_BODY:  # read it anyway, so the client is not cut off mid-send
                while length > 0 and (got := self.rfile.read(min(length, 1 << 16))):
                    length -= len(got)
            raise _Status(413, f"request body over {MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not JSON ({exc})") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body

    def _authorised(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def _handle(self, method: str) -> None:
        try:
            if not self._authorised():
                raise _Status(401, f"missing or wrong token: send 'Authorization: Bearer ${TOKEN_ENV}'")
            first = self.path.split("?")[0].strip("/").split("/")[0]  # "/chunks/ID" -> "chunks"
            route = ROUTES.get((method, first))
            if route is None:
                allowed = sorted(m for m, prefix in ROUTES if prefix == first)
                if allowed:
                    raise _Status(405, f"{self.path} takes {' or '.join(allowed)}")
                raise _Status(404, f"no such endpoint {self.path}; see GET /")
            route(self)
        except _Status as exc:
            self._send(exc.code, {"error": {"message": exc.message, "type": "HTTPError"}})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - a request never takes the server down
            code, payload = error_body(exc)
            if code == 500 and not isinstance(exc, LlmctlError):
                import traceback

                traceback.print_exc(file=sys.stderr)
            self._send(code, payload)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    # -- endpoints --------------------------------------------------------------------
    def index(self) -> None:
        self._send(200, {"service": "llmctl", "endpoints": sorted(f"{m} /{p}" for m, p in ROUTES)})

    def health(self) -> None:
        self._send(200, {"ok": True})

    def status(self) -> None:
        self._send(200, self.server.ws.status().to_dict())

    def search(self) -> None:
        self._send(200, search_payload(self.server.ws, parse_search(self._body(), SEARCH_KEYS)))

    def chunk(self) -> None:
        self._by_id("chunk", self.server.ws.chunk)

    def document(self) -> None:
        self._by_id("document", self.server.ws.document)

    def _by_id(self, what: str, get) -> None:
        """GET /<things>/<id>: the record, or 404."""
        path = self.path.split("?")[0]
        key = unquote(path.split("/", 2)[2]) if path.count("/") >= 2 else ""
        got = get(key)
        if got is None:
            raise _Status(404, f"no {what} {key!r} in the index")
        self._send(200, got)

    def query(self) -> None:
        body = self._body()
        args = parse_search(body, QUERY_KEYS)
        stream = body.get("stream", False) or "text/event-stream" in self.headers.get("Accept", "")
        kw = {"k": args["k"], "where": args["where"], "rerank": args["rerank"], "tag": body.get("tag"),
              "use_llm": not body.get("no_llm", False)}
        if not stream:
            result = self.server.ws.query(args["text"], **kw)
            code = error_body(result.error)[0] if result.error else 200
            self._send(code, result.to_dict())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.close_connection = True  # the stream ends when the connection closes
        self.end_headers()

        def event(name: str, data) -> None:
            self.wfile.write(f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode())
            self.wfile.flush()

        try:
            result = self.server.ws.query(args["text"], on_token=lambda t: event("token", {"text": t}),
                                          notify=lambda w: event("warning", {"message": w}), **kw)
            event("result", result.to_dict())
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as exc:  # noqa: BLE001 - reported in the stream; headers are gone
            event("error", error_body(exc)[1]["error"])


class _Status(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


ROUTES = {("GET", ""): Handler.index, ("GET", "health"): Handler.health, ("GET", "status"): Handler.status,
          ("POST", "search"): Handler.search, ("POST", "query"): Handler.query,
          ("GET", "chunks"): Handler.chunk, ("GET", "documents"): Handler.document}


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, ws, host: str, port: int, token: str | None, quiet: bool = False):
        self.ws, self.token, self.quiet = ws, token, quiet
        super().__init__((host, port), Handler)


def serve(ws, host: str, port: int, *, quiet: bool = False, ready=None, watch: list | None = None) -> None:
    """Serve until Ctrl-C / SIGTERM. ``ready(url)`` is called once the socket listens.
    ``watch``: paths to keep in sync meanwhile (``ingest --watch`` on a thread)."""
    token = check_token(host)
    try:
        ws.warm()
    except IndexStateError as exc:  # no index yet: serve anyway, requests say what to do
        sys.stderr.write(f"Warning: {exc}\n")
    try:
        server = Server(ws, host, port, token, quiet)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}): pick another --port") from None
    url = f"http://{host if ':' not in host else f'[{host}]'}:{server.server_address[1]}"
    if ready:
        ready(url)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    stop_watching = threading.Event()
    if watch:
        threading.Thread(target=_watch, args=(ws, watch, stop_watching), daemon=True).start()
    from llmctl.interrupts import stop_requests

    try:
        with stop_requests() as stop:
            while not stop:
                time.sleep(0.2)
    finally:
        stop_watching.set()
        server.shutdown()
        server.server_close()


def _watch(ws, paths: list, stop: threading.Event) -> None:
    def log(what) -> None:
        if isinstance(what, Exception):
            sys.stderr.write(f"Warning: watch: {what}\n")
        else:
            c = what.to_dict()["chunks"]
            sys.stderr.write(f"{time.strftime('%H:%M:%S')} watch: synced {what.files_seen} file(s), "
                             f"{c['added']} chunk(s) embedded, {c['deleted']} deleted, {c['total']} in the index\n")

    try:
        ws.watch(paths, stop=stop, on_report=log, on_error=log)
    except Exception as exc:  # noqa: BLE001 - the server keeps serving what is indexed
        log(exc)
        sys.stderr.write("Warning: watch: stopped; the server keeps serving the index as it is\n")
