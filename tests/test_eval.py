"""llmctl eval: the sample suite as a CI gate, reports, baselines, A/B, BEIR, bad suites."""

import json
import re
import sqlite3
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import yaml
from cli import assert_clean_error, assert_gate_failed, invoke, run_cli, write_trusted

REPO = Path(__file__).resolve().parent.parent
SUITE = REPO / "configs" / "sample-suite.yaml"



def eval_cli(data, *args, env=None):
    return invoke("--data-dir", data, "eval", "-q", *map(str, args), cwd=REPO, env=env)


def test_sample_suite_passes_and_writes_every_report(tmp_path, data):
    summary = tmp_path / "summary.md"
    out = {k: tmp_path / f"r.{k}" for k in ("json", "xml", "md", "html")}
    r = eval_cli(data, SUITE, "--stages", "--json-file", out["json"], "--junit", out["xml"], "--markdown",
                 out["md"], "--html", out["html"], env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bm25" in r.stdout and "dense" in r.stdout and "hybrid" in r.stdout
    report = json.loads(out["json"].read_text())
    assert report["passed"] and len(report["cases"]) == 30
    m = report["metrics"]
    assert set(m) >= {"bm25", "dense", "hybrid"}
    assert m["hybrid"]["ndcg@5"] >= max(m["bm25"]["ndcg@5"], m["dense"]["ndcg@5"])
    assert report["fingerprint"]["embedding"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    junit = ET.parse(out["xml"]).getroot()
    assert junit.tag == "testsuite" and int(junit.get("tests")) == 34 and junit.get("failures") == "0"
    assert len(junit.findall("testcase/skipped")) == 24  # answer checks need a model
    assert "## ✅ llmctl eval: kestrel-docs" in out["md"].read_text()
    assert summary.read_text() == out["md"].read_text()
    page = out["html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "retention-daily" in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # self-contained


def write_suite(tmp_path, **changes):
    suite = yaml.safe_load(SUITE.read_text())
    suite.update(changes)
    path = tmp_path / "suite.yaml"
    write_trusted(path, suite)
    return path


def test_quality_below_threshold_exits_9_with_the_reason(tmp_path, data):
    """Through a real process: exit 9 as a CI step sees it."""
    r = run_cli("--data-dir", data, "eval", "-q", write_suite(tmp_path, thresholds={"precision@5": 0.9}), cwd=REPO)
    assert_gate_failed(r, "precision@5", "< 0.9")


def test_a_retrieval_only_suite_never_reads_as_all_cases_passed_when_its_gate_fails(tmp_path, data):
    suite = yaml.safe_load(SUITE.read_text())
    cases = [{k: v for k, v in c.items() if k in ("id", "query", "expected")} for c in suite["cases"][:4]]
    cases[0]["expected"] = ["sample_data/examples/jobs.toml"]  # not what its question finds first
    path = tmp_path / "retrieval.yaml"
    path.write_text(yaml.safe_dump({"name": "r", "metrics": ["hit@1"], "thresholds": {"hit@1": 1.0}, "cases": cases}))
    r = invoke("--data-dir", data, "eval", path, cwd=REPO)
    assert r.returncode == 9, r.stderr
    assert "Cases: 4, none with answer checks (the thresholds above are the verdict)" in r.stdout
    assert "4 passed" not in r.stdout


def test_baseline_regression_and_incomparable_runs(tmp_path, data):
    base = tmp_path / "base.json"
    assert eval_cli(data, SUITE, "--json-file", base).returncode == 0
    same = eval_cli(data, SUITE, "--baseline", base)
    assert same.returncode == 0 and "(+0.000, 95% CI [+0.000, +0.000], p 1, Holm 1; 0 better, 0 worse" in same.stdout
    judged = sum(1 for c in json.loads(base.read_text())["cases"] if c["expected"])  # no-answer cases have none
    assert 20 < judged < 30
    assert (f"Baseline: compared on the {judged} cases both runs scored (0 only in this run, 0 only in the "
            "baseline)") in same.stdout
    better = json.loads(base.read_text())
    for case in better["cases"]:
        case["metrics"][better["final_stage"]]["mrr@10"] += 0.1
    (tmp_path / "better.json").write_text(json.dumps(better))
    junit, md, page = tmp_path / "b.xml", tmp_path / "b.md", tmp_path / "b.html"
    r = eval_cli(data, SUITE, "--baseline", tmp_path / "better.json", "--junit", junit, "--markdown", md,
                 "--html", page)
    assert_gate_failed(r, "mrr@10 dropped -0.100")
    assert re.search(r"mrr@10: [\d.]+ -> [\d.]+ \(-0\.100, 95% CI \[-0\.100, -0\.100\], p 0\.000\d, Holm [\d.]+; "
                     r"0 better, "
                     rf"{judged} worse, 0 same\)  REGRESSED", r.stdout)
    failure = ET.parse(junit).getroot().find("testcase[@name='mrr@10 vs baseline']/failure")
    assert failure is not None and "95% CI" in failure.get("message")
    assert "| metric | baseline | now | delta | 95% CI | p | better / worse / same |" in md.read_text()
    assert re.search(r"<li>mrr@10: [\d.]+ → [\d.]+ \(-0\.100, 95% CI .*<b>REGRESSED</b></li>", page.read_text())
    # one case far off moves the mean past max_regression; only the significance gate sees noise
    noisy = json.loads(base.read_text())
    noisy["cases"][0]["metrics"][noisy["final_stage"]]["mrr@10"] += 2.0
    (tmp_path / "noisy.json").write_text(json.dumps(noisy))
    untested = tmp_path / "untested.yaml"
    untested.write_text(SUITE.read_text() + "\nsignificance: null\n")
    assert_gate_failed(eval_cli(data, untested, "--baseline", tmp_path / "noisy.json"), "mrr@10 dropped")
    gated = tmp_path / "significant.yaml"
    gated.write_text(SUITE.read_text() + "\nsignificance: 0.05\n")
    r = eval_cli(data, gated, "--baseline", tmp_path / "noisy.json", "--json")
    row = next(m for m in json.loads(r.stdout)["baseline"]["metrics"] if m["metric"] == "mrr@10")
    assert r.returncode == 0 and row["delta"] < -0.03 and row["p_value"] > 0.05 and not row["regressed"]
    assert (row["wins"], row["losses"]) == (0, 1)
    # a part of the suite against the whole baseline: only the shared cases are compared
    r = eval_cli(data, SUITE, "--limit", "5", "--baseline", base, "--json")
    b = json.loads(r.stdout)["baseline"]
    shared = b["cases"]["shared"]
    assert r.returncode == 0 and b["cases"] == {"shared": shared, "only_this_run": 0, "only_baseline": judged - shared}
    assert 1 <= shared <= 5
    assert all(m["delta"] == 0 for m in b["metrics"])
    edited = json.loads(base.read_text())
    for case in edited["cases"]:
        case["query"] += " (reworded)"  # the same ids asking something else are other cases
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    r = eval_cli(data, SUITE, "--baseline", tmp_path / "edited.json")
    assert r.returncode == 0 and f"not comparable: no case of this run ({judged}) is in the baseline" in r.stderr
    other = json.loads(base.read_text())
    other["fingerprint"]["corpus"] = "something-else"
    (tmp_path / "other.json").write_text(json.dumps(other))
    r = eval_cli(data, SUITE, "--baseline", tmp_path / "other.json")
    assert r.returncode == 0 and "not comparable: corpus differ" in r.stderr
    strict = write_suite(tmp_path, require_comparable_baseline=True)  # a CI gate that must compare
    r = eval_cli(data, strict, "--baseline", tmp_path / "other.json")
    assert_gate_failed(r, "baseline not comparable: corpus differ", "require_comparable_baseline: true")


def test_tags_limit_and_ab(tmp_path, data):
    r = eval_cli(data, SUITE, "--tag", "paraphrase", "--json")
    ids = [c["id"] for c in json.loads(r.stdout)["cases"]]
    assert len(ids) == 9 and "charity-discount" in ids
    r = eval_cli(data, SUITE, "--limit", "3", "--json")
    assert len(json.loads(r.stdout)["cases"]) == 3
    b = tmp_path / "b.yaml"
    b.write_text("retrieval:\n  bm25_weight: 1.0\nrerank:\n  enabled: false\n")
    md, page, junit = tmp_path / "ab.md", tmp_path / "ab.html", tmp_path / "ab.xml"
    r = eval_cli(data, SUITE, "--against", b, "--markdown", md, "--html", page, "--junit", junit)  # all cases
    assert r.returncode == 0 and "A/B:" in r.stdout and "b.yaml" in r.stdout, r.stdout + r.stderr
    num = r"[+-]?[\d.]+"
    row = rf"mrr@10: {num} vs {num} \({num}, 95% CI \[{num}, {num}\], p [\d.e-]+, Holm [\d.e-]+; \d+ better"
    assert re.search("  " + row, r.stdout)
    for report in (md, page, junit):  # the per-metric A/B rows in every format, not only the terminal's
        assert "A/B: A=" in report.read_text() and re.search(row, report.read_text()), report
    # a config whose difference the index fixes at ingest would run on the same index: refused, not a tie
    c = tmp_path / "c.yaml"
    c.write_text("chunking:\n  max_tokens: 128\ndata_dir: elsewhere\n")
    r = eval_cli(data, SUITE, "--against", c)
    assert_clean_error(r, 3, "--against", "chunking.max_tokens", "data_dir ('elsewhere')", "--baseline A.json")
    c.write_text(f"data_dir: {data}\nretrieval:\n  fusion: rrf\n")  # the same index named again: an A/B
    r = eval_cli(data, SUITE, "--against", c)
    assert r.returncode == 0 and "A/B:" in r.stdout, r.stderr
    # read as every config file is, before anything: /dev/zero filled the memory before the refusal
    assert_clean_error(eval_cli(data, SUITE, "--against", "/dev/zero"), 3, "/dev/zero is not a regular file")


def test_ab_of_two_models_compares_their_answers_and_costs_and_refuses_one_tape_for_both(tmp_path, data, fake_llm):
    """--against with another model: B's answers are paid for, so they are reported (pass rate, cost)
    and tested like the metrics; a tape (keyed by the prompt) would give B A's answers: refused."""
    from openai_server import FakeOpenAI, Reply

    def llm(server, price):
        return {"providers": [{"name": "m", "base_url": server.base_url, "model": "m", "retries": 0,
                               "price_input_per_1m": price, "price_output_per_1m": price}]}

    other = FakeOpenAI().start()
    try:
        fake_llm.responder = lambda body: Reply(text="It keeps 14 daily snapshots [1].")
        other.responder = lambda body: Reply(text="I do not know.")
        cases = [{"id": f"c{i}", "query": f"How many daily snapshots are kept? ({i})",
                  "expected": ["guides/retention-policies.md"], "answer": {"contains": ["14"]}} for i in range(6)]
        suite = tmp_path / "s.yaml"
        config = {"rerank": {"enabled": False}, "llm": llm(fake_llm, 1.0)}
        write_trusted(suite, {"name": "ab", "config": config, "cases": cases})
        b = tmp_path / "b.yaml"
        b.write_text(yaml.safe_dump({"rerank": {"enabled": False}, "llm": llm(other, 2.0)}))
        r = eval_cli(data, suite, "--against", b, "--json")
        assert r.returncode == 0, r.stderr
        ab = json.loads(r.stdout)["ab"]
        assert ab["a"]["metrics"]["answer_pass_rate"] == 1.0 and ab["b"]["metrics"]["answer_pass_rate"] == 0.0
        assert ab["paired"]["answer_pass_rate"]["losses"] == 6 and ab["b"]["cost_usd"] > ab["a"]["cost_usd"] > 0
        assert len([q for q in other.requests if q["path"].endswith("/chat/completions")]) == 6
        r = eval_cli(data, suite, "--against", b, "--record", tmp_path / "tape.jsonl")
        assert_clean_error(r, 2, "--against", "a tape is keyed by the prompt")
    finally:
        other.stop()


def test_json_prints_on_stdout_and_the_old_file_form_says_what_to_use(tmp_path, data):
    out = tmp_path / "run.json"
    r = eval_cli(data, SUITE, "--limit", "2", "--json", out)  # how --json was used before it became a flag
    assert_clean_error(r, 2, f"--json-file {out}")
    assert not out.exists()
    r = eval_cli(data, "--beir", tmp_path, "--json", out)
    assert_clean_error(r, 2, f"--json-file {out}")
    r = eval_cli(data, SUITE, "--json", "--json-file", out)
    assert_clean_error(r, 2, "--json", "not both")
    old = eval_cli(data, SUITE, "--limit", "2", "--json", "-")  # the old spelling of stdout still works
    assert old.returncode == 0 and len(json.loads(old.stdout)["cases"]) == 2


@pytest.mark.parametrize("change, words", [
    ({"cases": [{"id": "x"}]}, ["case 'x'", "'query' is required"]),
    ({"cases": [{"id": "x", "query": "q", "expected": "not-a-list"}]}, ["case 'x'", "expected"]),
    ({"thresholds": {"nonsense@10": 0.5}}, ["unknown metric 'nonsense@10'"]),  # not a metric anyone may add
    ({"thresholds": {"HIT@3": 0.5, "hit@3 ": 0.6}}, ["'hit@3 ' is hit@3 again"]),  # one metric, two spellings
    ({"cases": [{"id": "x", "query": "q", "expected": ["guides/nope.md"]}]},
     ["case 'x'", "'guides/nope.md' matches no indexed document"]),
    ({"cases": [{"id": "x", "query": "q", "colour": "red"}]}, ["case 'x'", "'colour' is not a known field"]),
    # a graded source's own problem, not "should be a valid string" (the other form of an expected source)
    ({"cases": [{"id": "x", "query": "q", "expected": ["a.md", {"source": "b.md", "grade": -1}]}]},
     ["case 'x'", "'expected.grade' (item 2)", "greater than or equal to 1, got -1"]),
    ({"config": {"data_dir": "elsewhere"}}, ["data_dir", "--data-dir"]),  # would be ignored: refused
    ({"config": {"retrieval": {"fusoin": "rrf"}}}, ["suite.yaml (its config: section)", "retrieval.fusoin"]),
])
def test_bad_suites_name_the_case(tmp_path, data, change, words):
    assert_clean_error(eval_cli(data, write_suite(tmp_path, **change)), 3, *words)


def test_answer_checks_against_a_model(tmp_path, data, fake_llm):
    from openai_server import Reply

    suite = {"name": "answers", "config": {"rerank": {"enabled": False}, "llm": {"providers": [
        {"name": "local", "base_url": fake_llm.base_url, "model": "m", "retries": 0}]}},
        "cases": [
            {"id": "good", "query": "How many daily snapshots are kept?",
             "expected": ["guides/retention-policies.md"], "answer": {"contains": ["14"]}},
            {"id": "bad", "query": "What does the Team edition cost?", "expected": ["policies/pricing.md"],
             "answer": {"contains": ["12"], "not_contains": ["free"]}},
            {"id": "unknown", "query": "Does Kestrel support tape drives?", "answer": {"no_answer": True}},
        ]}
    path = tmp_path / "answers.yaml"
    write_trusted(path, suite)
    fake_llm.on("How many daily snapshots", Reply(text="It keeps 14 daily snapshots [1]."))
    fake_llm.on("What does the Team edition cost", Reply(text="It is free [1]."))
    fake_llm.on("Does Kestrel support tape drives", Reply(text="The sources do not contain the answer."))
    junit = tmp_path / "j.xml"
    r = eval_cli(data, path, "--junit", junit, "--json-file", tmp_path / "a.json")
    assert_gate_failed(r, "1 case(s) failed: bad")
    cases = {c["id"]: c for c in json.loads((tmp_path / "a.json").read_text())["cases"]}
    assert cases["good"]["answer_status"] == "passed" and cases["unknown"]["answer_status"] == "passed"
    assert [c["check"] for c in cases["bad"]["checks"] if not c["passed"]] == [
        "contains '12'", "does not contain 'free'"]
    failure = ET.parse(junit).getroot().find("testcase[@name='bad']/failure")
    assert "contains '12'" in failure.get("message")


def test_an_answer_that_fails_leaves_the_cases_retrieval_metrics_and_thresholds(tmp_path, data, fake_llm):
    """A 429 on every answer is an error of each case's answer; retrieval ran before it, and its
    metrics and thresholds are what a run without answers reports (they were all 0.000 / n/a)."""
    from openai_server import Reply

    suite = {"name": "answers", "thresholds": {"hit@3": 0.5},
             "config": {"rerank": {"enabled": False}, "llm": {"providers": [
                 {"name": "local", "base_url": fake_llm.base_url, "model": "m", "retries": 0}]}},
             "cases": [{"id": "a", "query": "How many daily snapshots are kept?",
                        "expected": ["guides/retention-policies.md"], "answer": {"contains": ["14"]}},
                       {"id": "b", "query": "What does the Team edition cost?", "expected": ["policies/pricing.md"],
                        "answer": {"contains": ["free"]}}]}
    path = tmp_path / "answers.yaml"
    write_trusted(path, suite)
    fake_llm.responder = lambda body: Reply(kind="status", status=429, headers={"Retry-After": "0"})
    r = eval_cli(data, path, "--json-file", tmp_path / "failed.json")
    assert r.returncode == 9 and "Traceback" not in r.stderr, r.stderr
    failed = json.loads((tmp_path / "failed.json").read_text())
    assert all(c["error"] for c in failed["cases"])
    r = eval_cli(data, path, "--no-answers", "--json-file", tmp_path / "retrieval.json")
    assert r.returncode == 0, r.stderr
    alone = json.loads((tmp_path / "retrieval.json").read_text())
    assert failed["metrics"] == alone["metrics"] and alone["metrics"][alone["final_stage"]]["hit@3"] == 1.0
    assert [t["value"] for t in failed["thresholds"]] == [1.0]


def test_a_question_declined_for_low_confidence_is_checked_not_crashed(tmp_path, data, fake_llm):
    from openai_server import Reply

    suite = {"name": "declined", "config": {"rerank": {"enabled": False}, "llm": {
        "skip_when_irrelevant": True, "providers": [
            {"name": "local", "base_url": fake_llm.base_url, "model": "m", "retries": 0}]}},
        "cases": [
            {"id": "good", "query": "How many daily snapshots are kept?", "answer": {"contains": ["14"]}},
            {"id": "mongolia", "query": "What is the capital city of Mongolia?", "answer": {"no_answer": True}},
            {"id": "wants-text", "query": "What is the capital city of Mongolia?",
             "answer": {"contains": ["Ulaanbaatar"]}},
        ]}
    path = tmp_path / "declined.yaml"
    write_trusted(path, suite)
    fake_llm.on("How many daily snapshots", Reply(text="It keeps 14 daily snapshots [1]."))
    r = eval_cli(data, path, "--json-file", tmp_path / "d.json")
    assert_gate_failed(r, "1 case(s) failed: wants-text")  # declined: no text to contain anything
    cases = {c["id"]: c for c in json.loads((tmp_path / "d.json").read_text())["cases"]}
    assert cases["mongolia"]["answer_status"] == "passed" and "no model was called" in cases["mongolia"]["answer"]
    assert cases["good"]["answer_status"] == "passed"
    assert not any("Mongolia" in str(q["body"]) for q in fake_llm.requests)


def make_beir(root: Path) -> Path:
    topics = {"d1": "Cats are small domesticated felines that purr.",
              "d2": "The Eiffel Tower is a wrought-iron tower in Paris.",
              "d3": "Photosynthesis converts light energy into chemical energy in plants.",
              "d4": "Volcanoes erupt molten rock called lava.",
              "d5": "Bees pollinate flowers and produce honey."}
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": k, "title": "", "text": v})
                                                 for k, v in topics.items()))
    queries = {"q1": "Which animal purrs?", "q2": "Where is the Eiffel Tower?",
               "q3": "How do plants turn light into energy?", "q4": "What insect makes honey?"}
    (root / "queries.jsonl").write_text("\n".join(json.dumps({"_id": k, "text": v}) for k, v in queries.items()))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\n"
                                             "q4\td5\t1\n")
    return root


def test_beir_dataset_gets_its_own_index_and_standard_metrics(tmp_path):
    beir = make_beir(tmp_path / "tiny")
    data = tmp_path / "data"
    r = invoke("--data-dir", data, "eval", "-q", "--beir", beir, "--stages", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["suite"] == "beir:tiny:test" and len(report["cases"]) == 4
    assert set(report["metrics"]["hybrid"]) == {"ndcg@10", "recall@100", "mrr@10"}
    assert report["metrics"]["hybrid"]["recall@100"] == 1.0
    assert report["metrics"]["dense"]["mrr@10"] == 1.0
    assert (data / "beir-tiny" / "manifest.sqlite").exists()
    mtime = (data / "beir-tiny" / "bm25" / "CURRENT").stat().st_mtime_ns
    assert invoke("--data-dir", data, "eval", "-q", "--beir", beir).returncode == 0
    assert (data / "beir-tiny" / "bm25" / "CURRENT").stat().st_mtime_ns == mtime  # index reused
    assert_clean_error(invoke("--data-dir", data, "eval", "--beir", beir, "--split", "dev"), 4, "qrels/dev.tsv")


BAD_BEIR = {  # what is wrong -> (qrels, queries lines, words of the one-line error)
    "float grade": ("q1\td1\t1\nq2\td2\t0.5\n", None, ["test.tsv line 2", "0.5", "whole-number"]),
    "no score": ("q1\td1\n", None, ["test.tsv line 1", "query-id<TAB>corpus-id<TAB>score"]),
    "not UTF-8": (None, b'{"_id": "q1", "text": "caf\xe9"}\n', ["queries.jsonl", "not valid UTF-8"]),
    "empty text": (None, '{"_id": "q1", "text": " "}\n', ["queries.jsonl line 1", "'q1' has an empty text"]),
    "not an object": (None, '["q1"]\n', ["queries.jsonl line 1", "JSON object"]),
    "query missing": ("q1\td1\t1\nq9\td2\t1\n", None, ["judges 1 query", "'q9'"]),
}


@pytest.mark.parametrize("name", BAD_BEIR)
def test_bad_beir_files_are_one_line_errors_and_no_case_is_dropped(tmp_path, name):
    from llmctl.errors import InputError
    from llmctl.evals.beir import load_beir

    qrels, queries, words = BAD_BEIR[name]
    root = make_beir(tmp_path / "tiny")
    if qrels is not None:
        (root / "qrels" / "test.tsv").write_text(qrels)
    if queries is not None:
        (root / "queries.jsonl").write_bytes(queries if isinstance(queries, bytes) else queries.encode())
    with pytest.raises(InputError) as err:
        load_beir(root, "test")
    assert all(w in str(err.value) for w in words), str(err.value)


def test_beir_qrels_with_float_grades_or_in_trec_columns_are_read_and_the_header_skipped(tmp_path):
    from llmctl.evals.beir import load_beir

    root = make_beir(tmp_path / "tiny")
    for qrels in ("q1\td1\t1.0\nq2\td2\t2\n", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\n",
                  "q1 0 d1 1\nq2 0 d2 2\n"):
        (root / "qrels" / "test.tsv").write_text(qrels)
        suite = load_beir(root, "test")[1]
        assert [(c.id, c.qrels_specs()) for c in suite.cases] == [("q1", [("d1", 1)]), ("q2", [("d2", 2)])], qrels


def test_llm_judge_grades_answers_and_a_broken_judge_is_an_error(tmp_path, data, fake_llm):
    from openai_server import Reply

    suite = {"name": "judged", "judge": True, "config": {"rerank": {"enabled": False}, "llm": {
        "providers": [{"name": "local", "base_url": fake_llm.base_url, "model": "m", "retries": 0,
                       "price_input_per_1m": 1.0, "price_output_per_1m": 2.0}]}},
        "cases": [
            {"id": "ok", "query": "How many daily snapshots are kept?", "reference": "14",
             "expected": ["guides/retention-policies.md"], "answer": {"contains": ["14"]}},
            {"id": "broken-judge", "query": "What does the Team edition cost?", "answer": {}},
        ]}
    path = tmp_path / "judged.yaml"
    write_trusted(path, suite)
    def script(answer_ok, verdict_ok, answer_bad, verdict_bad):  # judge requests quote the question too
        fake_llm.on(f"Answer to grade:\n{answer_ok}", Reply(text=verdict_ok))
        fake_llm.on(f"Answer to grade:\n{answer_bad}", Reply(text=verdict_bad))
        fake_llm.on("How many daily snapshots", Reply(text=answer_ok))
        fake_llm.on("What does the Team edition cost", Reply(text=answer_bad))

    script("14 daily snapshots [1].", '{"faithful": true, "correct": true, "reason": "matches source 1"}',
           "12 dollars [1].", "I think it is fine.")  # the second verdict is not the JSON asked for
    r = eval_cli(data, path, "--json-file", tmp_path / "j.json")
    assert_gate_failed(r, "broken-judge")
    cases = {c["id"]: c for c in json.loads((tmp_path / "j.json").read_text())["cases"]}
    assert cases["ok"]["answer_status"] == "passed"
    assert [c["check"] for c in cases["ok"]["checks"]] == [
        "contains '14'", "judge: faithful to the sources", "judge: agrees with the reference answer"]
    ledger = sqlite3.connect(data / "ledger.sqlite").execute(
        "SELECT command, cost_usd FROM calls WHERE status = 'ok' AND question LIKE 'How many daily%'").fetchall()
    assert sorted(c for c, _ in ledger) == ["eval", "eval-judge"]  # the answer and its grading
    assert cases["ok"]["cost_usd"] == pytest.approx(sum(cost for _, cost in ledger))  # both are the run's cost
    assert cases["broken-judge"]["answer_status"] == "error"
    assert cases["broken-judge"]["error"].startswith("judge failed: the judge did not return")
    judged = [r["body"]["messages"] for r in fake_llm.requests if "You grade" in r["body"]["messages"][0]["content"]]
    assert len(judged) == 2 and any("Reference answer: 14" in m[1]["content"] for m in judged)
    report = json.loads((tmp_path / "j.json").read_text())
    answers = report["fingerprint"]["answers"]  # what changes answers is recorded with the run
    assert (answers["provider"], answers["model"], answers["judge_model"], answers["temperature"]) == (
        "local", "m", "m", 0.0)
    assert len(answers["system_prompt_sha256"]) == 16
    assert report["load_seconds"] > 0  # model loading is reported apart from the per-case latencies
    # another system prompt changes the fingerprint's answer side only: noted, never blocking
    suite["config"]["llm"]["system_prompt"] = "Answer in one word."
    write_trusted(path, suite)
    script("14 [1].", '{"faithful": true, "correct": true, "reason": "ok"}', "12 [1].", "not json")
    r = eval_cli(data, path, "--baseline", tmp_path / "j.json", "--json")
    b = json.loads(r.stdout)["baseline"]
    assert b["comparable"] is True and b["notes"] == [
        "answers settings differ from the baseline (answer checks are per run, never compared)"]


def test_beir_eval_scores_the_depth_users_get(tmp_path):
    """The ranking scored is the configured one (what `query` returns); a ranking shorter than the
    deepest cutoff (recall@100) is only lengthened at its tail."""
    beir = make_beir(tmp_path / "tiny")
    data = tmp_path / "data"
    env = {"LLMCTL_RETRIEVAL__DENSE_K": "1", "LLMCTL_RETRIEVAL__BM25_K": "1", "LLMCTL_RERANK__ENABLED": "false"}
    r = invoke("--data-dir", data, "eval", "-q", "--beir", beir, "--stages", "--json", env=env)
    report = json.loads(r.stdout)
    depth = report["fingerprint"]["depth"]
    assert (depth["dense_k"], depth["bm25_k"], depth["tail_from_k"]) == (1, 1, 300)
    assert report["fingerprint"]["retrieval"]["dense_k"] == 1 and report["extended_cases"] == 4
    assert report["metrics"]["hybrid"]["recall@100"] == 1.0  # from the lengthened tail
    for case in report["cases"][:2]:
        r = invoke("--data-dir", data / "beir-tiny", "query", "--no-llm", "--json", "-k", "1", case["query"],
                    env=env, cwd=beir)
        record = json.loads(r.stdout)["hits"][0]["location"].split("(record ")[1].rstrip(")")
        assert case["top"]["hybrid"][0] == f"corpus.jsonl#{record}"  # eval's first = what query returns


def test_report_paths_are_checked_before_the_run_and_a_run_with_nothing_judged_skips_thresholds(tmp_path, data):
    # a report in a folder that does not exist yet: made, like --record's
    r = eval_cli(data, SUITE, "--tag", "unanswerable", "--junit", tmp_path / "reports" / "junit.xml",
                 "--markdown", tmp_path / "reports" / "md" / "summary.md", "--no-answers")
    assert r.returncode == 0, r.stderr  # nothing judged: the retrieval thresholds are skipped, not failed
    junit = ET.parse(tmp_path / "reports" / "junit.xml").getroot()
    assert junit.get("failures") == "0"
    skipped = [s.get("message") for s in junit.iter("skipped")]
    assert skipped.count("no case in this run has expected sources") == 4, skipped
    assert all("--no-answers was given" in m for m in skipped if m.startswith("answer checks"))
    md = (tmp_path / "reports" / "md" / "summary.md").read_text()
    assert "| hit@3 ≥ 0.95 | - | skipped: no case in this run has expected sources |" in md
    assert "answer check(s) skipped: --no-answers was given" in md and "0.000" not in md
    r = eval_cli(data, SUITE, "--tag", "unanswerable", "--json")  # --json readers get the warnings too
    warned = json.loads(r.stdout)["warnings"]
    assert any("retrieval thresholds are skipped" in w for w in warned), warned
    assert any("answer check(s) skipped: no model configured" in w for w in warned), warned
    # a report path that is a folder: a usage error before any work, naming the flag
    r = eval_cli(data, SUITE, "--json-file", tmp_path)
    assert_clean_error(r, 2, "--json-file")
    assert "is a folder" in r.stderr
    suite = tmp_path / "suite.yaml"  # a report over the suite it ran, or two reports in one file: refused
    suite.write_text(SUITE.read_text())
    assert_clean_error(eval_cli(data, suite, "--json-file", suite), 2, "--json-file", "an input of this run")
    assert suite.read_text() == SUITE.read_text()
    r = eval_cli(data, SUITE, "--json-file", tmp_path / "same.txt", "--junit", tmp_path / "same.txt")
    assert_clean_error(r, 2, "--junit", "is also --json-file")
