"""The semantic cache serves an answer only for the same question about the same sources.

Pair sets (real embedding model, through the real cache): the dev halves of
tests/semantic_pairs.py and, when present, the independent tests/data/semantic_heldout.yaml,
whose pairs are never printed (aggregate counts only). Then the retrieval scope end to end
(another --where or k is a miss) and the reused question on a hit.
"""

import pytest
from semantic_pairs import DEV, evaluate, load_heldout

from llmctl.config import CacheConfig, load_config
from llmctl.datadir import DataDir
from llmctl.llm.cache import CacheHit, ResponseCache, guard, question_tokens
from llmctl.search.pipeline import QueryOptions, run_query
from llmctl.search.retrieve import Retriever

THRESHOLD = CacheConfig().semantic_threshold
RECALL_FLOOR = 0.4  # measured 0.53 (dev-tune), 0.65 (dev-check): a floor well below, so it can fail
# Measured once, 7/60 = 0.117: the held-out paraphrases are mostly rewordings (other words or
# order) that a cache erring toward a miss refuses. The floor only catches a cache that serves none.
HELDOUT_RECALL_FLOOR = 0.05


def _report(name: str, got: dict) -> None:
    print(f"\nsemantic cache {name}: wrong hits {got['wrong_hits']}/{got['near_misses']}, paraphrases "
          f"served {got['paraphrases_served']}/{got['paraphrases']} (recall {got['paraphrase_recall']})")


@pytest.mark.parametrize("name", sorted(DEV))
def test_dev_pairs_have_no_wrong_hits(tmp_path, embedder, name):
    near, para = DEV[name]
    got = evaluate(embedder, near, para, tmp_path, THRESHOLD)
    _report(name, got)
    assert got["near_misses_above_threshold"] >= 25  # the embeddings alone would serve these
    assert got["wrong_hits"] == 0, got["wrong_hits_by_category"]
    assert got["paraphrase_recall"] >= RECALL_FLOOR


def test_heldout_pairs_have_no_wrong_hits(tmp_path, embedder):
    heldout = load_heldout()
    if heldout is None:
        pytest.skip("tests/data/semantic_heldout.yaml is not there")
    near, para = heldout
    got = evaluate(embedder, near, para, tmp_path, THRESHOLD)
    _report("held-out", got)  # counts only: the held-out pairs stay unseen
    assert got["wrong_hits"] == 0, got["wrong_hits_by_category"]
    assert got["paraphrase_recall"] >= HELDOUT_RECALL_FLOOR


@pytest.mark.parametrize("cached, new", [
    ("How do I back up to an external disk?", "How do I back up from an external disk?"),
    ("How do I restore a Linux backup on Windows?", "How do I restore a Windows backup on Linux?"),
    ("Is compression applied before encryption?", "Is encryption applied before compression?"),
    ("Can I keep 7 daily and 4 weekly snapshots?", "Can I keep 4 daily and 7 weekly snapshots?"),
    ("Can you decrypt my backups?", "Can I decrypt my backups?"),
    ("How do I resolve the hostname?", "How do I fix the hostname?"),
    ("How do I remove a disk?", "How do I erase a disk?"),
    ("What does the operator do?", "What does the operation do?"),
    ("Is the bandwidth capped at 100 Mbps?", "Is the bandwidth capped at 100 MBps?"),
    ("Why is the backup running?", "Why is the backup not running?"),
    ("Is Windows supported?", "Is Windows supported on ARM?"),
    # signs and operators are meaning (a stranger's probe got these served at 0.956-0.997)
    ("How many are kept if keep_daily is set to 1?", "How many are kept if keep_daily is set to -1?"),
    ("What happens if keep_daily = 0?", "What happens if keep_daily != 0?"),
    ("What if keep_weekly is .5?", "What if keep_weekly is 5?"),
    ("What if keep_daily = 30 * 2?", "What if keep_daily = 30 - 2?"),
    ("What if keep_daily = 30 * 2?", "What if keep_daily = 30 2?"),
    # ... any symbol, not a list of them (the re-probe's variants of the list above)
    ("What if x is 1e-5?", "What if x is 1e5?"), ("Is it \u22121?", "Is it 1?"), ("Is it \u20131?", "Is it 1?"),
    ("What is 14 \u00d7 2?", "What is 14 \u00f7 2?"), ("Keep \u2265 30 days?", "Keep \u2264 30 days?"),
    ("Is x \u2260 14?", "Is x \u2248 14?"), ("What is 10\u00b2?", "What is 102?"),
    ("What is (2 + 3) * 4?", "What is 2 + (3 * 4)?"), ("Mbps limit?", "MBps limit?"),
])
def test_guard_refuses_what_a_set_of_words_cannot_see(cached, new):
    assert guard(new, cached) is not None


@pytest.mark.parametrize("cached, new", [
    ("How do I reset my password?", "how can I reset my password"),
    ("Please tell me how to export a report.", "How do I export a report?"),
    ("What's the maximum file size?", "What is the max file size?"),
    ("Can I back up to Azure?", "Is it possible to back-up to Azure?"),
    ("Can I keep seven daily snapshots?", "Can I keep 7 daily snapshots?"),
    ("How do I turn on compression?", "How do I enable compression?"),
    ("Which ports does the daemon use?", "What ports does the daemon use?"),
    ("Is it on?!", "Is it on?"),
])
def test_guard_lets_safe_rewordings_through(cached, new):
    assert guard(new, cached) is None, (question_tokens(cached), question_tokens(new))


def test_the_chunk_set_is_part_of_the_key(tmp_path, embedder):
    cache = ResponseCache(tmp_path / "cache.sqlite")
    q = "How many daily snapshots are kept?"
    vec = embedder.embed_query(q)
    cache.put("k", "scope", 0.0, 3600, CacheHit("k", "exact", "14", "p", "m", {}, 0.0, []), ["a", "b"], q, vec)
    assert cache.get_semantic(vec, q, "scope", THRESHOLD, 1.0, chunk_ids=["a"])[0] is None
    assert cache.get_semantic(vec, q, "scope", THRESHOLD, 1.0, chunk_ids=["a", "b", "c"])[0] is None
    assert cache.get_semantic(vec, q, "other scope", THRESHOLD, 1.0, chunk_ids=["a", "b"])[0] is None
    hit = cache.get_semantic(vec, q.upper(), "scope", THRESHOLD, 1.0, chunk_ids=["b", "a", "b"])[0]
    assert hit is not None and hit.kind == "semantic" and hit.question == q
    cache.close()


# -- end to end: run_query with a fake model, the sample index and the real embedder ----------
@pytest.fixture
def setup(tmp_path, sample_index, embedder, fake_llm):
    cfg = load_config(None, {
        "data_dir": str(sample_index), "rerank.enabled": False, "llm.cache.semantic": True,
        "llm.providers": [{"name": "local", "base_url": fake_llm.base_url, "model": "fake-model",
                           "context_window": 4096}],
    })
    # the sample index, read from a data dir of its own: a fresh cache and ledger
    retriever = Retriever(cfg, DataDir(tmp_path, DataDir(sample_index).index), embedder)
    yield cfg, retriever, fake_llm
    retriever.close()


QUESTION = "How many daily snapshots does the default retention policy keep?"


def test_a_hit_exposes_the_question_it_reused(setup):
    from openai_server import Reply

    cfg, retriever, llm = setup
    llm.script.append(Reply(text="The default policy keeps 14 daily snapshots [1]."))
    first = run_query(QUESTION, cfg, QueryOptions(k=3), retriever=retriever)
    assert first.completion.cache is None and first.to_dict()["cached_question"] is None
    again = "Hi, how many daily snapshots does the default retention policy keep, please?"
    second = run_query(again, cfg, QueryOptions(k=3), retriever=retriever)
    assert len(llm.requests) == 1
    d = second.to_dict()
    assert d["cache"] == "semantic" and d["cached_question"] == QUESTION
    assert any(QUESTION in w and "semantic cache" in w for w in d["warnings"])  # stderr on the CLI
    assert [c.location() for c in second.citations] == [c.location() for c in first.citations]


@pytest.mark.parametrize("opts", [QueryOptions(k=3, where=["ext=rst"]), QueryOptions(k=2), QueryOptions(k=6)],
                         ids=["where", "fewer k", "more k"])
def test_the_same_question_with_another_retrieval_scope_is_a_miss(setup, opts):
    from openai_server import Reply

    cfg, retriever, llm = setup
    llm.script.extend([Reply(text="First answer [1]."), Reply(text="Second answer [1].")])
    run_query(QUESTION, cfg, QueryOptions(k=3), retriever=retriever)
    # the same words (a paraphrase the guard accepts), other filters or k: other chunks, so a miss
    other = run_query(QUESTION.replace("How many", "how many").rstrip("?"), cfg, opts, retriever=retriever)
    assert other.completion.cache is None and other.completion.text == "Second answer [1]."
    assert len(llm.requests) == 2
