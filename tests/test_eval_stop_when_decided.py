"""`llmctl eval --stop-when-decided` end to end: the CLI in this process, answers from the loopback
OpenAI-speaking server, calls counted at the server and in the ledger."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
from cli import invoke, write_trusted

CASES = 20


def _suite(tmp_path, base_url, min_pass_rate):
    """CASES answer cases about one fact, each its own question (no response-cache hits between
    them); one answer in flight at a time, so the calls a stop saves are exact."""
    suite = {"name": "stopping", "min_pass_rate": min_pass_rate, "seed": 3,
             "config": {"rerank": {"enabled": False}, "llm": {"concurrency": 1, "providers": [
                 {"name": "local", "base_url": base_url, "model": "m", "retries": 0}]}},
             "cases": [{"id": f"snap-{k:02d}", "query": f"How many daily snapshots are kept (variant {k})?",
                        "expected": ["guides/retention-policies.md"], "answer": {"contains": ["14"]}}
                       for k in range(CASES)]}
    path = tmp_path / f"suite-{min_pass_rate}.yaml"
    write_trusted(path, suite)
    return path


def _eval(fake_llm, data, suite, out, *flags):
    before = len([r for r in fake_llm.requests if r["path"].endswith("/chat/completions")])
    r = invoke("--data-dir", data, "eval", "-q", suite, "--json-file", out, *flags)
    calls = len([r for r in fake_llm.requests if r["path"].endswith("/chat/completions")]) - before
    db = sqlite3.connect(data / "ledger.sqlite")
    try:
        rows = db.execute("SELECT count(*) FROM calls WHERE command = 'eval' AND status = 'ok'").fetchone()[0]
    finally:
        db.close()
    return r, json.loads(out.read_text()), calls, rows


@pytest.mark.parametrize(("answer", "code"), [("It keeps 14 daily snapshots [1].", 0),
                                              ("It keeps 7 daily snapshots [1].", 9)])
def test_a_clear_verdict_stops_early_and_agrees_with_the_full_run(tmp_path, data, fake_llm, answer, code):
    fake_llm.default_text = answer  # every answer right (a clear pass) or every one wrong (a clear failure)
    suite = _suite(tmp_path, fake_llm.base_url, 0.5)
    full_data = tmp_path / "full-data"
    shutil.copytree(data, full_data)  # its own ledger and response cache: the full run asks every case

    r, stopped, calls, rows = _eval(fake_llm, data, suite, tmp_path / "stopped.json", "--stop-when-decided")
    assert r.returncode == code, r.stdout + r.stderr
    s = stopped["sequential"]
    assert s["decided"] == ("pass" if code == 0 else "fail") and s["by"] == "min_pass_rate"
    assert s["of"] == CASES and s["calls_full_run"] == CASES
    # it stopped spending: fewer answer calls than cases, every one of them at the server and in the ledger
    assert calls == rows == s["answered_cases"] < CASES
    assert s["answered_cases"] <= CASES // 2 + 2  # the exact bound alone decides by case 11; one more in flight
    assert s["calls_saved"] == CASES - s["answered_cases"] == s["stopped_cases"] > 0
    statuses = [c["answer_status"] for c in stopped["cases"]]
    assert statuses.count("stopped") == s["stopped_cases"]
    assert f"{s['calls_saved']} of {CASES} answer calls saved" in r.stdout
    # retrieval is free: every case is still scored
    assert all(c["metrics"] for c in stopped["cases"])

    r_full, full, calls_full, rows_full = _eval(fake_llm, full_data, suite, tmp_path / "full.json")
    assert calls_full == rows_full == CASES and full["sequential"] is None
    assert r_full.returncode == r.returncode  # the same verdict
    assert full["answer_gate"]["passed"] == stopped["answer_gate"]["passed"] == (code == 0)
    assert [c["metrics"] for c in full["cases"]] == [c["metrics"] for c in stopped["cases"]]


def test_a_verdict_only_the_last_case_can_settle_asks_every_case(tmp_path, data, fake_llm):
    """min_pass_rate 1.0 with every answer right: until the last one, a failure could still fail
    the run, so nothing is saved."""
    fake_llm.default_text = "It keeps 14 daily snapshots [1]."
    suite = _suite(tmp_path, fake_llm.base_url, 1.0)
    r, report, calls, rows = _eval(fake_llm, data, suite, tmp_path / "r.json", "--stop-when-decided")
    assert r.returncode == 0, r.stdout + r.stderr
    s = report["sequential"]
    assert calls == rows == s["answered_cases"] == CASES
    assert s["calls_saved"] == 0 and s["stopped_cases"] == 0 and s["decided"] == "pass"
    assert s["tests"]["min_pass_rate"]["seen"] == CASES
    assert "stopped" not in [c["answer_status"] for c in report["cases"]]
    assert f"0 of {CASES} answer calls saved" in r.stdout
