"""Many chat requests as one OpenAI Batch job: half the price, results within the 24 h window.

``run_batch`` uploads the requests as a JSONL file, creates the batch, polls it and downloads
its output and error files. The job is recorded in the ledger (table ``batches``) under a
fingerprint of the provider, the parameters and every request's content, *before* waiting:
an interrupted run (Ctrl-C, kill -9) that is started again with the same requests polls the
same job instead of paying for a second one, and a run whose job was already collected reads
its results again without paying (its calls are in the ledger once). Each item becomes a ledger
row (command ``eval``, cost at the provider's batch prices). An item that failed, or that the
window expired before, is returned as an error message; nothing is ever returned as answered
without the model's reply.

Under a budget the job's worst case is reserved in the ledger before anything is uploaded (see
``ledger.py``), under the job's fingerprint: the run that collects the results, this one or a
resumed one, replaces the reservation by the items' rows in one transaction; a job that fails or
is never created releases it; one that is never collected holds it for ``BATCH_HOLD_S``.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass

from llmctl.config import LLMConfig, ProviderConfig, redacted_url
from llmctl.errors import BudgetExceeded, ProviderError
from llmctl.llm import policy
from llmctl.llm.cache import request_key
from llmctl.llm.client import Completion, api_key, rough_tokens, token_count
from llmctl.llm.ledger import Ledger, Row
from llmctl.money import money

TERMINAL = {"completed", "expired", "failed", "cancelled"}
BATCH_HOLD_S = 25 * 3600  # the 24 h completion window and a margin


@dataclass
class BatchItem:
    """One request of a batch: its messages and, once the job ran, its result."""

    messages: list[dict]
    question: str
    completion: Completion | None = None
    error: str | None = None


def run_batch(items: list[BatchItem], cfg: LLMConfig, ledger: Ledger, *, config_source: str, command: str,
              on_status=None, sleep=time.sleep) -> list[BatchItem]:
    """Fill each item's completion or error through one batch job of the first provider."""
    import openai

    provider = cfg.providers[0]
    params = {"temperature": cfg.temperature, "max_tokens": cfg.max_answer_tokens}
    # custom_id: the response cache's key of the request (32 hex digits are unique enough)
    keys = [request_key(provider.base_url, provider.model, i.messages, params)[:32] for i in items]
    unique = dict(zip(keys, items, strict=True))
    fingerprint = hashlib.sha256(json.dumps(
        [provider.base_url, provider.model, params, sorted(unique)]).encode()).hexdigest()
    client = openai.OpenAI(base_url=provider.base_url, api_key=api_key(provider, config_source),
                           timeout=provider.timeout, max_retries=provider.retries)
    try:
        known = ledger.batch_for(fingerprint)
        if known is None:
            held = _reserve_budget(unique.values(), cfg, provider, ledger, fingerprint, command)
            try:
                batch_id = _submit(client, provider, params, unique)
            except BaseException:
                ledger.release(held)
                raise
            ledger.save_batch(batch_id, fingerprint, command, provider.name, len(unique), time.time())
        else:
            batch_id = known[0]
        batch = _wait(client, batch_id, cfg.batch_poll_seconds, on_status, sleep)
        if batch.status in ("failed", "cancelled"):
            errors = getattr(batch, "errors", None)
            first = errors.data[0].message if errors and errors.data else "no reason given"
            ledger.batch_status(batch_id, batch.status)
            ledger.release(_reservation(fingerprint))
            raise ProviderError(f"Batch {batch_id} of provider '{provider.name}' {batch.status}: {first}")
        results = _download(client, batch)
    except (openai.APIConnectionError, openai.APITimeoutError) as exc:
        raise ProviderError(f"cannot reach '{provider.name}' at {redacted_url(provider.base_url)} for its Batch API "
                            f"({type(exc).__name__}); run again to resume batch job") from None
    except openai.APIStatusError as exc:
        raise ProviderError(f"'{provider.name}' refused a Batch API call (HTTP {exc.status_code}): "
                            f"{str(exc)[:200]}") from None
    fresh = known is None or known[1] != "collected"
    for key, item in unique.items():
        _settle(item, results.get(key), batch.status, provider)
    if fresh:  # the items' rows replace the job's reservation
        ledger.collect_batch(batch_id, [_row(item, provider, command, batch_id) for item in unique.values()],
                             time.time(), settles=_reservation(fingerprint))
    for key, i in zip(keys, items, strict=True):  # duplicates of one request share its result
        i.completion, i.error = unique[key].completion, unique[key].error
    return items


def _reservation(fingerprint: str) -> str:
    return f"batch-{fingerprint}"


def _reserve_budget(items, cfg: LLMConfig, provider: ProviderConfig, ledger: Ledger, fingerprint: str,
                    command: str) -> str | None:
    """Before paying for the whole job: its worst case (every answer at max_tokens) reserved within
    budget, atomically with every other caller of the ledger; the reservation's id, or None without
    a budget."""
    b = cfg.budget
    if b.daily_usd is None and b.monthly_usd is None:
        return None
    items = list(items)
    tokens_in = sum(rough_tokens(m["content"]) for i in items for m in i.messages)
    estimate = policy.batch_cost(provider, tokens_in, cfg.max_answer_tokens * len(items))
    if estimate is None:
        raise BudgetExceeded(f"provider '{provider.name}' has no price configured, so a batch job cannot be "
                             "counted against llm.budget (set price_input_per_1m and price_output_per_1m)")
    now = time.time()
    held, over = ledger.reserve(b, estimate, now, expires=now + BATCH_HOLD_S, key=_reservation(fingerprint),
                                command=command, provider=provider.name)
    if over:
        raise BudgetExceeded(f"Budget exceeded: {over}; the batch job would add up to {money(estimate)}")
    return held


def _submit(client, provider: ProviderConfig, params: dict, items: dict[str, BatchItem]) -> str:
    lines = [json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": provider.model, "messages": i.messages, **params}}, ensure_ascii=False)
             for key, i in items.items()]
    upload = client.files.create(file=("llmctl-batch.jsonl", io.BytesIO("\n".join(lines).encode() + b"\n")),
                                 purpose="batch")
    return client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                 completion_window="24h").id


def _wait(client, batch_id: str, every: float, on_status, sleep):
    while True:
        batch = client.batches.retrieve(batch_id)
        if on_status:
            on_status(batch)
        if batch.status in TERMINAL:
            return batch
        sleep(every)


def _download(client, batch) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id:
            for line in client.files.content(file_id).text.splitlines():
                if line.strip():
                    entry = json.loads(line)
                    out[entry["custom_id"]] = entry
    return out


def _settle(item: BatchItem, entry: dict | None, status: str, provider: ProviderConfig) -> None:
    if entry is None:
        item.error = (f"batch job {status} without a result for this request" if status != "expired"
                      else "the batch expired before this request ran")
        return
    response = entry.get("response") or {}
    if entry.get("error") or response.get("status_code") != 200:
        err = entry.get("error") or (response.get("body") or {}).get("error") or {}
        item.error = f"batch item failed ({err.get('code') or response.get('status_code')}): {err.get('message', '')}"
        return
    try:
        body = response["body"]
        choice = body["choices"][0]
        text = choice["message"]["content"] or ""
        if not isinstance(text, str):
            raise TypeError(text)
        usage = body.get("usage") or {}
        counts = (token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens")))
        reported = None not in counts
        if not reported:  # no usage, or counts not to be trusted: counted here, roughly
            counts = (sum(rough_tokens(str(m.get("content", ""))) for m in item.messages), rough_tokens(text))
        item.completion = Completion(text, provider.name, provider.model, *counts, reported,
                                     choice.get("finish_reason"))
        item.completion.cost_usd = policy.batch_cost(provider, *counts)
    except (KeyError, IndexError, TypeError, AttributeError):
        item.error = "batch item malformed: no choices[0].message.content as text"


def _row(item: BatchItem, provider: ProviderConfig, command: str, batch_id: str) -> Row:
    c = item.completion
    return Row(command=command, request_id=batch_id, status="ok" if c else "error", provider=provider.name,
               model=provider.model, tokens_in=c and c.prompt_tokens, tokens_out=c and c.completion_tokens,
               usage_source=("provider" if c.usage_reported else "estimated") if c else None,
               cost_usd=c and c.cost_usd, error_class=None if c else "batch_item", attempt=1, question=item.question)
