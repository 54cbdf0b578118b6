"""The semantic cache on tests/semantic_pairs.py: wrong hits and paraphrase hits per threshold.

For each (cached, new) pair: cosine similarity of the two questions with the default
embedding model, whether the guard lets them share an answer, and so whether the new
question would be served the cached answer at each threshold. Prints a JSON report and
writes bench/out/semantic_cache.json (figures in docs/robustness.md).

    .venv/bin/python bench/semantic_cache.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from semantic_pairs import NEAR_MISSES, PARAPHRASES  # noqa: E402

from llmctl.config import Config  # noqa: E402
from llmctl.index.embedder import Embedder  # noqa: E402
from llmctl.llm.cache import guard  # noqa: E402

THRESHOLDS = (0.85, 0.90, 0.95)


def main() -> None:
    embedder = Embedder(Config().embedding)
    rows = []
    for kind, pairs in (("paraphrase", PARAPHRASES), ("near miss", NEAR_MISSES)):
        for cached, new in pairs:
            sim = float(np.dot(embedder.embed_query(cached), embedder.embed_query(new)))
            rows.append({"kind": kind, "cached": cached, "new": new, "similarity": round(sim, 4),
                         "guard": guard(new, cached)})
    summary = {}
    for t in THRESHOLDS:
        para = [r for r in rows if r["kind"] == "paraphrase"]
        miss = [r for r in rows if r["kind"] == "near miss"]
        summary[str(t)] = {
            "paraphrases_served": sum(r["similarity"] >= t and r["guard"] is None for r in para),
            "paraphrases": len(para),
            "wrong_hits": sum(r["similarity"] >= t and r["guard"] is None for r in miss),
            "near_misses": len(miss),
            "near_misses_above_threshold_without_guard": sum(r["similarity"] >= t for r in miss),
        }
    report = {"summary": summary, "pairs": rows}
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "semantic_cache.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
