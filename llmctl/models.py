"""``llmctl models pull``: the one place llmctl downloads anything from the Hugging Face Hub.

Everything else stays offline (``rerank.offline`` / ``embedding.offline`` default to true and
only read the local Hugging Face cache). ``pull`` fetches a repo into that cache
(``snapshot_download``, honouring ``HF_ENDPOINT``, ``HF_HOME`` / ``HF_HUB_CACHE``), checks
every file against the hash the hub named it by (the sha256 of an LFS file, the git blob id of
a small one), loads the model from disk with ``local_files_only``, and reports its folder, size
and a sha256 over its files. A download that failed or does not verify leaves no snapshot
behind, so ``llmctl status`` keeps saying the reranker is unavailable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from llmctl.errors import InputError, ProviderError, printable

DEFAULT_ENDPOINT = "https://huggingface.co"


def pull_hint(model: str) -> str:
    """The one command that makes ``model`` available offline."""
    return f"llmctl models pull {model}"


@dataclass
class PullResult:
    name: str
    kind: str  # "cross-encoder" or "sentence-transformer"
    folder: str
    commit: str
    files: int
    size_bytes: int
    sha256: str
    reranker_ok: bool  # a cross-encoder with one relevance score (usable as rerank.model)
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def hub_cache() -> Path:
    from llmctl.search.rerank import _hub_cache

    return _hub_cache()


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def tree_digest(folder: Path) -> tuple[int, int, str]:
    """(files, bytes, sha256) over a folder: each file in sorted relative-path order as its
    path (POSIX), a NUL byte, its size as 8 bytes big-endian, then its contents."""
    paths = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.relative_to(folder).as_posix())
    h, total = hashlib.sha256(), 0
    for p in paths:
        size = p.stat().st_size
        h.update(p.relative_to(folder).as_posix().encode() + b"\0" + size.to_bytes(8, "big"))
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        total += size
    return len(paths), total, h.hexdigest()


def _verify_blobs(folder: Path) -> None:
    """Each cached file against the name the hub gave its blob: sha256 (LFS) or git blob sha1."""
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(folder).as_posix()
        blob = p.resolve().name
        size = p.stat().st_size
        if re.fullmatch(r"[0-9a-f]{64}", blob):
            h = hashlib.sha256()
        elif re.fullmatch(r"[0-9a-f]{40}", blob):
            h = hashlib.sha1(f"blob {size}\0".encode())  # noqa: S324 - git's object id, not security
        else:
            continue  # no hash to compare with (a hub that names blobs otherwise)
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != blob:
            p.resolve().unlink()  # else the next pull finds a blob of that name and keeps it
            raise ProviderError(f"models pull: {rel} is corrupt (its content does not match the hub's hash "
                                f"{blob[:12]}...); run the command again")


def _drop_snapshot(cache: Path, name: str) -> None:
    """Forget a partial snapshot (blobs stay, so a retry resumes) so nothing looks installed."""
    repo = cache / f"models--{name.replace('/', '--')}"
    ref = repo / "refs" / "main"
    try:
        commit = ref.read_text().strip()
    except OSError:
        return
    if re.fullmatch(r"[0-9a-f]{40}", commit):
        shutil.rmtree(repo / "snapshots" / commit, ignore_errors=True)
    ref.unlink(missing_ok=True)


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status behind a hub error (its cause carries the response), if there was one."""
    seen = exc
    for _ in range(4):
        seen = seen.__cause__ or seen.__context__
        if seen is None:
            return None
        status = getattr(getattr(seen, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
    return None


def _file_of(exc: BaseException) -> str | None:
    """The repo file a failed transfer was fetching: from the request's URL, else the message."""
    for e in (exc, exc.__cause__, exc.__context__):
        try:
            url = str(e.request.url)  # httpx errors carry their request (a RuntimeError when not)
        except Exception:  # noqa: BLE001
            continue
        m = re.search(r"/resolve/[^/]+/([^?#]+)", url)
        if m:
            from urllib.parse import unquote

            return unquote(m.group(1))
    m = re.search(r"\(\(([^)]+)\)\)|resolve/[^/\s]+/([^\s'\"]+)", str(exc))
    return (m.group(1) or m.group(2)) if m else None


def _download(name: str, cache: Path, hub: str, progress: bool) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub import errors as hf_errors
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    # An explicit download: the offline switches other commands set (HF_HUB_OFFLINE, read when
    # huggingface_hub is imported) do not apply to it; they are put back afterwards.
    saved_env = {k: os.environ.pop(k, None) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    saved_offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    (enable_progress_bars if progress else disable_progress_bars)()
    hub_log = logging.getLogger("huggingface_hub")
    saved_level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its "retrying" warnings: the outcome is ours to report, in one line
    try:
        return Path(_interruptible(lambda: snapshot_download(name, cache_dir=str(cache), endpoint=hub,
                                                             revision="main")))
    except hf_errors.RepositoryNotFoundError:
        raise InputError(f"models pull: no model '{name}' on {hub} (or it is private: set HF_TOKEN)") from None
    except hf_errors.GatedRepoError:
        raise ProviderError(f"models pull: '{name}' on {hub} is gated: accept its terms on the hub "
                            "and set HF_TOKEN") from None
    except hf_errors.RevisionNotFoundError:
        raise InputError(f"models pull: '{name}' has no 'main' revision on {hub}") from None
    except hf_errors.LocalEntryNotFoundError as exc:
        # the hub did not answer usefully and nothing is cached: no answer at all, or an HTTP error
        status = _status_of(exc)
        said = f"answered HTTP {status}" if status else "is unreachable"
        raise ProviderError(f"models pull: the Hugging Face hub at {hub} {said}; check the "
                            "network or HF_ENDPOINT, and run the command again") from None
    except Exception as exc:  # noqa: BLE001 - a transfer that broke off, a file of the wrong size
        what = " ".join(str(exc).split())[:200] or type(exc).__name__
        file = _file_of(exc)
        if "onsistency check failed" in what or "incomplete" in what.lower() or "closed" in what.lower():
            raise ProviderError(f"models pull: {file or 'a file'} of '{name}' arrived truncated ({what}); "
                                "nothing was installed, run the command again") from None
        if isinstance(exc, OSError) and not type(exc).__module__.startswith(("httpx", "huggingface_hub")):
            raise InputError(f"models pull: cannot write the Hugging Face cache {cache}: {what}") from None
        raise ProviderError(f"models pull: downloading {file or name} from {hub} failed: {what}") from None
    finally:
        hub_log.setLevel(saved_level)
        constants.HF_HUB_OFFLINE = saved_offline
        for k, v in saved_env.items():
            if v is not None:
                os.environ[k] = v


STOP_WAIT = 60  # seconds an interrupted pull waits for its transfers to end (at once, unless starved)


def _interruptible(download):
    """Run ``download`` in a thread and wait for it here, where Ctrl-C lands at once.

    snapshot_download fetches files in a pool of threads and, interrupted, waits for every
    transfer to finish (a large model: minutes). Here the interrupt closes the hub library's
    HTTP session, so each transfer fails at its next read, and goes on up at once."""
    from huggingface_hub.utils import close_session

    outcome: dict = {}
    done = threading.Event()  # not worker.join(): a join cut by Ctrl-C marks the thread stopped
    # (CPython 3.11), and every later join returns at once while its transfers still write

    def run() -> None:
        try:
            outcome["value"] = download()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = exc
        finally:
            done.set()  # after snapshot_download's own pool has ended: nothing writes after this

    worker = threading.Thread(target=run, name="llmctl-models-pull", daemon=True)
    worker.start()
    try:
        while not done.wait(0.1):
            pass
    except KeyboardInterrupt:
        close_session()
        # The transfers end at their next read. Wait for them all (a second Ctrl-C stops waiting):
        # one still running would write its file into the snapshot after the caller dropped it.
        done.wait(STOP_WAIT)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _load(folder: Path, name: str) -> tuple[str, bool, str | None]:
    """Load from disk only; (kind, usable as a reranker, note)."""
    from llmctl.embedding.local import set_offline
    from llmctl.errors import ConfigError
    from llmctl.search.rerank import check_cross_encoder

    try:
        archs = json.loads((folder / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        archs = []
    classifier = any(str(a).endswith("ForSequenceClassification") for a in archs)
    set_offline(True)  # loading never touches the network
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        if classifier or "cross-encoder" in name.lower():
            from sentence_transformers import CrossEncoder

            CrossEncoder(str(folder), device="cpu", local_files_only=True)
            kind = "cross-encoder"
        else:
            from sentence_transformers import SentenceTransformer

            SentenceTransformer(str(folder), device="cpu", local_files_only=True)
            kind = "sentence-transformer"
    except Exception as exc:  # noqa: BLE001
        what = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ProviderError(f"models pull: '{name}' downloaded but does not load ({what}); "
                            "nothing was installed") from None
    if kind != "cross-encoder":
        return kind, False, "not a cross-encoder: usable as an embedding model, not as rerank.model"
    try:
        check_cross_encoder(folder, name)
    except ConfigError as exc:
        return kind, False, str(exc)
    return kind, True, None


def pull(name: str, progress: bool | None = None) -> PullResult:
    """Download ``name`` (a hub repo id) into the local Hugging Face cache, verify and load it."""
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name) or ".." in name:
        raise InputError(f"models pull: '{printable(name)}' is not a Hugging Face repo id (owner/name)")
    cache, hub = hub_cache(), endpoint()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"models pull: cannot create the Hugging Face cache {cache}: {exc.strerror}") from None
    try:  # whatever stops it (an error, a hub that refuses one file, Ctrl-C): no snapshot looks installed
        folder = _download(name, cache, hub, sys.stderr.isatty() if progress is None else progress)
        _verify_blobs(folder)
        kind, ok, note = _load(folder, name)
    except BaseException:
        _drop_snapshot(cache, name)
        raise
    files, size, digest = tree_digest(folder)
    return PullResult(name, kind, str(folder), folder.name, files, size, digest, ok, note)
