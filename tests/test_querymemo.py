"""Remembered question vectors: a repeated question needs no embedding model."""

import sqlite3

import numpy as np

from llmctl.index import querymemo
from llmctl.index.querymemo import QueryMemo


def test_remembers_per_model_and_question_and_keeps_the_newest(tmp_path, monkeypatch):
    memo = QueryMemo(tmp_path / "q.sqlite", {"model": "a"})
    assert memo.get("hello") is None  # no file yet: nothing remembered, nothing created
    assert not (tmp_path / "q.sqlite").exists()
    memo.put("hello", np.arange(4, dtype=np.float32))
    assert np.array_equal(memo.get("hello"), np.arange(4, dtype=np.float32))
    assert memo.get("hello ") is None  # the exact text only
    assert QueryMemo(tmp_path / "q.sqlite", {"model": "b"}).get("hello") is None  # another model
    monkeypatch.setattr(querymemo, "KEEP", 3)
    for i in range(600):
        memo.put(f"q{i}", np.full(4, i, dtype=np.float32))
    n = sqlite3.connect(tmp_path / "q.sqlite").execute("SELECT count(*) FROM vectors").fetchone()[0]
    assert n <= 3 + 255 and memo.get("q599") is not None  # pruned now and then, newest kept


def test_a_broken_memo_is_only_a_miss(tmp_path):
    path = tmp_path / "q.sqlite"
    path.write_bytes(b"not a database at all" * 100)
    memo = QueryMemo(path, {"model": "a"})
    assert memo.get("x") is None
    memo.put("x", np.zeros(4, dtype=np.float32))  # no exception either
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    QueryMemo(ro / "q.sqlite", {"model": "a"}).put("x", np.zeros(4, dtype=np.float32))
    ro.chmod(0o700)
