"""state.backend: redis -- the answer cache, budgets, rate limits and the team's ledger shared
through one real redis-server (tests/redis_server.py), which a test kills and starts again.

The processes are driven line by line (tests/state_child.py): each step waits for the answers
it caused, so nothing here depends on timing except the rate limit itself, which is checked at
the server (its receipt times), never as a speed.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from cli import child_env, invoke, run_cli
from openai_server import Reply
from redis_server import PASSWORD_ENV, RedisServer

from llmctl.config import LLMConfig, StateConfig
from llmctl.datadir import DataDir
from llmctl.errors import ConfigError, SharedStateUnavailable
from llmctl.llm.gateway import Gateway
from llmctl.llm.state import invalidate_answers

pytestmark = pytest.mark.slow

MAX_TOKENS = 10
ANSWER = "one two three four five six seven eight nine ten"  # the server counts 10 completion tokens
CALL_USD = MAX_TOKENS * 1000.0 / 1e6  # output at $1000 per 1M tokens, input free: $0.01 a call
PATIENCE = 600
RPM = 20
PACE = 60 / RPM  # seconds between two requests the shared limiter lets through
TESTS = Path(__file__).parent


@pytest.fixture
def redis_srv(tmp_path, monkeypatch):
    server = RedisServer(tmp_path / "redis").start()
    monkeypatch.setenv(PASSWORD_ENV, server.password)
    yield server
    server.stop()


def provider(server, **kw) -> dict:
    return {"name": "paid", "base_url": server.base_url, "model": "paid-model", "retries": 0,
            "timeout": PATIENCE, "stall_timeout": PATIENCE, "context_window": 4096,
            "price_input_per_1m": 0.0, "price_output_per_1m": 1000.0, **kw}


def chat_times(server) -> list[float]:
    return sorted(r["at"] for r in server.requests if r["path"].endswith("/chat/completions"))


def ledger_rows(data: Path) -> list[dict]:
    with sqlite3.connect(data / "ledger.sqlite") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM calls ORDER BY id")]


class Child:
    """One llmctl process (tests/state_child.py) in its own working dir."""

    def __init__(self, name: str, cwd: Path, config: Path, data: Path, password: str):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, str(TESTS / "state_child.py"), str(config), str(data)],
                                     cwd=cwd, env=child_env({PASSWORD_ENV: password}), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.replies: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        assert self.next().get("ready"), self.name

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.replies.put(json.loads(line))

    def send(self, rid: str, question: str) -> None:
        self.proc.stdin.write(json.dumps({"id": rid, "ask": question}) + "\n")
        self.proc.stdin.flush()

    def next(self) -> dict:
        return self.replies.get(timeout=PATIENCE)

    def ask(self, question: str) -> dict:
        self.send(question, question)
        return self.next()

    def finish(self) -> int:
        self.proc.stdin.close()
        return self.proc.wait(PATIENCE)


def test_four_processes_share_the_cache_the_budget_and_the_rate_limit_and_outlive_a_redis_restart(
        tmp_path, redis_srv, fake_llm):
    fake_llm.responder = lambda body: Reply(text=ANSWER)
    llm = {"providers": [provider(fake_llm, requests_per_minute=RPM)], "max_answer_tokens": MAX_TOKENS,
           "deadline": 400, "budget": {"daily_usd": 4.5 * CALL_USD}}  # exactly 4 calls
    config = {"llm": llm, "state": redis_srv.state()}
    dirs = {d: tmp_path / d for d in ("a", "b", "c")}  # P1 and P2 share a; P3 and P4 have their own
    for d in dirs.values():
        d.mkdir()
        (d / "llmctl.yaml").write_text(yaml.safe_dump(config))
    layout = [("P1", "a"), ("P2", "a"), ("P3", "b"), ("P4", "c")]
    kids = {name: Child(name, dirs[d], dirs[d] / "llmctl.yaml", dirs[d] / "data", redis_srv.password)
            for name, d in layout}
    try:
        # The second asker of a question, in another working dir and data dir, gets the first one's answer.
        first = kids["P1"].ask("Which backups are kept?")
        assert first == {"id": "Which backups are kept?", "text": ANSWER, "cache": None, "provider": "paid"}
        second = kids["P3"].ask("Which backups are kept?")
        assert second["text"] == ANSWER and second["cache"] == "exact"
        assert len(chat_times(fake_llm)) == 1

        # 8 calls at once from 4 processes, with room for 3 more: exactly 3 reach the provider.
        for name in kids:
            for j in range(2):
                kids[name].send(f"{name}-{j}", f"Question {j} from {name}")
        replies = [kid.next() for kid in kids.values() for _ in range(2)]
        answered = [r for r in replies if r.get("text") == ANSWER]
        refused = [r for r in replies if r.get("type") == "BudgetExceeded"]
        assert len(answered) == 3 and len(refused) == 5, replies
        assert all(r["exit_code"] == 8 and "daily budget" in r["error"] for r in refused)
        times = chat_times(fake_llm)
        assert len(times) == 4
        # requests_per_minute 20 is one request per 3 s, counted where the provider counts (a bucket of
        # one request: ratelimit.py). Limiters per process would send P2-P4's calls at once; a
        # second of slack for a send delayed on a busy machine.
        assert all(later - earlier >= PACE - 1 for earlier, later in zip(times, times[1:], strict=False)), times

        # Redis dies: nothing is served from a cache that cannot be read, nothing is spent unchecked.
        redis_srv.kill()
        down = kids["P1"].ask("Which backups are kept?")
        assert down["type"] == "SharedStateUnavailable" and down["exit_code"] == 7, down
        assert "Shared state unreachable" in down["error"] and "\n" not in down["error"]
        down = kids["P3"].ask("A new question while Redis is down")
        assert down["type"] == "SharedStateUnavailable", down
        assert len(chat_times(fake_llm)) == 4
        refusal = [r for r in ledger_rows(dirs["a"] / "data") if r["error_class"] == "state_unavailable"]
        assert [r["status"] for r in refusal] == ["refused"]  # the local ledger has the refusal

        # It comes back (same port, its data kept): the same processes use it again, unrestarted.
        redis_srv.start()
        back = kids["P2"].ask("Which backups are kept?")
        assert back["text"] == ANSWER and back["cache"] == "exact", back
        over = kids["P4"].ask("One question too many")
        assert over["type"] == "BudgetExceeded" and "spent $0.0400 of $0.0450" in over["error"], over
        assert len(chat_times(fake_llm)) == 4
    finally:
        codes = {name: kid.finish() for name, kid in kids.items()}
    assert codes == dict.fromkeys(kids, 0)
    for kid in kids.values():
        assert not any("Traceback" in line for line in kid.stderr), kid.stderr
    warnings = "".join(kids["P1"].stderr)
    assert warnings.count("shared answer cache unreachable") == 1  # said once, not at every lookup

    # The team's report: every row of the three ledgers (b's are published by this report).
    report = run_cli("--config", dirs["b"] / "llmctl.yaml", "--data-dir", dirs["b"] / "data",
                     "cost-report", "--shared", "--json", env={PASSWORD_ENV: redis_srv.password})
    assert report.returncode == 0, report.stderr
    shared = json.loads(report.stdout)
    local = [r for d in dirs.values() for r in ledger_rows(d / "data")]
    assert shared["ledgers"] == 3 and shared["totals"]["attempts"] == 4
    assert shared["totals"]["cache_hits"] == 2 and shared["totals"]["refused"] == 5 + 2 + 1
    assert sum(s["requests"] for s in shared["by"]["machine"].values()) == len({r["request_id"] for r in local})
    assert shared["totals"]["cost_usd"] == pytest.approx(4 * CALL_USD)
    assert shared["by"]["tag"]["team"]["ok"] == 4


def test_unreachable_redis_with_on_unavailable_local_says_so_once_and_keeps_limits_per_machine(tmp_path,
                                                                                               fake_llm):
    fake_llm.responder = lambda body: Reply(text=ANSWER)
    from redis_server import free_port

    state = StateConfig(backend="redis", url=f"redis://127.0.0.1:{free_port()}/0", on_unavailable="local",
                        timeout=1)  # nothing listens there
    llm = LLMConfig.model_validate({"providers": [provider(fake_llm, requests_per_minute=600)],
                                    "max_answer_tokens": MAX_TOKENS, "budget": {"daily_usd": 1.5 * CALL_USD}})
    said: list[str] = []
    for question in ("first", "second"):
        gw = Gateway(llm, DataDir(tmp_path), warn=said.append, state=state)
        try:
            if question == "first":
                assert gw.complete([{"role": "user", "content": question}], question=question, chunk_ids=[],
                                   sources=[]).text == ANSWER
            else:  # the budget still holds, on this machine's ledger
                with pytest.raises(Exception, match="daily budget: spent"):
                    gw.complete([{"role": "user", "content": question}], question=question, chunk_ids=[],
                                sources=[])
        finally:
            gw.close()
    per_machine = [m for m in said if "budgets and rate limits are per machine" in m]
    assert len(per_machine) == 1, said
    assert len(chat_times(fake_llm)) == 1
    assert [r["status"] for r in ledger_rows(tmp_path)] == ["ok", "refused"]


def test_unreachable_redis_refuses_with_one_line_and_a_ledger_row(tmp_path, fake_llm):
    from redis_server import free_port

    state = StateConfig(backend="redis", url=f"redis://:secret@127.0.0.1:{free_port()}/0", timeout=1)
    llm = LLMConfig.model_validate({"providers": [provider(fake_llm)], "max_answer_tokens": MAX_TOKENS,
                                    "budget": {"daily_usd": 1.0}})
    gw = Gateway(llm, DataDir(tmp_path), warn=lambda m: None, state=state)
    try:
        with pytest.raises(SharedStateUnavailable) as info:
            gw.complete([{"role": "user", "content": "q"}], question="q", chunk_ids=[], sources=[])
    finally:
        gw.close()
    message = str(info.value)
    assert info.value.exit_code == 7 and "\n" not in message and "secret" not in message
    assert "state.on_unavailable: local" in message
    assert fake_llm.requests == []
    [row] = ledger_rows(tmp_path)
    assert (row["status"], row["error_class"]) == ("refused", "state_unavailable")


def test_an_ingest_on_one_machine_invalidates_the_shared_answers_built_from_its_chunks(tmp_path, redis_srv,
                                                                                       fake_llm):
    fake_llm.responder = lambda body: Reply(text=ANSWER)
    state = StateConfig.model_validate(redis_srv.state())
    llm = LLMConfig.model_validate({"providers": [provider(fake_llm)], "max_answer_tokens": MAX_TOKENS})

    def ask(data: Path, chunks: list[str]):
        gw = Gateway(llm, DataDir(data), warn=lambda m: None, state=state)
        try:
            return gw.complete([{"role": "user", "content": "q"}], question="q", chunk_ids=chunks, sources=[])
        finally:
            gw.close()

    assert ask(tmp_path / "a", ["c1", "c2"]).cache is None
    assert ask(tmp_path / "b", ["c1", "c2"]).cache == "exact"  # another machine's answer
    assert invalidate_answers(state, DataDir(tmp_path / "b"), ["c2", "c9"], lambda m: None) == 1
    assert ask(tmp_path / "a", ["c1", "c2"]).cache is None  # gone for everyone
    assert len(chat_times(fake_llm)) == 2


def test_cache_stats_and_clear_act_on_the_shared_cache_and_a_wrong_password_says_so(tmp_path, redis_srv,
                                                                                    fake_llm, monkeypatch):
    fake_llm.responder = lambda body: Reply(text=ANSWER)
    shared = redis_srv.state()  # one key prefix for both
    config = tmp_path / "llmctl.yaml"
    config.write_text(yaml.safe_dump({"llm": {"providers": [provider(fake_llm)], "max_answer_tokens": MAX_TOKENS},
                                      "state": shared}))
    state = StateConfig.model_validate(shared)
    llm = LLMConfig.model_validate({"providers": [provider(fake_llm)], "max_answer_tokens": MAX_TOKENS})
    gw = Gateway(llm, DataDir(tmp_path / "other"), warn=lambda m: None, state=state)  # another machine
    try:
        gw.complete([{"role": "user", "content": "q"}], question="q", chunk_ids=["c1"], sources=[])
    finally:
        gw.close()
    data = ["--config", config, "--data-dir", tmp_path / "data"]

    r = invoke(*data, "cache-stats", "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["exists"] and stats["entries"] == 1 and stats["size_bytes"] is None, stats
    assert stats["lookups"]["exact"] == 1 and "cache:*" in stats["path"] and redis_srv.password not in r.stdout
    r = invoke(*data, "status")
    assert r.returncode == 0 and "1 answer(s)" in r.stdout and "cost-report --shared" in r.stdout, r.stdout
    r = invoke(*data, "cache-stats", "--clear")
    assert r.returncode == 0 and "Removed 1 (clear)" in r.stdout, r.stdout
    assert json.loads(invoke(*data, "cache-stats", "--json").stdout)["entries"] == 0

    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")  # every command that reads Redis says so, once
    fake_llm.responder = lambda body: Reply(text="[1] an answer that must not be paid for")
    for args in (["cache-stats"], ["cost-report", "--shared"]):
        r = invoke(*data, *args)
        assert r.returncode == 3 and r.stderr.strip().splitlines()[-1].startswith("Error: Redis at"), (args, r.stderr)
        assert f"check the password in ${PASSWORD_ENV} (state.password_env)" in r.stderr
    gw = Gateway(llm, DataDir(tmp_path / "other"), warn=lambda m: None, state=state)
    try:  # no budget, so only the cache reads Redis: still not a 'cache unreachable' warning and a paid call
        with pytest.raises(ConfigError, match="refused llmctl's credentials"):
            gw.complete([{"role": "user", "content": "never asked"}], question="never asked", chunk_ids=["c1"],
                        sources=[])
    finally:
        gw.close()
    assert not any("never asked" in str(q["body"]) for q in fake_llm.requests)

    monkeypatch.setenv(PASSWORD_ENV, redis_srv.password)
    redis_srv.kill()  # down: status still answers, naming where the cache is
    r = invoke(*data, "status")
    assert r.returncode == 0 and "Cache (redis://127.0.0.1:" in r.stdout and ", unreachable): unknown" in r.stdout
    r = invoke(*data, "cache-stats")
    assert r.returncode == 7 and "cannot report the team's answer cache" in r.stderr, r.stderr
