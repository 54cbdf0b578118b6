"""BM25 keyword index: one tokenizer, two backends (bm25s, rank-bm25), atomic saves.

Every change is written to a new generation folder and published by atomically replacing
``CURRENT``, so a crash mid-write leaves the previous index intact and readers never see a
half-written one.

bm25s indexes are updated in segments (``update``): a generation is a *base* (a full build)
plus a small *delta* of the chunks added since, scored with the base's corpus statistics, and
the base positions deleted since. A one-document change then costs the delta, not the corpus.
When delta and deletions pass ``MERGE_SHARE`` of the base, the next change rebuilds it all
(statistics drift that far would start to move rankings). rank-bm25 indexes are always rebuilt.
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
# A delta plus deletions above this share of the base (and above MERGE_MIN chunks) is merged
# into a new base by a full rebuild.
MERGE_SHARE = 0.02
MERGE_MIN = 1000


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
        self.live: np.ndarray | None = None  # False at chunks deleted since the base was built
        # Set by load(): the settings it was built with, its folder, its base's folder name (a
        # delta generation) and how many of ``ids`` the base holds.
        self.built_with: dict = {}
        self.folder: Path | None = None
        self.base: str | None = None
        self.base_size = 0

    @cached_property
    def position(self) -> dict[str, int]:
        """Chunk id -> its column in the score vector."""
        return {cid: n for n, cid in enumerate(self.ids)}

    def live_ids(self) -> list[str]:
        """The chunks this index holds: ``ids`` less those deleted since its base was built."""
        return self.ids if self.live is None else [i for i, keep in zip(self.ids, self.live, strict=True) if keep]

    def build(self, ids: list[str], texts) -> None:
        """``texts``: any iterable (a manifest cursor): it is read once, one text at a time."""
        self.ids = list(ids)
        self._build(self.tokenize.document(t) for t in texts)

    def scores(self, query: str, mask: np.ndarray | None = None) -> np.ndarray | None:
        """Every chunk's score for ``query`` (0 outside ``mask``), or None when no term can match."""
        tokens = self.tokenize(query)
        if not tokens or not self.ids:
            return None
        scores = self._scores(tokens)
        if self.live is not None:
            mask = self.live if mask is None else mask & self.live
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

    delta: Delta | None = None  # chunks added since the base (its ids follow the base's in ``ids``)

    def _build(self, corpus_tokens):
        """bm25s' "lucene" scores, computed here in bounded memory: tokens become int32 ids as they
        are read (a list of token strings costs ~7 GB at a million chunks; the ids ~0.6 GB), and the
        matrix is filled a window of documents at a time."""
        docs = TokenIds()
        for tokens in corpus_tokens:
            docs.add(tokens)
        self._tokens = None
        self._lengths = docs.lengths()
        if len(self._lengths):
            self._matrix = lucene_matrix(docs, self.cfg)

    def _scores(self, tokens):
        scores = _column_sums(self._matrix, tokens, len(self.ids) - (len(self.delta.ids) if self.delta else 0))
        if self.delta is None:
            return scores
        return np.concatenate([scores, _column_sums(self.delta.matrix, tokens, len(self.delta.ids))])

    def _save(self, folder, corpus_tokens):
        """bm25s' file layout (its three CSC arrays and vocabulary), plus the statistics a delta needs."""
        if self.ids:
            data, indices, indptr, vocab = self._matrix
            for name, array in (("data", data), ("indices", indices), ("indptr", indptr)):
                np.save(folder / f"{name}.csc.index.npy", array)
            (folder / "vocab.index.json").write_text(json.dumps(vocab))
            (folder / "stats.json").write_text(json.dumps({"documents": len(self._lengths),
                                                           "avg_length": float(self._lengths.mean())}))

    def _load(self, folder):
        if self.ids:
            arrays = [np.load(folder / f"{n}.csc.index.npy", mmap_mode="r") for n in ("data", "indices", "indptr")]
            self._matrix = (*arrays, json.loads((folder / "vocab.index.json").read_text()))


class Delta:
    """Chunks added since the base, scored as the base scores (lucene BM25) with the base's
    statistics plus their own: N and document frequencies summed, the base's mean length."""

    def __init__(self, ids: list[str], tokens: list[list[str]], matrix: tuple):
        self.ids, self.tokens, self.matrix = ids, tokens, matrix

    @classmethod
    def build(cls, ids: list[str], tokens: list[list[str]], base: tuple, stats: dict, cfg: BM25Config) -> Delta:
        _, _, base_indptr, base_vocab = base
        docs = TokenIds()
        for t in tokens:
            docs.add(t)
        base_df = np.zeros(len(docs.vocab), dtype=np.int64)
        for term, col in docs.vocab.items():
            if term in base_vocab:
                b = base_vocab[term]
                base_df[col] = int(base_indptr[b + 1] - base_indptr[b])
        return cls(list(ids), tokens, lucene_matrix(docs, cfg, stats["documents"], base_df, stats["avg_length"]))

    def save(self, folder: Path) -> None:
        data, indices, indptr, vocab = self.matrix
        for name, array in (("data", data), ("indices", indices), ("indptr", indptr)):
            np.save(folder / f"delta.{name}.npy", array)
        (folder / "delta.json").write_text(json.dumps({"ids": self.ids, "tokens": self.tokens, "vocab": list(vocab)}))

    @classmethod
    def load(cls, folder: Path) -> Delta:
        meta = json.loads((folder / "delta.json").read_text())
        arrays = [np.load(folder / f"delta.{n}.npy") for n in ("data", "indices", "indptr")]
        return cls(meta["ids"], meta["tokens"], (*arrays, {t: i for i, t in enumerate(meta["vocab"])}))


class TokenIds:
    """Documents as int32 token ids in one growing buffer, with their vocabulary."""

    def __init__(self):
        from array import array

        self.vocab: dict[str, int] = {}
        self.ids = array("i")
        self.offsets = array("q", [0])

    def add(self, tokens: list[str]) -> None:
        vocab = self.vocab
        self.ids.extend([vocab.setdefault(t, len(vocab)) for t in tokens])
        self.offsets.append(len(self.ids))

    def lengths(self) -> np.ndarray:
        return np.diff(np.frombuffer(self.offsets, dtype=np.int64))


def lucene_matrix(docs: TokenIds, cfg: BM25Config, more_documents: int = 0, more_df: np.ndarray | None = None,
                  avg_length: float | None = None, window: int = 10_000) -> tuple:
    """(data, indices, indptr, vocab): a CSC matrix of per-(token, document) scores, as bm25s' "lucene"
    method computes them: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), times tf / (tf + k1 (1 - b + b
    len / avg len)). ``more_documents`` / ``more_df`` / ``avg_length``: another segment's statistics
    (a delta is scored as if it were part of its base). Two passes over windows of documents, so
    memory is the ids plus the result."""
    ids = np.frombuffer(docs.ids, dtype=np.int32)
    offsets = np.frombuffer(docs.offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    n, terms = len(lengths), len(docs.vocab)

    def pairs(start: int, stop: int):  # (term, document, tf) of a window, by term then document
        doc = np.repeat(np.arange(start, stop, dtype=np.int64), lengths[start:stop])
        keys, tf = np.unique(ids[offsets[start]:offsets[stop]].astype(np.int64) * n + doc, return_counts=True)
        return keys // n, keys % n, tf

    windows = [(a, min(n, a + window)) for a in range(0, n, window)]
    df = np.zeros(terms, dtype=np.int64)
    for a, b in windows:
        df += np.bincount(pairs(a, b)[0], minlength=terms)
    total_df = df + (more_df if more_df is not None else 0)
    # bm25s' arithmetic, step for step (float32 idf, float64 tf part): the same float32 scores
    idf = np.log(1 + (n + more_documents - total_df + 0.5) / (total_df + 0.5)).astype(np.float32).astype(np.float64)
    avg = float(lengths.mean()) if avg_length is None else avg_length
    norm = cfg.k1 * ((1 - cfg.b) + cfg.b * lengths / avg)
    indptr = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)
    data = np.empty(indptr[-1], dtype=np.float32)
    indices = np.empty(indptr[-1], dtype=np.int32)
    fill = indptr[:-1].copy()
    for a, b in windows:
        term, doc, tf = pairs(a, b)
        tf = tf.astype(np.float32).astype(np.float64)
        score = (idf[term] * (tf / (norm[doc] + tf))).astype(np.float32)
        first, count = np.unique(term, return_index=True, return_counts=True)[1:]
        pos = fill[term] + (np.arange(len(term)) - np.repeat(first, count))
        data[pos], indices[pos] = score, doc
        fill[term[first]] += count
    return data, indices, indptr, dict(docs.vocab)


def _column_sums(matrix: tuple, tokens: list[str], size: int) -> np.ndarray:
    """A query's scores over one segment: the sum of its tokens' columns, added in the order bm25s
    adds them (the same float32 results)."""
    data, indices, indptr, vocab = matrix
    known = [vocab[t] for t in tokens if t in vocab]
    scores = np.zeros(size, dtype=np.float32)
    if known:
        spans = [(indptr[t], indptr[t + 1]) for t in known]
        np.add.at(scores, np.concatenate([indices[a:b] for a, b in spans]),
                  np.concatenate([data[a:b] for a, b in spans]))
    return scores


class RankBM25Index(KeywordIndex):
    name = "rank_bm25"

    def _build(self, corpus_tokens):
        from rank_bm25 import BM25Okapi

        self._tokens = corpus_tokens = list(corpus_tokens)
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

    def write(folder: Path) -> dict:
        index._save(folder, index._tokens)
        for name, array in (arrays or {}).items():
            np.save(folder / f"{name}.npy", array)
        (folder / "ids.json").write_text(json.dumps(index.ids))
        return {"stopwords": sorted(index.tokenize.stopwords)}

    _publish(root, cfg, generation, write)


def update(root: Path, cfg: BM25Config, added: list[tuple[str, str]], deleted: list[str], generation: str,
           expected: int, index: KeywordIndex | None = None) -> bool:
    """Publish the current index with ``added`` (chunk id, text) and without ``deleted`` as a new
    generation, in segments (see the module docstring). False, with nothing written, when it
    must be rebuilt instead: another backend or settings, no index, a delta past the merge
    threshold, or a count that is not ``expected`` (the index and the manifest disagree).
    ``index``: the published one, when the caller has loaded it already."""
    if index is None:
        try:
            index = load(root)
        except IndexStateError:
            return False
    if not isinstance(index, BM25sIndex) or settings_of(cfg) != index.built_with or not index.base_size:
        return False
    n_base = index.base_size
    live = index.live.copy() if index.live is not None else np.ones(len(index.ids), dtype=bool)
    gone = set(deleted)
    for pos, cid in enumerate(index.ids):
        if cid in gone:
            live[pos] = False
    old = index.delta
    keep = [(i, t) for n, (i, t) in enumerate(zip(old.ids, old.tokens, strict=True)) if live[n_base + n]] if old else []
    keep += [(cid, index.tokenize.document(text)) for cid, text in added]
    dead_base = np.flatnonzero(~live[:n_base])
    if len(keep) + len(dead_base) > max(MERGE_MIN, MERGE_SHARE * n_base):
        return False
    if n_base - len(dead_base) + len(keep) != expected:
        return False
    base_folder = index.folder if old is None else root / index.base
    try:
        stats = json.loads((base_folder / "stats.json").read_text())
    except (OSError, ValueError):
        return False  # a base from before segments
    delta = Delta.build([i for i, _ in keep], [t for _, t in keep], index._matrix, stats, cfg)

    def write(folder: Path) -> dict:
        delta.save(folder)
        np.save(folder / "dead.npy", dead_base)
        (folder / "ids.json").write_text(json.dumps(delta.ids))
        return {"stopwords": sorted(index.tokenize.stopwords), "base": base_folder.name}

    _publish(root, cfg, generation, write)
    return True


def _publish(root: Path, cfg: BM25Config, generation: str, write) -> None:
    """Write a generation folder (``write(folder)`` returns extra metadata), publish it, and remove
    the folders it does not need (its base, when it has one, stays)."""
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"gen-{generation}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    meta = {"settings": settings_of(cfg), "generation": generation, **write(folder)}
    (folder / "settings.json").write_text(json.dumps(meta))
    _fsync_dir(folder)
    tmp = root / "CURRENT.tmp"
    tmp.write_text(folder.name)
    os.replace(tmp, root / "CURRENT")
    _fsync_dir(root)
    for other in root.glob("gen-*"):
        if other.name not in (folder.name, meta.get("base")):
            shutil.rmtree(other, ignore_errors=True)


def current_generation(root: Path) -> str | None:
    """Generation of the published index, or None if there is none."""
    try:
        folder = root / (root / "CURRENT").read_text().strip()
        meta = json.loads((folder / "settings.json").read_text())
        if not isinstance(json.loads((folder / "ids.json").read_text()), list):
            return None
        if meta.get("base") and not (root / meta["base"] / "ids.json").exists():
            return None
    except (OSError, ValueError):
        return None  # missing or damaged: the next ingest rebuilds it
    return meta.get("generation")


def load(root: Path, cfg: BM25Config | None = None) -> KeywordIndex:
    """The published index, with the settings it was built with."""
    try:
        folder = root / (root / "CURRENT").read_text().strip()
        meta = json.loads((folder / "settings.json").read_text())
        base = root / meta["base"] if meta.get("base") else folder
        ids = json.loads((base / "ids.json").read_text())
    except (OSError, ValueError):
        raise IndexStateError(
            f"No BM25 index in {root}: run 'llmctl ingest <path>' first"
        ) from None
    built_with = dict(meta["settings"])
    version = built_with.pop("tokenizer", 1)
    index = BACKENDS[built_with["backend"]](BM25Config(**built_with), meta.get("stopwords"), version)
    index.built_with, index.folder, index.base, index.base_size = meta["settings"], folder, meta.get("base"), len(ids)
    index.ids = ids
    index._load(base)
    if meta.get("base"):
        index.delta = Delta.load(folder)
        index.ids = ids + index.delta.ids
        index.live = np.ones(len(index.ids), dtype=bool)
        index.live[np.load(folder / "dead.npy")] = False
    return index


def load_array(root: Path, name: str) -> np.ndarray | None:
    """An array saved with the published generation (or its base), or None (an index from before it existed)."""
    try:
        folder = root / (root / "CURRENT").read_text().strip()
        base = json.loads((folder / "settings.json").read_text()).get("base")
        return np.load((root / base if base else folder) / f"{name}.npy")
    except (OSError, ValueError):
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
