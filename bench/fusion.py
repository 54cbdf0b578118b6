"""Fusion against the plain baseline on SciFact train, per half, with paired bootstrap CIs.

Reads the index `llmctl eval --beir` builds (bench/out/evaldata/beir-scifact) and scores every
query against every chunk in numpy, exactly as the product does (bench/tune.py's machinery):
each retriever's top `depth` chunks, normalised, fused with BM25 weight w, rolled up to
documents. The plain baseline is the issue's: whole-document stemmed BM25 + whole-document
MiniLM, min-max over the whole corpus, BM25 weight 0.35. Each variant is reported on the tune
half (even query ids) and the held-out half (odd), with the paired bootstrap 95% CI of its
nDCG@10 difference from the baseline (10,000 resamples over queries, seed 0). Last, a BM25
weight chosen per query from a signal known at query time, learned on the tune half.

    python bench/fusion.py        # bench/out/fusion.json
"""

from __future__ import annotations

import json
import time

import common
import numpy as np
from tune import Evaluator, normalise, rollup_max, setup, topk_mask

from llmctl.config import BM25Config
from llmctl.index.keyword import BM25sIndex
from llmctl.stats import paired_bootstrap

K1 = 1.2


def per_query_ndcg(ev: Evaluator, scores: np.ndarray) -> np.ndarray:
    top = np.argpartition(-scores, 10, axis=1)[:, :10]
    order = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable"), 1)
    hits = np.take_along_axis(ev.rel, order, 1)
    return (hits * ev.disc).sum(1) / ev.idcg


def versus_baseline(mine: np.ndarray, base: np.ndarray, halves: dict[str, np.ndarray]) -> dict:
    """Per-query nDCG@10 against the baseline's: the mean over all queries, and per half its mean,
    difference and paired bootstrap 95% CI (the product's own test, as eval --baseline uses)."""
    row: dict = {"all": round(float(mine.mean()), 4)}
    for half, rows in halves.items():
        t = paired_bootstrap(mine[rows] - base[rows])
        d, (lo, hi) = t["delta"], t["ci95"]
        row[half] = {"ndcg@10": round(float(mine[rows].mean()), 4), "delta": round(d, 4),
                     "ci95": [round(lo, 4), round(hi, 4)]}
    return row


def bm25_matrix(texts: list[str], queries: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Scores [queries x texts], and each query's best possible score (sum over its terms of
    idf x (k1 + 1): what a chunk saturated with every term would get)."""
    index = BM25sIndex(BM25Config())
    index.build([str(i) for i in range(len(texts))], texts)
    data, indices, indptr, vocab = index._matrix
    n = len(texts)
    scores = np.zeros((len(queries), n), np.float32)
    ceiling = np.zeros(len(queries), np.float32)
    for qi, q in enumerate(queries):
        toks = index.tokenize(q)
        if toks:
            scores[qi] = index._scores(toks)
        for t in toks:
            if t in vocab:
                df = indptr[vocab[t] + 1] - indptr[vocab[t]]
                ceiling[qi] += np.log(1 + (n - df + 0.5) / (df + 0.5)) * (K1 + 1)
    return scores, np.maximum(ceiling, 1e-9)


def main() -> None:
    t0 = time.time()
    s = setup()
    qids, docs, doc_ids, starts, texts, ev = s.qids, s.docs, s.doc_ids, s.starts, s.texts, s.ev
    queries = [s.qtext[q] for q in qids]
    qvec = s.qvec
    halves = {name: np.array([qids.index(q) for q in half]) for name, half in zip(("tune", "held"), common.split(qids),
                                                                                strict=True)}

    dense_c = qvec @ s.vectors.T
    bm_c, ceiling = bm25_matrix(texts, queries)
    whole = [f"{docs[d].get('title', '')}\n{docs[d]['text']}" for d in doc_ids]
    bm_doc, _ = bm25_matrix(whole, queries)
    dense_plain = qvec @ common.plain_doc_vectors(doc_ids, docs).T
    plain = 0.35 * normalise(bm_doc, None, "minmax") + 0.65 * normalise(dense_plain, None, "minmax")
    base = per_query_ndcg(ev, plain)
    results: dict[str, dict] = {}

    def record(name: str, doc_scores: np.ndarray | None, per_query: np.ndarray | None = None) -> None:
        mine = per_query_ndcg(ev, doc_scores) if per_query is None else per_query
        results[name] = row = versus_baseline(mine, base, halves)
        print(f"{name:64s} all {row['all']:.4f} | tune {row['tune']['ndcg@10']:.4f} {row['tune']['delta']:+.4f} "
              f"[{row['tune']['ci95'][0]:+.4f},{row['tune']['ci95'][1]:+.4f}] | held {row['held']['ndcg@10']:.4f} "
              f"{row['held']['delta']:+.4f} [{row['held']['ci95'][0]:+.4f},{row['held']['ci95'][1]:+.4f}]",
              flush=True)

    record("plain baseline (whole doc, whole-corpus min-max, w=0.35)", plain)
    dm, bmk = topk_mask(dense_c, 100), topk_mask(bm_c, 100) & (bm_c > 0)
    seen = dm | bmk

    def chunks(fused: np.ndarray) -> np.ndarray:
        return rollup_max(np.where(seen, fused, -1.0), starts)

    for w in (0.3, 0.4, 0.5):
        record(f"llmctl: top-100 each, max-normalised, w={w}",
               chunks(w * normalise(bm_c, bmk, "max") + (1 - w) * normalise(dense_c, dm, "max")))
    for w in (0.3, 0.4):
        record(f"chunk scores min-max over the whole corpus, w={w}",
               chunks(w * normalise(bm_c, None, "minmax") + (1 - w) * normalise(dense_c, None, "minmax")))
    # z-scores against corpus statistics: BM25's from its full score vector (a query scores every
    # chunk), dense's from a fixed sample of 2,000 chunk vectors (what an index could store)
    sample = np.random.default_rng(0).choice(dense_c.shape[1], 2000, replace=False)
    mu, sd = dense_c[:, sample].mean(1, keepdims=True), dense_c[:, sample].std(1, keepdims=True)
    z_bm = (bm_c - bm_c.mean(1, keepdims=True)) / np.maximum(bm_c.std(1, keepdims=True), 1e-9)
    d100 = np.sort(dense_c, axis=1)[:, -100][:, None]  # a chunk only BM25 found: the 100th dense score
    for w in (0.2, 0.25, 0.3, 0.35, 0.4):
        record(f"z-scores (corpus statistics), w={w}", chunks(w * z_bm + (1 - w) * (dense_c - mu) / sd))
        record(f"z-scores, dense of BM25-only chunks unknown (100th), w={w}",
               chunks(w * z_bm + (1 - w) * (np.where(dm, dense_c, d100) - mu) / sd))
    adaptive_sweep(record, halves["tune"], queries, texts, bm_c, dense_c,
                   lambda w: chunks(w * z_bm + (1 - w) * (np.where(dm, dense_c, d100) - mu) / sd), ev)
    bm_ceil = bm_c / ceiling[:, None]
    for w in (0.3, 0.4, 0.5, 0.6):
        record(f"BM25 / its ceiling + raw cosine, w={w}",
               chunks(w * np.where(bmk, bm_ceil, 0) + (1 - w) * np.where(dm, dense_c, 0)))
    (common.OUT / "fusion.json").write_text(json.dumps({"results": results, "seconds": round(time.time() - t0, 1)},
                                                       indent=1))


def adaptive_sweep(record, tune, queries, texts, bm_c, dense_c, fused, ev) -> None:
    """A BM25 weight per query, from a signal known at query time: the tune half's queries are
    split into 2-4 equal bins by the signal, each bin gets the weight (0 to 0.8) best on its tune
    queries, and the rule is applied to every query (held out: odd ids). Picking the best weight
    per query with hindsight is the ceiling this reaches for."""
    grid = np.round(np.arange(0, 0.85, 0.05), 2)
    nd = np.stack([per_query_ndcg(ev, fused(w)) for w in grid])  # [weight, query]
    rows = np.arange(len(queries))
    record("adaptive: best weight per query, with hindsight (a ceiling)", None, per_query=nd.max(0))
    index = BM25sIndex(BM25Config())
    terms = [set(index.tokenize(q)) for q in queries]
    top_b, top_d = np.argsort(-bm_c, 1)[:, :10], np.argsort(-dense_c, 1)[:, :10]
    first_b, first_d = np.take_along_axis(bm_c, top_b, 1), np.take_along_axis(dense_c, top_d, 1)
    signals = {
        "share of the question's terms in the best BM25 chunk": np.array(
            [len(t & set(index.tokenize(texts[top_b[i, 0]]))) / max(len(t), 1) for i, t in enumerate(terms)]),
        "question terms": np.array([len(t) for t in terms], dtype=float),
        "BM25 top-10 gap": (first_b[:, 0] - first_b[:, 9]) / np.maximum(first_b[:, 0], 1e-9),
        "dense top-10 gap": first_d[:, 0] - first_d[:, 9],
        "top-10 overlap of the two lists": np.array([len(set(a) & set(b)) / 10 for a, b in zip(top_b, top_d,
                                                                                                strict=True)]),
    }
    for name, signal in signals.items():
        for bins in (2, 3, 4):
            edges = np.quantile(signal[tune], np.linspace(0, 1, bins + 1)[1:-1])
            of = np.searchsorted(edges, signal)
            weights = [grid[nd[:, tune[of[tune] == b]].mean(1).argmax()] for b in range(bins)]
            pick = np.searchsorted(grid, np.array(weights)[of])
            record(f"adaptive: {name}, {bins} bins, weights {[float(w) for w in weights]}", None,
                   per_query=nd[pick, rows])


if __name__ == "__main__":
    main()
