"""Page-level evidence: a BM25 index over each document's *head*, its title and first lines.

A page's head says what the page is about ("git-cherry-pick - Apply the changes introduced by
some existing commits", "CREATE TABLE — define a new table", an abstract's title). With
``retrieval.page_weight`` above 0, z-score fusion adds weight x the page's head z-score (over
every page) to each candidate chunk, so the section of a page whose summary names the task can
outrank a chunk elsewhere that only shares a rare word with the question. The weight is 0 by
default: measured in bench/multi_bench.py and on SciFact (docs/benchmarks.md, "Across
corpora"), it helps some corpora and costs others; ``llmctl tune`` chooses it per corpus. The
head is built here for both the index and the benchmark.

The index is published beside the chunks' BM25 index, with the same generation, and kept in
step the same way: rebuilt with it, or updated in segments with the documents a run touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from llmctl.config import BM25Config
from llmctl.errors import IndexStateError
from llmctl.index import keyword
from llmctl.index.manifest import Manifest

HEAD_CHARS = 300


def head(title: str, first_chunk: str) -> str:
    """The title, then the first chunk's text without its heading lines, cut at HEAD_CHARS."""
    lines = [ln.strip("# ").strip() for ln in first_chunk.splitlines() if ln.strip() and not ln.startswith("#")]
    return f"{title}. {' '.join(lines)[:HEAD_CHARS]}"


def _heads(manifest: Manifest, doc_ids: Iterable[str] | None = None) -> list[tuple[str, str]]:
    return [(doc_id, head(title, text)) for doc_id, title, text in manifest.page_heads(doc_ids)]


def rebuild(root: Path, cfg: BM25Config, manifest: Manifest, generation: str) -> None:
    heads = _heads(manifest)
    keyword.build_and_save(root, cfg, [d for d, _ in heads], [h for _, h in heads], generation)


def publish(root: Path, cfg: BM25Config, manifest: Manifest, generation: str, touched: set[str]) -> None:
    """The page index for ``generation``: updated in segments with the heads of the documents in
    ``touched`` (and without those gone from the manifest), or rebuilt when there is no index to
    update or the update is refused."""
    try:
        index = keyword.load(root)
    except IndexStateError:
        index = None
    if index is not None:
        before, now = set(index.live_ids()), manifest.documents_with_chunks()
        added = _heads(manifest, touched & now)
        deleted = sorted((before - now) | (touched & before))
        if keyword.update(root, cfg, added, deleted, generation, len(now), index=index):
            return
    rebuild(root, cfg, manifest, generation)


def current(root: Path, generation: str | None) -> bool:
    return generation is not None and keyword.current_generation(root) == generation


class PageScores:
    """Each page's head score for a question, as a z-score over every page."""

    def __init__(self, index: keyword.KeywordIndex):
        self.index = index

    @classmethod
    def load(cls, root: Path) -> PageScores | None:
        """None for an index written before page heads existed (the next ingest adds them)."""
        try:
            return cls(keyword.load(root))
        except IndexStateError:
            return None

    def zscores(self, question: str, doc_ids: Iterable[str]) -> dict[str, float]:
        """z-score of each of ``doc_ids``'s head (0 for a page without one); empty when no
        question term occurs in any head."""
        scores = self.index.scores(question)
        if scores is None:
            return {}
        region = scores if self.index.live is None else scores[self.index.live]
        mean, sd = float(region.mean()), max(float(region.std()), 1e-9)
        pos = self.index.position
        return {d: (float(scores[pos[d]]) - mean) / sd if d in pos else 0.0 for d in doc_ids}


def with_page_evidence(fused: list[tuple[str, float]], page_of: dict[str, str], page_z: dict[str, float],
                       weight: float) -> list[tuple[str, float]]:
    """``fused`` (z-score fusion's scores) plus ``weight`` times the page's head z-score, re-sorted."""
    out = [(cid, s + weight * page_z.get(page_of.get(cid, ""), 0.0)) for cid, s in fused]
    return sorted(out, key=lambda kv: (-kv[1], kv[0]))

