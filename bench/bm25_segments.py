"""BM25 in segments against a full rebuild, on SciFact train: does a delta scored with its base's
statistics rank as a rebuild does? Measured, never asserted.

Chunks come from an llmctl index of SciFact (bench/ingest_bench.py's, else
bench/remote_embeddings.py's). A base is built without 2% of the documents, which are then added
by segment updates (as edits would), together with 1% of the base deleted and added back
changed; the full index is built over the same final corpus. BM25-only nDCG@10 over the 809
training queries (a document scores as its best chunk), per half.

    python bench/bm25_segments.py        # bench/out/bm25_segments.json
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

import common
import numpy as np

from llmctl.config import BM25Config
from llmctl.index import keyword


def ndcg10(ranked: list[str], rel: dict[str, int]) -> float:
    dcg = sum(rel.get(d, 0) / np.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sum(g / np.log2(i + 2) for i, g in enumerate(sorted(rel.values(), reverse=True)[:10]))
    return dcg / ideal if ideal else 0.0


def evaluate(index: keyword.KeywordIndex, doc_of: dict[str, str], queries: dict, qrels: dict) -> dict:
    per = {}
    for qid, text in queries.items():
        docs: list[str] = []
        for cid, _ in index.search(text, 200):
            d = doc_of[cid]
            if d not in docs:
                docs.append(d)
        per[qid] = ndcg10(docs, qrels[qid])
    tune, held = common.split(list(queries))
    return {"all": round(float(np.mean(list(per.values()))), 4),
            "tune": round(float(np.mean([per[q] for q in tune])), 4),
            "held": round(float(np.mean([per[q] for q in held])), 4)}


def main() -> None:
    source = common.INDEX if (common.INDEX / "manifest.sqlite").exists() else common.OUT / "e5" / "beir-scifact"
    arr = common.index_arrays(source)
    doc_of = {cid: d.split("#", 1)[1] for cid, d in zip(arr["ids"], arr["doc"], strict=True)}  # BEIR ids
    texts = dict(zip(arr["ids"], arr["embed_text"], strict=True))
    queries, qrels = common.queries_and_qrels()
    rng = random.Random(0)
    docs = sorted(set(doc_of.values()))
    late = set(rng.sample(docs, len(docs) // 50))  # 2%: added after the base, by updates
    edited = set(rng.sample(sorted(set(docs) - late), len(docs) // 100))  # 1%: deleted, added back changed
    cfg = BM25Config()
    out: dict = {"source": str(source.relative_to(common.REPO)), "chunks": len(texts), "documents": len(docs),
                 "added_documents": len(late), "edited_documents": len(edited)}
    with tempfile.TemporaryDirectory() as tmp:
        seg, full = Path(tmp) / "seg", Path(tmp) / "full"
        current = {c: t for c, t in texts.items() if doc_of[c] not in late}
        keyword.build_and_save(seg, cfg, list(current), list(current.values()), "1")
        chunks_of: dict[str, list[str]] = {}
        for c, d in list(doc_of.items()):
            chunks_of.setdefault(d, []).append(c)
        seconds, merged = [], 0
        for step, group in enumerate(np.array_split(sorted(late | edited), 20), start=2):  # twenty small ingests
            added, deleted = [], []
            for d in group:
                if d in edited:  # its chunks go, and come back with one more sentence
                    for c in chunks_of[d]:
                        deleted.append(c)
                        new = f"{c}-v2"
                        doc_of[new] = d
                        added.append((new, current.pop(c) + " One more sentence."))
                else:
                    added += [(c, texts[c]) for c in chunks_of[d]]
            current.update(added)
            t = time.perf_counter()
            if not keyword.update(seg, cfg, added, deleted, str(step), len(current)):
                merged += 1
                keyword.build_and_save(seg, cfg, list(current), list(current.values()), str(step))
            seconds.append(time.perf_counter() - t)
        keyword.build_and_save(full, cfg, list(current), list(current.values()), "1")
        segmented, rebuilt = keyword.load(seg), keyword.load(full)
        out["updates"] = {"count": len(seconds), "rebuilt_instead": merged,
                          "median_seconds": round(float(np.median(seconds)), 3)}
        out["delta_chunks"] = len(segmented.delta.ids) if segmented.delta else 0
        out["ndcg@10"] = {"segments": evaluate(segmented, doc_of, queries, qrels),
                          "full rebuild": evaluate(rebuilt, doc_of, queries, qrels)}
    (common.OUT / "bm25_segments.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
