"""Ingest benchmark on BEIR SciFact (5,183 abstracts). Measured, never asserted.

Reports in one run: docs/s and chunks/s of `ingest`; the raw SentenceTransformer.encode
throughput on the very same chunk texts, and the ratio of the two (goal >= 0.90); a
no-op re-ingest and a one-document change through the real CLI; peak memory; and the
wall time of `llmctl --help` (goal <= 0.3 s).

    python bench/ingest_bench.py [--corpus ../shared/data/scifact/corpus.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "scifact" / "corpus.jsonl"


def cli(*args: str, env: dict) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llmctl", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "ingest.json")
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "out" / "scifact",
                    help="kept afterwards: bench/query_bench.py reuses the index")
    args = ap.parse_args()
    if not args.corpus.exists():
        sys.exit(f"corpus not found: {args.corpus}")

    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    corpus = work / "corpus.jsonl"
    shutil.copyfile(args.corpus, corpus)
    data = work / "data"
    env = {**os.environ, "LLMCTL_DATA_DIR": str(data)}
    results: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                 "platform": platform.platform()}}

    helps = [cli("--help", env=env) for _ in range(7)]
    results["help_seconds_median"] = round(statistics.median(helps), 3)

    from sentence_transformers import SentenceTransformer  # noqa: F401  (import outside timings)

    from llmctl.config import load_config
    from llmctl.datadir import DataDir
    from llmctl.embedding.local import Embedder
    from llmctl.index.manifest import Manifest
    from llmctl.ingest.pipeline import ingest

    os.chdir(work)
    cfg = load_config(None, {"data_dir": str(data)})
    embedder = Embedder(cfg.embedding)
    _ = embedder.model  # load weights outside the timing (both sides use the loaded model)
    t = time.perf_counter()
    report = ingest([corpus], cfg, DataDir(cfg.data_dir), embedder=embedder)
    t_ingest = time.perf_counter() - t
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    docs = report.documents_changed
    chunks = report.chunks_added

    m = Manifest(data / "manifest.sqlite")
    texts = [t for _, t in m.keyword_corpus()]
    m.close()
    t = time.perf_counter()
    embedder.model.encode(texts, batch_size=cfg.embedding.batch_size, normalize_embeddings=True,
                          convert_to_numpy=True, show_progress_bar=False)
    t_raw = time.perf_counter() - t

    results["ingest"] = {
        "documents": docs, "chunks": chunks, "tokens": report.tokens_embedded,
        "seconds": round(t_ingest, 1), "docs_per_s": round(docs / t_ingest, 2),
        "chunks_per_s": round(chunks / t_ingest, 2),
        "raw_encode_seconds": round(t_raw, 1), "raw_encode_chunks_per_s": round(chunks / t_raw, 2),
        "ingest_to_raw_ratio": round(t_raw / t_ingest, 3),
        "peak_rss_mb": round(peak_rss_mb),
    }

    noops = [round(cli("ingest", "-q", str(corpus), env=env), 2) for _ in range(3)]
    results["noop_reingest_cli_seconds"] = {"runs": noops, "median": statistics.median(noops)}
    lines = corpus.read_text().splitlines()
    doc = json.loads(lines[100])
    doc["text"] += " An added sentence about a new finding."
    lines[100] = json.dumps(doc)
    corpus.write_text("\n".join(lines) + "\n")
    results["one_doc_change_cli_seconds"] = round(cli("ingest", "-q", str(corpus), env=env), 2)
    results["index_size_mb"] = round(sum(p.stat().st_size for p in data.rglob("*") if p.is_file()) / 2**20, 1)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
