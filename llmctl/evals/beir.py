"""BEIR datasets (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) as eval suites."""

from __future__ import annotations

import csv
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
    judged: dict[str, dict[str, int]] = {}
    with qrels.open(newline="") as fh:
        for n, row in enumerate(csv.reader(fh, delimiter="\t"), start=1):
            if n == 1 and row and not row[-1].strip().lstrip("-").isdigit():
                continue  # header
            if len(row) < 3:
                raise InputError(f"{qrels} line {n}: expected query-id<TAB>corpus-id<TAB>score")
            if int(row[2]) > 0:
                judged.setdefault(row[0], {})[row[1]] = int(row[2])
    texts: dict[str, str] = {}
    for n, line in enumerate(queries.open(), start=1):
        if line.strip():
            try:
                q = json.loads(line)
                texts[str(q["_id"])] = q["text"]
            except (ValueError, KeyError):
                raise InputError(f"{queries} line {n}: expected {{\"_id\", \"text\"}}") from None
    cases = [Case(id=qid, query=texts[qid], expected=[Graded(source=d, grade=g) for d, g in docs.items()])
             for qid, docs in judged.items() if qid in texts]
    if not cases:
        raise InputError(f"{qrels}: no judged query found in {queries}")
    return corpus, Suite(name=f"beir:{folder.name}:{split}", metrics=list(BEIR_METRICS), cases=cases)
