"""Open the index for reading and run the two retrievers (dense in Chroma, BM25)."""

from __future__ import annotations

from functools import cached_property

import numpy as np

from llmctl.config import Config
from llmctl.datadir import DataDir
from llmctl.embedding import as_built, make_embedder
from llmctl.embedding.local import Embedder
from llmctl.errors import IndexStateError, InputError
from llmctl.index import keyword
from llmctl.index.manifest import Manifest
from llmctl.index.pages import PageScores, with_page_evidence
from llmctl.index.querymemo import QueryMemo
from llmctl.records import Hit
from llmctl.search.filters import parse_where
from llmctl.search.fusion import Ranked, collapse


class Filter:
    """Chunks allowed by --where conditions, in the form each retriever needs."""

    def __init__(self, chunk_ids: set[str], doc_ids: set[str]):
        self.chunk_ids = chunk_ids
        self.chroma_where = {"doc_id": {"$in": sorted(doc_ids)}}
        self.mask: np.ndarray | None = None  # over the BM25 index's chunks, made once per query


class Retriever:
    """Read-only view of an index built by ``ingest``, queried with its own embedding model."""

    def __init__(self, cfg: Config, data: DataDir, embedder: Embedder | None = None):
        self.cfg = cfg
        self.data = data
        hint = "run 'llmctl ingest <path>' first"
        if not self.data.exists():
            raise IndexStateError(f"No index in {data.root}: {hint}")
        self.manifest = Manifest(self.data.manifest, readonly=True)
        self.settings = self.manifest.settings()
        if not self.settings or self.manifest.chunk_count() == 0:
            raise IndexStateError(f"The index in {data.root} is empty: {hint}")
        self._embedder = embedder
        self.embedding_cfg = as_built(cfg, self.settings["embedding"])

    @cached_property
    def embedder(self) -> Embedder:
        """The model that built the index, whatever the config says now."""
        if self._embedder is not None:
            return self._embedder
        embedder = make_embedder(self.cfg, self.data, command="query", embedding=self.embedding_cfg)
        embedder.expect_dimension(int(self.manifest.get_meta("dimension") or 0) or None)
        return embedder

    @cached_property
    def store(self):
        from llmctl.index.vectors import open_store

        store = open_store(self.cfg, self.data.chroma, readonly=True)
        have, want = store.count(), self.manifest.chunk_count()
        if have < want and not self.manifest.dirty:  # while an ingest writes, counts differ by design
            raise IndexStateError(
                f"The vector store holds {have} vectors but the manifest lists {want} chunks (vector files "
                "deleted or damaged, or another vector_store?): run 'llmctl ingest --repair <path>' to "
                "re-embed only what is missing"
            )
        return store

    @cached_property
    def keyword(self) -> keyword.KeywordIndex:
        return keyword.load(self.data.bm25)

    def filter(self, where: list[str]) -> Filter | None:
        conds = parse_where(where)
        if not conds:
            return None
        rows = self.manifest.chunks_matching(conds)
        if not rows:
            hint = ""
            if any(f == "source" for f, _ in conds):
                example = next((r.source for r in self.manifest.files().values()), None)
                if example:
                    hint = (f": indexed sources look like {example!r}, and the glob must match the whole of one "
                            "('*' matches across folders)")
            elif any(f == "ext" for f, _ in conds):
                hint = ": ext is the format's extension, under any compression suffix (ext=md matches page.md.gz)"
            raise InputError(f"No indexed chunk matches where (--where) {' '.join(where)}{hint}")
        return Filter({r[0] for r in rows}, {r[1] for r in rows})

    @cached_property
    def memo(self) -> QueryMemo:
        return QueryMemo(self.data.queries, self.settings["embedding"])

    def remembered(self, question: str):
        """The question's vector if it was embedded before for this index's model, else None."""
        return self.memo.get(question)

    def embed(self, question: str):
        vector = self.embedder.embed_query(question)
        self.memo.put(question, vector)
        return vector

    def dense(self, vector, k: int, flt: Filter | None) -> Ranked:
        return self.store.query(vector, k, flt.chroma_where if flt else None)

    def _mask(self, flt: Filter | None) -> np.ndarray | None:
        if flt is not None and flt.mask is None:
            ids = self.keyword.ids
            flt.mask = np.fromiter((i in flt.chunk_ids for i in ids), dtype=bool, count=len(ids))
        return None if flt is None else flt.mask

    def sparse_scores(self, question: str, flt: Filter | None) -> np.ndarray | None:
        """Every chunk's BM25 score (0 outside the filter), or None when no term can match."""
        return self.keyword.scores(question, self._mask(flt))

    def top(self, scores: np.ndarray | None, k: int) -> Ranked:
        return [] if scores is None else self.keyword.top(scores, k)

    def sparse(self, question: str, k: int, flt: Filter | None) -> Ranked:
        return self.top(self.sparse_scores(question, flt), k)

    @cached_property
    def pages(self) -> PageScores | None:
        return PageScores.load(self.data.pages)

    def page_evidence(self, question: str, fused: Ranked, weight: float) -> Ranked:
        """``fused`` with each chunk's page-head z-score added (see index/pages.py); unchanged
        for an index written before page heads."""
        if not weight or not fused or self.pages is None:
            return fused
        page_of = self.manifest.pages_of([cid for cid, _ in fused])
        page_z = self.pages.zscores(question, set(page_of.values()))
        return with_page_evidence(fused, page_of, page_z, weight) if page_z else fused

    @cached_property
    def dense_sample(self) -> np.ndarray | None:
        """Vectors of up to 2,000 chunks spread over the index, saved by ingest with its BM25
        generation (None for an index written before them)."""
        return keyword.load_array(self.data.bm25, "dense_sample")

    def scored(self, vector, lists: dict[str, Ranked], bm25: np.ndarray | None, flt: Filter | None):
        """What z-score fusion needs: every candidate's BM25 and dense score, including those
        only the other retriever returned, and each retriever's mean and standard deviation over
        the corpus (BM25: ``bm25``, the query's score for every chunk from ``sparse_scores``;
        dense: the stored sample). None when the index has no sample."""
        sample = self.dense_sample
        if sample is None or not self.keyword.ids:
            return None
        index, mask = self.keyword, self._mask(flt)
        if index.live is not None:  # chunks deleted since the BM25 base was built are not the corpus
            mask = index.live if mask is None else mask & index.live
        full = np.zeros(len(index.ids), dtype=np.float32) if bm25 is None else bm25
        region = full if mask is None else full[mask]
        candidates = {i for ranked in lists.values() for i, _ in ranked}
        bm25 = {i: float(full[index.position[i]]) for i in candidates if i in index.position}
        dense = dict(lists["dense"])
        missing = [i for i in candidates if i not in dense]
        if missing:  # found by BM25 alone: their similarity, from the store
            try:
                dense.update(self.store.query(vector, len(missing), None, ids=missing))
            except Exception:  # noqa: BLE001 - chromadb.errors (importing it costs ~0.7 s)
                # An ingest running now deleted one of them from the store: Chroma refuses the
                # whole lookup. Those candidates count with dense's lowest known score.
                pass
        sims = sample @ np.asarray(vector, dtype=np.float32)
        stats = {"bm25": (float(region.mean()), float(region.std())), "dense": (float(sims.mean()), float(sims.std()))}
        return {"bm25": bm25, "dense": dense}, stats

    def chunks(self, ids: list[str]) -> dict[str, dict]:
        return self.manifest.get_chunks(ids)

    def close(self) -> None:
        self.manifest.close()
        if "memo" in self.__dict__:
            self.memo.close()


def collapse_duplicates(order: list[str], chunks: dict[str, dict], threshold: float = 0.9) -> list[str]:
    """``order`` with each group of identical or near-identical chunks (word 3-gram Jaccard >=
    ``threshold``: a shared include, the same file under two names) reduced to its best-ranked
    member; the chunk records of the kept ones list the others' locations as ``also_in``, and the
    next distinct chunks move up into the freed slots."""
    groups = collapse(order, lambda cid: chunks[cid].get("text", ""), None, threshold)
    for kept, dups in groups:
        if dups:  # other places, each once (a long line cut into equal pieces has one place: its own)
            here = Hit(kept, chunk=chunks[kept]).location()
            chunks[kept]["also_in"] = [loc for loc in dict.fromkeys(Hit(d, chunk=chunks[d]).location() for d in dups)
                                       if loc != here]
    return [kept for kept, _ in groups]
