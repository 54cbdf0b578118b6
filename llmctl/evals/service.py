"""`llmctl eval` as one call: load the suite (or BEIR), run it, gate it, compare it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.config import Config
from llmctl.datadir import DataDir
from llmctl.errors import ConfigError, UsageError
from llmctl.evals import gate, report
from llmctl.evals.beir import load_beir
from llmctl.evals.runner import EvalResult, run_suite
from llmctl.evals.suite import Suite, load_suite


@dataclass
class EvalOutcome:
    result: EvalResult
    report: dict
    passed: bool
    ab: dict | None = None

    def failure_summary(self) -> str:
        r = self.report
        return f"eval '{r['suite']}' failed its quality gate: " + "; ".join(report.gate_failures(r))


def suite_source(path: Path) -> str:
    """Where a suite's ``config:`` overrides come from, for config error messages."""
    return f"{path} (its config: section)"


def suite_config(suite: Suite, path: Path, load: Callable[..., Config]) -> Config:
    """The config with the suite's ``config:`` section merged over it. A suite comes with a project
    like its ./llmctl.yaml: a section that sends questions, documents or keys elsewhere (a provider,
    an endpoint) needs ``llmctl trust SUITE`` first, as that file would."""
    from llmctl import trust

    cfg = load(flatten(suite.config), source=suite_source(path))
    trust.require_trusted(path, path.read_bytes(), suite.config, cfg, {"data_dir"}, part="its config: section ")
    return cfg


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
    data: DataDir,
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
    repeats: int | None = None,
    stop_when_decided: bool = False,
    gateways=None,
) -> EvalOutcome:
    """``llmctl eval``: the suite (or the BEIR dataset, on its own index: ``data.beir``) run on the
    index in ``data``, gated, and compared with a baseline or another config."""
    if beir is not None:
        corpus, suite = load_beir(beir, split)
        cfg, data = load({}), data.beir(beir)
        _ingest_beir(corpus, cfg.model_copy(update={"base_dir": corpus.parent.resolve()}), data, progress)
    else:
        suite = load_suite(suite_path)
        cfg = suite_config(suite, suite_path, load)
    if repeats is not None:
        suite = suite.model_copy(update={"repeats": repeats})
    cassette = None
    if record or replay:
        from llmctl.llm.cassette import Cassette

        cassette = Cassette(record or replay, "record" if record else "replay", cfg.llm.store_prompts)
    if replay and answers and not cfg.llm.providers:  # the tape is read: now what it needs
        raise ConfigError(f"--replay {replay} needs the llm.providers entry the tape was recorded with: it sizes "
                          "and builds the prompts the tape is keyed by (no key, server or network is used)")
    base = gate.load_baseline(baseline) if baseline else None
    rates = {c["id"]: c.get("pass_rate") for c in (base or {}).get("cases", []) if not c.get("error")}
    result = _run(suite, cfg, data, limit, tags, answers, progress, cassette, batch, stop_when_decided, rates,
                  gateways)
    checks = gate.thresholds(result)
    comparison = gate.compare(result, base) if base else None
    answered = gate.answer_gate(result)
    passed = gate.gate_passed(result, checks, comparison, answered)
    outcome = EvalOutcome(result, report.to_dict(result, checks, comparison, passed, answered), passed)
    if against is not None:
        other_cfg = load(_not_set_in(flatten(suite.config), against), against, source=suite_source(suite_path))
        _same_index(cfg, other_cfg, against)
        if cassette is not None and answers and other_cfg.llm != cfg.llm:
            raise UsageError(f"--record/--replay with --against {against}, whose llm settings differ: a tape is "
                             "keyed by the prompt, not the model, so B would get A's answers; run the A/B without "
                             "a tape, or record each config on its own")
        other = _run(suite, other_cfg, data, limit, tags, answers, progress, cassette, batch, gateways=gateways)
        paired = gate.paired(result, other)
        a, b = (_means(r) for r in (result, other))
        outcome.ab = {"a": {"config": cfg.source, "stage": result.final_stage, "metrics": a,
                            "cost_usd": result.cost_usd},
                      "b": {"config": other_cfg.source, "stage": other.final_stage, "metrics": b,
                            "cost_usd": other.cost_usd},
                      "delta": {m: round(b[m] - a[m], 6) for m in a if m in b},
                      "paired": {r["metric"]: r for r in paired["metrics"]}, "power": paired["power"],
                      "clusters": paired["clusters"]}
        outcome.report["ab"] = outcome.ab
    if cassette is not None:
        cassette.finish()
    return outcome


def _not_set_in(overrides: dict[str, Any], path: Path) -> dict[str, Any]:
    """The suite's settings that the --against file does not set: B is the suite's config with the
    file's changes on top (the suite's own llm.providers must not overrule the file's)."""
    from llmctl.config import read_config_file

    keys = set(flatten(read_config_file(path)[1]))  # checked as load_config checks it: /dev/zero, a FIFO...
    return {k: v for k, v in overrides.items()
            if not any(k == a or k.startswith(a + ".") or a.startswith(k + ".") for a in keys)}


def _means(result: EvalResult) -> dict[str, float]:
    """The final stage's metric means, and the answers' mean pass rate when the run answered."""
    out = dict(result.aggregate()[result.final_stage])
    answered = gate.answer_gate(result)
    if answered["value"] is not None:
        out[gate.PASS_RATE] = answered["value"]
    return out


# What an index is built with: an A/B on one index cannot vary it (its queries use what built it).
INDEX_SECTIONS = ("embedding", "chunking", "bm25", "vector_store")


def _same_index(cfg: Config, other: Config, path: Path) -> None:
    """Refuse an --against config whose difference is fixed at ingest: both sides would run on the
    same index, so the A/B would compare the index with itself and call it a tie."""
    from llmctl.config import load_yaml

    changed = [f"{section}.{k} ({getattr(getattr(cfg, section), k)!r} -> {v!r})"
               for section in INDEX_SECTIONS
               for k, v in getattr(other, section).model_dump().items() if getattr(getattr(cfg, section), k) != v]
    try:
        raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    except Exception:  # noqa: BLE001 - load() read the file already; this only looks for data_dir
        raw = {}
    if isinstance(raw, dict) and isinstance(raw.get("data_dir"), str):  # relative to the file, as load_config reads it
        theirs = (path.resolve().parent / Path(raw["data_dir"]).expanduser()).resolve()
        if theirs != Path(cfg.data_dir).resolve():
            changed.append(f"data_dir ({raw['data_dir']!r})")
    if changed:
        raise ConfigError(
            f"--against {path} changes {', '.join(changed[:3])}{' and more' if len(changed) > 3 else ''}, which "
            "the index fixes when it is built: --against compares query-time settings (retrieval, rerank, llm) on "
            "one index. To compare indexes, ingest with each config into its own --data-dir, run eval on one "
            "with --json-file A.json, then on the other with --baseline A.json")


def run_plan(suite_path: Path, *, load: Callable[..., Config], data: DataDir, limit: int | None = None,
             tags: list[str] | None = None, baseline: Path | None = None, repeats: int | None = None,
             progress=None) -> dict:
    """``eval --plan``: a retrieval-only run (free) and, per gated metric, the smallest drop the suite
    can detect, before any paid call."""
    suite = load_suite(suite_path)
    if repeats is not None:
        suite = suite.model_copy(update={"repeats": repeats})
    cfg = suite_config(suite, suite_path, load)
    result = _run(suite, cfg, data, limit, tags, False, progress, None, False)
    return gate.plan(result, gate.load_baseline(baseline) if baseline else None)


def _run(suite: Suite, cfg: Config, data: DataDir, limit, tags, answers, progress, cassette, batch,
         stop_when_decided=False, baseline_rates=None, gateways=None) -> EvalResult:
    total = min(limit or len(suite.cases), len(suite.cases))
    task = progress.task(f"Evaluating {suite.name}", total) if progress else None
    result = run_suite(suite, cfg, data, limit=limit, tags=tags, answers=answers, cassette=cassette, batch=batch,
                       on_case=(lambda _: task.advance(1)) if task else None, stop_when_decided=stop_when_decided,
                       baseline_rates=baseline_rates, gateways=gateways)
    if task:
        task.done()
    return result


def _ingest_beir(corpus: Path, cfg: Config, data: DataDir, progress) -> None:
    """The dataset gets its own index under the data dir; re-runs are a quick no-op sync.
    ``cfg.base_dir``: the dataset's folder, so sources read 'corpus.jsonl'."""
    from llmctl.ingest.pipeline import ingest

    ingest([corpus], cfg, data, progress=progress)
