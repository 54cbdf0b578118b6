"""A page's summary line in every chunk: measured on bench/multi_bench.py's corpora, not shipped.

The idea (contextual chunk headers): each chunk is embedded and keyword-indexed with its page's
summary line, "Title: the page's first sentence of prose", in front of its title > heading path,
so a section deep in a page is found by what the page is about. The candidates, questions and
tune/check halves are multi_bench's (run it first; its cache is $MULTI_BENCH_DIR). For each corpus
every chunk is embedded again with the summary line (MiniLM, ~4 chunks/s on 2 busy cores) and
a BM25 index is built over the same texts in memory; each question is then answered by z-score
fusion (BM25 0.2) over the new dense top 100 and BM25 top 100, against the shipped setting on the
stored candidates. Page-level hit@1 and MRR@10 as in multi_bench; paired bootstrap per half.

    python bench/page_summary.py [pydocs apache postgresql scifact]   # -> bench/out/page_summary.json
"""

from __future__ import annotations

import json
import pickle
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import multi_bench as M  # noqa: E402

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_NOT_PROSE = ("#", "```", ":", "..", "|", "<")


def summary(title: str, first_chunk: str) -> str:
    lines = [ln.strip("# ").strip() for ln in first_chunk.splitlines()
             if ln.strip() and not ln.lstrip().startswith(_NOT_PROSE)]
    first = _SENTENCE_END.split(" ".join(lines), 1)[0][:200]
    return f"{title}: {first}" if title else first


def page_slots(ranked, doc_of, text_of) -> list[set[str]]:
    from llmctl.search import fusion as F

    groups = F.collapse([c for c, _ in ranked][:60], text_of, 12)
    seen: set[str] = set()
    slots = []
    for c, dups in groups:
        pages = {doc_of(c), *(doc_of(d) for d in dups)} - seen
        if pages:
            seen |= pages
            slots.append(pages)
    return slots


def run(corpus: str) -> dict:
    from llmctl.index import keyword
    from llmctl.search import fusion as F
    from llmctl.stats import paired_bootstrap
    from llmctl.workspace import Workspace

    data = pickle.loads((M.CACHE / corpus / "candidates.pkl").read_bytes())["data"]
    ws = Workspace(data_dir=str(M.CACHE / corpus / "index"))
    r = ws.retriever
    heads = {d: summary(t, x) for d, t, x in r.manifest.page_heads()}
    corpus_texts = dict(r.manifest.keyword_corpus())  # chunk id -> the text BM25 indexes (header + text)
    ids = list(corpus_texts)
    chunks = r.chunks(ids)
    doc = {c: chunks[c]["doc_id"] for c in ids}
    texts = [f"{heads.get(doc[c], '')}\n{corpus_texts[c]}" for c in ids]
    r.embedder.load()
    vectors = np.asarray(r.embedder.embed_documents(texts), dtype=np.float32)
    bm25 = keyword.BACKENDS[r.cfg.bm25.backend](r.cfg.bm25)
    bm25.build(ids, texts)
    position = {c: i for i, c in enumerate(ids)}
    w = {"bm25": 0.2, "dense": 0.8}
    rows = []

    def text_of(c: str) -> str:
        return chunks[c]["text"]

    for q in data:
        base = [(c, s) for c, s in F.fuse_zscore(q["scores"], q["stats"], w) if c in q["chunks"]]
        before = M.metrics(page_slots(base, doc.get, text_of), set(q["pages"]))
        sims = vectors @ np.asarray(r.embed(q["q"]), dtype=np.float32)
        dense = [(ids[i], float(sims[i])) for i in np.argsort(-sims)[:100]]
        full = bm25.scores(q["q"], None)
        full = np.zeros(len(ids), dtype=np.float32) if full is None else full
        sparse = bm25.top(full, 100)
        cands = {c for c, _ in dense} | {c for c, _ in sparse}
        scores = {"bm25": {c: float(full[bm25.position[c]]) for c in cands},
                  "dense": {c: float(sims[position[c]]) for c in cands}}
        stats = {"bm25": (float(full.mean()), float(full.std())), "dense": (float(sims.mean()), float(sims.std()))}
        after = M.metrics(page_slots(F.fuse_zscore(scores, stats, w), doc.get, text_of), set(q["pages"]))
        rows.append((q["half"], before, after))
    ws.close()
    out = {}
    for half in ("tune", "check"):
        sel = [(b, a) for h, b, a in rows if h == half]
        b, a = (np.array([x[i]["mrr@10"] for x in sel]) for i in (0, 1))
        t = paired_bootstrap(a - b)
        out[half] = {"questions": len(sel), "mrr@10": [round(b.mean(), 3), round(a.mean(), 3)],
                     "hit@1": [round(float(np.mean([x[i]["hit@1"] for x in sel])), 2) for i in (0, 1)],
                     "delta": round(t["delta"], 3), "p": round(t["p_value"], 3)}
    return out


def main() -> None:
    corpora = sys.argv[1:] or ["pydocs", "apache", "postgresql", "scifact"]
    path = M.OUT / "page_summary.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for corpus in corpora:
        results[corpus] = run(corpus)
        print(corpus, json.dumps(results[corpus]), flush=True)
        M.OUT.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
