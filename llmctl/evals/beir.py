"""BEIR datasets (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) as eval suites."""

from __future__ import annotations

import json
from pathlib import Path

from llmctl.errors import InputError
from llmctl.evals.suite import Case, Graded, Suite

BEIR_METRICS = ["ndcg@10", "recall@100", "mrr@10"]


def load_beir(folder: Path, split: str) -> tuple[Path, Suite]:
    """(corpus path, suite with one case per judged query)."""
    corpus, queries, qrels = folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"
    for f in (corpus, queries, qrels):
        if not f.is_file():
            raise InputError(f"{f} is missing: a BEIR folder has corpus.jsonl, queries.jsonl and "
                             f"qrels/{split}.tsv (see --split)")
    judged = _qrels(qrels)
    texts = _queries(queries)
    missing = [qid for qid in judged if qid not in texts]
    if missing:  # as BEIR's own loader, which stops on them: a case without its question is lost
        raise InputError(f"{qrels} judges {len(missing)} quer{'y' if len(missing) == 1 else 'ies'} that "
                         f"{queries.name} does not have (e.g. {missing[0]!r}): fix the dataset")
    cases = [Case(id=qid, query=texts[qid], expected=[Graded(source=d, grade=g) for d, g in docs.items()])
             for qid, docs in judged.items()]
    if not cases:
        raise InputError(f"{qrels}: no query is judged relevant to any document (a score above 0)")
    return corpus, Suite(name=f"beir:{folder.name}:{split}", metrics=list(BEIR_METRICS), cases=cases)


def _lines(path: Path):
    """(line number, text) of a UTF-8 file; a file in another encoding is one InputError."""
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            yield from enumerate(fh, start=1)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start}): save it as UTF-8") from None


def _qrels(path: Path) -> dict[str, dict[str, int]]:
    """query id -> corpus id -> grade (> 0) from BEIR's query-id<TAB>corpus-id<TAB>score, with or
    without its header line; TREC's four columns (query-id 0 corpus-id score) are read too."""
    judged: dict[str, dict[str, int]] = {}
    for n, line in _lines(path):
        if not line.strip():
            continue
        row = line.rstrip("\r\n").split("\t")
        if len(row) != 3:
            row = line.split()
            row = row[:1] + row[2:] if len(row) == 4 else row  # TREC: the second column is unused
        if len(row) != 3:
            raise InputError(f"{path} line {n}: expected query-id<TAB>corpus-id<TAB>score")
        try:
            grade = float(row[2])
        except ValueError:
            if n == 1:
                continue  # the header (query-id, corpus-id, score)
            raise InputError(f"{path} line {n}: the score {row[2].strip()!r} is not a number") from None
        if grade != int(grade):
            raise InputError(f"{path} line {n}: the score {row[2].strip()} is not a whole-number grade (0, 1, 2...)")
        if grade > 0:
            judged.setdefault(row[0].strip(), {})[row[1].strip()] = int(grade)
    return judged


def _queries(path: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    for n, line in _lines(path):
        if not line.strip():
            continue
        try:
            q = json.loads(line)
        except ValueError:
            q = None
        if not isinstance(q, dict) or "_id" not in q or not isinstance(q.get("text"), str):
            raise InputError(f"{path} line {n}: expected a JSON object with \"_id\" and a \"text\" string")
        if not q["text"].strip():
            raise InputError(f"{path} line {n}: query {q['_id']!r} has an empty text")
        texts[str(q["_id"])] = q["text"]
    return texts
