"""Run a suite against an index: per-stage document rankings, metrics, answer checks."""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llmctl import __version__, telemetry
from llmctl.config import Config, redacted_url
from llmctl.datadir import DataDir
from llmctl.errors import BudgetExceeded, ConfigError, ProviderError
from llmctl.evals.judge import JudgeError, judge, judge_messages, parse_verdict
from llmctl.evals.metrics import compute, parse_metric, rollup
from llmctl.evals.suite import NO_ANSWER_PHRASE, AnswerCheck, Case, Suite, matches
from llmctl.llm.cassette import Cassette
from llmctl.llm.gateway import GatewayPool
from llmctl.search.pipeline import SKIPPED, Notes, Prepared, QueryOptions, _Clock, answer, prepare, retrieve
from llmctl.search.retrieve import Retriever
from llmctl.stats import percentile

STAGE_NAMES = {"bm25": "bm25", "dense": "dense", "fused": "hybrid", "rerank": "reranked"}


@dataclass
class CaseResult:
    case: Case
    qrels: dict[str, int]
    ranked: dict[str, list[str]]  # stage -> document ids (top 20 kept for reports)
    metrics: dict[str, dict[str, float]]  # stage -> metric -> value
    latency_ms: float
    answer: str | None = None
    checks: list[dict] = field(default_factory=list)  # {"check", "passed", "detail"}
    answer_status: str = "not run"  # not run | passed | failed | error | skipped
    error: str | None = None
    cost_usd: float | None = None
    runs: list[dict] = field(default_factory=list)  # one per repeat: {"answer", "checks", "passed"}
    trace: object = field(default=None, repr=False, compare=False)  # telemetry.trace's handle, or None

    @property
    def passed(self) -> bool:
        return self.error is None and self.answer_status in ("passed", "not run", "skipped", "stopped")

    @property
    def pass_rate(self) -> float | None:
        """Share of the answers (each repeat) whose checks all passed; None when not answered."""
        return sum(r["passed"] for r in self.runs) / len(self.runs) if self.runs else None

    @property
    def flaky(self) -> bool:
        """Asked several times, it both passed and failed."""
        return any(r["passed"] for r in self.runs) and not all(r["passed"] for r in self.runs)


@dataclass
class EvalResult:
    suite: Suite
    final_stage: str
    cases: list[CaseResult]
    fingerprint: dict
    rerank: dict
    seconds: float
    extended_cases: int = 0  # cases whose rankings were lengthened for the deepest cutoff
    load_seconds: float = 0.0  # loading models, kept out of the per-case latencies
    answer_seconds: float = 0.0  # wall time of the answer (and judge) calls, all cases together
    concurrency: int = 1  # answer calls that ran at once
    coverage: dict = field(default_factory=dict)  # see coverage()
    sequential: dict | None = None  # --stop-when-decided: the rule, where it stopped, calls saved
    skip_reason: str = "no model configured (llm.providers)"  # why answer checks were skipped, if they were

    def answers(self) -> dict:
        statuses = [c.answer_status for c in self.cases]
        return {"concurrency": self.concurrency, "seconds": round(self.answer_seconds, 2),
                "skip_reason": self.skip_reason if "skipped" in statuses else None,
                "repeats": self.suite.repeats, "calls": sum(len(c.runs) for c in self.cases),
                **{s: statuses.count(s) for s in ("passed", "failed", "error", "skipped", "stopped")}}

    def aggregate(self) -> dict[str, dict[str, float]]:
        """Mean of each metric per stage over the cases that have relevance judgements. A case's
        ``error`` is its answer's (retrieval ran before it): its retrieval metrics count."""
        out: dict[str, dict[str, float]] = {}
        judged = [c for c in self.cases if c.qrels]
        for stage in self.stages():
            out[stage] = {
                m: round(statistics.fmean(c.metrics[stage][m] for c in judged), 6) if judged else 0.0
                for m in self.suite.all_metrics()
            }
        return out

    def stages(self) -> list[str]:
        seen: dict[str, None] = {}
        for c in self.cases:
            for s in c.metrics:
                seen.setdefault(s, None)
        return list(seen)

    @property
    def cost_usd(self) -> float:
        """What the run's answers (and judge calls) cost."""
        return round(sum(c.cost_usd or 0 for c in self.cases), 6)

    def latency(self) -> dict[str, float]:
        values = [c.latency_ms for c in self.cases]
        return {"p50": round(percentile(values, 0.5) or 0.0, 1), "p95": round(percentile(values, 0.95) or 0.0, 1)}


def fingerprint(cfg: Config, retriever: Retriever, rerank: dict, answers: bool = False, judge: bool = False) -> dict:
    """What produced a result; two results compare only when these agree (version aside; answer
    settings only matter to answer checks, see gate.compare)."""
    rows = retriever.manifest.document_hashes()
    corpus = hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
    s = retriever.settings
    return {
        "llmctl": __version__, "corpus": corpus, "documents": len(rows),
        "embedding": s["embedding"], "chunking": s["chunking"], "bm25": s["bm25"],
        "retrieval": cfg.retrieval.model_dump(),
        "reranker": {"model": cfg.rerank.model if rerank.get("status") == "used" else None,
                     "depth": cfg.rerank.depth if rerank.get("status") == "used" else None},
        "answers": _answer_settings(cfg, judge) if answers else None,
    }


def _answer_settings(cfg: Config, judge: bool) -> dict:
    """What changes an answer: the model that writes it (and judges it), its instructions, its
    sampling and length."""
    from llmctl.search.prompt import SYSTEM_PROMPT

    p = cfg.llm.providers[0]
    prompt = cfg.llm.system_prompt or SYSTEM_PROMPT
    return {"provider": p.name, "model": p.model, "base_url": redacted_url(p.base_url),
            "temperature": cfg.llm.temperature,
            "max_answer_tokens": cfg.llm.max_answer_tokens,
            "system_prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest()[:16],
            "judge_model": p.model if judge else None}


def resolve_qrels(case: Case, docs: list[tuple[str, str]], by_id: dict[str, str]) -> dict[str, int]:
    """Expected sources -> {doc_id: grade}; a spec matching nothing in the index is an error."""
    out: dict[str, int] = {}
    for spec, grade in case.qrels_specs():
        if spec in by_id:
            found = [by_id[spec]]
        else:
            found = [d for d, src in docs if matches(spec, d, src)]
        if not found:
            raise ConfigError(f"case '{case.id}': expected source '{spec}' matches no indexed document "
                              "(check the path, or ingest it)")
        for d in found:
            out[d] = max(out.get(d, 0), grade)
    return out


def check_answer(answer: str, check: AnswerCheck, declined: bool = False) -> list[dict]:
    """The case's answer checks. ``declined``: no model was asked because nothing relevant was
    found (llm.skip_when_irrelevant): the sources not containing the answer is what it said."""
    low = answer.lower()
    out = []
    for s in check.contains:
        out.append({"check": f"contains '{s}'", "passed": s.lower() in low})
    for s in check.not_contains:
        out.append({"check": f"does not contain '{s}'", "passed": s.lower() not in low})
    for rx in check.regex:
        out.append({"check": f"matches /{rx}/", "passed": re.search(rx, answer, re.I | re.S) is not None})
    if check.no_answer:
        out.append({"check": "says the sources do not contain the answer",
                    "passed": declined or NO_ANSWER_PHRASE in low})
    return out


def _judge_checks(cfg: Config, case: Case, q, cassette, gateways: GatewayPool,
                  llm=None) -> tuple[list[dict], float | None]:
    """The judge's checks and what its call cost."""
    from llmctl.search.prompt import format_sources

    gw = gateways.call(cfg=llm or cfg.llm, command="eval-judge", cassette=cassette)
    verdict = judge(gw, case.query, format_sources(q.packed), q.completion.text, case.reference)
    return _verdict_checks(case, verdict), verdict["cost_usd"]


def _verdict_checks(case: Case, verdict: dict) -> list[dict]:
    checks = [{"check": "judge: faithful to the sources", "passed": verdict["faithful"],
               "detail": verdict.get("reason", "")}]
    if case.reference:
        checks.append({"check": "judge: agrees with the reference answer", "passed": verdict["correct"],
                       "detail": verdict.get("reason", "")})
    return checks


def run_suite(
    suite: Suite,
    cfg: Config,
    data: DataDir,
    *,
    limit: int | None = None,
    tags: list[str] | None = None,
    answers: bool = True,
    retriever: Retriever | None = None,
    reranker=None,
    on_case: Callable[[CaseResult], None] | None = None,
    cassette: Cassette | None = None,
    batch: bool = False,
    stop_when_decided: bool = False,
    baseline_rates: dict[str, float] | None = None,
    gateways: GatewayPool | None = None,
) -> EvalResult:
    """Evaluate every selected case against the index in ``data``; retrieval stages always, answers
    when a model is configured."""
    started = time.perf_counter()
    cases = [c for c in suite.cases if not tags or set(tags) & set(c.tags)]
    cases = cases[:limit] if limit else cases
    if not cases:
        raise ConfigError(f"No case of suite '{suite.name}' matches --tag {' '.join(tags or [])}")
    retriever = retriever or Retriever(cfg, data)
    if reranker is None:
        from llmctl.search.rerank import Reranker

        reranker = Reranker(cfg.rerank, cfg.embedding)
    docs = retriever.manifest.document_sources()
    by_id = {d.rsplit("#", 1)[1]: d for d, _ in docs if "#" in d}
    qrels_of = {c.id: resolve_qrels(c, docs, by_id) for c in cases}  # all errors before any work
    use_llm = answers and bool(cfg.llm.providers)
    deepest = max(parse_metric(m)[1] for m in suite.all_metrics())
    results: list[CaseResult] = []
    pending: list[tuple[CaseResult, Prepared]] = []
    rerank_info: dict = {}
    extended = 0
    load = 0.0
    for case in cases:
        t = time.perf_counter()
        clock = _Clock()
        with telemetry.trace(cfg, "llmctl.eval_case", case.query, **{"llmctl.case": case.id,
                                                                      "llmctl.suite": suite.name}) as traced:
            got = retrieve(case.query, cfg, QueryOptions(), retriever, reranker, clock, [], fetch_all=True)
        load += clock.timings.get("load", 0.0)  # loading models is not answering this case
        rerank_info = got.rerank
        ranked = _doc_rankings(got)
        if any(len(r) < deepest for r in ranked.values()):
            extended += _extend(ranked, case.query, cfg, retriever, deepest)
        qrels = qrels_of[case.id]
        metrics = {s: {m: compute(m, r, qrels) for m in suite.all_metrics()} for s, r in ranked.items()}
        res = CaseResult(case, qrels, {s: r[:20] for s, r in ranked.items()}, metrics,
                         (time.perf_counter() - t - clock.timings.get("load", 0.0)) * 1000)
        res.trace = traced  # its answer, asked later on a worker thread, joins this case's trace
        results.append(res)
        if case.answer is not None and use_llm:  # answered below, concurrently, from this retrieval
            pending.append((res, prepare(case.query, cfg, QueryOptions(), retriever, reranker, Notes(),
                                         with_model=True, got=got)))
            continue
        if case.answer is not None:
            res.answer_status = "skipped"
        if on_case:
            on_case(res)
    answering = time.perf_counter()
    sequential = None
    if pending and batch:
        _answer_batch(pending, suite, cfg, data.ledger, on_case)
    elif pending:
        own = gateways is None  # a Workspace hands its gateways down; a script gets its own for the run
        gateways = gateways or GatewayPool(cfg, data)
        try:
            sequential = _answer_all(pending, suite, cfg, retriever, on_case, cassette, gateways,
                                     stop_when_decided, baseline_rates)
        finally:
            if own:
                gateways.close()
    answer_seconds = time.perf_counter() - answering
    final = "reranked" if rerank_info.get("status") == "used" else "hybrid"
    fp = fingerprint(cfg, retriever, rerank_info, use_llm, bool(suite.judge))
    # What was scored: the configured candidates per retriever; rankings shorter than the deepest
    # cutoff were lengthened from `tail_from_k` candidates (see _extend).
    fp["depth"] = {"dense_k": cfg.retrieval.dense_k, "bm25_k": cfg.retrieval.bm25_k,
                   "rerank_depth": fp["reranker"]["depth"], "deepest_cutoff": deepest,
                   "tail_from_k": _deep_k(cfg, deepest)}
    return EvalResult(suite, final, results, fp, rerank_info, time.perf_counter() - started, extended, load,
                      answer_seconds, min(cfg.llm.concurrency, max(1, len(pending))),
                      coverage([d for d, _ in docs], results, final, cfg.retrieval.k), sequential,
                      "--no-answers was given" if not answers else "no model configured (llm.providers)")


def coverage(doc_ids: list[str], results: list[CaseResult], final: str, k: int) -> dict:
    """What the suite does not test: documents no case retrieves in its top k (what `query` shows),
    and cases whose expected documents BM25's top k finds but dense's does not (too lexical to test
    the dense side). Expected sources missing from the index are not counted here: they stop the
    run before any work (exit 3)."""
    seen = {d for r in results for d in r.ranked.get(final, [])[:k]}
    never = sorted(set(doc_ids) - seen)
    judged = [r for r in results if r.qrels]
    lexical = [r.case.id for r in judged if set(r.qrels) & set(r.ranked["bm25"][:k])
               and not set(r.qrels) & set(r.ranked["dense"][:k])]
    return {"k": k, "documents": len(doc_ids), "never_retrieved_count": len(never),
            "never_retrieved": never[:200], "judged_cases": len(judged), "bm25_only_cases": lexical}


def _answer_all(pending: list[tuple[CaseResult, Prepared]], suite: Suite, cfg: Config, retriever: Retriever,
                on_case: Callable[[CaseResult], None] | None, cassette: Cassette | None, gateways: GatewayPool,
                stop_when_decided: bool = False, baseline_rates: dict[str, float] | None = None) -> dict | None:
    """Answer (and judge) the cases, ``llm.concurrency`` at a time; the providers' rate limits are
    shared by all of them. A case whose calls fail, rate limits included once retries are spent, is
    an error: never skipped, never passed. With ``suite.repeats`` N > 1 each case is asked N times,
    every time from the model (the response cache is neither read nor written: a cached answer is
    one sample, not N; a cassette records each repeat under its own key).

    With ``stop_when_decided`` the cases run in a seeded random order and their pass rates are fed,
    in that order, to the sequential tests (evals/sequential.py); once the verdict is decided the
    cases not started are not asked (status "stopped")."""
    from concurrent.futures import ThreadPoolExecutor

    from llmctl.evals.sequential import RULE, Sequential, SequentialComparison, answer_order
    from llmctl.llm.cassette import Repeat

    n = suite.repeats
    llm = cfg.llm if n == 1 else cfg.llm.model_copy(
        update={"cache": cfg.llm.cache.model_copy(update={"enabled": False})})

    def ask(res: CaseResult, prep: Prepared, r: int) -> dict:
        tape = Repeat(cassette, r) if cassette is not None and r else cassette
        gw = gateways.call(cfg=llm, command="eval", cassette=tape, count_tokens=prep.counter.count,
                           embed=retriever.embed)
        with telemetry.resume(res.trace):  # the answer and its judge join the case's trace
            q = answer(prep, gw)
            if q.error is not None:
                raise q.error
            if q.completion is None:  # llm.skip_when_irrelevant: declined, no model asked, nothing to judge
                checks = check_answer("", res.case.answer, declined=True)
                return {"answer": SKIPPED[q.skipped or "low_confidence"], "cost_usd": 0.0, "checks": checks,
                        "passed": all(c["passed"] for c in checks)}
            checks = check_answer(q.completion.text, res.case.answer)
            cost = q.completion.cost_usd
            if suite.judge:  # the run's cost includes its judge's
                judged, judge_cost = _judge_checks(cfg, res.case, q, tape, gateways, llm)
                checks += judged
                cost = None if cost is None and judge_cost is None else (cost or 0.0) + (judge_cost or 0.0)
        return {"answer": q.completion.text, "cost_usd": cost, "checks": checks,
                "passed": all(c["passed"] for c in checks)}

    def work(res: CaseResult, prep: Prepared) -> CaseResult:
        try:
            for r in range(n):
                run = ask(res, prep, r)
                res.runs.append({"answer": run["answer"], "checks": run["checks"], "passed": run["passed"]})
                res.cost_usd = (res.cost_usd or 0.0) + (run["cost_usd"] or 0.0)
            first_bad = next((x for x in res.runs if not x["passed"]), res.runs[0])
            res.answer, res.checks = first_bad["answer"], first_bad["checks"]  # a failing one, if any
        except (ProviderError, BudgetExceeded) as exc:
            res.error = str(exc)
        except JudgeError as exc:
            res.error = f"judge failed: {exc}"
        return _settled(res)

    if stop_when_decided:
        order = {cid: k for k, cid in enumerate(answer_order([r.case.id for r, _ in pending], suite.seed))}
        pending = sorted(pending, key=lambda p: order[p[0].case.id])
    tests: dict[str, Sequential] = {}
    if stop_when_decided:
        tests["min_pass_rate"] = Sequential(len(pending), suite.min_pass_rate)
        compared = [r.case.id for r, _ in pending if (baseline_rates or {}).get(r.case.id) is not None]
        if compared and suite.significance is not None:
            tests["baseline"] = SequentialComparison(len(compared), suite.max_regression)
    pool = ThreadPoolExecutor(max_workers=min(cfg.llm.concurrency, len(pending)), thread_name_prefix="eval")
    futures = [pool.submit(work, res, prep) for res, prep in pending]  # FIFO: started in this order
    decided, by, fed = None, None, 0
    try:
        for fut, (res, _) in zip(futures, pending, strict=True):
            if fut.cancelled():
                continue
            fut.result()
            if on_case:
                on_case(res)
            if not tests or decided:
                continue
            fed += 1
            if res.error is not None:
                decided, by = "fail", "error"
            else:
                verdicts = {"min_pass_rate": tests["min_pass_rate"].observe(res.pass_rate)}
                if "baseline" in tests and res.case.id in baseline_rates:
                    verdicts["baseline"] = tests["baseline"].observe(res.pass_rate - baseline_rates[res.case.id])
                elif "baseline" in tests:
                    verdicts["baseline"] = tests["baseline"].decided
                failing = [k for k, v in verdicts.items() if v == "fail"]
                if failing:
                    decided, by = "fail", failing[0]
                elif all(t.decided == "pass" for t in tests.values()):
                    decided, by = "pass", ", ".join(tests)
            if decided:
                for f in futures:
                    f.cancel()  # those not started; the ones in flight finish and count
    finally:  # on Ctrl-C nothing new starts; calls in flight end within their timeout
        pool.shutdown(wait=False, cancel_futures=True)
    if not tests:
        return None
    stopped = [res for f, (res, _) in zip(futures, pending, strict=True) if f.cancelled()]
    for res in stopped:
        res.answer_status = "stopped"
        if on_case:
            on_case(res)
    per_case = n * (2 if suite.judge else 1)
    return {"rule": RULE, "order_seed": suite.seed, "decided": decided, "by": by, "cases_fed": fed,
            "answered_cases": len(pending) - len(stopped), "of": len(pending), "stopped_cases": len(stopped),
            "calls_saved": len(stopped) * per_case, "calls_full_run": len(pending) * per_case,
            "tests": {k: {"decided": t.decided, "seen": t.seen, "threshold": t.threshold} for k, t in tests.items()}}


def _answer_batch(pending: list[tuple[CaseResult, Prepared]], suite: Suite, cfg: Config, ledger_path: Path,
                  on_case: Callable[[CaseResult], None] | None) -> None:
    """Answers as one Batch API job, then the judge's verdicts as a second one (they need the
    answers). Failed and expired items, or a job that failed as a whole, are case errors."""
    from llmctl.llm.batch import BatchItem, run_batch
    from llmctl.llm.ledger import Ledger
    from llmctl.search.prompt import format_sources

    def run(items: list[BatchItem], command: str) -> None:
        try:
            run_batch(items, cfg.llm, ledger, config_source=cfg.source, command=command)
        except ProviderError as exc:  # the whole job: every request in it is an error
            for i in items:
                i.error = str(exc)

    ledger = Ledger(ledger_path)
    try:
        answers = [BatchItem(prep.messages, res.case.query) for res, prep in pending]
        run(answers, "eval")
        verdicts: list[tuple[CaseResult, BatchItem]] = []
        for (res, prep), got in zip(pending, answers, strict=True):
            if got.error:
                res.error = got.error
                continue
            res.answer, res.cost_usd = got.completion.text, got.completion.cost_usd
            res.checks = check_answer(res.answer, res.case.answer)
            res.runs = [{"answer": res.answer, "checks": res.checks, "passed": True}]  # settled below
            if suite.judge:
                messages = judge_messages(res.case.query, format_sources(prep.result.packed), res.answer,
                                          res.case.reference)
                verdicts.append((res, BatchItem(messages, res.case.query)))
        if verdicts:
            run([v for _, v in verdicts], "eval-judge")
        for res, got in verdicts:
            try:
                if got.error:
                    raise JudgeError(got.error)
                res.checks += _verdict_checks(res.case, parse_verdict(got.completion.text, res.case.reference))
            except JudgeError as exc:
                res.error = f"judge failed: {exc}"
    finally:
        ledger.close()
    for res, _ in pending:
        _settled(res)
        if on_case:
            on_case(res)


def _settled(res: CaseResult) -> CaseResult:
    """An answered case's status: an error if a call failed, else whether every check of every
    repeat passed (a flaky case is "failed"; its pass rate says how often)."""
    if res.runs and len(res.runs) == 1:
        res.runs[0]["checks"], res.runs[0]["passed"] = res.checks, all(c["passed"] for c in res.checks)
    res.answer_status = "error" if res.error else (
        "passed" if all(c["passed"] for c in res.checks) and all(r["passed"] for r in res.runs) else "failed")
    return res


def _doc_rankings(got) -> dict[str, list[str]]:
    doc_of = {cid: ch["doc_id"] for cid, ch in got.chunks.items()}
    return {STAGE_NAMES[s]: rollup(order, doc_of) for s, order in got.stages.items()}


def _deep_k(cfg: Config, deepest: int) -> int:
    # a document may own several chunks: 3 chunks per document asked for
    return max(3 * deepest, cfg.retrieval.dense_k, cfg.retrieval.bm25_k)


def _extend(ranked: dict[str, list[str]], query: str, cfg: Config, retriever: Retriever, deepest: int) -> bool:
    """Lengthen rankings shorter than the deepest metric cutoff (recall@100 over documents, from 100
    chunks) with the documents a deeper retrieval finds next. The configured ranking stays the head
    of each list unchanged, so every metric a user's query can reach scores exactly what it returns;
    only the tail beyond it comes from the deeper list."""
    k = _deep_k(cfg, deepest)
    deep = _doc_rankings(retrieve(query, cfg, QueryOptions(dense_k=k, bm25_k=k, rerank=False), retriever,
                                  None, _Clock(), [], fetch_all=True))
    grew = False
    for stage, docs in ranked.items():
        if len(docs) < deepest:
            have = set(docs)
            docs += [d for d in deep["hybrid" if stage == "reranked" else stage] if d not in have]
            grew = True
    return grew
