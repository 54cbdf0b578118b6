"""``run_query``: retrieve, fuse, rerank, pack, answer — with a trace of every stage."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmctl import telemetry
from llmctl.config import Config, ProviderConfig, RerankConfig, RetrievalConfig
from llmctl.errors import BudgetExceeded, ConfigError, InputError, LlmctlError, ProviderError, UsageError
from llmctl.llm.client import Completion
from llmctl.llm.tokens import TokenCounter, counter_for
from llmctl.records import Hit
from llmctl.search.confidence import Confidence, assess
from llmctl.search.context import Packed, Source, pack
from llmctl.search.filters import parse_where
from llmctl.search.fusion import fuse_rrf, fuse_weighted, fuse_zscore
from llmctl.search.prompt import build_messages, cited_numbers, prompt_overhead
from llmctl.search.rerank import Reranker, RerankUnavailable
from llmctl.search.retrieve import Retriever, collapse_duplicates
from llmctl.search.snippet import best_window

if TYPE_CHECKING:
    from llmctl.llm.gateway import Gateway, GatewayPool


@dataclass
class QueryOptions:
    """Per-query overrides of the config (command-line flags)."""

    k: int | None = None
    dense_k: int | None = None
    bm25_k: int | None = None
    depth: int | None = None
    fusion: str | None = None
    where: list[str] = field(default_factory=list)
    use_llm: bool = True
    rerank: bool | None = None
    tag: str | None = None
    skip_irrelevant: bool | None = None  # None: llm.skip_when_irrelevant

    def validate(self, question: str, cfg: Config) -> None:
        """Reject what the config would reject, before anything is loaded: one UsageError that names
        the argument. The CLI, serve and MCP pass their inputs here instead of checking them."""
        if not isinstance(question, str):
            raise UsageError(f"expected the question as a string, got {type(question).__name__}")
        if not question.strip():
            raise UsageError("the question is empty")
        _unicode(question, "the question")
        limit = cfg.retrieval.max_query_chars
        if len(question) > limit:
            raise UsageError(f"the question is {len(question):,} characters; the limit is {limit:,} "
                             "(retrieval.max_query_chars)")
        overrides = {name: getattr(self, name) for name in ("k", "dense_k", "bm25_k", "fusion")
                     if getattr(self, name) is not None}
        _checked(RetrievalConfig, cfg.retrieval, overrides)
        if self.depth is not None:
            _checked(RerankConfig, cfg.rerank, {"depth": self.depth})
            k = self.k if self.k is not None else cfg.retrieval.k
            if self.depth < k:
                raise UsageError(f"{self.depth} is below k ({k}): the reranker must see at least k candidates",
                                 "depth")
        for name in ("use_llm", "rerank", "skip_irrelevant"):
            value = getattr(self, name)
            if not (isinstance(value, bool) or (value is None and name != "use_llm")):
                raise UsageError(f"expected true or false, got {value!r}", name)
        if self.tag is not None and not isinstance(self.tag, str):
            raise UsageError(f"expected a string, got {self.tag!r}", "tag")
        if not isinstance(self.where, list) or not all(isinstance(w, str) for w in self.where):
            raise UsageError("expected a list of 'field=value' strings", "where")
        for w in self.where:
            _unicode(w, f"where '{w.encode('utf-8', 'backslashreplace').decode()}'")
        parse_where(self.where)


def _unicode(text: str, what: str) -> None:
    """UsageError for text no UTF-8 can carry: an unpaired surrogate, from bytes that were not
    UTF-8 (a terminal's Latin-1, kept by Python as surrogate escapes) or a JSON "\\ud800" escape."""
    bad = next((i for i, ch in enumerate(text) if "\ud800" <= ch <= "\udfff"), None)
    if bad is not None:
        raise UsageError(f"{what} is not valid Unicode text (an unpaired surrogate, U+{ord(text[bad]):04X}, "
                         f"at character {bad + 1}): send it as UTF-8")


def _checked(model, current, overrides: dict) -> None:
    """``overrides`` applied to a config section through its own (strict) validation."""
    from pydantic import ValidationError

    try:
        model.model_validate(current.model_dump() | overrides, strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(map(str, err["loc"]))
        if err["type"] == "value_error":  # a validator's own words, which say what it got
            raise UsageError(str(err["ctx"]["error"]), param) from None
        msg = err["msg"]
        raise UsageError(f"{msg[0].lower()}{msg[1:]}, got {err.get('input')!r}", param) from None


# Why no answer was written, in words (the CLI's last line, serve's and MCP's "skipped_reason").
SKIPPED = {
    "no_model": "retrieval only: no model configured (llm.providers); see `llmctl query --help`",
    "low_confidence": "not answered: nothing relevant was found, so no model was called "
                      "(llm.skip_when_irrelevant)",
}


@dataclass
class QueryResult:
    question: str
    hits: list[Hit]
    timings: dict[str, float]
    rerank: dict
    packed: Packed
    tokenizer: dict
    completion: Completion | None = None
    citations: list[Source] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: LlmctlError | None = None  # the answer failed after retrieval (the hits are still here)
    confidence: Confidence | None = None
    skipped: str | None = None  # why no model was called: a key of SKIPPED
    snippets: list[dict] = field(default_factory=list)  # per hit: the lines that best match (snippet.py)

    def to_dict(self) -> dict:
        c = self.completion
        return {
            "question": self.question,
            "hits": [{
                "rank": i, "id": h.id, "doc_id": h.chunk.get("doc_id"), "source": h.source, "location": h.location(),
                "heading": h.chunk.get("heading", ""), "start_line": h.chunk.get("start_line"),
                "end_line": h.chunk.get("end_line"), "page": h.chunk.get("page"),
                "stages": {s: {"rank": r, "score": round(v, 6)} for s, (r, v) in h.stages.items()},
                "text": h.chunk.get("text", ""),
                "also_in": h.chunk.get("also_in", []),
                "snippet": self.snippets[i - 1]["text"] if i <= len(self.snippets) else None,
            } for i, h in enumerate(self.hits, start=1)],
            "rerank": self.rerank,
            "context": {
                "tokens": self.packed.tokens, "budget": self.packed.budget, "tokenizer": self.tokenizer,
                "sources": [{"n": s.n, "location": s.location(), "chunks": s.hit_ids, "tokens": s.tokens}
                            for s in self.packed.sources],
                "dropped": self.packed.dropped,
            },
            "confidence": self.confidence.to_dict() if self.confidence else None,
            "answer": c.text if c else None,
            "skipped": self.skipped,
            "skipped_reason": SKIPPED.get(self.skipped),
            "truncated": c.truncated if c else None,
            "error": None if self.error is None else {"message": str(self.error), "type": type(self.error).__name__,
                                                      "exit_code": self.error.exit_code},
            "citations": [{"n": s.n, "source": s.source, "location": s.location(),
                           "start_line": s.start_line, "end_line": s.end_line, "page": s.page}
                          for s in self.citations],
            "llm": None if c is None else {
                "provider": c.provider, "model": c.model, "finish_reason": c.finish_reason,
                "first_token_s": c.first_token_s and round(c.first_token_s, 3),
                "latency_s": round(c.latency_s, 3),
            },
            "usage": c.usage() if c else None,
            "cost_usd": c.cost_usd if c else None,
            "cache": c.cache if c else None,
            "similarity": c.similarity if c else None,
            "cached_question": c.cached_question if c else None,  # a semantic hit: the question reused
            "route": c.route if c else None,
            "attempts": c.attempts if c else getattr(self.error, "attempts", []),
            "latency_ms": {k: round(v * 1000, 1) for k, v in self.timings.items()},
            "warnings": self.warnings,
        }


class _Clock:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def stage(self, name: str):
        clock = self

        class _Stage:
            def __enter__(self):
                self.span = telemetry.span(name)  # the stage's span when a trace is on
                self.span.__enter__()
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                clock.timings[name] = clock.timings.get(name, 0.0) + time.perf_counter() - self.t
                self.span.__exit__(*exc)

        return _Stage()


def _retrieval_attrs(k: int, ranked: list[tuple[str, float]], **extra) -> None:
    """Retrieval attributes of the current stage's span (nothing without a trace): no text, ids only."""
    telemetry.annotate(llmctl__retrieval__k=k, llmctl__retrieval__hits=len(ranked),
                       llmctl__retrieval__top_scores=[float(s) for _, s in ranked[:3]],
                       **{f"llmctl__retrieval__{n}": v for n, v in extra.items()})


def _ranked_stage(hits: dict[str, Hit], name: str, ranked: list[tuple[str, float]]) -> None:
    for rank, (cid, score) in enumerate(ranked, start=1):
        hits.setdefault(cid, Hit(cid)).stages[name] = (rank, score)


@dataclass
class Retrieval:
    """Every stage's ranking of one question (chunk ids, best first) and the final order."""

    hits: dict[str, Hit]
    stages: dict[str, list[str]]  # bm25, dense, fused, and rerank when it ran
    order: list[str]
    rerank: dict
    chunks: dict[str, dict]
    similarity: float  # the best dense score among the candidates


def retrieve(question: str, cfg: Config, opts: QueryOptions, retriever: Retriever,
             reranker: Reranker | None, clock: _Clock, warnings: list[str],
             fetch_all: bool = False) -> Retrieval:
    """Dense + BM25 candidates, fused, optionally reranked; chunk records fetched."""
    r = cfg.retrieval
    k = opts.k or r.k
    depth = opts.depth or cfg.rerank.depth
    fusion = opts.fusion or r.fusion
    flt = retriever.filter(opts.where)
    hits: dict[str, Hit] = {}
    with clock.stage("load"):  # cold-start costs, reported apart from per-query work
        vector = retriever.remembered(question)
        if vector is None:  # a question asked before needs no model at all
            retriever.embedder.load()
        retriever.store  # noqa: B018
        retriever.keyword  # noqa: B018
    with clock.stage("embed"):
        if vector is None:
            vector = retriever.embed(question)
    with clock.stage("dense"):
        dense = retriever.dense(vector, opts.dense_k or r.dense_k, flt)
        _retrieval_attrs(opts.dense_k or r.dense_k, dense)
    with clock.stage("bm25"):
        bm25_scores = retriever.sparse_scores(question, flt)  # every chunk's: z-score fusion uses them too
        sparse = retriever.top(bm25_scores, opts.bm25_k or r.bm25_k)
        _retrieval_attrs(opts.bm25_k or r.bm25_k, sparse)
    _ranked_stage(hits, "dense", dense)
    _ranked_stage(hits, "bm25", sparse)
    with clock.stage("fusion"):
        lists = {"bm25": sparse, "dense": dense}
        scored = retriever.scored(vector, lists, bm25_scores, flt) if fusion == "zscore" else None
        if fusion == "rrf":
            fused = fuse_rrf(lists, r.rrf_k)
        elif scored is not None:
            w = r.weight_of_bm25("zscore")
            fused = fuse_zscore(*scored, {"bm25": w, "dense": 1 - w})
            fused = retriever.page_evidence(question, fused, r.page_weight)
        else:  # weighted, or zscore on an index written before its corpus statistics
            w = r.weight_of_bm25("weighted")
            fused = fuse_weighted(lists, {"bm25": w, "dense": 1 - w}, r.normalization)
        _retrieval_attrs(k, fused, fusion=fusion)
    _ranked_stage(hits, "fused", fused)
    order = [cid for cid, _ in fused]
    with clock.stage("fetch"):
        chunks = retriever.chunks(order if fetch_all else order[:max(depth, k) * 2])
    # Chunks an ingest running right now has not committed (or has just deleted) are not served.
    # near-identical chunks (shared includes, copied files) as one hit that lists the others (also_in)
    order = collapse_duplicates([cid for cid in order if cid in chunks], chunks)
    for cid in order:
        hits[cid].chunk = chunks[cid]
    stages = {"bm25": [c for c, _ in sparse if c in chunks], "dense": [c for c, _ in dense if c in chunks],
              "fused": list(order)}

    rerank_info: dict = {"model": cfg.rerank.model, "status": "disabled", "depth": depth}
    use_rerank = cfg.rerank.enabled if opts.rerank is None else opts.rerank
    if use_rerank and order:
        reranker = reranker or Reranker(cfg.rerank, cfg.embedding)
        try:
            with clock.stage("rerank"):
                head = order[:depth]
                scores = reranker.score(question, [chunks[c]["embed_text"] for c in head])
                _retrieval_attrs(depth, sorted(zip(head, scores, strict=True), key=lambda kv: -kv[1]))
        except RerankUnavailable as exc:
            if cfg.rerank.required:
                raise ConfigError(f"{exc}; rerank.required is true, so llmctl will not answer without it "
                                  "(give a local model path, or set rerank.required: false)") from None
            rerank_info.update(status="unavailable", reason=str(exc), fallback="fused order")
            # The built-in default names a hub model no offline install has: say so in --explain,
            # --json and eval reports, and warn only when the user asked for a reranker.
            asked = opts.rerank is True or bool({"enabled", "model"} & cfg.rerank.model_fields_set)
            if asked:
                warnings.append(
                    f"{exc}; results are in fused order. Set rerank.model to a local cross-encoder folder, "
                    "rerank.offline: false to download it once, or rerank.enabled: false to skip reranking"
                )
        else:
            ranked = sorted(zip(head, scores, strict=True), key=lambda kv: -kv[1])
            _ranked_stage(hits, "rerank", ranked)
            kept = [c for c, s in ranked if cfg.rerank.min_score is None or s >= cfg.rerank.min_score]
            rerank_info.update(status="used", dropped_below_min_score=len(ranked) - len(kept))
            order = kept + (order[depth:] if cfg.rerank.min_score is None else [])
            stages["rerank"] = list(order)
    return Retrieval(hits, stages, order, rerank_info, chunks, max((s for _, s in dense), default=0.0))


class Notes:
    """Warnings of one question: kept for the result and passed on as they happen."""

    def __init__(self, notify: Callable[[str], None] | None = None):
        self.items: list[str] = []
        self.notify = notify

    def __call__(self, message: str) -> None:
        self.items.append(message)
        if self.notify:
            self.notify(message)


@dataclass
class Prepared:
    """A question retrieved and its context packed: what a model is sent, or the retrieval-only result."""

    result: QueryResult
    provider: ProviderConfig | None  # None: no model is called
    messages: list[dict]
    counter: TokenCounter


def run_query(
    question: str,
    cfg: Config,
    opts: QueryOptions | None = None,
    *,
    on_token: Callable[[str], None] | None = None,
    retriever: Retriever,
    reranker: Reranker | None = None,
    gateways: GatewayPool | None = None,
    notify: Callable[[str], None] | None = None,
    command: str = "query",
) -> QueryResult:
    """Answer ``question`` from the index ``retriever`` reads; see the module docstring."""
    opts = opts or QueryOptions()
    question = question.strip()
    if not question:
        raise InputError("The question is empty: llmctl query \"your question\" (or '-' to read stdin)")
    notes = Notes(notify)
    wants_model = bool(cfg.llm.providers) and opts.use_llm
    own = gateways is None and wants_model  # a script calling run_query: gateways for this call only
    if own:
        from llmctl.llm.gateway import GatewayPool

        gateways = GatewayPool(cfg, retriever.data)
    gateway = gateways.call(command=command, tag=opts.tag, warn=notes) if wants_model else None
    try:
        with telemetry.trace(cfg, "llmctl.query", question, **{"llmctl.command": command, "llmctl.tag": opts.tag}):
            if wants_model:  # provider settings are checked before anything is loaded
                gateway.usable_providers()
            prep = prepare(question, cfg, opts, retriever, reranker, notes, with_model=wants_model)
            if gateway is not None:
                gateway.count, gateway.embed = prep.counter.count, retriever.embed
            result = answer(prep, gateway, on_token, notes)
            telemetry.annotate(llmctl__retrieval__k=opts.k or cfg.retrieval.k, llmctl__retrieval__hits=len(result.hits),
                               llmctl__error=type(result.error).__name__ if result.error else None)
            return result
    finally:
        if own:
            gateways.close()


def prepare(question: str, cfg: Config, opts: QueryOptions, retriever: Retriever, reranker: Reranker | None,
            notes: Notes, *, with_model: bool, got: Retrieval | None = None) -> Prepared:
    """Retrieve (unless ``got`` is this question's retrieval already), judge confidence, pack the context."""
    k = opts.k or cfg.retrieval.k
    clock = _Clock()
    if got is None:
        got = retrieve(question, cfg, opts, retriever, reranker, clock, notes.items)
        if retriever.embedder.note:
            notes.items.insert(0, retriever.embedder.note)
        for w in notes.items:
            if notes.notify:
                notes.notify(w)
    final = [got.hits[c] for c in got.order[:k]]
    confidence = assess(question, [h.chunk.get("embed_text", "") for h in final], got.similarity,
                        retriever.keyword.tokenize, cfg.retrieval)
    if confidence.low:
        notes(confidence.warning())
    provider = cfg.llm.providers[0] if with_model else None
    skip = cfg.llm.skip_when_irrelevant if opts.skip_irrelevant is None else opts.skip_irrelevant
    skipped = "no_model" if opts.use_llm and not cfg.llm.providers else None
    if provider and skip and confidence.low:
        provider, skipped = None, "low_confidence"
        notes(SKIPPED[skipped])

    if provider:
        counter = counter_for(provider.model, provider.tokenizer, retriever.data.tiktoken)
    else:  # no model reads the context: the embedding tokenizer (loaded already) sizes it
        counter = TokenCounter(retriever.embedder.model_id, False, retriever.embedder.count_tokens)
    with clock.stage("pack"):
        budget = _context_budget(question, cfg, provider, counter)
        packed = pack(final, budget, counter.count)
    result = QueryResult(question, final, clock.timings, got.rerank, packed,
                         {"name": counter.name, "exact": counter.exact}, warnings=notes.items,
                         confidence=confidence, skipped=skipped,
                         snippets=[best_window(h.chunk.get("text", ""), question, retriever.keyword.tokenize,
                                               heading=h.chunk.get("heading") or "")
                                   for h in final])
    messages = build_messages(question, packed, cfg.llm.system_prompt) if provider else []
    return Prepared(result, provider, messages, counter)


def _context_budget(question: str, cfg: Config, provider: ProviderConfig | None, counter: TokenCounter) -> int:
    if provider is None:
        return cfg.context.max_tokens or cfg.context.retrieval_only_tokens
    overhead = prompt_overhead(question, cfg.llm.system_prompt, counter.count)
    budget = provider.context_window - overhead - cfg.llm.max_answer_tokens
    if overhead > provider.context_window // 2:
        raise InputError(
            f"The question is too long: the prompt takes {overhead} tokens before any source, and "
            f"provider '{provider.name}' has a {provider.context_window}-token context_window: "
            "shorten the question")
    if cfg.context.max_tokens:
        budget = min(budget, cfg.context.max_tokens)
    if budget < 64:
        raise ConfigError(
            f"provider '{provider.name}': context_window {provider.context_window} leaves "
            f"{budget} tokens for sources after the prompt and llm.max_answer_tokens "
            f"({cfg.llm.max_answer_tokens}): raise context_window or lower max_answer_tokens"
        )
    return budget


def answer(prep: Prepared, gateway: Gateway | None, on_token: Callable[[str], None] | None = None,
           notes: Notes | None = None) -> QueryResult:
    """Send a prepared question to the model; a provider or budget error is kept on the result."""
    result = prep.result
    if prep.provider is None or gateway is None:
        return result
    packed = result.packed
    t = time.perf_counter()
    try:
        completion = gateway.complete(
            prep.messages, question=result.question,
            chunk_ids=[cid for s in packed.sources for cid in s.hit_ids],
            sources=[s.to_cache() for s in packed.sources],
            on_token=on_token)
    except (ProviderError, BudgetExceeded) as exc:
        result.error = exc  # retrieval's work is kept: the caller shows the hits, then the error
        return result
    finally:
        result.timings["llm"] = time.perf_counter() - t
    result.completion = completion
    numbers = cited_numbers(completion.text)
    cited_from = ([Source.from_cache(d) for d in completion.sources] if completion.sources is not None
                  else packed.sources)  # a cached answer cites the sources it was written from
    by_n = {s.n: s for s in cited_from}
    result.citations = [by_n[n] for n in numbers if n in by_n]
    bad = [n for n in numbers if n not in by_n]
    if bad:  # said as it happens too (``notes``), like every other warning of the question
        (notes or result.warnings.append)(f"the answer cites sources that do not exist: {bad}")
    return result


def read_question(arg: str) -> str:
    return sys.stdin.read() if arg == "-" else arg
