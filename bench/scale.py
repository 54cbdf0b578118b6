"""Scaling past SciFact without re-embedding: the real ingest pipeline at 1x, 10x, 100x.

Embedding runs at ~16 chunks/s on 2 cores (bench/ingest_bench.py), so a 100x corpus would
take ~17 hours to embed. Everything else is measured for real: the corpus is SciFact copied
N times with perturbed texts (10% of the words of each copy swapped for other corpus words,
new ids), and `llmctl.ingest.pipeline.ingest` runs on it unchanged except for the embedder:
it keeps the real tokenizer (chunking counts tokens with it) but, instead of running the
model, gives each chunk a stored SciFact chunk vector (picked by a hash of its text) plus
small Gaussian noise. Measured per size, each in a fresh process: time inside chunking,
Chroma upserts, manifest commits and the BM25 build; Chroma query latency; BM25 build
time, queries/s and memory; no-op and one-document re-ingest (manifest sync), in the same
process and in a new one; index size on disk; peak memory. Embedding time is extrapolated
from the raw encoder throughput.

    python bench/scale.py --factors 1,10,100          # writes bench/out/scale.json
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import common
import numpy as np

SWAP = 0.10  # share of words replaced in each copy
NOISE = 0.02  # std of the Gaussian noise added to reused vectors (unit vectors, 384 dims)


def make_corpus(folder: Path, factor: int) -> int:
    """``factor`` JSONL files, each a perturbed copy of SciFact with new ids; returns documents."""
    docs = list(common.corpus().values())
    vocab = sorted({w for d in docs[:2000] for w in d["text"].split()})
    folder.mkdir(parents=True, exist_ok=True)
    for j in range(factor):
        rng = random.Random(j)
        with (folder / f"copy{j:03d}.jsonl").open("w") as fh:
            for d in docs:
                words = d["text"].split()
                for i in rng.sample(range(len(words)), k=int(len(words) * SWAP)):
                    words[i] = rng.choice(vocab)
                fh.write(json.dumps({"_id": f"{d['_id']}-{j}", "title": d.get("title", ""),
                                     "text": " ".join(words)}) + "\n")
    return len(docs) * factor


class Timers:
    """Wall time spent inside chosen functions, by name."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, owner, attr: str, name: str) -> None:
        fn = getattr(owner, attr)

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t

        setattr(owner, attr, timed)


def reused_vectors_embedder(cfg, pool: np.ndarray):
    from llmctl.embedding.local import Embedder

    class ReusedVectors(Embedder):
        """The real tokenizer; vectors reused from the stored SciFact index instead of the model."""

        model = None  # never loaded
        dimension = pool.shape[1]

        def embed_documents(self, texts, on_batch=None):
            out = np.empty((len(texts), pool.shape[1]), dtype=np.float32)
            for i, t in enumerate(texts):
                h = zlib.crc32(t.encode())
                v = pool[h % len(pool)] + np.random.default_rng(h).normal(0, NOISE, pool.shape[1])
                out[i] = v / np.linalg.norm(v)
            if on_batch:
                on_batch(len(texts))
            return out

    return ReusedVectors(cfg)


def folder_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


def chroma_server(folder: Path) -> tuple[subprocess.Popen, int]:
    """A real `chroma run` on 127.0.0.1 (vector_store.mode: server), started and waited for."""
    import os
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).with_name("chroma")), "run", "--path", str(folder), "--host",
                             "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1)
            return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("chroma run did not start")


def measure(factor: int, work: Path, server: bool = False, keep: bool = False) -> dict:
    """One size, in this process (run by main() in a fresh subprocess per size). ``server``: vectors
    in a `chroma run` process, so this process's memory is llmctl's own."""
    from llmctl.config import load_config
    from llmctl.datadir import DataDir
    from llmctl.index import keyword
    from llmctl.index.manifest import Manifest
    from llmctl.index.vectors import VectorStore
    from llmctl.ingest import chunking
    from llmctl.ingest.pipeline import ingest
    from llmctl.stats import percentile

    shutil.rmtree(work, ignore_errors=True)
    t = time.perf_counter()
    n_docs = make_corpus(work / "corpus", factor)
    out: dict = {"factor": factor, "documents": n_docs, "make_corpus_seconds": round(time.perf_counter() - t, 1)}
    # stored SciFact chunk vectors: MiniLM's index (bench/ingest_bench.py), else e5's (bench/remote_embeddings.py)
    source = common.INDEX if (common.INDEX / "manifest.sqlite").exists() else common.OUT / "e5" / "beir-scifact"
    pool = common.cached("chunk_vectors", lambda: common.index_arrays(source)["vectors"])
    qtext, _ = common.queries_and_qrels()
    qvecs = common.query_vectors(list(qtext), qtext)[:200]
    questions = list(qtext.values())[:200]

    data = work / "data"
    overrides: dict = {"data_dir": str(data)}
    port = 0
    if server:
        chroma, port = chroma_server(work / "chroma-server")
        overrides |= {"vector_store.mode": "server", "vector_store.port": port}
        out["vector_store"] = "server"
    cfg = load_config(None, overrides)
    embedder = reused_vectors_embedder(cfg.embedding, pool)
    timers = Timers()
    timers.wrap(chunking.Chunker, "chunk_many", "chunking")
    timers.wrap(VectorStore, "upsert", "chroma_upsert")
    timers.wrap(Manifest, "apply", "manifest_commits")
    timers.wrap(keyword, "build_and_save", "bm25_build")
    timers.wrap(keyword, "update", "bm25_update")
    build = keyword.build_and_save

    def build_and_save(*args, **kwargs):  # the ingest phase's peak, before BM25 adds its own
        out.setdefault("peak_rss_mb_before_bm25_build", _peak_rss_mb())
        return build(*args, **kwargs)

    keyword.build_and_save = build_and_save
    t = time.perf_counter()
    # release_vectors: as `llmctl ingest` does
    report = ingest([work / "corpus"], cfg, DataDir(data), embedder=embedder, release_vectors=True)
    total = time.perf_counter() - t
    out["chunks"] = report.chunks_total
    out["ingest_seconds_without_embedding"] = round(total, 1)
    out["inside"] = {k: round(v, 1) for k, v in timers.seconds.items()}
    out["chroma_upsert_chunks_per_s"] = round(report.chunks_total / timers.seconds["chroma_upsert"])
    out["peak_rss_mb_after_ingest"] = _peak_rss_mb()

    # manifest sync: a no-op run (stat only) and a run with one changed document
    t = time.perf_counter()
    ingest([work / "corpus"], cfg, DataDir(data), embedder=embedder)
    out["noop_reingest_seconds"] = round(time.perf_counter() - t, 2)
    change_one_document(work / "corpus" / "copy000.jsonl")
    # loads the vector index the first ingest released
    ingest([work / "corpus"], cfg, DataDir(data), embedder=embedder)
    change_one_document(work / "corpus" / "copy000.jsonl")  # timed: a process that stays up (serve --watch)
    timers.seconds.clear()
    t = time.perf_counter()
    ingest([work / "corpus"], cfg, DataDir(data), embedder=embedder)
    out["one_doc_change_seconds"] = round(time.perf_counter() - t, 1)
    out["one_doc_change_inside"] = {k: round(v, 2) for k, v in timers.seconds.items()}

    from llmctl.index.vectors import open_store

    store = open_store(cfg, data / "chroma") if server else VectorStore.embedded(data / "chroma")
    for v in qvecs[:5]:
        store.query(v, 50)
    lat = []
    for v in qvecs:
        t = time.perf_counter()
        store.query(v, 50)
        lat.append(time.perf_counter() - t)
    out["chroma_query_ms"] = {"p50": round(percentile(lat, 0.5) * 1000, 2),
                              "p95": round(percentile(lat, 0.95) * 1000, 2)}

    rss0 = _rss_now_mb()
    t = time.perf_counter()
    index = keyword.load(data / "bm25", cfg.bm25)
    out["bm25_load_seconds"] = round(time.perf_counter() - t, 2)
    for q in questions[:5]:
        index.search(q, 50)
    t = time.perf_counter()
    for q in questions:
        index.search(q, 50)
    out["bm25_queries_per_s"] = round(len(questions) / (time.perf_counter() - t))
    out["bm25_loaded_rss_mb"] = round(_rss_now_mb() - rss0)
    # the same in a new process, as `llmctl ingest` would run (model load aside: vectors are reused)
    change_one_document(work / "corpus" / f"copy{factor // 2:03d}.jsonl")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--cold-change", str(port if server else 0), "--work", str(work)],
                          capture_output=True, text=True, check=True)
    cold = json.loads(proc.stdout.strip().splitlines()[-1])
    out["one_doc_change_new_process"] = {"seconds": round(time.perf_counter() - t, 1), **cold}
    out["disk_mb"] = {"manifest": round(sum(p.stat().st_size for p in data.glob("manifest.sqlite*")) / 2**20, 1),
                      "chroma": folder_mb(data / "chroma"), "bm25": folder_mb(data / "bm25")}
    out["peak_rss_mb"] = _peak_rss_mb()
    if server:
        out["disk_mb"]["chroma"] = folder_mb(work / "chroma-server")
        chroma.terminate()
        chroma.wait(30)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return out


def change_one_document(corpus_file: Path) -> None:
    lines = corpus_file.read_text().splitlines()
    doc = json.loads(lines[0])
    doc["text"] += " One more sentence."
    lines[0] = json.dumps(doc)
    corpus_file.write_text("\n".join(lines) + "\n")


def cold_change(work: Path, port: int) -> dict:
    """Sync the index in ``work`` (one document changed) in this new process: seconds to import
    and configure, then inside ``ingest``."""
    t = time.perf_counter()
    from llmctl.config import load_config
    from llmctl.datadir import DataDir
    from llmctl.ingest.pipeline import ingest

    overrides: dict = {"data_dir": str(work / "data")}
    if port:
        overrides |= {"vector_store.mode": "server", "vector_store.port": port}
    cfg = load_config(None, overrides)
    embedder = reused_vectors_embedder(cfg.embedding, common.cached("chunk_vectors", None))
    setup = time.perf_counter() - t
    t = time.perf_counter()
    report = ingest([work / "corpus"], cfg, DataDir(cfg.data_dir), embedder=embedder)
    return {"imports_seconds": round(setup, 2), "ingest_seconds": round(time.perf_counter() - t, 2),
            "documents_changed": report.documents_changed}


def _peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--factors", default="1,10,100")
    ap.add_argument("--work", type=Path, default=common.OUT / "scale-work")
    ap.add_argument("--server", action="store_true", help="vectors in a `chroma run` server (scale-server.json)")
    ap.add_argument("--keep", action="store_true", help="leave the last size's corpus and index in --work")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size here
    ap.add_argument("--cold-change", type=int, help=argparse.SUPPRESS)  # internal: a new process's sync (port)
    args = ap.parse_args()
    if args.cold_change is not None:
        print(json.dumps(cold_change(args.work, args.cold_change)))
        return
    if args.one:
        print(json.dumps(measure(args.one, args.work, args.server, args.keep)))
        return
    path = common.OUT / ("scale-server.json" if args.server else "scale.json")
    results = json.loads(path.read_text()) if path.exists() else {}
    ingest_json = common.OUT / "ingest.json"
    raw = json.loads(ingest_json.read_text())["ingest"]["raw_encode_chunks_per_s"] if ingest_json.exists() else None
    for f in map(int, args.factors.split(",")):
        flags = [name for name, on in (("--server", args.server), ("--keep", args.keep)) if on]
        proc = subprocess.run([sys.executable, __file__, "--one", str(f), "--work", str(args.work), *flags],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"scale x{f} failed: {proc.stderr[-2000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        if raw:
            r["embedding_hours_extrapolated"] = round(r["chunks"] / raw / 3600, 1)
        results[str(f)] = r
        print(json.dumps(r), flush=True)
        path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
