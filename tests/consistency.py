"""Shared check: the manifest, Chroma and BM25 agree on exactly the same chunks."""

from __future__ import annotations

from pathlib import Path

from llmctl.index import keyword
from llmctl.index.manifest import Manifest
from llmctl.index.vectors import VectorStore


def index_state(data_dir: Path) -> dict:
    m = Manifest(data_dir / "manifest.sqlite")
    try:
        manifest_ids = m.chunk_ids()
        dirty = m.dirty
        generation = m.get_meta("generation")
        files = m.files()
    finally:
        m.close()
    chroma_ids = VectorStore(data_dir / "chroma").all_ids()
    bm25 = keyword.load(data_dir / "bm25", None)
    return {"manifest": manifest_ids, "chroma": chroma_ids, "bm25": bm25.ids, "dirty": dirty,
            "generation": generation, "bm25_generation": keyword.current_generation(data_dir / "bm25"),
            "files": files}


def assert_consistent(data_dir: Path) -> dict:
    s = index_state(data_dir)
    assert not s["dirty"]
    assert s["manifest"] == s["chroma"], "Chroma and manifest disagree"
    assert len(s["bm25"]) == len(set(s["bm25"])), "duplicated BM25 documents"
    assert set(s["bm25"]) == s["manifest"], "BM25 and manifest disagree"
    assert s["generation"] == s["bm25_generation"]
    return s
