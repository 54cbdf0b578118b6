"""``llmctl tune``: choose the fusion settings for this corpus from its own golden suite, honestly.

No single fusion setting is best on every documentation set (docs/benchmarks.md, "Across
corpora"). ``tune`` scores a small grid on the suite's judged cases, retrieval only (free),
after splitting them into a *tune* and a *check* half by a hash of each case's id, fixed before
anything is scored. The best setting on the tune half is compared with the current one on the
check half alone (paired bootstrap); a config change is proposed only when that gain is
significant. Otherwise the current settings stand.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

from llmctl.config import Config
from llmctl.datadir import DataDir
from llmctl.errors import ConfigError, InputError
from llmctl.stats import paired_bootstrap

GRID: list[dict] = (
    [{"fusion": "zscore", "bm25_weight": w, "page_weight": p} for w in (0.1, 0.2, 0.3, 0.4) for p in (0.0, 0.2, 0.4)]
    + [{"fusion": "rrf", "bm25_weight": None, "page_weight": 0.0},
       {"fusion": "weighted", "bm25_weight": 0.4, "page_weight": 0.0}]
)
MIN_CASES = 20  # judged cases per half, below which a verdict would be noise
ALPHA = 0.05


def label(s: dict) -> str:
    if s["fusion"] == "rrf":
        return "rrf"
    out = f"{s['fusion']}, BM25 {s['bm25_weight']:g}"
    return out + (f", page {s['page_weight']:g}" if s["fusion"] == "zscore" else "")


def current_setting(cfg: Config) -> dict:
    r = cfg.retrieval
    return {"fusion": r.fusion, "bm25_weight": None if r.fusion == "rrf" else r.weight_of_bm25(r.fusion),
            "page_weight": r.page_weight if r.fusion == "zscore" else 0.0}


def half_of(case_id: str) -> str:
    """'tune' or 'check': a hash of the id, so the split depends on nothing that is measured."""
    return "tune" if hashlib.sha256(case_id.encode()).digest()[0] % 2 == 0 else "check"


def run_tune(suite_path: Path, *, load: Callable[..., Config], data: DataDir, metric: str | None = None,
             limit: int | None = None, tags: list[str] | None = None, progress=None) -> dict:
    from llmctl.evals.runner import run_suite
    from llmctl.evals.service import flatten, suite_config, suite_source
    from llmctl.evals.suite import load_suite
    from llmctl.search.rerank import Reranker
    from llmctl.search.retrieve import Retriever

    suite = load_suite(suite_path)
    base = flatten(suite.config)
    where = suite_source(suite_path)
    cfg = suite_config(suite, suite_path, load)
    metric = metric or ("mrr@10" if "mrr@10" in suite.all_metrics() else suite.all_metrics()[0])
    if metric not in suite.all_metrics():
        suite = suite.model_copy(update={"metrics": [*suite.metrics, metric]})
    now = current_setting(cfg)
    grid = [now] + [s for s in GRID if s != now]
    retriever = Retriever(cfg, data)
    reranker = Reranker(cfg.rerank, cfg.embedding)
    task = progress.task(f"Tuning on {suite.name}", len(grid)) if progress else None
    per_setting: list[dict[str, float]] = []
    try:
        for s in grid:
            overrides = {f"retrieval.{k}": v for k, v in s.items() if v is not None}
            result = run_suite(suite, load({**base, **overrides}, source=where), data, limit=limit, tags=tags,
                               answers=False, retriever=retriever, reranker=reranker)
            per_setting.append({r.case.id: r.metrics[result.final_stage][metric] for r in result.cases if r.qrels})
            if task:
                task.advance(1)
    finally:
        retriever.close()
        if task:
            task.done()
    ids = sorted(per_setting[0])
    halves = {h: [i for i in ids if half_of(i) == h] for h in ("tune", "check")}
    rows = []
    for s, scores in zip(grid, per_setting, strict=True):
        rows.append({"setting": label(s), "values": s,
                     **{h: round(sum(scores[i] for i in halves[h]) / max(1, len(halves[h])), 4) for h in halves}})
    report = {"suite": suite.name, "metric": metric, "cases": len(ids),
              "tune_cases": len(halves["tune"]), "check_cases": len(halves["check"]),
              "current": label(now), "settings": rows, "best_on_tune": None, "check": None,
              "decision": "default stands", "change": {}, "reason": ""}
    if min(len(halves["tune"]), len(halves["check"])) < MIN_CASES:
        report["reason"] = (f"too few judged cases to tune: {len(halves['tune'])} + {len(halves['check'])}; "
                            f"each half needs {MIN_CASES} (about {2 * MIN_CASES} cases with expected sources)")
        return report
    best = max(range(len(grid)), key=lambda n: (rows[n]["tune"], n == 0))  # a tie keeps the current
    report["best_on_tune"] = rows[best]["setting"]
    if best == 0:
        report["reason"] = "the current settings are the best on the tune half"
        return report
    diffs = [per_setting[best][i] - per_setting[0][i] for i in halves["check"]]
    test = paired_bootstrap(diffs)
    report["check"] = test
    if test["delta"] > 0 and test["p_value"] < ALPHA:
        report["decision"] = "change"
        report["change"] = {k: v for k, v in grid[best].items() if v is not None}
        report["reason"] = (f"{rows[best]['setting']} beats {label(now)} on the check half by "
                            f"{test['delta']:+.3f} {metric} (p {test['p_value']:.3f})")
    else:
        report["reason"] = (f"{rows[best]['setting']} was best on the tune half, but on the check half it is "
                            f"{test['delta']:+.3f} {metric} (p {test['p_value']:.3f}): not a significant gain")
    return report


def write_change(path: Path, change: dict) -> None:
    """Set ``retrieval.<key>: value`` for each change in the YAML file at ``path``, editing its lines
    so comments and order survive (a new ``retrieval:`` block is appended when there is none)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.splitlines()
    start = next((n for n, ln in enumerate(lines) if re.match(r"retrieval:\s*(#.*)?$", ln)), None)
    if start is None and any(ln.startswith("retrieval:") for ln in lines):
        raise InputError(f"{path} writes retrieval: on one line; add these settings under it yourself: {change}")
    if start is None:
        if lines and lines[-1].strip():
            lines.append("")
        lines += ["retrieval:  # written by llmctl tune"] + [f"  {k}: {_yaml(v)}" for k, v in change.items()]
    else:
        end = next((n for n in range(start + 1, len(lines))
                    if lines[n].strip() and not lines[n].startswith((" ", "#"))), len(lines))
        body = [n for n in range(start + 1, end) if lines[n].strip() and not lines[n].lstrip().startswith("#")]
        indent = (re.match(r"\s*", lines[body[0]]).group(0) if body else "  ") or "  "
        for key, value in change.items():
            at = next((n for n in body if re.match(rf"{indent}{key}\s*:", lines[n])), None)
            if at is not None:
                lines[at] = f"{indent}{key}: {_yaml(value)}  # written by llmctl tune"
            else:
                lines.insert(start + 1, f"{indent}{key}: {_yaml(value)}  # written by llmctl tune")
                body = [n + 1 for n in body]
    new = "\n".join(lines) + "\n"
    import yaml

    try:
        yaml.safe_load(new)
    except yaml.YAMLError as exc:  # e.g. an inline `retrieval: {k: 5}` mapping this editor does not handle
        raise InputError(f"{path} could not be updated safely ({exc.__class__.__name__}); add these settings "
                         f"under retrieval: yourself: {change}") from None
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise ConfigError(f"Cannot write {path}: {exc.strerror}") from None


def _yaml(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def tune_text(report: dict) -> str:
    """The terminal report: every setting's mean on both halves, then the decision and why."""
    m = report["metric"]
    lines = [f"{report['suite']}: {report['cases']} judged cases, {report['tune_cases']} tune / "
             f"{report['check_cases']} check (split by case id, before scoring); {m}",
             f"  {'setting':<30} {'tune':>7} {'check':>7}"]
    for row in report["settings"]:
        mark = " (current)" if row["setting"] == report["current"] else (
            " (best on tune)" if row["setting"] == report["best_on_tune"] else "")
        lines.append(f"  {row['setting']:<30} {row['tune']:>7.3f} {row['check']:>7.3f}{mark}")
    if report["decision"] == "change":
        change = ", ".join(f"retrieval.{k}: {v}" for k, v in report["change"].items())
        lines.append(f"Change: {report['reason']}. Settings: {change}")
        lines.append(f"Written to {report['written']}" if report.get("written")
                     else "Run again with --write to put them in the config file.")
    else:
        lines.append(f"The current settings stand: {report['reason']}.")
    return "\n".join(lines)
