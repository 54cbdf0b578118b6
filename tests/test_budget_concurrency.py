"""Budgets hold under concurrency: before every attempt the worst case is reserved in the ledger
(one SQLite transaction, across threads and processes), settled with the real cost after the call,
released on failure, and ignored once expired (a caller killed between reserve and settle).

Every call here costs exactly its worst case (input is free, the answer is max_answer_tokens long),
so a budget of 3.5 calls lets exactly 3 through, whatever order the callers arrive in. The server
holds every admitted call in flight (``Held``) until each caller has either reached it or been
refused: with a check-then-call budget all 16 callers would get through.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import yaml
from cli import assert_clean_error, child_env
from openai_server import Reply

from llmctl.config import BudgetConfig, LLMConfig
from llmctl.datadir import DataDir
from llmctl.errors import BudgetExceeded, ProviderError
from llmctl.llm.batch import BatchItem, run_batch
from llmctl.llm.gateway import Gateway
from llmctl.llm.ledger import Ledger
from llmctl.llm.tokens import seed_tiktoken_cache
from llmctl.workspace import Workspace

MAX_TOKENS = 10
ANSWER = "one two three four five six seven eight nine ten"  # the server counts 10 completion tokens
CALL_USD = MAX_TOKENS * 1000.0 / 1e6  # output at $1000 per 1M tokens, input free: $0.01 a call
PATIENCE = 600  # seconds; only a broken run ever waits this long


class Held(Reply):
    """A reply the server sends only once ``gate`` is set. The server reads ``delay`` just before
    replying, on the request's own thread and outside its lock: waiting there keeps this call in
    flight without holding up other requests."""

    def __init__(self, gate: threading.Event, **kw):
        super().__init__(**kw)
        self.gate = gate

    @property
    def delay(self) -> float:
        self.gate.wait(PATIENCE)
        return 0.0

    @delay.setter
    def delay(self, value: float) -> None:
        pass


class Tally:
    """Counters that a test can wait on (no polling)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.counts: dict[str, int] = {}

    def add(self, name: str) -> None:
        with self.cond:
            self.counts[name] = self.counts.get(name, 0) + 1
            self.cond.notify_all()

    def wait_until(self, done, timeout: float = PATIENCE) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: done(self.counts), timeout)


def provider(server, name="paid", out_per_1m=1000.0, **kw) -> dict:
    return {"name": name, "base_url": server.base_url, "model": f"{name}-model", "retries": 0,
            "timeout": PATIENCE, "stall_timeout": PATIENCE, "context_window": 4096,
            "price_input_per_1m": 0.0, "price_output_per_1m": out_per_1m, **kw}


def llm_config(server, calls: float, *providers, **extra) -> dict:
    return {"providers": list(providers) or [provider(server)], "max_answer_tokens": MAX_TOKENS,
            "cache": {"enabled": False}, "budget": {"daily_usd": calls * CALL_USD}, **extra}


def chat_requests(server) -> list[dict]:
    return [r for r in server.requests if r["path"].endswith("/chat/completions")]


def db(folder) -> sqlite3.Connection:
    conn = sqlite3.connect(folder / "ledger.sqlite")
    conn.row_factory = sqlite3.Row
    return conn


def calls(folder) -> list[dict]:
    with db(folder) as conn:
        return [dict(r) for r in conn.execute("SELECT * FROM calls ORDER BY id")]


def reservations(folder) -> list[dict]:
    with db(folder) as conn:
        return [dict(r) for r in conn.execute("SELECT * FROM reservations")]


class Clock:
    """Real time, moved forward on demand (a reservation's expiry without waiting for it)."""

    def __init__(self):
        self.ahead = 0.0

    def now(self):
        return time.time() + self.ahead

    def monotonic(self):
        return time.monotonic()

    def sleep(self, s):
        time.sleep(s)


def ask(gw: Gateway, question: str):
    return gw.complete([{"role": "user", "content": question}], question=question, chunk_ids=[], sources=[])


def gateway(llm: dict, folder, clock=None) -> Gateway:
    return Gateway(LLMConfig.model_validate(llm), DataDir(folder), clock=clock, warn=lambda m: None)


def test_8_processes_and_8_serve_threads_get_exactly_the_3_calls_the_budget_fits(tmp_path, data, fake_llm,
                                                                                   monkeypatch):
    gate, tally = threading.Event(), Tally()
    # tiktoken's files are seeded before the race: callers seeding them at the same moment collide
    # on one temporary file name (a separate first-use race in llmctl/llm/tokens.py, not a budget one)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(DataDir(data).tiktoken))
    seed_tiktoken_cache(DataDir(data).tiktoken)

    def arrive(body):
        tally.add("arrived")
        return Held(gate, text=ANSWER)

    fake_llm.responder = arrive
    cfg = tmp_path / "llmctl.yaml"
    cfg.write_text(yaml.safe_dump({"rerank": {"enabled": False}, "llm": llm_config(fake_llm, 3.5)}))
    outcomes: list[tuple[str, object]] = []

    ws = Workspace(config_path=cfg, data_dir=data)
    ws.query("warm up", use_llm=False)  # the model loads here, not inside the race

    def serve_thread(i: int) -> None:  # what `llmctl serve` does for each POST /query
        try:  # a provider or budget error is kept on the result, as serve reports it
            outcomes.append(("thread", ws.query(f"How many daily snapshots are kept? (thread {i})").error))
        finally:
            tally.add("finished")

    def process(i: int) -> None:
        p = subprocess.Popen([sys.executable, "-m", "llmctl", "--config", str(cfg), "--data-dir", str(data),
                              "query", f"Is Windows supported? (process {i})"],
                             env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = p.communicate(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        outcomes.append(("process", subprocess.CompletedProcess(p.args, p.returncode, out, err)))
        tally.add("finished")

    workers = ([threading.Thread(target=process, args=(i,)) for i in range(8)]
               + [threading.Thread(target=serve_thread, args=(i,)) for i in range(8)])
    try:
        for w in workers:
            w.start()
        # Each caller either reaches the server (held there) or is refused; then the held ones may answer.
        everyone = tally.wait_until(lambda c: c.get("arrived", 0) + c.get("finished", 0) >= 16)
    finally:
        gate.set()
        for w in workers:
            w.join(PATIENCE)
        ws.close()
    assert everyone, tally.counts

    assert len(chat_requests(fake_llm)) == 3  # counted at the server
    rows = calls(data)
    assert [r["status"] for r in rows].count("ok") == 3
    assert [r["status"] for r in rows].count("refused") == 13
    assert sum(r["cost_usd"] or 0 for r in rows) == pytest.approx(3 * CALL_USD)
    assert reservations(data) == []  # every reservation settled or never made
    answered = 0
    for kind, got in outcomes:
        if kind == "thread":
            answered += got is None
            assert got is None or isinstance(got, BudgetExceeded) and "daily budget" in str(got), got
        elif got.returncode == 0:
            answered += 1
        else:
            assert_clean_error(got, 8, "Budget exceeded", "daily budget")
    assert len(outcomes) == 16 and answered == 3


CRASHING_CHILD = """
import json, sys
from llmctl.config import LLMConfig
from llmctl.datadir import DataDir
from llmctl.llm.gateway import Gateway
gw = Gateway(LLMConfig.model_validate(json.loads(sys.argv[1])), DataDir(sys.argv[2]))
gw.complete([{"role": "user", "content": "killed"}], question="killed", chunk_ids=[], sources=[])
"""


def test_a_caller_killed_between_reserve_and_settle_holds_the_budget_only_until_expiry(tmp_path, fake_llm):
    gate, arrived = threading.Event(), threading.Event()

    def arrive(body):
        if "killed" in json.dumps(body):
            arrived.set()
            return Held(gate, text=ANSWER)
        return Reply(text=ANSWER)

    fake_llm.responder = arrive
    llm = llm_config(fake_llm, 1.5)
    child = subprocess.Popen([sys.executable, "-c", CRASHING_CHILD, json.dumps(llm), str(tmp_path)],
                             env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert arrived.wait(PATIENCE), "the child never called the model"
        os.kill(child.pid, signal.SIGKILL)  # after its reservation, before any settle
        child.wait(PATIENCE)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        gate.set()
    [held] = reservations(tmp_path)
    assert held["cost_usd"] == pytest.approx(CALL_USD) and held["expires"] > time.time()

    clock = Clock()
    gw = gateway(llm, tmp_path, clock)
    with pytest.raises(BudgetExceeded, match=r"daily budget: spent \$0\.00 of \$0\.0150, "
                                             r"\$0\.0100 more held by calls in progress"):
        ask(gw, "while the reservation lives")
    clock.ahead = held["expires"] - time.time() + 1  # just past its expiry
    assert ask(gw, "after it expired").text == ANSWER
    gw.close()
    assert reservations(tmp_path) == []  # the expired one was cleaned up, the new one settled
    assert len(chat_requests(fake_llm)) == 2


@pytest.mark.parametrize("retries", [0, 1])
def test_a_failed_attempt_releases_its_reservation_for_the_next_call(tmp_path, fake_llm, retries):
    fake_llm.script.extend([Reply(kind="status", status=500), Reply(text=ANSWER)])
    llm = llm_config(fake_llm, 1.5, provider(fake_llm, retries=retries), backoff_base=0.01)
    gw = gateway(llm, tmp_path)
    if retries == 0:
        with pytest.raises(ProviderError, match="HTTP 500"):
            ask(gw, "first")
        assert reservations(tmp_path) == []
    assert ask(gw, "second").text == ANSWER  # the retry, or the next call, fits the budget again
    with pytest.raises(BudgetExceeded, match=r"spent \$0\.0100 of \$0\.0150"):
        ask(gw, "third")
    gw.close()
    assert len(chat_requests(fake_llm)) == 2 and reservations(tmp_path) == []
    assert [r["status"] for r in calls(tmp_path)] == ["error", "ok", "refused"]


def test_a_fallback_to_a_pricier_provider_counts_the_reservations_of_calls_in_progress(tmp_path, fake_llm):
    fake_llm.script.append(Reply(kind="status", status=500))
    llm = llm_config(fake_llm, 3.5, provider(fake_llm, "cheap", out_per_1m=100.0),
                     provider(fake_llm, "dear", out_per_1m=2000.0))  # cheap: $0.001 a call, dear: $0.02
    other = Ledger(tmp_path / "ledger.sqlite")
    held, why = other.reserve(BudgetConfig(daily_usd=3.5 * CALL_USD), 2 * CALL_USD, time.time(),
                              expires=time.time() + 600)
    assert held and why is None  # another caller's calls in progress: $0.02 of $0.035
    gw = gateway(llm, tmp_path)
    with pytest.raises(BudgetExceeded, match=r"\$0\.0200 more held by calls in progress; "
                                             r"a call to 'dear' would add about \$0\.0200"):
        ask(gw, "q")  # cheap fails; dear would fit the spend alone, not with the call in progress
    assert [r["body"]["model"] for r in chat_requests(fake_llm)] == ["cheap-model"]
    other.release(held)
    assert ask(gw, "q again").provider == "cheap"
    gw.close()
    other.close()


def test_a_reservation_counts_against_every_limit_it_falls_under(tmp_path):
    budget = BudgetConfig.model_validate({"monthly_usd": 0.025, "tags": {"ci": {"daily_usd": 0.015}}})
    now = time.time()
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ci, _ = ledger.reserve(budget, 0.01, now, expires=now + 60, tag="ci")
    assert ci
    assert ledger.reserve(budget, 0.01, now, expires=now + 60, tag="ci")[1].startswith("daily (tag ci) budget")
    dev, _ = ledger.reserve(budget, 0.01, now, expires=now + 60, tag="dev")
    assert dev
    assert ledger.reserve(budget, 0.01, now, expires=now + 60)[1].startswith("monthly budget")
    ledger.release(dev)
    assert ledger.reserve(budget, 0.01, now, expires=now + 60)[0]
    stale, _ = ledger.reserve(budget, 0.0, now - 120, expires=now - 60)  # ignored once expired
    assert ledger.reserve(budget, 0.005, now, expires=now + 60)[0]
    assert stale not in {r["id"] for r in reservations(tmp_path)}
    ledger.close()


def test_a_batch_job_reserves_its_worst_case_and_settles_it_when_collected(tmp_path, fake_llm):
    fake_llm.responder = lambda body: Reply(text=ANSWER)
    llm = LLMConfig.model_validate(llm_config(fake_llm, 3.5, batch_poll_seconds=0.01))
    items = [BatchItem([{"role": "user", "content": f"q{i}"}], f"q{i}") for i in range(4)]
    ledger = Ledger(tmp_path / "ledger.sqlite")  # 4 items at half price: $0.02 worst case
    other, _ = ledger.reserve(llm.budget, 2 * CALL_USD, time.time(), expires=time.time() + 600)
    with pytest.raises(BudgetExceeded, match=r"\$0\.0200 more held by calls in progress.*add up to \$0\.0200"):
        run_batch(items, llm, ledger, config_source="test", command="eval")
    assert fake_llm.requests == []  # refused before anything was uploaded
    ledger.release(other)
    fake_llm.batch_outcome = "failed"
    with pytest.raises(ProviderError, match="failed: scripted validation failure"):
        run_batch(items, llm, ledger, config_source="test", command="eval")
    assert reservations(tmp_path) == []  # a failed job costs nothing: released
    fake_llm.batch_outcome = "completed"
    done = run_batch(items, llm, ledger, config_source="test", command="eval")
    assert [i.completion.text for i in done] == [ANSWER] * 4
    assert reservations(tmp_path) == []  # settled by the items' rows
    assert [(r["status"], r["cost_usd"]) for r in calls(tmp_path)] == [("ok", pytest.approx(CALL_USD / 2))] * 4
    ledger.close()
