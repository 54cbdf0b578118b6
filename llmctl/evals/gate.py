"""The CI gate, designed like an experiment.

- **Thresholds** on the final stage's retrieval metrics, and a **pass rate** for answers: with
  ``repeats`` each answer is asked N times, a case's pass rate is passes / N (a case that both
  passed and failed is *flaky*), and the run passes when the mean pass rate over the answered
  cases is at least ``min_pass_rate``.
- **Baselines and A/B**: per metric, a paired bootstrap over *clusters* of cases (cases sharing an
  expected document, or a ``group``, are resampled together: questions about one document are not
  independent evidence), a one-sided p-value for "it dropped", and Holm's step-down adjustment over
  the gated metrics, so the family-wise error of the gate is at most ``significance``.
- **Power**: per gated metric, the smallest drop the suite detects with 80% power (one-sided, at the
  Bonferroni level of Holm's first step), from the clustered variance of the paired differences (or
  of the metric itself without a baseline) plus the spread of a drop that takes whole clusters, and
  a warning when ``max_regression`` is below it.
- **Sequential stopping** (``--stop-when-decided``): an anytime-valid betting test for sampling
  without replacement (Waudby-Smith & Ramdas, 2020) on the answers, taken in a seeded random
  order, which also holds the exact bound "even if every remaining case passed (failed)".

Every function below takes plain numbers, so bench/gate_sim.py drives this very code.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from llmctl.errors import ConfigError
from llmctl.evals.runner import EvalResult
from llmctl.evals.sequential import RULE, SEQUENTIAL_DELTA, Sequential, SequentialComparison, answer_order  # noqa: F401
from llmctl.stats import sign_flip_p

NOT_COMPARED = ("llmctl",)  # a new llmctl version is exactly what a baseline is for
ANSWER_SIDE = ("answers",)  # changes answers, not retrieval metrics: reported, never blocking
PASS_RATE = "answer_pass_rate"  # the answer side's gated metric: per case, passes / repeats
POWER = 0.8


# -- clusters ------------------------------------------------------------------------------------
def clusters_for(keys: Sequence[Sequence[str]]) -> list[int]:
    """Cluster label per case: cases sharing a key are in one cluster, transitively (union-find).
    A case's keys are its ``group`` ("g:name") when it has one, else its expected documents
    ("d:doc"); a case with no key is a cluster of its own."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, ks in enumerate(keys):
        own = f"case:{i}"
        find(own)
        for k in ks:
            parent[find(k)] = find(own)
    labels: dict[str, int] = {}
    return [labels.setdefault(find(f"case:{i}"), len(labels)) for i in range(len(keys))]


def case_keys(expected: Sequence[str], group: str | None) -> list[str]:
    return [f"g:{group}"] if group else [f"d:{d}" for d in expected]


# -- the paired test -----------------------------------------------------------------------------
def _cluster_sums(values: Sequence[float], clusters: Sequence[int]):
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    labels = np.unique(np.asarray(clusters), return_inverse=True)[1].ravel()
    g = int(labels.max()) + 1 if len(labels) else 0
    return v, np.bincount(labels, weights=v, minlength=g), np.bincount(labels, minlength=g).astype(np.float64)


def clustered_se(values: Sequence[float], clusters: Sequence[int]) -> float:
    """Standard error of the mean of ``values`` when clusters, not cases, are the independent units
    (the ratio estimator's linearised variance, with the G/(G-1) small-sample factor)."""
    v, sums, sizes = _cluster_sums(values, clusters)
    g = len(sums)
    if g < 2:
        return 0.0
    mean = sums.sum() / sizes.sum()
    return float(math.sqrt(g / (g - 1) * ((sums - mean * sizes) ** 2).sum()) / sizes.sum())


def clustered_bootstrap(diffs: Sequence[float], clusters: Sequence[int] | None = None, *,
                        resamples: int = 10_000, seed: int = 0) -> dict:
    """Paired comparison (``diffs``: this run minus the other, per case) resampling whole clusters:
    mean difference, 95% percentile CI, a one-sided p-value for a drop (the share of resampled
    means, centred on zero and scaled by sqrt(G/(G-1)), at or below the one observed), the
    two-sided one, wins/losses/ties and the number of clusters. With every case its own cluster
    the resamples are those of llmctl.stats.paired_bootstrap (same seed, same draws). With up to
    16 clusters the p-values are never below the exact sign-flip test's (``stats.sign_flip_p``):
    2 clusters that both dropped give 0.25, not the 1/(B+1) of a bootstrap whose resamples do not vary."""
    import numpy as np

    d, sums, sizes = _cluster_sums(diffs, clusters if clusters is not None else range(len(diffs)))
    g = len(sums)
    mean = float(sums.sum() / sizes.sum())
    idx = np.random.default_rng(seed).integers(0, g, size=(resamples, g))
    counts = np.bincount((np.arange(resamples)[:, None] * g + idx).ravel(), minlength=resamples * g)
    counts = counts.reshape(resamples, g).astype(np.float64)
    means = (counts @ sums) / (counts @ sizes)
    if g < 2:  # one cluster: no variance to test against
        p_one = p_two = 1.0
    else:
        dev = (means - mean) * math.sqrt(g / (g - 1))
        p_one = (np.count_nonzero(dev <= mean + 1e-12) + 1) / (resamples + 1)
        p_two = (np.count_nonzero(np.abs(dev) >= abs(mean) - 1e-12) + 1) / (resamples + 1)
        exact = sign_flip_p(sums, sizes.sum())
        if exact is not None:  # few clusters: never below what their 2^G sign assignments allow
            p_one, p_two = max(p_one, exact[0]), max(p_two, exact[1])
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"delta": round(mean, 6), "ci95": [round(float(lo), 6), round(float(hi), 6)],
            "p_value": round(float(min(p_one, 1.0)), 4), "p_two_sided": round(float(min(p_two, 1.0)), 4),
            "wins": int((d > 1e-12).sum()), "losses": int((d < -1e-12).sum()),
            "ties": int((np.abs(d) <= 1e-12).sum()), "clusters": g}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: the i-th smallest is multiplied by (m - i + 1), made
    monotone and capped at 1. Rejecting the adjusted p < alpha controls the family-wise error at
    alpha whatever the dependence between the tests."""
    m = len(p_values)
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: p_values[j])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = round(running, 6)
    return adjusted


def decide(rows: list[dict], significance: float | None, max_regression: float) -> list[dict]:
    """Holm over the rows (one per gated metric), then each row's verdict: regressed when it dropped
    beyond max_regression and (with a significance level) its adjusted p-value is under it."""
    for r, adj in zip(rows, holm([r["p_value"] for r in rows]), strict=True):
        r["p_adjusted"] = adj
        significant = significance is None or adj < significance
        r["regressed"] = r["delta"] < -max_regression - 1e-9 and significant
    return rows


# -- power ---------------------------------------------------------------------------------------
def z(q: float) -> float:
    return statistics.NormalDist().inv_cdf(q)


def mde(se: float, alpha: float, power: float = POWER, levels: Sequence[float] | None = None,
        clusters: Sequence[int] | None = None) -> float:
    """Smallest true drop a one-sided level-alpha test detects with this power: (z_1-a + z_power) SE.

    With ``levels`` (the metric's per-case values before the drop) the spread the drop itself adds
    is counted too (the bootstrap sees it in the data it resamples): a drop of d is taken as each
    *cluster* (``clusters``: a label per case; None, each case its own) losing its values with
    probability f = d / mean, independently, so the SE under the drop is
    sqrt(SE^2 + f(1-f) sum_c(T_c^2) / n^2), T_c the cluster's total, and d = (z_1-a + z_power)
    SE_drop is solved for d. Whole clusters lost together is the widest spread a drop of d can add
    when clusters are the independent units (a drop spread over single cases adds less), so the
    stated size holds whichever way the drop falls; without clusters this is per case.

    d - k SE_drop(d) is convex in d and negative at 0, so it has one root, and every larger drop
    has at least this power: found by bisection on [0, mean] (a fixed-point iteration can
    oscillate when the drop's spread is large). Beyond the mean the drop's spread is 0 (f = 1):
    when even losing everything is not detectable the answer is k SE, larger than the mean."""
    k = z(1 - alpha) + z(power)
    d = k * se
    if not levels:
        return d
    n = len(levels)
    mean = sum(levels) / n
    if mean <= 0 or d >= mean:
        return d
    totals: dict[int, float] = {}
    for c, y in zip(range(n) if clusters is None else clusters, levels, strict=True):
        totals[c] = totals.get(c, 0.0) + y
    s2 = sum(t * t for t in totals.values()) / n ** 2

    def short(x: float) -> bool:  # is a drop of x below what this power detects?
        f = x / mean
        return x < k * math.sqrt(se * se + f * (1 - f) * s2)

    lo, hi = d, mean  # short(lo); not short(hi): at the mean the drop adds no spread and k SE < mean
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if short(mid) else (lo, mid)
    return hi


def test_alpha(significance: float | None, gated: int) -> float:
    """The level one metric's test must reach at Holm's first step (Bonferroni): a drop in a single
    metric is caught at this level. Without a significance level, the conventional 0.05."""
    return (significance or 0.05) / max(1, gated)


def power_row(metric: str, values: Sequence[float], clusters: Sequence[int], alpha: float,
              max_regression: float, source: str, levels: Sequence[float] | None = None) -> dict:
    """The power statement for one gated metric (``values``: paired differences, or the metric's
    per-case values when there is no baseline yet: ``source`` says which; ``levels``: the metric's
    per-case values a drop would start from, in the order of ``clusters``). Both the SE and the
    drop's own spread are per cluster, as the bootstrap resamples: the advice counts clusters
    (more documents), since more questions about the same documents add little evidence."""
    se = clustered_se(values, clusters)
    n, g = len(values), len(set(clusters))
    smallest = mde(se, alpha, levels=levels, clusters=clusters if levels is not None else None)
    row = {"metric": metric, "se": round(se, 6), "mde": round(smallest, 4), "variance_from": source,
           "cases": n, "clusters": g, "detectable": max_regression >= smallest - 1e-12}
    if not row["detectable"]:
        target = max_regression if max_regression > 0 else None
        # the variance per cluster stays, so the MDE falls with the square root of the clusters
        row["clusters_needed"] = math.ceil(g * (smallest / target) ** 2) if target else None
        row["cases_needed"] = math.ceil(n * (smallest / target) ** 2) if target else None
        grouped = f" in ~{row['clusters_needed']} clusters of this size" if target and g < n else ""
        seen = (f"smallest drop seen at 80% power: {smallest:.3f}" if smallest < 1 else
                "not even a fall to 0 is seen at 80% power")  # the metrics gated are fractions
        row["warning"] = (f"this suite cannot see a drop of {max_regression:g} in {metric}; it needs ~"
                          f"{row['cases_needed']} cases{grouped} ({seen})"
                          if target else
                          f"drops in {metric} smaller than {smallest:.3f} go unseen at 80% power" if smallest < 1
                          else f"this suite ({n} cases) cannot see any drop in {metric}, not even to 0, at 80% power: "
                               "add cases")
    return row


def power_report(per_metric: dict[str, tuple], significance: float | None, max_regression: float) -> dict:
    """``per_metric``: metric -> (values, clusters, source[, levels]) as power_row takes them."""
    alpha = test_alpha(significance, len(per_metric))
    rows = [power_row(m, v[0], v[1], alpha, max_regression, v[2], v[3] if len(v) > 3 else v[0])
            for m, v in per_metric.items() if len(v[0])]
    return {"power": POWER, "alpha_per_test": round(alpha, 6), "one_sided": True, "metrics": rows,
            "warnings": [r["warning"] for r in rows if "warning" in r]}


# -- comparing per-case values -------------------------------------------------------------------
def compare_cases(now: dict[str, dict[str, float]], then: dict[str, dict[str, float]], shared: Sequence[str],
                  metrics: Sequence[str], clusters: dict[str, int], *, significance: float | None,
                  max_regression: float, seed: int = 0, resamples: int = 10_000) -> dict:
    """Per metric (of those both runs have for their cases), this run minus the other over the
    shared cases: clustered bootstrap, Holm, verdicts, and the power statement."""
    rows, variances = [], {}
    for m in metrics:
        ids = [i for i in shared if m in now[i] and m in then[i]]
        if not ids:
            continue
        cl = [clusters[i] for i in ids]
        diffs = [now[i][m] - then[i][m] for i in ids]
        test = clustered_bootstrap(diffs, cl, resamples=resamples, seed=seed)
        rows.append({"metric": m, "baseline": round(statistics.fmean(then[i][m] for i in ids), 6),
                     "value": round(statistics.fmean(now[i][m] for i in ids), 6), "cases": len(ids), **test})
        varies = clustered_se(diffs, cl) > 0
        variances[m] = (diffs if varies else [now[i][m] for i in ids], cl,
                        "paired differences" if varies else "the metric (the runs do not differ)",
                        [then[i][m] for i in ids])
    decide(rows, significance, max_regression)
    power = power_report(variances, significance, max_regression)
    return {"metrics": rows, "power": power,
            "clusters": max((r["clusters"] for r in rows), default=0)}


# -- the run's own checks ------------------------------------------------------------------------
def thresholds(result: EvalResult) -> list[dict]:
    """Each threshold against the final stage's mean; with no case that names expected sources
    (e.g. --tag picked only unanswerable ones) a retrieval threshold has nothing to measure: it is
    skipped, never failed on a mean of nothing."""
    if not any(c.qrels for c in result.cases):
        return [{"metric": m, "threshold": t, "value": None, "passed": True,
                 "skipped": "no case in this run has expected sources"} for m, t in result.suite.thresholds.items()]
    final = result.aggregate().get(result.final_stage, {})
    return [{"metric": m, "threshold": t, "value": final.get(m, 0.0), "passed": final.get(m, 0.0) >= t}
            for m, t in result.suite.thresholds.items()]


def pass_rate_check(rates: Sequence[float], min_pass_rate: float) -> dict:
    """The answer gate: the mean pass rate over the answered cases against min_pass_rate."""
    value = statistics.fmean(rates) if rates else None
    return {"cases": len(rates), "value": None if value is None else round(value, 6),
            "min_pass_rate": min_pass_rate, "passed": value is None or value >= min_pass_rate - 1e-12}


def pass_rates(result: EvalResult) -> dict[str, float]:
    """Case id -> pass rate, for the cases answered without an error."""
    return {c.case.id: c.pass_rate for c in result.cases if c.pass_rate is not None and c.error is None}


def answer_gate(result: EvalResult) -> dict:
    out = pass_rate_check(list(pass_rates(result).values()), result.suite.min_pass_rate)
    out["repeats"] = result.suite.repeats
    out["flaky"] = [c.case.id for c in result.cases if c.flaky]
    out["errors"] = [c.case.id for c in result.cases if c.error is not None]
    return out


def load_baseline(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        data["fingerprint"], data["metrics"]  # noqa: B018
    except FileNotFoundError:
        raise ConfigError(f"Baseline {path} does not exist: write one with --json-file {path}") from None
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"Baseline {path} is not an llmctl eval --json report") from None
    return data


def _clusters(result: EvalResult) -> dict[str, int]:
    ids = [c.case.id for c in result.cases]
    labels = clusters_for([case_keys(sorted(c.qrels), c.case.group) for c in result.cases])
    return dict(zip(ids, labels, strict=True))


def compare(result: EvalResult, baseline: dict) -> dict:
    """Per-metric deltas of the final stage (and the answer pass rate) over the cases both runs
    scored, tested as above, or why the two runs are not comparable."""
    mine, theirs = result.fingerprint, baseline["fingerprint"]
    keys = set(mine) | set(theirs)
    differ = sorted(k for k in keys if k not in NOT_COMPARED + ANSWER_SIDE and mine.get(k) != theirs.get(k))
    if differ:
        return {"comparable": False, "differences": differ,
                "message": f"not comparable: {', '.join(differ)} differ from the baseline"}
    notes = [f"{k} settings differ from the baseline (answer checks are per run, never compared)"
             for k in ANSWER_SIDE if mine.get(k) != theirs.get(k)]
    now = _scored_cases(result)
    stage = baseline.get("final_stage", result.final_stage)
    then = {c["id"]: (c.get("query"), c.get("expected"), c.get("metrics", {}).get(stage, {}))
            for c in baseline.get("cases", []) if c.get("expected")}  # an error is the answer's
    # the same id asking something else (an edited case) is not the same case
    shared = sorted(i for i in now.keys() & then.keys() if now[i][:2] == tuple(then[i][:2]))
    cases = {"shared": len(shared), "only_this_run": len(now) - len(shared), "only_baseline": len(then) - len(shared)}
    if not shared:
        return {"comparable": False, "differences": ["cases"], "cases": cases,
                "message": f"not comparable: no case of this run ({len(now)}) is in the baseline ({len(then)}) "
                           "with the same query and expected sources"}
    suite = result.suite
    a = {i: dict(now[i][2]) for i in now}
    b = {i: dict(then[i][2]) for i in then}
    metrics = list(suite.all_metrics())
    if not notes:  # answers compare only when the same model, prompt and settings wrote them
        rate_now = {c.case.id: (c.case.query, c.pass_rate) for c in result.cases
                    if c.pass_rate is not None and c.error is None}
        rate_then = {c["id"]: (c.get("query"), c.get("pass_rate")) for c in baseline.get("cases", [])
                     if c.get("pass_rate") is not None and not c.get("error")}
        answered = sorted(i for i in rate_now.keys() & rate_then.keys() if rate_now[i][0] == rate_then[i][0])
        for i in answered:
            a.setdefault(i, {})[PASS_RATE] = rate_now[i][1]
            b.setdefault(i, {})[PASS_RATE] = rate_then[i][1]
        if answered:
            metrics.append(PASS_RATE)
            shared = sorted(set(shared) | set(answered))
    got = compare_cases(a, b, shared, metrics, _clusters(result), significance=suite.significance,
                        max_regression=suite.max_regression, seed=suite.seed)
    return {"comparable": True, "max_regression": suite.max_regression, "significance": suite.significance,
            "method": "clustered paired bootstrap, one-sided, Holm" if suite.significance else
                      "any drop beyond max_regression (significance: null)",
            "cases": cases, "notes": notes, **got}


def _scored_cases(result: EvalResult) -> dict[str, tuple[str, list[str], dict[str, float]]]:
    """Case id -> (query, expected documents, final-stage metrics) of the cases the run scored."""
    return {c.case.id: (c.case.query, sorted(c.qrels), c.metrics.get(result.final_stage, {}))
            for c in result.cases if c.qrels}  # an answer's error leaves retrieval's metrics


def paired(a: EvalResult, b: EvalResult) -> dict:
    """A/B: per metric of the final stages, and the answers' pass rate when both sides answered,
    B minus A over the cases both scored (clustered, Holm, power)."""
    fa = {i: dict(m) for i, (_, _, m) in _scored_cases(a).items()}
    fb = {i: dict(m) for i, (_, _, m) in _scored_cases(b).items()}
    metrics = list(a.suite.all_metrics())
    ra, rb = pass_rates(a), pass_rates(b)
    answered = ra.keys() & rb.keys()  # both sides answered: their pass rates are compared too
    for i in answered:
        fa.setdefault(i, {})[PASS_RATE], fb.setdefault(i, {})[PASS_RATE] = ra[i], rb[i]
    if answered:
        metrics.append(PASS_RATE)
    shared = sorted(fa.keys() & fb.keys())
    s = a.suite
    return compare_cases(fb, fa, shared, metrics, _clusters(a), significance=s.significance,
                         max_regression=s.max_regression, seed=s.seed)


def plan(result: EvalResult, baseline: dict | None = None) -> dict:
    """Before any paid call: from a retrieval-only run, the smallest drop each gated metric can
    show (the metric's own per-case variance; a baseline's pass rates for the answers, else the
    worst case of a pass/fail answer, variance 1/4)."""
    suite = result.suite
    clusters = _clusters(result)
    scored = _scored_cases(result)
    per: dict[str, tuple[list[float], list[int], str]] = {}
    ids = sorted(scored)
    for m in suite.all_metrics():
        per[m] = ([scored[i][2][m] for i in ids], [clusters[i] for i in ids], "the metric")
    answered = [c for c in result.cases if c.case.answer is not None]
    if answered:
        before = {c["id"]: c.get("pass_rate") for c in (baseline or {}).get("cases", [])}
        known = [before.get(c.case.id) for c in answered]
        if all(v is not None for v in known):
            per[PASS_RATE] = (known, [clusters[c.case.id] for c in answered], "the baseline's pass rates")
        else:  # +-1/2 per case: the variance of a pass/fail answer at its most uncertain
            cl = [clusters[c.case.id] for c in answered]  # a document's questions pass or fail together
            per[PASS_RATE] = ([float(k % 2) for k in cl], cl, "a worst case (no pass rates yet)")
    out = power_report(per, suite.significance, suite.max_regression)
    reps = suite.repeats * (2 if suite.judge else 1)
    out.update({"suite": suite.name, "cases": len(result.cases), "clusters": len(set(clusters.values())),
                "answer_cases": len(answered), "repeats": suite.repeats, "answer_calls": len(answered) * reps,
                "max_regression": suite.max_regression, "significance": suite.significance})
    return out


def gate_passed(result: EvalResult, checks: list[dict], baseline: dict | None, answers: dict | None = None) -> bool:
    answers = answers if answers is not None else answer_gate(result)
    regressed = bool(baseline and baseline.get("comparable") and any(r["regressed"] for r in baseline["metrics"]))
    unchecked = bool(baseline and not baseline.get("comparable") and result.suite.require_comparable_baseline)
    return (answers["passed"] and not answers["errors"] and all(c["passed"] for c in checks) and not regressed
            and not unchecked)
