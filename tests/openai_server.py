"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions protocol.

Replies are scripted per request (FIFO); with an empty script it answers
``default_text``. Every request is recorded (headers and JSON body) for assertions.
The server thread is a daemon and is shut down by the fixture; a watchdog also
stops it after ``max_lifetime`` seconds so it can never outlive a test run.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    """A handler's error (a client that hung up mid-reply) goes to the test process's own stderr,
    never into the output of a command under test running in this process (tests/cli.py's invoke)."""

    def handle_error(self, request, client_address):
        import traceback

        print(f"fake OpenAI server: error handling a request from {client_address}", file=sys.__stderr__)
        traceback.print_exc(file=sys.__stderr__)


@dataclass
class Reply:
    """One scripted reply. kind: ok | status | bad_json | stall | drop | raw | cut.

    raw: a 200 event stream whose body is ``raw`` exactly (malformed streams); cut: the
    connection closes after ``stall_after`` chunks, without [DONE]."""

    kind: str = "ok"
    text: str = ""
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: dict | None = None
    usage: bool = True
    delay: float = 0.0  # seconds before the first byte
    stall_after: int = 0  # stall: chunks sent before going silent
    stall_for: float = 5.0
    raw: bytes = b""
    finish_reason: str = "stop"
    token_interval: float = 0.002  # seconds between streamed chunks


class FakeOpenAI:
    def __init__(self, default_text: str = "The sources say so [1].", max_lifetime: float = 900):
        self.script: deque[Reply] = deque()
        self.keyed: list[tuple[str, deque[Reply]]] = []  # see on()
        self.responder = None  # body -> Reply | None: replies computed from the request
        # The Batch API (files + batches): see _batch_step. A batch runs when polled while `release` is set.
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.release = threading.Event()
        self.release.set()
        self.batch_outcome = "completed"  # completed | expired (after `expire_after` items) | failed
        self.expire_after = 0
        self.failing: list[str] = []  # requests whose messages contain one of these fail (HTTP 400 item)
        self.requests: list[dict] = []
        self.streams: list[str] = []  # how each streamed answer ended: "done" | "client left"
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.default_text = default_text
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as separate small writes: with Nagle's algorithm on, a client
            # that keeps the connection alive (llmctl reuses its clients) waits ~40 ms for the delayed
            # ACK on every reply. Real servers (uvicorn, nginx) set TCP_NODELAY too.
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_GET(self):
                with server.lock:
                    server.requests.append({"path": self.path, "method": "GET", "at": time.monotonic()})
                    if self.path.startswith("/v1/batches/"):
                        batch = server.batches.get(self.path.rsplit("/", 1)[1])
                        if batch is None:
                            return self._json(404, {"error": {"message": "no such batch"}})
                        server._batch_step(batch)
                        return self._json(200, batch)
                    if self.path.startswith("/v1/files/") and self.path.endswith("/content"):
                        return self._raw(200, server.files[self.path.split("/")[3]], "application/jsonl")
                self._json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if len(raw) < length:  # the client went away mid-request (a kill -9): nothing to record
                    self.close_connection = True
                    return
                if self.path.endswith("/files"):
                    with server.lock:
                        server.requests.append({"path": self.path, "at": time.monotonic()})
                        return self._json(200, server._upload(self.headers.get("Content-Type", ""), raw))
                body = json.loads(raw or b"{}")
                if self.path.endswith("/batches"):
                    with server.lock:
                        server.requests.append({"path": self.path, "body": body, "at": time.monotonic()})
                        return self._json(200, server._create_batch(body))
                with server.lock:
                    entry = {"path": self.path, "body": body, "at": time.monotonic(),
                             "headers": {k.lower(): v for k, v in self.headers.items()}}
                    server.requests.append(entry)
                    reply = server.reply_to(body)
                    entry["kind"] = reply.kind
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._reply(body, reply)
                finally:
                    with server.lock:
                        server.in_flight -= 1
                        entry["done"] = time.monotonic()  # the reply was sent

            def _reply(self, body, reply: Reply):
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.kind == "status":
                    payload = reply.body or {"error": {"message": f"scripted {reply.status}",
                                                       "type": "error", "code": None}}
                    return self._json(reply.status, payload, reply.headers)
                if reply.kind == "bad_json":
                    return self._raw(200, b"{this is not json", "application/json")
                if reply.kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                if self.path.endswith("/embeddings"):
                    return self._json(200, server.embeddings(body, reply), reply.headers)
                if body.get("stream"):
                    return self._stream(body, reply)
                return self._json(200, server.completion(body, reply))

            def _stream(self, body, reply: Reply):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.close_connection = True
                pieces = split_tokens(reply.text or server.default_text)
                model = body.get("model", "fake-model")
                if reply.kind == "raw":
                    self.wfile.write(reply.raw)
                    self.wfile.flush()
                    return
                try:
                    for i, piece in enumerate(pieces):
                        if reply.kind == "stall" and i == reply.stall_after:
                            time.sleep(reply.stall_for)
                            return
                        if reply.kind == "cut" and i == reply.stall_after:
                            self.connection.shutdown(2)
                            return
                        self._event({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0,
                                     "model": model, "choices": [{"index": 0, "delta": {"content": piece},
                                                                  "finish_reason": None}]}, reply.token_interval)
                    self._event({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0,
                                 "model": model,
                                 "choices": [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}]})
                    if reply.usage and (body.get("stream_options") or {}).get("include_usage"):
                        self._event({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0,
                                     "model": model, "choices": [], "usage": usage_of(body, reply)})
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                    server.streams.append("done")
                except (BrokenPipeError, ConnectionResetError):
                    server.streams.append("client left")

            def _event(self, obj, interval: float = 0.002):
                self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
                self.wfile.flush()
                time.sleep(interval)

            def _json(self, status, obj, headers=None):
                self._raw(status, json.dumps(obj).encode(), "application/json", headers)

            def _raw(self, status, data: bytes, ctype: str, headers=None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.watchdog = threading.Timer(max_lifetime, self.stop)
        self.watchdog.daemon = True

    def on(self, text: str, *replies: Reply) -> None:
        """Replies, in order, for requests whose messages contain ``text``: concurrent requests
        get their own replies whatever order they arrive in. Keys are tried in the order given."""
        self.keyed.append((text, deque(replies)))

    def reply_to(self, body: dict) -> Reply:
        inputs = body.get("input")
        content = "\n".join(str(m.get("content", "")) for m in body.get("messages") or []) + "\n".join(
            [inputs] if isinstance(inputs, str) else inputs or [])
        for text, replies in self.keyed:
            if replies and text in content:
                return replies.popleft()
        made = self.responder(body) if self.responder else None
        if made is not None:
            return made
        return self.script.popleft() if self.script else Reply(text=self.default_text)

    # -- the Batch API ----------------------------------------------------------------------------
    def _upload(self, content_type: str, raw: bytes) -> dict:
        boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
        data = b""
        for part in raw.split(b"--" + boundary):
            head, _, rest = part.partition(b"\r\n\r\n")
            if b'name="file"' in head:
                data = rest.rsplit(b"\r\n", 1)[0]
        fid = f"file-{len(self.files) + 1}"
        self.files[fid] = data
        return {"id": fid, "object": "file", "bytes": len(data), "created_at": 0, "filename": "batch.jsonl",
                "purpose": "batch", "status": "processed"}

    def _create_batch(self, body: dict) -> dict:
        bid = f"batch_{len(self.batches) + 1}"
        self.batches[bid] = {"id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                             "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                             "status": "validating", "created_at": 0, "output_file_id": None,
                             "error_file_id": None, "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        return self.batches[bid]

    def _batch_step(self, batch: dict) -> None:
        """validating -> in_progress on the first poll; the next poll while `release` is set runs it."""
        if batch["status"] == "validating":
            batch["status"] = "in_progress"
            return
        if batch["status"] != "in_progress" or not self.release.is_set():
            return
        if self.batch_outcome == "failed":
            batch.update(status="failed", errors={"object": "list", "data": [
                {"code": "invalid_request", "message": "scripted validation failure", "line": 1}]})
            return
        out, err = [], []
        lines = [json.loads(x) for x in self.files[batch["input_file_id"]].decode().splitlines() if x.strip()]
        for n, line in enumerate(lines):
            body = line["body"]
            content = "\n".join(str(m.get("content", "")) for m in body.get("messages") or [])
            item = {"id": f"batch_req_{n}", "custom_id": line["custom_id"], "error": None}
            if self.batch_outcome == "expired" and n >= self.expire_after:
                err.append(item | {"response": None, "error": {
                    "code": "batch_expired",
                    "message": "This request could not be executed before the completion window expired."}})
            elif any(f in content for f in self.failing):
                err.append(item | {"response": {"status_code": 400, "request_id": f"req_{n}", "body": {
                    "error": {"message": "scripted item failure", "type": "invalid_request_error"}}}})
            else:
                out.append(item | {"response": {"status_code": 200, "request_id": f"req_{n}",
                                                "body": self.completion(body, self.reply_to(body))}})
        for kind, items in (("output_file_id", out), ("error_file_id", err)):
            if items:
                fid = f"file-{len(self.files) + 1}"
                self.files[fid] = "".join(json.dumps(i) + "\n" for i in items).encode()
                batch[kind] = fid
        batch["status"] = "expired" if self.batch_outcome == "expired" else "completed"
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def completion(self, body: dict, reply: Reply) -> dict:
        out = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0,
               "model": body.get("model", "fake-model"),
               "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                            "finish_reason": "stop"}]}
        if reply.usage:
            out["usage"] = usage_of(body, reply)
        return out

    def embeddings(self, body: dict, reply: Reply) -> dict:
        """/v1/embeddings: word-hash vectors (texts sharing words are close). Reply kinds "dim" and
        "count" send vectors of the wrong size, or one vector too few."""
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        dim = body.get("dimensions") or EMBED_DIM
        vectors = [fake_vector(t, dim + (1 if reply.kind == "dim" else 0)) for t in texts]
        if reply.kind == "count":
            vectors = vectors[:-1]
        tokens = sum(len(t.split()) for t in texts)
        return {"object": "list", "model": body.get("model"),
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                **({"usage": {"prompt_tokens": tokens, "total_tokens": tokens}} if reply.usage else {})}

    def embedded(self) -> list[str]:
        """Every text sent to /v1/embeddings and answered, in order."""
        return [t for r in self.requests if r["path"].endswith("/embeddings") and "done" in r
                and r["kind"] == "ok"
                for t in ([r["body"]["input"]] if isinstance(r["body"]["input"], str) else r["body"]["input"])]

    def start(self) -> FakeOpenAI:
        self.thread.start()
        self.watchdog.start()
        return self

    def stop(self) -> None:
        self.watchdog.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()


EMBED_DIM = 48


def fake_vector(text: str, dim: int = EMBED_DIM) -> list[float]:
    import hashlib
    import math
    import re

    v = [0.0] * dim
    for word in re.findall(r"\w+", text.lower()):
        h = hashlib.md5(word.encode()).digest()
        v[h[0] % dim] += 1.0 if h[1] % 2 else -1.0
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


def split_tokens(text: str) -> list[str]:
    """Split like a tokenizer would stream: words with their leading space."""
    out, word = [], ""
    for ch in text:
        if ch == " " and word:
            out.append(word)
            word = ""
        word += ch
    return out + ([word] if word else [])


def usage_of(body: dict, reply: Reply) -> dict:
    prompt = sum(len(m.get("content", "").split()) for m in body.get("messages", []))
    completion = len(split_tokens(reply.text))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
