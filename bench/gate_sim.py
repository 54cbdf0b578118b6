"""Simulate the eval gate (llmctl/evals/gate.py): false alarms, power, sequential stopping.

No model, no index: a suite of documents with several questions each, per-case retrieval metrics
drawn from a latent quality shared within a document, and a noisy answer model (each answer right
with its case's probability, asked `repeats` times). The real gate functions decide.

  (a) no change: baseline and new run come from equally good configs (exchangeable per case,
      correlated within a document) and the same answer model -> how often does each gate fail?
  (b) a real regression of the size the power report calls detectable -> how often is it caught?
  (c) --stop-when-decided (gate.Sequential) on a clear pass and a clear regression of the pass
      rate -> answer calls saved, and agreement with the full run's verdict.

    .venv/bin/python bench/gate_sim.py [--runs 1000] [--resamples 2000] [--seed 0] [--parts abc]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrices; leave the other cores alone
os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmctl.evals import gate  # noqa: E402
from llmctl.stats import paired_bootstrap  # noqa: E402

DOCS, PER_DOC, REPEATS = 40, 3, 3
METRICS = ["hit@1", "hit@3", "recall@5", "mrr@10"]
MAX_REGRESSION, SIGNIFICANCE = 0.03, 0.05
THRESHOLD = 0.7  # min_pass_rate in (c)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


class World:
    """One suite drawn from the population: document and question effects for retrieval and answers."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.doc = np.repeat(np.arange(DOCS), PER_DOC)
        n = DOCS * PER_DOC
        self.quality = 1.2 + rng.normal(0, 1.0, DOCS)[self.doc] + rng.normal(0, 0.5, n)
        self.p_answer = sigmoid(2.2 + rng.normal(0, 1.0, DOCS)[self.doc] + rng.normal(0, 0.6, n))
        self.ids = [f"c{i}" for i in range(n)]
        self.clusters = dict(zip(self.ids, gate.clusters_for([[f"d:{d}"] for d in self.doc]), strict=True))

    def retrieval(self, broken_docs: float = 0.0, broken_cases: float = 0.0) -> np.ndarray:
        """Rank of the relevant document per case under one config: the config adds its own
        per-document and per-question effects (so two equally good configs still disagree per case);
        ``broken_docs``: the share of documents this config no longer retrieves (rank 11+)."""
        n = len(self.doc)
        q = self.quality + self.rng.normal(0, 0.7, DOCS)[self.doc] + self.rng.normal(0, 0.5, n)
        rank = self.rng.geometric(sigmoid(q))
        if broken_docs:
            rank = np.where((self.rng.random(DOCS) < broken_docs)[self.doc], 11, rank)
        if broken_cases:
            rank = np.where(self.rng.random(n) < broken_cases, 11, rank)
        return rank

    def answers(self, drop: float = 0.0) -> np.ndarray:
        """Pass rate per case over REPEATS answers; ``drop`` lowers every case's probability of a right
        answer in proportion, so the population mean falls by ``drop``."""
        p = self.p_answer * (1 - drop / POP_PASS)
        return self.rng.binomial(REPEATS, np.clip(p, 0, 1)) / REPEATS


def metrics_of(rank: np.ndarray) -> dict[str, np.ndarray]:
    return {"hit@1": (rank <= 1) * 1.0, "hit@3": (rank <= 3) * 1.0, "recall@5": (rank <= 5) * 1.0,
            "mrr@10": np.where(rank <= 10, 1.0 / rank, 0.0)}


def per_case(world: World, rank: np.ndarray, rates: np.ndarray) -> dict[str, dict[str, float]]:
    m = metrics_of(rank)
    return {i: {**{k: float(v[j]) for k, v in m.items()}, gate.PASS_RATE: float(rates[j])}
            for j, i in enumerate(world.ids)}


def population_means(seed: int = 12345) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    ps, mrr = [], []
    for _ in range(200):
        w = World(rng)
        ps.append(w.p_answer.mean())
        mrr.append(metrics_of(w.retrieval())["mrr@10"].mean())
    return float(np.mean(ps)), float(np.mean(mrr))


POP_PASS, POP_MRR = population_means()
ALL = [*METRICS, gate.PASS_RATE]


def one_comparison(world: World, then: dict, now: dict, resamples: int, seed: int) -> dict:
    """Every gate on the same pair of runs."""
    out = gate.compare_cases(now, then, world.ids, ALL, world.clusters, significance=SIGNIFICANCE,
                             max_regression=MAX_REGRESSION, seed=seed, resamples=resamples)
    diffs = {m: [now[i][m] - then[i][m] for i in world.ids] for m in ALL}
    legacy = {m: paired_bootstrap(diffs[m], resamples=resamples, seed=seed) for m in ALL}
    plain = [gate.clustered_bootstrap(diffs[m], None, resamples=resamples, seed=seed) for m in ALL]
    plain_holm = gate.holm([t["p_value"] for t in plain])
    clustered = out["metrics"]
    drop = {m: statistics.fmean(diffs[m]) < -MAX_REGRESSION - 1e-9 for m in ALL}
    return {
        "new gate (clustered, one-sided, Holm)": any(r["regressed"] for r in clustered),
        "clustered, one-sided, no Holm": any(drop[r["metric"]] and r["p_value"] < SIGNIFICANCE for r in clustered),
        "plain bootstrap, one-sided, Holm": any(drop[m] and p < SIGNIFICANCE for m, p in zip(ALL, plain_holm,
                                                                                             strict=True)),
        "today: plain bootstrap per metric (significance 0.05)": any(
            drop[m] and legacy[m]["p_value"] < SIGNIFICANCE for m in ALL),
        "today: default (any drop beyond max_regression)": any(drop.values()),
        "_mde": {r["metric"]: r["mde"] for r in out["power"]["metrics"]},
        "_caught": {r["metric"]: r["regressed"] for r in clustered},
    }


def rate(results: list[dict], key: str) -> float:
    return sum(r[key] for r in results) / len(results)


def simulate_null(runs: int, resamples: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(runs):
        w = World(rng)
        then = per_case(w, w.retrieval(), w.answers())
        now = per_case(w, w.retrieval(), w.answers())
        out.append(one_comparison(w, then, now, resamples, seed + k))
    return out


def simulate_regression(runs: int, resamples: int, seed: int, *, answer_drop: float = 0.0,
                        mrr_drop: float = 0.0, by_document: bool = False) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(runs):
        w = World(rng)
        then = per_case(w, w.retrieval(), w.answers())
        # breaking a share f of documents (or questions) sends their ranks to 11, where mrr@10 is 0:
        # the mean falls by f * its mean
        broken = mrr_drop / POP_MRR if mrr_drop else 0.0
        rank = w.retrieval(broken_docs=broken) if by_document else w.retrieval(broken_cases=broken)
        now = per_case(w, rank, w.answers(answer_drop))
        out.append(one_comparison(w, then, now, resamples, seed + k))
    return out


def simulate_sequential(runs: int, seed: int, true_drop: float, threshold: float) -> dict:
    """The pass-rate gate (mean pass rate >= threshold) with --stop-when-decided: cases in a random
    order, each answered REPEATS times, stop when gate.Sequential decides."""
    rng = np.random.default_rng(seed)
    saved, same, calls_full = [], 0, 0
    verdicts = {"pass": 0, "fail": 0}
    for _ in range(runs):
        w = World(rng)
        rates = w.answers(true_drop)
        full = "pass" if rates.mean() >= threshold - 1e-12 else "fail"
        seq = gate.Sequential(len(rates), threshold)
        used = len(rates)
        for j, i in enumerate(rng.permutation(len(rates))):
            if seq.observe(float(rates[i])):
                used = j + 1
                break
        verdict = seq.decided or full
        verdicts[full] += 1
        same += verdict == full
        saved.append(1 - used / len(rates))
        calls_full += len(rates) * REPEATS
    return {"saved": float(np.mean(saved)), "same": same / runs, "full_fail_share": verdicts["fail"] / runs,
            "calls_full": calls_full / runs, "calls_used": calls_full / runs * (1 - float(np.mean(saved)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", default="abc", help="which of (a), (b), (c) to run; (b) needs (a)'s power report")
    args = ap.parse_args()
    t0 = time.perf_counter()
    n = DOCS * PER_DOC
    print(f"Suite: {DOCS} documents x {PER_DOC} questions = {n} cases, answers asked {REPEATS} times; "
          f"population mean pass rate {POP_PASS:.3f}, mrr@10 {POP_MRR:.3f}; max_regression {MAX_REGRESSION}, "
          f"significance {SIGNIFICANCE}; {args.runs} runs, {args.resamples} resamples per test.\n")
    if "b" in args.parts and "a" not in args.parts:
        ap.error("--parts: (b) takes its drop sizes from (a)'s power report")
    if "a" in args.parts:
        part_ab(args)
    if "c" in args.parts:
        part_c(args)
    print(f"\n{time.perf_counter() - t0:.0f} s")


def part_ab(args) -> None:
    null = simulate_null(args.runs, args.resamples, args.seed)
    keys = [k for k in null[0] if not k.startswith("_")]
    mde = {m: statistics.median(r["_mde"][m] for r in null) for m in ALL}
    print("(a) no change: share of runs that fail the gate")
    for k in keys:
        print(f"  {k:<55} {rate(null, k):6.1%}")
    print("    power report (median over the runs): smallest drop detectable at 80% power: "
          + ", ".join(f"{m} {v:.3f}" for m, v in mde.items()))
    print()
    if "b" not in args.parts:
        return
    print("(b) real regressions of the reported detectable size: share caught")
    for label, kw, metric in (
            ("answer pass rate", {"answer_drop": mde[gate.PASS_RATE]}, gate.PASS_RATE),
            ("mrr@10 (questions no longer retrieved)", {"mrr_drop": mde["mrr@10"]}, "mrr@10"),
            ("mrr@10 (whole documents no longer retrieved)", {"mrr_drop": mde["mrr@10"], "by_document": True},
             "mrr@10")):
        res = simulate_regression(args.runs, args.resamples, args.seed + 10_000, **kw)
        metric_caught = sum(r["_caught"][metric] for r in res) / len(res)
        print(f"  {label}, drop {next(iter(kw.values())):.3f}: new gate fails {rate(res, keys[0]):.1%} "
              f"({metric} itself flagged {metric_caught:.1%}); today's default "
              f"{rate(res, keys[-1]):.1%}, today's per-metric bootstrap {rate(res, keys[-2]):.1%}")
    print()


def part_c(args) -> None:
    print(f"(c) --stop-when-decided, pass-rate gate min_pass_rate {THRESHOLD} (delta {gate.SEQUENTIAL_DELTA}):")
    for label, drop in ((f"clear pass (true mean pass rate {POP_PASS:.2f})", 0.0),
                        (f"clear regression (true mean {POP_PASS - 0.3:.2f})", 0.3)):
        s = simulate_sequential(args.runs, args.seed + 20_000, drop, THRESHOLD)
        print(f"  {label}: answer calls {s['calls_used']:.0f} of {s['calls_full']:.0f} "
              f"({s['saved']:.1%} fewer); same verdict as the full run in {s['same']:.1%} of runs "
              f"(full run failed in {s['full_fail_share']:.1%})")


if __name__ == "__main__":
    main()
