"""The CI gate: thresholds on the final stage, and regressions against a baseline report."""

from __future__ import annotations

import json
from pathlib import Path

from llmctl.errors import ConfigError
from llmctl.evals.runner import EvalResult

NOT_COMPARED = ("llmctl",)  # a new llmctl version is exactly what a baseline is for


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
    """Per-metric deltas of the final stage, or why the two runs are not comparable."""
    mine, theirs = result.fingerprint, baseline["fingerprint"]
    differ = sorted(k for k in set(mine) | set(theirs) if k not in NOT_COMPARED and mine.get(k) != theirs.get(k))
    if differ:
        return {"comparable": False, "differences": differ,
                "message": f"not comparable: {', '.join(differ)} differ from the baseline"}
    now = result.aggregate().get(result.final_stage, {})
    before = baseline["metrics"].get(baseline.get("final_stage", result.final_stage), {})
    allowed = result.suite.max_regression
    rows = []
    for m, value in now.items():
        if m not in before:
            continue
        delta = round(value - before[m], 6)
        rows.append({"metric": m, "baseline": before[m], "value": value, "delta": delta,
                     "regressed": delta < -allowed - 1e-9})
    return {"comparable": True, "max_regression": allowed, "metrics": rows}


def gate_passed(result: EvalResult, checks: list[dict], baseline: dict | None) -> bool:
    answers_ok = all(c.passed for c in result.cases)
    regressed = bool(baseline and baseline.get("comparable") and any(r["regressed"] for r in baseline["metrics"]))
    return answers_ok and all(c["passed"] for c in checks) and not regressed
