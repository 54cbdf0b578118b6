"""The dense vector store: a Chroma collection, always given explicit vectors.

Chroma only holds vectors plus the fields used for filtering (source, doc_id, kind);
chunk text and citation metadata live in the manifest, the single source of truth.
Passing ``embeddings=`` on every write and ``query_embeddings=`` on every query matters:
otherwise Chroma tries to download its own ONNX model.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from pathlib import Path

from llmctl.config import Config, VectorStoreConfig
from llmctl.datadir import refuse_links_under
from llmctl.errors import ConfigError, IndexStateError, LlmctlError
from llmctl.records import Chunk
from llmctl.retry import while_locked


def open_store(cfg: Config, folder: Path, *, readonly: bool = False) -> VectorStore | Reader | NoVectors:
    """The configured store: embedded files in ``folder`` (an index's ``DataDir.chroma``), or a
    Chroma server. ``readonly`` embedded stores open through ``Reader``."""
    vs = cfg.vector_store
    if vs.mode == "embedded":
        refuse_links_under(folder, "vector store file")  # Chroma writes there even to read (migrations)
        if readonly:
            if not (folder / "chroma.sqlite3").is_file():  # nothing to read, and a reader makes nothing
                return NoVectors()
            try:
                return Reader(folder, vs.collection)
            except Exception:  # noqa: BLE001 - any surprise in the fast path: the full client
                pass
        with damaged_says(folder):
            return VectorStore.embedded(folder, vs.collection, vs.ef_search)
    return VectorStore.server(vs, cfg.source)


class DamagedStore(IndexStateError):
    """The embedded store's files cannot be read (a truncated or overwritten SQLite file, a broken
    segment): ``ingest --repair`` rebuilds them from the manifest."""

    def __init__(self, folder: Path, reason: str):
        super().__init__(f"The vector store in {folder} cannot be read ({reason}): run 'llmctl ingest --repair "
                         "PATH' with the folders you ingested; it rebuilds the store from the index, re-embedding "
                         "every chunk")
        self.reason = reason


@contextmanager
def damaged_says(folder: Path):
    """Chroma's errors for unreadable files (several types, with tracebacks) as one line naming
    the folder and the fix. "database is locked" is not damage: it stays what it is."""
    try:
        yield
    except LlmctlError:
        raise
    except Exception as exc:  # noqa: BLE001 - chromadb raises several types for one cause
        text = str(exc).strip()
        if "locked" in text:
            raise
        reason = text.splitlines()[0][:160] if text else type(exc).__name__
        raise DamagedStore(folder, reason) from None


class NoVectors:
    """A store whose files are not there (deleted, or never written), read: it holds nothing.
    The full client would make its files to answer that; a reader writes nothing."""

    def count(self) -> int:
        return 0

    def query(self, vector, k: int, where: dict | None = None, ids: list[str] | None = None) -> list:
        return []


class Reader:
    """Queries an embedded store through Chroma's own Rust engine, without its Python
    client: ``import chromadb`` costs ~0.7 s (API models, embedding functions, telemetry),
    its Rust bindings ~25 ms. Same files, same engine, same results (tested against the
    client). Read-only: migrations are validated, never applied; anything unexpected makes
    ``open_store`` fall back to the full client."""

    TENANT, DATABASE = "default_tenant", "default_database"

    def __init__(self, folder: Path, collection: str):
        import resource

        import chromadb_rust_bindings as rb

        if not (folder / "chroma.sqlite3").is_file():
            raise FileNotFoundError(folder / "chroma.sqlite3")
        sqlite = rb.SqliteDBConfig(hash_type=rb.MigrationHash.MD5, migration_mode=rb.MigrationMode.Validate,
                                   url=str(folder / "chroma.sqlite3"))
        # Chroma's own sizing: each HNSW index holds 5 open files.
        cache_size = max(1, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 5)
        self.bindings = rb.Bindings(allow_reset=False, sqlite_db_config=sqlite, persist_path=str(folder),
                                    hnsw_cache_size=cache_size)
        self.id = str(self.bindings.get_collection(collection, self.TENANT, self.DATABASE).id)
        self.folder = folder

    def count(self) -> int:
        return int(self.bindings.count(self.id, self.TENANT, self.DATABASE))

    def query(self, vector, k: int, where: dict | None = None, ids: list[str] | None = None) -> list[tuple[str, float]]:
        """(chunk id, cosine similarity), best first; ``ids``: only among these."""
        import json

        with damaged_says(self.folder):
            n = self.count()
            if n == 0:
                return []
            res = self.bindings.query(self.id, ids, [vector], min(k, n), json.dumps(where) if where else None,
                                      None, ["distances"], self.TENANT, self.DATABASE)
        return [(i, 1.0 - float(d)) for i, d in zip(res.ids[0], res.distances[0], strict=True)]


def store_identity(vs: VectorStoreConfig) -> dict:
    """Where the vectors live; an index's manifest only matches the store it was built in."""
    where = "data_dir/chroma" if vs.mode == "embedded" else f"{vs.host}:{vs.port}"
    return {"mode": vs.mode, "location": where, "collection": vs.collection}


class VectorStore:
    def __init__(self, client, collection: str, ef_search: int = 400, folder: Path | None = None):
        self.client = client
        self.folder = folder  # an embedded store's files (None: a server's)
        self.ef_search = ef_search
        # ef_search: Chroma's default (100) finds only ~98% of the exact top 50 on SciFact, and
        # which ones it misses depends on the order vectors were added; 400 finds 99.97%
        # for ~1 ms more (bench/ann_recall.py).
        self.collection = _retried(client.get_or_create_collection, collection, embedding_function=None,
                                   configuration={"hnsw": {"space": "cosine", "ef_search": ef_search}})
        self.max_batch = max(1, client.get_max_batch_size())

    def apply_search_settings(self) -> None:
        """Give an existing collection the configured ef_search (creation settings apply only
        to new ones). Writers call this; other processes see it when they next open the store."""
        current = (self.collection.configuration_json or {}).get("hnsw", {}).get("ef_search")
        if current != self.ef_search:
            _retried(self.collection.modify, configuration={"hnsw": {"ef_search": self.ef_search}})

    @classmethod
    def embedded(cls, path: Path, collection: str = "llmctl_chunks", ef_search: int = 400) -> VectorStore:
        import chromadb

        path.mkdir(parents=True, exist_ok=True)
        client = _retried(chromadb.PersistentClient, path=str(path), settings=_settings())
        return cls(client, collection, ef_search, path)

    @classmethod
    def server(cls, vs: VectorStoreConfig, source: str) -> VectorStore:
        import chromadb

        headers = {}
        if vs.token_env:
            token = os.environ.get(vs.token_env)
            if not token:
                raise ConfigError(f"vector_store.token_env names ${vs.token_env}, which is not set: "
                                  f"export it or remove the key from {source}")
            headers[vs.auth_header] = f"Bearer {token}" if vs.auth_header.lower() == "authorization" else token
        where = f"{'https' if vs.ssl else 'http'}://{vs.host}:{vs.port}"
        try:
            client = chromadb.HttpClient(host=vs.host, port=vs.port, ssl=vs.ssl, headers=headers,
                                         settings=_settings())
            return cls(client, vs.collection, vs.ef_search)
        except Exception as exc:  # noqa: BLE001 - chromadb raises several types for one cause
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise IndexStateError(
                f"Chroma server at {where} is not usable ({reason}): start it with "
                f"'chroma run --path DIR --host {vs.host} --port {vs.port}', or check vector_store in {source}"
            ) from None

    def drop(self) -> None:
        """Delete the collection (ingest --rebuild against a server)."""
        _retried(self.client.delete_collection, self.collection.name)

    def count(self) -> int:
        return _retried(self.collection.count)

    def all_ids(self) -> set[str]:
        out: set[str] = set()
        offset, page = 0, 10_000
        while True:
            got = _retried(self.collection.get, include=[], limit=page, offset=offset)["ids"]
            out.update(got)
            if len(got) < page:
                return out
            offset += page

    def upsert(self, chunks: list[Chunk], vectors) -> None:
        for i in range(0, len(chunks), self.max_batch):
            part = chunks[i:i + self.max_batch]
            _retried(self.collection.upsert, ids=[c.id for c in part], embeddings=vectors[i:i + self.max_batch],
                     metadatas=[filter_fields(c) for c in part])

    def delete(self, ids: list[str]) -> None:
        for i in range(0, len(ids), self.max_batch):
            _retried(self.collection.delete, ids=ids[i:i + self.max_batch])

    def query(self, vector, k: int, where: dict | None = None, ids: list[str] | None = None) -> list[tuple[str, float]]:
        """(chunk id, cosine similarity), best first; ``ids``: only among these."""
        with damaged_says(self.folder) if self.folder else nullcontext():
            n = self.count()
            if n == 0:
                return []
            res = _retried(self.collection.query, query_embeddings=[vector], n_results=min(k, n),
                           where=where or None, ids=ids, include=["distances"])
        return [(i, 1.0 - float(d)) for i, d in zip(res["ids"][0], res["distances"][0], strict=True)]

    def vectors(self, ids: list[str]):
        """The stored vectors of ``ids``, in that order."""
        import numpy as np

        got = _retried(self.collection.get, ids=ids, include=["embeddings"])
        by_id = dict(zip(got["ids"], got["embeddings"], strict=True))
        return np.asarray([by_id[i] for i in ids], dtype=np.float32)


def _retried(call, *args, **kwargs):
    """``call(*args, **kwargs)``, tried again while Chroma's SQLite says "database is locked": another process
    (an ingest, a server's reader) holds the file for a moment, and that error comes at once, more
    often on a loaded machine. Matched by message: importing chromadb.errors costs ~0.7 s."""
    return while_locked(lambda: call(*args, **kwargs), lambda exc: "database is locked" in str(exc),
                        patience=30.0, first_pause=0.05, max_pause=1.0)


def _settings():
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False, allow_reset=False)


def filter_fields(chunk: Chunk) -> dict[str, str]:
    ext = chunk.source.rsplit(".", 1)[-1].lower() if "." in chunk.source else ""
    return {"source": chunk.source, "doc_id": chunk.doc_id, "kind": chunk.kind, "ext": ext}
