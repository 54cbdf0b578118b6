"""`llmctl serve` side by side: the standard library's threading server against Starlette + uvicorn.

Measured, never asserted; written to bench/out/serve_bench.json for bench/report.py.

Both servers run the same Workspace code over the same index (sample_data/, ingested here
once, reranker off as in bench/fast_warm.py), each in its own process, one after the other:
the stdlib server is llmctl/serve.py as of ``--stdlib-rev`` (the last commit that had it),
loaded from git; the other is the current one. Both are started (and warmed) first and stay
up; then, for each number of concurrent clients, they take turns under load for ``--seconds``
each, ``--rounds`` times, alternating which goes first, so that a busy machine weighs on both
alike; a server's turns are pooled. Each client opens one connection per turn and POSTs
/search with the 30 questions of configs/sample-suite.yaml in turn. An error is any answer
that is not a 200 with hits, or a failed connection.

    python bench/serve_bench.py [--clients 4 16] [--seconds 10] [--rounds 4] [--data DIR]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import common
import yaml

PY = sys.executable
STDLIB_REV = "fbfb615"  # the last commit whose llmctl/serve.py is the ThreadingHTTPServer
SERVER = """
import importlib.util, sys
from llmctl import Workspace
path = sys.argv[1]
if path == "current":
    from llmctl.serve import serve
else:
    spec = importlib.util.spec_from_file_location("llmctl_serve_stdlib", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    serve = module.serve
ws = Workspace(data_dir=sys.argv[2], **{"rerank.enabled": False})
serve(ws, "127.0.0.1", 0, quiet=True, ready=lambda url: print(url, flush=True))
"""


def env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_") or k == "LLMCTL_CACHE_DIR"}


def questions() -> list[str]:
    suite = yaml.safe_load((common.REPO / "configs" / "sample-suite.yaml").read_text())
    return [c["query"] for c in suite["cases"]]


def sample_index(folder: Path) -> Path:
    data = folder / "data"
    subprocess.run([PY, "-m", "llmctl", "--data-dir", str(data), "ingest", "-q", str(common.REPO / "sample_data")],
                   env=env(), check=True)
    return data


class Server:
    def __init__(self, module: str, data: Path):
        self.proc = subprocess.Popen([PY, "-c", SERVER, module, str(data)], stdout=subprocess.PIPE, text=True,
                                     env=env(), cwd=common.REPO)
        url = self.proc.stdout.readline().strip()
        self.host, self.port = url.removeprefix("http://").split(":")

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, int(self.port), timeout=60)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def search(conn: http.client.HTTPConnection, q: str) -> str | None:
    """None, or what went wrong: the status, or 'no hits'."""
    conn.request("POST", "/search", body=json.dumps({"query": q, "k": 5}),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        return f"HTTP {r.status}"
    return None if json.loads(body)["hits"] else "no hits"


def load(server: Server, clients: int, seconds: float, qs: list[str]) -> dict:
    """``clients`` threads, one connection each, asking in turn until the time is up."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(i: int) -> None:
        conn, mine, failed = server.connect(), [], Counter()
        start.wait()
        n = i
        while time.perf_counter() < stop_at[0]:
            t = time.perf_counter()
            try:
                problem = search(conn, qs[n % len(qs)])
            except (OSError, http.client.HTTPException) as exc:
                problem = type(exc).__name__
                conn.close()
                conn = server.connect()
            mine.append((time.perf_counter() - t) * 1000)
            if problem:
                failed[problem] += 1
            n += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            errors.update(failed)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for th in threads:
        th.start()
    stop_at[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for th in threads:
        th.join()
    return {"seconds": time.perf_counter() - t0, "latencies_ms": latencies, "errors": dict(errors)}


def started(module: str, data: Path, qs: list[str]) -> Server:
    server = Server(module, data)
    conn = server.connect()
    for q in qs:  # warm: every question's vector is remembered (queries.sqlite) by both alike
        search(conn, q)
    conn.close()
    return server


def summary(runs: list[dict]) -> dict:
    lat = sorted(x for r in runs for x in r["latencies_ms"])
    seconds = sum(r["seconds"] for r in runs)
    errors = sum((Counter(r["errors"]) for r in runs), Counter())
    return {"requests": len(lat), "errors": sum(errors.values()), "error_kinds": dict(errors),
            "queries_per_s": round(len(lat) / seconds, 1),
            "p50_ms": round(lat[len(lat) // 2], 1), "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * .99))], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--stdlib-rev", default=STDLIB_REV)
    ap.add_argument("--data", type=Path, help="an index of sample_data/ (default: ingest one in a temp folder)")
    args = ap.parse_args()
    qs = questions()
    with tempfile.TemporaryDirectory() as tmp:
        stdlib = Path(tmp) / "serve_stdlib.py"
        stdlib.write_text(subprocess.run(["git", "show", f"{args.stdlib_rev}:llmctl/serve.py"], cwd=common.REPO,
                                         check=True, capture_output=True, text=True).stdout)
        data = args.data or sample_index(Path(tmp))
        servers = {"stdlib ThreadingHTTPServer": started(str(stdlib), data, qs),
                   "Starlette + uvicorn": started("current", data, qs)}
        runs: dict[tuple[str, int], list[dict]] = {}
        try:
            for clients in args.clients:
                for r in range(args.rounds):
                    order = list(servers.items()) if r % 2 == 0 else list(servers.items())[::-1]
                    for name, server in order:
                        got = load(server, clients, args.seconds, qs)
                        runs.setdefault((name, clients), []).append(got)
                        print(f"{clients} clients, round {r + 1}, {name}: {summary([got])}", flush=True)
        finally:
            for server in servers.values():
                server.stop()
    rows = [{"server": name, "clients": clients, **summary(rs)} for (name, clients), rs in
            sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0] != "stdlib ThreadingHTTPServer"))]
    out = {"stdlib_rev": args.stdlib_rev, "seconds_per_run": args.seconds, "rounds": args.rounds,
           "questions": len(qs), "rows": rows}
    common.OUT.mkdir(parents=True, exist_ok=True)
    (common.OUT / "serve_bench.json").write_text(json.dumps(out, indent=1))
    import report

    print(report.serve_bench_section(out))


if __name__ == "__main__":
    main()
