"""Fault matrix: every failure class of an OpenAI-compatible provider, end to end through the CLI.

Two loopback servers (tests/openai_server.py) play a primary and a backup provider. For each
fault class, with a streamed answer (plain output) and without (``--json``), and with and
without a fallback provider, ``llmctl query`` runs through the real entry point (argument
parsing, the one error boundary, rendering) in this process, so the embedding model loads
once. A case *survives* when the outcome is the designed one: the answer (printed once, from
the expected provider) or a one-line error with the documented exit code, no traceback — and
the ledger holds exactly one row per request the servers received.

    python tests/fault_matrix.py          # builds a small index, prints the matrix as JSON
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openai_server import FakeOpenAI, Reply  # noqa: E402

SECRET = "sk-fault-matrix-secret-4242"
KEY_ENV = "LLMCTL_FAULT_MATRIX_KEY"  # an LLMCTL_* name on purpose: it must not be read as config
QUESTION = "How do I restore a single file?"
PRIMARY_TEXT = "Primary answer: use kestrel restore [1]."
BACKUP_TEXT = "Backup answer: use kestrel restore [1]."
# Short limits and one retry keep the 19 waiting cases to ~12 s: a reply here comes from a thread of
# this process over loopback in milliseconds, so 0.4 s without a byte is still a real stall.
TIMEOUT, STALL = 0.8, 0.4
TOO_LONG = {"error": {"message": "This model's maximum context length is 2048 tokens",
                      "type": "invalid_request_error", "code": "context_length_exceeded"}}

FAULTS: dict[str, Reply] = {
    "429": Reply(kind="status", status=429, headers={"Retry-After": "0"}),
    "500": Reply(kind="status", status=500),
    "503": Reply(kind="status", status=503),
    "timeout": Reply(text=PRIMARY_TEXT, delay=TIMEOUT + 0.6),
    "stall before first token": Reply(kind="stall", text=PRIMARY_TEXT, stall_after=0, stall_for=STALL + 0.8),
    "stall mid-stream": Reply(kind="stall", text=PRIMARY_TEXT, stall_after=3, stall_for=STALL + 0.8),
    "connection dropped": Reply(kind="drop"),
    "malformed JSON": Reply(kind="bad_json"),
    "missing usage": Reply(text=PRIMARY_TEXT, usage=False),
    "401": Reply(kind="status", status=401),
    "context length": Reply(kind="status", status=400, body=TOO_LONG),
    # malformed event streams, each failing before the first token
    "cut JSON": Reply(kind="raw", raw=b'data: {"choices":[{"delta":{"content":"br\n\ndata: [DONE]\n\n'),
    "wrong types": Reply(kind="raw", raw=b'data: {"id":"x","object":"chat.completion.chunk","created":0,'
                                         b'"model":"m","choices":"oops"}\n\ndata: [DONE]\n\n'),
    "missing choices": Reply(kind="raw", raw=b'data: {"id":"x","object":"chat.completion.chunk"}\n\n'
                                             b'data: [DONE]\n\n'),
    "non-UTF-8 bytes": Reply(kind="raw", raw=b'data: {"choices": \xff\xfe}\n\ndata: [DONE]\n\n'),
    "empty 200 stream": Reply(kind="raw", raw=b""),
}
MALFORMED_STREAMS = {"cut JSON", "wrong types", "missing choices", "non-UTF-8 bytes", "empty 200 stream"}
RETRYABLE = {"429", "500", "503", "timeout", "stall before first token", "stall mid-stream",
             "connection dropped", "malformed JSON", *MALFORMED_STREAMS}


@dataclass
class Case:
    fault: str
    streamed: bool
    fallback: bool
    persistent: bool  # the fault repeats on every attempt (else: once, then the server recovers)

    @property
    def name(self) -> str:
        return (f"{self.fault} | {'stream' if self.streamed else '--json'} | "
                f"{'fallback' if self.fallback else 'single provider'} | "
                f"{'persistent' if self.persistent else 'transient'}")

    def expected(self) -> tuple[int, str | None]:
        """(exit code, provider whose answer is shown) by design."""
        f = self.fault
        if f == "missing usage":
            return 0, "primary"
        if f == "401":
            return 7, None  # a bad key is a configuration error: fail fast, never fall back silently
        if f == "stall mid-stream" and self.streamed:
            return 7, None  # text was shown: not retried, so nothing is printed twice
        if f == "context length":
            return (0, "backup") if self.fallback else (7, None)
        if not self.persistent:
            return 0, "primary"
        return (0, "backup") if self.fallback else (7, None)


def cases() -> list[Case]:
    out = []
    for fault in FAULTS:
        for streamed in (True, False):
            for fallback in (False, True):
                out.append(Case(fault, streamed, fallback, persistent=True))
            if fault in RETRYABLE:
                out.append(Case(fault, streamed, False, persistent=False))
    return out


def invoke(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run the real `llmctl` entry point in this process; (exit code, stdout, stderr)."""
    from llmctl import cli

    out, err = io.StringIO(), io.StringIO()
    old_argv, old_env = sys.argv, dict(os.environ)
    os.environ.update(env)
    sys.argv = ["llmctl", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # noqa: BLE001 - an escaped exception is a failed case, shown as such
                import traceback

                err.write(traceback.format_exc())
                code = 1
    finally:
        sys.argv = old_argv
        os.environ.clear()
        os.environ.update(old_env)
    return code, out.getvalue(), err.getvalue()


def ledger_rows(data: Path) -> list[dict]:
    path = data / "ledger.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM calls ORDER BY id")]
    finally:
        db.close()


def write_config(folder: Path, data: Path, primary: FakeOpenAI, backup: FakeOpenAI, fallback: bool) -> Path:
    def provider(name, server, window):
        return {"name": name, "base_url": server.base_url, "model": f"{name}-model", "api_key_env": KEY_ENV,
                "timeout": TIMEOUT, "stall_timeout": STALL, "retries": 1, "context_window": window,
                "price_input_per_1m": 0.5, "price_output_per_1m": 1.5}

    providers = [provider("primary", primary, 8192)]
    if fallback:
        providers.append(provider("backup", backup, 32768))
    import yaml

    cfg = {"data_dir": str(data), "rerank": {"enabled": False},
           "llm": {"providers": providers, "backoff_base": 0.01, "backoff_cap": 0.05, "deadline": 30,
                   "cache": {"enabled": False}}}
    path = folder / ("fallback.yaml" if fallback else "single.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_case(case: Case, data: Path, configs: dict[bool, Path], primary: FakeOpenAI, backup: FakeOpenAI) -> dict:
    primary.script.clear()
    backup.script.clear()
    primary.default_text, backup.default_text = PRIMARY_TEXT, BACKUP_TEXT
    fault = FAULTS[case.fault]
    primary.script.extend([fault] * (10 if case.persistent else 1))
    seen = len(primary.requests) + len(backup.requests)
    rows_before = len(ledger_rows(data))
    args = ["--config", str(configs[case.fallback]), "query", QUESTION] + ([] if case.streamed else ["--json"])
    code, out, err = invoke(args, {KEY_ENV: SECRET})
    primary.script.clear()
    requests = len(primary.requests) + len(backup.requests) - seen
    rows = ledger_rows(data)[rows_before:]
    want_code, want_provider = case.expected()
    problems = []
    if code != want_code:
        problems.append(f"exit {code}, expected {want_code}")
    if "Traceback" in out + err:
        problems.append("traceback")
    if want_provider:
        text = PRIMARY_TEXT if want_provider == "primary" else BACKUP_TEXT
        shown = json.loads(out)["answer"] if not case.streamed and code == 0 else out
        if shown.count(text.split(" [")[0]) != 1:
            problems.append(f"answer of {want_provider} not shown exactly once")
    else:
        errors = [line for line in err.splitlines() if line.startswith("Error: ")]
        if len(errors) != 1:
            problems.append("no one-line error")
        if case.fault == "stall mid-stream" and out.count("Primary") > 1:
            problems.append("text printed twice")
    if len(rows) != requests:
        problems.append(f"ledger has {len(rows)} rows for {requests} requests")
    if case.fault == "missing usage" and rows and rows[-1]["usage_source"] != "estimated":
        problems.append("missing usage not marked estimated")
    if SECRET in out + err:
        problems.append("API key printed")
    return {"case": case.name, "fault": case.fault, "streamed": case.streamed, "fallback": case.fallback,
            "persistent": case.persistent, "exit": code, "requests": requests, "ledger_rows": len(rows),
            "outcome": "survived" if not problems else "failed", "problems": problems,
            "error": next((line for line in err.splitlines() if line.startswith("Error: ")), None)}


def run_matrix(workdir: Path, data: Path) -> dict:
    """``data`` must hold an index (any corpus); the ledger is written there."""
    primary, backup = FakeOpenAI().start(), FakeOpenAI().start()
    try:
        configs = {fb: write_config(workdir, data, primary, backup, fb) for fb in (False, True)}
        results = [run_case(c, data, configs, primary, backup) for c in cases()]
    finally:
        primary.stop()
        backup.stop()
    leaked = [p.name for p in data.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    return {"cases": len(results), "survived": sum(r["outcome"] == "survived" for r in results),
            "failed": [r for r in results if r["outcome"] != "survived"], "results": results,
            "ledger_rows": sum(r["ledger_rows"] for r in results), "requests": sum(r["requests"] for r in results),
            "files_with_key": leaked}


def main() -> None:
    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        code, _, err = invoke(["--data-dir", str(data), "ingest", "-q", str(repo / "sample_data" / "guides")], {})
        if code:
            sys.exit(err)
        report = run_matrix(Path(tmp), data)
    for r in report["results"]:
        print(f"{r['outcome']:9s} exit {r['exit']}  requests {r['requests']}  ledger {r['ledger_rows']}  {r['case']}",
              file=sys.stderr)
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=2))
    sys.exit(1 if report["failed"] else 0)


if __name__ == "__main__":
    main()
