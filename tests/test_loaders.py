import json
from pathlib import Path

import pytest

from llmctl.ingest.loaders import SkipFile, html_to_text, load_documents

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


def load(path: Path, data: bytes | None = None):
    return list(load_documents(path, path.name, path.read_bytes() if data is None else data))


def test_html_keeps_title_headings_and_visible_text_only():
    title, text, _ = html_to_text((SAMPLE / "reference" / "error-codes.html").read_text())
    assert title == "Error codes"  # the page's h1; its <title> is for the browser tab
    assert "# Error codes" in text and "## Reporting a new error" in text
    assert "KB-1042" in text and "repository locked" in text
    assert "analytics" not in text and "border-collapse" not in text


def test_pdf_text_per_page_with_page_numbers():
    [doc] = load(SAMPLE / "policies" / "support-sla.pdf")
    assert doc.kind == "pdf"
    assert [p for _, p in doc.pages] == [1, 2]
    second = doc.pages[1][0]
    assert "99.9%" in doc.text[:second]
    assert "Service credits" in doc.text[second:]


def test_jsonl_one_document_per_line(tmp_path):
    p = tmp_path / "corpus.jsonl"
    rows = [{"_id": "d1", "title": "T1", "text": "alpha"}, {"id": "d2", "text": "beta"}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    docs = load(p)
    assert [(d.doc_id, d.title, d.text) for d in docs] == [
        ("corpus.jsonl#d1", "T1", "alpha"), ("corpus.jsonl#d2", "", "beta")]
    assert [(d.line, d.record) for d in docs] == [(1, "d1"), (2, "d2")]  # what a citation names


@pytest.mark.parametrize("name, data, reason", [
    ("a.txt", b"", "empty file"),
    ("a.md", b"  \n\t\n", "empty file"),
    ("a.txt", b"abc\x00\x01\x02", "binary file"),
    ("a.md", "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, na\u00efve ".encode() * 3 + b"\xe9t\xe9", "not valid UTF-8"),
    ("a.txt", b"\xff\xfe\x00\xd8", "not valid UTF-16"),
    ("a.pdf", b"%PDF-1.4 garbage", "unreadable PDF"),
    ("a.jsonl", b'{"_id": 1, "text": "x"}\n{broken\n', "line 2: invalid JSON"),
    ("a.jsonl", b'{"title": "no id"}\n', "needs an '_id'"),
    ("a.xyz", b"hello", "unsupported file type"),
    ("manual.ps.gz", b"\x1f\x8b", "unsupported file type '.ps.gz'"),  # the type, not the compression
])
def test_bad_files_give_a_reason(tmp_path, name, data, reason):
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(SkipFile, match=reason):
        load(p)


def test_utf8_bom_is_dropped(tmp_path):
    p = tmp_path / "bom.md"
    p.write_bytes(b"\xef\xbb\xbf# Title\n\ntext\n")
    [doc] = load(p)
    assert doc.text.startswith("# Title") and doc.title == "Title"


def test_code_file_keeps_language():
    [doc] = load(SAMPLE / "examples" / "pre_backup_hook.py")
    assert (doc.kind, doc.language) == ("code", "python")


SPHINX_PAGE = """<html><head><title>7. Input and Output &#8212; Python docs</title></head><body>
<div class="mobile-nav"><nav class="nav-content" role="navigation"><a href="/">Python</a>
<form role="search" action="search.html"><input name="q"/></form></nav></div>
<div class="related" role="navigation" aria-label="related navigation"><h3>Navigation</h3><ul>
<li><a href="genindex.html">index</a></li><li><a href="modules.html">modules</a> |</li>
<li><a href="errors.html">next</a> |</li><li><a href="modules.html">previous</a> |</li></ul></div>
<div class="document"><div class="documentwrapper"><div class="bodywrapper">
<div class="body" role="main">
<section id="input-and-output"><h1>7. Input and Output<a class="headerlink" href="#input-and-output">¶</a></h1>
<p>There are several ways to present the output of a program.</p>
<div class="toctree-wrapper"><ul><li><a href="#a">Fancier Output Formatting</a></li>
<li><a href="#b">Reading and Writing Files</a></li><li><a href="#c">Saving structured data</a></li></ul></div>
<section id="fancier"><h2><a class="toc-backref" href="#id1" role="doc-backlink">7.1. Fancier Output Formatting</a></h2>
<p>To use <a href="ref.html#f-strings">formatted string literals</a>, begin a string with f.</p>
<pre>&gt;&gt;&gt; f'Results of the {year}'
'Results of the 2016'</pre></section></section></div></div></div>
<div class="sphinxsidebar" role="navigation"><h3>Table of Contents</h3><ul><li><a href="#">7. Input</a></li>
</ul><h4>Previous topic</h4><p><a href="modules.html">6. Modules</a></p><div role="note"><h3>This Page</h3>
<ul><li><a href="bugs.html">Report a Bug</a></li><li><a href="_sources/x.rst.txt">Show Source</a></li></ul></div></div>
</div><div class="footer">&copy; Copyright 2001-2023, Python Software Foundation.</div></body></html>"""

TEXINFO_PAGE = """<html><head><title>The Closure API (libffi)</title></head><body>
<div class="section-level-extent" id="The-Closure-API"><div class="nav-panel"><p>
Next: <a href="Closure-Example.html" rel="next">Closure Example</a>, Previous: <a href="Types.html"
rel="prev">Types</a>, Up: <a href="Using-libffi.html" rel="up">Using libffi</a> &nbsp;
[<a href="index.html#SEC_Contents" rel="contents">Contents</a>]</p></div><hr>
<h3 class="section">2.6 The Closure API</h3>
<p>libffi also provides a way to write a generic function that can accept any arguments.</p>
<ul class="mini-toc"><li><a href="a.html">Closure Example</a></li><li><a href="b.html">Thread Safety</a></li>
<li><a href="c.html">Closure internals</a></li></ul>
<p>See <a href="x.html">ffi_prep_closure_loc</a> for the details of closure allocation.</p>
<hr><div class="nav-panel"><p>Next: <a href="n.html">Closure Example</a>, Previous: <a href="p.html">Types</a>,
Up: <a href="u.html">Using libffi</a></p></div></div></body></html>"""


def test_html_main_content_only_no_page_chrome():
    title, text, _ = html_to_text(SPHINX_PAGE)
    assert title == "7. Input and Output"
    assert text.startswith("# 7. Input and Output\n\nThere are several ways")
    assert "## 7.1. Fancier Output Formatting" in text and "formatted string literals, begin" in text
    assert "'Results of the 2016'" in text.splitlines()  # code keeps its lines
    for chrome in ("Navigation", "Table of Contents", "Previous topic", "Report a Bug", "Show Source",
                   "Copyright", "modules", "Reading and Writing Files", "¶"):
        assert chrome not in text, chrome


def test_html_without_a_main_element_drops_next_previous_bars_and_link_lists():
    title, text, _ = html_to_text(TEXINFO_PAGE)
    assert title == "The Closure API (libffi)"  # no h1: the <title>
    assert "generic function that can accept any arguments" in text
    assert "See ffi_prep_closure_loc for the details" in text  # one link in a sentence is text
    assert "Next:" not in text and "Previous:" not in text and "Thread Safety" not in text


def test_html_page_of_nothing_but_navigation_is_skipped(tmp_path):
    p = tmp_path / "index.html"
    p.write_text("<html><body><nav><a href='a.html'>A</a></nav><ul>"
                 + "".join(f"<li><a href='{i}.html'>Chapter {i}</a></li>" for i in range(8)) + "</ul></body></html>")
    with pytest.raises(SkipFile, match="no main text"):
        load(p)


RST = """.. _tut-io:

****************
Input and Output
****************

.. index:: single: formatting

There are :ref:`several ways <tut-formatting>` to call :func:`print` and :meth:`~str.format`::

   >>> print(1)

.. note::

   JSON files must be UTF-8; see `the spec <https://json.org>`_.

.. |version| replace:: 3.11

.. function:: open(file, mode='r')
   :noindex:

   Open *file*.

.. toctree::
   :maxdepth: 2

   intro

.. A comment
   on two lines.

| Code | Message |
"""


def test_rst_markup_is_removed_and_line_numbers_kept(tmp_path):
    p = tmp_path / "io.rst"
    p.write_text(RST)
    [doc] = load(p)
    assert doc.title == "Input and Output"
    assert doc.text.count("\n") == RST.count("\n")  # citations still point at the file's lines
    lines = doc.text.splitlines()
    assert lines[8] == "There are several ways to call print and format:"
    assert "   JSON files must be UTF-8; see the spec." in lines
    assert "open(file, mode='r')" in lines and "   Open *file*." in lines
    assert "| Code | Message |" in lines  # a table is not a substitution
    for markup in (".. _tut-io", ".. index", "single:", "|version|", "replace::", ":noindex:", "toctree",
                   "intro", "A comment", "on two lines", ":ref:", "<https"):
        assert markup not in doc.text, markup


def test_markdown_front_matter_becomes_metadata_and_the_title_is_the_h1(tmp_path):
    p = tmp_path / "page.md"
    p.write_text("---\ntitle: Front title\ntags: [a, b]\n---\n\nIntro.\n\n# Real title\n\nText.\n")
    [doc] = load(p)
    assert doc.title == "Real title" and doc.text.startswith("\n\n\n\n\nIntro.")
    assert dict(doc.fields) == {"title": "Front title", "tags": '["a", "b"]'}
    q = tmp_path / "sub.md"
    q.write_text("---\ntitle: From front matter\n---\n## Install\n\nSteps.\n")
    assert load(q)[0].title == "From front matter"  # a lower heading is a section, not the title
    r = tmp_path / "none.md"
    r.write_text("## Install\n\n```sh\n# not a title: a shell comment\npip install kestrel\n```\n")
    assert load(r)[0].title == ""  # the chunk header then uses the file name
    hr = tmp_path / "rule.md"
    hr.write_text("---\nnot: [yaml\n---\ntext\n")
    assert load(hr)[0].text.startswith("---")  # not front matter: left as text


def load_noting(path: Path, data: bytes):
    notes: list[str] = []
    return list(load_documents(path, path.name, data, notes)), notes


@pytest.mark.parametrize("bom, codec", [(b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"),
                                        (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\xef\xbb\xbf", "utf-8")])
def test_byte_order_marks_decide_the_encoding(tmp_path, bom, codec):
    text = "# Caf\u00e9\n\nna\u00efve \u2013 r\u00e9sum\u00e9\n"
    [doc], notes = load_noting(tmp_path / "a.md", bom + text.encode(codec))
    assert doc.text == text and doc.title == "Caf\u00e9"
    assert notes == []


def test_binary_data_after_what_looks_like_a_byte_order_mark_is_skipped(tmp_path):
    """b"\\xff\\xfe" then binary: read as UTF-16 it was garbage with NUL characters, and indexed."""
    with pytest.raises(SkipFile, match="binary file"):
        load_noting(tmp_path / "bad.md", b"\xff\xfe\x00\x01binary\x00\x00")


@pytest.mark.parametrize("head", [
    b'<meta charset="ISO-8859-1">',
    b"<meta http-equiv='Content-Type' content='text/html; charset=iso-8859-1'>",
    b'<META CHARSET=windows-1252>',
])
def test_html_declared_charset_is_honoured(tmp_path, head):
    page = (b"<html><head>" + head + b"<title>Caf\xe9</title></head><body><main><h1>Caf\xe9 cr\xe8me</h1>"
            b"<p>Prix: 5 \x80, d\xe9j\xe0 vu.</p></main></body></html>")
    [doc], notes = load_noting(tmp_path / "a.html", page)
    assert doc.title == "Caf\u00e9 cr\u00e8me" and "Prix: 5 \u20ac, d\u00e9j\u00e0 vu." in doc.text
    assert notes == []  # declared, not guessed


def test_other_declared_charsets_and_a_mislabelled_utf8_page(tmp_path):
    page = ('<?xml version="1.0" encoding="Shift_JIS"?><html><body><p>\u65e5\u672c\u8a9e\u306e\u6587\u66f8</p>'
            "</body></html>")
    [doc] = load(tmp_path / "a.xhtml.html", page.encode("cp932"))
    assert "\u65e5\u672c\u8a9e\u306e\u6587\u66f8" in doc.text
    # Valid UTF-8 is read as UTF-8 whatever the page says (a mislabelled page; and what was read before).
    utf8 = '<meta charset="iso-8859-1"><p>na\u00efve r\u00e9sum\u00e9</p>'.encode()
    [doc] = load(tmp_path / "b.html", utf8)
    assert "na\u00efve r\u00e9sum\u00e9" in doc.text


def test_text_in_no_utf_is_read_as_windows_1252_and_noted(tmp_path):
    data = "Caf\u00e9 cr\u00e8me \u2013 \u201cquoted\u201d, \u20ac5.\n".encode("cp1252") + b"\x81 undefined\n"
    [doc], notes = load_noting(tmp_path / "a.txt", data)
    assert doc.text == "Caf\u00e9 cr\u00e8me \u2013 \u201cquoted\u201d, \u20ac5.\n\x81 undefined\n"
    assert notes == ["Windows-1252"]
    [doc], notes = load_noting(tmp_path / "a.html", b"<p>d\xe9j\xe0 vu</p>")  # no charset declared
    assert "d\u00e9j\u00e0 vu" in doc.text and notes == ["Windows-1252"]


@pytest.mark.parametrize("name, language", [("tool.pl", "perl"), ("Mod.pm", "perl"), ("init.lua", "lua"),
                                            ("plot.R", "r"), ("api.proto", "proto")])
def test_more_source_languages_are_read_as_code(tmp_path, name, language):
    from llmctl.config import ChunkingConfig
    from llmctl.ingest.chunking import Chunker

    p = tmp_path / name
    p.write_text("# a comment\nsub main { print 'backup'; }\n")
    [doc] = load(p)
    assert (doc.kind, doc.language) == ("code", language)
    assert Chunker(ChunkingConfig(), lambda t: len(t.split()), 254).chunk(doc)  # perl: split as prose


def test_every_kind_a_file_is_read_as_is_one_where_kind_takes():
    from llmctl.ingest.loaders import KINDS as BY_SUFFIX
    from llmctl.ingest.loaders import LOADERS, PLAIN
    from llmctl.records import KINDS

    read = set(BY_SUFFIX.values()) | (set(LOADERS) - {PLAIN})
    assert read == set(KINDS), f"a new kind goes into llmctl/records.py's KINDS (--where kind=): {read ^ set(KINDS)}"
