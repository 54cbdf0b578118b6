"""`llmctl eval` answering 100 cases at concurrency 1, 4 and 16, and under a request-rate limit.

The model is the loopback OpenAI-compatible server of the tests (tests/openai_server.py) with a
fixed latency per answer (`--latency`, default 0.5 s: a real 3 s model scales every figure by 6).
Each run is the real CLI on the sample index with the answer cache off; the row reports the
answer phase's wall time (the eval report's `answers.seconds`), the whole run's, the largest
number of requests the server saw at once, and the highest request count in any one-second
window (to show that `requests_per_minute` holds). Measured, never asserted; written to
bench/out/eval_concurrency.json.

    .venv/bin/python bench/eval_concurrency.py [--cases 100] [--latency 0.5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from common import OUT, machine  # noqa: E402
from openai_server import FakeOpenAI, Reply  # noqa: E402

ANSWER = "The default policy keeps 14 daily snapshots [1]."
RUNS = [(1, None), (4, None), (16, None), (16, 600)]  # (llm.concurrency, requests_per_minute)


def llmctl(*args: str, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmctl", "--data-dir", str(data), *args], cwd=REPO,
                          capture_output=True, text=True)


def suite_file(folder: Path, server: FakeOpenAI, cases: int, concurrency: int, rpm: float | None) -> Path:
    sample = yaml.safe_load((REPO / "configs" / "sample-suite.yaml").read_text())["cases"]
    provider = {"name": "loopback", "base_url": server.base_url, "model": "m", "price_input_per_1m": 0,
                "price_output_per_1m": 0}
    if rpm:
        provider["requests_per_minute"] = rpm
    suite = {"name": f"c{concurrency}", "config": {"rerank": {"enabled": False}, "llm": {
        "concurrency": concurrency, "cache": {"enabled": False}, "providers": [provider]}},
        "cases": [{"id": f"case-{i}", "query": f"{sample[i % len(sample)]['query']} (variant {i})",
                   "answer": {"contains": ["14"]}} for i in range(cases)]}
    path = folder / f"suite-{concurrency}-{rpm}.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def busiest_second(times: list[float]) -> int:
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times)), default=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--latency", type=float, default=0.5)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        r = llmctl("ingest", "sample_data", "--quiet", data=data)
        if r.returncode:
            sys.exit(r.stderr)
        for concurrency, rpm in RUNS:
            server = FakeOpenAI(default_text=ANSWER).start()
            server.script.extend(Reply(text=ANSWER, delay=args.latency) for _ in range(args.cases))
            try:
                path = suite_file(Path(tmp), server, args.cases, concurrency, rpm)
                r = llmctl("eval", "-q", str(path), "--json", data=data)
                report = json.loads(r.stdout)
            finally:
                server.stop()
            row = {"concurrency": concurrency, "requests_per_minute": rpm, "cases": args.cases,
                   "answer_seconds": report["answers"]["seconds"], "eval_seconds": report["seconds"],
                   "passed": report["answers"]["passed"], "errors": report["answers"]["error"],
                   "max_in_flight": server.max_in_flight,
                   "busiest_second": busiest_second([q["at"] for q in server.requests])}
            rows.append(row)
            print(json.dumps(row), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "eval_concurrency.json").write_text(json.dumps(
        {"machine": machine(), "model_latency_s": args.latency, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
