"""The LLM layer against a real loopback OpenAI-protocol server, with an injected clock."""

import json
import random
import sqlite3

import pytest
from openai_server import Reply

from llmctl.config import LLMConfig
from llmctl.datadir import DataDir
from llmctl.errors import BudgetExceeded, ConfigError, IndexStateError, ProviderError
from llmctl.llm.gateway import AnswerInterrupted, Gateway
from llmctl.llm.report import cache_stats, cost_report

NOON = 1795262400.0  # 2026-11-22 12:00 UTC
MESSAGES = [{"role": "system", "content": "Answer from sources."},
            {"role": "user", "content": "<sources>...</sources>\n\nQuestion: how many daily snapshots?"}]


class FakeClock:
    def __init__(self):
        self.t = NOON
        self.mono = 1000.0
        self.sleeps: list[float] = []

    def now(self):
        return self.t

    def monotonic(self):
        return self.mono

    def sleep(self, s):
        self.sleeps.append(s)
        self.t += s
        self.mono += s
        self.mono += s


def provider(server, name="main", **kw):
    base = {"name": name, "base_url": server.base_url, "model": f"{name}-model", "timeout": 5,
            "stall_timeout": 5, "retries": 2, "context_window": 8192,
            "price_input_per_1m": 1.0, "price_output_per_1m": 2.0}
    return {**base, **kw}


@pytest.fixture
def make(tmp_path, fake_llm):
    made = []

    def build(*providers, **cfg):
        warnings: list[str] = []
        clock = FakeClock()
        llm = LLMConfig.model_validate({"providers": list(providers) or [provider(fake_llm)], **cfg})
        gw = Gateway(llm, DataDir(tmp_path), clock=clock, rng=random.Random(0), warn=warnings.append,
                     tag=cfg.pop("tag", None) if "tag" in cfg else None)
        gw.warnings, gw.fake_clock = warnings, clock
        made.append(gw)
        return gw

    yield build
    for gw in made:
        gw.close()


def ask(gw, question="how many daily snapshots?", messages=MESSAGES, on_token=None, chunks=("c1",)):
    return gw.complete(messages, question=question, chunk_ids=list(chunks),
                       sources=[{"n": 1, "location": "a.md:1-2"}], on_token=on_token)


def ledger(tmp_path):
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    return [dict(r) for r in db.execute("SELECT * FROM calls ORDER BY id")]


def test_429_with_retry_after_then_success(make, fake_llm, tmp_path):
    fake_llm.script.extend([Reply(kind="status", status=429, headers={"Retry-After": "3"}),
                            Reply(text="Fourteen [1].")])
    gw = make()
    out = ask(gw)
    assert out.text == "Fourteen [1]."
    assert gw.fake_clock.sleeps and gw.fake_clock.sleeps[0] >= 3.0
    rows = ledger(tmp_path)
    assert [(r["status"], r["error_class"], r["attempt"]) for r in rows] == [
        ("error", "rate_limit", 1), ("ok", None, 2)]
    assert rows[1]["tokens_in"] > 0 and rows[1]["usage_source"] == "provider"
    assert rows[1]["cost_usd"] == pytest.approx((rows[1]["tokens_in"] * 1 + rows[1]["tokens_out"] * 2) / 1e6)


def test_repeated_500_falls_back_to_the_next_provider(make, fake_llm, tmp_path):
    fake_llm.script.extend([Reply(kind="status", status=500), Reply(kind="status", status=503),
                            Reply(text="From the backup [1].")])
    gw = make(provider(fake_llm, "primary", retries=1), provider(fake_llm, "backup"))
    out = ask(gw)
    assert out.provider == "backup" and out.text == "From the backup [1]."
    assert [r["provider"] + ":" + r["status"] for r in ledger(tmp_path)] == [
        "primary:error", "primary:error", "backup:ok"]
    assert len(gw.fake_clock.sleeps) == 1  # one backoff between the two primary attempts
    assert any("falling back" in w for w in gw.warnings)
    assert [b["model"] for b in (r["body"] for r in fake_llm.requests)] == [
        "primary-model", "primary-model", "backup-model"]


def test_backoff_is_capped_exponential_with_jitter(make, fake_llm):
    fake_llm.script.extend([Reply(kind="status", status=502)] * 4 + [Reply(text="ok [1].")])
    gw = make(provider(fake_llm, retries=4), backoff_base=1.0, backoff_cap=3.0)
    ask(gw)
    s = gw.fake_clock.sleeps
    assert len(s) == 4
    assert 0.5 <= s[0] <= 1.0 and 1.0 <= s[1] <= 2.0 and 1.5 <= s[2] <= 3.0 and 1.5 <= s[3] <= 3.0


def test_reply_slower_than_the_timeout_is_retried(make, fake_llm, tmp_path):
    fake_llm.script.extend([Reply(text="late", delay=1.5), Reply(text="on time [1].")])
    gw = make(provider(fake_llm, timeout=0.5, stall_timeout=0.5))
    assert ask(gw).text == "on time [1]."
    assert ledger(tmp_path)[0]["error_class"] == "timeout"


def test_stalled_stream_without_a_consumer_is_retried_without_duplicates(make, fake_llm):
    fake_llm.script.extend([Reply(kind="stall", text="one two three four five", stall_after=2,
                                  stall_for=2), Reply(text="complete answer [1].")])
    gw = make(provider(fake_llm, stall_timeout=0.4))
    out = ask(gw)
    assert out.text == "complete answer [1]."
    assert out.attempts[0]["error"] == "stall"


def test_stalled_stream_after_text_was_shown_is_interrupted_not_repeated(make, fake_llm, tmp_path):
    fake_llm.script.append(Reply(kind="stall", text="one two three four five", stall_after=2, stall_for=2))
    gw = make(provider(fake_llm, stall_timeout=0.4))
    shown = []
    with pytest.raises(AnswerInterrupted) as err:
        ask(gw, on_token=shown.append)
    assert "".join(shown) == "one two" == err.value.partial
    assert len(fake_llm.requests) == 1
    assert ledger(tmp_path)[-1]["error_class"] == "stall"


def test_malformed_json_is_retried(make, fake_llm, tmp_path):
    fake_llm.script.extend([Reply(kind="bad_json"), Reply(text="fine [1].")])
    assert ask(make()).text == "fine [1]."
    assert ledger(tmp_path)[0]["error_class"] == "malformed"


def test_401_fails_fast_naming_provider_and_key(make, fake_llm, tmp_path, monkeypatch):
    monkeypatch.setenv("KESTREL_TEST_KEY", "sk-secret-do-not-log-123")
    fake_llm.script.append(Reply(kind="status", status=401))
    gw = make(provider(fake_llm, api_key_env="KESTREL_TEST_KEY"), provider(fake_llm, "backup"))
    with pytest.raises(ProviderError, match="'main' rejected the API key.*KESTREL_TEST_KEY"):
        ask(gw)
    assert len(fake_llm.requests) == 1  # no retry, no fallback
    assert fake_llm.requests[0]["headers"]["authorization"] == "Bearer sk-secret-do-not-log-123"
    for f in tmp_path.iterdir():
        assert b"sk-secret-do-not-log-123" not in f.read_bytes()


def test_missing_usage_is_estimated_and_marked(make, fake_llm, tmp_path):
    fake_llm.script.append(Reply(text="no usage here [1].", usage=False))
    out = ask(make())
    assert not out.usage_reported and out.prompt_tokens > 0 and out.completion_tokens > 0
    row = ledger(tmp_path)[-1]
    assert row["usage_source"] == "estimated" and row["cost_usd"] > 0


def test_context_length_error_moves_to_a_larger_window(make, fake_llm, tmp_path):
    too_long = {"error": {"message": "This model's maximum context length is 4096 tokens",
                          "type": "invalid_request_error", "code": "context_length_exceeded"}}
    fake_llm.script.extend([Reply(kind="status", status=400, body=too_long), Reply(text="big [1].")])
    gw = make(provider(fake_llm, "small", context_window=4096),
              provider(fake_llm, "same", context_window=4096),
              provider(fake_llm, "large", context_window=32768))
    out = ask(gw)
    assert out.provider == "large"
    assert {"provider": "same", "skipped": "context window too small"} in out.attempts
    assert [r["error_class"] for r in ledger(tmp_path)] == ["context_length", None]


def test_bad_request_is_not_retried(make, fake_llm):
    fake_llm.script.append(Reply(kind="status", status=400))
    with pytest.raises(ProviderError, match="refused the request"):
        ask(make())
    assert len(fake_llm.requests) == 1


def test_unknown_price_is_unknown_never_zero(make, fake_llm, tmp_path):
    gw = make(provider(fake_llm, price_input_per_1m=None, price_output_per_1m=None))
    out = ask(gw)
    assert out.cost_usd is None and ledger(tmp_path)[-1]["cost_usd"] is None
    assert any("no price configured" in w for w in gw.warnings)
    report = cost_report(DataDir(tmp_path), gw.cfg, None, None, NOON)
    assert report["totals"]["unknown_cost_calls"] == 1
    assert report["by"]["provider"]["main"]["unknown_cost_calls"] == 1
    # --json and --csv too: null, not a cost of 0 (the terminal already said "unknown")
    assert report["totals"]["cost_usd"] is None and report["by"]["provider"]["main"]["cost_usd"] is None
    from llmctl import render

    with render.stdout.capture() as shown:
        render.cost_report(report)
    text = shown.get()
    tables = text.split("\n", 2)[2].split("Budget daily")[0]  # after the totals, before the budget lines
    assert "$0.00" not in tables, text  # the tables and per-day lines say "unknown"
    assert text.count("unknown") >= 1 + len(report["by"]["day"]) + 3, text


def test_deadline_stops_retries(make, fake_llm):
    fake_llm.script.extend([Reply(kind="status", status=429, headers={"Retry-After": "100"})])
    with pytest.raises(ProviderError, match=r"next retry \(100 s away\) would pass llm.deadline \(30 s\).*HTTP 429"):
        ask(make(deadline=30))


def test_an_answer_costs_the_cut_attempts_before_it_too(make, fake_llm, tmp_path):
    fake_llm.script.extend([Reply(kind="cut", text="one two three four", stall_after=2),
                            Reply(text="Fourteen daily snapshots [1].")])
    gw = make(provider(fake_llm, retries=1))
    out = ask(gw)
    rows = ledger(tmp_path)
    assert [r["status"] for r in rows] == ["error", "ok"] and rows[0]["cost_usd"] > 0
    assert out.cost_usd == pytest.approx(rows[0]["cost_usd"] + rows[1]["cost_usd"])  # what the question cost
    # cost-report counts the billed failure as the budget does, in its totals and every breakdown
    report = cost_report(DataDir(tmp_path), gw.cfg, None, None, NOON)
    assert report["totals"]["cost_usd"] == pytest.approx(out.cost_usd)
    assert report["budget"]["daily"]["spent_usd"] == pytest.approx(out.cost_usd)
    assert report["by"]["provider"]["main"]["cost_usd"] == pytest.approx(out.cost_usd)


def test_a_reader_that_goes_away_mid_answer_still_leaves_the_billed_call_in_the_ledger(make, fake_llm, tmp_path):
    fake_llm.script.append(Reply(text="Fourteen daily snapshots are kept [1]."))
    got: list[str] = []

    def closed_pipe(token: str) -> None:  # `llmctl query ... | head -c 3`, or a serve client that hung up
        got.append(token)
        if len(got) == 2:
            raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        ask(make(), on_token=closed_pipe)
    [row] = ledger(tmp_path)
    assert row["status"] == "error" and row["error_class"] == "client_gone" and row["cost_usd"] > 0


def test_a_reader_that_goes_away_stops_the_answer_being_generated(make, fake_llm):
    """The provider's stream is closed at once, so it stops generating (and billing) the rest:
    left open, the whole answer was generated while the ledger counted the first tokens."""
    import time

    fake_llm.script.append(Reply(text=" ".join(f"word{i}" for i in range(60)), token_interval=0.05))

    def closed_pipe(token: str) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    gateway = make()
    with pytest.raises(BrokenPipeError):
        ask(gateway, on_token=closed_pipe)
    waited = 0.0
    while not fake_llm.streams and waited < 30:  # the server notices at its next write
        time.sleep(0.05)
        waited += 0.05
    assert fake_llm.streams == ["client left"]


def test_retry_after_ms_is_read_before_retry_after(make, fake_llm):
    fake_llm.script.extend([Reply(kind="status", status=429, headers={"retry-after-ms": "60000", "Retry-After": "1"})])
    with pytest.raises(ProviderError, match=r"next retry \(60 s away\)"):
        ask(make(deadline=30))


def test_a_wait_past_the_deadline_moves_on_to_the_fallback_at_once(make, fake_llm, tmp_path):
    fake_llm.script.extend([Reply(kind="status", status=503, headers={"Retry-After": "600"}),
                            Reply(text="From the backup [1].")])
    gw = make(provider(fake_llm, "primary"), provider(fake_llm, "backup"), deadline=20)
    out = ask(gw)
    assert out.provider == "backup" and out.text == "From the backup [1]."
    assert gw.fake_clock.sleeps == []  # no wait for the primary: the backup at once
    assert [(r["provider"], r["status"]) for r in ledger(tmp_path)] == [("primary", "error"), ("backup", "ok")]


def test_a_rate_limit_that_would_hold_past_the_deadline_moves_on_to_the_fallback(make, fake_llm, tmp_path):
    fake_llm.script.extend([Reply(text="From the primary [1]."), Reply(text="From the backup [1].")])
    gw = make(provider(fake_llm, "primary", requests_per_minute=1), provider(fake_llm, "backup"), deadline=10)
    assert ask(gw).provider == "primary"
    out = ask(gw, question="q2", messages=[MESSAGES[0], {"role": "user", "content": "q2"}])
    assert out.provider == "backup" and out.text == "From the backup [1]."  # not a 60 s wait, not an error
    assert [r["body"]["model"] for r in fake_llm.requests] == ["primary-model", "backup-model"]
    alone = make(provider(fake_llm, "primary", requests_per_minute=1), deadline=10)
    fake_llm.script.append(Reply(text="Once [1]."))
    ask(alone, question="q3", messages=[MESSAGES[0], {"role": "user", "content": "q3"}])
    with pytest.raises(ProviderError, match=r"rate limited for \d+ s more, past llm.deadline: raise llm.deadline"):
        ask(alone, question="q4", messages=[MESSAGES[0], {"role": "user", "content": "q4"}])


@pytest.mark.parametrize("usage", [{"prompt_tokens": -5_000_000, "completion_tokens": 3},
                                   {"prompt_tokens": "many", "completion_tokens": 3},
                                   {"prompt_tokens": 12, "completion_tokens": 2.5},
                                   {"prompt_tokens": True, "completion_tokens": 3},
                                   {"prompt_tokens": 10**20, "completion_tokens": 3}])  # does not fit the ledger
def test_usage_that_is_not_a_count_is_not_trusted(make, fake_llm, tmp_path, usage):
    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    stream = (f'data: {json.dumps({**chunk, "choices": [{"index": 0, "delta": {"content": "Fine [1]."}}]})}\n\n'
              f'data: {json.dumps({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})}\n\n'
              f'data: {json.dumps({**chunk, "choices": [], "usage": usage})}\n\ndata: [DONE]\n\n')
    fake_llm.script.append(Reply(kind="raw", raw=stream.encode()))
    out = ask(make())
    row = ledger(tmp_path)[-1]
    assert out.text == "Fine [1]." and row["status"] == "ok" and row["usage_source"] == "estimated"
    assert row["tokens_in"] > 0 and row["cost_usd"] > 0  # counted here: never a negative spend


def test_exact_cache_hit_saves_a_call_and_is_reported(make, fake_llm, tmp_path):
    fake_llm.script.append(Reply(text="cached answer [1]."))
    gw = make(provider(fake_llm), provider(fake_llm, "backup"))  # one lookup per call, not per provider
    first = ask(gw)
    second = ask(gw)
    assert second.text == first.text and second.cache == "exact"
    assert len(fake_llm.requests) == 1
    rows = ledger(tmp_path)
    assert rows[-1]["status"] == "cache_hit" and rows[-1]["saved_usd"] == pytest.approx(first.cost_usd)
    stats = cache_stats(DataDir(tmp_path), NOON)
    assert stats["entries"] == 1 and stats["hit_rate"]["exact"] == 0.5
    assert stats["saved"]["usd"] == pytest.approx(first.cost_usd)
    report = cost_report(DataDir(tmp_path), gw.cfg, None, None, NOON)
    assert report["totals"]["saved_by_cache_usd"] == pytest.approx(first.cost_usd)
    assert report["totals"]["requests"] == 2 and report["totals"]["cache_hits"] == 1


def test_time_sensitive_questions_expire_sooner_and_nondeterministic_is_not_cached(make, fake_llm):
    gw = make()
    ask(gw, question="what is the latest release?")
    gw.fake_clock.t += 2 * 3600
    assert ask(gw, question="what is the latest release?").cache is None  # 60 min TTL passed
    hot = make(temperature=0.7)
    ask(hot)
    assert ask(hot).cache is None


def test_ingest_style_invalidation_drops_entries_built_from_changed_chunks(make, fake_llm, tmp_path):
    gw = make()
    ask(gw, chunks=("c1", "c2"))
    assert gw.cache.invalidate_chunks(["c2", "zzz"]) == 1
    assert ask(gw, chunks=("c1", "c2")).cache is None
    assert cache_stats(DataDir(tmp_path), NOON)["invalidations"] == 1


def test_semantic_cache_hits_similar_questions_but_guards_false_hits(make, fake_llm, embedder):
    gw = make(cache={"semantic": True, "semantic_threshold": 0.9})
    gw.embed = embedder.embed_query

    def msgs(q):
        return [MESSAGES[0], {"role": "user", "content": f"<sources>x</sources>\n\nQuestion: {q}"}]

    ask(gw, "How many daily snapshots are kept by default?", msgs("a"))
    hit = ask(gw, "Hi, how many daily snapshots are kept by default, please?", msgs("b"))
    assert hit.cache == "semantic" and hit.similarity >= 0.9
    assert hit.cached_question == "How many daily snapshots are kept by default?"
    assert any("earlier question" in w for w in gw.warnings)
    for q in ("How many daily snapshots are not kept by default?",
              "How many daily snapshots are kept by default in 2025?",
              "How many daily snapshots are retained by default?"):  # no synonym table: a miss
        assert ask(gw, q, msgs(q)).cache is None
    other_chunks = "how many daily snapshots are kept by default"
    assert ask(gw, other_chunks, msgs(other_chunks), chunks=("c2",)).cache is None  # other sources


def test_budget_refuses_with_spend_and_limit(make, fake_llm, tmp_path):
    gw = make(provider(fake_llm, price_input_per_1m=1000.0, price_output_per_1m=1000.0),
              budget={"daily_usd": 0.6})
    ask(gw)  # ~0.014 USD spent; each call is estimated at ~0.52 (prompt + max_answer_tokens)
    with pytest.raises(BudgetExceeded, match=r"daily budget: spent \$0\.\d+ of \$0\.60") as err:
        for i in range(50):
            ask(gw, question=f"question {i}", messages=[MESSAGES[0], {"role": "user", "content": f"q{i}"}])
    assert err.value.exit_code == 8
    assert ledger(tmp_path)[-1]["status"] == "refused"


def test_budget_degrades_to_a_cheaper_provider(make, fake_llm, tmp_path):
    gw = make(provider(fake_llm, "strong", price_input_per_1m=5000.0, price_output_per_1m=5000.0),
              provider(fake_llm, "cheap", price_input_per_1m=0.1, price_output_per_1m=0.1),
              budget={"daily_usd": 1.0, "on_exceed": "cheaper"})
    assert ask(gw).provider == "cheap"
    assert any("cheaper provider 'cheap'" in w for w in gw.warnings)


def test_per_tag_budget(tmp_path, fake_llm):
    llm = LLMConfig.model_validate({"providers": [provider(fake_llm, price_input_per_1m=1000.0,
                                                           price_output_per_1m=1000.0)],
                                    "budget": {"tags": {"ci": {"daily_usd": 0.0001}}}})
    gw = Gateway(llm, DataDir(tmp_path), clock=FakeClock(), tag="ci", warn=lambda m: None)
    with pytest.raises(BudgetExceeded, match=r"daily \(tag ci\)"):
        ask(gw)
    gw.close()
    other = Gateway(llm, DataDir(tmp_path), clock=FakeClock(), tag="dev", warn=lambda m: None)
    assert ask(other).text
    other.close()
    said: list[str] = []
    Gateway(llm, DataDir(tmp_path), clock=FakeClock(), tag="CI", warn=said.append).close()
    assert said == ["tag 'CI' has no budget; llm.budget.tags has 'ci' (tags are case-sensitive)"]


def test_a_tags_budget_and_its_spend_are_in_the_cost_report(tmp_path, fake_llm):
    """Enforced, but never shown: cost-report printed only the global daily and monthly lines."""
    from llmctl import render

    llm = LLMConfig.model_validate({"providers": [provider(fake_llm, price_input_per_1m=1.0, price_output_per_1m=1.0)],
                                    "budget": {"tags": {"ci": {"daily_usd": 5.0}}}})
    gw = Gateway(llm, DataDir(tmp_path), clock=FakeClock(), tag="ci", warn=lambda m: None)
    spent = ask(gw).cost_usd
    gw.close()
    tags = cost_report(DataDir(tmp_path), llm, None, None, NOON)["budget"]["tags"]
    assert tags == {"ci": {"daily": {"spent_usd": round(spent, 10), "limit_usd": 5.0},
                           "monthly": {"spent_usd": round(spent, 10), "limit_usd": None}}}
    with render.stdout.capture() as shown:
        render.cost_report(cost_report(DataDir(tmp_path), llm, None, None, NOON))
    assert "Budget daily (tag ci): $" in shown.get() and "of $5.00" in shown.get()
    assert "monthly (tag ci)" not in shown.get()  # no limit set there: nothing to watch


def test_routing_sends_simple_questions_to_the_cheap_model(make, fake_llm, tmp_path):
    gw = make(provider(fake_llm, "strong"), provider(fake_llm, "cheap"),
              routing={"enabled": True, "simple_provider": "cheap", "complex_provider": "strong"})
    simple = ask(gw, question="What port does kestreld use?")
    complex_ = ask(gw, question="Should we compare S3 and SFTP backends for ransomware safety?",
                   messages=[MESSAGES[0], {"role": "user", "content": "other"}])
    assert simple.provider == "cheap" and simple.route["class"] == "simple"
    assert complex_.provider == "strong" and complex_.route["reason"] == "contains 'compare'"
    assert [r["route"] for r in ledger(tmp_path)] == ["simple", "complex"]


def test_prompts_can_be_kept_out_of_ledger_and_cache(make, fake_llm, tmp_path):
    gw = make(store_prompts=False)
    ask(gw, question="private question about patient 4711")
    for f in tmp_path.iterdir():
        if f.is_file():
            assert b"patient 4711" not in f.read_bytes()


def test_corrupt_cache_is_moved_aside_and_corrupt_ledger_is_explained(tmp_path, fake_llm):
    (tmp_path / "cache.sqlite").write_bytes(b"garbage" * 200)
    warnings = []
    llm = LLMConfig.model_validate({"providers": [provider(fake_llm)]})
    gw = Gateway(llm, DataDir(tmp_path), clock=FakeClock(), warn=warnings.append)
    assert ask(gw).text and "moved it to cache.sqlite.corrupt-" in warnings[0]
    gw.close()
    assert list(tmp_path.glob("cache.sqlite.corrupt-*"))[0].read_bytes() == b"garbage" * 200
    (tmp_path / "ledger.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"ledger.sqlite{suffix}").unlink(missing_ok=True)
    (tmp_path / "ledger.sqlite").write_bytes(b"not a ledger" * 200)
    with pytest.raises(IndexStateError, match=r"ledger .* is unreadable.*mv .*deleted nothing"):
        Gateway(llm, DataDir(tmp_path), clock=FakeClock())
    assert (tmp_path / "ledger.sqlite").read_bytes() == b"not a ledger" * 200


# -- issue "Trust in daily use": the LLM layer never answers the wrong question or overspends --

def test_budget_is_checked_before_every_attempt_with_that_providers_prices(make, fake_llm, tmp_path):
    # An unpriced primary that is rate limited must not open the way to a priced fallback.
    fake_llm.script.extend([Reply(kind="status", status=429)] * 2)
    gw = make(provider(fake_llm, "free", price_input_per_1m=None, price_output_per_1m=None, retries=1),
              provider(fake_llm, "paid"), budget={"daily_usd": 0.000001})
    with pytest.raises(BudgetExceeded, match=r"no price configured"):
        ask(gw)
    assert fake_llm.requests == []  # under a budget, an unpriced provider is not called at all
    # only unpriced providers: nothing was spent, the fix is a price (a config error, not "raise the limit")
    gw = make(provider(fake_llm, "free", price_input_per_1m=None, price_output_per_1m=None),
              budget={"daily_usd": 5.0})
    with pytest.raises(ConfigError, match=r"'free' has no price configured.*set price_input_per_1m") as err:
        ask(gw)
    assert "raise the limit" not in str(err.value) and fake_llm.requests == []
    assert {r["status"] for r in ledger(tmp_path)} == {"refused"}
    # A cheap primary failing into an expensive fallback: the fallback is refused, nothing is spent.
    fake_llm.script.clear()
    fake_llm.script.extend([Reply(kind="status", status=500)] * 2)
    gw = make(provider(fake_llm, "cheap", price_input_per_1m=0.01, price_output_per_1m=0.01, retries=1),
              provider(fake_llm, "dear", price_input_per_1m=5000.0, price_output_per_1m=5000.0),
              budget={"daily_usd": 0.5})
    with pytest.raises(BudgetExceeded, match=r"'dear' would add about \$2"):
        ask(gw, question="other", messages=[MESSAGES[0], {"role": "user", "content": "other"}])
    assert [r["body"]["model"] for r in fake_llm.requests] == ["cheap-model", "cheap-model"]
    rows = ledger(tmp_path)
    assert rows[-1]["status"] == "refused" and rows[-1]["provider"] == "dear"
    assert sum(r["cost_usd"] or 0 for r in rows) == 0


MALFORMED = {
    "cut JSON": b'data: {"choices":[{"delta":{"content":"br\n\ndata: [DONE]\n\n',
    "wrong types": b'data: {"id":"x","object":"chat.completion.chunk","created":0,"model":"m",'
                   b'"choices":"oops"}\n\ndata: [DONE]\n\n',
    "missing choices": b'data: {"id":"x","object":"chat.completion.chunk"}\n\ndata: [DONE]\n\n',
    "non-UTF-8 bytes": b'data: {"choices":[{"index":0,"delta":{"content":"\xff\xfe"},'
                       b'"finish_reason":null}]}\n\ndata: [DONE]\n\n',
    "empty 200 stream": b"",
    "content not text": b'data: {"id":"x","choices":[{"index":0,"delta":{"content":42},"finish_reason":null}]}'
                        b'\n\ndata: [DONE]\n\n',
    "content a list": b'data: {"id":"x","choices":[{"index":0,"delta":{"content":["a"]},"finish_reason":null}]}'
                      b'\n\ndata: [DONE]\n\n',
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_streams_are_retried_then_fall_back_with_a_ledger_row(make, fake_llm, tmp_path, case):
    fake_llm.script.extend([Reply(kind="raw", raw=MALFORMED[case])] * 2 + [Reply(text="Fine [1].")])
    gw = make(provider(fake_llm, "primary", retries=1), provider(fake_llm, "backup"))
    assert ask(gw).text == "Fine [1]."
    rows = ledger(tmp_path)
    assert [(r["provider"], r["status"], r["error_class"]) for r in rows] == [
        ("primary", "error", "malformed"), ("primary", "error", "malformed"), ("backup", "ok", None)]


def test_empty_stream_hints_at_context_window_and_a_dropped_stream_says_so(make, fake_llm, tmp_path):
    fake_llm.script.extend([Reply(kind="raw", raw=b"")])
    gw = make(provider(fake_llm, retries=0))
    with pytest.raises(ProviderError, match=r"no answer.*context_window \(8192\)"):
        ask(gw)
    fake_llm.script.extend([Reply(kind="cut", text="one two three four", stall_after=2)])
    gw = make(provider(fake_llm, retries=0))
    with pytest.raises(ProviderError, match="dropped mid-stream") as err:
        ask(gw, question="q2", messages=[MESSAGES[0], {"role": "user", "content": "q2"}])
    assert "cannot reach" not in str(err.value)
    rows = ledger(tmp_path)  # nothing came back from the empty stream; the cut one was billed
    assert rows[0]["cost_usd"] is None and rows[0]["tokens_in"] is None
    cut = rows[1]
    assert cut["tokens_in"] > 0 and cut["tokens_out"] > 0 and cut["usage_source"] == "estimated"
    assert cut["cost_usd"] == pytest.approx((cut["tokens_in"] * 1.0 + cut["tokens_out"] * 2.0) / 1e6)


def test_truncated_answer_is_flagged_and_not_cached(make, fake_llm, tmp_path):
    fake_llm.script.append(Reply(text="It keeps fourteen", finish_reason="length"))
    gw = make()
    first = ask(gw)
    assert first.truncated and first.finish_reason == "length"
    assert any("cut at llm.max_answer_tokens" in w for w in gw.warnings)
    second = ask(gw)  # asked again: a fresh call, not a cached partial answer
    assert second.cache is None and second.finish_reason == "stop"
    assert ask(gw).cache == "exact"


def test_missing_key_skips_to_a_provider_that_has_one(make, fake_llm, monkeypatch):
    monkeypatch.delenv("LLMCTL_NO_SUCH_KEY", raising=False)
    gw = make(provider(fake_llm, "keyless", api_key_env="LLMCTL_NO_SUCH_KEY"), provider(fake_llm, "local"))
    assert ask(gw).provider == "local"
    assert any("LLMCTL_NO_SUCH_KEY is not set" in w for w in gw.warnings)
