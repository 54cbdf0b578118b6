"""Retrieval quality on SciFact's training split, side by side in one run. Measured, never asserted.

Product rows come from `llmctl eval --beir ... --split train --json` (the real pipeline,
per stage: BM25, dense, hybrid, and rerank when a cross-encoder is available), once per
variant below; each variant's index is reused when it exists (same chunk ids: nothing is
re-embedded). The plain baseline (whole-document BM25 with llmctl's tokenization and
whole-document all-MiniLM-L6-v2, min-max over the whole corpus, BM25 weight 0.4 chosen
a priori) is computed in numpy. Every metric is also given on two fixed halves of the
queries (even ids: tune, odd ids: held-out) so a tuned default can be checked on queries
it was not tuned on.

    python bench/quality.py [--variants default,minmax,rrf,rank_bm25,chunks128]   # bench/out/quality.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import common
import numpy as np

# name -> (environment overrides, data dir under bench/out, what it shows)
VARIANTS = {
    "default": ({}, "evaldata", "llmctl defaults: bm25s, weighted fusion of max-normalised scores (BM25 0.4)"),
    "minmax": ({"LLMCTL_RETRIEVAL__NORMALIZATION": "minmax"}, "evaldata",
               "same index, min-max normalisation (the default before tuning)"),
    "rrf": ({"LLMCTL_RETRIEVAL__FUSION": "rrf"}, "evaldata", "same index, reciprocal rank fusion (k=60)"),
    "rank_bm25": ({"LLMCTL_BM25__BACKEND": "rank_bm25"}, "evaldata", "same index, rank-bm25 backend"),
    "chunks128": ({"LLMCTL_CHUNKING__MAX_TOKENS": "128"}, "c128/c128data",
                  "chunks of at most 128 tokens instead of the model's 254 (a second index)"),
}


def halves(cases: list[dict], stage: str) -> dict:
    out = {}
    for name, keep in (("tune", 0), ("held", 1)):
        rows = [c["metrics"][stage] for c in cases if int(c["id"]) % 2 == keep and stage in c["metrics"]]
        out[name] = {m: round(float(np.mean([r[m] for r in rows])), 4) for m in rows[0]} if rows else {}
    return out


def run_eval(name: str, limit: int | None = None) -> tuple[dict, float]:
    env_over, data, _ = VARIANTS[name]
    data_dir = common.OUT / data
    data_dir.mkdir(parents=True, exist_ok=True)
    link = data_dir / "beir-scifact"
    if name != "chunks128" and not link.exists() and (common.OUT / "scifact" / "data" / "manifest.sqlite").exists():
        os.symlink(common.OUT / "scifact" / "data", link)  # reuse the index bench/ingest_bench.py built
    report = common.OUT / f"eval-{name}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_") or k == "LLMCTL_CACHE_DIR"} | env_over
    args = [sys.executable, "-m", "llmctl", "--data-dir", str(data_dir), "eval", "-q", "--beir",
            str(common.SCIFACT), "--split", "train", "--json-file", str(report)]
    # Bring a reused index to this llmctl's settings (e.g. vector_store.ef_search) and sync it. Run from
    # the dataset folder, as `eval --beir` does: sources are named relative to it ("corpus.jsonl"); from
    # anywhere else the corpus would be a second source and be embedded again beside the first.
    subprocess.run([sys.executable, "-m", "llmctl", "--data-dir", str(data_dir / "beir-scifact"), "ingest", "-q",
                    "--repair", "corpus.jsonl"], env=env, check=True, capture_output=True, cwd=common.SCIFACT)
    t = time.perf_counter()
    proc = subprocess.run([*args, *(["--limit", str(limit)] if limit else [])], env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"eval {name} failed: {proc.stderr}")
    return json.loads(report.read_text()), seconds


def plain_baseline() -> dict:
    """Whole-document BM25 + whole-document dense, min-max over the whole corpus (the tutorial hybrid)."""
    from tune import Evaluator, bm25_chunk_scores, normalise

    qtext, qrels = common.queries_and_qrels()
    qids = list(qtext)
    docs = common.corpus()
    doc_ids = list(docs)
    dense = common.query_vectors(qids, qtext) @ common.plain_doc_vectors(doc_ids, docs).T
    bm25 = bm25_chunk_scores([f"{docs[d].get('title', '')}\n{docs[d]['text']}" for d in doc_ids],
                             [qtext[q] for q in qids])
    fused = 0.4 * normalise(bm25, None, "minmax") + 0.6 * normalise(dense, None, "minmax")
    ev = Evaluator(qids, doc_ids, qrels)
    tune, held = (np.array([qids.index(q) for q in half]) for half in common.split(qids))
    out = {}
    for name, scores in (("bm25 whole doc", bm25), ("dense whole doc", dense), ("hybrid min-max w=0.4", fused)):
        out[name] = {"all": ev(scores), "tune": ev(scores, tune), "held": ev(scores, held)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    out: dict = {"variants": {}, "split": "train", "queries": None}
    # rank_bm25 first and default last: the shared index ends with the default BM25 settings
    names = [n for n in ("rank_bm25", "rrf", "minmax", "chunks128", "default") if n in args.variants.split(",")]
    for name in names:
        report, seconds = run_eval(name)
        out["queries"] = len(report["cases"])
        stages = {stage: {"all": {m: round(v, 4) for m, v in metrics.items()},
                          **halves(report["cases"], stage)}
                  for stage, metrics in report["metrics"].items()}
        out["variants"][name] = {"about": VARIANTS[name][2], "stages": stages, "rerank": report["rerank"],
                                 "final_stage": report["final_stage"], "wall_seconds": round(seconds, 1),
                                 "latency_ms": report["latency_ms"]}
        print(name, {s: v["all"]["ndcg@10"] for s, v in stages.items()}, flush=True)
    if "default" in names:
        _, t300 = run_eval("default", limit=300)
        out["variants"]["default"]["wall_seconds_300"] = round(t300, 1)
    out["plain_baseline"] = plain_baseline()
    (common.OUT / "quality.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
