"""The eval gate as an experiment: Holm, clustered bootstrap, power, sequential stopping, repeats."""

from __future__ import annotations

import json
import random
import sqlite3
from xml.etree import ElementTree as ET

import pytest
from cli import assert_clean_error, invoke, write_trusted
from conftest import REPO
from openai_server import Reply

from llmctl.evals import gate
from llmctl.stats import paired_bootstrap


def test_holm_step_down():
    assert gate.holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]  # 3*0.01; max(2*0.03, .03); max(1*0.04, .06)
    assert gate.holm([0.5, 0.001]) == [0.5, 0.002]
    assert gate.holm([0.9, 0.8]) == [1.0, 1.0] and gate.holm([0.9, 0.3]) == [0.9, 0.6]  # capped, monotone
    assert gate.holm([]) == []
    rows = gate.decide([{"metric": "a", "delta": -0.1, "p_value": 0.02},
                        {"metric": "b", "delta": -0.1, "p_value": 0.02}], 0.05, 0.03)
    assert [r["p_adjusted"] for r in rows] == [0.04, 0.04] and all(r["regressed"] for r in rows)
    rows = gate.decide([{"metric": "a", "delta": -0.1, "p_value": 0.03}] * 1 + [
        {"metric": "b", "delta": -0.01, "p_value": 0.001}], 0.05, 0.03)
    assert rows[0]["p_adjusted"] == 0.03 and rows[0]["regressed"] and not rows[1]["regressed"]  # within tolerance


def test_clusters_join_cases_sharing_a_document_or_a_group():
    keys = [gate.case_keys(["a.md"], None), gate.case_keys(["b.md"], None), gate.case_keys(["a.md", "c.md"], None),
            gate.case_keys(["c.md"], None), gate.case_keys(["b.md"], "g1"), gate.case_keys([], "g1"),
            gate.case_keys([], None)]
    labels = gate.clusters_for(keys)
    assert labels[0] == labels[2] == labels[3]  # a-c through the case that expects both
    assert labels[4] == labels[5] != labels[1]  # the group overrides the document
    assert len(set(labels)) == 4


def test_clustered_bootstrap_fixed_seed_and_clusters_counted():
    diffs = [-0.2, -0.2, -0.2, 0.0, 0.1, 0.0, -0.1, 0.0, 0.0]
    clusters = [0, 0, 0, 1, 1, 2, 2, 3, 4]
    a = gate.clustered_bootstrap(diffs, clusters, seed=3)
    assert a == gate.clustered_bootstrap(diffs, clusters, seed=3)
    assert a["clusters"] == 5 and a["delta"] == pytest.approx(sum(diffs) / 9, abs=1e-6)
    assert (a["wins"], a["losses"], a["ties"]) == (1, 4, 4)
    # resampling whole clusters sees less independent evidence than resampling cases
    plain = gate.clustered_bootstrap(diffs, None, seed=3)
    assert plain["clusters"] == 9 and a["p_value"] > plain["p_value"]
    # every case its own cluster: the same resamples (and CI) as the plain paired bootstrap
    old = paired_bootstrap(diffs, seed=3)
    assert plain["ci95"] == old["ci95"] and plain["delta"] == old["delta"]
    assert gate.clustered_bootstrap([-0.1] * 5, [0] * 5)["p_value"] == 1.0  # one cluster: nothing to test against
    # every cluster dropped by the same amount: the bootstrap's resamples do not vary (its p would
    # be 1/(B+1)); 3 clusters cannot show more than 1 in 2^3 sign assignments (one-sided)
    shift = gate.clustered_bootstrap([-0.1] * 6, [0, 0, 1, 1, 2, 2], resamples=999)
    assert (shift["p_value"], shift["p_two_sided"]) == (0.125, 0.25)
    assert gate.clustered_bootstrap([-1.0, -1.0])["p_value"] == 0.25
    assert paired_bootstrap([-1.0, -1.0])["p_value"] == 0.5  # two-sided
    many = gate.clustered_bootstrap([-0.1] * 40, None, resamples=999)
    assert many["p_value"] == 0.001  # past 16 clusters the bootstrap's own resolution: 1/(B+1)


def test_mde_shrinks_with_more_cases_and_warns_below_max_regression():
    rng = random.Random(0)
    small = [float(rng.random() < 0.8) for _ in range(30)]
    big = small * 10
    se_small, se_big = gate.clustered_se(small, range(30)), gate.clustered_se(big, range(300))
    assert se_big < se_small
    m_small, m_big = gate.mde(se_small, 0.01), gate.mde(se_big, 0.01)
    assert m_big < m_small and m_small / m_big == pytest.approx(se_small / se_big)
    assert gate.mde(se_small, 0.01, levels=small) > m_small  # a drop adds spread of its own
    clustered = gate.clustered_se(small, [i // 3 for i in range(30)])
    assert clustered != se_small  # clusters change the variance the MDE comes from
    row = gate.power_row("hit@3", small, list(range(30)), 0.01, 0.02, "the metric")
    assert not row["detectable"] and row["cases_needed"] > 30
    assert row["warning"].startswith("this suite cannot see a drop of 0.02 in hit@3; it needs ~")
    assert gate.power_row("hit@3", big, list(range(300)), 0.01, 0.5, "x")["detectable"]
    # three cases: no drop of a fraction can be seen, not "drops smaller than 1.542 go unseen"
    tiny = gate.power_row("answer_pass_rate", [1.0, 0.0, 1.0], [0, 1, 2], 0.01, 0.0, "x")
    assert tiny["mde"] > 1 and tiny["warning"].startswith("this suite (3 cases) cannot see any drop")


def test_mde_of_a_grouped_suite_counts_whole_documents_lost_together():
    """Questions about one document pass or fail together: the same outcomes, grouped, have a larger
    MDE (the SE per cluster, and a drop that takes whole documents spreads more than one per case);
    each case its own cluster is exactly the per-case statement."""
    rng = random.Random(1)
    docs = [rng.random() < 0.8 for _ in range(20)]
    levels = [float(ok) for ok in docs for _ in range(3)]  # 20 documents x 3 questions, correlated
    grouped, ungrouped = [i // 3 for i in range(60)], list(range(60))
    se = gate.clustered_se(levels, ungrouped)
    # the drop's own spread alone (the same SE): whole documents lost together spread more
    assert gate.mde(se, 0.01, levels=levels, clusters=grouped) > 1.3 * gate.mde(se, 0.01, levels=levels)
    assert gate.mde(se, 0.01, levels=levels, clusters=ungrouped) == gate.mde(se, 0.01, levels=levels)
    # a wider spread never makes a smaller drop detectable (the size is solved for, not iterated to)
    for spread in ([i // 2 for i in range(60)], [i // 6 for i in range(60)], [i // 30 for i in range(60)]):
        assert gate.mde(se, 0.01, levels=levels, clusters=spread) >= gate.mde(se, 0.01, levels=levels)
    # a metric that never varied (hit@3 always 1) still cannot see a small drop: the drop spreads
    assert gate.mde(0.0, 0.01, levels=[1.0] * 60) > 0.1
    # the power statement, as compare_cases and --plan make it
    g = gate.power_row("hit@3", levels, grouped, 0.01, 0.03, "the metric")
    u = gate.power_row("hit@3", levels, ungrouped, 0.01, 0.03, "the metric")
    assert g["mde"] > 1.5 * u["mde"] and (g["clusters"], u["clusters"]) == (20, 60)
    assert g["cases_needed"] > u["cases_needed"]
    assert "cases in ~" in g["warning"] and g["clusters_needed"] * 3 == pytest.approx(g["cases_needed"], abs=3)
    assert "clusters" not in u["warning"]
    # through the baseline comparison: paired differences within a document move together
    then = {f"c{i}": {"m": y} for i, y in enumerate(levels)}
    now = {f"c{i}": {"m": y - (0.5 if i // 3 % 4 == 0 else 0.0)} for i, y in enumerate(levels)}
    ids = sorted(then)

    def mde_of(clusters):
        out = gate.compare_cases(now, then, ids, ["m"], clusters, significance=0.05, max_regression=0.03,
                                 resamples=200)
        return out["power"]["metrics"][0]["mde"]

    assert mde_of({i: int(i[1:]) // 3 for i in ids}) > mde_of({i: int(i[1:]) for i in ids})


def _run_seq(values, threshold, order, delta=gate.SEQUENTIAL_DELTA):
    seq = gate.Sequential(len(values), threshold, delta)
    for k, i in enumerate(order):
        if seq.observe(values[i]):
            return seq.decided, k + 1
    return None, len(values)


def test_sequential_rule_never_contradicts_the_full_run_on_crafted_sequences():
    crafted = [
        ([1.0] * 29 + [0.0], 1.0), ([1.0] * 30, 1.0), ([0.0] + [1.0] * 29, 0.95),
        ([1.0] * 24 + [0.0] * 6, 0.8), ([1.0] * 23 + [0.0] * 7, 0.8),  # exactly at and just under
        ([1.0] * 15 + [0.0] * 15, 0.5), ([0.5] * 40, 0.5), ([2 / 3] * 20 + [1 / 3] * 20, 0.5),
        ([1.0] * 100 + [0.0] * 100, 0.9), ([1.0] * 190 + [0.0] * 10, 0.5),
    ]
    for values, thr in crafted:
        full = "pass" if sum(values) / len(values) >= thr - 1e-12 else "fail"
        orders = [list(range(len(values))), list(reversed(range(len(values))))]
        rng = random.Random(1)
        orders += [rng.sample(range(len(values)), len(values)) for _ in range(30)]
        for order in orders:  # the exact bound alone, whatever the order (even adversarial)
            assert _run_seq(values, thr, order, delta=0)[0] in (None, full), (values[:3], thr)
        for order in orders[2:]:  # with the betting test, over random orders
            assert _run_seq(values, thr, order)[0] in (None, full), (values[:3], thr)
    # clear cases stop early; the exact bound decides at the first failure when every answer must pass
    assert _run_seq([1.0] * 190 + [0.0] * 10, 0.5, list(range(200)))[1] < 100
    assert _run_seq([0.0] + [1.0] * 29, 1.0, list(range(30)), delta=0) == ("fail", 1)
    assert _run_seq([1.0] * 24 + [0.0] * 6, 0.8, list(range(30)), delta=0) == ("pass", 24)
    assert gate.SequentialComparison(10, 0.0).observe(-1.0) is None


def test_sequential_error_rate_on_random_populations():
    rng = random.Random(7)
    wrong = 0
    for _ in range(300):
        n, p = 60, rng.choice([0.75, 0.8, 0.85])
        values = [float(rng.random() < p) for _ in range(n)]
        full = "pass" if sum(values) / n >= 0.8 else "fail"
        decided, _ = _run_seq(values, 0.8, rng.sample(range(n), n))
        wrong += decided not in (None, full)
    assert wrong <= 3  # delta 1%: a decided verdict differs from the full run's this rarely


def _suite(tmp_path, base_url, **extra):
    suite = {"name": "flaky", "config": {"rerank": {"enabled": False}, "llm": {"providers": [
        {"name": "local", "base_url": base_url, "model": "m", "retries": 0}]}},
        "cases": [
            {"id": "snapshots", "query": "How many daily snapshots are kept?",
             "expected": ["guides/retention-policies.md"], "answer": {"contains": ["14"]}},
            {"id": "price", "query": "What does the Team edition cost?", "expected": ["policies/pricing.md"],
             "answer": {"contains": ["12"]}},
        ], **extra}
    path = tmp_path / "suite.yaml"
    write_trusted(path, suite)
    return path


def test_repeats_report_a_flaky_case_everywhere_and_the_ledger_has_every_call(tmp_path, data, fake_llm):
    fake_llm.on("How many daily snapshots", Reply(text="It keeps 14 [1]."), Reply(text="It keeps 7 [1]."),
                Reply(text="It keeps 14 [1]."))
    fake_llm.on("Team edition", *[Reply(text="12 dollars [1].")] * 3)
    suite = _suite(tmp_path, fake_llm.base_url)
    out = {k: tmp_path / f"r.{k}" for k in ("json", "xml", "md", "html")}
    tape = tmp_path / "tape.jsonl"
    r = invoke("--data-dir", data, "eval", "-q", suite, "--repeats", "3", "--json-file", out["json"], "--junit",
               out["xml"], "--markdown", out["md"], "--html", out["html"], "--record", tape)
    assert r.returncode == 9, r.stdout + r.stderr  # min_pass_rate 1.0 (the default): every answer, every time
    report = json.loads(out["json"].read_text())
    cases = {c["id"]: c for c in report["cases"]}
    assert report["flaky"] == ["snapshots"] and cases["snapshots"]["flaky"]
    assert cases["snapshots"]["pass_rate"] == pytest.approx(2 / 3) and cases["price"]["pass_rate"] == 1.0
    assert [x["passed"] for x in cases["snapshots"]["runs"]] == [True, False, True]
    assert report["answer_gate"]["value"] == pytest.approx(5 / 6) and report["answers"]["calls"] == 6
    assert "Flaky (passed and failed): snapshots 2/3" in r.stdout
    junit = ET.parse(out["xml"]).getroot()
    tc = junit.find("testcase[@name='snapshots']")
    assert tc.find("properties/property[@name='flaky']").get("value") == "true"
    assert "FLAKY" in tc.find("system-out").text and tc.find("failure").get("message").startswith("flaky (2/3")
    assert "Flaky (passed and failed): snapshots 2/3" in out["md"].read_text()
    assert "snapshots 2/3" in out["html"].read_text() and "(flaky)" in out["html"].read_text()
    db = sqlite3.connect(data / "ledger.sqlite")
    rows = db.execute("SELECT count(*) FROM calls WHERE command = 'eval' AND question LIKE 'How many daily%' "
                      "AND status = 'ok'").fetchone()[0]
    db.close()
    assert rows == 3  # the cache was bypassed: three real calls
    assert len(tape.read_text().splitlines()) == 6  # the cassette keeps every repeat

    # the same run with a tolerance: passes, still lists the flaky case
    tolerant = _suite(tmp_path, fake_llm.base_url, min_pass_rate=0.8)
    r = invoke("--data-dir", data, "eval", "-q", tolerant, "--repeats", "3", "--replay", tape, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    replayed = json.loads(r.stdout)
    assert replayed["flaky"] == ["snapshots"] and replayed["answer_gate"]["passed"]


def test_bad_repeats_is_a_usage_error(tmp_path, data):
    r = invoke("--data-dir", data, "eval", "-q", REPO / "configs" / "sample-suite.yaml", "--repeats", "0")
    assert r.returncode == 2 and "--repeats" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_plan_states_the_detectable_drop_without_a_model(tmp_path, data):
    r = invoke("--data-dir", data, "eval", "-q", REPO / "configs" / "sample-suite.yaml", "--plan", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    plan = json.loads(r.stdout)
    assert plan["clusters"] < plan["cases"] and {m["metric"] for m in plan["metrics"]} >= {"mrr@10", "hit@3"}
    assert plan["warnings"] and "it needs ~" in plan["warnings"][0]  # 0.03 is below what 30 cases can see
    r = invoke("--data-dir", data, "eval", "-q", REPO / "configs" / "sample-suite.yaml", "--plan", "--json-file",
               tmp_path / "plan.json")
    assert r.returncode == 0 and json.loads((tmp_path / "plan.json").read_text()) == plan, r.stderr
    # what a plan does not do is refused, not silently ignored (a CI step would wait for the file)
    r = invoke("--data-dir", data, "eval", REPO / "configs" / "sample-suite.yaml", "--plan", "--junit",
               tmp_path / "p.xml")
    assert_clean_error(r, 2, "--plan", "--junit")
    assert not (tmp_path / "p.xml").exists()


def test_every_report_format_says_what_the_run_did_not_do(data):
    """A CI summary that omits 'answer checks skipped' reads as a full pass."""
    import html
    from pathlib import Path

    from llmctl import Workspace
    from llmctl.evals import report as rep

    suite = Path(__file__).resolve().parent.parent / "configs" / "sample-suite.yaml"
    with Workspace(data_dir=data) as ws:
        outcome = ws.evaluate(suite)
    said = rep.notices(outcome.report)
    assert any(n.endswith("answer check(s) skipped: no model configured (llm.providers)") for n in said), said
    for text in (rep.markdown(outcome.report), rep.junit(outcome.report, outcome.result)):
        assert all(n in text for n in said)
    page = rep.html_page(outcome.report)
    assert all(html.escape(n) in page for n in said)
