"""Peak memory of `llmctl ingest --dry-run` over one large text file (measured, never asserted).

A file just under ingest.max_file_mb (49 MB by default) of prose paragraphs is written once to
bench/out/large-file/, then `llmctl ingest --dry-run --json` runs on it in a child process whose
peak RSS (ru_maxrss of its children, read after it exits) is reported with the chunks, tokens and wall time.
Before the chunker tokenized in pieces, 49 MB took 6.3 GB; the goal is <= 1 GB.

    python bench/large_file.py [--mb 49] [--out bench/out/large_file.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def write_corpus(path: Path, mb: float, seed: int = 0) -> None:
    """Paragraphs of 2 to 6 sentences drawn from the README's own words (a realistic mix of
    prose, code words and punctuation), until ``mb`` megabytes."""
    rng = random.Random(seed)
    words = (REPO / "README.md").read_text().split()
    target, size = int(mb * 1024 * 1024), 0
    with path.open("w") as fh:
        while size < target:
            sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(6, 24))).capitalize() + "."
                         for _ in range(rng.randint(2, 6))]
            paragraph = " ".join(sentences) + "\n\n"
            size += len(paragraph.encode())
            fh.write(paragraph)


def measure(folder: Path) -> dict:
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "LLMCTL_DATA_DIR": data}
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "llmctl", "ingest", "--dry-run", "--json", "-q", str(folder)],
                              env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"llmctl ingest --dry-run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KB; this script's only child
    return {"peak_rss_mb": round(peak / 1024), "seconds": round(seconds, 1),
            "chunks": report["chunks"]["added"], "tokens": report["tokens_embedded"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=49)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "large_file.json")
    args = ap.parse_args()
    folder = REPO / "bench" / "out" / "large-file"
    path = folder / "big.txt"
    if not path.exists() or abs(path.stat().st_size - args.mb * 2**20) > 2**20:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write_corpus(path, args.mb)
    result = {"file_mb": round(path.stat().st_size / 2**20, 1), **measure(folder)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
