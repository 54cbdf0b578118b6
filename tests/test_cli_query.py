import json
import re
import subprocess
import sys

import yaml
from cli import assert_clean_error, child_env, invoke, run_cli


def write_config(tmp_path, base_url: str | None = None, **llm) -> str:
    cfg = {"rerank": {"enabled": False}}
    if base_url:
        cfg["llm"] = {"providers": [{"name": "local", "base_url": base_url, "model": "fake-model",
                                     "context_window": 4096, "timeout": 5, "retries": 0}], **llm}
    path = tmp_path / "llmctl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_retrieval_only_output_and_json(tmp_path, sample_index):
    cfg = write_config(tmp_path)
    r = invoke("--config", cfg, "--data-dir", sample_index, "query", "What does the Team edition cost?")
    assert r.returncode == 0, r.stderr
    ranked = [line for line in r.stdout.splitlines() if re.match(r"^\d+\. ", line)]
    assert len(ranked) == 5
    assert re.fullmatch(r"1\. sample_data/\S+:\d+-\d+  score \d\.\d{3}", ranked[0])
    assert any("policies/pricing.md" in line for line in ranked[:3])
    r = invoke("--config", cfg, "--data-dir", sample_index, "query", "--json", "-k", "3",
               "What does the Team edition cost?")
    doc = json.loads(r.stdout)
    assert len(doc["hits"]) == 3 and doc["answer"] is None
    assert set(doc["hits"][0]["stages"]) >= {"bm25", "dense", "fused"}
    assert set(doc["latency_ms"]) >= {"embed", "dense", "bm25", "fusion", "pack"}


def test_question_from_stdin(tmp_path, sample_index):
    r = invoke("--config", write_config(tmp_path), "--data-dir", sample_index, "query", "--json", "-",
               input="Is Windows supported?\n")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["question"] == "Is Windows supported?"


def test_streamed_answer_and_citations_through_the_cli(tmp_path, sample_index, fake_llm):
    from openai_server import Reply

    fake_llm.script.append(Reply(text="Kestrel keeps 14 daily snapshots by default [1]."))
    cfg = write_config(tmp_path, fake_llm.base_url)
    r = invoke("--config", cfg, "--data-dir", sample_index, "query", "How many daily snapshots are kept?")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Kestrel keeps 14 daily snapshots by default [1].\n")
    assert "Sources:\n  [1] sample_data/guides/retention-policies.md:" in r.stdout
    fake_llm.script.append(Reply(text="Fourteen [1].", usage=False))
    r = invoke("--config", cfg, "--data-dir", sample_index, "query", "--json", "daily snapshots kept?")
    doc = json.loads(r.stdout)
    assert doc["answer"] == "Fourteen [1]." and doc["usage"]["source"] == "estimated"
    assert doc["citations"][0]["source"].endswith("retention-policies.md")
    assert "llm" in doc["latency_ms"]


def test_query_errors_are_one_line_with_exit_codes(tmp_path, sample_index):
    """Through a real process: the exit codes as a shell sees them, no traceback from start-up."""
    cfg = write_config(tmp_path)
    assert_clean_error(run_cli("--config", cfg, "--data-dir", tmp_path / "none", "query", "hi"),
                       5, "No index", "llmctl ingest")
    # exit 2, in this process (test_cli_runner compares the same --where error with a real process)
    assert_clean_error(invoke("--config", cfg, "--data-dir", sample_index, "query", "  "), 2, "empty")
    assert_clean_error(invoke("--config", cfg, "--data-dir", sample_index, "query", "--where", "size=3",
                               "x"), 2, "unknown field 'size'")
    assert_clean_error(invoke("--config", cfg, "--data-dir", sample_index, "query", "--where", "kind=markdwn",
                               "x"), 2, "unknown kind 'markdwn'", "markdown, rst, text, html, pdf, jsonl, code")
    down = write_config(tmp_path, "http://127.0.0.1:9/v1")
    assert_clean_error(run_cli("--config", down, "--data-dir", sample_index, "query", "restore"),
                       7, "cannot reach 'local'", "127.0.0.1:9")


def test_a_question_the_corpus_does_not_cover_is_flagged_and_can_skip_the_model(tmp_path, sample_index, fake_llm):
    from openai_server import Reply

    cfg = write_config(tmp_path, fake_llm.base_url)
    absent = "What is the capital of Mongolia?"
    r = invoke("--config", cfg, "--data-dir", sample_index, "query", "--no-llm", "--json", absent)
    doc = json.loads(r.stdout)
    assert doc["confidence"]["low"] is True and doc["hits"]  # the hits are still shown
    assert any(w.startswith("low confidence: nothing retrieved looks relevant") for w in doc["warnings"])
    r = invoke("--config", cfg, "--data-dir", sample_index, "query", "--skip-irrelevant", absent)
    assert r.returncode == 0 and "not answered: nothing relevant was found" in r.stderr
    assert fake_llm.requests == []  # no model call, no cost
    r = invoke("--config", cfg, "--data-dir", sample_index, "query", "--skip-irrelevant", "--json", absent)
    assert json.loads(r.stdout)["skipped"] == "low_confidence" and json.loads(r.stdout)["answer"] is None
    fake_llm.script.append(Reply(text="Fourteen [1]."))
    r = invoke("--config", cfg, "--data-dir", sample_index, "query", "--skip-irrelevant", "--json",
               "How many daily snapshots are kept?")
    doc = json.loads(r.stdout)
    assert doc["confidence"]["low"] is False and doc["answer"] == "Fourteen [1]." and doc["skipped"] is None
    assert len(fake_llm.requests) == 1


def test_a_repeated_question_is_answered_without_loading_the_embedding_model(tmp_path, sample_index):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(sample_index, data, ignore=shutil.ignore_patterns("queries.sqlite*"))  # nothing asked yet
    cfg = write_config(tmp_path)
    question = "How many daily snapshots are kept?"
    code = ("import sys, json; from llmctl import Workspace; "
            "ws = Workspace(config_path=sys.argv[1], data_dir=sys.argv[2]); "
            "hits = [h.id for h in ws.search(sys.argv[3], k=3)]; "
            "print(json.dumps({'hits': hits, 'onnxruntime': 'onnxruntime' in sys.modules, "
            "'torch': 'torch' in sys.modules}))")
    runs = [json.loads(subprocess.run([sys.executable, "-c", code, cfg, str(data), question], capture_output=True,
                                      text=True, env=child_env(), timeout=300).stdout) for _ in range(2)]
    assert runs[0]["onnxruntime"] is True  # first time: embedded with the ONNX model
    assert runs[1]["onnxruntime"] is False and runs[1]["torch"] is False  # again: remembered, no model
    assert runs[1]["hits"] == runs[0]["hits"]


def test_a_file_name_with_a_newline_keeps_each_hit_on_its_own_line(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "new\nline.md").write_text("# Zebra\n\nThe zebrafile note, in a file whose name has a newline.\n")
    data = tmp_path / "data"
    assert invoke("--data-dir", data, "ingest", "-q", docs).returncode == 0
    r = invoke("--data-dir", data, "query", "--no-llm", "zebrafile note")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^1\. docs/new\\nline\.md:\d+-\d+  score ", r.stdout, re.M), r.stdout


def test_escape_sequences_from_a_model_or_a_document_never_reach_the_terminal(tmp_path, fake_llm):
    """A document can steer the model that writes the answer: its text and the answer are shown
    with control characters escaped (a title change, a cleared screen), tabs and lines kept."""
    from openai_server import Reply

    docs, data = tmp_path / "docs", tmp_path / "data"
    docs.mkdir()
    (docs / "evil.md").write_text(
        "# Evil page\n\nThe frobnicator limit is \x1b]0;HACKED\x07 forty-two \x1b[2J units.\n")
    assert invoke("--data-dir", data, "ingest", "-q", docs).returncode == 0
    r = invoke("--data-dir", data, "query", "--no-llm", "-k", "1", "What is the frobnicator limit?")
    assert r.returncode == 0 and "\x1b" not in r.stdout and "\\x1b]0;HACKED\\x07 forty-two \\x1b[2J" in r.stdout
    fake_llm.script.append(Reply(text="Answer \x1b]0;PWNED\x07 and \x1b[31mred\x1b[0m\tdone [1] and [7]."
                                      " Open \u202egnp.exe\u202c."))  # a right-to-left override: 'exe.png'
    cfg = write_config(tmp_path, fake_llm.base_url)
    r = invoke("--config", cfg, "--data-dir", data, "query", "What is the frobnicator limit?")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Answer \\x1b]0;PWNED\\x07 and \\x1b[31mred\\x1b[0m\tdone [1] and [7]."
                               " Open \\u202egnp.exe\\u202c.\n")
    assert "\x1b" not in r.stdout
    # a citation of a source that was not sent is said on stderr as well as in --json (it was --json only)
    assert "the answer cites sources that do not exist: [7]" in r.stderr


def test_citations_are_read_as_people_write_them_and_never_from_code():
    from llmctl.search.prompt import cited_numbers

    assert cited_numbers("Use `sys.argv[1]` and `jobs[0]` in the hook; see [2-4] and [3; 5].") == [2, 3, 4, 5]
    assert cited_numbers("a [1, 2] b [3][4] c [2] d [6\u20137]") == [1, 2, 3, 4, 6, 7]
    assert cited_numbers("```\nx = a[9]\n```\nthen [1]") == [1]
    assert cited_numbers("~~~\nlist[7]\n~~~\n``code [2]`` and [3-1]") == [1, 2, 3]
    assert cited_numbers("no citation at all") == []


def test_an_api_key_is_never_shown_or_stored_even_when_the_provider_echoes_it(tmp_path, sample_index, fake_llm):
    from openai_server import Reply

    secret = "sk-echoed-secret-4242"
    cfg = {"rerank": {"enabled": False}, "llm": {"providers": [
        {"name": "p", "base_url": fake_llm.base_url, "model": "m", "api_key_env": "PROBE_KEY", "retries": 0}]}}
    path = tmp_path / "echo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {"PROBE_KEY": secret}
    for args, echoed in (([], secret), (["--json"], secret.replace("-", "%2D"))):  # as sent, URL-encoded
        # a 400 whose message quotes the request's Authorization header
        fake_llm.script.append(Reply(kind="status", status=400,
                                     body={"error": {"message": f"bad request, key was Bearer {echoed}"}}))
        r = invoke("--config", path, "--data-dir", sample_index, "query", *args, "How are restores done?", env=env)
        assert r.returncode == 7 and "key was Bearer ***" in r.stdout + r.stderr
        assert secret not in r.stdout + r.stderr and echoed not in r.stdout + r.stderr
    assert all(secret.encode() not in f.read_bytes() for f in sample_index.rglob("*") if f.is_file())
    # a key an HTTP header cannot carry is named as such, not blamed on the server
    r = invoke("--config", path, "--data-dir", sample_index, "query", "restores?", env={"PROBE_KEY": "sk-a\nb"})
    assert_clean_error(r, 7, "PROBE_KEY holds a character an HTTP header cannot carry")
    # credentials written into a base_url are not shown by status or by an unreachable provider's error
    cfg["llm"]["providers"][0]["base_url"] = "http://user:sk-inurl-secret@127.0.0.1:9/v1?api_key=sk-query-secret"
    path.write_text(yaml.safe_dump(cfg))
    for args in (["status", "--json"], ["query", "restores?"]):
        r = invoke("--config", path, "--data-dir", sample_index, *args, env=env)
        assert "sk-inurl-secret" not in r.stdout + r.stderr and "sk-query-secret" not in r.stdout + r.stderr
        assert "***@127.0.0.1:9" in r.stdout + r.stderr, r.stdout + r.stderr
