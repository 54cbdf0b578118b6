"""The main text of an HTML page: navigation, headers, footers, sidebars and link lists dropped.

Documentation pages wrap a little text in a lot of chrome (Sphinx sidebars and "related" bars,
texinfo's Next/Previous/Up panels, MkDocs menus). Left in, that chrome becomes chunks that match
every question about the site. Rules, in order:

1. Never text: scripts, styles, forms, ``nav``/``header``/``footer``/``aside``, elements with a
   navigation ARIA role or a navigation class or id (sidebar, breadcrumbs, related, menu...:
   SKIP_NAMES), Sphinx's "¶" heading anchors.
2. If the page marks its main content (``<main>``, ``role="main"``, ``<article>``), only that.
3. Blocks that are mostly links (>= 3 links, >= 60 % of the block's text) and "Next: / Previous:
   / Up:" bars are dropped.

Standard library only: readability-style extractors (trafilatura, readability-lxml) are built
and tuned for news articles, pull in lxml and several other packages, and on reference pages
tend to drop the code blocks and definition lists that documentation is made of.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "head", "nav", "header", "footer", "aside",
             "form", "button", "select", "iframe", "object"}
SKIP_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar"}
# class or id names of page chrome in common generators (Sphinx, MkDocs, Read the Docs, texinfo,
# pydata, Docusaurus); whole names only: "toc-backref" is a heading's own link, not a toc
SKIP_NAMES = {"nav", "navbar", "navigation", "nav-panel", "mobile-nav", "nav-content", "sidebar", "sphinxsidebar",
              "sphinxsidebarwrapper", "breadcrumb", "breadcrumbs", "related", "footer", "site-header",
              "site-footer", "menu", "skip-link", "headerlink", "toc", "mini-toc", "pagination", "prev-next",
              "edit-this-page", "md-header", "md-sidebar", "md-footer", "wy-nav-side", "rst-footer-buttons",
              "bd-header", "bd-sidebar", "bd-footer", "bd-sidebar-primary", "bd-sidebar-secondary",
              "theme-doc-sidebar-container", "pagination-nav", "table-of-contents"}
MAIN = re.compile(r"<main\b|role\s*=\s*[\"']?main\b|<article\b", re.I)
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
BLOCK = {"p", "div", "section", "article", "main", "li", "ul", "ol", "dl", "dd", "dt", "table", "tr",
         "blockquote", "pre", "figure", "figcaption", "details", "summary", "body", "center"}
CLOSES_SELF = {"p", "li", "dt", "dd", "tr"}  # HTML lets these end where the next one starts
NAV_BAR = re.compile(r"\b(?:next|previous|prev|up|contents|index|top)\b\s*:", re.I)


class _Block:
    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.parts: list[str] = []
        self.chars = 0  # visible characters
        self.link_chars = 0
        self.links = 0


class _MainText(HTMLParser):
    def __init__(self, main_only: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.main_only = main_only
        self.stack = [_Block("#root")]
        self.skip: list[str] = []  # tags of the skipped subtree being read (nesting-aware)
        self.main: list = []  # [tag, nesting] while inside the main content
        self.link = 0
        self.pre = 0
        self.title = ""
        self.h1 = ""
        self._in = ""  # "title" or "h1" while reading one

    # -- structure -------------------------------------------------------------------------
    def _skipped(self, tag: str, attrs: dict) -> bool:
        if tag in SKIP_TAGS or attrs.get("role", "").lower() in SKIP_ROLES:
            return True
        if attrs.get("aria-hidden") == "true" or "hidden" in attrs:
            return True
        names = (attrs.get("class") or "").lower().split() + [(attrs.get("id") or "").lower()]
        return any(n in SKIP_NAMES for n in names)

    def handle_starttag(self, tag: str, attrs_list: list) -> None:
        attrs = {k: (v or "") for k, v in attrs_list}
        if tag == "title":
            self._in = "title"
            return
        if self.skip:
            if tag == self.skip[0] and tag not in VOID:
                self.skip.append(tag)
            return
        if tag not in VOID and self._skipped(tag, attrs):
            self.skip.append(tag)
            return
        if self.main and tag == self.main[0] and tag not in VOID:
            self.main[1] += 1  # the same tag nested inside: counted to find main's end
        elif self.main_only and not self.main and (tag in ("main", "article")
                                                   or attrs.get("role", "").lower() == "main"):
            self.main = [tag, 1]
        if self.main_only and not self.main:
            return
        if tag in CLOSES_SELF and self.stack[-1].tag == tag:
            self._close_block()
        if tag in BLOCK:
            self.stack.append(_Block(tag))
            if tag == "pre":
                self.pre += 1
            elif tag == "li":
                self._emit("- ")
        elif re.fullmatch(r"h[1-6]", tag):
            self._emit("\n\n" + "#" * int(tag[1]) + " ")
            if tag == "h1" and not self.h1:
                self._in = "h1"
        elif tag in ("td", "th"):
            self._emit(" | ")
        elif tag in ("br", "hr"):
            self._emit("\n")
        elif tag == "a" and attrs.get("href"):
            self.link += 1
            self.stack[-1].links += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in = ""
            return
        if self.skip:
            if tag == self.skip[0]:
                self.skip.pop()
            return
        if self.main and tag == self.main[0]:
            self.main[1] -= 1
            if not self.main[1]:
                self.main = []
        if tag in BLOCK:
            if any(b.tag == tag for b in self.stack[1:]):
                while self.stack[-1].tag != tag:
                    self._close_block()
                self._close_block()
        elif re.fullmatch(r"h[1-6]", tag):
            self._emit("\n\n")
            if self._in == "h1":
                self._in = ""
        elif tag == "a" and self.link:
            self.link -= 1

    def handle_data(self, data: str) -> None:
        if self._in == "title":
            self.title += data
            return
        if self.skip or (self.main_only and not self.main):
            return
        if self._in == "h1":
            self.h1 += data
        text = data if self.pre else re.sub(r"\s+", " ", data)
        self._emit(self._marked(data, text))
        visible = len(text.strip())
        self.stack[-1].chars += visible
        if self.link:
            self.stack[-1].link_chars += visible

    def _marked(self, data: str, text: str) -> str:
        """``text`` (``data`` as it is emitted) with the file's line number marked before the
        first word of each of its lines in the file (see ``_unmark``)."""
        line = self.getpos()[0]
        if self.pre:
            out = []
            for i, part in enumerate(text.split("\n")):
                lead = len(part) - len(part.lstrip())
                out.append(f"{part[:lead]}\x01{line + i}\x02{part[lead:]}" if part.strip() else part)
            return "\n".join(out)
        out: list[str] = []
        marked = 0
        for part in re.split(r"(\s+)", data):  # whitespace collapsed as in ``text``, a mark where a line starts
            if part.isspace():
                out.append(" ")
                line += part.count("\n")
            elif part:
                if line != marked:
                    out.append(f"\x01{line}\x02")
                    marked = line
                out.append(part)
        return "".join(out)

    def _emit(self, text: str) -> None:
        self.stack[-1].parts.append(text)

    def _close_block(self) -> None:
        b = self.stack.pop()
        if b.tag == "pre":
            self.pre = max(0, self.pre - 1)
        parent = self.stack[-1]
        text = "".join(b.parts)
        if _is_navigation(b, text):
            return
        parent.chars += b.chars
        parent.link_chars += b.link_chars
        parent.links += b.links
        if b.tag == "pre" and not self.pre:  # fenced: its '#' lines are code, not headings
            parent.parts.append(f"\n\n```\n{text.strip(chr(10))}\n```\n\n")
        elif b.tag in CLOSES_SELF and b.tag != "p":  # rows and items: one line each
            parent.parts.append(f"\n{text}")
        else:
            sep = "\n\n" if b.tag in ("p", "pre", "table", "ul", "ol", "dl", "blockquote") else "\n"
            parent.parts.append(f"{sep}{text}{sep}")

    def text(self) -> str:
        while len(self.stack) > 1:
            self._close_block()
        return "".join(self.stack[0].parts)


def _is_navigation(b: _Block, text: str) -> bool:
    if b.tag == "pre" or not b.chars:
        return False
    if b.links >= 3 and b.link_chars >= 0.6 * b.chars:
        return True
    return b.links >= 2 and len(NAV_BAR.findall(text)) >= 2 and b.chars < 300


def _tidy(text: str) -> str:
    text = re.sub("\x01\\d+\x02(?=[ \t]*(?:\n|$))", "", text.replace("¶", ""))  # a line mark whose word went
    parts = re.split(r"(\n```\n.*?\n```\n)", text, flags=re.S)
    for i in range(0, len(parts), 2):  # outside code blocks, whose spacing is kept as it is
        t = re.sub(r"[ \t]+\n", "\n", parts[i])
        t = re.sub(r"\n[ \t]+", "\n", t)
        t = re.sub(r"^(#{1,6}) +", r"\1 ", t, flags=re.M)
        parts[i] = re.sub(r"\n{3,}", "\n\n", t)
    return "".join(parts).strip()


MARK = re.compile("\x01(\\d+)\x02")


def _unmark(text: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """``text`` without its line marks, and (offset in that text, line of the file) for each."""
    out: list[str] = []
    marks: list[tuple[int, int]] = []
    at = 0
    for i, part in enumerate(MARK.split(text)):
        if i % 2:
            marks.append((at, int(part)))
        else:
            out.append(part)
            at += len(part)
    return "".join(out), tuple(marks)


def html_to_text(html: str) -> tuple[str, str, tuple[tuple[int, int], ...]]:
    """(title, main text, line marks) of an HTML page; headings rendered as Markdown '#' lines.

    The title is the page's first ``<h1>``, or its ``<title>`` when that h1 is a generic or
    numbered section heading (see ``page_title``). The marks are (offset in the text, line of the
    page) where each piece of the page's text starts: citations give the page's own lines."""
    parser = None
    html = html.replace("\x01", "").replace("\x02", "")  # the marks' own characters
    for main_only in ((True, False) if MAIN.search(html) else (False,)):
        parser = _MainText(main_only)
        parser.feed(html)
        parser.close()
        text = _tidy(parser.text())
        if MARK.sub("", text).strip():
            break
    text, marks = _unmark(text)
    title = page_title(parser.h1, parser.title)
    if title and not text.startswith("# "):
        head = f"# {title}\n\n"
        text, marks = head + text, tuple((at + len(head), line) for at, line in marks)
    return title, text, marks


# A first <h1> that names a section of the page, not the page: "1. Overview", "2.3 Syntax",
# "Chapter 4. Indexes", "A. Glossary", or a word every page could have ("Introduction").
NUMBERED = re.compile(r"^(?:(?:chapter|section|part|appendix)\s+)?(?:\d+(?:\.\d+)*\.?|[A-Z]\.|[ivxlc]+\.)\s+\S",
                      re.I)
GENERIC = {"overview", "introduction", "intro", "contents", "table of contents", "abstract", "summary",
           "description", "synopsis", "name", "index", "home", "documentation", "untitled", "about",
           "preface", "welcome", "start", "main page", "readme", "notes", "details", "general"}


def _clean(text: str) -> str:
    return " ".join(text.replace("\u00b6", "").split())


def _bare(heading: str) -> str:
    """The heading without its number: "2.3 Syntax" -> "syntax"."""
    return NUMBERED.sub(lambda m: m.group(0)[-1], heading).strip(" :.-").lower()


def _generic(heading: str) -> bool:
    return _bare(heading) in GENERIC


def page_title(h1: str, title: str) -> str:
    """The page's title for citations: its first ``<h1>``, unless that heading is generic
    ("1. Overview", "Introduction") or numbered and not what ``<title>`` names ("1. Syntax" on a
    page titled "The WITH Clause"): then a numbered h1 is the first section of a long page
    (SQLite's, texinfo's), and ``<title>`` names the page. A numbered chapter whose ``<title>``
    repeats it (Sphinx's "4. More Control Flow Tools — Python documentation") keeps its h1. A
    page with no h1 uses its ``<title>``; with neither, ""."""
    h1, title = _clean(h1), _clean(title)
    if not h1:
        return title
    if not title or _generic(title):
        return h1
    if _generic(h1) or (NUMBERED.match(h1) and _bare(h1) not in title.lower()):
        return title
    return h1
