"""Read one file into one or more Documents, by format."""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath

from llmctl.config import CODE_EXTENSIONS
from llmctl.ingest.chunking import markdown_headings
from llmctl.ingest.html import html_to_text
from llmctl.ingest.markup import clean_myst, clean_rst, front_matter
from llmctl.records import Document

TEXT_KINDS = {".md": "markdown", ".markdown": "markdown", ".rst": "rst", ".txt": "text"}
HTML_EXTENSIONS = {".html", ".htm"}
# What each file name ending is read as (the loader of each kind: LOADERS, at the end).
KINDS: dict[str, str] = {**TEXT_KINDS, **dict.fromkeys(HTML_EXTENSIONS, "html"), ".pdf": "pdf",
                         ".jsonl": "jsonl", **dict.fromkeys(CODE_EXTENSIONS, "code")}
# A compressed file is read as the format under its compression suffix: page.md.gz as Markdown,
# changelog.Debian.gz as text; decompressed in a stream, refused past the size cap.
COMPRESSED = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz"}
# A file with no extension (README, AUTHORS, copyright), or named like one with a qualifier
# (README.Debian, changelog.Debian.amd64, README.source), is read as text when its first KB is
# text: PLAIN. Dot files (.env, .gitignore) are not documents and are never read.
PLAIN = "plain"
DOC_NAMES = {"readme", "news", "changes", "changelog", "authors", "copying", "copyright", "install", "history",
             "todo", "thanks", "faq", "contributing", "contributors", "credits", "license", "licence", "notice",
             "acks", "maintainers", "hacking", "bugs", "notes", "release-notes", "releasenotes"}
SNIFF_BYTES = 1024
DEFAULT_MAX_BYTES = 50 * 1024 * 1024  # ingest.max_file_mb's default


class SkipFile(Exception):
    """This file cannot be ingested; the message is the per-file skip reason."""


class EmptyFile(SkipFile):
    """The file holds no text: one that was indexed has been emptied, a change (its chunks go)."""


def uncompressed_name(name: str) -> str:
    """The name under a compression suffix: page.md.gz -> page.md (others unchanged)."""
    suffix = PurePath(name).suffix.lower()
    return name[:-len(suffix)] if suffix in COMPRESSED and len(name) > len(suffix) else name


def type_suffix(name: str) -> str:
    """The suffix that names a file's type, with its compression: '.ps.gz', '.png', '' (none)."""
    inner = PurePath(uncompressed_name(name)).suffix
    return inner + name[len(uncompressed_name(name)):] if inner else PurePath(name).suffix


def kind_of(path: Path) -> str | None:
    """The kind a file is read as, from its name (PLAIN: text if its first KB is; see sniff)."""
    name = uncompressed_name(path.name)
    ext = PurePath(name).suffix.lower()
    if ext in KINDS:
        return KINDS[ext]
    if name.startswith(".") or ext in COMPRESSED:
        return None
    if not ext or name.split(".", 1)[0].lower() in DOC_NAMES or not _names_a_format(PurePath(name).suffix):
        return PLAIN
    return None


def _names_a_format(suffix: str) -> bool:
    """Whether what follows a name's last dot is a file type (.md, .png, .1): letters and digits,
    not a word in capitals (MORE.STUFF, descore.README) and not part of a name
    (v2.13-ReleaseNotes). Those files are offered as PLAIN: read when their first KB is text."""
    body = suffix[1:]
    return bool(re.fullmatch(r"[A-Za-z0-9]+", body)) and not (len(body) > 3 and body.isupper()) \
        and body.lower() not in DOC_NAMES


def looks_like_text(head: bytes) -> bool:
    """Whether the first bytes of a file are text: a byte order mark, or no NUL byte and almost
    no control characters (UTF-8 or a one-byte encoding; decode() then tells which)."""
    if any(head.startswith(bom) for bom, _ in BOMS):
        return True
    if b"\x00" in head:
        return False
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return controls * 100 <= len(head)


def sniff(path: Path) -> bool:
    """For a PLAIN file: whether its first KB (decompressed) is text. Not a regular file (a FIFO
    would block the read), unreadable or a damaged archive: True, for ingest to skip it with its
    own reason ("cannot read: Permission denied"), which --strict stops at, unlike a type it
    does not read."""
    import stat

    codec = COMPRESSED.get(path.suffix.lower())
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return True
        with open(path, "rb") as raw, (_opener(codec)(raw) if codec else raw) as f:
            return looks_like_text(f.read(SNIFF_BYTES))
    except Exception:  # noqa: BLE001 -- permissions, a damaged archive...: the read says which
        return True


def _opener(codec: str) -> Callable:
    import bz2
    import gzip
    import lzma

    return {"gzip": lambda f: gzip.GzipFile(fileobj=f), "bzip2": bz2.BZ2File, "xz": lzma.LZMAFile}[codec]


def decompress(path: Path, data: bytes, max_bytes: int | None = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of a .gz/.bz2/.xz file decompressed (others unchanged), read as a stream and
    refused past ``max_bytes``: a compression bomb stops at the cap, with a reason."""
    codec = COMPRESSED.get(path.suffix.lower())
    if codec is None:
        return data
    import lzma
    import zlib

    try:
        with _opener(codec)(io.BytesIO(data)) as f:
            out = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError) as exc:
        raise SkipFile(f"not a valid {codec} file ({exc or type(exc).__name__})") from None
    if max_bytes is not None and len(out) > max_bytes:
        raise SkipFile(f"decompresses to more than ingest.max_file_mb ({max_bytes / 2**20:g} MB); stopped "
                       "there (a compression bomb?)")
    return out


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_documents(path: Path, source: str, data: bytes, notes: list[str] | None = None, *,
                   max_bytes: int | None = DEFAULT_MAX_BYTES) -> Iterator[Document]:
    """Parse the bytes of one file (a compressed one decompressed, up to ``max_bytes``). Raises
    SkipFile with a reason the user can act on. ``notes`` gets the encoding of a text that was
    not UTF-8 and declared none (see decode)."""
    kind = kind_of(path)
    if kind is None:
        raise SkipFile(f"unsupported file type '{type_suffix(path.name) or path.name}'")
    data = decompress(path, data, max_bytes)
    if kind == "pdf":
        yield from _load_pdf(data, source)
        return
    text, guessed = decode(data, html=kind == "html")
    del data  # the text is all that is needed now: a large file is not held twice
    if guessed and notes is not None:
        notes.append(guessed)
    if kind == "jsonl":
        yield from _load_jsonl(text, source)
        return
    if not text.strip():
        raise EmptyFile("empty file")
    yield from LOADERS[kind](PurePath(uncompressed_name(path.name)), path.name, source, text)


def _load_html(name: PurePath, filename: str, source: str, text: str) -> Iterator[Document]:
    title, body, marks = html_to_text(text)
    if not body.strip():
        raise SkipFile("no main text (only navigation, scripts, styles or markup)")
    yield Document(source, source, body, "html", title=title, line_marks=marks)


def _load_code(name: PurePath, filename: str, source: str, text: str) -> Iterator[Document]:
    yield Document(source, source, text, "code", title=filename, language=CODE_EXTENSIONS[name.suffix.lower()])


def _load_markdown(name: PurePath, filename: str, source: str, text: str) -> Iterator[Document]:
    fields, text = front_matter(text)
    text = clean_myst(text)
    title = _first_heading(text, "markdown") or str(fields.get("title") or "")
    yield Document(source, source, text, "markdown", title=title,
                   fields=tuple((str(k), _scalar(v)) for k, v in fields.items()))


def _load_rst(name: PurePath, filename: str, source: str, text: str) -> Iterator[Document]:
    text = clean_rst(text)
    yield Document(source, source, text, "rst", title=_first_heading(text, "rst"))


def _load_text(name: PurePath, filename: str, source: str, text: str) -> Iterator[Document]:
    yield Document(source, source, text, "text", title="")


def _scalar(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# <meta charset=...>, <meta http-equiv="Content-Type" content="...; charset=...">, <?xml encoding=...?>
DECLARED = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)"""
                      rb"""|<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)""", re.I)
# Labels browsers read as windows-1252 (WHATWG Encoding): a page saying ISO-8859-1 means it.
WINDOWS_1252 = {"iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "iso_8859-1", "us-ascii", "ascii",
                "windows-1252", "cp1252", "x-cp1252", "cp819", "ibm819", "iso-ir-100"}
# A UTF-8 sequence of two to four bytes: many in a text that is not valid UTF-8 make it damaged
# UTF-8, not a text in a one-byte encoding.
UTF8_SEQUENCE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
FALLBACK = "Windows-1252"
# Labels read with the encoding browsers use for them (its superset: WHATWG Encoding).
SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "shift_jis": "cp932", "sjis": "cp932",
             "x-sjis": "cp932", "euc-kr": "cp949", "ks_c_5601-1987": "cp949", "iso-8859-9": "cp1254",
             "latin5": "cp1254", "tis-620": "cp874", "iso-8859-11": "cp874"}
ASCII = bytes(range(128))


def _as_latin1(err: UnicodeDecodeError):
    """The five bytes cp1252 leaves undefined, as WHATWG's windows-1252 reads them (U+0081 ...)."""
    return err.object[err.start:err.end].decode("latin-1"), err.end


codecs.register_error("llmctl-windows-1252", _as_latin1)


def _windows_1252(data: bytes) -> str:
    return data.decode("cp1252", errors="llmctl-windows-1252")


def declared_charset(data: bytes) -> str | None:
    """The charset an HTML page declares in its first 1,024 bytes (as browsers look for it)."""
    m = DECLARED.search(data[:1024])
    return (m.group(1) or m.group(2)).decode("ascii").lower() if m else None


def decode(data: bytes, html: bool = False) -> tuple[str, str | None]:
    """The text of a file, and None, or the encoding it was guessed to be in.

    In order: a byte order mark (UTF-8, UTF-16, UTF-32); valid UTF-8; the charset an HTML page
    declares (ISO-8859-1 read as Windows-1252, as browsers do); then a text with many valid
    UTF-8 sequences is damaged UTF-8 and skipped (its indexed chunks are kept), and any other
    is read as Windows-1252 (every byte is a character in it) and the guess reported.
    """
    for bom, codec in BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError as exc:
                raise SkipFile(f"not valid {codec.upper().removesuffix('-SIG')} text although it starts with "
                               f"its byte order mark (byte {exc.start})") from None
            if "\x00" in text[:8192]:  # two bytes that look like a mark, then binary data read as characters
                raise SkipFile(f"binary file (NUL characters once read as {codec.upper().removesuffix('-SIG')}, "
                               "the byte order mark it starts with)")
            return text, None
    if b"\x00" in data[:8192]:
        raise SkipFile("binary file (contains NUL bytes)")
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        error = exc
    charset = declared_charset(data) if html else None
    if charset in WINDOWS_1252:
        return _windows_1252(data), None
    if charset:
        try:
            codec = codecs.lookup(SUPERSETS.get(charset, charset)).name
            if codec not in ("utf-8", "utf-16", "utf-32", "utf-7"):  # not what a page can declare in ASCII
                return data.decode(codec), None
        except (LookupError, UnicodeDecodeError):
            pass  # an unknown or wrong label: as if none were declared
    stray = len(UTF8_SEQUENCE.sub(b"", data).translate(None, ASCII))  # non-ASCII bytes in no sequence
    if len(data.translate(None, ASCII)) - stray > stray:
        raise SkipFile(f"not valid UTF-8 text (byte {error.start}); convert it to UTF-8") from None
    return _windows_1252(data), FALLBACK


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
        raise EmptyFile("empty file (no JSONL records)")


def _load_pdf(data: bytes, source: str) -> Iterator[Document]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    # pypdf logs what it repairs or gives up on ("EOF marker not found"): with no handler, Python
    # printed those lines bare among llmctl's own; the skip reason below names the problem.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
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


# kind -> loader of its decoded text (pdf and jsonl are read from bytes, in load_documents).
LOADERS: dict[str, Callable[[PurePath, str, str, str], Iterator[Document]]] = {
    "html": _load_html, "code": _load_code, "markdown": _load_markdown, "rst": _load_rst, "text": _load_text,
    PLAIN: _load_text,
}
