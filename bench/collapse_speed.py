"""Duplicate collapsing per question: llmctl's prefix-filtered collapse against the all-pairs one it
replaced (kept here as the reference), with and without its shingle cache, on real text: SciFact
abstracts as the candidates.

eval and tune collapse every candidate of every question (up to 200: BM25's and dense's 100 each),
so this cost is paid per case. Both must give the same groups; the script checks that too.

    python bench/collapse_speed.py      # writes bench/out/collapse_speed.json
"""

from __future__ import annotations

import json
import random
import time

import common

from llmctl.search.fusion import collapse, jaccard, shingles


def _tuple_shingles(text: str) -> frozenset:
    import re

    words = re.findall(r"\w+", text.lower())
    return frozenset(words) if len(words) < 3 else frozenset(zip(words, words[1:], words[2:], strict=False))


def all_pairs(order, text_of, threshold=0.9):
    """The collapse before 2026-12-07 (seventh session): every hit against every kept group of a similar size."""
    groups, kept, exact = [], [], {}
    for cid in order:
        text = text_of(cid)
        key = " ".join(text.split()).lower()
        at = exact.get(key)
        if at is None:
            sh = _tuple_shingles(text)
            lo, hi = threshold * len(sh) - 1e-9, len(sh) / threshold + 1e-9
            at = next((i for i, other in enumerate(kept)
                       if lo <= len(other) <= hi and jaccard(sh, other) >= threshold), None)
        if at is not None:
            groups[at][1].append(cid)
            continue
        exact[key] = len(groups)
        kept.append(sh)
        groups.append((cid, []))
    return groups


def candidates(docs: list[str], rng: random.Random, n: int = 200) -> dict[str, str]:
    """n abstracts, 5 of them shipped twice and 5 with one word changed (near-duplicates)."""
    out = {f"c{i}": t for i, t in enumerate(rng.sample(docs, n))}
    for i in range(5):
        out[f"copy{i}"] = out[f"c{i}"]
        words = out[f"c{10 + i}"].split()
        words[len(words) // 2] = "changed"
        out[f"near{i}"] = " ".join(words)
    return out


def timed(fn, order, texts, repeat: int, cold: bool = True) -> float:
    """ms per call; ``cold``: with llmctl's shingle cache emptied before each (a new question's candidates)."""
    total = 0.0
    for _ in range(repeat):
        if cold:
            shingles.cache_clear()
        start = time.perf_counter()
        fn(order, texts.get)
        total += time.perf_counter() - start
    return total / repeat * 1000


def main() -> None:
    docs = [f"{d.get('title', '')}. {d['text']}" for d in common.corpus().values()]
    rng = random.Random(0)
    rows = []
    for trial in range(5):
        texts = candidates(docs, rng)
        order = list(texts)
        rng.shuffle(order)
        new, old = collapse(order, texts.get), all_pairs(order, texts.get)
        assert new == old, f"trial {trial}: the groups differ"
        rows.append({"candidates": len(order), "groups": len(new),
                     "prefix_filtered_ms": timed(collapse, order, texts, 20),
                     # the same candidates again (tune's next setting; a question asked again)
                     "prefix_filtered_cached_ms": timed(collapse, order, texts, 20, cold=False),
                     "all_pairs_ms": timed(all_pairs, order, texts, 20)})
    report = {"trials": rows, "machine": common.machine(),
              "median_prefix_filtered_ms": sorted(r["prefix_filtered_ms"] for r in rows)[2],
              "median_prefix_filtered_cached_ms": sorted(r["prefix_filtered_cached_ms"] for r in rows)[2],
              "median_all_pairs_ms": sorted(r["all_pairs_ms"] for r in rows)[2]}
    common.OUT.mkdir(parents=True, exist_ok=True)
    (common.OUT / "collapse_speed.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
