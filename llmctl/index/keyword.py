"""BM25 keyword index: one tokenizer, two backends (bm25s, rank-bm25), atomic saves.

The index is rebuilt from the manifest after each ingest that changed something
(BM25's IDF makes true incremental updates impossible). Each build is written to a
new generation folder and published by atomically replacing ``CURRENT``, so a crash
mid-write leaves the previous index intact and readers never see a half-written one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from llmctl.config import BM25Config
from llmctl.errors import IndexStateError

TOKEN = re.compile(r"\w+", re.UNICODE)


class Tokenizer:
    """Lowercase word tokens, English stopwords removed, Snowball-stemmed (both configurable)."""

    def __init__(self, cfg: BM25Config, stopwords: list[str] | None = None):
        """``stopwords``: the list an index was built with (saved beside it), else the configured one."""
        self.stopwords: frozenset[str] = frozenset(stopwords or ())
        if stopwords is None and cfg.stopwords == "english":
            from bm25s.stopwords import STOPWORDS_EN

            self.stopwords = frozenset(STOPWORDS_EN)
        self._stem = None
        if cfg.stemmer == "english":
            import Stemmer

            self._stem = Stemmer.Stemmer("english").stemWords

    def __call__(self, text: str) -> list[str]:
        words = [w for w in TOKEN.findall(text.lower()) if w not in self.stopwords]
        return self._stem(words) if self._stem else words


class KeywordIndex(ABC):
    """BM25 over chunk ids. ``search`` returns (chunk id, score), best first, scores > 0."""

    name: str

    def __init__(self, cfg: BM25Config, stopwords: list[str] | None = None):
        self.cfg = cfg
        self.tokenize = Tokenizer(cfg, stopwords)
        self.ids: list[str] = []

    def build(self, ids: list[str], texts: list[str]) -> None:
        self.ids = list(ids)
        self._build([self.tokenize(t) for t in texts])

    def search(self, query: str, k: int, mask: np.ndarray | None = None) -> list[tuple[str, float]]:
        tokens = self.tokenize(query)
        if not tokens or not self.ids:
            return []
        scores = self._scores(tokens)
        if mask is not None:
            scores = np.where(mask, scores, 0.0)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.ids[i], float(scores[i])) for i in top if scores[i] > 0]

    @abstractmethod
    def _build(self, corpus_tokens: list[list[str]]) -> None: ...

    @abstractmethod
    def _scores(self, tokens: list[str]) -> np.ndarray: ...

    @abstractmethod
    def _save(self, folder: Path, corpus_tokens: list[list[str]] | None) -> None: ...

    @abstractmethod
    def _load(self, folder: Path) -> None: ...


class BM25sIndex(KeywordIndex):
    """Built and saved by bm25s; read and scored here with numpy alone: bm25s' "lucene"
    scores are precomputed per (token, chunk) in a CSC matrix, so a query's scores are
    the sum of its tokens' columns, added in the same order as bm25s adds them (the same
    float32 results, tested) -- and a query does not import bm25s and scipy (~0.13 s)."""

    name = "bm25s"

    def _build(self, corpus_tokens):
        import bm25s

        self._tokens = corpus_tokens
        self.bm25 = bm25s.BM25(k1=self.cfg.k1, b=self.cfg.b, method="lucene")
        if corpus_tokens:
            self.bm25.index(corpus_tokens, show_progress=False)
            sc = self.bm25.scores
            self._matrix = (sc["data"], sc["indices"], sc["indptr"], self.bm25.vocab_dict)

    def _scores(self, tokens):
        data, indices, indptr, vocab = self._matrix
        known = [vocab[t] for t in tokens if t in vocab]
        scores = np.zeros(len(self.ids), dtype=data.dtype)
        if known:
            spans = [(indptr[t], indptr[t + 1]) for t in known]
            np.add.at(scores, np.concatenate([indices[a:b] for a, b in spans]),
                      np.concatenate([data[a:b] for a, b in spans]))
        return scores

    def _save(self, folder, corpus_tokens):
        if self.ids:
            self.bm25.save(str(folder), show_progress=False)

    def _load(self, folder):
        if self.ids:
            arrays = [np.load(folder / f"{n}.csc.index.npy", mmap_mode="r") for n in ("data", "indices", "indptr")]
            self._matrix = (*arrays, json.loads((folder / "vocab.index.json").read_text()))


class RankBM25Index(KeywordIndex):
    name = "rank_bm25"

    def _build(self, corpus_tokens):
        from rank_bm25 import BM25Okapi

        self._tokens = corpus_tokens
        self.bm25 = BM25Okapi(corpus_tokens, k1=self.cfg.k1, b=self.cfg.b) if corpus_tokens else None

    def _scores(self, tokens):
        return np.asarray(self.bm25.get_scores(tokens), dtype=np.float32)

    def _save(self, folder, corpus_tokens):
        # rank-bm25 has no file format: keep the tokens and rebuild on load.
        (folder / "tokens.json").write_text(json.dumps(corpus_tokens))

    def _load(self, folder):
        self._build(json.loads((folder / "tokens.json").read_text()))


BACKENDS: dict[str, type[KeywordIndex]] = {"bm25s": BM25sIndex, "rank_bm25": RankBM25Index}


def settings_of(cfg: BM25Config) -> dict:
    return cfg.model_dump()


def build_and_save(root: Path, cfg: BM25Config, ids: list[str], texts: list[str], generation: str) -> None:
    """Build an index over (ids, texts) and publish it as the current one."""
    index = BACKENDS[cfg.backend](cfg)
    index.build(ids, texts)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"gen-{generation}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    index._save(folder, index._tokens)
    (folder / "ids.json").write_text(json.dumps(index.ids))
    meta = {"settings": settings_of(cfg), "generation": generation, "stopwords": sorted(index.tokenize.stopwords)}
    (folder / "settings.json").write_text(json.dumps(meta))
    _fsync_dir(folder)
    tmp = root / "CURRENT.tmp"
    tmp.write_text(folder.name)
    os.replace(tmp, root / "CURRENT")
    _fsync_dir(root)
    for old in root.glob("gen-*"):
        if old.name != folder.name:
            shutil.rmtree(old, ignore_errors=True)


def current_generation(root: Path) -> str | None:
    """Generation of the published index, or None if there is none."""
    try:
        folder = root / (root / "CURRENT").read_text().strip()
        meta = json.loads((folder / "settings.json").read_text())
        if not isinstance(json.loads((folder / "ids.json").read_text()), list):
            return None
    except (OSError, ValueError):
        return None  # missing or damaged: the next ingest rebuilds it
    return meta.get("generation")


def load(root: Path, cfg: BM25Config | None = None) -> KeywordIndex:
    """The published index, with the settings it was built with."""
    try:
        folder = root / (root / "CURRENT").read_text().strip()
        meta = json.loads((folder / "settings.json").read_text())
        ids = json.loads((folder / "ids.json").read_text())
    except (OSError, ValueError):
        raise IndexStateError(
            f"No BM25 index in {root}: run 'llmctl ingest <path>' first"
        ) from None
    built_with = meta["settings"]
    index = BACKENDS[built_with["backend"]](BM25Config(**built_with), meta.get("stopwords"))
    index.ids = ids
    index._load(folder)
    return index


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
