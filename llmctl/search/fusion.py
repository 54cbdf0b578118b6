"""Combine ranked lists from several retrievers into one (pure functions)."""

from __future__ import annotations

Ranked = list[tuple[str, float]]  # (id, score), best first


def fuse_rrf(lists: dict[str, Ranked], k: int = 60) -> Ranked:
    """Reciprocal rank fusion: sum of 1 / (k + rank) over the lists an id appears in."""
    scores: dict[str, float] = {}
    for ranked in lists.values():
        for rank, (doc, _) in enumerate(ranked, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
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
                weights: dict[str, float]) -> Ranked:
    """Weighted sum of z-scores: each retriever's score minus its mean over the whole corpus,
    divided by its standard deviation there. Unlike scaling by each list's best, a retriever
    whose best match is ordinary for this corpus stays ordinary. ``scores`` gives every
    candidate's score per retriever where known; an unknown one counts as that retriever's
    lowest known score."""
    ids = {cid for by_id in scores.values() for cid in by_id}
    out = dict.fromkeys(ids, 0.0)
    for name, by_id in scores.items():
        mean, sd = stats[name]
        w = weights.get(name, 0.0) / max(sd, 1e-9)
        floor = min(by_id.values(), default=mean)
        for cid in ids:
            out[cid] += w * (by_id.get(cid, floor) - mean)
    return sorted(out.items(), key=lambda kv: (-kv[1], kv[0]))
