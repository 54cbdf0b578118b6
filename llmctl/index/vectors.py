"""The dense vector store: a Chroma collection, always given explicit vectors.

Chroma only holds vectors plus the fields used for filtering (source, doc_id, kind);
chunk text and citation metadata live in the manifest, the single source of truth.
Passing ``embeddings=`` on every write and ``query_embeddings=`` on every query matters:
otherwise Chroma tries to download its own ONNX model.
"""

from __future__ import annotations

from pathlib import Path

from llmctl.records import Chunk

COLLECTION = "llmctl_chunks"


class VectorStore:
    def __init__(self, path: Path):
        import chromadb
        from chromadb.config import Settings

        path.mkdir(parents=True, exist_ok=True)
        self.client = chromadb.PersistentClient(
            path=str(path), settings=Settings(anonymized_telemetry=False, allow_reset=False)
        )
        self.collection = self.client.get_or_create_collection(
            COLLECTION, metadata={"hnsw:space": "cosine"}, embedding_function=None
        )
        self.max_batch = max(1, self.client.get_max_batch_size())

    def count(self) -> int:
        return self.collection.count()

    def all_ids(self) -> set[str]:
        out: set[str] = set()
        offset, page = 0, 10_000
        while True:
            got = self.collection.get(include=[], limit=page, offset=offset)["ids"]
            out.update(got)
            if len(got) < page:
                return out
            offset += page

    def upsert(self, chunks: list[Chunk], vectors) -> None:
        for i in range(0, len(chunks), self.max_batch):
            part = chunks[i:i + self.max_batch]
            self.collection.upsert(
                ids=[c.id for c in part],
                embeddings=vectors[i:i + self.max_batch],
                metadatas=[filter_fields(c) for c in part],
            )

    def delete(self, ids: list[str]) -> None:
        for i in range(0, len(ids), self.max_batch):
            self.collection.delete(ids=ids[i:i + self.max_batch])

    def query(self, vector, k: int, where: dict | None = None) -> list[tuple[str, float]]:
        """(chunk id, cosine similarity), best first."""
        n = self.count()
        if n == 0:
            return []
        res = self.collection.query(
            query_embeddings=[vector], n_results=min(k, n), where=where or None, include=["distances"]
        )
        return [(i, 1.0 - float(d)) for i, d in zip(res["ids"][0], res["distances"][0], strict=True)]


def filter_fields(chunk: Chunk) -> dict[str, str]:
    ext = chunk.source.rsplit(".", 1)[-1].lower() if "." in chunk.source else ""
    return {"source": chunk.source, "doc_id": chunk.doc_id, "kind": chunk.kind, "ext": ext}
