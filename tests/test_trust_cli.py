"""Issue "Trust in daily use" through the CLI: flags and variables are validated, the answer's
failure keeps the retrieved hits, Ctrl-C is reported, money keeps its digits."""

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli import assert_clean_error, child_env, invoke, run_cli
from openai_server import Reply


def config(tmp_path, base_url=None, **llm) -> str:
    cfg = {}
    if base_url:
        cfg["llm"] = {"providers": [{"name": "local", "base_url": base_url, "model": "fake-model",
                                     "context_window": 4096, "timeout": 5, "retries": 0, **llm.pop("p", {})}],
                      **llm}
    path = tmp_path / "llmctl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.parametrize("args", [["-k", "-1"], ["-k", "0"], ["--bm25-k", "0"], ["--dense-k", "-5"],
                                  ["--depth", "-1"], ["--where", "foo=bar"], ["--where", "source"],
                                  ["--fusion", "best"]])
def test_bad_query_flags_are_usage_errors(tmp_path, args):
    r = invoke("--data-dir", tmp_path / "none", "query", *args, "question")
    assert_clean_error(r, 2, args[0])


def test_cost_report_dates_and_version(tmp_path):
    r = invoke("--data-dir", tmp_path, "cost-report", "--since", "2026-12-02", "--until", "2026-12-01")
    assert_clean_error(r, 2, "--since", "not before until (--until)")
    r = run_cli("--version")  # the real interpreter start-up, once: no traceback, the version
    assert r.returncode == 0 and r.stdout.startswith("llmctl ") and r.stderr == ""


@pytest.mark.parametrize("name,value,code,words", [
    ("LLMCTL_RETRIEVAL__K", "abc", 3, ["LLMCTL_RETRIEVAL__K", "retrieval.k"]),
    ("LLMCTL_RETREIVAL__K", "3", 3, ["LLMCTL_RETREIVAL__K", "did you mean LLMCTL_RETRIEVAL__K"]),
    ("LLMCTL_DATA_DIRR", "x", 3, ["LLMCTL_DATA_DIRR", "did you mean LLMCTL_DATA_DIR"]),
])
def test_environment_variables_are_checked(tmp_path, name, value, code, words):
    r = invoke("--data-dir", tmp_path, "cost-report", env={name: value})
    assert_clean_error(r, code, *words)


def test_a_key_variable_named_in_the_config_is_not_a_typo(tmp_path):
    cfg = config(tmp_path, "http://127.0.0.1:9/v1", p={"api_key_env": "LLMCTL_OPENAI_KEY"})
    r = invoke("--config", cfg, "--data-dir", tmp_path, "cost-report", env={"LLMCTL_OPENAI_KEY": "sk-x"})
    assert r.returncode == 0, r.stderr


def test_missing_key_is_reported_before_anything_is_loaded(tmp_path):
    cfg = config(tmp_path, "http://127.0.0.1:9/v1", p={"api_key_env": "SOME_UNSET_KEY_VAR"})
    r = invoke("--config", cfg, "--data-dir", tmp_path / "no-index", "query", "anything")
    assert_clean_error(r, 7, "SOME_UNSET_KEY_VAR")  # not exit 5 'no index': checked first


def test_failed_answer_still_prints_the_hits(tmp_path, data):
    cfg = config(tmp_path, "http://127.0.0.1:9/v1")
    r = invoke("--config", cfg, "--data-dir", data, "query", "How many daily snapshots are kept?")
    assert r.returncode == 7
    assert "1. sample_data/" in r.stdout and "retention-policies.md" in r.stdout
    assert r.stderr.strip().splitlines()[-1].startswith("Error: ") and "cannot reach" in r.stderr
    r = invoke("--config", cfg, "--data-dir", data, "query", "--json", "daily snapshots")
    assert r.returncode == 7
    doc = json.loads(r.stdout)
    assert doc["hits"] and doc["answer"] is None and doc["error"]["exit_code"] == 7


def test_a_huge_question_is_a_usage_error(tmp_path, sample_index):
    cfg = config(tmp_path, "http://127.0.0.1:9/v1")
    question = "How are snapshots kept? " * 4000  # ~100 KB: over retrieval.max_query_chars
    r = invoke("--config", cfg, "--data-dir", sample_index, "query", "-", input=question)
    assert_clean_error(r, 2, "96,000 characters", "retrieval.max_query_chars")


def test_a_question_too_long_for_the_model_is_an_input_error(tmp_path, sample_index):
    """Under the length cap, but more than half of a small model's window."""
    cfg = config(tmp_path, "http://127.0.0.1:9/v1", p={"context_window": 1024})
    question = "How are snapshots kept? " * 100
    r = invoke("--config", cfg, "--data-dir", sample_index, "query", "-", input=question)
    assert_clean_error(r, 4, "question is too long", "shorten the question")


def test_default_config_says_once_what_did_not_run_and_how_to_turn_it_on(tmp_path, sample_index):
    from llmctl.search.pipeline import SKIPPED

    r = invoke("--data-dir", sample_index, "query", "How many daily snapshots are kept?")
    lines = r.stderr.splitlines()
    assert r.returncode == 0 and len(lines) == 2 and lines[0] == SKIPPED["no_model"]
    assert lines[1].startswith("reranking did not run (") and lines[1].endswith(
        "turn it on: llmctl models pull cross-encoder/ms-marco-MiniLM-L-6-v2 "
        "(or, to stop this note, --no-rerank or rerank.enabled: false)")
    assert invoke("--data-dir", sample_index, "query", "--no-rerank", "daily snapshots").stderr.splitlines() == [
        SKIPPED["no_model"]]  # the way out it names works
    r = invoke("--data-dir", sample_index, "query", "--json", "daily snapshots")
    assert json.loads(r.stdout)["rerank"]["status"] == "unavailable"
    r = invoke("--data-dir", sample_index, "query", "daily snapshots", env={"LLMCTL_RERANK__ENABLED": "true"})
    assert r.returncode == 0 and "reranker" in r.stderr  # asked for explicitly: warned


def test_dry_run_json_reports_the_real_chunk_total(tmp_path, corpus):
    data = tmp_path / "data"
    r = invoke("--data-dir", data, "ingest", corpus / "guides", "--json")
    total = json.loads(r.stdout)["chunks"]["total"]
    r = invoke("--data-dir", data, "ingest", corpus / "guides", "--dry-run", "--json")
    assert json.loads(r.stdout)["chunks"]["total"] == total > 0


def test_ctrl_c_during_an_answer_is_reported_and_logged(tmp_path, data, fake_llm):
    fake_llm.script.append(Reply(kind="stall", text="one two three", stall_after=1, stall_for=20))
    cfg = config(tmp_path, fake_llm.base_url)
    env = child_env()
    # Started as from a terminal: SIGINT at its default. A suite started as a background job of a
    # non-interactive shell (`make test &`, nohup, many CI runners) has SIGINT ignored, as POSIX
    # asks, every process it starts inherits that, and Python keeps an ignored SIGINT ignored.
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "--config", cfg, "--data-dir", str(data), "query",
                             "How many daily snapshots are kept?"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not fake_llm.requests:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.5)  # the first token is out; the server now stalls
    ignored = _ignores_sigint(proc.pid)
    # a stop request either way: SIGTERM takes the same path as Ctrl-C (exit 130, ledger row)
    proc.send_signal(signal.SIGTERM if ignored else signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (ignored, err)
    assert err.strip().splitlines()[-1].startswith("Interrupted: ")
    assert "Traceback" not in err
    rows = sqlite3.connect(data / "ledger.sqlite").execute("SELECT status, error_class FROM calls").fetchall()
    assert rows == [("error", "interrupted")]


def _ignores_sigint(pid: int) -> bool:
    """Whether the process ignores SIGINT (its SigIgn mask in /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return bool(int(status.split("SigIgn:")[1].split()[0], 16) & (1 << (signal.SIGINT - 1)))


def test_money_keeps_significant_digits_and_cache_stats_speak_iso(tmp_path, data, fake_llm):
    cfg = config(tmp_path, fake_llm.base_url, p={"price_input_per_1m": 0.5, "price_output_per_1m": 1.0},
                 budget={"daily_usd": 0.000001})
    r = invoke("--config", cfg, "--data-dir", data, "cost-report")
    assert "of $0.000001" in r.stdout and "$0.0000 " not in r.stdout
    r = invoke("--config", cfg, "--data-dir", data, "query", "--json", "daily snapshots")
    assert r.returncode == 8 and json.loads(r.stdout)["hits"]
    assert "spent $0.00 of $0.000001" in r.stderr and "would add about $0.000" in r.stderr
    r = invoke("--config", config(tmp_path, fake_llm.base_url), "--data-dir", data, "query", "daily snapshots")
    assert r.returncode == 0, r.stderr
    r = invoke("--config", cfg, "--data-dir", data, "cache-stats", "--json")
    stats = json.loads(r.stdout)
    assert stats["entries"] == 1 and dt.datetime.fromisoformat(stats["newest"]).tzinfo is not None
    r = invoke("--config", config(tmp_path, fake_llm.base_url), "--data-dir", data, "query", "daily snapshots")
    assert r.returncode == 0, r.stderr
    r = invoke("--config", cfg, "--data-dir", data, "cache-stats")
    assert "exact 33.3% (1/3)" in r.stdout
    assert "Saved" in r.stdout and "unknown" in r.stdout  # the provider has no price: savings unknown


@pytest.mark.parametrize("args", [["cost-report"], ["cost-report", "--json"]], ids=["rich", "json"])
def test_a_reader_that_stops_reading_ends_the_command_quietly_with_141(tmp_path, args):
    """`llmctl ... | head -3`: stdout's reader leaves; no traceback, the shell's code for SIGPIPE (141),
    not exit 1 (a bug)."""
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "--data-dir", str(tmp_path / "data"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    proc.stdout.close()  # before the command writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141 and err == ""


def test_a_pipe_that_also_takes_stderr_ends_with_141_when_its_reader_leaves(data):
    """`llmctl query ... 2>&1 | head -1`: the reader leaves while llmctl writes a warning to stderr
    (retrieval only, reranking off); that is the same broken pipe, exit 141, not 1 (a bug). Here
    only stderr goes to the pipe, so that the failing write is stderr's."""
    read, write = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "--data-dir", str(data), "query", "daily snapshots"],
                            stdout=subprocess.DEVNULL, stderr=write, env=child_env())
    os.close(write)
    os.close(read)  # before the command writes anything
    assert proc.wait(60) == 141


def test_a_reader_that_leaves_in_the_middle_of_a_long_output_also_gives_141(data):
    """`llmctl query --json ... | head -c 100` with more output than the pipe holds: the write the
    reader cuts short must not end the command with exit 0 and the output silently cut (Python's
    text layer drops a short write's count). The pipe is made small so a few hits overflow it."""
    import fcntl

    read, write = os.pipe()
    fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "--data-dir", str(data), "query", "--json", "--k", "20",
                             "daily snapshots"], stdout=write, stderr=subprocess.DEVNULL, env=child_env())
    os.close(write)
    with os.fdopen(read, "rb") as out:
        assert out.read(100).startswith(b"{")
    assert proc.wait(60) == 141


@pytest.mark.parametrize("stdout", ["/dev/full", "closed"])
def test_output_that_cannot_be_written_is_one_line_and_exit_4(data, stdout):
    """`llmctl status >/dev/full` or with stdout closed (`>&-`): one line naming stdout, exit 4,
    never a traceback or exit 0 with the output lost."""
    sink = open(os.devnull if stdout == "closed" else stdout, "w")  # noqa: SIM115 - closed below
    preexec = (lambda: os.close(1)) if stdout == "closed" else None
    for args in (["status"], ["query", "--json", "daily snapshots"]):  # rich's output, then JSON
        r = subprocess.run([sys.executable, "-m", "llmctl", "--data-dir", str(data), *args], stdout=sink,
                           stderr=subprocess.PIPE, text=True, env=child_env(), preexec_fn=preexec, timeout=120)
        lines = r.stderr.splitlines()
        assert r.returncode == 4 and "Traceback" not in r.stderr, (args, r.returncode, r.stderr)
        assert lines[-1].startswith("Error: cannot write to stdout ("), r.stderr
    sink.close()


def test_with_stderr_unwritable_the_exit_code_is_still_the_documented_one(tmp_path):
    """`2>/dev/full`: the error line cannot be written; the exit code says what happened (2), not 1."""
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "llmctl", "status", "--bogus"], stderr=full,
                           stdout=subprocess.DEVNULL, env=child_env(), cwd=tmp_path, timeout=120)
    assert r.returncode == 2


def test_a_report_file_that_takes_no_writes_is_one_line_and_exit_4(data, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: t\ncases:\n  - {id: c1, query: daily snapshots, expected: [retention-policies.md]}\n")
    r = invoke("--data-dir", data, "eval", suite, "--json-file", "/dev/full")
    assert_clean_error(r, 4, "cannot write /dev/full (No space left on device)")


def test_llmctl_debug_shows_the_traceback_and_keeps_the_exit_code(tmp_path):
    r = invoke("--data-dir", tmp_path / "none", "query", "anything", env={"LLMCTL_DEBUG": "1"})
    assert r.returncode == 5 and "Traceback" in r.stderr and r.stderr.splitlines()[-1].startswith("Error: No index")


def test_an_answer_cut_mid_stream_ends_its_line_before_the_hits(tmp_path, data, fake_llm):
    fake_llm.script.append(Reply(kind="stall", text="Fourteen daily snapshots", stall_after=2, stall_for=3))
    cfg = config(tmp_path, fake_llm.base_url, p={"stall_timeout": 0.5})
    r = invoke("--config", cfg, "--data-dir", data, "query", "How many daily snapshots are kept?")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    shown = r.stdout.splitlines()
    assert shown and shown[0].strip() in ("Fourteen", "Fourteen daily"), r.stdout  # the cut answer, alone
    assert all(not line.startswith("Fourteen") or not line.rstrip().endswith(".md") for line in shown)
