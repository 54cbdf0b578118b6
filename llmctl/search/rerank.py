"""Cross-encoder reranking with sentence-transformers, and honest fallbacks.

Offline (the default), a hub model name is looked up in the local Hugging Face cache
only; when it is not there the reranker is *unavailable* and the caller keeps the
fused order and says so. A model whose classification head would be randomly
initialised (typically a bi-encoder path given as a cross-encoder) is refused: it
loads without error but ranks at random.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

from llmctl.config import EmbeddingConfig, RerankConfig
from llmctl.embedding.local import files_signature, set_offline, shared
from llmctl.errors import ConfigError


class RerankUnavailable(Exception):
    """The configured reranker cannot be used; the message says why."""


def _hub_cache() -> Path:
    import os

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def locate(name: str, offline: bool) -> Path:
    path = Path(name).expanduser()
    if path.exists():
        return path
    set_offline(offline)
    where = "in the local Hugging Face cache (rerank.offline is true)" if offline else "on the hub"
    if offline and not (_hub_cache() / f"models--{name.replace('/', '--')}").is_dir():
        # what snapshot_download would conclude, without importing huggingface_hub (~0.15 s)
        raise RerankUnavailable(f"reranker '{name}' was not found {where}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=offline, cache_dir=str(_hub_cache())))
    except Exception:  # noqa: BLE001 - any hub failure means: not available here
        raise RerankUnavailable(f"reranker '{name}' was not found {where}") from None


def check_cross_encoder(folder: Path, name: str) -> None:
    """Refuse models that would load with a random or non-relevance head."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        raise ConfigError(f"rerank.model '{name}': no readable config.json in {folder}") from None
    archs = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ConfigError(
            f"rerank.model '{name}' is not a cross-encoder (its config.json says {archs or 'nothing'}, "
            "no classification head): it would rank at random. Use a cross-encoder such as "
            "cross-encoder/ms-marco-MiniLM-L-6-v2, or set rerank.enabled: false"
        )
    labels = len(config.get("id2label") or {0: "score"})
    if labels != 1:
        raise ConfigError(
            f"rerank.model '{name}' has {labels} output labels; a reranker gives one relevance "
            "score per pair (num_labels=1)"
        )


class Reranker:
    def __init__(self, cfg: RerankConfig, embedding: EmbeddingConfig | None = None):
        """``embedding``: the cross-encoder runs on the embedding model's device, with as many CPU
        threads (None: the CPU, ``usable_cpus()`` threads)."""
        from llmctl.embedding.device import resolve
        from llmctl.embedding.device import threads as resolve_threads

        self.cfg = cfg
        self.device = resolve(embedding.device if embedding else "cpu")
        self.threads = resolve_threads(embedding.threads if embedding else 0)

    _unavailable: RerankUnavailable | None = None

    @cached_property
    def model(self):
        if self._unavailable is not None:  # looked up once per process, not once per query
            raise self._unavailable
        try:
            folder = locate(self.cfg.model, self.cfg.offline)
        except RerankUnavailable as exc:
            self._unavailable = exc
            raise
        check_cross_encoder(folder, self.cfg.model)
        from sentence_transformers import CrossEncoder
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        def load():
            from llmctl.embedding.device import torch_threads

            torch_threads(self.device, self.threads)
            return CrossEncoder(str(folder), device=self.device, local_files_only=True)

        try:  # loaded once per process: every Workspace's reranker of these files uses it
            return shared(("cross-encoder", str(folder.resolve()), files_signature(folder), self.device), load)
        except Exception as exc:  # noqa: BLE001
            raise RerankUnavailable(f"reranker '{self.cfg.model}' failed to load: {exc}") from None

    def score(self, question: str, texts: list[str]) -> list[float]:
        scores = self.model.predict([(question, t) for t in texts], batch_size=self.cfg.batch_size,
                                    show_progress_bar=False, convert_to_numpy=True)
        return [float(s) for s in scores]
