import math

import pytest

from llmctl.evals.metrics import compute, parse_metric, rollup

RANKED = ["d3", "d1", "d7", "d2", "d9"]
QRELS = {"d1": 1, "d2": 2, "d5": 1}  # d5 relevant but never retrieved


@pytest.mark.parametrize("name, expected", [
    ("hit@1", 0.0), ("hit@2", 1.0),
    ("recall@2", 1 / 3), ("recall@5", 2 / 3),
    ("precision@2", 1 / 2), ("precision@5", 2 / 5), ("precision@10", 2 / 10),  # trec_eval divides by k
    ("mrr@1", 0.0), ("mrr@5", 1 / 2),
    # DCG@5 = 1/log2(3) + 2/log2(5); ideal grades (2,1,1): 2/1 + 1/log2(3) + 1/2
    ("ndcg@5", (1 / math.log2(3) + 2 / math.log2(5)) / (2 + 1 / math.log2(3) + 0.5)),
    # DCG@2 = 1/log2(3); ideal@2 = 2 + 1/log2(3)
    ("ndcg@2", (1 / math.log2(3)) / (2 + 1 / math.log2(3))),
])
def test_metrics_match_hand_computed_values(name, expected):
    assert compute(name, RANKED, QRELS) == pytest.approx(expected)


def test_perfect_and_empty_rankings():
    assert compute("ndcg@3", ["d2", "d1", "d5"], QRELS) == pytest.approx(1.0)
    assert compute("ndcg@3", [], QRELS) == 0.0
    assert compute("recall@3", ["x"], {}) == 0.0


@pytest.mark.parametrize("bad", ["ndcg", "ndcg@0", "nosuchmetric@10", "recall@x"])
def test_unknown_metric_names(bad):
    with pytest.raises(ValueError):
        parse_metric(bad)


def test_rollup_ranks_documents_by_their_best_chunk():
    doc_of = {"c1": "a", "c2": "b", "c3": "a", "c4": "c"}
    assert rollup(["c3", "c2", "c1", "zz", "c4"], doc_of) == ["a", "b", "c"]
