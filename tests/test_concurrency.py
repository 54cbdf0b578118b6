"""Several processes at once: readers (this process) during an ingest, two ingests, two ledger/cache writers."""

import json
import random
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from cli import child_env, invoke
from consistency import assert_consistent
from crash_trials import Corpus

from llmctl.config import load_config
from llmctl.datadir import DataDir
from llmctl.errors import LlmctlError
from llmctl.search.pipeline import QueryOptions, run_query
from llmctl.search.retrieve import Retriever

QUESTIONS = ["restore snapshot policy", "repository key daemon", "Document 7", "prune schedule"]


@pytest.mark.slow
def test_readers_during_an_ingest_see_a_whole_index_and_two_ingests_queue(tmp_path, embedder):
    corpus = Corpus(tmp_path / "docs", random.Random(3), n_docs=60, words=(40, 120))
    data = tmp_path / "data"
    first = invoke("ingest", "-q", corpus.root, env={"LLMCTL_DATA_DIR": str(data)})
    assert first.returncode == 0, first.stderr
    old_ids = assert_consistent(data)["manifest"]
    for _ in range(2):
        corpus.mutate()  # many rewritten documents: the next ingest embeds, commits and deletes

    env = {"LLMCTL_DATA_DIR": str(data), "LLMCTL_INGEST__COMMIT_EVERY": "8"}
    cmd = [sys.executable, "-m", "llmctl", "ingest", "-q", "--wait", "600", str(corpus.root)]
    full_env = child_env(env)
    writers = [subprocess.Popen(cmd, env=full_env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    cfg = load_config(None, {"data_dir": str(data), "rerank.enabled": False})
    served, errors, while_writing = 0, [], 0
    deadline = time.monotonic() + 600
    while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
        for q in QUESTIONS:
            try:
                result = run_query(q, cfg, QueryOptions(use_llm=False, k=8), retriever=Retriever(cfg, DataDir(data)))
            except LlmctlError as exc:
                errors.append(str(exc))
                continue
            served += 1
            for h in result.hits:  # every hit is a whole, committed chunk with its text and source
                if not (h.chunk.get("text") and h.source):
                    errors.append(f"broken hit {h.id}")
        while_writing += 1
        time.sleep(0.25)  # readers, not a busy loop: the ingests need the cores
    outs = [w.communicate()[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], outs  # the second waited for the first
    assert errors == [] and served >= 8 and while_writing >= 2, (errors, served, while_writing)
    state = assert_consistent(data)
    assert state["manifest"] != old_ids

    # eval while an ingest runs: it finishes with metrics from one consistent index
    corpus.mutate()
    suite = tmp_path / "suite.yaml"
    suite.write_text(json.dumps({"name": "c", "metrics": ["hit@5"], "cases": [
        {"id": f"q{i}", "query": q} for i, q in enumerate(QUESTIONS)]}))
    writer = subprocess.Popen(cmd, env=full_env, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    r = invoke("--data-dir", data, "eval", "-q", suite, "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["cases"]) == len(QUESTIONS)
    assert writer.wait(600) == 0, writer.stderr.read()
    assert_consistent(data)


WRITER = textwrap.dedent("""
    import random, sys
    from pathlib import Path
    from llmctl.config import LLMConfig
    from llmctl.datadir import DataDir
    from llmctl.llm.gateway import Gateway
    base_url, data, who, n = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    llm = LLMConfig.model_validate({"providers": [{"name": "main", "base_url": base_url, "model": "m",
                                                   "retries": 0, "price_input_per_1m": 1.0}]})
    gw = Gateway(llm, DataDir(data), rng=random.Random(0))
    for i in range(n):
        q = f"question {i} from writer {who}"
        gw.complete([{"role": "user", "content": q}], question=q, chunk_ids=[f"c{who}{i}"],
                    sources=[{"n": 1, "location": "a.md:1"}])
    gw.close()
""")


def test_two_processes_write_ledger_and_cache_at_once_without_losing_rows(tmp_path, fake_llm):
    n = 40
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, fake_llm.base_url, str(tmp_path), who, str(n)],
                              stderr=subprocess.PIPE, text=True) for who in ("a", "b")]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert len(fake_llm.requests) == 2 * n
    ledger = sqlite3.connect(tmp_path / "ledger.sqlite")
    rows = ledger.execute("SELECT question, status FROM calls").fetchall()
    assert len(rows) == 2 * n and {s for _, s in rows} == {"ok"}
    assert len({q for q, _ in rows}) == 2 * n
    cache = sqlite3.connect(tmp_path / "cache.sqlite")
    assert cache.execute("SELECT count(*) FROM entries").fetchone()[0] == 2 * n
    assert cache.execute("SELECT count(DISTINCT key) FROM entry_chunks").fetchone()[0] == 2 * n
