"""tests/cli.py's in-process ``invoke`` answers as a process would, and leaves this one as it found it."""

import logging
import os
import signal

from cli import assert_clean_error, invoke, run_cli


def test_invoke_matches_a_real_process(tmp_path):
    args = ("--data-dir", tmp_path / "none", "query", "--where", "size=3", "x")
    inproc, real = invoke(*args), run_cli(*args)
    assert (inproc.returncode, inproc.stdout, inproc.stderr) == (real.returncode, real.stdout, real.stderr)
    assert_clean_error(inproc, 2, "unknown field 'size'")


def test_invoke_puts_back_what_it_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCTL_RETRIEVAL__K", "abc")  # removed for the call, as run_cli does
    before = (os.getcwd(), dict(os.environ), signal.getsignal(signal.SIGTERM),
              list(logging.getLogger("llmctl").handlers), logging.getLogger("llmctl").level)
    (tmp_path / "elsewhere").mkdir()
    r = invoke("-vv", "--data-dir", tmp_path / "data", "cost-report", "--json", cwd=tmp_path / "elsewhere",
               env={"LLMCTL_DATA_DIRR": "x"})
    assert_clean_error(r, 3, "LLMCTL_DATA_DIRR")  # the override was seen, the removed variable was not
    after = (os.getcwd(), dict(os.environ), signal.getsignal(signal.SIGTERM),
             list(logging.getLogger("llmctl").handlers), logging.getLogger("llmctl").level)
    assert after == before


def test_an_escaping_exception_is_a_traceback_and_exit_1(tmp_path, monkeypatch):
    r = invoke("--data-dir", tmp_path, "cost-report", "--since", "2026-12-02", "--until", "2026-12-01")
    assert_clean_error(r, 2, "not before until (--until)")
    from llmctl.workspace import Workspace

    def bug(self):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Workspace, "status", bug)
    r = invoke("--data-dir", tmp_path / "none", "status")  # not an llmctl error: it escapes main
    assert r.returncode == 1 and "Traceback (most recent call last)" in r.stderr and "RuntimeError: a bug" in r.stderr


def test_stdin_is_the_input(tmp_path):
    r = invoke("--data-dir", tmp_path / "data", "query", "--no-llm", "-", input="   \n")
    assert_clean_error(r, 2, "the question is empty")
