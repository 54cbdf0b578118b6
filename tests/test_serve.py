"""`llmctl serve` as a user runs it: a real subprocess on 127.0.0.1, real HTTP requests."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from cli import child_env, run_cli

from llmctl import Workspace

pytestmark = pytest.mark.slow


class Served:
    def __init__(self, *args: str, env: dict | None = None, cwd: Path | None = None, watch: Path | None = None):
        extra = ["--watch", str(watch)] if watch else []
        self.proc = subprocess.Popen([sys.executable, "-m", "llmctl", *args, "serve", "--port", "0", "-q", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=child_env(env), cwd=cwd)
        line = self.proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, (line, self.proc.stderr.read() if not line else "")
        self.url = line.split("listening on ")[1].strip()

    def call(self, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def json(self, method: str, path: str, body=None, **kw):
        code, text = self.call(method, path, body, **kw)
        return code, json.loads(text)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def docs_index(tmp_path, corpus):
    data = tmp_path / "data"
    with Workspace(data_dir=data, **{"rerank.enabled": False}) as ws:
        ws.ingest([corpus])
    cfg = tmp_path / "llmctl.yaml"
    cfg.write_text(yaml.safe_dump({"rerank": {"enabled": False}}))
    return data, cfg


def test_search_status_documents_and_bad_requests(docs_index):
    data, cfg = docs_index
    s = Served("--config", str(cfg), "--data-dir", str(data))
    try:
        question = "How many daily snapshots does the default retention policy keep?"
        code, got = s.json("POST", "/search", {"query": question, "k": 3})
        assert code == 200
        with Workspace(data_dir=data, **{"rerank.enabled": False}) as ws:
            local = ws.query(question, k=3, use_llm=False).to_dict()["hits"]
        assert [h["id"] for h in got["hits"]] == [h["id"] for h in local]  # the same records as query --json
        assert got["hits"][0]["source"].endswith("retention-policies.md") and got["hits"][0]["text"]
        assert got["confidence"]["low"] is False
        code, filtered = s.json("POST", "/search", {"query": question, "k": 5, "where": {"ext": "rst"}})
        assert code == 200 and filtered["hits"] and all(h["source"].endswith(".rst") for h in filtered["hits"])

        code, chunk = s.json("GET", f"/chunks/{got['hits'][0]['id']}")
        assert code == 200 and chunk["text"] == got["hits"][0]["text"]
        code, doc = s.json("GET", f"/documents/{chunk['doc_id']}")
        assert code == 200 and doc["text"].strip() == Path(doc["source"]).read_text().strip()
        code, st = s.json("GET", "/status")
        assert code == 200 and st["index"]["chunks"] > 0 and st["index"]["embedded_with"]["backend"] == "onnx"

        for body, words in [({"query": ""}, "non-empty"), ({"query": "x", "k": 0}, "'k'"),
                            ({"query": "x", "kk": 3}, "unknown field"), ({"query": "x", "where": ["size=3"]}, "size"),
                            ({"query": "x", "where": 5}, "'where'")]:
            code, err = s.json("POST", "/search", body)
            assert code == 400 and words in err["error"]["message"], (body, err)
        assert s.json("POST", "/search", raw=b"{not json")[0] == 400
        assert s.json("POST", "/search", raw=b"[1, 2]")[0] == 400
        assert s.json("GET", "/nowhere")[0] == 404
        assert s.json("GET", "/search")[0] == 405
        assert s.json("GET", "/chunks/nope")[0] == 404
        assert s.call("POST", "/search", raw=b"x" * (2 << 20))[0] == 413
        assert s.json("GET", "/health") == (200, {"ok": True})  # still serving after all that
    finally:
        assert s.stop() == 0
    assert "Traceback" not in s.proc.stderr.read()


def test_new_index_is_served_without_restart_and_concurrent_requests_during_ingest(docs_index, tmp_path):
    data, cfg = docs_index
    s = Served("--config", str(cfg), "--data-dir", str(data))
    errors: list[str] = []
    try:
        extra = tmp_path / "extra"
        extra.mkdir()
        (extra / "quokka.md").write_text("# Quokka relay\n\nThe quokka relay rotates its keys every 17 days.\n")
        question = "How many daily snapshots does the default retention policy keep?"
        expected = s.json("POST", "/search", {"query": question, "k": 1})[1]["hits"][0]["id"]

        def client() -> None:
            for _ in range(15):
                code, got = s.json("POST", "/search", {"query": question, "k": 1})
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
        code, err = s.json("POST", "/search", {"query": question})
        assert code == 409 and "llmctl ingest" in err["error"]["message"]
    finally:
        assert s.stop() == 0


def test_answers_json_and_streamed(docs_index, fake_llm, tmp_path):
    data, _ = docs_index
    cfg = tmp_path / "llm.yaml"
    cfg.write_text(yaml.safe_dump({"rerank": {"enabled": False}, "llm": {"providers": [{
        "name": "local", "base_url": fake_llm.base_url, "model": "fake-model", "context_window": 4096,
        "timeout": 5, "retries": 0}]}}))
    s = Served("--config", str(cfg), "--data-dir", str(data))
    try:
        code, doc = s.json("POST", "/query", {"question": "How many daily snapshots are kept?"})
        assert code == 200 and doc["answer"] == fake_llm.default_text and doc["citations"][0]["n"] == 1
        code, text = s.call("POST", "/query", {"question": "Which port does the server use?", "stream": True})
        events = [block.split("\n") for block in text.strip().split("\n\n")]
        names = [e[0].removeprefix("event: ") for e in events]
        assert code == 200 and "token" in names and names[-1] == "result"
        streamed = "".join(json.loads(e[1].removeprefix("data: "))["text"] for e in events if e[0] == "event: token")
        assert streamed == json.loads(events[-1][1].removeprefix("data: "))["answer"]
        code, doc = s.json("POST", "/query", {"question": "x", "no_llm": True})
        assert code == 200 and doc["answer"] is None and doc["hits"]
    finally:
        assert s.stop() == 0


def test_beyond_loopback_needs_a_token(docs_index):
    data, cfg = docs_index
    r = run_cli("--config", cfg, "--data-dir", data, "serve", "--host", "0.0.0.0", "--port", "0")
    assert r.returncode == 3 and "LLMCTL_SERVE_TOKEN" in r.stderr and "Traceback" not in r.stderr
    s = Served("--config", str(cfg), "--data-dir", str(data), env={"LLMCTL_SERVE_TOKEN": "s3cret"})
    try:
        assert s.json("GET", "/status")[0] == 401
        assert s.json("GET", "/status", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert s.json("GET", "/status", headers={"Authorization": "Bearer s3cret"})[0] == 200
    finally:
        assert s.stop() == 0
