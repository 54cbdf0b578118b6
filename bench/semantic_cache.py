"""The semantic cache on question pairs: wrong hits (near misses served) and paraphrase recall.

Sets: ``dev-tune`` and ``dev-check`` (the two halves of tests/semantic_pairs.py, split
before any result was seen; the design was tuned on dev-tune only) and ``held-out``
(tests/data/semantic_heldout.yaml, written independently; evaluated once the design was
final). Every pair goes through the real cache (``ResponseCache.put`` / ``get_semantic``
with the default embedding model). Only aggregate counts are printed and written (no
question text) so the held-out pairs stay unseen.

``--before`` also scores the previous design (content-word sets with a synonym table and
stems, commit 583a0be) from git, for the before/after table in docs/benchmarks.md.

    .venv/bin/python bench/semantic_cache.py [--sets dev-tune,dev-check,held-out] [--before]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from semantic_pairs import DEV, evaluate, load_heldout  # noqa: E402

from llmctl.config import CacheConfig, Config  # noqa: E402
from llmctl.embedding.local import Embedder  # noqa: E402

THRESHOLDS = (0.85, 0.90, 0.95)
BEFORE_COMMIT = "583a0be"  # the last commit with the content-word-set guard


def _before_guard():
    source = subprocess.run(["git", "show", f"{BEFORE_COMMIT}:llmctl/llm/cache.py"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    module = types.ModuleType("cache_before")
    sys.modules["cache_before"] = module  # dataclasses look their module up
    exec(compile(source, "cache_before.py", "exec"), module.__dict__)  # noqa: S102 - our own file at a commit
    return module.guard


def _before(embedder, near, para, threshold: float, guard) -> dict:
    """The old design: cosine >= threshold and its guard (it ignored the retrieval scope)."""
    def hits(pairs):
        out = []
        for cached, new, category in pairs:
            sim = float(np.dot(embedder.embed_query(cached), embedder.embed_query(new)))
            out.append((category, sim >= threshold and guard(new, cached) is None))
        return out

    wrong, good = hits(near), hits(para)
    by_cat: dict[str, int] = {}
    for c, h in wrong:
        if h:
            by_cat[c] = by_cat.get(c, 0) + 1
    return {"near_misses": len(near), "wrong_hits": sum(h for _, h in wrong),
            "wrong_hits_by_category": dict(sorted(by_cat.items())), "paraphrases": len(para),
            "paraphrases_served": sum(h for _, h in good),
            "paraphrase_recall": round(sum(h for _, h in good) / len(para), 3) if para else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="dev-tune,dev-check,held-out")
    ap.add_argument("--before", action="store_true", help="also score the previous design")
    args = ap.parse_args()
    sets = dict(DEV)
    heldout = load_heldout()
    if heldout is not None:
        sets["held-out"] = heldout
    embedder = Embedder(Config().embedding)
    guard_before = _before_guard() if args.before else None
    report: dict = {"default_threshold": CacheConfig().semantic_threshold, "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            if name not in sets:
                report["sets"][name] = "missing"
                continue
            near, para = sets[name]
            row = {str(t): evaluate(embedder, near, para, Path(tmp), t) for t in THRESHOLDS}
            if guard_before is not None:
                row["before_0.95"] = _before(embedder, near, para, 0.95, guard_before)
            report["sets"][name] = row
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "semantic_cache.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
