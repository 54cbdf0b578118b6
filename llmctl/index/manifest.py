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

from llmctl.datadir import refuse_link
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
    num INTEGER PRIMARY KEY, doc_id TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL REFERENCES files(path) ON DELETE CASCADE,
    sha256 TEXT NOT NULL, title TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS documents_path ON documents(path);
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT PRIMARY KEY,
    doc INTEGER NOT NULL REFERENCES documents(num) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL, body BLOB NOT NULL, prefix TEXT,
    start_char INTEGER NOT NULL, end_char INTEGER NOT NULL, start_line INTEGER NOT NULL,
    end_line INTEGER NOT NULL, tokens INTEGER NOT NULL, kind TEXT NOT NULL, extra TEXT
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc, ordinal);
"""
# Each fact about a chunk is stored once (at 100x SciFact the manifest was larger than Chroma):
# - ``body``: the text, zlib-compressed. What is embedded is ``prefix + text``, the prefix being the
#   context header and a newline; NULL stands for the usual one, the document's title.
# - Its document by number; its source through the document's file.
# - ``extra``: JSON of the rarer metadata (page, record, front matter), and the heading when it is
#   not the context header. NULL when there is none.
# Two older layouts are read as they are (see ROWS) and converted in place by the next writer.
COLUMNS = ("id", "doc_id", "source", "ordinal", "body", "prefix",
           "start_char", "end_char", "start_line", "end_line", "tokens", "kind", "extra")
SPAN = {"start_char": 0, "end_char": 0, "start_line": 1, "end_line": 1, "tokens": 0, "kind": ""}  # and defaults
STORED = {"id", "text", "embed_text", "doc_id", "source", "ordinal", "heading", *SPAN}  # not in ``extra``


def _rows_sql(*exprs: str, tables: str) -> str:
    return "SELECT " + ", ".join(f"{e} AS {c}" for e, c in zip(exprs, COLUMNS, strict=True)) + " FROM " + tables


_FROM_META = [f"json_extract(meta, '$.{k}')" for k in SPAN]
ROWS = {  # layout -> every chunk as COLUMNS, the prefix resolved
    "slim": _rows_sql("c.id", "d.doc_id", "f.source", "c.ordinal", "c.body",
                      "coalesce(c.prefix, d.title || char(10))", *(f"c.{k}" for k in SPAN), "c.extra",
                      tables="main.chunks c JOIN main.documents d ON d.num = c.doc "
                             "JOIN main.files f ON f.path = d.path"),
    # older layouts kept every field in a JSON ``meta``: it stands in for ``extra`` (same values)
    "compact": _rows_sql("id", "doc_id", "json_extract(meta, '$.source')", "ordinal", "body", "prefix",
                         *_FROM_META, "meta", tables="main.chunks"),
    "texts": _rows_sql("id", "doc_id", "json_extract(meta, '$.source')", "ordinal", "text",
                       "substr(embed_text, 1, length(embed_text) - length(text))", *_FROM_META, "meta",
                       tables="main.chunks"),
}
INSERT_CHUNK = f"INSERT INTO chunks VALUES ({', '.join('?' * 12)})"


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


# ``--where FIELD=VALUE``: each field's condition on COLUMNS (the value is the one parameter). A new
# field is one line here; search/filters.py takes the names from this table.
FILTERS = {
    "source": "source GLOB ?",
    # the format's extension, under any compression suffix: ext=md is page.md and page.md.gz
    "ext": ("(CASE WHEN lower(source) GLOB '*.[gx]z' THEN substr(source, 1, length(source) - 3) "
            "WHEN lower(source) GLOB '*.bz2' THEN substr(source, 1, length(source) - 4) ELSE source END) "
            "GLOB '*.' || ?"),
    "kind": "kind = ?",
    "doc_id": "doc_id GLOB ?",
}

class Manifest:
    def __init__(self, path: Path, readonly: bool = False):
        self.path = path
        refuse_link(path, sqlite=True)  # not even read through one: SQLite would write -wal/-shm beside the target
        if readonly and not path.exists():
            raise IndexStateError(f"No index in {path.parent}: run 'llmctl ingest <path>' first")
        try:
            uri = f"file:{path}?mode=ro" if readonly else str(path)
            # Readers may be shared by a server's threads; SQLite serialises the calls itself.
            self.db = sqlite3.connect(uri, uri=readonly, timeout=30, isolation_level=None,
                                      check_same_thread=not readonly)
            self.layout = self._layout()
            if not readonly:
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA synchronous = NORMAL")
                if self.layout != "slim":
                    self._convert()
                self._create()
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.execute("SELECT count(*) FROM files").fetchone()
        except sqlite3.DatabaseError as exc:
            raise IndexStateError(
                f"Manifest {path} is unreadable ({exc}): run 'llmctl ingest --rebuild <path>' "
                "to rebuild the index from your documents"
            ) from None

    def close(self) -> None:
        self.db.close()

    def _layout(self) -> str:
        """How chunks are stored: 'slim' (today's, or a new file), 'compact' or 'texts' (older)."""
        columns = {row[1] for row in self.db.execute("PRAGMA main.table_info(chunks)")}
        return "texts" if "embed_text" in columns else "compact" if "meta" in columns else "slim"

    def _create(self) -> None:
        for statement in SCHEMA.split(";"):  # not executescript: it would commit a transaction
            if statement.strip():
                self.db.execute(statement)

    def _convert(self) -> None:
        """Rewrite an older manifest in the slim layout, in one transaction (a crash leaves the old
        tables whole), then give the space back to the disk if no reader holds the file."""
        old_rows = ROWS[self.layout].replace("main.chunks", "main.old_chunks")
        with self.transaction():
            for name in ("chunks_doc", "documents_path"):
                self.db.execute(f"DROP INDEX IF EXISTS {name}")
            self.db.execute("ALTER TABLE chunks RENAME TO old_chunks")
            self.db.execute("ALTER TABLE documents RENAME TO old_documents")
            self._create()
            self.db.execute("INSERT INTO documents (doc_id, path, sha256, title) "
                            "SELECT doc_id, path, sha256, title FROM old_documents ORDER BY rowid")
            rows = self.db.execute(f"SELECT r.*, d.num, d.title FROM ({old_rows}) r "
                                   "JOIN documents d ON d.doc_id = r.doc_id")
            while batch := rows.fetchmany(2000):
                self.db.executemany(INSERT_CHUNK, [_slim(_record(row[:-2]), *row[-2:]) for row in batch])
            self.db.execute("DROP TABLE old_chunks")
            self.db.execute("DROP TABLE old_documents")
        self.layout = "slim"
        try:
            self.db.execute("VACUUM")
        except sqlite3.OperationalError:
            pass  # a reader has it open: the space is reused by later writes instead

    def _chunks(self, columns: str, where: str = "", args: Iterable = ()) -> sqlite3.Cursor:
        """SELECT ``columns`` of every chunk (as COLUMNS) ``where``, in this file's layout. A reader
        that outlives an upgrade by a writer finds the new layout and asks again."""
        try:
            return self.db.execute(f"SELECT {columns} FROM ({ROWS[self.layout]}) {where}", tuple(args))
        except sqlite3.OperationalError:
            if self._layout() == self.layout:
                raise
            self.layout = self._layout()
            return self._chunks(columns, where, args)

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
        return {doc_id: [r[0] for r in self._chunks("id", "WHERE doc_id = ? ORDER BY ordinal", (doc_id,))]
                for doc_id in doc_ids}

    def chunk_ids_of_files(self, paths: Iterable[str]) -> list[str]:
        ids: list[str] = []
        for path in paths:
            ids += [r[0] for r in self._chunks(
                "id", "WHERE doc_id IN (SELECT doc_id FROM main.documents WHERE path = ?)", (path,))]
        return ids

    def counts(self) -> dict[str, int]:
        return {t: self.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("files", "documents", "chunks")}

    def document_hashes(self) -> list[tuple[str, str]]:
        """(document id, content hash) of every document, by id."""
        return self.db.execute("SELECT doc_id, sha256 FROM documents ORDER BY doc_id").fetchall()

    def document_sources(self) -> list[tuple[str, str]]:
        """(document id, source) of every document with chunks."""
        return self._chunks("doc_id, source", "GROUP BY doc_id").fetchall()

    def chunks_matching(self, conditions: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """(chunk id, document id) of the chunks meeting every ``--where`` condition, (field of
        FILTERS, value); no condition: every chunk."""
        where = " AND ".join(FILTERS[f] for f, _ in conditions)
        return self._chunks("id, doc_id", f"WHERE {where}" if where else "", [v for _, v in conditions]).fetchall()

    def pages_of(self, chunk_ids: list[str]) -> dict[str, str]:
        """{chunk id: its document id} for those of ``chunk_ids`` in the index."""
        if not chunk_ids:
            return {}
        return dict(self._chunks("id, doc_id", f"WHERE id IN ({','.join('?' * len(chunk_ids))})", chunk_ids))

    def chunk_ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT id FROM chunks")}

    def chunk_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]

    def keyword_corpus(self) -> Iterator[tuple[str, str]]:
        """(chunk id, text to index) in a stable order, read as it is consumed."""
        for cid, body, prefix in self._chunks("id, body, prefix", "ORDER BY doc_id, ordinal"):
            yield cid, prefix + _text(body)

    def chunk_texts(self) -> Iterator[tuple[str, str, str, str]]:
        """(chunk id, document id, source, text) of every chunk."""
        for cid, doc_id, source, body in self._chunks("id, doc_id, source, body"):
            yield cid, doc_id, source, _text(body)

    def documents_with_chunks(self) -> set[str]:
        """The ids of the documents that have chunks: ``document_sources``'s, without grouping every
        chunk (an index lookup per document in the layout writers use)."""
        if self.layout != "slim":
            return {d for d, _ in self.document_sources()}
        return {r[0] for r in self.db.execute(
            "SELECT doc_id FROM documents d WHERE EXISTS (SELECT 1 FROM chunks c WHERE c.doc = d.num)")}

    def page_heads(self, doc_ids: Iterable[str] | None = None) -> Iterator[tuple[str, str, str]]:
        """(document id, title, text of its first chunk) of every document with chunks, or of
        those of ``doc_ids`` that have some; by document id, read as it is consumed."""
        parts: Iterable[list[str] | None] = [None]
        if doc_ids is not None:
            wanted = sorted(set(doc_ids))
            parts = (wanted[i:i + 500] for i in range(0, len(wanted), 500))
        for part in parts:
            where, args = ("", []) if part is None else (f"AND doc_id IN ({','.join('?' * len(part))})", part)
            titles = dict(self.db.execute(f"SELECT doc_id, title FROM documents {where.replace('AND', 'WHERE', 1)}",
                                          args))
            for doc_id, body in self._chunks("doc_id, body", f"WHERE ordinal = 0 {where} ORDER BY doc_id", args):
                yield doc_id, titles.get(doc_id, ""), _text(body)

    def keyword_ids(self) -> list[str]:
        """The chunk ids of ``keyword_corpus``, in its order."""
        return [i for (i,) in self._chunks("id", "ORDER BY doc_id, ordinal")]

    def get_chunks(self, ids: list[str]) -> dict[str, dict]:
        """Each chunk's texts and metadata (``Chunk.metadata()``'s keys), by id."""
        out: dict[str, dict] = {}
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            for row in self._chunks(", ".join(COLUMNS), f"WHERE id IN ({','.join('?' * len(part))})", part):
                out[row[0]] = _record(row)
        return out

    def document(self, doc_id: str) -> tuple[str, list[dict]] | None:
        """(title, chunks in order) of one document, or None."""
        row = self.db.execute("SELECT title FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        if row is None:
            return None
        ids = self.chunk_ids_of_docs([doc_id])[doc_id]
        chunks = self.get_chunks(ids)
        return row[0], [chunks[i] for i in ids if i in chunks]

    # -- writes -----------------------------------------------------------------------
    def touch(self, records: list[FileRecord]) -> None:
        """Record the new size, mtime and shown source of files whose content hash did not change."""
        with self.transaction():
            self.db.executemany(
                "UPDATE files SET size = ?, mtime_ns = ?, source = ? WHERE path = ?",
                [(r.size, r.mtime_ns, r.source, r.path) for r in records],
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
                    self.db.execute("DELETE FROM chunks WHERE doc = (SELECT num FROM documents WHERE doc_id = ?)",
                                    (doc_id,))
                    if doc_id not in up.documents:
                        self.db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
                self.db.executemany(
                    "INSERT INTO documents (doc_id, path, sha256, title) VALUES (?, ?, ?, ?) ON CONFLICT(doc_id) "
                    "DO UPDATE SET path = excluded.path, sha256 = excluded.sha256, title = excluded.title",
                    [(d, f.path, sha, title) for d, (sha, title) in up.documents.items()],
                )
                self._insert(up, up.appended, "INSERT OR REPLACE")
                new_ids = self._insert(up, up.changed_chunks, "INSERT")
                stale += [cid for ids in before.values() for cid in ids if cid not in new_ids]
        return stale

    def _insert(self, up: FileUpdate, by_doc: dict[str, list[Chunk]], verb: str) -> set[str]:
        for doc_id, chunks in by_doc.items():
            num = self.db.execute("SELECT num FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()[0]
            title = up.documents[doc_id][1]
            self.db.executemany(INSERT_CHUNK.replace("INSERT", verb, 1), [
                _slim({"id": c.id, "text": c.text, "embed_text": c.embed_text, **c.metadata()}, num, title)
                for c in chunks])
        return {c.id for chunks in by_doc.values() for c in chunks}

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
                "SELECT d.path FROM chunks c JOIN documents d ON c.doc = d.num WHERE c.id = ?", (cid,)
            ).fetchone()
            if row:
                paths.add(row[0])
        self.remove_files(sorted(paths))
        return sorted(paths)

    def transaction(self):
        return _Txn(self.db)


def _text(body: bytes | str) -> str:
    return unpack(body) if isinstance(body, bytes) else body  # the 'texts' layout stored it plain


def _record(row: tuple) -> dict:
    """A chunk (COLUMNS, in any layout) as ``{id, text, embed_text, **Chunk.metadata()}``."""
    cid, doc_id, source, ordinal, body, prefix, *span, extra = row
    text = _text(body)
    more = json.loads(extra) if extra else {}
    heading = more.pop("heading", prefix.removesuffix("\n"))
    return {"id": cid, "text": text, "embed_text": prefix + text, "doc_id": doc_id, "source": source,
            "ordinal": ordinal, "heading": heading, **dict(zip(SPAN, span, strict=True)), **more}


def _slim(rec: dict, num: int, title: str) -> tuple:
    """The slim layout's row of a chunk given as ``_record`` returns it."""
    prefix = prefix_of(rec["embed_text"], rec["text"])
    extra = {k: v for k, v in rec.items() if k not in STORED}
    if rec["heading"] != prefix.removesuffix("\n"):
        extra["heading"] = rec["heading"]
    return (rec["id"], num, rec["ordinal"], pack(rec["text"]), None if prefix == title + "\n" else prefix,
            *(default if rec.get(k) is None else rec[k] for k, default in SPAN.items()),
            json.dumps(extra, separators=(",", ":"), ensure_ascii=False) if extra else None)


class _Txn:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
