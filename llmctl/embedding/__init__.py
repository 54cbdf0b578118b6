"""Embedding: one protocol, one table of providers (``embedding.provider``), two implementations.

- ``local.py``: a sentence-transformers model on this machine (torch, or its verified ONNX copy
  from ``onnx.py``; the device from ``device.py``).
- ``remote.py``: an OpenAI-compatible ``/v1/embeddings`` endpoint, with the LLM layer's rate
  limits, budgets, retries and ledger.

To add a provider: implement ``Embedder`` in a module here, add a factory to ``PROVIDERS``, and
add the name to ``EmbeddingConfig.provider`` (``config.py``, the one line outside this package).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from llmctl.config import Config, EmbeddingConfig
from llmctl.datadir import DataDir
from llmctl.errors import ConfigError


class Embedder(Protocol):
    """What ingest and search need from an embedding model. Vectors are float32 rows."""

    cfg: EmbeddingConfig  # the settings it was made with
    model_id: str  # the model, as the index records it
    backend: str  # "onnx", "sentence-transformers" or "openai": what embeds (status, ledger, notes)
    # Index settings beyond the model's name (an index only matches its own); a provider other
    # than the local one names itself here ({"provider": ...}), so a switch is reported as one.
    identity: dict
    note: str  # a one-time note for the user (a fallback, say), or ""
    shareable: bool  # a loaded instance may embed another reader's queries (a local model: loading is the cost)
    export_pending: bool  # the next load() first prepares something slow (ingest says so); else False
    # texts -> per text (token starts, token ends, word numbers) when the tokenizer's counts add up
    # at word boundaries (chunking then counts in one pass; see ingest/chunking.py), else None
    token_spans: Callable | None

    def load(self) -> dict: ...  # ready to embed; what was loaded (backend, device)

    @property
    def dimension(self) -> int | None: ...

    @property
    def max_chunk_tokens(self) -> int: ...  # the longest chunk the model reads whole

    def count_tokens(self, text: str) -> int: ...

    def embed_query(self, text: str): ...

    def embed_documents(self, texts: list[str], on_batch=None): ...

    def expect_dimension(self, dimension: int | None) -> None: ...  # the index's, when it has one

    def forget(self, texts: list[str]) -> None: ...  # committed: paid vectors need not be kept


def _local(e: EmbeddingConfig, cfg: Config, data: DataDir, command: str, export: bool) -> Embedder:
    from llmctl.embedding.local import Embedder as Local

    return Local(e, export=export)


def _remote(e: EmbeddingConfig, cfg: Config, data: DataDir, command: str, export: bool) -> Embedder:
    from llmctl.embedding.remote import RemoteEmbedder

    if not e.base_url:
        raise ConfigError(f"the index in {data.root} was built with embeddings from an endpoint (model "
                          f"{e.model}): set embedding.provider: openai and embedding.base_url (config: {cfg.source})")
    return RemoteEmbedder(e, cfg, data, command)


LOCAL_PROVIDER = "sentence-transformers"  # what an index that names no provider was built with

# embedding.provider -> a factory (embedding settings, config, data dir (ledger, paid vectors, tiktoken),
# command for ledger rows, export ONNX?)
PROVIDERS: dict[str, Callable[[EmbeddingConfig, Config, DataDir, str, bool], Embedder]] = {
    LOCAL_PROVIDER: _local,
    "openai": _remote,
}

REMOTE_IDENTITY = ("provider", "dimensions", "query_model", "document_model", "query_input_type",
                   "document_input_type")


def make_embedder(cfg: Config, data: DataDir, *, command: str, export: bool = False,
                  embedding: EmbeddingConfig | None = None) -> Embedder:
    """The embedder ``embedding`` (default: the config's) asks for, for the index in ``data``;
    ``command`` names its ledger rows."""
    e = embedding or cfg.embedding
    return PROVIDERS[e.provider](e, cfg, data, command, export)


def as_built(cfg: Config, built: dict) -> EmbeddingConfig:
    """The config's embedding section with what built the index (its recorded settings) put back:
    queries must embed as the index was built, whatever the config says now."""
    return cfg.embedding.model_copy(update={
        "provider": built.get("provider", LOCAL_PROVIDER),
        **{k: built[k] for k in REMOTE_IDENTITY[1:] if k in built},
        **{k: built[k] for k in ("model", "normalize", "query_prefix", "document_prefix")}})
