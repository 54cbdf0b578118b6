"""Run the ``llmctl`` command line as a user would: in this process (``invoke``, milliseconds)
or in a new one (``run_cli``, about a second: for exit codes end to end, signals, crashes,
processes side by side, and start-up itself)."""

from __future__ import annotations

import gc
import logging
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


def child_env(env: dict | None = None) -> dict:
    """This process's environment without LLMCTL_* settings (the test run's model cache stays), plus ``env``.

    PYTHONPATH starts with this checkout, so a child runs the code under test even where the venv's
    editable install points at another checkout (a second clone sharing one venv)."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_") or k == "LLMCTL_CACHE_DIR"}
    keep["PYTHONPATH"] = os.pathsep.join([str(CHECKOUT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**keep, **(env or {})}


def run_cli(*args: str | Path, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = child_env(env)
    return subprocess.run(
        [sys.executable, "-m", "llmctl", *map(str, args)], cwd=cwd, env=full_env,
        capture_output=True, text=True, timeout=timeout,
    )


def invoke(*args: str | Path, cwd: Path | None = None, env: dict | None = None,
           input: str | None = None) -> subprocess.CompletedProcess:
    """``run_cli`` in this process: the same arguments, environment (LLMCTL_* removed, then
    ``env``), cwd and result (returncode, stdout, stderr apart), through ``llmctl.cli.run``,
    the entry point's own error handling and exit codes, inside typer's CliRunner isolation
    (its own stdin, stdout, stderr and environment).

    What a new process would start without is put back after the call: the environment, the
    cwd, SIGTERM's handler (``main`` installs its own), the ``llmctl`` logger (-v adds a
    handler), render's streamed-line flag; the Workspaces the command opened are closed and
    the Chroma clients it opened dropped, as at exit. An exception that escapes ``main`` is a
    traceback on stderr and exit 1, as the interpreter would print it. stdin is ``input``
    (empty when None)."""
    from typer.testing import CliRunner

    from llmctl import cli

    overrides: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith("LLMCTL_") and k != "LLMCTL_CACHE_DIR"}
    overrides.update({k: str(v) for k, v in (env or {}).items()})
    opened = []
    make_workspace = cli._workspace

    def tracked(**overrides):
        ws = make_workspace(**overrides)
        opened.append(ws)
        return ws

    runner = CliRunner()
    logger = logging.getLogger("llmctl")
    handlers, level = list(logger.handlers), logger.level
    sigterm = signal.getsignal(signal.SIGTERM)
    old_cwd = os.getcwd()
    systems = set(_chroma_systems())
    cli._workspace = tracked
    gc.freeze()  # what exists now is left out of the collection below: it looks at what the command built
    try:
        if cwd is not None:
            os.chdir(cwd)
        with runner.isolation(input=input, env=overrides) as (out, err, _):
            # render's Consoles write to sys.stdout/stderr as they are at each call; imported first
            # here, they also see no terminal, as in a process with its output piped.
            from llmctl import render

            render._mid_line = False  # as in a new process: no streamed answer on screen
            try:
                code = cli.run([str(a) for a in args], prog_name="llmctl")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # noqa: BLE001 - what the interpreter would print, and its exit code
                sys.stderr.write(traceback.format_exc())
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            stdout, stderr = (s.getvalue().decode(runner.charset, "replace") for s in (out, err))
    finally:
        try:
            cli._workspace = make_workspace
            os.chdir(old_cwd)
            signal.signal(signal.SIGTERM, sigterm)
            logger.handlers[:] = handlers
            logger.setLevel(level)
            for ws in opened:
                ws.close()
            del opened[:], tracked
            _drop_chroma_systems(keep=systems)
        finally:
            gc.collect()  # what the command built is in reference cycles: free its files and memory now
            gc.unfreeze()  # (a full collection of a worker's heap takes ~0.1 s; this one, milliseconds)
    return subprocess.CompletedProcess(["llmctl", *map(str, args)], code, stdout, stderr)


def _chroma_systems() -> dict:
    """Chroma's in-process clients, by data folder (it reuses one per folder while the process lives)."""
    if "chromadb" not in sys.modules:
        return {}
    from chromadb.api.client import SharedSystemClient

    return SharedSystemClient._identifier_to_system


def _drop_chroma_systems(keep: set) -> None:
    """Forget the clients a command opened, as its process exit would (a folder deleted or rebuilt
    since must not be read through a stale one); those the test held before stay usable."""
    if "chromadb" not in sys.modules:
        return
    from chromadb.api.client import SharedSystemClient

    for key in set(SharedSystemClient._identifier_to_system) - keep:
        SharedSystemClient._identifier_to_system.pop(key, None)
        SharedSystemClient._identifier_to_refcount.pop(key, None)


def assert_clean_error(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    """One line on stderr starting 'Error:', the documented exit code, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for w in words:
        assert w in lines[0]


def assert_gate_failed(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 9 after a report: the last stderr line is the one-line reason, no traceback."""
    assert result.returncode == 9, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr + result.stdout
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("Error: eval "), result.stderr
    for w in words:
        assert w in last


def write_trusted(path: Path, suite: dict) -> Path:
    """A suite its user wrote and trusted (``llmctl trust SUITE``): its config: section may then
    name a provider (an untrusted suite that sends questions or keys elsewhere is refused)."""
    import yaml

    from llmctl import trust

    path.write_text(yaml.safe_dump(suite))
    trust.trust(path)
    return path
