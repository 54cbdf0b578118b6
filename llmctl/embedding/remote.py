"""Embeddings from an OpenAI-compatible ``/v1/embeddings`` endpoint (``embedding.provider: openai``).

The same machinery as chat (``gateway.py``): the provider's rate limits, a budget check at its
price before every attempt, capped jittered backoff on retryable failures (connection, timeout,
429, 5xx, malformed reply) honouring Retry-After within ``llm.deadline``, and one ledger row per
attempt under the command that embeds (``ingest``, ``query``, ``eval``).

Money is never paid twice for a text: every batch's vectors are saved (``PaidVectors``) the
moment they arrive, before the index commits them. A run that fails on one batch, or is killed,
keeps what the other batches bought; the next run asks the endpoint only for what is missing.
Committed vectors are forgotten (``forget``), so the file holds at most one run's worth.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import random
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from functools import cached_property

import numpy as np

from llmctl.config import Config, EmbeddingConfig, redacted_url
from llmctl.datadir import DataDir
from llmctl.embedding import REMOTE_IDENTITY
from llmctl.errors import BudgetExceeded, ProviderError
from llmctl.llm import policy
from llmctl.llm.client import AttemptFailed, api_key, openai_client, status_failure
from llmctl.llm.ledger import Ledger, Row
from llmctl.llm.ratelimit import limiter_for
from llmctl.llm.store import connect
from llmctl.llm.tokens import counter_for
from llmctl.money import money

PAID_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL, ts REAL NOT NULL);
"""


class PaidVectors:
    """Vectors received but not yet committed to the index, keyed by what made them."""

    def __init__(self, data: DataDir):
        self.db = connect(data.paid_vectors, PAID_SCHEMA, "embedding store", shared=True)
        self.lock = threading.Lock()

    def get(self, keys: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with self.lock:
            for start in range(0, len(keys), 500):
                part = keys[start:start + 500]
                rows = self.db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(part))})",
                                       part).fetchall()
                out.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in rows)
        return out

    def put(self, items: dict[str, np.ndarray]) -> None:
        now = time.time()
        with self.lock:
            self.db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                                [(k, v.astype(np.float32).tobytes(), now) for k, v in items.items()])

    def delete(self, keys: list[str]) -> None:
        with self.lock:
            self.db.executemany("DELETE FROM vectors WHERE key = ?", [(k,) for k in keys])

    def close(self) -> None:
        self.db.close()


class RemoteEmbedder:
    """The embedder interface of ``embedding/local.py`` over an endpoint. Chunks are counted with
    tiktoken (exact for OpenAI's models; for others an estimate, so chunks keep a 10% margin)."""

    backend = "openai"
    note = ""
    shareable = False  # nothing to load, and its ledger rows name the command that made them
    export_pending = False
    token_spans = None  # tiktoken's counts do not add up between words (see Chunker)

    def __init__(self, e: EmbeddingConfig, cfg: Config, data: DataDir, command: str):
        self.cfg = e
        self.llm = cfg.llm
        self.provider = e.as_provider()
        self.model_id = e.model
        self.data = data
        self.command = command
        self.source = cfg.source
        self.expected_dimension = e.dimensions
        self.rng = random.Random()
        self._db_lock = threading.Lock()
        self.identity = {"provider": "openai", **{k: getattr(e, k) for k in REMOTE_IDENTITY[1:]}}

    # -- what chunking and the index need ---------------------------------------------------
    @cached_property
    def _counter(self):
        return counter_for(self.cfg.model, "auto", self.data.tiktoken)

    def count_tokens(self, text: str) -> int:
        return self._counter.count(text)

    @cached_property
    def max_chunk_tokens(self) -> int:
        window = self.cfg.max_input_tokens if self._counter.exact else int(self.cfg.max_input_tokens * 0.9)
        return window - self.count_tokens(self.cfg.document_prefix)

    @property
    def dimension(self) -> int | None:
        return self.expected_dimension

    def load(self) -> dict:
        """Nothing to load; checks the API key now, before any work."""
        _ = self._key
        return {"backend": "openai", "device": redacted_url(self.cfg.base_url), "note": ""}

    @cached_property
    def _key(self) -> str:
        return api_key(self.provider, self.source)

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.data.ledger, shared=True)

    @cached_property
    def paid(self) -> PaidVectors:
        return PaidVectors(self.data)

    def close(self) -> None:
        for name in ("ledger", "paid"):
            if name in self.__dict__:
                self.__dict__.pop(name).close()

    # -- embedding --------------------------------------------------------------------------
    def embed_query(self, text: str) -> np.ndarray:
        return self._request([self.cfg.query_prefix + text], "query")[0]

    def embed_documents(self, texts: list[str], on_batch=None) -> np.ndarray:
        """Vectors in input order. Texts whose vectors were bought before (a failed or killed run)
        are not asked again; ``on_batch(n)`` runs after each batch, in this thread (it may raise
        to stop: batches in flight finish and are kept, the rest are not sent)."""
        texts = [self.cfg.document_prefix + t for t in texts]
        keys = [self._paid_key(t) for t in texts]
        have = self.paid.get(list(dict.fromkeys(keys)))
        missing = list(dict.fromkeys(k for k in keys if k not in have))
        text_of = dict(zip(keys, texts, strict=True))
        if len(have) and on_batch:
            on_batch(sum(1 for k in keys if k in have))
        batches = [missing[i:i + self.cfg.batch_size] for i in range(0, len(missing), self.cfg.batch_size)]
        pool = ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, max(1, len(batches))),
                                  thread_name_prefix="embed")
        try:
            todo = iter(batches)
            running = {pool.submit(self._buy, b, [text_of[k] for k in b]): b
                       for b in itertools.islice(todo, self.cfg.concurrency)}
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    batch = set(running.pop(future))
                    have.update(future.result())
                    if on_batch:
                        on_batch(sum(1 for k in keys if k in batch))
                    for b in itertools.islice(todo, 1):
                        running[pool.submit(self._buy, b, [text_of[k] for k in b])] = b
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return np.stack([have[k] for k in keys]) if keys else np.zeros((0, self.dimension or 0), np.float32)

    def forget(self, texts: list[str]) -> None:
        """The index now holds these texts' vectors: drop the saved copies."""
        self.paid.delete([self._paid_key(self.cfg.document_prefix + t) for t in texts])

    def _paid_key(self, text: str) -> str:
        scope = json.dumps({"model": self.cfg.model, **self.identity}, sort_keys=True)
        return hashlib.sha256(f"{scope}\0document\0{text}".encode()).hexdigest()

    def _buy(self, keys: list[str], texts: list[str]) -> dict[str, np.ndarray]:
        vectors = self._request(texts, "document")
        got = dict(zip(keys, vectors, strict=True))
        self.paid.put(got)  # saved before anyone can lose them
        return got

    def _request(self, texts: list[str], side: str) -> np.ndarray:
        """One batch, retried as the gateway retries; one ledger row per attempt."""
        provider, request_id = self.provider, uuid.uuid4().hex[:12]
        model = (self.cfg.query_model if side == "query" else self.cfg.document_model) or self.cfg.model
        input_type = self.cfg.query_input_type if side == "query" else self.cfg.document_input_type
        tokens = sum(self.count_tokens(t) for t in texts)
        from llmctl.llm.gateway import SYSTEM_CLOCK  # here: the gateway's imports stay off query start-up

        limiter = limiter_for(provider, SYSTEM_CLOCK)
        deadline = time.monotonic() + self.llm.deadline
        for n in range(1, provider.retries + 2):
            self._check_budget(tokens, request_id, n, model)
            started = time.perf_counter()
            try:
                vectors, used = _attempt(provider, self._key, model, texts, input_type, self.cfg.dimensions,
                                         functools.partial(limiter.acquire, tokens, deadline))
                self._check_dimension(vectors)
                if self.cfg.normalize:
                    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            except AttemptFailed as f:
                self._row(request_id, "error", model, latency_ms=(time.perf_counter() - started) * 1000,
                          error_class=f.kind, attempt=n)
                if not f.retryable:
                    raise ProviderError(f"Embedding failed: {f}") from None
                if n > provider.retries:
                    raise ProviderError(f"Embedding failed after {n} attempts; last error: {f}") from None
                delay = policy.backoff(n, self.llm.backoff_base, self.llm.backoff_cap, f.retry_after, self.rng)
                if time.monotonic() + delay > deadline:
                    raise ProviderError(f"Embedding failed: llm.deadline ({self.llm.deadline:g} s) reached; "
                                        f"last error: {f}") from None
                if f.kind == "rate_limit":
                    limiter.pause(delay)
                time.sleep(delay)
                continue
            usage = "provider" if used is not None else "estimated"
            used = tokens if used is None else used
            self._row(request_id, "ok", model, tokens_in=used, tokens_out=0, usage_source=usage,
                      cost_usd=policy.cost(provider, used, 0), latency_ms=(time.perf_counter() - started) * 1000,
                      attempt=n)
            return vectors
        raise AssertionError("unreachable")

    def _check_dimension(self, vectors: np.ndarray) -> None:
        with self._db_lock:
            want = self.expected_dimension
            if want is None:
                self.expected_dimension = vectors.shape[1]
            elif vectors.shape[1] != want:
                where = "embedding.dimensions" if self.cfg.dimensions else "the index (or earlier replies)"
                raise AttemptFailed("wrong_dimension", f"'{redacted_url(self.cfg.base_url)}' returned "
                                    f"{vectors.shape[1]}-"
                                    f"dimensional vectors but {where} holds {want}: check embedding.model "
                                    "and embedding.dimensions")

    def _check_budget(self, tokens: int, request_id: str, n: int, model: str) -> None:
        b = self.llm.budget
        if not b.limited:
            return
        estimate = policy.cost(self.provider, tokens, 0)
        if estimate is None:
            problem = ("the embedding endpoint has no price configured, so its cost cannot be counted against "
                       "llm.budget (set embedding.price_per_1m; 0 for a free local server)")
        else:
            with self._db_lock:
                over = self.ledger.over_budget(b, estimate, time.time())
            problem = over and f"{over}; embedding {tokens} tokens would add about {money(estimate)}"
        if problem:
            self._row(request_id, "refused", model, error_class="budget", attempt=n)
            raise BudgetExceeded(f"Budget exceeded: {problem}; raise the limit in llm.budget or wait for the "
                                 "next period")

    def _row(self, request_id: str, status: str, model: str, **kw) -> None:
        with self._db_lock:
            self.ledger.record(Row(command=self.command, request_id=request_id, status=status,
                                   provider="embedding", model=model, **kw), time.time())

    def expect_dimension(self, dimension: int | None) -> None:
        """The index's dimension: a reply of another size is an error, never a corrupt index."""
        if dimension and self.expected_dimension is None:
            self.expected_dimension = dimension


def _attempt(provider, key: str, model: str, texts: list[str], input_type: str | None,
             dimensions: int | None, before_send) -> tuple[np.ndarray, int | None]:
    """One request: (vectors in input order, tokens the provider counted or None). Raises AttemptFailed."""
    import openai

    client = openai_client(provider.base_url, key, provider.timeout)
    extra = {"input_type": input_type} if input_type else None
    where = f"'{redacted_url(provider.base_url)}'"
    before_send()
    try:
        raw = client.embeddings.with_raw_response.create(
            model=model, input=texts, encoding_format="float", extra_body=extra,
            **({"dimensions": dimensions} if dimensions else {}))
        reply = raw.parse()
        rows = sorted(reply.data, key=lambda d: d.index)
        if [d.index for d in rows] != list(range(len(texts))):
            raise AttemptFailed("malformed", f"{where} returned {len(rows)} vectors for {len(texts)} texts")
        vectors = np.asarray([d.embedding for d in rows], dtype=np.float32)
        if vectors.ndim != 2 or not np.isfinite(vectors).all():
            raise AttemptFailed("malformed", f"{where} returned vectors of uneven length or non-numbers")
    except AttemptFailed:
        raise
    except openai.APITimeoutError:
        raise AttemptFailed("timeout", f"{where} did not answer within {provider.timeout:g} s") from None
    except openai.APIConnectionError as exc:
        raise AttemptFailed("connection", f"cannot reach {where} ({type(exc.__cause__ or exc).__name__})") from None
    except openai.APIStatusError as exc:
        raise status_failure(exc, provider, key) from None
    except (openai.OpenAIError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise AttemptFailed("malformed", f"{where} sent an invalid response ({type(exc).__name__})") from None
    usage = getattr(reply, "usage", None)
    tokens = getattr(usage, "prompt_tokens", None) if usage is not None else None
    return vectors, tokens if isinstance(tokens, int) and tokens > 0 else None

