"""eval --record / --replay (a cassette of model calls) and the coverage block of every report."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import yaml
from cli import assert_clean_error, assert_gate_failed, invoke, write_trusted
from conftest import REPO
from openai_server import Reply

SUITE = REPO / "configs" / "sample-suite.yaml"



def eval_cli(data, *args, env=None):
    return invoke("--data-dir", data, "eval", "-q", *map(str, args), cwd=REPO, env=env)


def write_suite(path: Path, base_url: str, snapshots_question: str) -> Path:
    suite = {"name": "replayed", "judge": True, "config": {"rerank": {"enabled": False}, "llm": {
        "providers": [{"name": "paid", "base_url": base_url, "model": "m", "api_key_env": "LLMCTL_TEST_KEY",
                       "retries": 0, "price_input_per_1m": 1.0, "price_output_per_1m": 2.0}]}},
        "cases": [
            {"id": "snapshots", "query": snapshots_question, "expected": ["guides/retention-policies.md"],
             "answer": {"contains": ["14"]}},
            {"id": "price", "query": "What does the Team edition cost?", "answer": {"not_contains": ["free"]}},
        ]}
    write_trusted(path, suite)
    return path


def test_a_recorded_run_replays_without_keys_or_server_and_a_changed_request_is_a_case_error(
        tmp_path, data, fake_llm):
    fake_llm.on("Answer to grade:", *[Reply(text='{"faithful": true, "correct": null, "reason": "ok"}')] * 2)
    fake_llm.on("How many daily snapshots", Reply(text="14 daily snapshots [1]."))
    fake_llm.on("Team edition", Reply(text="12 dollars per seat [1]."))
    suite = write_suite(tmp_path / "s.yaml", fake_llm.base_url, "How many daily snapshots are kept?")
    tape = tmp_path / "tape.jsonl"
    recorded = eval_cli(data, suite, "--record", tape, "--json", env={"LLMCTL_TEST_KEY": "sk-test"})
    assert recorded.returncode == 0, recorded.stderr
    entries = [json.loads(line) for line in tape.read_text().splitlines()]
    assert len(entries) == 4 == len(fake_llm.requests)  # two answers, two verdicts
    assert {e["response"]["text"] for e in entries} >= {"14 daily snapshots [1].", "12 dollars per seat [1]."}
    calls = len(fake_llm.requests)
    # recording again onto the tape resumes it (an interrupted run re-run): nothing is asked twice
    again = eval_cli(data, suite, "--record", tape, "--json", env={"LLMCTL_TEST_KEY": "sk-test"})
    assert again.returncode == 0, again.stderr
    assert len(fake_llm.requests) == calls and len(tape.read_text().splitlines()) == 4
    assert [c["answer"] for c in json.loads(again.stdout)["cases"]] == [c["answer"] for c in json.loads(
        recorded.stdout)["cases"]]
    fake_llm.stop()  # replay needs neither the server nor the key

    replayed = eval_cli(data, suite, "--replay", tape, "--json")
    assert replayed.returncode == 0, replayed.stderr
    before, after = json.loads(recorded.stdout), json.loads(replayed.stdout)
    assert [(c["id"], c["answer"], c["checks"]) for c in after["cases"]] == [
        (c["id"], c["answer"], c["checks"]) for c in before["cases"]]
    assert len(fake_llm.requests) == calls
    assert before["cost_usd"] > 0 and after["cost_usd"] == 0  # a replay spends nothing
    bare = yaml.safe_load(suite.read_text())
    del bare["config"]["llm"]  # no llm.providers: the tape cannot be read (it was skipped in silence)
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump(bare))
    r = eval_cli(data, tmp_path / "bare.yaml", "--replay", tape, "--json")
    assert_clean_error(r, 3, "--replay", "needs the llm.providers entry the tape was recorded with")

    changed = write_suite(tmp_path / "s.yaml", fake_llm.base_url, "How many daily snapshots does it keep?")
    r = eval_cli(data, changed, "--replay", tape, "--json")
    assert_gate_failed(r, "1 case(s) failed: snapshots")
    cases = {c["id"]: c for c in json.loads(r.stdout)["cases"]}
    assert cases["price"]["answer_status"] == "passed"
    assert cases["snapshots"]["answer_status"] == "error"
    assert "not in the cassette tape.jsonl" in cases["snapshots"]["error"]


def test_cassette_misuse_is_a_one_line_error(tmp_path, data):
    assert_clean_error(eval_cli(data, SUITE, "--replay", tmp_path / "none.jsonl"), 4, "none.jsonl", "--record")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "k", "response": {"text": "x"}}\nnot json\n')
    assert_clean_error(eval_cli(data, SUITE, "--replay", bad), 4, "bad.jsonl:2")
    assert_clean_error(eval_cli(data, SUITE, "--replay", bad, "--record", tmp_path / "t.jsonl"), 2, "not both")


def test_coverage_counts_unretrieved_documents_and_lexical_cases(data):
    r = eval_cli(data, SUITE, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    cov = report["coverage"]
    k = cov["k"]
    db = sqlite3.connect(data / "manifest.sqlite")
    docs = {d for (d,) in db.execute("SELECT DISTINCT d.doc_id FROM chunks c JOIN documents d ON d.num = c.doc")}
    db.close()
    seen = {d for c in report["cases"] for d in c["top"][report["final_stage"]][:k]}
    assert cov["documents"] == len(docs)
    assert sorted(cov["never_retrieved"]) == sorted(docs - seen) and 0 < len(docs - seen) < len(docs)
    assert cov["never_retrieved_count"] == len(docs - seen)
    lexical = [c["id"] for c in report["cases"] if set(c["expected"]) & set(c["top"]["bm25"][:k])
               and not set(c["expected"]) & set(c["top"]["dense"][:k])]
    assert cov["bm25_only_cases"] == lexical
    assert cov["judged_cases"] == sum(1 for c in report["cases"] if c["expected"])
    said = f"{len(docs - seen)} of {len(docs)} documents are in no case's top {k}; {len(lexical)} of"
    assert said in eval_cli(data, SUITE).stdout.replace("\n", " ")


def test_a_finished_recording_keeps_exactly_its_own_requests(tmp_path):
    from llmctl.llm.cassette import Cassette
    from llmctl.llm.client import Completion

    tape = tmp_path / "t.jsonl"
    first = Cassette(tape, "record")
    for q in ("old", "kept"):
        first.record([{"role": "user", "content": q}], 0.0, 64, Completion(q.upper(), "p", "m"))
    first.finish()
    resumed = Cassette(tape, "record")  # a later run asks "kept" (from the tape) and "new" (a call)
    assert resumed.has([{"role": "user", "content": "kept"}], 0.0, 64)
    assert resumed.replay([{"role": "user", "content": "kept"}], 0.0, 64, "kept").text == "KEPT"
    resumed.record([{"role": "user", "content": "new"}], 0.0, 64, Completion("NEW", "p", "m"))
    assert len(tape.read_text().splitlines()) == 3  # interrupted here, the tape would keep all three
    resumed.finish()
    assert sorted(json.loads(line)["response"]["text"] for line in tape.read_text().splitlines()) == ["KEPT", "NEW"]
    with tape.open("a") as fh:  # killed while writing a line: the recording resumes before it
        fh.write('{"key": "cut", "respo')
    again = Cassette(tape, "record")
    assert len(again.entries) == 2 and tape.read_text().endswith("\n") and "cut" not in tape.read_text()
