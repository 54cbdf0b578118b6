"""cost-report, cache-stats, budgets and cache invalidation through the real CLI."""

import csv
import io
import json
import re

import pytest
import yaml
from cli import assert_clean_error, invoke, run_cli


def config(tmp_path, server, **llm):
    cfg = {"rerank": {"enabled": False},
           "llm": {"providers": [{"name": "local", "base_url": server.base_url, "model": "fake-model",
                                  "context_window": 4096, "timeout": 5, "retries": 0,
                                  "price_input_per_1m": 2.0, "price_output_per_1m": 8.0}], **llm}}
    path = tmp_path / "llmctl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_second_identical_question_is_served_from_cache_and_reported(tmp_path, data, fake_llm):
    cfg = config(tmp_path, fake_llm)
    q = ("--config", cfg, "--data-dir", data, "query", "--tag", "docs", "Is Windows supported?")
    first = invoke(*q[:-1], "--json", q[-1])
    second = invoke(*q[:-1], "--json", q[-1])
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["cache"] is None and b["cache"] == "exact" and a["answer"] == b["answer"]
    assert a["cost_usd"] > 0 and len(fake_llm.requests) == 1

    report = json.loads(invoke("--config", cfg, "--data-dir", data, "cost-report", "--json").stdout)
    t = report["totals"]
    assert (t["requests"], t["ok"], t["cache_hits"], t["errors"]) == (2, 1, 1, 0)
    assert t["cost_usd"] == pytest.approx(a["cost_usd"])
    assert t["saved_by_cache_usd"] == pytest.approx(a["cost_usd"])
    assert list(report["by"]["tag"]) == ["docs"] and list(report["by"]["command"]) == ["query"]

    rows = list(csv.DictReader(io.StringIO(invoke("--config", cfg, "--data-dir", data, "cost-report",
                                                  "--csv").stdout)))
    assert {r["dimension"] for r in rows} == {"day", "provider", "model", "command", "tag"}

    human = invoke("--config", cfg, "--data-dir", data, "cost-report", "--since", "7d")
    assert human.returncode == 0 and "Cost per day:" in human.stdout and "by provider" in human.stdout

    stats = json.loads(invoke("--config", cfg, "--data-dir", data, "cache-stats", "--json").stdout)
    assert stats["entries"] == 1 and stats["hit_rate"]["exact"] == 0.5 and stats["size_bytes"] > 0
    cleared = json.loads(invoke("--config", cfg, "--data-dir", data, "cache-stats", "--clear",
                                "--json").stdout)
    assert cleared["cleared"] == 1 and cleared["entries"] == 0


def test_verbose_logs_each_call_to_stderr(tmp_path, data, fake_llm):
    cfg = config(tmp_path, fake_llm)
    r = invoke("-v", "--config", cfg, "--data-dir", data, "query", "Is Windows supported?")
    assert r.returncode == 0
    assert "llm ok provider=local model=fake-model tokens=" in r.stderr
    assert re.search(r"cost=\$0\.\d{1,6} ", r.stderr), r.stderr  # money, not a float's 17 digits


def test_budget_exit_code(tmp_path, data, fake_llm):
    """Through a real process: exit 8 as a shell sees it."""
    cfg = config(tmp_path, fake_llm, budget={"daily_usd": 0.000001})
    r = run_cli("--config", cfg, "--data-dir", data, "query", "Is Windows supported?")
    assert_clean_error(r, 8, "Budget exceeded", "daily budget", "of $0.00")
    assert fake_llm.requests == []


def test_a_failed_answer_lists_its_attempts_in_json(tmp_path, data, fake_llm):
    """--json after every attempt failed: the error, and under `attempts` what was tried (it was [])."""
    from openai_server import Reply

    fake_llm.script.extend([Reply(kind="status", status=500)] * 3)
    cfg = config(tmp_path, fake_llm)
    cfg.write_text(cfg.read_text().replace("retries: 0", "retries: 2"))
    r = invoke("--config", cfg, "--data-dir", data, "query", "--json", "Is Windows supported?")
    out = json.loads(r.stdout)
    assert r.returncode == 7 and out["error"]["exit_code"] == 7 and out["hits"]
    assert [(a["provider"], a["attempt"], a["error"]) for a in out["attempts"]] == [
        ("local", 1, "server"), ("local", 2, "server"), ("local", 3, "server")], out["attempts"]
    assert len(fake_llm.requests) == 3


def test_bad_dates_are_clean_errors(tmp_path, data, fake_llm):
    cfg = config(tmp_path, fake_llm)
    r = invoke("--config", cfg, "--data-dir", data, "cost-report", "--since", "last week")
    assert_clean_error(r, 2, "--since", "YYYY-MM-DD")
    r = invoke("--config", cfg, "--data-dir", data, "cost-report", "--since", "99999999d")
    assert_clean_error(r, 2, "--since", "at most 36500d")
    # contradictory flags: refused, not one silently chosen
    assert_clean_error(invoke("--data-dir", data, "cost-report", "--json", "--csv"), 2, "--json or --csv")
    assert_clean_error(invoke("--config", cfg, "--data-dir", data, "cache-stats", "--prune", "--clear"), 2,
                       "clear or prune, not both")


def test_ingest_invalidates_cached_answers_built_from_changed_chunks(tmp_path, fake_llm, corpus):
    data = tmp_path / "fresh"
    cfg = config(tmp_path, fake_llm)
    docs = corpus / "guides"
    assert invoke("--config", cfg, "--data-dir", data, "ingest", "-q", docs).returncode == 0
    q = ("--config", cfg, "--data-dir", data, "query", "--json", "How many daily snapshots are kept?")
    assert json.loads(invoke(*q).stdout)["cache"] is None
    assert json.loads(invoke(*q).stdout)["cache"] == "exact"
    policy = docs / "retention-policies.md"
    policy.write_text(policy.read_text().replace("| daily | 14 |", "| daily | 21 |"))
    report = json.loads(invoke("--config", cfg, "--data-dir", data, "ingest", "--json", docs).stdout)
    assert report["cache_entries_invalidated"] == 1
    again = json.loads(invoke(*q).stdout)
    assert again["cache"] is None and len(fake_llm.requests) == 2
