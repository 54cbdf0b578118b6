"""Does anything retrieved look relevant? Two cheap facts about the top hits, thresholds measured.

- the best dense similarity (cosine) between the question and any candidate;
- term coverage: the largest share of the question's keyword terms (stemmed, stopwords out) that
  one of the top hits contains.

Low confidence when both are under their thresholds (``retrieval.min_similarity``,
``retrieval.min_term_coverage``): a question about something the corpus does not cover matches
neither the meaning nor the words of any chunk. The defaults and their measured error rates are
in docs/benchmarks.md ("Knowing when nothing is relevant").
"""

from __future__ import annotations

from dataclasses import dataclass

from llmctl.config import RetrievalConfig


@dataclass(frozen=True)
class Confidence:
    low: bool
    similarity: float  # best dense cosine among the candidates
    term_coverage: float  # best share of the question's terms in one top hit
    terms: int  # keyword terms in the question

    def to_dict(self) -> dict:
        return {"low": self.low, "similarity": round(self.similarity, 4),
                "term_coverage": round(self.term_coverage, 4), "terms": self.terms}

    def warning(self) -> str:
        return (f"low confidence: nothing retrieved looks relevant (best similarity {self.similarity:.2f}, "
                f"at most {self.term_coverage:.0%} of the question's {self.terms} terms in a top hit); "
                "the corpus may not cover this question")


def assess(question: str, top_texts: list[str], best_similarity: float, tokenize, cfg: RetrievalConfig) -> Confidence:
    """``top_texts``: the indexed text of the hits the user gets; ``tokenize``: the BM25 index's."""
    terms = set(tokenize(question))
    coverage = max((len(terms & set(tokenize(t))) / len(terms) for t in top_texts), default=0.0) if terms else 0.0
    low = not top_texts or (best_similarity < cfg.min_similarity and coverage < cfg.min_term_coverage)
    return Confidence(low, best_similarity, coverage, len(terms))
