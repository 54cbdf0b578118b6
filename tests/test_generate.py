"""llmctl generate: a suite from the index with the model (the loopback server), every drop explained."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
import yaml
from cli import assert_clean_error, invoke
from conftest import REPO
from openai_server import Reply

from llmctl.evals.generate import clean_question, sample

REASONS = ("passage too short", "no usable question", "copies the passage", "ambiguous",
           "duplicate of a kept question", "surplus")



def respond(body) -> Reply:
    """A deterministic 'model': the reply depends on the passage only (requests arrive in any order)."""
    passage = body["messages"][-1]["content"]
    words = re.findall(r"[A-Za-z]{4,}", passage)
    if len(passage) % 4 == 0:  # copies the passage's own words
        return Reply(text=" ".join(words[:10]) + "?")
    if len(passage) % 4 == 1:
        return Reply(text="Here are some questions:\n1. What?\n2. Why?")
    longest = sorted(set(w.lower() for w in words), key=lambda w: (-len(w), w))[:2]  # its most telling words
    return Reply(text=f"Where is {longest[0]} explained together with {longest[1]}?")


def config(tmp_path, fake_llm) -> Path:
    path = tmp_path / "llmctl.yaml"
    path.write_text(yaml.safe_dump({"llm": {"providers": [{
        "name": "local", "base_url": fake_llm.base_url, "model": "m",
        "price_input_per_1m": 1.0, "price_output_per_1m": 1.0}]}}))
    return path


def generate(data, cfg, *args):
    return invoke("--config", cfg, "--data-dir", data, "generate", "-q", *map(str, args), cwd=REPO)


def test_generated_suite_runs_in_eval_and_every_candidate_is_kept_or_dropped_with_a_reason(tmp_path, data, fake_llm):
    fake_llm.responder = respond
    cfg = config(tmp_path, fake_llm)
    out = tmp_path / "one" / "suite.yaml"
    out.parent.mkdir()
    r = generate(data, cfg, "--cases", 4, "--output", out, "--seed", 3, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["cases"] == 4 == len(report["kept"]) and report["requested"] == 4
    assert report["cost_usd"] > 0
    dropped = report["dropped_candidates"]
    assert len(dropped) == report["dropped"] == sum(report["drop_reasons"].values())
    assert {"copies the passage", "no usable question"} <= set(report["drop_reasons"])
    assert all(c["dropped"].startswith(REASONS) for c in dropped)
    asked = len(fake_llm.requests)
    too_short = report["drop_reasons"].get("passage too short", 0)
    assert asked + too_short == len(report["kept"]) + len(dropped)  # nothing vanished

    db = sqlite3.connect(data / "manifest.sqlite")
    source = dict(db.execute("SELECT c.id, f.source FROM chunks c JOIN documents d ON d.num = c.doc "
                             "JOIN files f ON f.path = d.path"))
    ledger = sqlite3.connect(data / "ledger.sqlite").execute(
        "SELECT COUNT(*) FROM calls WHERE command = 'generate'").fetchone()[0]
    db.close()
    assert ledger == asked
    suite = yaml.safe_load(out.read_text())
    assert [c["query"] for c in suite["cases"]] == [k["question"] for k in report["kept"]]
    for case, kept in zip(suite["cases"], report["kept"], strict=True):
        assert case["expected"] == [source[kept["chunk"]]]  # the chunk's own document, by construction
    assert len({c["query"].lower() for c in suite["cases"]}) == 4

    e = invoke("--data-dir", data, "eval", "-q", out, "--json", cwd=REPO)
    assert e.returncode in (0, 9), e.stderr  # a valid suite: only its quality can fail it
    assert len(json.loads(e.stdout)["cases"]) == 4

    again = tmp_path / "two" / "suite.yaml"
    again.parent.mkdir()
    assert generate(data, cfg, "--cases", 4, "--output", again, "--seed", 3).returncode == 0
    assert again.read_text() == out.read_text()  # same seed, same suite
    other = tmp_path / "other.yaml"
    assert generate(data, cfg, "--cases", 4, "--output", other, "--seed", 4).returncode == 0
    assert yaml.safe_load(other.read_text())["cases"] != suite["cases"]


def test_generate_refuses_without_a_model_or_over_an_existing_file(tmp_path, data, fake_llm):
    r = invoke("--data-dir", data, "generate", "-q", "--output", tmp_path / "s.yaml", cwd=REPO)
    assert_clean_error(r, 7, "needs a model", "llm.providers")
    existing = tmp_path / "mine.yaml"
    existing.write_text("name: hand-written\n")
    r = generate(data, config(tmp_path, fake_llm), "--output", existing)
    assert_clean_error(r, 4, str(existing), "--force")
    assert existing.read_text() == "name: hand-written\n" and not fake_llm.requests


def test_sampling_is_stratified_by_document_and_seeded():
    rows = [(f"{d}:{i}", d, f"{d}.md", "text") for d in "abcde" for i in range(4 if d == "a" else 1)]
    first = sample(rows, seed=1)
    assert len({c.doc_id for c in first[:5]}) == 5  # one chunk of every document before a second one
    assert [c.chunk_id for c in sample(rows, seed=1)] == [c.chunk_id for c in first]
    assert [c.chunk_id for c in sample(rows, seed=2)] != [c.chunk_id for c in first]
    records = sample([("c1", "corpus.jsonl#4983", "corpus.jsonl", "t")], seed=0)
    assert records[0].expected == "4983"  # a record is named by its id


@pytest.mark.parametrize("reply, question", [
    ("How do I restore a snapshot?", "How do I restore a snapshot?"),
    ('Question: "What does retention keep?"', "What does retention keep?"),
    ("1. Which port does the agent use?", "Which port does the agent use?"),
    ("What?", None),
    ("It keeps fourteen snapshots.", None),
    ("Q1?\nQ2?", None),
    ("", None),
])
def test_clean_question(reply, question):
    assert clean_question(reply) == question


def test_a_model_that_writes_no_question_stops_early_and_writes_nothing(tmp_path, data, fake_llm):
    fake_llm.default_text = "Sure! Here is a summary of the passage."
    out = tmp_path / "suite.yaml"
    r = generate(data, config(tmp_path, fake_llm), "--cases", 4, "--output", out, "--json")
    assert r.returncode == 7 and not out.exists()
    assert r.stderr.strip().startswith("Error: No question survived") and "nothing was written" in r.stderr
    report = json.loads(r.stdout)  # every candidate's reason, before the error
    assert report["cases"] == 0 and report["stopped"] == "stopped after 12 candidates (3 per requested case)"
    assert report["dropped"] == 12 and len(fake_llm.requests) <= 12
    assert set(report["drop_reasons"]) <= {"no usable question", "passage too short"}
