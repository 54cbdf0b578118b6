"""Client-side rate limits: token buckets, the server's Retry-After and x-ratelimit-* headers, and
eval answering cases concurrently under them against the loopback OpenAI server."""

from __future__ import annotations

import json

import pytest
from cli import assert_gate_failed, invoke, write_trusted
from openai_server import Reply

from llmctl.config import ProviderConfig
from llmctl.errors import ProviderError
from llmctl.llm.ratelimit import Limiter, duration, limiter_for


class Clock:
    def __init__(self):
        self.mono = 100.0

    def monotonic(self):
        return self.mono

    def sleep(self, s):
        self.mono += s


def grants(limiter: Limiter, clock: Clock, sizes: list[int]) -> list[float]:
    out = []
    for n in sizes:
        limiter.acquire(n, deadline=clock.mono + 1e6)
        out.append(round(clock.mono - 100.0, 6))
    return out


def test_requests_per_minute_allow_one_seconds_burst_then_pace():
    clock = Clock()
    times = grants(Limiter("p", 120, None, clock), clock, [1] * 6)  # 2 per second
    assert times == [0, 0, 0.5, 1.0, 1.5, 2.0]
    clock = Clock()
    assert grants(Limiter("p", 30, None, clock), clock, [1] * 3) == [0, 2.0, 4.0]  # 1 every 2 s


def test_tokens_per_minute_count_each_request_and_a_large_one_waits_for_a_full_bucket():
    clock = Clock()
    limiter = Limiter("p", None, 6000, clock)  # 100 tokens per second, bucket of 100
    # 250 > the bucket: sent when it is full, leaving a debt of 150 that the next request waits out
    assert grants(limiter, clock, [60, 250, 50]) == [0, 0.6, 2.6]


def test_a_pause_holds_every_caller_and_a_wait_past_the_deadline_is_an_error():
    clock = Clock()
    limiter = Limiter("p", None, None, clock)
    limiter.pause(3)
    assert grants(limiter, clock, [1]) == [3.0]
    limiter.pause(30)
    with pytest.raises(ProviderError, match="provider 'p' is rate limited for 30 s more, past llm.deadline"):
        limiter.acquire(1, deadline=clock.mono + 10)


def test_the_servers_remaining_and_reset_headers_pause_the_provider():
    clock = Clock()
    limiter = Limiter("p", None, None, clock)
    limiter.observe({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "1s",
                     "x-ratelimit-remaining-tokens": "9000", "x-ratelimit-reset-tokens": "6m0s"}, 800)
    assert grants(limiter, clock, [1]) == [0]  # enough left of both
    limiter.observe({"x-ratelimit-remaining-tokens": "500", "x-ratelimit-reset-tokens": "1m30s"}, 800)
    assert grants(limiter, clock, [1]) == [90.0]  # a request like the last one would not fit
    assert [duration(v) for v in ("20ms", "59.5s", "6m0s", "1h2m", "3", "soon", "", None)] == [
        0.02, 59.5, 360.0, 3720.0, 3.0, None, None, None]


def test_one_limiter_per_provider_per_clock():
    p = ProviderConfig(name="a", base_url="http://x/v1", model="m", requests_per_minute=60)
    clock, other = Clock(), Clock()
    assert limiter_for(p, clock) is limiter_for(p.model_copy(), clock)
    assert limiter_for(p, other) is not limiter_for(p, clock)
    assert limiter_for(p.model_copy(update={"model": "n"}), clock) is not limiter_for(p, clock)


# -- eval, concurrently, against the loopback server --------------------------------------------------

QUESTIONS = [f"Question number {i}: how many daily snapshots are kept?" for i in range(12)]



def answer_suite(tmp_path, fake_llm, questions, *, concurrency, retries=2, **provider):
    suite = {"name": "answers", "config": {"rerank": {"enabled": False}, "llm": {
        "concurrency": concurrency, "cache": {"enabled": False}, "backoff_base": 0.2,
        "providers": [{"name": "local", "base_url": fake_llm.base_url, "model": "m", "retries": retries,
                       "price_input_per_1m": 0, "price_output_per_1m": 0, **provider}]}},
        "cases": [{"id": f"q{i}", "query": q, "answer": {"contains": ["14"]}} for i, q in enumerate(questions)]}
    path = tmp_path / "answers.yaml"
    write_trusted(path, suite)
    return path


def run_eval(data, path, *args):
    r = invoke("--data-dir", data, "eval", "-q", path, "--json", *args)
    return r, (json.loads(r.stdout) if r.stdout.strip() else None)


def test_cases_are_answered_concurrently_within_the_configured_request_rate(tmp_path, data, fake_llm):
    fake_llm.default_text = "It keeps 14 daily snapshots [1]."
    fake_llm.script.extend(Reply(text=fake_llm.default_text, delay=0.4) for _ in QUESTIONS)
    path = answer_suite(tmp_path, fake_llm, QUESTIONS, concurrency=4, requests_per_minute=240)  # 4 per second
    r, report = run_eval(data, path)
    assert r.returncode == 0, r.stderr
    assert [c["answer_status"] for c in report["cases"]] == ["passed"] * len(QUESTIONS)
    assert 2 <= fake_llm.max_in_flight <= 4
    arrivals = sorted(req["at"] for req in fake_llm.requests)
    assert len(arrivals) == len(QUESTIONS)
    # a bucket of one second (4 requests) refilled at 4 per second; one request of slack for the
    # time between the client's send and the server's clock
    for i in range(len(arrivals)):
        for j in range(i + 1, len(arrivals)):
            assert j - i + 1 <= 4 + 4 * (arrivals[j] - arrivals[i]) + 1, (i, j, arrivals)


def test_a_429_pauses_every_worker_for_its_retry_after(tmp_path, data, fake_llm):
    fake_llm.default_text = "It keeps 14 daily snapshots [1]."
    fake_llm.script.append(Reply(kind="status", status=429, headers={"Retry-After": "2"}))
    fake_llm.script.append(Reply(text=fake_llm.default_text, delay=0.5))
    r, report = run_eval(data, answer_suite(tmp_path, fake_llm, QUESTIONS[:5], concurrency=2))
    assert r.returncode == 0, r.stderr
    assert [c["answer_status"] for c in report["cases"]] == ["passed"] * 5  # the limited case was retried
    limited, other, *later = sorted(fake_llm.requests, key=lambda q: q["at"])  # the first one got the 429
    # every request after the two sent at once, the retry included, waited for the Retry-After
    assert len(later) == 4 and all(q["at"] >= limited["done"] + 1.95 for q in later), (
        [q["at"] - limited["done"] for q in later])


def test_exhausted_rate_limit_retries_make_the_case_an_error_never_a_pass(tmp_path, data, fake_llm):
    fake_llm.default_text = "It keeps 14 daily snapshots [1]."
    fake_llm.on("Question number 1:", *[Reply(kind="status", status=429, headers={"Retry-After": "0.1"})] * 2)
    r, report = run_eval(data, answer_suite(tmp_path, fake_llm, QUESTIONS[:3], concurrency=3, retries=1))
    assert_gate_failed(r, "1 case(s) failed: q1")
    status = {c["id"]: (c["answer_status"], c["error"]) for c in report["cases"]}
    assert status["q0"] == status["q2"] == ("passed", None)
    assert status["q1"][0] == "error" and "rate limiting (HTTP 429)" in status["q1"][1]
    assert {k: report["answers"][k] for k in ("passed", "error", "concurrency")} == {
        "passed": 2, "error": 1, "concurrency": 3}


def test_a_spent_request_quota_in_the_headers_holds_the_next_request(tmp_path, data, fake_llm):
    fake_llm.default_text = "It keeps 14 daily snapshots [1]."
    fake_llm.script.append(Reply(text=fake_llm.default_text, headers={
        "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"}))
    r, report = run_eval(data, answer_suite(tmp_path, fake_llm, QUESTIONS[:3], concurrency=1))
    assert r.returncode == 0, r.stderr
    first, second, third = sorted(fake_llm.requests, key=lambda q: q["at"])
    assert second["at"] >= first["done"] + 1.45
