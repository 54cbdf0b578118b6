"""Tuning sweep on SciFact's training split, in numpy over the stored index (no re-embedding).

Scores every query against every chunk once per retriever (exact), then tries roll-ups,
BM25 settings, normalisations, fusion methods, weights and candidate depths. Each setting is
measured on two fixed halves of the 809 training queries (tune = even ids, held-out = odd);
a setting is kept only if it also wins on the held-out half.

    python bench/tune.py          # writes bench/out/tune.json
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

import common
import numpy as np

K_NDCG, K_RECALL, K_MRR = 10, 100, 10


class Evaluator:
    """nDCG@10 / recall@100 / MRR@10 of a [queries x docs] score matrix (higher = better)."""

    def __init__(self, qids: list[str], docs: list[str], qrels: dict[str, dict[str, int]]):
        pos = {d: i for i, d in enumerate(docs)}
        self.rel = np.zeros((len(qids), len(docs)), dtype=bool)
        for qi, q in enumerate(qids):
            for d in qrels[q]:
                if d in pos:
                    self.rel[qi, pos[d]] = True
        self.nrel = self.rel.sum(1)
        self.disc = 1.0 / np.log2(np.arange(2, K_NDCG + 2))
        self.idcg = np.array([self.disc[:min(n, K_NDCG)].sum() for n in self.nrel])

    def __call__(self, scores: np.ndarray, rows: np.ndarray | None = None) -> dict[str, float]:
        rows = np.arange(len(scores)) if rows is None else rows
        s = scores[rows]
        rel = self.rel[rows]
        top = np.argpartition(-s, K_RECALL, axis=1)[:, :K_RECALL]
        order = np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 1), axis=1, kind="stable"), 1)
        hits = np.take_along_axis(rel, order, 1)
        ndcg = (hits[:, :K_NDCG] * self.disc).sum(1) / self.idcg[rows]
        recall = hits.sum(1) / self.nrel[rows]
        first = np.where(hits[:, :K_MRR].any(1), hits[:, :K_MRR].argmax(1) + 1, np.inf)
        return {"ndcg@10": float(ndcg.mean()), "recall@100": float(recall.mean()), "mrr@10": float((1 / first).mean())}


def rollup_max(chunk_scores: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.maximum.reduceat(chunk_scores, starts, axis=1)


def topk_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """True for each row's k best entries (the candidates a retriever would return)."""
    idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    mask = np.zeros_like(scores, dtype=bool)
    np.put_along_axis(mask, idx, True, axis=1)
    return mask


def normalise(scores: np.ndarray, mask: np.ndarray | None, how: str) -> np.ndarray:
    """Scale each row; entries outside ``mask`` (not retrieved) become 0."""
    inf = np.inf
    m = np.ones_like(scores, dtype=bool) if mask is None else mask
    hi = np.where(m, scores, -inf).max(1, keepdims=True)
    lo = np.where(m, scores, inf).min(1, keepdims=True)
    if how == "minmax":
        out = (scores - lo) / np.maximum(hi - lo, 1e-9)
    elif how == "max":  # divide by the best (BM25 and cosine both have a natural 0)
        out = scores / np.maximum(hi, 1e-9)
    elif how == "zscore":
        mu = np.where(m, scores, 0).sum(1, keepdims=True) / m.sum(1, keepdims=True)
        sd = np.sqrt((np.where(m, scores - mu, 0) ** 2).sum(1, keepdims=True) / m.sum(1, keepdims=True))
        out = (scores - mu) / np.maximum(sd, 1e-9)
        lo2 = np.where(m, out, inf).min(1, keepdims=True)
        out = out - lo2  # keep missing = 0 below every candidate
    else:
        raise ValueError(how)
    return np.where(m, out, 0.0)


def rrf(scores: np.ndarray, mask: np.ndarray | None, k: int) -> np.ndarray:
    ranks = np.argsort(np.argsort(-scores, axis=1), axis=1) + 1
    out = 1.0 / (k + ranks)
    return out if mask is None else np.where(mask, out, 0.0)


def bm25_chunk_scores(texts: list[str], queries: list[str], **cfg) -> np.ndarray:
    from llmctl.config import BM25Config
    from llmctl.index.keyword import BM25sIndex

    index = BM25sIndex(BM25Config(**cfg))
    index.build([str(i) for i in range(len(texts))], texts)
    return np.stack([index._scores(t) if (t := index.tokenize(q)) else np.zeros(len(texts), np.float32)
                     for q in queries]).astype(np.float32)


@dataclass
class Setup:
    """SciFact train against the stored index: chunks ordered by document (see common.by_document)."""

    qtext: dict[str, str]
    qids: list[str]
    qvec: np.ndarray
    docs: dict[str, dict]
    doc_ids: list[str]
    starts: np.ndarray
    vectors: np.ndarray
    texts: list[str]  # each chunk's embedded (and BM25-indexed) text
    ev: Evaluator


def setup() -> Setup:
    qtext, qrels = common.queries_and_qrels()
    qids = list(qtext)
    docs = common.corpus()
    doc_ids = list(docs)
    arr = common.index_arrays()
    order, starts = common.by_document(arr, doc_ids)
    return Setup(qtext, qids, common.query_vectors(qids, qtext), docs, doc_ids, starts, arr["vectors"][order],
                 [arr["embed_text"][i] for i in order], Evaluator(qids, doc_ids, qrels))


def main() -> None:
    t0 = time.time()
    s = setup()
    qtext, qids, qvec, docs, doc_ids, starts, vectors, texts, ev = (
        s.qtext, s.qids, s.qvec, s.docs, s.doc_ids, s.starts, s.vectors, s.texts, s.ev)
    tune, held = (np.array([qids.index(q) for q in half]) for half in common.split(qids))
    results: dict[str, dict] = {}

    def record(name: str, doc_scores: np.ndarray) -> dict:
        r = {"all": ev(doc_scores), "tune": ev(doc_scores, tune), "held": ev(doc_scores, held)}
        results[name] = r
        print(f"{name:60s} all {r['all']['ndcg@10']:.4f} tune {r['tune']['ndcg@10']:.4f} "
              f"held {r['held']['ndcg@10']:.4f} R@100 {r['all']['recall@100']:.3f}", flush=True)
        return r

    dense_c = qvec @ vectors.T
    dense_d = rollup_max(dense_c, starts)
    record("dense chunks, max", dense_d)
    plain = common.plain_doc_vectors(doc_ids, docs)
    dense_plain = qvec @ plain.T
    record("dense whole doc (plain)", dense_plain)
    for a in (0.1, 0.2, 0.3):
        sums = np.add.reduceat(dense_c, starts, axis=1) / np.diff(np.r_[starts, dense_c.shape[1]])
        record(f"dense max + {a} mean", dense_d + a * sums)

    whole_text = [f"{docs[d].get('title', '')}\n{docs[d]['text']}" for d in doc_ids]
    bm_doc = bm25_chunk_scores(whole_text, [qtext[q] for q in qids])
    record("bm25 whole doc", bm_doc)
    bm_best = None
    for k1 in (0.9, 1.2, 1.5):
        for b in (0.4, 0.75, 0.9):
            c = rollup_max(bm25_chunk_scores(texts, [qtext[q] for q in qids], k1=k1, b=b), starts)
            r = record(f"bm25 chunks max k1={k1} b={b}", c)
            if bm_best is None or r["tune"]["ndcg@10"] > bm_best[0]:
                bm_best = (r["tune"]["ndcg@10"], k1, b, c)
    bm_chunks = bm25_chunk_scores(texts, [qtext[q] for q in qids])
    bm_default = rollup_max(bm_chunks, starts)
    record("bm25 chunks max, no stemming", rollup_max(
        bm25_chunk_scores(texts, [qtext[q] for q in qids], stemmer="none"), starts))
    record("bm25 chunks max, no stopwords", rollup_max(
        bm25_chunk_scores(texts, [qtext[q] for q in qids], stopwords="none"), starts))

    # baseline from ENVIRONMENT.md: whole-corpus min-max of whole-doc BM25 and whole-doc dense
    for w in (0.3, 0.35, 0.4):
        record(f"PLAIN hybrid whole-corpus minmax w={w}",
               w * normalise(bm_doc, None, "minmax") + (1 - w) * normalise(dense_plain, None, "minmax"))
    fusion_sweep(record, dense_d, bm_default)
    chunk_level_sweep(record, "", dense_c, bm_chunks, starts)
    chunk_size_sweep(record, qvec, doc_ids, bm_doc, [qtext[q] for q in qids])
    feedback_sweep(record, qvec, vectors, texts, [qtext[q] for q in qids], starts, dense_c, bm_chunks)
    finer_units_sweep(record, qvec, docs, doc_ids, dense_d, bm_default)
    json.dump({"results": results, "seconds": round(time.time() - t0, 1)},
              open(common.OUT / "tune.json", "w"), indent=1)


def chunk_size_sweep(record, qvec, doc_ids, bm_doc, queries) -> None:
    """128-token chunks (the index bench/quality.py builds for its chunks128 variant), if present."""
    index = common.OUT / "c128" / "c128data" / "beir-scifact"
    if not (index / "manifest.sqlite").exists():
        return
    arr = common.index_arrays(index)  # ordered by document, then ordinal
    pos = {common.doc_id_of(d): i for i, d in enumerate(doc_ids)}
    cdoc = np.array([pos[d] for d in arr["doc"]])
    order = np.argsort(cdoc, kind="stable")
    cdoc = cdoc[order]
    starts = np.flatnonzero(np.r_[True, np.diff(cdoc) != 0])
    dense_c = qvec @ arr["vectors"][order].T
    dense = rollup_max(dense_c, starts)
    texts = [arr["embed_text"][i] for i in order]
    bm_c = bm25_chunk_scores(texts, queries)
    bm = rollup_max(bm_c, starts)
    raw = [arr["text"][i] for i in order]
    window = [texts[i] + "\n" + " ".join(raw[j] for j in (i - 1, i + 1) if 0 <= j < len(raw) and cdoc[j] == cdoc[i])
              for i in range(len(texts))]
    bm_win = rollup_max(bm25_chunk_scores(window, queries), starts)
    record("chunks128: bm25 on chunk + neighbours, max", bm_win)
    chunk_level_sweep(record, "chunks128: ", dense_c, bm_c, starts)
    record("chunks128: dense chunks, max", dense)
    record("chunks128: bm25 chunks max", bm)
    for w in (0.3, 0.4):
        record(f"chunks128: doc-level whole-corpus minmax w={w}",
               w * normalise(bm, None, "minmax") + (1 - w) * normalise(dense, None, "minmax"))
        record(f"chunks128 dense + bm25 whole doc: minmax w={w}",
               w * normalise(bm_doc, None, "minmax") + (1 - w) * normalise(dense, None, "minmax"))
        record(f"chunks128 dense + bm25 chunk+neighbours: minmax w={w}",
               w * normalise(bm_win, None, "minmax") + (1 - w) * normalise(dense, None, "minmax"))


def feedback_sweep(record, qvec, vectors, texts, queries, starts, dense_c, bm_c, depth: int = 100) -> None:
    """Pseudo-relevance feedback after llmctl's fused first pass (no new embeddings needed):
    dense Rocchio (query + beta x the mean of the top-m fused chunks' vectors, searched again) and
    RM3-style BM25 expansion (the n terms weighing most, by BM25 weight x fused score, in the
    top-m chunks, added with weight gamma x query length). Each second pass is fused as before."""
    from scipy import sparse

    from llmctl.config import BM25Config
    from llmctl.index.keyword import BM25sIndex

    index = BM25sIndex(BM25Config())
    index.build([str(i) for i in range(len(texts))], texts)
    sc = index.bm25.scores
    terms = sparse.csr_matrix((sc["data"], sc["indices"], sc["indptr"]), shape=(len(sc["indptr"]) - 1, len(texts)))
    vocab = index.bm25.vocab_dict
    pairs = [(qi, vocab[t]) for qi, q in enumerate(queries) for t in index.tokenize(q) if t in vocab]
    qterms = sparse.csr_matrix((np.ones(len(pairs), np.float32), tuple(zip(*pairs, strict=True))),
                               shape=(len(queries), terms.shape[0]))  # query term counts: bm_c = qterms @ terms
    first = fuse_chunks(bm_c, dense_c, depth)

    def by_doc(bm, dense):
        return rollup_max(fuse_chunks(bm, dense, depth), starts)

    record("feedback: none (llmctl's first pass, exact dense)", rollup_max(first, starts))
    ranked = np.argsort(-first, axis=1)[:, :10]
    by_chunk = terms.T.tocsr()
    for m, beta in ((3, 0.3), (5, 0.3), (10, 0.3), (5, 0.6), (5, 1.0)):
        top = ranked[:, :m]
        wts = np.take_along_axis(first, top, 1)
        centroid = (vectors[top] * (wts / wts.sum(1, keepdims=True))[..., None]).sum(1)
        q2 = qvec + beta * centroid
        q2 /= np.linalg.norm(q2, axis=1, keepdims=True)
        record(f"feedback: dense Rocchio m={m} beta={beta}", by_doc(bm_c, q2 @ vectors.T))
    qlen = np.asarray(qterms.sum(1)).ravel()[:, None]
    for m, n, gamma in ((3, 20, 0.3), (5, 20, 0.3), (10, 20, 0.3), (3, 10, 0.6), (5, 20, 1.0)):
        top = ranked[:, :m]
        wts = np.take_along_axis(first, top, 1)
        rel = np.stack([np.asarray(by_chunk[top[i]].multiply(wts[i][:, None]).sum(0)).ravel()
                        for i in range(len(queries))])
        cut = np.take_along_axis(rel, np.argpartition(-rel, n - 1, axis=1)[:, n - 1:n], 1)  # n-th largest
        rel = np.where(rel >= cut, rel, 0)
        rel /= np.maximum(rel.sum(1, keepdims=True), 1e-9)
        bm2 = (sparse.csr_matrix(qterms.toarray() + gamma * qlen * rel) @ terms).toarray().astype(np.float32)
        record(f"feedback: BM25 RM3 m={m} terms={n} gamma={gamma}", by_doc(bm2, dense_c))


SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")


def finer_units_sweep(record, qvec, docs, doc_ids, dense_d, bm_d, depth: int = 100) -> None:
    """Extra dense signals from smaller units (a second set of vectors at ingest): each sentence
    with its title ("small-to-big": a document scores by its best sentence), and titles alone;
    fused per document with llmctl's max normalisation over each list's top ``depth``."""
    sents, owner = [], []
    for i, d in enumerate(doc_ids):
        for sent in SENTENCE.split(docs[d]["text"]):
            if sent.strip():
                sents.append(f"{docs[d].get('title', '')}\n{sent.strip()}")
                owner.append(i)
    owner = np.array(owner)
    sstarts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    emb = common.embedder()
    sent_d = rollup_max(qvec @ common.cached("sentence_vectors", lambda: emb.embed_documents(sents)).T, sstarts)
    title_d = qvec @ common.cached("title_vectors", lambda: emb.embed_documents(
        [docs[d].get("title", "") or d for d in doc_ids])).T

    def fuse(*parts):
        return sum(w * normalise(s, topk_mask(s, depth) & (s > 0), "max") for w, s in parts)

    record(f"finer units: dense on sentences ({len(sents):,}), max", sent_d)
    record("finer units: dense on titles alone", title_d)
    for w, a in ((0.4, 0.4), (0.3, 0.7), (0.4, 0.7), (0.3, 1.0)):
        mix = (1 - a) * dense_d + a * sent_d
        record(f"finer units: BM25 {w} + dense ({1 - a:.1f} chunk + {a} sentence)", fuse((w, bm_d), (1 - w, mix)))
    record("finer units: BM25 0.4 + chunks 0.5 + titles 0.1", fuse((0.4, bm_d), (0.5, dense_d), (0.1, title_d)))
    w = np.clip(0.3 * np.sqrt(top10_gap(bm_d) / np.maximum(top10_gap(dense_d), 1e-9)), 0.1, 0.8)[:, None]
    record("score-adaptive weight: BM25 0.3 x sqrt(BM25 top-10 gap / dense gap)", fuse((w, bm_d), (1 - w, dense_d)))


def top10_gap(scores: np.ndarray) -> np.ndarray:
    """How far each row's best score stands above its 10th best, relative to the best."""
    top = -np.sort(-scores, axis=1)[:, :10]
    return (top[:, 0] - top[:, 9]) / np.maximum(top[:, 0], 1e-9)


def chunk_level_sweep(record, label: str, dense_c, bm_c, starts) -> None:
    """What llmctl does: each retriever's top-``depth`` chunks, normalised within that list,
    fused per chunk, then a document ranks where its best chunk ranks."""
    for depth in (50, 200, 400):
        for how in ("minmax", "max"):
            for w in (0.3, 0.4, 0.5):
                record(f"{label}chunk-level {how} depth={depth} w={w}",
                       rollup_max(fuse_chunks(bm_c, dense_c, depth, w, how), starts))


def fuse_chunks(bm_c, dense_c, depth: int = 100, w: float = 0.4, how: str = "max") -> np.ndarray:
    """llmctl's fusion: each retriever's top ``depth`` chunks, normalised within that list and
    summed with BM25 weight ``w``; chunks neither retriever returned score -1."""
    dm, bm = topk_mask(dense_c, depth), topk_mask(bm_c, depth) & (bm_c > 0)
    fused = w * normalise(bm_c, bm, how) + (1 - w) * normalise(dense_c, dm, how)
    return np.where(dm | bm, fused, -1.0)


def fusion_sweep(record, dense_d, bm_d) -> None:
    for depth in (50, 100, 200):
        dm, bmask = topk_mask(dense_d, depth), topk_mask(bm_d, depth)
        for how in ("minmax", "max", "zscore"):
            for w in (0.3, 0.4, 0.5):
                record(f"doc-level {how} depth={depth} w={w}",
                       w * normalise(bm_d, bmask, how) + (1 - w) * normalise(dense_d, dm, how))
        for k in (5, 20, 60):
            record(f"doc-level rrf k={k} depth={depth}", rrf(bm_d, bmask, k) + rrf(dense_d, dm, k))
    for w in (0.3, 0.4):
        record(f"doc-level whole-corpus minmax w={w}",
               w * normalise(bm_d, None, "minmax") + (1 - w) * normalise(dense_d, None, "minmax"))


if __name__ == "__main__":
    main()
