from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmctl.config import Config, load_config
from llmctl.embedding.local import Embedder

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` run once for the whole test run: the first xdist worker to ask builds it
    under a lock, the others wait and share the folder (read it, never write it). A build that
    died half-way (no ``.complete`` marker beside it) is thrown away and made again."""
    import fcntl
    import os

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, marker = root / f"shared-{name}", root / f"shared-{name}.complete"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            marker.touch()
    return folder


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """llmctl's model cache (the ONNX copy of the embedding model) for this test run: made
    once by the first ingest, under llmctl's own lock, and shared by the xdist workers and
    the llmctl subprocesses. Never the user's ~/.cache."""
    import os

    folder = tmp_path_factory.getbasetemp().parent / "llmctl-model-cache"
    os.environ["LLMCTL_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path, model_cache, tmp_path_factory):
    """No user config or LLMCTL_* variable leaks into a test; cwd is a fresh folder; the trust
    store (`llmctl trust`, under $XDG_CONFIG_HOME) is this test's own, for its subprocesses too."""
    import os

    for name in list(os.environ):
        if name.startswith("LLMCTL_") and name != "LLMCTL_CACHE_DIR":
            monkeypatch.delenv(name)
    monkeypatch.setenv("LLMCTL_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def embedder(model_cache) -> Embedder:
    """The real default model (all-MiniLM-L6-v2 from its PyPI package), embedding through
    its ONNX copy (made on first use) as ingest does; ``.model`` is the torch original."""
    return Embedder(Config().embedding, export=True)


@pytest.fixture
def make_config(tmp_path):
    def make(**overrides) -> Config:
        overrides.setdefault("data_dir", str(tmp_path / "data"))
        return load_config(None, overrides)

    return make


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A private copy of sample_data that a test may change."""
    dest = tmp_path / "docs"
    shutil.copytree(SAMPLE, dest)
    return dest


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory, embedder) -> Path:
    """sample_data ingested once for the test run (sources read 'sample_data/...'), a copy per worker."""
    from llmctl.datadir import DataDir
    from llmctl.ingest.pipeline import ingest

    def build(data: Path) -> None:
        cfg = load_config(None, {"data_dir": str(data)})
        cfg.base_dir = REPO
        ingest([SAMPLE], cfg, DataDir(data), embedder=embedder)

    data = tmp_path_factory.mktemp("sample-index")  # this worker's copy: tests write its ledger and cache
    shutil.copytree(built_once(tmp_path_factory, "sample-index", build), data, dirs_exist_ok=True)
    return data


@pytest.fixture
def data(tmp_path, sample_index) -> Path:
    """A private copy of the sample index: this test's ledger and cache start empty."""
    dest = tmp_path / "data"
    shutil.copytree(sample_index, dest, ignore=shutil.ignore_patterns("ledger.sqlite*", "cache.sqlite*"))
    return dest


@pytest.fixture(scope="session")
def docs_template(tmp_path_factory, model_cache) -> tuple[Path, Path]:
    """(docs, data): sample_data copied once for the test run, ingested as a user's own folder is
    (absolute paths as sources, a Workspace with reranking off). Shared by the workers: read the
    docs, and use the index only through ``docs_data``."""
    from llmctl import Workspace

    def build(root: Path) -> None:
        shutil.copytree(SAMPLE, root / "docs")
        with Workspace(data_dir=root / "data", **{"rerank.enabled": False}) as ws:
            ws.ingest([root / "docs"])

    root = built_once(tmp_path_factory, "docs-index", build)
    return root / "docs", root / "data"


@pytest.fixture
def docs_data(tmp_path, docs_template) -> Path:
    """A private copy of the index of ``corpus``-like documents that no test changes (they are
    the session's: read them, never write them): for tests that ingested an unchanged ``corpus``."""
    dest = tmp_path / "data"
    shutil.copytree(docs_template[1], dest, ignore=shutil.ignore_patterns("ledger.sqlite*", "cache.sqlite*"))
    return dest


@pytest.fixture
def fake_llm():
    from openai_server import FakeOpenAI

    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def faq_cross_encoder(tmp_path_factory, embedder, sample_index) -> Path:
    """A real cross-encoder, built from the MiniLM backbone and trained for a few seconds.

    It learns one easy, known preference — passages from the FAQ page are relevant — so
    tests can assert that reranking follows the model and not the fused order.
    """
    return built_once(tmp_path_factory, "faq-cross-encoder",
                      lambda out: _train_faq_cross_encoder(out, embedder, sample_index))


def _train_faq_cross_encoder(out: Path, embedder: Embedder, sample_index: Path) -> None:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from llmctl.index.manifest import Manifest

    torch.manual_seed(0)
    m = Manifest(sample_index / "manifest.sqlite")
    rows = [(c["embed_text"], c["source"]) for c in m.get_chunks(m.keyword_ids()).values()]
    m.close()
    queries = ["How do I restore files?", "What does it cost?", "Is Windows supported?",
               "How are backups encrypted?"]
    pairs = [(q, text, 1.0 if src.endswith("faq.html") else 0.0) for q in queries for text, src in rows]
    # every positive, and two negatives for each: the preference is as easy to learn, in a third of the steps
    positives = [p for p in pairs if p[2]]
    negatives = [pairs[i] for i in torch.randperm(len(pairs)).tolist() if not pairs[i][2]][:2 * len(positives)]
    pairs = positives + negatives
    tok = AutoTokenizer.from_pretrained(str(embedder.folder))
    model = BertForSequenceClassification.from_pretrained(str(embedder.folder), num_labels=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    pos_weight = torch.tensor([len(pairs) / max(1, sum(p[2] for p in pairs))])
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    model.train()
    order = torch.randperm(len(pairs)).tolist()
    for start in range(0, len(order), 16):
        batch = [pairs[i] for i in order[start:start + 16]]
        enc = tok([b[0] for b in batch], [b[1] for b in batch], truncation=True, max_length=96,
                  padding=True, return_tensors="pt")
        loss = loss_fn(model(**enc).logits.squeeze(-1), torch.tensor([b[2] for b in batch]))
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    tok.save_pretrained(out)


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real `chroma run` on 127.0.0.1 (random port, temp dir); dies with the test process."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("chroma")
    folder = tmp_path_factory.mktemp("chroma-server")

    def die_with_parent():  # Linux: the server gets SIGTERM if pytest is killed
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)

    proc = subprocess.Popen([str(exe), "run", "--path", str(folder), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent,
                            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("chroma run did not start") from None
            time.sleep(0.2)
    yield port
    proc.terminate()
    proc.wait(10)



def pytest_collection_modifyitems(items):
    """Each of `make test`'s workers starts on its share of the slow tests (processes, real servers,
    minutes of embedding), and the short tests fill in after them: a long test that started last
    would hold the whole run, since --dist worksteal steals queued tests, never a running one. It
    sends the list to the workers in contiguous parts of about equal length, first to last."""
    import os

    n = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))  # every worker sorts the same
    slow = [item for item in items if item.get_closest_marker("slow")]
    fast = [item for item in items if not item.get_closest_marker("slow")]
    out: list = []
    for w in range(n):
        mine = slow[w::n]
        take = len(fast) if w == n - 1 else max(0, (len(items) * (w + 1)) // n - len(out) - len(mine))
        out += mine + fast[:take]
        fast = fast[take:]
    items[:] = out


def pytest_unconfigure(config):
    """At exit the interpreter runs the cyclic garbage collector over everything the run made
    (models, indexes, servers' buffers): 5-20 s of each xdist worker at the end of a run, after
    the last test. Freezing those objects skips that collection; the process is ending anyway,
    and its memory, files and sockets go back to the system with it."""
    import gc

    gc.freeze()
