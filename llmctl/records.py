"""Plain records passed between stages: files -> documents -> chunks."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Document:
    """One loaded document. A file yields one; a JSONL corpus yields one per line."""

    doc_id: str  # stable: "<source>" or "<source>#<id>" for JSONL records
    source: str  # display path used in citations
    text: str
    kind: str  # markdown, rst, text, html, pdf, code, jsonl
    title: str = ""
    language: str = ""  # source-code language for code files
    # (char_offset, page_number) for each page start, PDF only
    pages: tuple[tuple[int, int], ...] = ()
    line: int = 0  # a JSONL record: its line in the file (its text's own lines are not the file's)
    record: str = ""  # a JSONL record: its id
    fields: tuple[tuple[str, str], ...] = ()  # Markdown front matter
    # (char_offset, line of the file) where each piece of text starts, when the text is not the
    # file's own (HTML: its main text, extracted): citations then give the file's lines
    line_marks: tuple[tuple[int, int], ...] = ()


# What a document is read as (Document.kind, Chunk.kind): what `--where kind=` takes.
KINDS = ("markdown", "rst", "text", "html", "pdf", "jsonl", "code")


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough for the embedding model, with its provenance."""

    id: str
    doc_id: str
    source: str
    ordinal: int
    text: str  # the exact document text of this span
    embed_text: str  # text that is embedded and keyword-indexed: context header + text
    heading: str = ""  # "Guide > Section > Subsection"
    start_char: int = 0
    end_char: int = 0
    start_line: int = 1
    end_line: int = 1
    page: int | None = None
    kind: str = ""
    tokens: int = 0
    record: str = ""  # JSONL record id
    fields: tuple[tuple[str, str], ...] = ()  # the document's front matter

    def metadata(self) -> dict[str, str | int]:
        """Flat metadata for the vector store (Chroma allows str/int/float/bool only)."""
        meta: dict[str, str | int] = {
            "doc_id": self.doc_id,
            "source": self.source,
            "ordinal": self.ordinal,
            "heading": self.heading,
            "start_char": self.start_char,
            "end_char": self.end_char,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "kind": self.kind,
            "tokens": self.tokens,
        }
        if self.page is not None:
            meta["page"] = self.page
        if self.record:
            meta["record"] = self.record
        meta.update((f"fm_{k}", v) for k, v in self.fields)  # front matter, filterable in Chroma
        return meta


def cite(source: str, start_line, end_line, page=None, record: str = "") -> str:
    """A citation: 'path:12-30', 'path (page 2)', or 'corpus.jsonl:17 (record 4983)'."""
    if record:
        return f"{source}:{start_line} (record {record})"
    if page:
        return f"{source} (page {page})"
    return f"{source}:{start_line}-{end_line}"


@dataclass
class SkippedFile:
    path: str
    reason: str


@dataclass
class IngestReport:
    """What one ``ingest`` run did (or, with dry_run, would do)."""

    dry_run: bool = False
    files_seen: int = 0
    files_added: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    files_unchanged: int = 0
    files_removed: list[str] = field(default_factory=list)
    files_skipped: list[SkippedFile] = field(default_factory=list)
    documents_changed: int = 0
    chunks_added: int = 0
    chunks_deleted: int = 0
    chunks_kept: int = 0
    tokens_embedded: int = 0
    chunks_total: int = 0
    recovered: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the user should know about this run
    bm25_rebuilt: bool = False
    cache_invalidated: int = 0
    embedding: dict = field(default_factory=dict)  # backend that embedded (onnx | sentence-transformers), note
    deleted_ids: list[str] = field(default_factory=list)  # chunk ids this run deleted (not in to_dict)
    seconds: float = 0.0

    @property
    def files_ingested(self) -> int:
        """Files now in the index as they are on disk: added, changed or unchanged (not the skipped)."""
        return len(self.files_added) + len(self.files_changed) + self.files_unchanged

    def to_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "files": {
                "seen": self.files_seen,
                "added": len(self.files_added),
                "changed": len(self.files_changed),
                "unchanged": self.files_unchanged,
                "removed": len(self.files_removed),
                "skipped": len(self.files_skipped),
                "added_paths": self.files_added,
                "changed_paths": self.files_changed,
                "removed_paths": self.files_removed,
                "skipped_files": [{"path": s.path, "reason": s.reason} for s in self.files_skipped],
            },
            "documents_changed": self.documents_changed,
            "chunks": {
                "added": self.chunks_added,
                "deleted": self.chunks_deleted,
                "kept": self.chunks_kept,
                "total": self.chunks_total,
            },
            "tokens_embedded": self.tokens_embedded,
            "embedding": self.embedding,
            "bm25_rebuilt": self.bm25_rebuilt,
            "cache_entries_invalidated": self.cache_invalidated,
            "recovered": self.recovered,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Hit:
    """A retrieved chunk with what each stage thought of it: stage -> (rank, score), rank from 1."""

    id: str
    stages: dict[str, tuple[int, float]] = field(default_factory=dict)
    chunk: dict = field(default_factory=dict)  # text + citation metadata from the manifest

    @property
    def source(self) -> str:
        return self.chunk.get("source", "")

    def location(self) -> str:
        c = self.chunk
        return cite(c.get("source", ""), c.get("start_line", "?"), c.get("end_line", "?"), c.get("page"),
                    c.get("record", ""))
