"""One large file in bounded memory: the chunker tokenizes a text in pieces (never the whole
text at once) and keeps its token offsets compactly, with the same chunks as before. The peak
RSS of a dry run over a 49 MB file is measured by bench/large_file.py, not asserted here."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from llmctl.config import ChunkingConfig
from llmctl.ingest import chunking
from llmctl.ingest.chunking import Chunker, _pieces_of
from llmctl.records import Document

REPO = Path(__file__).resolve().parent.parent


def _long_text() -> str:
    """~60 KB of prose, code and corner cases: CJK, accents, tabs, punctuation runs, a 300-character
    word, CRLF lines, text with no paragraph breaks."""
    rng = random.Random(7)
    parts = [(REPO / "README.md").read_text()[:20000], (REPO / "llmctl" / "ingest" / "pipeline.py").read_text()[:15000]]
    words = parts[0].split() + ["日本語の文章です", "naïve", "café", "U.S.", "e.g.", "—", "x²", "...!?", "a\tb"]
    parts.append(" ".join(rng.choice(words) for _ in range(2500)))
    parts.append("x" * 300 + " tail\r\nline two\r\n" + "---" * 50 + "\n\n" + "word, " * 400)
    return "\n\n".join(parts)


@pytest.mark.parametrize("window", [997, 4000])
def test_tokenizing_in_pieces_gives_the_same_chunks(embedder, monkeypatch, window):
    """Chunk ids, spans, lines and token counts equal those counted with the tokenizer alone."""
    text = _long_text()
    docs = [Document("t", "t.txt", text, "text", title="T"), Document("m", "m.md", text, "markdown", title="M")]
    sizes: list[int] = []

    def token_spans(texts):
        sizes.extend(map(len, texts))
        return embedder.token_spans(texts)

    monkeypatch.setattr(chunking, "SPAN_WINDOW", window)
    plain = Chunker(ChunkingConfig(overlap_tokens=16), embedder.count_tokens, 254)
    pieces = Chunker(ChunkingConfig(overlap_tokens=16), embedder.count_tokens, 254, token_spans)

    def seen(chunks):
        return [(c.id, c.text, c.embed_text, c.start_char, c.end_char, c.start_line, c.end_line, c.tokens)
                for c in chunks]

    got = [seen(cs) for cs in pieces.chunk_many(docs)]
    assert max(sizes) <= window and len(sizes) >= 2 * len(text) // window  # never the whole text
    assert got == [seen(plain.chunk(d)) for d in docs]
    assert len(got[0]) > 50


def test_pieces_are_cut_after_whitespace_else_punctuation_else_anywhere():
    text = "a" * 20 + " " + "b" * 30 + "," + "c" * 80
    cuts = list(_pieces_of(text, 32))
    assert "".join(text[a:b] for a, b in cuts) == text
    assert all(b - a <= 32 for a, b in cuts)
    assert [text[b - 1] for _, b in cuts] == [" ", ",", "c", "c", "c"]  # whitespace, punctuation, anywhere
    assert list(_pieces_of("", 32)) == [] and list(_pieces_of("short", 32)) == [(0, 5)]


def test_a_dry_run_over_a_large_file_tokenizes_it_in_pieces(tmp_path, make_config, embedder, monkeypatch):
    """The streaming behaviour, end to end at a small scale: a ~1 MB file is never handed to the
    tokenizer whole (that alone took ~250 bytes a token: 6 GB for a 49 MB file)."""
    from llmctl.datadir import DataDir
    from llmctl.ingest.pipeline import ingest

    docs = tmp_path / "docs"
    docs.mkdir()
    rng = random.Random(3)
    vocab = (REPO / "README.md").read_text().split()
    paragraphs = (" ".join(rng.choice(vocab) for _ in range(rng.randint(20, 120))) for _ in range(3000))
    (docs / "big.txt").write_text("\n\n".join(paragraphs))
    sizes: list[int] = []
    real = embedder.token_spans

    def token_spans(texts):
        sizes.extend(map(len, texts))
        return real(texts)

    monkeypatch.setattr(type(embedder), "token_spans", property(lambda self: token_spans))
    cfg = make_config()
    r = ingest([docs], cfg, DataDir(cfg.data_dir), dry_run=True, embedder=embedder)
    assert r.files_added == ["docs/big.txt"] and r.chunks_added > 1000
    assert max(sizes) <= chunking.SPAN_WINDOW < (docs / "big.txt").stat().st_size // 10
