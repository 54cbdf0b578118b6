"""Combine ranked lists from several retrievers into one (pure functions)."""

from __future__ import annotations

import functools
import heapq
import math
import re
from collections.abc import Callable

Ranked = list[tuple[str, float]]  # (id, score), best first


def fuse_rrf(lists: dict[str, Ranked], k: int = 60, weights: dict[str, float] | None = None) -> Ranked:
    """Reciprocal rank fusion: sum of w / (k + rank) over the lists an id appears in (w 1 for
    every list unless ``weights`` gives each list's)."""
    scores: dict[str, float] = {}
    for name, ranked in lists.items():
        w = 1.0 if weights is None else weights.get(name, 0.0)
        for rank, (doc, _) in enumerate(ranked, start=1):
            scores[doc] = scores.get(doc, 0.0) + w / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def minmax(ranked: Ranked) -> dict[str, float]:
    """Scores scaled to [0, 1] within the list; a list of equal scores maps to 1."""
    if not ranked:
        return {}
    values = [s for _, s in ranked]
    lo, hi = min(values), max(values)
    if hi == lo:
        return {d: 1.0 for d, _ in ranked}
    return {d: (s - lo) / (hi - lo) for d, s in ranked}


def by_max(ranked: Ranked) -> dict[str, float]:
    """Scores divided by the list's best: keeps each retriever's natural zero (BM25 0, cosine
    0), so a list of uniformly weak matches is not stretched to [0, 1] as min-max does."""
    if not ranked:
        return {}
    hi = max(s for _, s in ranked)
    return {d: (s / hi if hi > 0 else 0.0) for d, s in ranked}


NORMALIZE = {"max": by_max, "minmax": minmax}


def fuse_weighted(lists: dict[str, Ranked], weights: dict[str, float], normalization: str = "max") -> Ranked:
    """Weighted sum of normalised scores; an id missing from a list scores 0 there."""
    scores: dict[str, float] = {}
    norm = NORMALIZE[normalization]
    for name, ranked in lists.items():
        w = weights.get(name, 0.0)
        for doc, s in norm(ranked).items():
            scores[doc] = scores.get(doc, 0.0) + w * s
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def fuse_zscore(scores: dict[str, dict[str, float]], stats: dict[str, tuple[float, float]],
                weights: dict[str, float], cap: float | None = None, support: float | None = None) -> Ranked:
    """Weighted sum of z-scores: each retriever's score minus its mean over the whole corpus,
    divided by its standard deviation there. Unlike scaling by each list's best, a retriever
    whose best match is ordinary for this corpus stays ordinary. ``scores`` gives every
    candidate's score per retriever where known; an unknown one counts as that retriever's
    lowest known score.

    ``cap``: no BM25 z-score counts above it. BM25's distribution has a long tail (most chunks
    score 0), so one rare keyword gives z-scores of 10-30 that outvote any dense evidence.
    ``support``: BM25's part of a chunk's score is scaled by its dense z-score over ``support``
    (clipped to [0, 1]): a keyword match the embedding does not back up counts less."""
    ids = {cid for by_id in scores.values() for cid in by_id}
    z: dict[str, dict[str, float]] = {}
    for name, by_id in scores.items():
        mean, sd = stats[name]
        floor = min(by_id.values(), default=mean)
        zs = {cid: (by_id.get(cid, floor) - mean) / max(sd, 1e-9) for cid in ids}
        z[name] = {cid: min(v, cap) for cid, v in zs.items()} if cap is not None and name == "bm25" else zs
    out = dict.fromkeys(ids, 0.0)
    for name, zs in z.items():
        w = weights.get(name, 0.0)
        for cid in ids:
            gate = 1.0
            if support is not None and name == "bm25" and "dense" in z:
                gate = min(1.0, max(0.0, z["dense"][cid] / support))
            out[cid] += w * gate * zs[cid]
    return sorted(out.items(), key=lambda kv: (-kv[1], kv[0]))


def page_evidence(ranked: Ranked, page_of: dict[str, str], bonus: float) -> Ranked:
    """Each chunk's score plus ``bonus`` times the best other positive score among its page's
    chunks: a page that matches in several places outranks one lucky chunk of another."""
    best: dict[str, list[float]] = {}
    for cid, s in ranked:
        top = best.setdefault(page_of.get(cid, cid), [])
        if len(top) < 2:
            top.append(s)
    out = []
    for cid, s in ranked:
        top = best[page_of.get(cid, cid)]
        other = top[1] if len(top) > 1 and s == top[0] else (top[0] if s != top[0] else None)
        out.append((cid, s + bonus * max(0.0, other) if other is not None else s))
    return sorted(out, key=lambda kv: (-kv[1], kv[0]))


_WORD = re.compile(r"\w+")


@functools.lru_cache(maxsize=512)  # a question's candidates, met again by tune's every setting and eval's repeats
def shingles(text: str, n: int = 3) -> frozenset[int]:
    """The text's word n-grams (lower-cased), each as its hash (cheap to compare; within one
    process, which is as long as they live); a text shorter than n words: its words'."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return frozenset(map(hash, words))
    return frozenset(map(hash, zip(*(words[i:] for i in range(n)), strict=False)))  # the shorter tails end it


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    both = len(a & b)
    return both / (len(a) + len(b) - both)


def _prefix(sh: frozenset[int], threshold: float) -> list:
    """The prefix of ``sh``: its smallest |sh| - ceil(t |sh|) + 1 hashes. Two sets with Jaccard >= t
    always share an element of their prefixes (prefix filtering), so only those need comparing.

    Why: J(A, B) >= t gives |A & B| >= a = max(ceil(t |A|), ceil(t |B|)), and two sets sharing a
    elements share one among their first |A| - a + 1 and |B| - a + 1 in any fixed order; each
    prefix taken here is at least that long. The empty set stands for itself (J(empty, empty) = 1)."""
    if not sh:
        return [None]
    return heapq.nsmallest(len(sh) - math.ceil(threshold * len(sh) - 1e-9) + 1, sh)


def collapse(order: list[str], text_of: Callable[[str], str], limit: int | None = None,
             threshold: float = 0.9) -> list[tuple[str, list[str]]]:
    """Hits whose texts are identical or nearly so (word 3-gram Jaccard >= ``threshold``, 0 < t <= 1)
    as one: [(kept id, [ids of its duplicates])], in ``order``; the kept one is the best ranked,
    and the slots the others held go to the next distinct hits. Stops after ``limit`` groups
    (the duplicates of those groups found later in ``order`` are still gathered).

    A hit joins the first group whose kept text is that near; only groups sharing an element of
    its prefix (``_prefix``) and of a similar size can be, so only those are compared."""
    groups: list[tuple[str, list[str]]] = []
    kept: list[frozenset[int]] = []
    by_prefix: dict[int | None, list[int]] = {}
    exact: dict[str, int] = {}
    for cid in order:
        text = text_of(cid)
        key = " ".join(text.split()).lower()
        at = exact.get(key)
        if at is None:
            sh = shingles(text)
            prefix = _prefix(sh, threshold)
            # |A & B| / |A | B| >= t needs t |A| <= |B| <= |A| / t: only sets of a similar size
            lo, hi = threshold * len(sh) - 1e-9, len(sh) / threshold + 1e-9
            near = {i for e in prefix for i in by_prefix.get(e, ())}
            at = min((i for i in near if lo <= len(kept[i]) <= hi and jaccard(sh, kept[i]) >= threshold),
                     default=None)
        if at is not None:
            groups[at][1].append(cid)
            continue
        if limit is not None and len(groups) >= limit:
            continue
        exact[key] = len(groups)
        for e in prefix:
            by_prefix.setdefault(e, []).append(len(groups))
        kept.append(sh)
        groups.append((cid, []))
    return groups
