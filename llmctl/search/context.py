"""Pack ranked hits into the token budget of the prompt (pure)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from llmctl.records import Hit, cite


@dataclass
class Source:
    """One numbered source block of the prompt: one chunk, or adjacent chunks of one document merged."""

    n: int
    doc_id: str
    source: str
    heading: str
    start_line: int
    end_line: int
    page: int | None
    ordinals: tuple[int, int]
    start_char: int
    end_char: int
    text: str
    hit_ids: list[str] = field(default_factory=list)
    tokens: int = 0
    record: str = ""

    def to_cache(self) -> dict:
        """What a cached answer keeps of the source it cites (shown again on a cache hit)."""
        return {"n": self.n, "location": self.location(), "source": self.source, "heading": self.heading,
                "start_line": self.start_line, "end_line": self.end_line, "page": self.page}

    @classmethod
    def from_cache(cls, d: dict) -> Source:
        return cls(d["n"], "", d.get("source", d["location"]), d.get("heading", ""), d.get("start_line", 0),
                   d.get("end_line", 0), d.get("page"), (0, 0), 0, 0, "", cached_location=d["location"])

    cached_location: str | None = None

    def location(self) -> str:
        return self.cached_location or cite(self.source, self.start_line, self.end_line, self.page, self.record)


@dataclass
class Packed:
    sources: list[Source]
    dropped: list[dict]  # {"id", "source", "reason"}
    tokens: int
    budget: int


def _merge_text(a: Source, start: int, end: int, text: str) -> str:
    """Text of a's span joined with another span of the same document."""
    if start >= a.start_char:
        if start <= a.end_char:
            return a.text + text[a.end_char - start:] if end > a.end_char else a.text
        return a.text + "\n" + text
    if end >= a.start_char:
        return text + a.text[end - a.start_char:] if a.end_char > end else text
    return text + "\n" + a.text


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def pack(hits: list[Hit], budget: int, count: Callable[[str], int]) -> Packed:
    """Keep rank order; merge neighbouring chunks of one document; drop duplicates and overflow."""
    sources: list[Source] = []
    dropped: list[dict] = []
    used = 0
    for hit in hits:
        c = hit.chunk
        ordinal = int(c.get("ordinal", 0))
        start, end, text = int(c.get("start_char", 0)), int(c.get("end_char", 0)), c.get("text", "")
        near = next((s for s in sources if s.doc_id == c.get("doc_id")
                     and s.ordinals[0] - 1 <= ordinal <= s.ordinals[1] + 1), None)
        if near is not None:
            merged = _merge_text(near, start, end, text)
            if merged == near.text:
                dropped.append({"id": hit.id, "source": hit.source, "reason": f"contained in [{near.n}]"})
                continue
            extra = count(merged) - near.tokens
            if used + extra > budget:
                dropped.append({"id": hit.id, "source": hit.source, "reason": "over the token budget"})
                continue
            near.text, near.tokens = merged, near.tokens + extra
            near.start_char, near.end_char = min(near.start_char, start), max(near.end_char, end)
            near.ordinals = (min(near.ordinals[0], ordinal), max(near.ordinals[1], ordinal))
            near.start_line = min(near.start_line, int(c.get("start_line", near.start_line)))
            near.end_line = max(near.end_line, int(c.get("end_line", near.end_line)))
            near.hit_ids.append(hit.id)
            used += extra
            continue
        twin = next((s for s in sources if _norm(s.text) == _norm(text)), None)
        if twin is not None:
            dropped.append({"id": hit.id, "source": hit.source, "reason": f"duplicate of [{twin.n}]"})
            continue
        tokens = count(text)
        if used + tokens > budget:
            dropped.append({"id": hit.id, "source": hit.source, "reason": "over the token budget"})
            continue
        sources.append(Source(
            n=len(sources) + 1, doc_id=c.get("doc_id", ""), source=hit.source,
            heading=c.get("heading", ""), start_line=int(c.get("start_line", 1)),
            end_line=int(c.get("end_line", 1)), page=c.get("page"), ordinals=(ordinal, ordinal),
            start_char=start, end_char=end, text=text, hit_ids=[hit.id], tokens=tokens,
            record=c.get("record", ""),
        ))
        used += tokens
    return Packed(sources, dropped, used, budget)
