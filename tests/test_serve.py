"""`llmctl serve`: its app on a real uvicorn in this process (127.0.0.1, a free port), real HTTP
requests and raw sockets; one end-to-end run of the command as a user runs it."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from cli import assert_clean_error, child_env, invoke, run_cli
from openai_server import Reply

from llmctl import Workspace
from llmctl.serve import build_app, listen, server_for

QUESTION = "How many daily snapshots does the default retention policy keep?"


class Client:
    url: str

    def call(self, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None):
        """(status, body text, headers) of one request on a new connection."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, r.read().decode(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), e.headers

    def json(self, method: str, path: str, body=None, **kw):
        code, text, _ = self.call(method, path, body, **kw)
        return code, json.loads(text)


class Running(Client):
    """serve's app for ``ws`` on a real uvicorn, in a thread of this process; stops on exit.
    ``host`` is the address the guard believes it is bound to (it listens on 127.0.0.1)."""

    def __init__(self, ws: Workspace, *, host: str = "127.0.0.1", token: str | None = None,
                 max_connections: int | None = None, quiet: bool = True):
        self.sock = listen("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = server_for(build_app(ws, host=host, token=token, quiet=quiet), grace=1,
                                 read_timeout=ws.cfg.serve.read_timeout, max_connections=max_connections)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
        assert not self.thread.is_alive()

    def connect(self, timeout: float = 30) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)


class Served(Client):
    """`llmctl serve` as a user runs it: a subprocess on 127.0.0.1, any free port."""

    def __init__(self, *args: str, env: dict | None = None, cwd: Path | None = None, watch: Path | None = None):
        extra = ["--watch", str(watch)] if watch else []
        self.proc = subprocess.Popen([sys.executable, "-m", "llmctl", *args, "serve", "--port", "0", "-q", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=child_env(env), cwd=cwd)
        line = self.proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, (line, self.proc.stderr.read() if not line else "")
        self.url = line.split("listening on ")[1].strip()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def read_all(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    got = b""
    while chunk := conn.recv(65536):
        got += chunk
    return got


def split_response(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.fixture
def ws(data):
    with Workspace(data_dir=data, **{"rerank.enabled": False}) as w:
        yield w


@pytest.fixture
def docs_index(tmp_path, docs_data):
    data = docs_data  # sample_data ingested with its absolute paths (once for the session), this test's copy
    cfg = tmp_path / "llmctl.yaml"
    cfg.write_text(yaml.safe_dump({"rerank": {"enabled": False}}))
    return data, cfg


def test_search_status_documents_and_bad_requests(ws):
    with Running(ws) as s:
        code, got = s.json("POST", "/search", {"query": QUESTION, "k": 3})
        assert code == 200
        local = ws.query(QUESTION, k=3, use_llm=False).to_dict()["hits"]
        assert [h["id"] for h in got["hits"]] == [h["id"] for h in local]  # the same records as query --json
        assert got["hits"][0]["source"].endswith("retention-policies.md") and got["hits"][0]["text"]
        assert got["confidence"]["low"] is False
        code, filtered = s.json("POST", "/search", {"query": QUESTION, "k": 5, "where": {"ext": "rst"}})
        assert code == 200 and filtered["hits"] and all(h["source"].endswith(".rst") for h in filtered["hits"])

        code, chunk = s.json("GET", f"/chunks/{got['hits'][0]['id']}")
        assert code == 200 and chunk["text"] == got["hits"][0]["text"]
        assert got["hits"][0]["doc_id"] == chunk["doc_id"]  # a hit names its document, for /documents
        code, doc = s.json("GET", f"/documents/{chunk['doc_id']}")
        assert code == 200 and doc["chunks"] and chunk["id"] in doc["chunks"]
        code, st = s.json("GET", "/status")
        assert code == 200 and st["index"]["chunks"] > 0 and st["index"]["embedded_with"]["backend"] == "onnx"
        assert "POST /search" in s.json("GET", "/")[1]["endpoints"]

        # the Workspace's own checks (UsageError), as for the CLI and MCP (tests/test_api_validation.py)
        for body, words in [({"query": ""}, "question is empty"), ({"query": "x", "k": 0}, "k: input should be"),
                            ({"query": "x", "fusion": "rff"}, "unknown field"),
                            ({"query": "x", "kk": 3}, "unknown field"), ({"query": "x", "where": ["size=3"]}, "size"),
                            ({"query": "x", "where": 5}, "where: expected a list"),
                            ({"query": "x", "where": "ext=md"}, "strings or an object {field: text}, got \"ext=md\""),
                            ({"query": "x", "k": True}, "k: expected a number, not true"),
                            ({"query": 5}, "as a string, got int"), ({"query": "\ud800 x"}, "not valid Unicode"),
                            ({"query": "x", "where": {"ext": ["md", "txt"]}}, 'got "ext": ["md", "txt"]'),
                            ({"query": "x", "where": {"ext": None}}, 'got "ext": null'),
                            ({"query": "x", "where": {"ext=md&source": "x"}}, 'got "ext=md&source": "x"'),
                            ({}, "missing field 'query'"), ({"k": 3}, "missing field 'query'")]:
            code, err = s.json("POST", "/search", body)
            assert code == 400 and words in err["error"]["message"], (body, err)
        for body, words in [({"question": "x", "stream": "no"}, "stream: expected true or false, got 'no'"),
                            ({"question": "x", "no_llm": "false"}, "no_llm: expected true or false"),
                            ({"question": "a", "query": "b"}, "question or as query, not both"),
                            ({"no_llm": True}, "missing field 'question'")]:
            code, err = s.json("POST", "/query", body)
            assert code == 400 and words in err["error"]["message"], (body, err)
        assert s.json("POST", "/search", raw=b"{not json")[0] == 400
        code, err = s.json("POST", "/search", raw=b"[" * 200_000)
        assert code == 400 and "too deeply" in err["error"]["message"]
        assert s.json("POST", "/search", raw=b"[1, 2]")[0] == 400
        code, err = s.json("POST", "/search", raw=b'{"query": "x", "k": ' + b"9" * 5000 + b"}")
        assert code == 400 and err["error"]["message"] == "the body is not JSON (a number has too many digits)"
        assert s.json("GET", "/nowhere")[0] == 404
        assert s.json("GET", "/search") == (405, {"error": {"message": "/search takes POST", "type": "HTTPError"}})
        assert s.json("GET", "/chunks/nope")[0] == 404
        code, text, _ = s.call("POST", "/search", raw=b"x" * (2 << 20))
        assert code == 413 and "over" in json.loads(text)["error"]["message"]
        assert s.json("GET", "/health") == (200, {"ok": True})  # still serving after all that


@pytest.mark.parametrize("method", ["PUT", "DELETE", "OPTIONS", "PATCH"])
def test_any_other_method_is_a_json_405_with_allow_and_unknown_paths_a_json_404(ws, method):
    with Running(ws) as s:
        for path, allowed in [("/search", "POST"), ("/status", "GET"), ("/chunks/x", "GET")]:
            code, text, headers = s.call(method, path)
            assert code == 405 and json.loads(text)["error"]["type"] == "HTTPError", text
            assert allowed in headers["Allow"]
            assert headers["Access-Control-Allow-Origin"] is None
        code, err = s.json(method, "/nowhere")
        assert code == 404 and "no such endpoint /nowhere" in err["error"]["message"]


def test_dns_rebinding_foreign_host_or_origin_gets_403(ws):
    with Running(ws) as s:
        code, err = s.json("GET", "/status", headers={"Host": "evil.example"})
        assert code == 403 and "serve.allowed_hosts" in err["error"]["message"]
        code, err = s.json("POST", "/search", {"query": QUESTION}, headers={"Host": f"evil.example:{s.port}"})
        assert code == 403 and err["error"]["type"] == "HTTPError"
        for origin in ["http://evil.example", f"http://evil.example:{s.port}", "null"]:
            code, err = s.json("POST", "/search", {"query": QUESTION}, headers={"Origin": origin})
            assert code == 403 and "serve.allowed_origins" in err["error"]["message"], origin
        assert s.json("GET", "/health", headers={"Host": "127.0.0.1.evil.example"})[0] == 403


@pytest.mark.parametrize("headers", [
    {}, {"Host": "localhost"}, {"Host": "LOCALHOST:8765"}, {"Host": "127.0.0.1"}, {"Host": "[::1]:8765"},
    {"Origin": "http://localhost:3000"}, {"Origin": "http://127.0.0.1:8765"}, {"Origin": "https://[::1]"},
])
def test_plain_loopback_requests_are_served_without_cors_headers(ws, headers):
    with Running(ws) as s:
        code, text, got = s.call("POST", "/search", {"query": QUESTION, "k": 1}, headers=headers)
        assert code == 200 and json.loads(text)["hits"]
        assert got["Access-Control-Allow-Origin"] is None


def test_allow_lists_admit_a_configured_host_and_origin_with_cors(data):
    settings = {"rerank.enabled": False, "serve.allowed_hosts": ["Search.Internal"],
                "serve.allowed_origins": ["https://app.example:8443"]}
    with Workspace(data_dir=data, **settings) as ws, Running(ws) as s:
        assert s.json("GET", "/health", headers={"Host": "search.internal:8765"}) == (200, {"ok": True})
        assert s.json("GET", "/health", headers={"Host": "other.internal"})[0] == 403
        code, text, headers = s.call("GET", "/health", headers={"Origin": "https://app.example:8443"})
        assert code == 200 and headers["Access-Control-Allow-Origin"] == "https://app.example:8443"
        assert headers["Vary"] == "Origin"
        assert s.json("GET", "/health", headers={"Origin": "https://app.example"})[0] == 403  # another port
        code, _, headers = s.call("OPTIONS", "/search", headers={
            "Origin": "https://app.example:8443", "Access-Control-Request-Method": "POST"})  # a browser's preflight
        assert code == 204 and "POST" in headers["Access-Control-Allow-Methods"]
        assert headers["Access-Control-Allow-Origin"] == "https://app.example:8443"


def test_beyond_loopback_the_token_and_the_origin_rule_apply(data, capsys):
    with Workspace(data_dir=data, **{"rerank.enabled": False}) as ws, \
            Running(ws, host="0.0.0.0", token="s3cret", quiet=False) as s:
        assert s.json("GET", "/status")[0] == 401
        assert s.json("GET", "/status", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert s.json("GET", "/status", headers={"Authorization": "Bearer s3cret2"})[0] == 401
        assert s.json("GET", "/status", headers={"Authorization": "Basic s3cret"})[0] == 401
        assert s.json("GET", "/status", headers={"Authorization": "bearer s3cret"})[0] == 200  # any case (RFC 9110)
        assert s.json("GET", "/status?token=s3cret")[0] == 401  # a token in the URL is not one
        ok = {"Authorization": "Bearer s3cret"}
        assert s.json("GET", "/health", headers={**ok, "Host": "10.1.2.3:8765"})[0] == 200  # any name reaches it
        assert s.json("GET", "/health", headers={**ok, "Origin": "http://evil.example"})[0] == 403
        # a path that would forge a log line or colour the operator's terminal is logged escaped
        assert s.json("GET", "/chunks/x%0A23:59:59%20127.0.0.1%20%22GET%20/forged%22%20200%1B%5B31mRED",
                      headers=ok)[0] == 404
    with Workspace(data_dir=data, **{"rerank.enabled": False, "serve.allowed_hosts": ["search.internal"]}) as ws, \
            Running(ws, host="0.0.0.0", token="s3cret") as s:
        assert s.json("GET", "/health", headers={**ok, "Host": "search.internal"})[0] == 200
        assert s.json("GET", "/health", headers={**ok, "Host": "10.1.2.3:8765"})[0] == 403
    log = capsys.readouterr().err
    assert '"GET /status?… HTTP/1.1" 401' in log and "s3cret" not in log  # the request log keeps it out
    assert "\x1b" not in log and '/chunks/x\\n23:59:59 127.0.0.1 "GET /forged" 200\\x1b[31mRED' in log


@pytest.mark.parametrize(("token", "host", "words"), [
    ("tökén-tökén-tökén-tökén", "127.0.0.1", "outside ASCII"),  # a client sends UTF-8: every request a 401
    ("padded token with spaces", "127.0.0.1", "a space"),
    ("short", "0.0.0.0", "at least 16"),
])
def test_a_token_no_client_can_send_or_too_short_to_expose_is_refused_at_start(data, token, host, words):
    r = invoke("--data-dir", data, "serve", "--host", host, "--port", "0", env={"LLMCTL_SERVE_TOKEN": token})
    assert_clean_error(r, 3, "LLMCTL_SERVE_TOKEN", words)


@pytest.mark.parametrize("length", [b"-1", b"abc", b"1, 2"])
def test_invalid_content_length_is_a_json_400_and_the_connection_closes(ws, length):
    with Running(ws) as s, s.connect(timeout=20) as conn:  # the stdlib server read until EOF: a thread held
        conn.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + length + b"\r\n\r\n{}")
        code, err = split_response(read_all(conn))
        assert code == 400 and err["error"]["type"] == "BadRequest"


def test_a_stalled_body_is_cut_off_while_other_requests_are_served(data):
    with Workspace(data_dir=data, **{"rerank.enabled": False, "serve.read_timeout": 1}) as ws, \
            Running(ws) as s, s.connect(timeout=60) as stalled:
        stalled.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100\r\n\r\n{\"query\": ")  # then nothing more
        assert s.json("POST", "/search", {"query": QUESTION, "k": 1})[0] == 200  # meanwhile
        assert s.json("GET", "/health") == (200, {"ok": True})
        code, err = split_response(read_all(stalled))  # read_all returns: the server closed it
        assert code == 408 and "serve.read_timeout" in err["error"]["message"]
        assert s.json("GET", "/health") == (200, {"ok": True})


def test_a_request_whose_headers_never_finish_is_closed_and_connections_are_capped(data):
    """A client that connects and sends nothing, or half a header, is cut off after serve.read_timeout
    (uvicorn waited for ever: enough of them held every file descriptor); connections beyond the cap
    are closed at once, and the server answers again once the stalled ones are gone."""
    with Workspace(data_dir=data, **{"rerank.enabled": False, "serve.read_timeout": 1}) as ws, \
            Running(ws, max_connections=3) as s, s.connect() as silent, s.connect() as trickle:
        trickle.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        assert s.json("GET", "/health") == (200, {"ok": True})  # a third connection: still under the cap
        with s.connect() as third, s.connect() as fourth:  # the cap is reached: the fourth is closed
            try:
                assert read_all(fourth) == b""
            except ConnectionResetError:
                pass
            third.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert b" 200 " in read_all(third).split(b"\r\n")[0]
        code, err = split_response(read_all(trickle))  # returns: the server closed it
        assert code == 408 and "did not arrive within 1 s" in err["error"]["message"]
        assert read_all(silent) == b""  # nothing sent, nothing answered: closed
        assert s.json("GET", "/health") == (200, {"ok": True})


def test_bodies_over_the_cap_are_413_whether_declared_or_chunked(ws):
    with Running(ws) as s:
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
        conn.request("POST", "/search", body=iter([b"x" * 65536] * 20), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        r = conn.getresponse()
        assert r.status == 413 and json.loads(r.read())["error"]["type"] == "HTTPError"
        assert r.headers["Connection"] == "close"
        conn.close()
        with s.connect() as raw:
            raw.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999999\r\n\r\n")
            assert split_response(read_all(raw))[0] == 413


def test_an_over_long_query_is_a_json_400(data):
    with Workspace(data_dir=data, **{"rerank.enabled": False, "retrieval.max_query_chars": 300}) as ws, \
            Running(ws) as s:
        code, err = s.json("POST", "/search", {"query": "backup retention " * 40})
        assert code == 400 and "max_query_chars" in err["error"]["message"], err
        code, err = s.json("POST", "/query", {"question": "backup retention " * 40, "stream": True})
        assert code == 400 and "max_query_chars" in err["error"]["message"], err
        assert s.json("POST", "/search", {"query": "backup retention " * 10})[0] == 200


def test_new_index_is_served_without_restart_and_concurrent_requests_during_ingest(docs_index, tmp_path):
    data, cfg = docs_index
    errors: list[str] = []
    with Workspace(config_path=cfg, data_dir=data) as ws, Running(ws) as s:
        extra = tmp_path / "extra"
        extra.mkdir()
        (extra / "quokka.md").write_text("# Quokka relay\n\nThe quokka relay rotates its keys every 17 days.\n")
        expected = s.json("POST", "/search", {"query": QUESTION, "k": 1})[1]["hits"][0]["id"]

        def client() -> None:
            for _ in range(15):
                code, got = s.json("POST", "/search", {"query": QUESTION, "k": 1})
                if code != 200 or got["hits"][0]["id"] != expected:
                    errors.append(f"{code} {got}")

        clients = [threading.Thread(target=client) for _ in range(8)]
        for c in clients:
            c.start()
        r = run_cli("--config", cfg, "--data-dir", data, "ingest", "-q", extra)
        for c in clients:
            c.join()
        assert r.returncode == 0, r.stderr
        assert errors == []
        code, got = s.json("POST", "/search", {"query": "How often does the quokka relay rotate its keys?", "k": 1})
        assert code == 200 and got["hits"][0]["source"].endswith("quokka.md")
        shutil.rmtree(data)  # the index disappears: a clear 409, not a crash
        code, err = s.json("POST", "/search", {"query": QUESTION})
        assert code == 409 and "llmctl ingest" in err["error"]["message"]


def test_answers_json_and_streamed(data, fake_llm):
    provider = {"name": "local", "base_url": fake_llm.base_url, "model": "fake-model", "context_window": 4096,
                "timeout": 5, "retries": 0}
    with Workspace(data_dir=data, **{"rerank.enabled": False, "llm.providers": [provider]}) as ws, \
            Running(ws) as s:
        code, doc = s.json("POST", "/query", {"question": "How many daily snapshots are kept?"})
        assert code == 200 and doc["answer"] == fake_llm.default_text and doc["citations"][0]["n"] == 1
        code, text, headers = s.call("POST", "/query", {"question": "Which port does the server use?", "stream": True})
        assert headers["Content-Type"].startswith("text/event-stream")
        events = [block.split("\n") for block in text.strip().split("\n\n")]
        names = [e[0].removeprefix("event: ") for e in events]
        assert code == 200 and "token" in names and names[-1] == "result"
        streamed = "".join(json.loads(e[1].removeprefix("data: "))["text"] for e in events if e[0] == "event: token")
        assert streamed == json.loads(events[-1][1].removeprefix("data: "))["answer"]
        code, doc = s.json("POST", "/query", {"question": "x", "no_llm": True})
        assert code == 200 and doc["answer"] is None and doc["hits"]
        accepts_events = {"Accept": "text/event-stream"}  # streams, unless the body says "stream": false
        assert s.call("POST", "/query", {"question": "x"}, headers=accepts_events)[2]["Content-Type"].startswith(
            "text/event-stream")
        code, text, headers = s.call("POST", "/query", {"question": "x", "stream": False}, headers=accepts_events)
        assert headers["Content-Type"].startswith("application/json") and json.loads(text)["answer"]
    # a refused answer: 402 with the documented error shape (and the hits); streamed, an error event
    priced = {**provider, "price_input_per_1m": 5.0, "price_output_per_1m": 15.0}
    with Workspace(data_dir=data, **{"rerank.enabled": False, "llm.providers": [priced],
                                     "llm.budget.daily_usd": 1e-9}) as ws, Running(ws) as s:
        calls = len(fake_llm.requests)
        code, doc = s.json("POST", "/query", {"question": "Is Windows supported?"})  # not cached above
        assert code == 402 and doc["error"]["type"] == "BudgetExceeded" and doc["error"]["exit_code"] == 8
        assert doc["hits"] and doc["answer"] is None
        code, text, _ = s.call("POST", "/query", {"question": "Is Windows supported?", "stream": True})
        events = [block.split("\n") for block in text.strip().split("\n\n")]
        assert [e[0] for e in events][-2:] == ["event: error", "event: result"], text
        assert json.loads(events[-2][1].removeprefix("data: "))["type"] == "BudgetExceeded"
        assert len(fake_llm.requests) == calls


@pytest.mark.slow
def test_cli_serve_needs_a_token_beyond_loopback_and_stops_on_sigterm(docs_index):
    data, cfg = docs_index
    r = run_cli("--config", cfg, "--data-dir", data, "serve", "--host", "0.0.0.0", "--port", "0")
    assert r.returncode == 3 and "LLMCTL_SERVE_TOKEN" in r.stderr and "Traceback" not in r.stderr
    s = Served("--config", str(cfg), "--data-dir", str(data), env={"LLMCTL_SERVE_TOKEN": "s3cret-s3cret-s3cret"})
    try:
        assert s.json("GET", "/status")[0] == 401
        assert s.json("GET", "/status", headers={"Authorization": "Bearer s3cret-s3cret-s3cret"})[0] == 200
        code, _ = s.json("POST", "/search", {"query": QUESTION},
                         headers={"Authorization": "Bearer s3cret-s3cret-s3cret", "Host": "evil.example"})
        assert code == 403
    finally:
        assert s.stop() == 0
    assert "Traceback" not in s.proc.stderr.read()


def test_many_queries_open_the_ledger_and_cache_once_per_worker_thread_not_per_request(data, fake_llm, monkeypatch):
    """serve's Workspace hands one gateway per thread to every request (GatewayPool): the answer
    cache and the ledger are opened when a thread first needs them, never per request."""
    from collections import Counter

    from llmctl.llm import store

    opened: Counter = Counter()
    real = store._open

    def counting(path, *args, **kwargs):
        opened[Path(path).name] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(store, "_open", counting)
    provider = {"name": "local", "base_url": fake_llm.base_url, "model": "fake-model", "context_window": 4096,
                "timeout": 5, "retries": 0}
    questions = ["How many daily snapshots are kept?", "Which port does the server use?", "Is Windows supported?"]
    requests = 60
    with Workspace(data_dir=data, **{"rerank.enabled": False, "llm.providers": [provider]}) as ws, \
            Running(ws) as s:
        for n in range(requests):
            code, doc = s.json("POST", "/query", {"question": questions[n % len(questions)]})
            assert code == 200 and doc["answer"] == fake_llm.default_text
        threads = len(ws.gateways._all)
    assert 1 <= threads <= 40  # Starlette's worker threads at most, whatever the number of requests
    assert 1 <= opened["ledger.sqlite"] <= threads and opened["cache.sqlite"] <= threads, (opened, threads)
    assert opened["ledger.sqlite"] + opened["cache.sqlite"] <= 2 * threads < requests / 2, (opened, threads)


def test_a_thousand_queries_without_a_model_open_each_file_once_per_worker_thread(data, monkeypatch):
    """Retrieval-only /query: the manifest, the remembered question vectors, the ledger and the
    cache are opened at most once per worker thread, never per request (1,000 requests)."""
    import sqlite3
    from collections import Counter

    opened: Counter = Counter()
    real = sqlite3.connect

    def counting(path, *args, **kwargs):
        opened[Path(str(path)).name.split("?")[0]] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", counting)
    questions = ["How many daily snapshots are kept?", "Which port does the server use?", "Is Windows supported?"]
    requests = 1000
    with Workspace(data_dir=data, **{"rerank.enabled": False}) as ws, Running(ws) as s:
        for n in range(requests):
            code, doc = s.json("POST", "/query", {"question": questions[n % len(questions)]})
            assert code == 200 and doc["hits"] and doc["skipped"] == "no_model", doc
    assert opened["manifest.sqlite"] >= 1 and opened["queries.sqlite"] >= 1, opened  # the counter sees them
    assert max(opened.values()) <= 40 + 2, opened  # Starlette's worker threads at most, not 1,000


def test_a_json_answer_whose_client_hangs_up_stops_being_generated(data, fake_llm):
    """A JSON /query (not streamed) whose client gives up: the provider's stream is closed (it ran
    to the end, and was retried after a timeout, billing an answer nobody reads); one attempt,
    recorded as client_gone."""
    import sqlite3

    fake_llm.script.append(Reply(text=" ".join(f"word{i}" for i in range(80)), token_interval=0.1))
    provider = {"name": "local", "base_url": fake_llm.base_url, "model": "fake-model", "context_window": 4096,
                "timeout": 60, "retries": 2}
    with Workspace(data_dir=data, **{"rerank.enabled": False, "llm.providers": [provider],
                                     "llm.cache.enabled": False}) as ws, Running(ws) as s:
        body = json.dumps({"question": "How many daily snapshots are kept?"}).encode()
        with s.connect() as conn:
            conn.sendall(b"POST /query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            while not fake_llm.requests:  # the answer is being generated: the client gives up
                time.sleep(0.05)
            time.sleep(0.5)
        waited = 0.0
        while not fake_llm.streams and waited < 30:  # the provider notices at its next write
            time.sleep(0.1)
            waited += 0.1
        assert fake_llm.streams == ["client left"] and len(fake_llm.requests) == 1
        assert s.json("GET", "/health") == (200, {"ok": True})
    with sqlite3.connect(data / "ledger.sqlite") as db:
        assert db.execute("SELECT error_class FROM calls").fetchall() == [("client_gone",)]


def test_a_request_log_that_cannot_be_written_does_not_stop_the_answers(ws, monkeypatch):
    """serve 2>/dev/full (a log on a full disk): every request hung; the log line is dropped instead."""
    class Full:
        def write(self, text):
            raise OSError(28, "No space left on device")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stderr", Full())
    with Running(ws, quiet=False) as s:
        assert s.json("GET", "/health") == (200, {"ok": True})


def test_an_address_that_cannot_be_listened_on_names_the_fix(data):
    """A port in use: pick another --port; a host name this machine does not have: check --host."""
    with listen("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        r = invoke("--data-dir", data, "serve", "--port", str(port))
        assert_clean_error(r, 3, f"cannot listen on 127.0.0.1:{port}: Address already in use; pick another --port")
    r = invoke("--data-dir", data, "serve", "--host", "nonexistent.invalid", "--port", "0",
               env={"LLMCTL_SERVE_TOKEN": "s3cret-s3cret-s3cret"})
    assert_clean_error(r, 3, "cannot listen on nonexistent.invalid:0", "check --host")


def test_failed_accepts_are_logged_once_a_minute():
    """Out of file descriptors, asyncio logs every failed accept with a traceback (thousands of
    lines a second under a burst of connections): serve lets one a minute through."""
    import logging

    from llmctl.serve import AcceptErrorsOncePerMinute

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, (), (OSError, OSError(24), None))

    only = AcceptErrorsOncePerMinute()
    first = record("socket.accept() out of system resource")
    assert only.filter(first) and first.exc_info is None and "repeats hidden" in first.getMessage()
    assert not any(only.filter(record("socket.accept() out of system resource")) for _ in range(1000))
    assert only.filter(record("Task exception was never retrieved"))  # anything else passes
    server_for(lambda scope, receive, send: None)  # a server installs it, once
    assert sum(isinstance(f, AcceptErrorsOncePerMinute) for f in logging.getLogger("asyncio").filters) == 1
