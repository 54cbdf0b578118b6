"""The torch-free query path: the ONNX copy of the model, Chroma's engine without its
client, and what a cold command imports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli import child_env

from llmctl import Workspace
from llmctl.index.vectors import Reader, VectorStore

HEAVY = ("torch", "sentence_transformers", "transformers", "chromadb", "openai", "bm25s", "scipy", "sklearn")
TEXTS = ["How many daily snapshots does the default retention policy keep?", "x", "word " * 400,
         "Résumé naïve café — 東京の天気は晴れです", "def f(x):\n    return x * 2\n", ""]
MIXED = [TEXTS[i % len(TEXTS)] + f" {i}" * (i % 7) for i in range(40)]  # lengths 1 to 256 tokens, unsorted


def imported(args: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run llmctl with -X importtime; the top-level packages it imported."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "llmctl", *args], capture_output=True, text=True,
                       env=child_env(env), timeout=300)
    names = {m.group(1).split(".")[0] for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", r.stderr, re.M)}
    return r, names


def test_onnx_vectors_match_sentence_transformers(embedder):
    assert embedder.onnx is not None and embedder.backend == "onnx"
    got = embedder._embed(TEXTS)
    want = embedder.model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert got.shape == want.shape
    assert float(np.min(np.sum(got * want, axis=1))) >= 0.9999
    meta = embedder.onnx.export.meta
    assert meta["parity_min_cosine"] >= 0.9999 and len(meta["sha256"]) == 64


def test_texts_of_mixed_lengths_run_in_padded_groups_and_come_back_in_order(embedder):
    from llmctl.embedding.device import PADDED_TOKENS, padded_groups

    together = embedder.onnx.encode(MIXED, True)
    alone = np.stack([embedder.onnx.encode([t], True)[0] for t in MIXED])
    assert np.allclose(together, alone, atol=1e-5)  # padding changes nothing and order is kept
    lengths = [3, 5, 8, 90, 100, 120, 200, 256, 300]  # token counts, in input order
    groups = padded_groups(lengths)
    assert groups == [[8, 7, 6], [5, 4, 3, 2, 1, 0]]  # longest first; 3 x 300 fits in 1024, 4 x 300 does not
    assert all(len(g) * lengths[g[0]] <= PADDED_TOKENS for g in groups)
    assert padded_groups([5000]) == [[0]]  # a text over the budget still runs, alone


def test_sentence_transformers_on_a_cpu_runs_the_same_groups_for_the_same_vectors(embedder):
    from llmctl.config import EmbeddingConfig
    from llmctl.embedding.local import Embedder

    torch_embedder = Embedder(EmbeddingConfig(backend="torch"))
    assert torch_embedder.backend == "sentence-transformers"
    grouped = torch_embedder._embed(MIXED)
    assert np.allclose(grouped, torch_embedder._encode(MIXED, 64), atol=1e-5)  # one call, batches of 64


def test_embedding_threads_reach_the_onnx_session(embedder):
    from llmctl.config import EmbeddingConfig
    from llmctl.embedding.device import usable_cpus
    from llmctl.embedding.local import Embedder

    options = embedder.onnx.session.get_session_options()
    assert embedder.cfg.threads == 0 and options.intra_op_num_threads == usable_cpus()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    three = Embedder(EmbeddingConfig(threads=3))
    assert three.onnx.session.get_session_options().intra_op_num_threads == 3
    assert three.onnx is not embedder.onnx  # a model loaded with other threads is another model


def test_usable_cpus_are_the_affinity_capped_by_a_container_quota(tmp_path):
    from llmctl.embedding.device import usable_cpus

    mine = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert usable_cpus(cpu_max) == mine  # no cgroup v2 file
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max) == mine
    cpu_max.write_text("50000 100000\n")  # --cpus 0.5
    assert usable_cpus(cpu_max) == 1
    cpu_max.write_text(f"{(mine + 7) * 100000} 100000\n")
    assert usable_cpus(cpu_max) == mine
    if mine > 1:
        cpu_max.write_text("150000 100000\n")  # --cpus 1.5: two threads
        assert usable_cpus(cpu_max) == min(mine, 2)


def fresh(sample_index, tmp_path) -> Path:
    """A copy of the sample index with no question remembered (each must load the model)."""
    data = tmp_path / "data"
    shutil.copytree(sample_index, data, ignore=shutil.ignore_patterns("queries.sqlite*"))
    return data


def test_a_cold_query_imports_neither_torch_nor_chroma_client(sample_index, tmp_path):
    r, names = imported(["--data-dir", str(fresh(sample_index, tmp_path)), "query", "--no-llm", "--json",
                         "How many daily snapshots are kept?"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["hits"][0]["source"].endswith("retention-policies.md")
    assert names.isdisjoint(HEAVY), sorted(names & set(HEAVY))
    assert {"onnxruntime", "tokenizers", "chromadb_rust_bindings"} <= names


def test_an_exact_cache_hit_imports_no_openai(tmp_path, sample_index, fake_llm):
    import shutil

    import yaml

    data = tmp_path / "data"
    shutil.copytree(sample_index, data)
    cfg = tmp_path / "llm.yaml"
    cfg.write_text(yaml.safe_dump({"rerank": {"enabled": False}, "llm": {"providers": [{
        "name": "local", "base_url": fake_llm.base_url, "model": "fake-model", "context_window": 4096,
        "timeout": 5, "retries": 0}]}}))
    args = ["--config", str(cfg), "--data-dir", str(data), "query", "--json", "How many daily snapshots are kept?"]
    first, names = imported(args)
    assert first.returncode == 0 and "openai" in names, first.stderr[-2000:]
    second, names = imported(args)
    assert second.returncode == 0 and json.loads(second.stdout)["cache"] == "exact"
    assert names.isdisjoint(HEAVY), sorted(names & set(HEAVY))
    assert len(fake_llm.requests) == 1


def test_rust_reader_returns_what_the_chroma_client_returns(sample_index, embedder):
    from llmctl.datadir import DataDir

    folder = DataDir(sample_index).chroma
    reader, client = Reader(folder, "llmctl_chunks"), VectorStore.embedded(folder)
    assert reader.count() == client.count() > 0
    vec = embedder.embed_query("restore a snapshot to another machine")
    docs = [m["doc_id"] for m in client.collection.get(include=["metadatas"], limit=3)["metadatas"]]
    for where in (None, {"doc_id": {"$in": docs}}):
        a, b = reader.query(vec, 10, where), client.query(vec, 10, where)
        assert [i for i, _ in a] == [i for i, _ in b]
        assert np.allclose([s for _, s in a], [s for _, s in b], atol=1e-6)


@pytest.mark.slow
def test_a_missing_onnx_copy_falls_back_to_torch_with_a_note(tmp_path, sample_index):
    args = ["--data-dir", str(sample_index), "query", "--no-llm", "--json", "How many daily snapshots are kept?"]
    normal = json.loads(subprocess.run([sys.executable, "-m", "llmctl", *args], capture_output=True, text=True,
                                       env=child_env(), check=True).stdout)
    args[1] = str(fresh(sample_index, tmp_path))
    r, names = imported(args, {"LLMCTL_CACHE_DIR": str(tmp_path / "empty-cache")})
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert "torch" in names and any("ONNX copy" in w and "llmctl ingest" in w for w in doc["warnings"])
    assert [h["id"] for h in doc["hits"]] == [h["id"] for h in normal["hits"]]


def test_a_server_warming_up_says_so_too(tmp_path, sample_index, monkeypatch):
    """serve and mcp print what warm() returns on stderr at start (they printed nothing)."""
    monkeypatch.setenv("LLMCTL_CACHE_DIR", str(tmp_path / "empty-cache"))
    with Workspace(data_dir=fresh(sample_index, tmp_path), **{"rerank.enabled": False}) as ws:
        [note] = ws.warm()
        assert "ONNX copy" in note and "llmctl ingest" in note


@pytest.mark.slow
def test_a_model_that_cannot_be_exported_is_embedded_by_sentence_transformers(tmp_path, corpus, embedder):
    """Max pooling has no ONNX export here: ingest says so once and embeds with torch."""
    model = tmp_path / "max-pooled-minilm"
    for f in embedder.folder.rglob("*"):
        if f.is_file():
            dest = model / f.relative_to(embedder.folder)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(f, dest)
    pooling = model / "1_Pooling" / "config.json"
    cfg = json.loads(pooling.read_text()) | {"pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": True}
    pooling.unlink()
    pooling.write_text(json.dumps(cfg))
    with Workspace(data_dir=tmp_path / "data", **{"embedding.model": str(model), "rerank.enabled": False}) as ws:
        report = ws.ingest([corpus / "guides"])
        assert report.embedding["backend"] == "sentence-transformers"
        assert "pooling" in report.embedding["note"] and "max" in report.embedding["note"]
        assert ws.status().index["embedded_with"]["backend"] == "sentence-transformers"
        hits = ws.search("How many daily snapshots does the default retention policy keep?", k=1)
        assert hits[0].source.endswith("retention-policies.md")
        assert ws.retriever.embedder.backend == "sentence-transformers" and not ws.retriever.embedder.note

