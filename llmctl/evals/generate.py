"""``llmctl generate``: a first golden suite from the indexed corpus, without hand labelling.

Chunks are sampled stratified by source (one per document per round, documents and chunks in
seeded random order). For each, the configured model writes one question the chunk answers;
the chunk's document is the expected source, known by construction. A candidate is dropped,
with its reason kept, when:

- the passage is too short to ask about;
- the model gave no usable question (empty, several lines, no question at all);
- the question copies the passage: a share of its BM25 terms (same tokenizer, stemming and
  stopwords as the index) at or above ``max_overlap`` occurs in the passage, so it would test
  word matching only;
- another document matches the question about as well as the source document (its best chunk's
  dense similarity is within ``margin`` of the source's, or above it): the label would be
  doubtful;
- it repeats a question already kept (same words, or cosine >= 0.95 between the questions);
- enough cases were kept already (a surplus candidate of the last batch).

Model calls go through the gateway with command ``generate`` (ledger, cache, budgets, rate
limits), ``llm.concurrency`` at a time; with a fixed seed and temperature 0 a second run
asks the same questions and the cache answers them.
"""

from __future__ import annotations

import math
import random
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmctl.config import Config
from llmctl.errors import IndexStateError, ProviderError
from llmctl.llm.gateway import GatewayPool
from llmctl.search.retrieve import Retriever

PROMPT = """You write evaluation questions for a documentation search system.
Given one passage, write ONE question that a user of this documentation would really ask and
that the passage answers.
- Use your own words: do not copy phrases from the passage.
- The question must make sense on its own: name the subject, never "this passage" or "the text".
Reply with the question only, on one line."""

MIN_WORDS = 25
DUPLICATE_COSINE = 0.95
TRIES_PER_CASE = 3  # at most this many candidates per requested case: a model that cannot do the job stops early


class NothingGenerated(ProviderError):
    """No candidate survived: nothing is written; ``report`` says why, candidate by candidate."""

    def __init__(self, message: str, report: GenerateReport):
        super().__init__(message)
        self.report = report


@dataclass
class Candidate:
    chunk_id: str
    doc_id: str
    expected: str  # how the suite names the document: its source path, or a record's id
    text: str
    question: str | None = None
    dropped: str | None = None
    vector: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"chunk": self.chunk_id, "expected": self.expected, "question": self.question,
                "dropped": self.dropped}


@dataclass
class GenerateReport:
    output: Path
    requested: int
    seed: int
    model: str
    kept: list[Candidate]
    dropped: list[Candidate]
    cost_usd: float | None
    stopped: str | None = None  # why fewer cases than requested were kept

    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.dropped:
            kind = c.dropped.split(":")[0]
            out[kind] = out.get(kind, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def to_dict(self) -> dict:
        return {"output": str(self.output), "requested": self.requested, "cases": len(self.kept),
                "documents": len({c.doc_id for c in self.kept}), "seed": self.seed, "model": self.model,
                "cost_usd": self.cost_usd, "stopped": self.stopped, "dropped": len(self.dropped),
                "drop_reasons": self.reasons(),
                "kept": [c.to_dict() for c in self.kept], "dropped_candidates": [c.to_dict() for c in self.dropped]}


def sample(rows: list[tuple[str, str, str, str]], seed: int) -> list[Candidate]:
    """Candidates in the order they are tried: a round-robin over documents, seeded."""
    rng = random.Random(seed)
    by_doc: dict[str, list[Candidate]] = {}
    for chunk_id, doc_id, source, text in sorted(rows):
        expected = doc_id.rsplit("#", 1)[1] if "#" in doc_id else source
        by_doc.setdefault(doc_id, []).append(Candidate(chunk_id, doc_id, expected, text))
    docs = sorted(by_doc)
    rng.shuffle(docs)
    for d in docs:
        rng.shuffle(by_doc[d])
    out = []
    for round_ in range(max((len(v) for v in by_doc.values()), default=0)):
        out += [by_doc[d][round_] for d in docs if round_ < len(by_doc[d])]
    return out


def clean_question(reply: str) -> str | None:
    lines = [ln.strip() for ln in reply.strip().splitlines() if ln.strip()]
    if len(lines) != 1:
        return None
    q = re.sub(r"^(question\s*:\s*|\d+[.)]\s*|[-*]\s*)", "", lines[0], flags=re.I).strip().strip('"“”\'`').strip()
    return q if len(q.split()) >= 3 and q.endswith("?") else None


class Generator:
    def __init__(self, cfg: Config, retriever: Retriever, gateways: GatewayPool, *, max_overlap: float = 0.9,
                 margin: float = 0.02, on_candidate: Callable[[], None] | None = None):
        if not cfg.llm.providers:
            raise ProviderError("llmctl generate needs a model: add one under llm.providers")
        self.cfg = cfg
        self.retriever = retriever
        self.gateways = gateways
        self.max_overlap = max_overlap
        self.margin = margin
        self.on_candidate = on_candidate
        self.cost: float | None = 0.0  # None once a call's price is unknown
        self._lock = threading.Lock()

    def run(self, n: int, seed: int, output: Path) -> GenerateReport:
        rows = list(self.retriever.manifest.chunk_texts())
        if not rows:
            raise IndexStateError("The index is empty: run llmctl ingest PATH first")
        pool = sample(rows, seed)[:TRIES_PER_CASE * n]
        kept: list[Candidate] = []
        dropped: list[Candidate] = []
        while len(kept) < n and pool:
            size = math.ceil((n - len(kept)) * 1.5)
            batch, pool = pool[:size], pool[size:]
            self._ask(batch)
            for c in batch:
                c.dropped = c.dropped or self._why_not(c, kept, n)
                (dropped if c.dropped else kept).append(c)
        stopped = None
        if len(kept) < n:
            stopped = (f"the index has {len(rows)} passages" if len(rows) < TRIES_PER_CASE * n else
                       f"stopped after {TRIES_PER_CASE * n} candidates ({TRIES_PER_CASE} per requested case)")
        report = GenerateReport(output, n, seed, self.cfg.llm.providers[0].model, kept, dropped,
                                None if self.cost is None else round(self.cost, 6), stopped)
        if not kept:
            raise NothingGenerated(
                f"No question survived: {len(dropped)} candidates dropped ("
                + ", ".join(f"{k} {v}" for k, v in report.reasons().items())
                + f"); nothing was written. Check that model '{report.model}' follows instructions "
                "(llmctl generate --json lists every candidate)", report)
        return report

    def _ask(self, batch: list[Candidate]) -> None:
        def ask(c: Candidate) -> None:
            if len(c.text.split()) < MIN_WORDS:
                c.dropped = f"passage too short: {len(c.text.split())} words (< {MIN_WORDS})"
                return
            messages = [{"role": "system", "content": PROMPT}, {"role": "user", "content": c.text}]
            comp = self.gateways.call(command="generate").complete(
                messages, question=f"generate a question for chunk {c.chunk_id}", chunk_ids=[c.chunk_id], sources=[])
            with self._lock:
                self.cost = None if comp.cost_usd is None or self.cost is None else self.cost + comp.cost_usd
            c.question = clean_question(comp.text)
            if c.question is None:
                c.question = comp.text.strip()[:200] or None
                c.dropped = "no usable question: the reply is not one line ending in '?'"

        with ThreadPoolExecutor(max_workers=min(self.cfg.llm.concurrency, len(batch))) as pool:
            for _ in pool.map(ask, batch):  # errors (budget, provider) stop the run: nothing is written
                if self.on_candidate:
                    self.on_candidate()

    def _why_not(self, c: Candidate, kept: list[Candidate], n: int) -> str | None:
        terms = set(self.retriever.keyword.tokenize(c.question))
        if terms:
            share = len(terms & set(self.retriever.keyword.tokenize(c.text))) / len(terms)
            if share >= self.max_overlap:
                return f"copies the passage: {share:.0%} of its terms are in it (max_overlap {self.max_overlap:g})"
        c.vector = np.asarray(self.retriever.embed(c.question), dtype=np.float32)
        rival = self._rival(c)
        if rival:
            return rival
        for k in kept:
            if k.question.lower() == c.question.lower() or float(k.vector @ c.vector) >= DUPLICATE_COSINE:
                return f"duplicate of a kept question: {k.question!r}"
        if len(kept) >= n:
            return "surplus: enough cases were kept already"
        return None

    def _rival(self, c: Candidate) -> str | None:
        """Another document that matches the question about as well as (or better than) the source."""
        own_ids = self.retriever.manifest.chunk_ids_of_docs([c.doc_id])[c.doc_id]
        own = self.retriever.store.query(c.vector, len(own_ids), None, ids=own_ids)
        if not own:
            return None
        best_own = own[0][1]
        hits = self.retriever.dense(c.vector, 20, None)
        docs = self.retriever.chunks([cid for cid, _ in hits])
        best: dict[str, float] = {}
        for cid, sim in hits:
            d = docs.get(cid, {}).get("doc_id")
            if d and d != c.doc_id:
                best[d] = max(best.get(d, -1.0), sim)
        rivals = sorted(((s, d) for d, s in best.items() if s >= best_own - self.margin), reverse=True)
        if not rivals:
            return None
        s, d = rivals[0]
        return (f"ambiguous: another document matches it as well ({d.rsplit('#', 1)[-1]} {s:.3f} vs "
                f"{best_own:.3f}, margin {self.margin:g})")


def suite_yaml(report: GenerateReport) -> str:
    import yaml

    # group: the source document, so the gate resamples a document's questions together (see gate.py)
    cases = [{"id": f"gen-{i:03d}", "query": c.question, "expected": [c.expected], "group": c.expected,
              "tags": ["generated"]}
             for i, c in enumerate(report.kept, start=1)]
    head = (f"# Generated by llmctl generate (seed {report.seed}, model {report.model}): {len(cases)} cases from "
            f"{len({c.doc_id for c in report.kept})} documents; {len(report.dropped)} candidates dropped "
            f"({', '.join(f'{k} {v}' for k, v in report.reasons().items()) or 'none'}).\n"
            "# Review the questions before relying on them; `llmctl eval` runs this file as is.\n")
    return head + yaml.safe_dump({"name": report.output.stem, "cases": cases}, sort_keys=False, allow_unicode=True)
