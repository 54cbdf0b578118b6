"""Trust for the config llmctl finds by itself (``./llmctl.yaml``), after direnv's ``allow``.

A config named by the user (``--config FILE``, ``$LLMCTL_CONFIG``, a path given to the Python
API) is trusted. One that llmctl *discovers* in the working directory came with whatever
folder the user is in, e.g. a repository they just cloned: it may tune retrieval, chunking,
ingest filters and the like, but a setting that sends data or secrets somewhere (see
``risky_settings``) stops llmctl before any request until ``llmctl trust`` records the
file's sha256 in the user's trust store. A changed file is untrusted again.

The store is ``$XDG_CONFIG_HOME/llmctl/trusted.json`` (default ``~/.config``; ``%APPDATA%``
on Windows): one entry per file, keyed by its resolved path, as direnv keys by path and
content.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl.config import redacted_url
from llmctl.errors import ConfigError, InputError

if TYPE_CHECKING:
    from llmctl.config import Config

STORE_VERSION = 1


@dataclass
class TrustEntry:
    path: str
    sha256: str
    trusted_at: str
    state: str = "trusted"  # trusted | changed (the file differs from what was trusted) | missing

    def to_dict(self) -> dict:
        return asdict(self)


def store_path() -> Path:
    """Where trusted files are recorded: ``$XDG_CONFIG_HOME/llmctl/trusted.json``."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec ignores a relative value
        root = Path(xdg)
    elif os.name == "nt" and os.environ.get("APPDATA"):
        root = Path(os.environ["APPDATA"])
    else:
        root = Path.home() / ".config"
    return root / "llmctl" / "trusted.json"


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _key(path: Path) -> str:
    """The file as named, not where a symlink leads: a repository's ``llmctl.yaml`` linked to a
    config you trusted elsewhere is another file, and untrusted."""
    import os

    return os.path.normpath(Path(path).expanduser().absolute())


def _load() -> dict[str, dict]:
    store = store_path()
    try:
        doc = json.loads(store.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read the trust store {store} ({exc}): fix or delete it, "
                          "then trust your configs again") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, dict):
        raise ConfigError(f"the trust store {store} is not llmctl's: fix or delete it, then trust your configs again")
    return {k: v for k, v in files.items() if isinstance(v, dict) and isinstance(v.get("sha256"), str)}


def _save(files: dict[str, dict]) -> None:
    """Written whole to a temporary file, then renamed over the store: never half-written."""
    store = store_path()
    store.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".trusted-", suffix=".json", dir=store.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"version": STORE_VERSION, "files": files}, out, indent=2, sort_keys=True)
            out.write("\n")
        os.replace(tmp, store)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path} does not exist: give the config file to trust") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


def target(path: Path | None) -> Path:
    """The file ``llmctl trust`` acts on: the one given, else the config llmctl discovers here."""
    from llmctl.config import DEFAULT_FILE_NAME, discovered_config_file

    if path is not None:
        return path
    found = discovered_config_file()
    if found is None:
        raise InputError(f"no ./{DEFAULT_FILE_NAME} in this folder: give the file, "
                         "e.g. llmctl trust path/to/llmctl.yaml")
    return found


def trust(path: Path | None = None) -> TrustEntry:
    """Record the file's current sha256 as trusted (``path`` default: the discovered config)."""
    path = target(path)
    raw = _read(path)
    files = _load()
    entry = TrustEntry(_key(path), digest(raw), dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    files[entry.path] = {"sha256": entry.sha256, "trusted_at": entry.trusted_at}
    _save(files)
    return entry


def revoke(path: Path | None = None) -> TrustEntry:
    """Forget the file (it may no longer exist). The entry, state ``revoked``, or ``untrusted``
    when it was not trusted (nothing to do: revoking twice is no error)."""
    path = target(path)
    files = _load()
    old = files.pop(_key(path), None)
    if old is None:
        return TrustEntry(_key(path), "", "", "untrusted")
    _save(files)
    return TrustEntry(_key(path), old["sha256"], str(old.get("trusted_at", "")), "revoked")


def entries() -> list[TrustEntry]:
    """Every trusted file, with whether it is still the same (trusted), changed, or missing."""
    out = []
    for key, v in sorted(_load().items()):
        try:
            state = "trusted" if digest(Path(key).read_bytes()) == v["sha256"] else "changed"
        except OSError:
            state = "missing"
        out.append(TrustEntry(key, v["sha256"], str(v.get("trusted_at", "")), state))
    return out


def state_of(path: Path, raw: bytes) -> str:
    """trusted, changed (trusted once, different now) or untrusted."""
    entry = _load().get(_key(path))
    if entry is None:
        return "untrusted"
    return "trusted" if entry["sha256"] == digest(raw) else "changed"


def require_trusted(path: Path, raw: bytes, data: dict[str, Any], cfg: Config, overridden: set[str],
                    part: str = "") -> None:
    """Raise ConfigError when a discovered config (or an eval suite's ``config:`` section,
    ``part``) sets something that sends data or secrets elsewhere and the file's exact content
    (``raw``) is not trusted. ``data`` is the file's own settings; keys in ``overridden`` (set by
    flags or LLMCTL_* variables) are the user's, not the file's."""
    reasons = risky_settings(data, cfg, overridden)
    if not reasons:
        return
    state = state_of(path, raw)
    if state == "trusted":
        return
    here = path.resolve().parent == Path.cwd().resolve()
    shown = f"./{path.name}" if here else str(path)
    command = "llmctl trust" if here and path.name == "llmctl.yaml" else f"llmctl trust {path}"
    what = "has changed since you trusted it" if state == "changed" else "is not trusted"
    raise ConfigError(f"{shown} {what} and {part}sets {'; '.join(reasons)}; review it, then run: {command}")


def _file_sets(data: dict[str, Any], key: str, overridden: set[str]) -> bool:
    """The config file itself sets the dotted ``key`` (and no flag or variable replaced it)."""
    if any(key == o or key.startswith(o + ".") for o in overridden):
        return False
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def risky_settings(data: dict[str, Any], cfg: Config, overridden: set[str] = frozenset()) -> list[str]:
    """What the file sets that sends data or secrets out of this machine, or writes or reads
    beyond its folder: one phrase each, naming the key and where it goes. ``cfg`` is the
    validated config (the values in effect); ``data`` says which of them the file chose."""
    def sets(key: str) -> bool:
        return _file_sets(data, key, overridden)

    out = []
    if sets("llm.providers") and cfg.llm.providers:
        urls = list(dict.fromkeys(redacted_url(p.base_url) for p in cfg.llm.providers))
        keys = [f"${p.api_key_env}" for p in cfg.llm.providers if p.api_key_env]
        out.append(f"llm.providers (sends questions and retrieved text to {', '.join(urls)}"
                   f"{' with ' + ', '.join(dict.fromkeys(keys)) if keys else ''})")
    def endpoint(section: str, names: tuple[str, ...], sends: str, where: str, secret: str | None) -> None:
        """One phrase for the keys of ``section`` the file sets among ``names``: what goes where."""
        keys = [f"{section}.{k}" for k in names if sets(f"{section}.{k}")]
        if keys:
            out.append(f"{', '.join(keys)} ({sends} to {where}{f' with ${secret}' if secret else ''})")

    emb = cfg.embedding
    if emb.provider == "openai":
        endpoint("embedding", ("provider", "base_url", "api_key_env"), "sends documents and questions",
                 redacted_url(str(emb.base_url)), emb.api_key_env)
    elif sets("embedding.offline") and not emb.offline:
        out.append(f"embedding.offline: false (downloads {emb.model} from the Hugging Face Hub)")
    if sets("rerank.offline") and not cfg.rerank.offline and cfg.rerank.enabled:
        out.append(f"rerank.offline: false (downloads {cfg.rerank.model} from the Hugging Face Hub)")
    vs = cfg.vector_store
    if vs.mode == "server":
        endpoint("vector_store", ("mode", "host", "port", "ssl", "token_env", "auth_header", "collection"),
                 "sends chunks and vectors", f"the Chroma server {'https' if vs.ssl else 'http'}://{vs.host}:{vs.port}",
                 vs.token_env)
    st = cfg.state
    if st.backend == "redis":
        endpoint("state", ("backend", "url", "password_env"), "sends questions, cached answers and spend",
                 redacted_url(st.url), st.password_env)
    if sets("telemetry.otlp_endpoint") and cfg.telemetry.otlp_endpoint:
        out.append(f"telemetry.otlp_endpoint (sends each query's timings, and with llm.store_prompts its question, to "
                   f"{redacted_url(cfg.telemetry.otlp_endpoint)})")
    for key, what in (("allowed_origins", "lets web pages from {} read the index through llmctl serve"),
                      ("allowed_hosts", "lets requests addressed to {} past llmctl serve's DNS-rebinding guard")):
        values = getattr(cfg.serve, key)
        if sets(f"serve.{key}") and values:
            out.append(f"serve.{key} ({what.format(', '.join(values))})")
    if not any(o == "data_dir" for o in overridden):  # the file's data_dir, or the default .llmctl beside it
        folder = Path(cfg.base_dir).resolve()
        if not Path(cfg.data_dir).resolve().is_relative_to(folder):
            what = "data_dir" if sets("data_dir") else "data_dir by default (.llmctl beside it is a symlink)"
            out.append(f"{what} (writes the index outside the config's folder, to {cfg.data_dir})")
    if sets("llm.system_prompt") and cfg.llm.system_prompt:
        out.append("llm.system_prompt (replaces the instructions your model is sent with every question)")
    if sets("ingest.follow_symlinks") and cfg.ingest.follow_symlinks:
        out.append("ingest.follow_symlinks: true (indexes the files symlinks point to, anywhere on this machine)")
    return out

