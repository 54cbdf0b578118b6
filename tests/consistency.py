"""Shared check: the manifest, Chroma and BM25 agree on exactly the same chunks."""

from __future__ import annotations

from pathlib import Path

from llmctl.config import Config
from llmctl.datadir import DataDir
from llmctl.index import keyword
from llmctl.index.manifest import Manifest
from llmctl.index.vectors import VectorStore, open_store


def index_state(data_dir: Path, cfg: Config | None = None) -> dict:
    data = DataDir(data_dir)  # the published index (a rebuild moves it into index-N)
    m = Manifest(data.manifest)
    try:
        manifest_ids = m.chunk_ids()
        dirty = m.dirty
        generation = m.get_meta("generation")
        files = m.files()
    finally:
        m.close()
    store = open_store(cfg, data.chroma) if cfg else VectorStore.embedded(data.chroma)
    chroma_ids = store.all_ids()
    bm25 = keyword.load(data.bm25, None)
    return {"manifest": manifest_ids, "chroma": chroma_ids, "bm25": bm25.live_ids(), "dirty": dirty,
            "generation": generation, "bm25_generation": keyword.current_generation(data.bm25),
            "files": files}


def assert_consistent(data_dir: Path, cfg: Config | None = None) -> dict:
    s = index_state(data_dir, cfg)
    assert not s["dirty"], f"{data_dir}: the manifest's dirty flag is still up (a write did not finish or recover)"
    assert s["manifest"] == s["chroma"], "Chroma and manifest disagree"
    assert len(s["bm25"]) == len(set(s["bm25"])), "duplicated BM25 documents"
    assert set(s["bm25"]) == s["manifest"], "BM25 and manifest disagree"
    assert s["generation"] == s["bm25_generation"], (s["generation"], s["bm25_generation"])
    return s
