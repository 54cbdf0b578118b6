"""Query latency benchmark on BEIR SciFact (needs the index from bench/ingest_bench.py).

Warm per-query latency by stage (embed, dense, BM25, fusion, fetch, rerank at depth 20,
packing), p50/p95 over SciFact training queries, and the cold wall time of one
`llmctl query` process. Measured, never asserted.

No trained cross-encoder is reachable offline, so rerank *latency* is measured with a
MiniLM-L6-sized cross-encoder built from the MiniLM backbone with an untrained head:
same architecture and cost as cross-encoder/ms-marco-MiniLM-L-6-v2, meaningless scores.

    python bench/query_bench.py [--queries 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCIFACT = REPO.parent / "shared" / "data" / "scifact"
INDEX = REPO / "bench" / "out" / "scifact" / "data"


def build_latency_cross_encoder(folder: Path, backbone: Path) -> Path:
    if (folder / "config.json").exists():
        return folder
    from transformers import AutoTokenizer, BertForSequenceClassification

    BertForSequenceClassification.from_pretrained(str(backbone), num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(backbone)).save_pretrained(folder)
    return folder


def peak_rss_mb(cmd: list[str], env: dict) -> int:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd} failed")
    return round(usage.ru_maxrss / 1024)


def bm25_backends(manifest, questions: list[str]) -> dict:
    """Build time and one-at-a-time queries/s (top 50) of both backends on the same chunks."""
    from llmctl.config import BM25Config
    from llmctl.index.keyword import BM25sIndex, RankBM25Index

    ids, texts = zip(*manifest.keyword_corpus(), strict=True)
    out = {}
    for name, cls in (("bm25s", BM25sIndex), ("rank_bm25", RankBM25Index)):
        index = cls(BM25Config(backend=name))
        t = time.perf_counter()
        index.build(list(ids), list(texts))
        build = time.perf_counter() - t
        t = time.perf_counter()
        for q in questions:
            index.search(q, 50)
        out[name] = {"chunks": len(ids), "build_seconds": round(build, 2),
                     "queries_per_s": round(len(questions) / (time.perf_counter() - t))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=150)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "query.json")
    args = ap.parse_args()
    if not (INDEX / "manifest.sqlite").exists():
        sys.exit("no SciFact index: run `python bench/ingest_bench.py` first")

    from llmctl.config import load_config
    from llmctl.datadir import DataDir
    from llmctl.search.pipeline import QueryOptions, run_query
    from llmctl.search.rerank import Reranker
    from llmctl.search.retrieve import Retriever
    from llmctl.stats import percentile

    questions = [json.loads(line)["text"] for line in (SCIFACT / "queries.jsonl").open()][:args.queries]
    cfg = load_config(None, {"data_dir": str(INDEX)})
    retriever = Retriever(cfg, DataDir(cfg.data_dir))
    ce = build_latency_cross_encoder(REPO / "bench" / "out" / "latency-cross-encoder",
                                     retriever.embedder.folder)
    cfg.rerank.model = str(ce)
    reranker = Reranker(cfg.rerank)
    opts = QueryOptions(use_llm=False)
    for q in questions[:5]:  # warm-up: model loads, Chroma and BM25 opened
        run_query(q, cfg, opts, retriever=retriever, reranker=reranker)
    stages: dict[str, list[float]] = {}
    totals = []
    for q in questions:
        t = time.perf_counter()
        result = run_query(q, cfg, opts, retriever=retriever, reranker=reranker)
        totals.append(time.perf_counter() - t)
        for name, seconds in result.timings.items():
            stages.setdefault(name, []).append(seconds)
    stages.pop("load", None)
    out = {
        "queries": len(questions), "rerank_depth": cfg.rerank.depth,
        "chunks_in_index": retriever.manifest.chunk_count(),
        "warm_ms": {name: {"p50": round(percentile(v, 0.5) * 1000, 2), "p95": round(percentile(v, 0.95) * 1000, 2)}
                    for name, v in stages.items()},
        "warm_total_ms": {"p50": round(percentile(totals, 0.5) * 1000, 1),
                          "p95": round(percentile(totals, 0.95) * 1000, 1)},
    }
    env = {**os.environ, "LLMCTL_DATA_DIR": str(INDEX)}
    cold = {}
    for label, extra in (("no_rerank", ["--no-rerank"]), ("rerank_unavailable_default", [])):
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "llmctl", "query", *extra, questions[0]], env=env,
                           check=True, capture_output=True)
            runs.append(time.perf_counter() - t)
        cold[label] = round(statistics.median(runs), 2)
    out["cold_query_process_seconds"] = cold
    out["query_process_peak_rss_mb"] = peak_rss_mb([sys.executable, "-m", "llmctl", "query", "--no-rerank",
                                                    questions[0]], env)
    out["bm25_backends"] = bm25_backends(retriever.manifest, questions)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
