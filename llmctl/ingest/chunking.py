"""Split documents into token-bounded chunks at heading, paragraph and sentence boundaries.

Sizes are measured in the embedding model's own tokens, so no chunk is ever longer
than what the model embeds (the rest would be silently truncated).
"""

from __future__ import annotations

import bisect
import hashlib
import re
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from llmctl.config import ChunkingConfig
from llmctl.records import Chunk, Document

PROSE_SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ": ", ", ", " ", ""]
CODE_LANGUAGES = {"python": "python", "js": "js", "ts": "ts", "go": "go", "rust": "rust",
                  "java": "java", "kotlin": "kotlin", "scala": "scala", "c": "c", "cpp": "cpp",
                  "csharp": "csharp", "ruby": "ruby", "php": "php", "swift": "swift", "lua": "lua", "r": "r",
                  "haskell": "haskell", "elixir": "elixir", "powershell": "powershell", "proto": "proto"}
# (perl: langchain has no separators for it; its files are split as prose)
MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+])\1{2,}[ \t]*$")
FENCE = re.compile(r"^[ \t]*(```|~~~)")
# a Debian changelog entry's first line: "util-linux (2.38.1-5) bookworm; urgency=medium"
DEBIAN_ENTRY = re.compile(r"^([a-z0-9][a-z0-9.+-]* \([^()\s]+\)) [^;\n]+; urgency=\S+", re.M)


# A text is tokenized for its token offsets in pieces of about this many characters, cut after
# whitespace: WordPiece never joins words across whitespace, so the offsets are the whole text's,
# while the tokenizer's own memory (~250 bytes a token: 1.3 GB for a 5 MB text at once) stays
# that of one piece. The offsets are kept in arrays (9 bytes a token, not ~100 in lists).
SPAN_WINDOW = 1 << 16
SPAN_BATCH = 16  # pieces per tokenizer call (it tokenizes a batch on every core)
WHITESPACE = (" ", "\n", "\t", "\r")
ASCII_PUNCTUATION = re.compile(r"[!-/:-@\[-`{-~]")


# What a file yields (loaders and chunker). An index read with another version (or min_tokens)
# re-reads every file on its next ingest and keeps the vectors of the chunks that come out the same.
READER_VERSION = 5  # 3: MyST directives, HTML titles (generic or numbered <h1> -> <title>), declared charsets;
# 4: a small section joined to a sibling keeps the sibling's heading, not only their common parent;
# HTML chunks cite the page's own lines; plain text has headings (underlined titles, Debian changelog entries);
# 5: an overlined title's section starts at its overline (the rule was a chunk of its own)


def reader_identity(cfg: ChunkingConfig) -> dict:
    return {"version": READER_VERSION, "min_tokens": cfg.min_tokens}


@dataclass(frozen=True)
class Section:
    start: int
    end: int
    path: tuple[str, ...]


def _text_headings(text: str) -> list[tuple[int, int, str]]:
    """README, NEWS, changelogs: underlined titles, or Debian changelog entries."""
    return _rst_headings(text, min_ratio=0.5) or [(m.start(), 1, m.group(1)) for m in DEBIAN_ENTRY.finditer(text)]


def split_sections(doc: Document) -> list[Section]:
    """Sections of a document between headings (HEADINGS of its kind), each with its heading path."""
    find = HEADINGS.get(doc.kind)
    marks = find(doc.text) if find else []
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    first = marks[0][0] if marks else len(doc.text)
    if doc.text[:first].strip():
        sections.append(Section(0, first, ()))
    for i, (start, level, title) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else len(doc.text)
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        sections.append(Section(start, end, tuple(t for _, t in stack)))
    return sections


def markdown_headings(text: str) -> list[tuple[int, int, str]]:
    """(offset, level, title) of each ATX heading outside code fences."""
    marks, offset, in_fence = [], 0, False
    for line in text.splitlines(keepends=True):
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (m := MD_HEADING.match(line.rstrip("\n"))):
            marks.append((offset, len(m.group(1)), m.group(2).strip()))
        offset += len(line)
    return marks


def _rst_headings(text: str, min_ratio: float = 1.0) -> list[tuple[int, int, str]]:
    """RST titles: a line underlined (optionally overlined) by punctuation; level by first use.
    ``min_ratio``: how long the underline must be, as a share of the title's length (reST: all
    of it; plain text such as GNU NEWS files underlines by eye, so half)."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    levels: dict[str, int] = {}
    marks = []
    last_title = -2  # the line of the last title found: its underline is no overline of the next
    for i in range(len(lines) - 1):
        title, under = lines[i].rstrip("\n"), lines[i + 1].rstrip("\n")
        m = RST_UNDERLINE.match(under)
        is_title = title.strip() and not RST_UNDERLINE.match(title)
        if m and is_title and len(under.strip()) >= min_ratio * len(title.strip()):
            level = levels.setdefault(m.group(1), len(levels) + 1)
            # an overline (the same rule above the title, not the underline of the title before it)
            # opens this section: left to the section before, it became a chunk of its own
            over = (i > 0 and RST_UNDERLINE.match(lines[i - 1].rstrip("\n")) is not None
                    and lines[i - 1].strip()[:1] == m.group(1) and last_title != i - 2)
            marks.append((starts[i - 1] if over else starts[i], level, title.strip()))
            last_title = i
    return marks


# kind -> its heading finder: text -> [(offset, level, title)]. A kind with none is one section.
HEADINGS: dict[str, Callable[[str], list[tuple[int, int, str]]]] = {
    "markdown": markdown_headings, "html": markdown_headings, "rst": _rst_headings, "text": _text_headings}


class Chunker:
    """Turns a Document into Chunks no longer than ``max_tokens`` model tokens."""

    def __init__(self, cfg: ChunkingConfig, count_tokens: Callable[[str], int], max_tokens: int,
                 token_spans: Callable[[list[str]], list[tuple[list[int], list[int], list]]] | None = None):
        """``token_spans(texts)``: each text's token start and end offsets and word numbers, for a
        tokenizer whose count of a text cut between two words is the sum of the parts' (BERT's
        WordPiece). Each document is then tokenized once (``chunk_many``: in batches, on every
        core) and its pieces counted from the offsets: the same chunks, a third of the work."""
        if cfg.overlap_tokens >= max_tokens // 2:
            from llmctl.errors import ConfigError

            raise ConfigError(
                f"chunking.overlap_tokens ({cfg.overlap_tokens}) must be less than half of the "
                f"chunk size ({max_tokens} tokens): lower it"
            )
        self.cfg = cfg
        self.count = count_tokens
        self.max_tokens = max_tokens
        self.token_spans = token_spans

    def _splitter(self, budget: int, language: str, count: Callable[[str], int]):
        from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

        if language in CODE_LANGUAGES:
            separators = RecursiveCharacterTextSplitter.get_separators_for_language(
                Language(CODE_LANGUAGES[language])
            )
            keep: bool | str = "start"
        else:
            separators, keep = PROSE_SEPARATORS, "end"
        return RecursiveCharacterTextSplitter(
            chunk_size=budget,
            chunk_overlap=min(self.cfg.overlap_tokens, budget // 4),
            length_function=count,
            separators=separators,
            keep_separator=keep,
            strip_whitespace=True,
        )

    def header(self, doc: Document, path: tuple[str, ...]) -> str:
        """Context line embedded with each chunk: document title and heading path."""
        if not self.cfg.context_header:
            return ""
        parts = [doc.title] if doc.title else [doc.source.rsplit("/", 1)[-1]]
        parts += [p for p in path if p != doc.title]
        return " > ".join(parts)

    def merge_small(self, doc: Document, sections: list[Section], count: Callable[[str], int]) -> list[Section]:
        """Sections under ``min_tokens`` (a heading with a line under it, a one-line intro, a stub)
        joined to the next section, or the last one to the previous: alone they would be chunks
        that BM25's length normalisation and their heading's words rank above the real text.
        The joined section keeps its neighbour's heading path: the chunks cut from it are the
        neighbour's text (their common parent would take "Examples" from every chunk of a long
        Examples section that a one-line "Options" came before); the stub's heading stays in the text."""
        out: list[Section] = []
        pending: Section | None = None
        for sec in sections:
            if pending is not None:
                sec = Section(pending.start, sec.end, sec.path)
                pending = None
            if count(doc.text[sec.start:sec.end]) < self.cfg.min_tokens:
                pending = sec
            else:
                out.append(sec)
        if pending is not None:
            if out:
                last = out.pop()
                pending = Section(last.start, pending.end, last.path)
            out.append(pending)
        return out

    def chunk_many(self, docs: list[Document], batch: int = 64) -> list[list[Chunk]]:
        out: list[list[Chunk]] = []
        for start in range(0, len(docs), batch):
            part = docs[start:start + batch]
            spans = self.spans([d.text for d in part]) if self.token_spans else [None] * len(part)
            out += [self.chunk(d, s) for d, s in zip(part, spans, strict=True)]
        return out

    def spans(self, texts: list[str]) -> list[tuple[array, array, bytearray]]:
        """Each text's token starts, ends and whether each token continues the word of the one
        before, from ``token_spans`` called on pieces of at most about SPAN_WINDOW characters."""
        found = [_Spans(len(t)) for t in texts]
        batch: list[tuple[int, int, int]] = []  # (text number, start, end) of pieces to tokenize

        def flush() -> None:
            for (n, start, _), spans in zip(batch, self.token_spans([texts[n][a:b] for n, a, b in batch]),
                                            strict=True):
                found[n].add(start, *spans)
            batch.clear()

        for n, text in enumerate(texts):
            for start, end in _pieces_of(text, SPAN_WINDOW):
                batch.append((n, start, end))
                if len(batch) >= SPAN_BATCH:
                    flush()
        if batch:
            flush()
        return [f.arrays() for f in found]

    def chunk(self, doc: Document, spans: tuple | None = None) -> list[Chunk]:
        lines_at = _LineCounter(doc.text)
        page_offsets = [o for o, _ in doc.pages]
        chunks: list[Chunk] = []
        seen: dict[bytes, int] = {}  # embed text's digest -> times seen: the same text again gets a new id
        count = self.count
        if self.token_spans:
            count = SpanCounter(doc.text, *(spans or self.spans([doc.text])[0]), self.count)
        for section in self.merge_small(doc, split_sections(doc), count):
            header = self.header(doc, section.path)
            header_tokens = self.count(header) if header else 0
            budget = self.max_tokens - (header_tokens + 1 if header else 0)
            if budget < 16:  # an absurdly long heading path: drop it rather than the text
                header, header_tokens, budget = "", 0, self.max_tokens
            body = doc.text[section.start:section.end]
            for start, piece, tokens in self._pieces(body, budget, doc.language, count):
                abs_start = section.start + start
                abs_end = abs_start + len(piece)
                embed_text = f"{header}\n{piece}" if header else piece
                key = hashlib.sha256(embed_text.encode()).digest()
                n = seen.get(key, 0)
                seen[key] = n + 1
                digest = hashlib.sha256(f"{doc.doc_id}\0{embed_text}\0{n}".encode()).hexdigest()[:24]
                page = None
                if page_offsets:
                    page = doc.pages[bisect.bisect_right(page_offsets, abs_start) - 1][1]
                if doc.line:  # a JSONL record: all of it is on its line of the file
                    lines = (doc.line, doc.line)
                elif doc.line_marks:  # text extracted from the file (HTML): the file's own lines
                    lines = _file_lines(doc, piece, abs_start, abs_end)
                else:
                    lines = (lines_at(abs_start), lines_at(max(abs_start, abs_end - 1)))
                chunks.append(Chunk(
                    id=digest, doc_id=doc.doc_id, source=doc.source, ordinal=len(chunks),
                    text=piece, embed_text=embed_text, heading=" > ".join(section.path) or doc.title,
                    start_char=abs_start, end_char=abs_end, start_line=lines[0], end_line=lines[1],
                    page=page, kind=doc.kind, record=doc.record,
                    tokens=header_tokens + tokens if self.token_spans else self.count(embed_text),
                    fields=doc.fields,
                ))
        return chunks

    def _pieces(self, body: str, budget: int, language: str, count: Callable[[str], int]
                ) -> list[tuple[int, str, int]]:
        """(offset in body, text, tokens) of each piece; re-split any piece that tokenizes over budget."""
        out: list[tuple[int, str, int]] = []
        cursor = 0
        for piece in self._splitter(budget, language, count).split_text(body):
            n = count(piece)
            if n > budget:  # token counts are not additive: merge can overshoot
                sub = self._pieces(piece, max(16, int(budget * 0.8)), language, count)
                base = body.find(piece, cursor)
                out += [(base + off, text, k) for off, text, k in sub]
                cursor = base + 1
                continue
            pos = body.find(piece, cursor)
            if pos < 0:
                pos = body.find(piece)
            out.append((pos, piece, n))
            cursor = pos + 1
        return out


def _pieces_of(text: str, window: int):
    """(start, end) of consecutive pieces of ``text`` of at most ``window`` characters, each cut
    just after whitespace, else after ASCII punctuation (a word of its own in WordPiece), else
    anywhere: in a run that long without either, one word of over 100 characters, which WordPiece
    reads as one [UNK] whole and as two cut (a count one too high: a chunk a token shorter)."""
    start, n = 0, len(text)
    while n - start > window:
        lo, hi = start + window // 2, start + window
        end = max(text.rfind(ws, lo, hi) for ws in WHITESPACE)
        if end < 0:
            end = max((m.start() for m in ASCII_PUNCTUATION.finditer(text, lo, hi)), default=hi - 1)
        yield start, end + 1
        start = end + 1
    if start < n:
        yield start, n


class _Spans:
    """A text's token offsets, a piece at a time, in arrays of 4-byte integers (Python lists cost
    ~36 bytes an offset; numpy arrays are slow to search one value at a time)."""

    def __init__(self, chars: int):
        code = "i" if chars < 2**31 else "q"
        self.starts, self.ends = array(code), array(code)
        self.joined = bytearray()  # 1 where the token continues the word of the one before

    def add(self, offset: int, starts: list[int], ends: list[int], words: list) -> None:
        self.starts.extend([a + offset for a in starts])
        self.ends.extend([b + offset for b in ends])
        if words:  # a piece starts after whitespace or punctuation: its first token starts a word
            self.joined += bytes([0, *(v == w for v, w in zip(words, words[1:], strict=False))])

    def arrays(self) -> tuple[array, array, bytearray]:
        return self.starts, self.ends, self.joined


def _file_lines(doc: Document, piece: str, start: int, end: int) -> tuple[int, int]:
    """The file lines a piece of extracted text comes from: the line of the first mark at its
    first visible character (else the mark before it), to the line of the last mark in it."""
    offsets = [at for at, _ in doc.line_marks]
    first = start + len(piece) - len(piece.lstrip(" \t\n#-|>`*"))  # past markup the extraction added
    i = bisect.bisect_right(offsets, first) - 1
    j = bisect.bisect_right(offsets, max(first, end - 1)) - 1
    first_line = doc.line_marks[max(i, 0)][1]
    return first_line, max(first_line, doc.line_marks[max(j, 0)][1])


class _LineCounter:
    """The line number (from 1) of offsets in a text, asked in about increasing order: counted
    from the last answer, not from a list of every line's start."""

    def __init__(self, text: str):
        self.text, self.offset, self.line = text, 0, 1

    def __call__(self, offset: int) -> int:
        if offset >= self.offset:
            self.line += self.text.count("\n", self.offset, offset)
        else:
            self.line -= self.text.count("\n", offset, self.offset)
        self.offset = offset
        return self.line


class SpanCounter:
    """Counts the tokens of substrings of one text from that text's token offsets: a substring
    found at cuts no token spans is counted by bisection; any other string by ``fallback``."""

    def __init__(self, text: str, starts, ends, joined, fallback: Callable[[str], int]):
        self.text, self.starts, self.ends, self.joined, self.fallback = text, starts, ends, joined, fallback
        self.hint = 0

    def _clean(self, cut: int) -> bool:
        """No token spans the cut, and it does not fall between two pieces of one word."""
        i = bisect.bisect_right(self.ends, cut)  # the first token ending after the cut
        if i == len(self.starts):
            return True
        return self.starts[i] >= cut and not self.joined[i]

    def __call__(self, s: str) -> int:
        # Near the last string first: the splitter asks about what follows, and again about
        # earlier pieces (for the overlap). A search through the whole text each time would make
        # a large text quadratic. (Any occurrence gives the same count: see _clean.)
        near = self.hint + len(s) + SPAN_WINDOW
        pos = self.text.find(s, self.hint, near)
        if pos < 0:
            pos = self.text.rfind(s, max(0, self.hint - SPAN_WINDOW), self.hint + len(s))
        if pos < 0:
            pos = self.text.find(s, near - len(s))
        if pos < 0:
            pos = self.text.find(s)
        if pos < 0 or not s or not (self._clean(pos) and self._clean(pos + len(s))):
            return self.fallback(s)
        self.hint = pos
        return bisect.bisect_left(self.starts, pos + len(s)) - bisect.bisect_left(self.starts, pos)
