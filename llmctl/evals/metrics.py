"""Retrieval metrics with trec_eval's definitions (pure functions).

``ranked`` is a list of document ids, best first; ``qrels`` maps relevant document ids
to a grade > 0. Gains are linear in the grade (trec_eval's ndcg_cut, as used by BEIR).

``FUNCTIONS`` is the registry: a suite may name ``<name>@<k>`` for any of its keys. To add a
metric, write ``def name(ranked, qrels, k) -> float`` here and add it to the table.
"""

from __future__ import annotations

import math
import re


def hit(ranked: list[str], qrels: dict[str, int], k: int) -> float:
    return 1.0 if any(d in qrels for d in ranked[:k]) else 0.0


def recall(ranked: list[str], qrels: dict[str, int], k: int) -> float:
    return sum(1 for d in ranked[:k] if d in qrels) / len(qrels) if qrels else 0.0


def precision(ranked: list[str], qrels: dict[str, int], k: int) -> float:
    """trec_eval P@k: divided by k even when fewer than k documents were retrieved."""
    return sum(1 for d in ranked[:k] if d in qrels) / k


def mrr(ranked: list[str], qrels: dict[str, int], k: int) -> float:
    for i, d in enumerate(ranked[:k], start=1):
        if d in qrels:
            return 1.0 / i
    return 0.0


def ndcg(ranked: list[str], qrels: dict[str, int], k: int) -> float:
    dcg = sum(qrels.get(d, 0) / math.log2(i + 1) for i, d in enumerate(ranked[:k], start=1))
    ideal = sorted(qrels.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 1) for i, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


FUNCTIONS = {"hit": hit, "recall": recall, "precision": precision, "mrr": mrr, "ndcg": ndcg}
METRIC_NAME = re.compile(rf"^({'|'.join(FUNCTIONS)})@(\d+)$")


def parse_metric(name: str) -> tuple[str, int]:
    m = METRIC_NAME.match(name.strip().lower())
    if not m or int(m.group(2)) < 1:
        raise ValueError(name)
    return m.group(1), int(m.group(2))


def compute(name: str, ranked: list[str], qrels: dict[str, int]) -> float:
    metric, k = parse_metric(name)
    return FUNCTIONS[metric](ranked, qrels, k)


def rollup(chunk_ids: list[str], doc_of: dict[str, str]) -> list[str]:
    """Chunk ranking -> document ranking: a document ranks where its best chunk ranks."""
    seen: dict[str, None] = {}
    for cid in chunk_ids:
        doc = doc_of.get(cid)
        if doc is not None and doc not in seen:
            seen[doc] = None
    return list(seen)
