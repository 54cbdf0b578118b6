"""The CI gate: thresholds on the final stage, and regressions against a baseline report."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from llmctl.errors import ConfigError
from llmctl.evals.runner import EvalResult
from llmctl.stats import paired_bootstrap

NOT_COMPARED = ("llmctl",)  # a new llmctl version is exactly what a baseline is for
ANSWER_SIDE = ("answers",)  # changes answers, not retrieval metrics: reported, never blocking


def thresholds(result: EvalResult) -> list[dict]:
    final = result.aggregate().get(result.final_stage, {})
    return [{"metric": m, "threshold": t, "value": final.get(m, 0.0), "passed": final.get(m, 0.0) >= t}
            for m, t in result.suite.thresholds.items()]


def load_baseline(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        data["fingerprint"], data["metrics"]  # noqa: B018
    except FileNotFoundError:
        raise ConfigError(f"Baseline {path} does not exist: write one with --json {path}") from None
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"Baseline {path} is not an llmctl eval --json report") from None
    return data


def compare(result: EvalResult, baseline: dict) -> dict:
    """Per-metric deltas of the final stage over the cases both runs scored, or why the two runs
    are not comparable."""
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
            for c in baseline.get("cases", []) if c.get("expected") and not c.get("error")}
    # the same id asking something else (an edited case) is not the same case
    shared = sorted(i for i in now.keys() & then.keys() if now[i][:2] == tuple(then[i][:2]))
    cases = {"shared": len(shared), "only_this_run": len(now) - len(shared), "only_baseline": len(then) - len(shared)}
    if not shared:
        return {"comparable": False, "differences": ["cases"], "cases": cases,
                "message": f"not comparable: no case of this run ({len(now)}) is in the baseline ({len(then)}) "
                           "with the same query and expected sources"}
    suite = result.suite
    rows = []
    for m in suite.all_metrics():
        if not all(m in now[i][2] and m in then[i][2] for i in shared):
            continue
        value = round(statistics.fmean(now[i][2][m] for i in shared), 6)
        before = round(statistics.fmean(then[i][2][m] for i in shared), 6)
        test = paired_bootstrap([now[i][2][m] - then[i][2][m] for i in shared], seed=suite.seed)
        significant = suite.significance is None or test["p_value"] < suite.significance
        rows.append({"metric": m, "baseline": before, "value": value, **test,
                     "regressed": test["delta"] < -suite.max_regression - 1e-9 and significant})
    return {"comparable": True, "max_regression": suite.max_regression, "significance": suite.significance,
            "cases": cases, "notes": notes, "metrics": rows}


def _scored_cases(result: EvalResult) -> dict[str, tuple[str, list[str], dict[str, float]]]:
    """Case id -> (query, expected documents, final-stage metrics) of the cases the run scored."""
    return {c.case.id: (c.case.query, sorted(c.qrels), c.metrics.get(result.final_stage, {}))
            for c in result.cases if c.qrels and c.error is None}


def paired(a: EvalResult, b: EvalResult) -> dict[str, dict]:
    """A/B: per metric of the final stages, B minus A over the cases both scored."""
    fa = {i: m for i, (_, _, m) in _scored_cases(a).items()}
    fb = {i: m for i, (_, _, m) in _scored_cases(b).items()}
    shared = sorted(fa.keys() & fb.keys())
    return {m: paired_bootstrap([fb[i][m] - fa[i][m] for i in shared], seed=a.suite.seed)
            for m in a.suite.all_metrics() if shared and all(m in fa[i] and m in fb[i] for i in shared)}


def gate_passed(result: EvalResult, checks: list[dict], baseline: dict | None) -> bool:
    answers_ok = all(c.passed for c in result.cases)
    regressed = bool(baseline and baseline.get("comparable") and any(r["regressed"] for r in baseline["metrics"]))
    return answers_ok and all(c["passed"] for c in checks) and not regressed
