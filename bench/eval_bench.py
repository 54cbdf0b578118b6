"""`llmctl eval --beir` on SciFact's 809 training queries: per-stage quality and wall time.

Reuses the index built by bench/ingest_bench.py (same chunk ids, so nothing is
re-embedded); without it, the first run embeds the corpus (~10 min on 2 cores).
Reports nDCG@10 / recall@100 / MRR@10 for BM25, dense and hybrid, and the wall time
of the whole 809-query run and of a 300-query run (goal <= 60 s). Measured, not asserted.

    python bench/eval_bench.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCIFACT = REPO.parent / "shared" / "data" / "scifact"
OUT = REPO / "bench" / "out"


def run(*args: str) -> tuple[float, dict]:
    report = OUT / "eval-scifact.json"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llmctl", "--data-dir", str(OUT / "evaldata"), "eval", "-q",
                           "--beir", str(SCIFACT), "--split", "train", "--json", str(report), *args],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(proc.stderr)
    return seconds, json.loads(report.read_text())


def main() -> None:
    (OUT / "evaldata").mkdir(parents=True, exist_ok=True)
    link = OUT / "evaldata" / "beir-scifact"
    if not link.exists() and (OUT / "scifact" / "data" / "manifest.sqlite").exists():
        os.symlink(OUT / "scifact" / "data", link)
    run("--limit", "5")  # warm-up: syncs the index with the corpus (no re-embedding when reused)
    t300, r300 = run("--limit", "300")
    t809, r809 = run()
    out = {
        "queries": len(r809["cases"]),
        "metrics": r809["metrics"],
        "wall_seconds_809": round(t809, 1),
        "wall_seconds_300": round(t300, 1),
        "per_query_ms": r809["latency_ms"],
        "reranker": r809["rerank"].get("status"),
    }
    (OUT / "eval.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
