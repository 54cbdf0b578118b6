"""Spend alerts (cost-report --alerts): a seeded ledger of 20 steady days with one anomalous day
(spend and calls) and one day whose error rate jumps; nothing else may alert."""

from __future__ import annotations

import json
import random
import time

import pytest
from cli import invoke, run_cli

from llmctl.config import AlertsConfig
from llmctl.llm.alerts import spend_alerts
from llmctl.llm.ledger import Ledger, Row
from llmctl.stats import day_start

NOW = day_start(time.time()) + 3 * 3600  # 03:00 UTC today: the seeded rows are all in the past
DAY = 86400
SPIKE = day_start(NOW) - DAY  # yesterday
FLAKY = day_start(NOW) - 3 * DAY


def seed(path) -> list[dict]:
    rng = random.Random(7)
    ledger = Ledger(path)
    n = 0

    def add(ts, provider, tag, status, cost):
        nonlocal n
        n += 1
        ledger.record(Row(command="query", request_id=f"r{n}", status=status, provider=provider, model="m",
                          cost_usd=cost if status == "ok" else None, tag=tag), ts)

    for d in range(20, -1, -1):
        start = day_start(NOW) - d * DAY
        for _ in range(rng.randint(9, 15)):  # a steady, noisy day: ~$0.24, ~12 calls, the odd error
            add(start + rng.uniform(0, 3 * 3600 if d == 0 else DAY), "openai", "ci",
                "error" if rng.random() < 0.05 else "ok", 0.02)
        for _ in range(5):
            add(start + rng.uniform(0, 3 * 3600 if d == 0 else DAY), "local", None, "ok", 0.0)
    for _ in range(150):  # yesterday 14:00-15:00: a runaway loop on the CI tag
        add(SPIKE + 14 * 3600 + rng.uniform(0, 3600), "openai", "ci", "ok", 0.02)
    for i in range(25):  # three days ago: the local server fails 10 of 25 calls
        add(FLAKY + 8 * 3600 + i * 60, "local", None, "error" if i % 5 < 2 else "ok", 0.0)
    rows = ledger.rows()
    ledger.close()
    return rows


def test_only_the_anomalous_day_and_hour_and_the_error_spike_alert(tmp_path):
    rows = seed(tmp_path / "ledger.sqlite")
    cfg = AlertsConfig()
    start = day_start(NOW) - 6 * DAY  # the last 6 days and today, each against its 14 days before
    found = spend_alerts([r for r in rows if r["ts"] >= start - 14 * DAY], cfg, start, NOW + 1)
    got = {(a["period"], a["start"], a["provider"], a["tag"], a["metric"]) for a in found}
    day = time.strftime("%Y-%m-%d", time.gmtime(SPIKE))
    flaky_day = time.strftime("%Y-%m-%d", time.gmtime(FLAKY))
    assert got == {
        ("day", day, "openai", "ci", "spend_usd"), ("day", day, "openai", "ci", "calls"),
        ("day", day, "*", "*", "spend_usd"), ("day", day, "*", "*", "calls"),
        ("hour", f"{day}T14:00Z", "openai", "ci", "spend_usd"), ("hour", f"{day}T14:00Z", "openai", "ci", "calls"),
        ("hour", f"{day}T14:00Z", "*", "*", "spend_usd"), ("hour", f"{day}T14:00Z", "*", "*", "calls"),
        ("day", flaky_day, "local", "-", "error_rate"), ("hour", f"{flaky_day}T08:00Z", "local", "-", "error_rate"),
        ("day", flaky_day, "*", "*", "error_rate"), ("hour", f"{flaky_day}T08:00Z", "*", "*", "error_rate"),
    }, found
    spend = next(a for a in found if a["period"] == "day" and a["provider"] == "openai" and a["metric"] == "spend_usd")
    assert spend["value"] > 3.0 and spend["median"] == pytest.approx(0.24, abs=0.07)
    assert spend["threshold"] == pytest.approx(max(3 * spend["median"], spend["median"] + 4 * spend["mad"], 1.0))
    assert spend["rule"].startswith("spend_usd $3.") and "max(3x median $0.2" in spend["rule"]
    assert "over the 14 days before" in spend["rule"]


def test_a_job_at_the_same_hour_every_day_is_its_own_baseline(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    for d in range(15, 0, -1):  # $0.50 at noon, every day: no incident, ever
        ledger.record(Row(command="eval", request_id=f"r{d}", status="ok", provider="openai", model="m",
                          cost_usd=0.5), day_start(NOW) - d * DAY + 12 * 3600 + 60)
    rows = ledger.rows()
    ledger.close()
    cfg = AlertsConfig(min_hourly_usd=0.1)  # a floor under the job's spend: the baseline must decide
    assert spend_alerts(rows, cfg, day_start(NOW) - 3 * DAY, NOW + 1) == []


def test_a_floor_keeps_small_numbers_quiet(tmp_path):
    rows = seed(tmp_path / "ledger.sqlite")
    quiet = AlertsConfig(min_daily_usd=100, min_hourly_usd=100, min_calls=1000, min_error_rate=0.9)
    assert spend_alerts(rows, quiet, day_start(NOW) - 6 * DAY, NOW + 1) == []


def test_cost_report_alerts_exits_10_naming_the_rule(tmp_path):
    seed(tmp_path / "data" / "ledger.sqlite")
    since = time.strftime("%Y-%m-%d", time.gmtime(day_start(NOW) - 6 * DAY))
    plain = invoke("--data-dir", tmp_path / "data", "cost-report", "--since", since, "--json")
    assert plain.returncode == 0 and "alerts" not in json.loads(plain.stdout)
    got = run_cli(  # a real process: exit 10 as a shell sees it
        "--data-dir", tmp_path / "data", "cost-report", "--since", since, "--alerts", "--json")
    assert got.returncode == 10, got.stderr
    assert len(json.loads(got.stdout)["alerts"]) == 12
    [line] = got.stderr.strip().splitlines()
    assert line.startswith("Error: 12 spend alert(s): ") and "over the 14 days before" in line
    text = invoke("--data-dir", tmp_path / "data", "cost-report", "--since", since, "--alerts")
    assert text.returncode == 10 and text.stderr.count("ALERT ") == 12


def test_spend_counts_billed_failures_as_budgets_do(tmp_path):
    """A stream cut after text arrived (or a client that left) is billed: an "error" row with a cost.
    A day of such rows is spend like any other (it was not: only "ok" rows counted)."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    for d in range(15, 0, -1):
        ledger.record(Row(command="query", request_id=f"r{d}", status="ok", provider="openai", model="m",
                          cost_usd=0.02), day_start(NOW) - d * DAY + 3600)
    for i in range(40):  # today: clients that hang up mid-answer, each billed for what arrived
        ledger.record(Row(command="serve", request_id=f"g{i}", status="error", provider="openai", model="m",
                          cost_usd=0.05, error_class="client_gone"), day_start(NOW) + 60 * i)
    rows = ledger.rows()
    ledger.close()
    found = spend_alerts(rows, AlertsConfig(), day_start(NOW), NOW + 1)
    assert any(a["period"] == "day" and a["metric"] == "spend_usd" and a["provider"] == "openai" for a in found), found
