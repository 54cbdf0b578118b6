"""`llmctl eval` as one call: load the suite (or BEIR), run it, gate it, compare it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.config import Config
from llmctl.evals import gate, report
from llmctl.evals.beir import load_beir
from llmctl.evals.runner import EvalResult, run_suite
from llmctl.evals.suite import Suite, load_suite
from llmctl.index.datadir import DataDir


@dataclass
class EvalOutcome:
    result: EvalResult
    report: dict
    passed: bool
    ab: dict | None = None

    def failure_summary(self) -> str:
        r = self.report
        parts = [f"{t['metric']} {t['value']:.3f} < {t['threshold']}" for t in r["thresholds"] if not t["passed"]]
        b = r.get("baseline")
        if b and b.get("comparable"):
            parts += [f"{m['metric']} dropped {m['delta']:+.3f} (allowed -{b['max_regression']}; p {m['p_value']:.3g})"
                      for m in b["metrics"] if m["regressed"]]
        failed = [c["id"] for c in r["cases"] if not c["passed"]]
        if failed:
            parts.append(f"{len(failed)} case(s) failed: {', '.join(failed[:5])}")
        return f"eval '{r['suite']}' failed its quality gate: " + "; ".join(parts)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k != "tags":
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def run_eval(
    suite_path: Path | None,
    *,
    load: Callable[..., Config],
    beir: Path | None = None,
    split: str = "test",
    limit: int | None = None,
    tags: list[str] | None = None,
    baseline: Path | None = None,
    against: Path | None = None,
    answers: bool = True,
    progress=None,
    record: Path | None = None,
    replay: Path | None = None,
    batch: bool = False,
) -> EvalOutcome:
    if beir is not None:
        corpus, suite = load_beir(beir, split)
        cfg = load({})
        cfg.data_dir = DataDir(cfg.data_dir).beir(beir)
        _ingest_beir(corpus, cfg, progress)
    else:
        suite = load_suite(suite_path)
        cfg = load(flatten(suite.config))
    cassette = None
    if record or replay:
        from llmctl.llm.cassette import Cassette

        cassette = Cassette(record or replay, "record" if record else "replay", cfg.llm.store_prompts)
    result = _run(suite, cfg, limit, tags, answers, progress, cassette, batch)
    checks = gate.thresholds(result)
    comparison = gate.compare(result, gate.load_baseline(baseline)) if baseline else None
    passed = gate.gate_passed(result, checks, comparison)
    outcome = EvalOutcome(result, report.to_dict(result, checks, comparison, passed), passed)
    if against is not None:
        other_cfg = load(flatten(suite.config), against)
        if beir is not None:
            other_cfg.data_dir = DataDir(other_cfg.data_dir).beir(beir)
        other = _run(suite, other_cfg, limit, tags, answers, progress, cassette, batch)
        a, b = result.aggregate()[result.final_stage], other.aggregate()[other.final_stage]
        outcome.ab = {"a": {"config": cfg.source, "stage": result.final_stage, "metrics": a},
                      "b": {"config": other_cfg.source, "stage": other.final_stage, "metrics": b},
                      "delta": {m: round(b[m] - a[m], 6) for m in a}, "paired": gate.paired(result, other)}
        outcome.report["ab"] = outcome.ab
    return outcome


def _run(suite: Suite, cfg: Config, limit, tags, answers, progress, cassette, batch) -> EvalResult:
    total = min(limit or len(suite.cases), len(suite.cases))
    task = progress.task(f"Evaluating {suite.name}", total) if progress else None
    result = run_suite(suite, cfg, limit=limit, tags=tags, answers=answers, cassette=cassette, batch=batch,
                       on_case=(lambda _: task.advance(1)) if task else None)
    if task:
        task.done()
    return result


def _ingest_beir(corpus: Path, cfg: Config, progress) -> None:
    """The dataset gets its own index under the data dir; re-runs are a quick no-op sync."""
    from llmctl.ingest.pipeline import ingest

    cfg.base_dir = corpus.parent.resolve()
    ingest([corpus], cfg, progress=progress)
