import re
from pathlib import Path

import pytest

from llmctl.config import ChunkingConfig
from llmctl.errors import ConfigError
from llmctl.ingest.chunking import Chunker, split_sections
from llmctl.ingest.loaders import load_documents
from llmctl.records import Document

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


@pytest.fixture(scope="module")
def count(embedder):
    return embedder.count_tokens


def chunker(count, max_tokens=254, **kw):
    return Chunker(ChunkingConfig(**kw), count, max_tokens)


def sample_docs():
    for path in sorted(SAMPLE.rglob("*")):
        if path.is_file():
            yield from load_documents(path, path.relative_to(SAMPLE).as_posix(), path.read_bytes())


def test_every_sample_chunk_fits_the_model_window_and_points_at_its_text(embedder, count):
    assert embedder.max_chunk_tokens == 254  # all-MiniLM-L6-v2: 256 word pieces incl. [CLS]/[SEP]
    c = chunker(count, 120)
    n = 0
    for doc in sample_docs():
        lines = doc.text.splitlines()
        for ch in c.chunk(doc):
            n += 1
            assert count(ch.embed_text) <= 120
            assert doc.text[ch.start_char:ch.end_char] == ch.text
            if doc.line_marks:  # HTML: the page's own lines, which hold the chunk's first and last words
                page = (SAMPLE / doc.source).read_text().splitlines()
                words = re.findall(r"[A-Za-z0-9]{3,}", ch.text)
                assert words[0] in page[ch.start_line - 1], (ch.start_line, ch.text[:60])
                assert words[-1] in " ".join(page[ch.start_line - 1:ch.end_line]), (ch.end_line, ch.text[-60:])
                continue
            first = ch.text.splitlines()[0]
            assert first in lines[ch.start_line - 1]
            assert ch.text.splitlines()[-1] in lines[ch.end_line - 1]
    assert n > 60


def test_long_text_splits_at_sentences_with_overlap(count):
    sentences = [f"Sentence number {i} talks about topic {i} in some detail." for i in range(200)]
    doc = Document("d", "d.txt", " ".join(sentences), "text")
    chunks = chunker(count, 100, overlap_tokens=20).chunk(doc)
    assert len(chunks) > 5
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.text.endswith(".")  # cut after a sentence, not mid-word
        assert b.start_char < a.end_char  # overlap
    assert max(count(ch.embed_text) for ch in chunks) <= 100


def test_a_word_longer_than_the_window_is_still_cut(count):
    doc = Document("d", "d.txt", "x" * 5000, "text")
    chunks = chunker(count, 64, overlap_tokens=0).chunk(doc)
    assert all(count(ch.embed_text) <= 64 for ch in chunks)
    assert "".join(ch.text for ch in chunks) == doc.text


def test_markdown_heading_paths_ignore_code_fences(count):
    text = ("# Guide\n\nintro\n\n## Install\n\n```\n# not a heading\n```\n\n"
            "### Linux\n\napt\n\n## Use\n\nrun\n")
    doc = Document("g", "g.md", text, "markdown", title="Guide")
    assert [s.path for s in split_sections(doc)] == [
        ("Guide",), ("Guide", "Install"), ("Guide", "Install", "Linux"), ("Guide", "Use")]
    chunks = chunker(count, min_tokens=0).chunk(doc)
    assert chunks[2].heading == "Guide > Install > Linux"
    assert chunks[2].embed_text == "Guide > Install > Linux\n### Linux\n\napt"


def test_rst_headings_levels_by_first_use():
    doc = next(d for d in sample_docs() if d.source == "getting-started/installation.rst")
    paths = [s.path for s in split_sections(doc)]
    assert paths[0] == ("Installing Kestrel Backup",)
    assert ("Installing Kestrel Backup", "Homebrew on macOS") in paths


def test_pdf_chunks_carry_their_page(count):
    doc = next(d for d in sample_docs() if d.kind == "pdf")
    chunks = chunker(count, 60, overlap_tokens=0).chunk(doc)
    by_page = {ch.page for ch in chunks}
    assert by_page == {1, 2}
    assert any("Service credits" in ch.text and ch.page == 2 for ch in chunks)


def test_chunk_ids_are_stable_when_another_section_changes(count):
    base = "# A\n\nfirst section text.\n\n# B\n\nsecond section text.\n"
    c = chunker(count, min_tokens=0)
    before = c.chunk(Document("d", "d.md", base, "markdown"))
    after = c.chunk(Document("d", "d.md", base.replace("first", "edited first"), "markdown"))
    assert before[1].id == after[1].id
    assert before[0].id != after[0].id


def test_identical_chunks_in_one_document_get_distinct_ids(count):
    doc = Document("d", "d.md", "# A\n\nsame\n\n# A\n\nsame\n", "markdown")
    ids = [ch.id for ch in chunker(count, min_tokens=0).chunk(doc)]
    assert len(ids) == len(set(ids)) == 2


def test_code_is_split_at_definitions(count):
    code = "\n\n".join(f"def f{i}(x):\n    return x + {i}  # step {i} of the pipeline" for i in range(40))
    doc = Document("c", "c.py", code, "code", language="python")
    chunks = chunker(count, 80, overlap_tokens=0).chunk(doc)
    assert all(ch.text.startswith("def ") for ch in chunks)


def test_overlap_must_be_smaller_than_half_the_chunk(count):
    with pytest.raises(ConfigError, match="overlap_tokens"):
        chunker(count, 64, overlap_tokens=40)


def test_small_sections_join_their_neighbour(count):
    para = "The retention policy keeps fourteen daily snapshots and prunes the rest every night. " * 3
    text = (f"# Guide\n\n## TLS\n\nSee below.\n\n### Verification\n\n{para}\n\n"
            f"## Proxies\n\n{para}\n\n## Stub\n\nSee the quickstart.\n")
    doc = Document("g", "g.md", text, "markdown", title="Guide")
    chunks = chunker(count).chunk(doc)
    assert all(count(ch.text) >= 48 for ch in chunks)
    # title, "## TLS" and its one line go with the subsection under them, keeping its path
    assert chunks[0].heading == "Guide > TLS > Verification" and chunks[0].text.startswith("# Guide\n\n## TLS")
    # a short last section joins the one before it, under that one's heading (its own stays in the text)
    assert chunks[-1].heading == "Guide > Proxies" and chunks[-1].text.endswith("## Stub\n\nSee the quickstart.")
    assert " ".join(ch.text for ch in chunks).split() == text.split()  # nothing lost or repeated
    assert len(chunker(count, min_tokens=0).chunk(doc)) == 5  # 0 keeps every section


@pytest.mark.parametrize("kind", ["markdown", "rst"])
def test_a_one_line_section_does_not_take_the_next_sections_heading_from_its_chunks(count, kind):
    """"Options" (one line) before a long "Examples": every Examples chunk is still under Examples."""
    desc = "The toolbox describes widgets and how they are configured for backups. " * 30
    examples = "Run the toolbox with the nightly flag to prune old snapshots of the widgets. " * 60
    if kind == "markdown":
        text = f"# Toolbox\n\n## Description\n\n{desc}\n\n## Options\n\nOne line.\n\n## Examples\n\n{examples}\n"
    else:
        text = (f"Toolbox\n=======\n\nDescription\n-----------\n\n{desc}\n\nOptions\n-------\n\nOne line.\n\n"
                f"Examples\n--------\n\n{examples}\n")
    chunks = chunker(count).chunk(Document("t", f"t.{kind[:3]}", text, kind, title="Toolbox"))
    headings = [ch.heading for ch in chunks]
    assert headings[0] == "Toolbox > Description"
    examples_chunks = [ch for ch in chunks if "nightly flag" in ch.text]
    assert len(examples_chunks) >= 3 and all(ch.heading == "Toolbox > Examples" for ch in examples_chunks), headings
    assert "Toolbox" not in headings  # no chunk lost its section


def test_jsonl_record_chunks_cite_their_line_and_record(tmp_path, count):
    p = tmp_path / "corpus.jsonl"
    p.write_text('{"_id": "a1", "title": "Alpha", "text": "first"}\n\n'
                 '{"_id": "b2", "title": "Beta", "text": "second"}\n')
    docs = list(load_documents(p, "corpus.jsonl", p.read_bytes()))
    chunks = [ch for d in docs for ch in chunker(count).chunk(d)]
    assert [(ch.start_line, ch.end_line, ch.record, ch.heading) for ch in chunks] == [
        (1, 1, "a1", "Alpha"), (3, 3, "b2", "Beta")]
    from llmctl.records import Hit

    assert Hit("x", chunk=chunks[1].metadata()).location() == "corpus.jsonl:3 (record b2)"


def _varied_docs() -> list[Document]:
    """Sample files, this repository's own code and docs, and texts made to hit the splitter's corners:
    words longer than the window, no separators at all, tabs only, accents, CJK, punctuation runs."""
    import random

    repo = SAMPLE.parent
    docs = list(sample_docs())
    paths = sorted(repo.glob("*.md")) + sorted((repo / "docs").glob("*.md")) + sorted((repo / "llmctl").rglob("*.py"))
    for path in paths:
        docs += load_documents(path, path.name, path.read_bytes())
    rng = random.Random(5)
    words = " ".join(d.text for d in docs[:20]).split()
    words += ["日本語の文章です", "naïve", "café", "U.S.", "e.g.", "—", "x²"]
    for i in range(150):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 600)))
        if i % 5 == 0:
            text = "x" * rng.randint(100, 1500) + " " + text
        if i % 7 == 0:
            text = text.replace(" ", "\t")
        if i % 11 == 0:
            text = "".join(rng.choice(words) for _ in range(rng.randint(50, 300)))
        if i % 3 == 0:
            text = "# Title\n\n" + text.replace(". ", ".\n\n## Part\n\n", 3)
        docs.append(Document(doc_id=f"e{i}", source="edge.md", text=text, title="Edge",
                             kind="markdown" if i % 3 == 0 else "text"))
    return docs


@pytest.mark.parametrize("max_tokens", [254, 64])
def test_counting_from_one_tokenization_per_document_gives_the_same_chunks(embedder, count, max_tokens):
    """Chunk ids must not change with the speed-up (an index would be embedded again)."""
    docs = _varied_docs()
    plain = Chunker(ChunkingConfig(overlap_tokens=16), count, max_tokens)
    fast = Chunker(ChunkingConfig(overlap_tokens=16), count, max_tokens, embedder.token_spans)
    assert embedder.token_spans is not None
    def seen(chunks):
        return [(c.id, c.text, c.embed_text, c.start_char, c.end_char, c.tokens) for c in chunks]

    want = [seen(plain.chunk(d)) for d in docs]
    got = [seen(cs) for cs in fast.chunk_many(docs)]
    assert sum(map(len, want)) > 500
    assert got == want


def test_plain_text_news_and_changelogs_have_sections():
    """A release's version reaches its chunks' heading (and so their embedded text): 'What changed in
    23.0?' can find it. Underlined titles (reST-like, or by eye in GNU NEWS) and Debian entries."""
    news = ("Noteworthy changes in version 2.2.40 (2022-10-10)\n-----------------------------------------\n\n"
            "  * gpg: Do not consider unknown public keys as non-compliant.\n\n"
            "Noteworthy changes in version 2.2.39 (2022-09-02)\n-----------------------------------------\n\n"
            "  * gpg: Fix a regression.\n")
    paths = [s.path for s in split_sections(Document("n", "NEWS", news, "text"))]
    assert paths == [("Noteworthy changes in version 2.2.40 (2022-10-10)",),
                     ("Noteworthy changes in version 2.2.39 (2022-09-02)",)]
    debian = ("util-linux (2.38.1-5) bookworm; urgency=medium\n\n  * Fix a thing.\n\n -- A <a@b.c>  Mon, 1 Jan 2024\n\n"
              "util-linux (2.38.1-4) unstable; urgency=low\n\n  * Another.\n")
    assert [s.path for s in split_sections(Document("c", "changelog.Debian", debian, "text"))] == [
        ("util-linux (2.38.1-5)",), ("util-linux (2.38.1-4)",)]
    plain = "Just some notes.\nA table:\nName   Value\n----   -----\nx      1\n"
    assert [s.path for s in split_sections(Document("p", "README", plain, "text"))] == [()]


def test_an_overlined_title_takes_its_overline_and_no_rule_is_a_chunk_of_its_own(count):
    """Valgrind's FAQ.txt overlines and underlines each part's title: the rule above was left at the
    end of the part before, and became a chunk whose whole text was '-----...' (ranked #1 for an
    off-topic question and sent to the model as the only source)."""
    rule = "-" * 24
    faq = "".join(f"\n\n{rule}\n{n}. Part {n}\n{rule}\n\n{n}.1. A question?\n\n" + "An answer about it. " * 60 + "\n"
                  for n in range(1, 4))
    doc = Document("f", "FAQ.txt", faq, "text")
    sections = split_sections(doc)
    assert [s.path for s in sections if s.path] == [("1. Part 1",), ("2. Part 2",), ("3. Part 3",)]
    assert all(faq[s.start:s.end].lstrip("\n").startswith(rule) for s in sections if s.path)
    chunks = Chunker(ChunkingConfig(min_tokens=0, overlap_tokens=8), count, 64).chunk(doc)
    assert chunks and all(re.search(r"[A-Za-z]{2}", c.text) for c in chunks)
    # a title underlined right after the one before: that underline is not the next title's overline
    two = "Alpha\n-----\nBeta\n-----\nbody\n"
    assert [(two[s.start:s.start + 5], s.path) for s in split_sections(Document("t", "T", two, "text"))] == [
        ("Alpha", ("Alpha",)), ("Beta\n", ("Beta",))]
