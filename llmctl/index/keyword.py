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
from functools import cached_property
from pathlib import Path

import numpy as np

from llmctl.config import BM25Config
from llmctl.errors import IndexStateError

# 1: \w+ words. 2: scripts written without spaces (Chinese, Japanese, Korean, Thai, Lao, Khmer,
# Myanmar) as overlapping character bigrams; chunks shorter than LENGTH_FLOOR tokens are scored
# as if that long.
TOKENIZER_VERSION = 2
NO_SPACE = ("\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
            "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f")
TOKEN = re.compile(rf"([{NO_SPACE}]+)|((?:(?![{NO_SPACE}])\w)+)")
TOKEN_V1 = re.compile(r"\w+", re.UNICODE)
# BM25 favours short chunks (length normalisation): a heading and one line would outrank the
# section that answers. Below this many tokens a chunk is padded with a token no query contains.
LENGTH_FLOOR = 24
PAD = "\x00"


class Tokenizer:
    """Lowercase word tokens, English stopwords removed, Snowball-stemmed (both configurable);
    scripts without spaces as character bigrams."""

    def __init__(self, cfg: BM25Config, stopwords: list[str] | None = None, version: int = TOKENIZER_VERSION):
        """``stopwords``: the list an index was built with (saved beside it), else the configured one;
        ``version``: the tokenizer it was built with."""
        self.version = version
        self.stopwords: frozenset[str] = frozenset(stopwords or ())
        if stopwords is None and cfg.stopwords == "english":
            from bm25s.stopwords import STOPWORDS_EN

            self.stopwords = frozenset(STOPWORDS_EN)
        self._stem = None
        if cfg.stemmer == "english":
            import Stemmer

            self._stem = Stemmer.Stemmer("english").stemWords

    def __call__(self, text: str) -> list[str]:
        if self.version == 1:
            words = [w for w in TOKEN_V1.findall(text.lower()) if w not in self.stopwords]
            return self._stem(words) if self._stem else words
        words, grams = [], []
        for run, word in TOKEN.findall(text.lower()):
            if word:
                if word not in self.stopwords:
                    words.append(word)
            else:
                grams += [run[i:i + 2] for i in range(len(run) - 1)] or [run]
        return (self._stem(words) if self._stem else words) + grams

    def document(self, text: str) -> list[str]:
        """A chunk's tokens as indexed: padded to LENGTH_FLOOR (from version 2)."""
        tokens = self(text)
        return tokens if self.version == 1 else tokens + [PAD] * (LENGTH_FLOOR - len(tokens))


class KeywordIndex(ABC):
    """BM25 over chunk ids. ``search`` returns (chunk id, score), best first, scores > 0."""

    name: str

    def __init__(self, cfg: BM25Config, stopwords: list[str] | None = None, version: int = TOKENIZER_VERSION):
        self.cfg = cfg
        self.tokenize = Tokenizer(cfg, stopwords, version)
        self.ids: list[str] = []

    @cached_property
    def position(self) -> dict[str, int]:
        """Chunk id -> its column in the score vector."""
        return {cid: n for n, cid in enumerate(self.ids)}

    def build(self, ids: list[str], texts: list[str]) -> None:
        self.ids = list(ids)
        self._build([self.tokenize.document(t) for t in texts])

    def scores(self, query: str, mask: np.ndarray | None = None) -> np.ndarray | None:
        """Every chunk's score for ``query`` (0 outside ``mask``), or None when no term can match."""
        tokens = self.tokenize(query)
        if not tokens or not self.ids:
            return None
        scores = self._scores(tokens)
        return scores if mask is None else np.where(mask, scores, 0.0)

    def search(self, query: str, k: int, mask: np.ndarray | None = None) -> list[tuple[str, float]]:
        scores = self.scores(query, mask)
        return [] if scores is None else self.top(scores, k)

    def top(self, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
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
    return cfg.model_dump() | {"tokenizer": TOKENIZER_VERSION}


def build_and_save(root: Path, cfg: BM25Config, ids: list[str], texts: list[str], generation: str,
                   arrays: dict[str, np.ndarray] | None = None) -> None:
    """Build an index over (ids, texts) and publish it as the current one, with ``arrays`` that
    belong to the same generation of the index (read back with ``load_array``)."""
    index = BACKENDS[cfg.backend](cfg)
    index.build(ids, texts)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"gen-{generation}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    index._save(folder, index._tokens)
    for name, array in (arrays or {}).items():
        np.save(folder / f"{name}.npy", array)
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
    built_with = dict(meta["settings"])
    version = built_with.pop("tokenizer", 1)
    index = BACKENDS[built_with["backend"]](BM25Config(**built_with), meta.get("stopwords"), version)
    index.ids = ids
    index._load(folder)
    return index


def load_array(root: Path, name: str) -> np.ndarray | None:
    """An array saved with the published generation, or None (an index from before it existed)."""
    try:
        return np.load(root / (root / "CURRENT").read_text().strip() / f"{name}.npy")
    except (OSError, ValueError):
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
