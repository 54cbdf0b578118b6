"""Optional LLM judge: is the answer faithful to the retrieved sources, and correct against a reference?

A judge that fails (provider error, reply that is not the requested JSON) makes the case
an *error*: never a silent NaN, never a pass.
"""

from __future__ import annotations

import json
import re

from llmctl.llm.gateway import Gateway

JUDGE_PROMPT = """You grade answers produced by a retrieval-augmented assistant.
Reply with one JSON object and nothing else:
{"faithful": true or false, "correct": true, false or null, "reason": "one sentence"}
- faithful: every claim in the answer is supported by the sources (an answer saying the
  sources do not contain the answer is faithful when that is true).
- correct: the answer agrees with the reference answer; null when no reference is given."""


class JudgeError(Exception):
    pass


def judge_messages(question: str, sources: str, answer: str, reference: str | None) -> list[dict]:
    user = (f"<sources>\n{sources}\n</sources>\n\nQuestion: {question}\n\nAnswer to grade:\n{answer}\n\n"
            f"Reference answer: {reference if reference else '(none)'}")
    return [{"role": "system", "content": JUDGE_PROMPT}, {"role": "user", "content": user}]


def parse_verdict(reply: str, reference: str | None) -> dict:
    match = re.search(r"\{.*\}", reply, re.S)
    try:
        verdict = json.loads(match.group(0)) if match else None
    except ValueError:
        verdict = None
    if not isinstance(verdict, dict) or not isinstance(verdict.get("faithful"), bool) or (
            reference and not isinstance(verdict.get("correct"), bool)):
        raise JudgeError(f"the judge did not return the requested JSON verdict: {reply[:200]!r}")
    return verdict


def judge(gateway: Gateway, question: str, sources: str, answer: str, reference: str | None) -> dict:
    """The verdict, with ``cost_usd``: what the judge's call cost (None: unpriced; 0 from the cache)."""
    messages = judge_messages(question, sources, answer, reference)
    reply = gateway.complete(messages, question=question, chunk_ids=[], sources=[])
    return {**parse_verdict(reply.text, reference), "cost_usd": reply.cost_usd}
