"""Faults of an embedding endpoint, end to end: what `llmctl ingest` does with each, what the ledger
records, and whether any text is paid for twice. Measured, never asserted (tests/test_remote_embeddings.py
asserts the same behaviours).

The endpoint is tests/openai_server.py on 127.0.0.1 (a real HTTP server speaking the OpenAI
API) with scripted faults; the corpus is sample_data/; batch 8, 2 requests in flight.

    python bench/embed_faults.py        # bench/out/embed_faults.json
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import yaml

sys.path.insert(0, str(common.REPO / "tests"))
from openai_server import FakeOpenAI, Reply  # noqa: E402

SAMPLE = common.REPO / "sample_data"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_") or k == "LLMCTL_CACHE_DIR"}


def config(folder: Path, url: str) -> Path:
    path = folder / "llmctl.yaml"
    path.write_text(yaml.safe_dump({
        "data_dir": str(folder / "data"), "rerank": {"enabled": False},
        "embedding": {"provider": "openai", "base_url": url, "model": "fake-embed", "price_per_1m": 0.02,
                      "batch_size": 8, "concurrency": 2, "timeout": 2},
        "llm": {"backoff_base": 0.05, "backoff_cap": 0.2}}))
    return path


def ingest(cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmctl", "--config", str(cfg), "ingest", "--json", str(SAMPLE)],
                          env=ENV, capture_output=True, text=True, timeout=600)


def ledger(folder: Path) -> dict:
    db = sqlite3.connect(folder / "data" / "ledger.sqlite")
    rows = db.execute("SELECT status, COALESCE(error_class, ''), COUNT(*) FROM calls GROUP BY 1, 2").fetchall()
    return {f"{s}{'/' + e if e else ''}": n for s, e, n in rows}


def bought_twice(server: FakeOpenAI) -> int:
    texts = server.embedded()
    return len(texts) - len(set(texts))


def one(name: str, script) -> dict:
    """Run ingest with a fault scripted by ``script(server)``; then again without it."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = FakeOpenAI().start()
        try:
            cfg = config(folder, server.base_url)
            script(server)
            t = time.perf_counter()
            first = ingest(cfg)
            seconds = time.perf_counter() - t
            out = {"fault": name, "exit": first.returncode, "seconds": round(seconds, 1),
                   "error": (first.stderr.strip().splitlines() or [""])[-1][:160] if first.returncode else "",
                   "ledger": ledger(folder)}
            if first.returncode:
                server.keyed.clear()
                server.script.clear()
                server.responder = None
                again = ingest(cfg)
                out["rerun_exit"] = again.returncode
            out["texts_bought_twice"] = bought_twice(server)
            out["texts_bought"] = len(set(server.embedded()))
            return out
        finally:
            server.stop()


def kill_9() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = FakeOpenAI().start()
        try:
            cfg = config(folder, server.base_url)
            server.responder = lambda body: Reply(delay=0.15) if "input" in body else None
            child = subprocess.Popen([sys.executable, "-m", "llmctl", "--config", str(cfg), "ingest", str(SAMPLE)],
                                     env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while len(server.embedded()) < 24 and child.poll() is None:
                time.sleep(0.02)
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            before = len(server.embedded())
            server.responder = None
            again = ingest(cfg)
            return {"fault": "kill -9 after 24 texts embedded", "exit": -9, "rerun_exit": again.returncode,
                    "texts_bought_before_kill": before, "texts_bought_twice": bought_twice(server),
                    "texts_bought": len(set(server.embedded())), "ledger": ledger(folder)}
        finally:
            server.stop()


CASES = {
    "429 + Retry-After 0.3 s, once":
        lambda s: s.script.append(Reply("status", status=429, headers={"Retry-After": "0.3"})),
    "HTTP 500, once": lambda s: s.script.append(Reply("status", status=500)),
    "timeout (3 s > embedding.timeout 2 s), once": lambda s: s.script.append(Reply(delay=3.0)),
    "malformed JSON, once": lambda s: s.script.append(Reply("bad_json")),
    "one vector too few, once": lambda s: s.script.append(Reply("count")),
    "connection dropped, once": lambda s: s.script.append(Reply("drop")),
    "wrong dimension": lambda s: s.on("Snapshots accumulate", Reply("dim")),
    "HTTP 401": lambda s: s.on("Snapshots accumulate", Reply("status", status=401)),
    "HTTP 500 on one batch, every attempt": lambda s: s.on("Snapshots accumulate", *[Reply("status", status=500)] * 10),
}


def main() -> None:
    results = [one(name, script) for name, script in CASES.items()] + [kill_9()]
    for r in results:
        print(json.dumps(r), flush=True)
    (common.OUT / "embed_faults.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
