"""Read one file into one or more Documents, by format."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

from llmctl.config import CODE_EXTENSIONS
from llmctl.ingest.chunking import markdown_headings
from llmctl.ingest.html import html_to_text
from llmctl.ingest.markup import clean_rst, front_matter
from llmctl.records import Document

TEXT_KINDS = {".md": "markdown", ".markdown": "markdown", ".rst": "rst", ".txt": "text"}
HTML_EXTENSIONS = {".html", ".htm"}


class SkipFile(Exception):
    """This file cannot be ingested; the message is the per-file skip reason."""


def kind_of(path: Path) -> str | None:
    ext = path.suffix.lower()
    if ext in TEXT_KINDS:
        return TEXT_KINDS[ext]
    if ext in HTML_EXTENSIONS:
        return "html"
    if ext == ".pdf":
        return "pdf"
    if ext == ".jsonl":
        return "jsonl"
    if ext in CODE_EXTENSIONS:
        return "code"
    return None


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_documents(path: Path, source: str, data: bytes) -> Iterator[Document]:
    """Parse the bytes of one file. Raises SkipFile with a reason the user can act on."""
    kind = kind_of(path)
    if kind is None:
        raise SkipFile(f"unsupported file type '{path.suffix or path.name}'")
    if kind == "pdf":
        yield from _load_pdf(data, source)
        return
    if b"\x00" in data[:8192]:
        raise SkipFile("binary file (contains NUL bytes)")
    text = _decode(data)
    if kind == "jsonl":
        yield from _load_jsonl(text, source)
        return
    if not text.strip():
        raise SkipFile("empty file")
    if kind == "html":
        title, body = html_to_text(text)
        if not body.strip():
            raise SkipFile("no main text (only navigation, scripts, styles or markup)")
        yield Document(source, source, body, "html", title=title)
    elif kind == "code":
        yield Document(source, source, text, "code", title=path.name,
                       language=CODE_EXTENSIONS[path.suffix.lower()])
    elif kind == "markdown":
        fields, text = front_matter(text)
        title = _first_heading(text, kind) or str(fields.get("title") or "")
        yield Document(source, source, text, kind, title=title,
                       fields=tuple((str(k), _scalar(v)) for k, v in fields.items()))
    else:
        if kind == "rst":
            text = clean_rst(text)
        yield Document(source, source, text, kind, title=_first_heading(text, kind))


def _scalar(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SkipFile(f"not valid UTF-8 text (byte {exc.start}); convert it to UTF-8") from None


def _first_heading(text: str, kind: str) -> str:
    """The document's title: its H1 in Markdown (a lower heading is a section, not the title; the
    file name stands in), its first section title in reST (the top level by definition)."""
    if kind == "markdown":
        h1 = next((title for _, level, title in markdown_headings(text) if level == 1), "")
        setext = re.search(r"^(\S.*)\n=+[ \t]*$", text, re.M)
        return h1 or (setext.group(1).strip() if setext else "")
    if kind == "rst":
        m = re.search(r"^(\S.*)\n([=\-~^\"'`#*+]{3,})\s*$", text, re.M)
        return m.group(1).strip() if m else ""
    return ""


def _load_jsonl(text: str, source: str) -> Iterator[Document]:
    """One document per line: BEIR's {"_id","title","text"} or {"id","title","text"}."""
    any_doc = False
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SkipFile(f"line {lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise SkipFile(f"line {lineno}: expected a JSON object")
        doc_id = rec.get("_id", rec.get("id"))
        body = rec.get("text", rec.get("contents"))
        if doc_id is None or not isinstance(body, str):
            raise SkipFile(f"line {lineno}: needs an '_id' (or 'id') and a 'text' field")
        title = rec.get("title") or ""
        if not body.strip() and not str(title).strip():
            continue
        any_doc = True
        yield Document(f"{source}#{doc_id}", source, body, "jsonl", title=str(title), line=lineno,
                       record=str(doc_id))
    if not any_doc:
        raise SkipFile("empty file (no JSONL records)")


def _load_pdf(data: bytes, source: str) -> Iterator[Document]:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise SkipFile("encrypted PDF: decrypt it first (e.g. qpdf --decrypt)")
        parts: list[str] = []
        pages: list[tuple[int, int]] = []
        offset = 0
        for number, page in enumerate(reader.pages, start=1):
            page_text = (page.extract_text() or "").strip()
            pages.append((offset, number))
            parts.append(page_text)
            offset += len(page_text) + 2
        title = (reader.metadata.title if reader.metadata else None) or ""
    except SkipFile:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise SkipFile(f"unreadable PDF ({type(exc).__name__}: {exc})") from None
    text = "\n\n".join(parts)
    if not text.strip():
        raise SkipFile("PDF has no extractable text (scanned? run OCR first)")
    yield Document(source, source, text, "pdf", title=str(title), pages=tuple(pages))
