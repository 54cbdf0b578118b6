"""A real A/B through `llmctl eval --against`: the default fusion (z-score) against RRF on SciFact train.

Both configs run on the same BEIR index with the product's paired bootstrap (10,000
resamples, seeded) over the 809 training queries; written to bench/out/eval_ab.json.

    .venv/bin/python bench/eval_ab.py [--other 'retrieval: {fusion: rrf}']
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import OUT, REPO, SCIFACT, machine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--other", default="retrieval: {fusion: rrf}", help="YAML of config B")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "b.yaml"
        other.write_text(args.other + "\n")
        report = Path(tmp) / "ab.json"
        r = subprocess.run([sys.executable, "-m", "llmctl", "--data-dir", str(OUT / "ab-data"), "eval", "-q",
                            "--beir", str(SCIFACT), "--split", "train", "--against", str(other),
                            "--json-file", str(report)], cwd=REPO, capture_output=True, text=True)
        if r.returncode not in (0, 9):
            sys.exit(r.stderr)
        ab = json.loads(report.read_text())["ab"]
    out = {"machine": machine(), "b_config": args.other, "cases": 809, **ab}
    (OUT / "eval_ab.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out["paired"], indent=1))


if __name__ == "__main__":
    main()
