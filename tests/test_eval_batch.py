"""eval --batch against the loopback server's files and batches endpoints: items, failures, expiry,
a failed job, and a run killed while its job was in progress that resumes instead of paying twice."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

from cli import assert_gate_failed, child_env, invoke, write_trusted
from conftest import REPO
from openai_server import Reply

QUESTIONS = {"snapshots": "How many daily snapshots are kept?", "price": "What does the Team edition cost?",
             "windows": "Is Windows supported?"}


def suite_file(tmp_path, fake_llm, judge=False):
    suite = {"name": "batched", "judge": judge, "config": {"rerank": {"enabled": False}, "llm": {
        "batch_poll_seconds": 0.05, "providers": [{
            "name": "paid", "base_url": fake_llm.base_url, "model": "m", "retries": 0,
            "price_input_per_1m": 2.0, "price_output_per_1m": 4.0}]}},
        "cases": [{"id": k, "query": q, "answer": {"contains": ["yes"]}} for k, q in QUESTIONS.items()]}
    path = tmp_path / "batched.yaml"
    write_trusted(path, suite)
    return path


def batch_eval(data, suite, *args):
    r = invoke("--data-dir", data, "eval", "-q", suite, "--batch", "--json", *args, cwd=REPO)
    return r, json.loads(r.stdout) if r.stdout.strip() else None


def paths(fake_llm) -> list[str]:
    return [q["path"] for q in fake_llm.requests]


def ledger(data) -> tuple[list[tuple], list[tuple]]:
    db = sqlite3.connect(data / "ledger.sqlite")
    calls = db.execute("SELECT command, status, tokens_in, tokens_out, cost_usd FROM calls ORDER BY id").fetchall()
    jobs = db.execute("SELECT id, status, requests FROM batches").fetchall()
    db.close()
    return calls, jobs


def test_answers_and_verdicts_go_as_two_jobs_at_batch_prices_and_a_failed_item_is_an_error(tmp_path, data, fake_llm):
    fake_llm.default_text = "yes [1]."
    fake_llm.on("Answer to grade:", *[Reply(text='{"faithful": true, "correct": null, "reason": "ok"}')] * 2)
    fake_llm.failing = ["What does the Team edition cost?"]
    r, report = batch_eval(data, suite_file(tmp_path, fake_llm, judge=True))
    assert_gate_failed(r, "1 case(s) failed: price")
    cases = {c["id"]: c for c in report["cases"]}
    assert cases["snapshots"]["answer_status"] == cases["windows"]["answer_status"] == "passed"
    assert [c["check"] for c in cases["snapshots"]["checks"]] == ["contains 'yes'", "judge: faithful to the sources"]
    assert cases["price"]["answer_status"] == "error"
    assert cases["price"]["error"] == "batch item failed (400): scripted item failure"
    assert not any(p.endswith("/chat/completions") for p in paths(fake_llm))  # nothing outside the jobs
    assert paths(fake_llm).count("/v1/files") == 2 and paths(fake_llm).count("/v1/batches") == 2
    calls, jobs = ledger(data)
    assert [(c[0], c[1]) for c in calls] == [("eval", "ok"), ("eval", "error"), ("eval", "ok"),
                                             ("eval-judge", "ok"), ("eval-judge", "ok")]
    for _, status, tin, tout, cost in calls:
        if status == "ok":  # half of 2 and 4 USD per 1M tokens
            assert cost == (tin * 1.0 + tout * 2.0) / 1e6 and tin > 0
    assert sorted((s, n) for _, s, n in jobs) == [("collected", 2), ("collected", 3)]


def test_expired_and_failed_jobs_make_their_cases_errors_never_passes(tmp_path, data, fake_llm):
    fake_llm.default_text = "yes [1]."
    fake_llm.batch_outcome, fake_llm.expire_after = "expired", 1
    r, report = batch_eval(data, suite_file(tmp_path, fake_llm))
    assert r.returncode == 9
    statuses = sorted((c["answer_status"], c["error"]) for c in report["cases"])
    assert statuses == [("error", "batch item failed (batch_expired): This request could not be executed "
                                  "before the completion window expired.")] * 2 + [("passed", None)]

    fake_llm.batch_outcome = "failed"
    (data / "ledger.sqlite").unlink()  # a new job, not the expired one's results
    r, report = batch_eval(data, suite_file(tmp_path, fake_llm))
    assert_gate_failed(r, "3 case(s) failed")
    assert {c["error"] for c in report["cases"]} == {
        "Batch batch_2 of provider 'paid' failed: scripted validation failure"}
    assert ledger(data)[1] == [("batch_2", "failed", 3)]


def test_a_run_killed_while_its_job_runs_resumes_the_same_job(tmp_path, data, fake_llm):
    fake_llm.default_text = "yes [1]."
    fake_llm.release.clear()  # the job stays in progress
    suite = suite_file(tmp_path, fake_llm)
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "--data-dir", str(data), "eval", "-q", str(suite),
                             "--batch", "--json"], cwd=REPO, env=child_env(None),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while sum(1 for q in fake_llm.requests if q["path"].startswith("/v1/batches/")) < 3:
            assert time.monotonic() < deadline and proc.poll() is None, "the job was never polled"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert ledger(data)[1] == [("batch_1", "submitted", 3)]  # recorded before waiting
    fake_llm.release.set()
    r, report = batch_eval(data, suite)
    assert r.returncode == 0, r.stderr
    assert [c["answer_status"] for c in report["cases"]] == ["passed"] * 3
    assert paths(fake_llm).count("/v1/batches") == 1 and paths(fake_llm).count("/v1/files") == 1  # paid once
    calls, jobs = ledger(data)
    assert len(calls) == 3 and jobs == [("batch_1", "collected", 3)]
    again, _ = batch_eval(data, suite)  # a collected job is read again: no new job, no new ledger rows
    assert again.returncode == 0 and paths(fake_llm).count("/v1/batches") == 1 and len(ledger(data)[0]) == 3


def test_a_batch_item_with_untrusted_usage_or_content_is_counted_here_or_an_error():
    from llmctl.config import ProviderConfig
    from llmctl.llm.batch import BatchItem, _settle

    provider = ProviderConfig(name="paid", base_url="http://127.0.0.1:9/v1", model="m",
                              price_input_per_1m=2.0, price_output_per_1m=4.0)

    def settle(content, usage):
        item = BatchItem([{"role": "user", "content": "How many daily snapshots are kept?"}], "q")
        body = {"choices": [{"message": {"content": content}, "finish_reason": "stop"}], "usage": usage}
        _settle(item, {"response": {"status_code": 200, "body": body}}, "completed", provider)
        return item

    bad = settle("Fourteen [1].", {"prompt_tokens": -5_000_000, "completion_tokens": 4})
    c = bad.completion  # a negative count would be a negative cost, lowering the day's spend
    assert not c.usage_reported and c.prompt_tokens > 0 and c.cost_usd > 0
    assert settle("Fourteen [1].", {"prompt_tokens": 10**20, "completion_tokens": 4}).completion.cost_usd < 1
    good = settle("Fourteen [1].", {"prompt_tokens": 100, "completion_tokens": 4}).completion
    assert good.usage_reported and good.cost_usd == (100 * 1.0 + 4 * 2.0) / 1e6  # batch: half price
    number = settle(12345, {"prompt_tokens": 100, "completion_tokens": 4})
    assert number.completion is None and "malformed" in number.error
