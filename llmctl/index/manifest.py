"""The manifest (SQLite): files -> content hash -> documents -> chunks, plus index settings.

It is the source of truth: Chroma and BM25 are brought in line with it. Every change
to a group of files commits in one transaction, after their vectors are in Chroma.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llmctl.errors import IndexStateError
from llmctl.records import Chunk

FORMAT_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, source TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    path TEXT NOT NULL REFERENCES files(path) ON DELETE CASCADE,
    sha256 TEXT NOT NULL, title TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS documents_path ON documents(path);
CREATE TABLE IF NOT EXISTS chunks {CHUNKS};
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
"""
CHUNKS = """(
    id TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL, body BLOB NOT NULL, prefix TEXT NOT NULL, meta TEXT NOT NULL
)"""
SCHEMA = SCHEMA.replace("{CHUNKS}", CHUNKS)
# A chunk's text is stored zlib-compressed (``body``), and what is embedded is ``prefix + text``
# (the context header and a newline, or nothing): about half the size of storing both texts
# (measured on SciFact copies: bench/NOTES.md).
# Manifests written before stored ``text`` and ``embed_text``; a writer converts them in place.


def pack(text: str) -> bytes:
    return zlib.compress(text.encode("utf-8"), 6)


def unpack(body: bytes) -> str:
    return zlib.decompress(body).decode("utf-8")


def prefix_of(embed_text: str, text: str) -> str:
    """What precedes the text in the embedded text (chunking writes header + newline + text)."""
    if not embed_text.endswith(text):
        raise ValueError("a chunk's embedded text must end with its text")
    return embed_text[:len(embed_text) - len(text)]


@dataclass(frozen=True)
class FileRecord:
    path: str
    source: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass
class FileUpdate:
    """New state of one file: its row, and for each changed document its chunks."""

    file: FileRecord
    documents: dict[str, tuple[str, str]]  # doc_id -> (sha256, title), every doc of the file
    changed_chunks: dict[str, list[Chunk]]  # doc_id -> all chunks, for changed docs only
    partial: bool = False  # more of this file follows: keep documents not listed here
    # doc_id -> chunks added to a document being written in parts (its old chunks are kept
    # until its final update, which lists all its chunks in changed_chunks)
    appended: dict[str, list[Chunk]] = field(default_factory=dict)


class Manifest:
    def __init__(self, path: Path, readonly: bool = False):
        self.path = path
        if readonly and not path.exists():
            raise IndexStateError(f"No index in {path.parent}: run 'llmctl ingest <path>' first")
        try:
            uri = f"file:{path}?mode=ro" if readonly else str(path)
            # Readers may be shared by a server's threads; SQLite serialises the calls itself.
            self.db = sqlite3.connect(uri, uri=readonly, timeout=30, isolation_level=None,
                                      check_same_thread=not readonly)
            self.db.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA synchronous = NORMAL")
                self.db.executescript(SCHEMA)
                if self._old_layout():
                    self._convert()
            self.db.execute("SELECT count(*) FROM files").fetchone()
            self._text_sql = "text, embed_text" if self._old_layout() else "body, prefix"
        except sqlite3.DatabaseError as exc:
            raise IndexStateError(
                f"Manifest {path} is unreadable ({exc}): run 'llmctl ingest --rebuild <path>' "
                "to rebuild the index from your documents"
            ) from None

    def close(self) -> None:
        self.db.close()

    def _old_layout(self) -> bool:
        return any(row[1] == "embed_text" for row in self.db.execute("PRAGMA table_info(chunks)"))

    def _convert(self) -> None:
        """Rewrite an old manifest's chunks in the compact layout, in one transaction (a crash
        leaves the old table whole), then give the space back to the disk if no reader holds the file."""
        with self.transaction():
            self.db.execute(f"CREATE TABLE chunks_compact {CHUNKS}")
            rows = self.db.execute("SELECT id, doc_id, ordinal, text, embed_text, meta FROM chunks")
            while batch := rows.fetchmany(2000):
                self.db.executemany("INSERT INTO chunks_compact VALUES (?, ?, ?, ?, ?, ?)",
                                    [(i, d, o, pack(t), prefix_of(e, t), m) for i, d, o, t, e, m in batch])
            self.db.execute("DROP TABLE chunks")
            self.db.execute("ALTER TABLE chunks_compact RENAME TO chunks")
            self.db.execute("CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id)")
        try:
            self.db.execute("VACUUM")
        except sqlite3.OperationalError:
            pass  # a reader has it open: the space is reused by later writes instead

    def _texts(self, a, b) -> tuple[str, str]:
        """(text, embedded text) of a row's two text columns, in either layout."""
        if isinstance(a, bytes):
            text = unpack(a)
            return text, b + text
        return a, b

    # -- meta -------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def settings(self) -> dict | None:
        raw = self.get_meta("settings")
        return json.loads(raw) if raw else None

    def set_settings(self, settings: dict) -> None:
        self.set_meta("settings", json.dumps(settings, sort_keys=True))

    @property
    def dirty(self) -> bool:
        return self.get_meta("dirty") == "1"

    def set_dirty(self, value: bool) -> None:
        self.set_meta("dirty", "1" if value else "0")

    # -- reads ------------------------------------------------------------------------
    def files(self) -> dict[str, FileRecord]:
        rows = self.db.execute("SELECT path, source, size, mtime_ns, sha256 FROM files")
        return {r[0]: FileRecord(*r) for r in rows}

    def documents_of(self, path: str) -> dict[str, str]:
        rows = self.db.execute("SELECT doc_id, sha256 FROM documents WHERE path = ?", (path,))
        return dict(rows.fetchall())

    def chunk_ids_of_docs(self, doc_ids: Iterable[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for doc_id in doc_ids:
            rows = self.db.execute("SELECT id FROM chunks WHERE doc_id = ? ORDER BY ordinal", (doc_id,))
            out[doc_id] = [r[0] for r in rows]
        return out

    def chunk_ids_of_files(self, paths: Iterable[str]) -> list[str]:
        ids: list[str] = []
        for path in paths:
            ids += [r[0] for r in self.db.execute(
                "SELECT c.id FROM chunks c JOIN documents d ON c.doc_id = d.doc_id WHERE d.path = ?",
                (path,),
            )]
        return ids

    def chunk_ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT id FROM chunks")}

    def chunk_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]

    def keyword_corpus(self) -> Iterator[tuple[str, str]]:
        """(chunk id, text to index) in a stable order, read as it is consumed."""
        for cid, a, b in self.db.execute(f"SELECT id, {self._text_sql} FROM chunks ORDER BY doc_id, ordinal"):
            yield cid, self._texts(a, b)[1]

    def chunk_texts(self) -> Iterator[tuple[str, str, str, str]]:
        """(chunk id, document id, source, text) of every chunk."""
        sql = f"SELECT id, doc_id, json_extract(meta, '$.source'), {self._text_sql} FROM chunks"
        for cid, doc_id, source, a, b in self.db.execute(sql):
            yield cid, doc_id, source, self._texts(a, b)[0]

    def keyword_ids(self) -> list[str]:
        """The chunk ids of ``keyword_corpus``, in its order."""
        return [i for (i,) in self.db.execute("SELECT id FROM chunks ORDER BY doc_id, ordinal")]

    def get_chunks(self, ids: list[str]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            marks = ",".join("?" * len(part))
            rows = self.db.execute(f"SELECT id, {self._text_sql}, meta FROM chunks WHERE id IN ({marks})", part)
            for cid, a, b, meta in rows:
                text, embed_text = self._texts(a, b)
                out[cid] = {"id": cid, "text": text, "embed_text": embed_text, **json.loads(meta)}
        return out

    def document(self, doc_id: str) -> tuple[str, list[dict]] | None:
        """(title, chunks in order) of one document, or None."""
        row = self.db.execute("SELECT title FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        if row is None:
            return None
        ids = [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE doc_id = ? ORDER BY ordinal", (doc_id,))]
        chunks = self.get_chunks(ids)
        return row[0], [chunks[i] for i in ids if i in chunks]

    # -- writes -----------------------------------------------------------------------
    def touch(self, records: list[FileRecord]) -> None:
        """Record new size/mtime of files whose content hash did not change."""
        with self.transaction():
            self.db.executemany(
                "UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?",
                [(r.size, r.mtime_ns, r.path) for r in records],
            )

    def apply(self, updates: list[FileUpdate]) -> list[str]:
        """Write the new state of some files in one transaction; returns chunk ids no longer used."""
        stale: list[str] = []
        with self.transaction():
            for up in updates:
                f = up.file
                old_docs = self.documents_of(f.path)
                vanished = [] if up.partial else [d for d in old_docs if d not in up.documents]
                gone_docs = vanished + list(up.changed_chunks)
                before = self.chunk_ids_of_docs(gone_docs)
                self.db.execute(
                    "INSERT INTO files VALUES (?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
                    "source = excluded.source, size = excluded.size, mtime_ns = excluded.mtime_ns, "
                    "sha256 = excluded.sha256",
                    (f.path, f.source, f.size, f.mtime_ns, f.sha256),
                )
                for doc_id in gone_docs:
                    self.db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
                    if doc_id not in up.documents:
                        self.db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
                self.db.executemany(
                    "INSERT INTO documents VALUES (?, ?, ?, ?) ON CONFLICT(doc_id) DO UPDATE SET "
                    "path = excluded.path, sha256 = excluded.sha256, title = excluded.title",
                    [(d, f.path, sha, title) for d, (sha, title) in up.documents.items()],
                )
                new_ids: set[str] = set()
                for chunks in up.appended.values():
                    self.db.executemany("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?, ?)", map(_row, chunks))
                for chunks in up.changed_chunks.values():
                    self.db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)", map(_row, chunks))
                    new_ids.update(c.id for c in chunks)
                stale += [cid for ids in before.values() for cid in ids if cid not in new_ids]
        return stale

    def remove_files(self, paths: list[str]) -> list[str]:
        """Forget files; returns the chunk ids they had."""
        with self.transaction():
            ids = self.chunk_ids_of_files(paths)
            self.db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in paths])
        return ids

    def forget_chunks_files(self, chunk_ids: set[str]) -> list[str]:
        """Drop the files owning these chunks so the next sync re-ingests them."""
        paths: set[str] = set()
        for cid in chunk_ids:
            row = self.db.execute(
                "SELECT d.path FROM chunks c JOIN documents d ON c.doc_id = d.doc_id WHERE c.id = ?",
                (cid,),
            ).fetchone()
            if row:
                paths.add(row[0])
        self.remove_files(sorted(paths))
        return sorted(paths)

    def transaction(self):
        return _Txn(self.db)


def _row(c: Chunk) -> tuple:
    return c.id, c.doc_id, c.ordinal, pack(c.text), prefix_of(c.embed_text, c.text), json.dumps(c.metadata())


class _Txn:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
