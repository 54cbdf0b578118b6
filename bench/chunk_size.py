"""Chunk size on the multi-corpus benchmark: the shipped window (254 tokens, overlap 32) against
128-token chunks (overlap 16, the same eighth), each corpus indexed twice with llmctl's pipeline.

Written before the run (2026-12-07, ninth session); the rule, fixed then: 128 tokens would become
the default only if the tune halves' mean MRR@10 rises with no corpus significantly worse
(bench/multi_bench.py's test), the check halves' mean does not fall, and SciFact's full training
set (`llmctl eval --beir`) does not lose. Both indexes get the shipped fusion (z-score, BM25 0.2)
and duplicate collapsing; page level, as in bench/multi_bench.py. Measured, never asserted.

    python bench/chunk_size.py [--corpora pydocs,apache]     # bench/out/chunk_size.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import multi_bench as M  # noqa: E402

SMALL = {"chunking.max_tokens": 128, "chunking.overlap_tokens": 16}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpora", default=",".join(M.CORPORA))
    names = ap.parse_args().corpora.split(",")
    stock, small = {}, {}
    for name in names:
        files, questions = M.CORPORA[name]()
        stock[name] = M.candidates(name, files, questions)
        t = time.perf_counter()
        small[name] = M.candidates(name, files, questions, index="index-t128", overrides=SMALL)
        print(f"{name}: 128-token index and candidates in {time.perf_counter() - t:.0f}s", flush=True)
    variant = {"shipped": (M.DEFAULT, True, 0.0, 0.0)}
    res = {"254 tokens (shipped)": M.evaluate(stock, variant)["shipped"],
           "128 tokens": M.evaluate(small, variant)["shipped"]}
    from llmctl.stats import paired_bootstrap

    report: dict = {"settings": {"128 tokens": SMALL}, "results": {}}
    for v, per in res.items():
        report["results"][v] = {}
        for c, entry in per.items():
            row = {h: M.summary(entry, None if h == "all" else h) for h in ("tune", "check", "all")}
            if v != "254 tokens (shipped)":
                base = res["254 tokens (shipped)"][c]
                for h in ("tune", "check"):
                    t = paired_bootstrap(M.arrays(entry, h, "mrr@10") - M.arrays(base, h, "mrr@10"))
                    row[h]["vs_shipped_mrr"] = {"delta": round(t["delta"], 4), "p": t["p_value"]}
            report["results"][v][c] = row
    (M.OUT / "chunk_size.json").write_text(json.dumps(report, indent=1))
    for v, per in report["results"].items():
        cells = " | ".join(f"{c}: {r['tune']['hit@1']:.2f}/{r['tune']['hit@3']:.2f}/{r['tune']['mrr@10']:.3f} "
                           f"check {r['check']['hit@1']:.2f}/{r['check']['hit@3']:.2f}/{r['check']['mrr@10']:.3f} "
                           f"{r['tune'].get('vs_shipped_mrr', '')} {r['check'].get('vs_shipped_mrr', '')}"
                           for c, r in per.items())
        mt = np.mean([r["tune"]["mrr@10"] for r in per.values()])
        mc = np.mean([r["check"]["mrr@10"] for r in per.values()])
        print(f"{v}: {cells} | mean tune {mt:.3f} check {mc:.3f}")


if __name__ == "__main__":
    main()
