"""The part of a hit that answers: the window of whole lines that holds most of the question's terms.

Terms are compared as the BM25 index sees them (its tokenizer: lowercase, stemmed, no stopwords), so
"snapshots" in the question finds "snapshot" in a table row. Lines are kept as lines: a Markdown
table stays a table, a code block stays code.
"""

from __future__ import annotations

import re
from collections.abc import Callable

WORD = re.compile(r"\w+")
UNDERLINE = re.compile(r"^\s*([=\-~^*+#'\"._:])\1{2,}\s*$")  # reST's heading over/underlines: not text
HEADING = re.compile(r"^\s*#{1,6}\s")


def best_window(text: str, question: str, tokenize: Callable[[str], list[str]], max_chars: int = 240,
                heading: str = "") -> dict:
    """``{"text", "terms", "start_line", "end_line"}``: the lines (offsets within the chunk) that
    cover the most distinct question terms in at most ``max_chars``; ties go to the window whose
    terms are more specific (longer stems: KESTREL_CACHE_DIR before "variable"), then the earliest.
    A term found only in headings (Markdown's, reST's, or a line that repeats a part of the hit's
    ``heading`` path, shown above the snippet already) counts half: the text under it answers.
    ``terms`` are the words of that window to highlight. A chunk with no match gives its start."""
    wanted = set(tokenize(question))
    raw = text.splitlines()
    lines = ["" if UNDERLINE.match(line) else line for line in raw]
    titles = {t.strip().lower() for t in heading.split(" > ") if t.strip()}
    # a line of text, not a heading (Markdown's '#', reST's: the line an underline follows, or the title)
    prose = [bool(line.strip()) and not HEADING.match(line) and not (n + 1 < len(raw) and UNDERLINE.match(raw[n + 1]))
             and line.strip().lower() not in titles for n, line in enumerate(lines)]
    found = [set(tokenize(line)) & wanted for line in lines]
    best = (-1.0, 0, 0, 0)  # (weighted distinct terms, their letters, first line, last line)
    for i in range(len(lines)):
        if not found[i]:  # a window starts at a line that matches
            continue
        in_text: set[str] = set()
        in_headings: set[str] = set()
        length = 0
        for j in range(i, len(lines)):
            length += len(lines[j]) + 1
            if length > max_chars and j > i:
                break
            (in_text if prose[j] else in_headings).update(found[j])
            score = (len(in_text) + 0.5 * len(in_headings - in_text), sum(map(len, in_text | in_headings)))
            if score > best[:2]:
                best = (*score, i, j)
    _, _, first, last = best if best[0] >= 0 else (0, 0, 0, 0)
    while not any(prose[first:last + 1]) and last + 1 < len(lines):  # a heading alone answers nothing
        last += 1
    window = "\n".join(line.rstrip() for line in lines[first:last + 1] if line.strip())
    if len(window) > max_chars:  # one long line: cut around its first matching word
        window = _around(window, wanted, tokenize, max_chars)
    words = sorted({w for w in WORD.findall(window) if set(tokenize(w)) & wanted})
    return {"text": window, "terms": words, "start_line": first, "end_line": last}


def _around(line: str, wanted: set[str], tokenize, max_chars: int) -> str:
    at = next((m.start() for m in WORD.finditer(line) if set(tokenize(m.group())) & wanted), 0)
    start = max(0, min(at - max_chars // 4, len(line) - max_chars))
    cut = line[start:start + max_chars]
    return ("…" if start else "") + cut + ("…" if start + max_chars < len(line) else "")
