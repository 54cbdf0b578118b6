"""Calibrating the low-confidence signal: answerable questions against questions the corpus
does not cover, on two corpora. Measured, never asserted.

- Python docs (bench/docs_bench.py's HTML index): its 50 questions are answerable; its 10
  `absent` questions and SciFact's 809 training queries (biomedical claims) are not.
- SciFact (bench/out/evaldata/beir-scifact): its 809 training queries are answerable (each
  has a judged abstract); the 60 Python-docs questions are not.

For each question: the best dense similarity and the best term coverage of a top-5 hit, as
`llmctl query --json` reports them. Then the error rates of the configured thresholds and of a
grid around them: answerable questions flagged low (false alarms) and uncovered questions
not flagged (misses).

    python bench/confidence.py     # bench/out/confidence.json
"""

from __future__ import annotations

import json

import common
import numpy as np
import yaml

from llmctl import Workspace
from llmctl.config import RetrievalConfig


def signals(data_dir, questions: list[str]) -> np.ndarray:
    ws = Workspace(config_path=None, data_dir=data_dir)
    out = []
    for q in questions:
        c = ws.query(q, use_llm=False, rerank=False).confidence
        out.append((c.similarity, c.term_coverage))
    ws.close()
    return np.array(out)


def rates(pos: np.ndarray, neg: np.ndarray, sim: float, cov: float) -> dict:
    def low(x):
        return (x[:, 0] < sim) & (x[:, 1] < cov)

    return {"min_similarity": sim, "min_term_coverage": cov, "false_alarms": round(float(low(pos).mean()), 4),
            "misses": round(float((~low(neg)).mean()), 4)}


def main() -> None:
    qs = yaml.safe_load((common.REPO / "bench" / "docs_questions.yaml").read_text())
    docs_answerable = [q["q"] for q in qs["questions"]]
    docs_absent = list(qs["absent"])
    qtext, _ = common.queries_and_qrels()
    scifact = list(qtext.values())
    pydocs = common.OUT / "docs" / "after-html"
    sets = {
        "pydocs": {"answerable": signals(pydocs, docs_answerable),
                   "absent": signals(pydocs, docs_absent + scifact)},
        "scifact": {"answerable": signals(common.INDEX, scifact),
                    "absent": signals(common.INDEX, docs_answerable + docs_absent)},
    }
    d = RetrievalConfig()
    out: dict = {"configured": {}, "grid": {}, "distributions": {}}
    for name, s in sets.items():
        out["configured"][name] = rates(s["answerable"], s["absent"], d.min_similarity, d.min_term_coverage)
        out["grid"][name] = [rates(s["answerable"], s["absent"], sim, cov)
                             for sim in (0.2, 0.25, 0.3, 0.35, 0.4) for cov in (0.34, 0.5, 0.67, 1.01)]
        out["distributions"][name] = {
            k: {"similarity_p5_p50_p95": np.percentile(v[:, 0], [5, 50, 95]).round(3).tolist(),
                "coverage_p5_p50_p95": np.percentile(v[:, 1], [5, 50, 95]).round(3).tolist(), "n": len(v)}
            for k, v in s.items()}
        print(name, out["configured"][name], out["distributions"][name], flush=True)
    (common.OUT / "confidence.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
