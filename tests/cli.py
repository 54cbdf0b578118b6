"""Run the real ``llmctl`` entry point in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def child_env(env: dict | None = None) -> dict:
    """This process's environment without LLMCTL_* settings (the test run's model cache stays), plus ``env``."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_") or k == "LLMCTL_CACHE_DIR"}
    return {**keep, **(env or {})}


def run_cli(*args: str | Path, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = child_env(env)
    return subprocess.run(
        [sys.executable, "-m", "llmctl", *map(str, args)], cwd=cwd, env=full_env,
        capture_output=True, text=True, timeout=timeout,
    )


def assert_clean_error(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    """One line on stderr starting 'Error:', the documented exit code, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for w in words:
        assert w in lines[0]


def assert_gate_failed(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 9 after a report: the last stderr line is the one-line reason, no traceback."""
    assert result.returncode == 9, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("Error: eval "), result.stderr
    for w in words:
        assert w in last
