"""Malformed configs and suites, damaged manifest / BM25 / vector / ledger / cache files, through
the CLI: one line naming the file and the fix, the documented exit code, and the file untouched."""

import json
import shutil

import pytest
import yaml
from cli import assert_clean_error, invoke
from conftest import REPO
from consistency import assert_consistent

SUITE = REPO / "configs" / "sample-suite.yaml"



BAD_CONFIGS = {
    "malformed YAML": (b"retrieval:\n  k: [5\n", ["line 3", "YAML"]),
    "truncated mid-file": (b"retrieval:\n  k: 5\nllm:\n  providers:\n    - name: main\n      base_url", ["llm"]),
    "wrong type": (b"retrieval:\n  k: many\n", ["retrieval.k"]),
    "unknown key": (b"retreival:\n  k: 5\n", ["retreival", "retrieval"]),
    "list, not a mapping": (b"- retrieval\n- k\n", ["mapping"]),
    "binary garbage": (b"\x00\xff\xfe\x89PNG\x00\x01", []),
    "tab-indented": (b"retrieval:\n\tk: 5\n", []),
}


@pytest.mark.parametrize("name", BAD_CONFIGS)
def test_bad_config_files(tmp_path, name):
    text, words = BAD_CONFIGS[name]
    path = tmp_path / "llmctl.yaml"
    path.write_bytes(text)
    r = invoke("--config", path, "query", "--no-llm", "anything")
    assert_clean_error(r, 3, "llmctl.yaml", *words)
    assert path.read_bytes() == text


BAD_SUITES = {
    "malformed YAML": ("name: x\ncases: [\n", ["suite.yaml"]),
    "truncated": ("name: x\ncases:\n  - id: a\n    query: restore\n    expected: [guides/restore", ["suite.yaml"]),
    "cases not a list": ("name: x\ncases: 5\n", ["cases"]),
    "no cases": ("name: x\ncases: []\n", ["no cases"]),
    "bad threshold": ("name: x\nthresholds:\n  ndcg@5: 7\ncases:\n  - id: a\n    query: q\n", ["ndcg@5"]),
    # before any answer is paid for (it was a traceback after the answers)
    "bad regex": ("name: x\ncases:\n  - id: a\n    query: q\n    answer: {regex: ['(unclosed']}\n",
                  ["answer.regex", "(unclosed", "not a valid regular expression"]),
}


@pytest.mark.parametrize("name", BAD_SUITES)
def test_bad_suite_files(tmp_path, data, name):
    text, words = BAD_SUITES[name]
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    r = invoke("--data-dir", data, "eval", "-q", path, cwd=REPO)
    assert_clean_error(r, 3, *words)


def test_broken_cases_file_and_baseline(tmp_path, data):
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"id": "a", "query": "restore a file"}\n{"id": "b", "query": \n')
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "x", "cases_file": str(cases)}))
    assert_clean_error(invoke("--data-dir", data, "eval", "-q", suite, cwd=REPO), 3, "cases.jsonl", "line 2")
    baseline = tmp_path / "base.json"
    baseline.write_text('{"metrics": {"hybrid": ')
    r = invoke("--data-dir", data, "eval", "-q", SUITE, "--baseline", baseline, cwd=REPO)
    assert_clean_error(r, 3, "base.json")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_manifest_is_explained_and_left_untouched(tmp_path, data, damage):
    manifest = data / "manifest.sqlite"
    raw = manifest.read_bytes()
    manifest.write_bytes(b"this is not a database" * 100 if damage == "garbage" else raw[: len(raw) // 2])
    for suffix in ("-wal", "-shm"):
        (data / f"manifest.sqlite{suffix}").unlink(missing_ok=True)
    before = manifest.read_bytes()
    for args in (["query", "--no-llm", "restore"], ["ingest", "-q", REPO / "sample_data"],
                 ["eval", "-q", SUITE]):
        r = invoke("--data-dir", data, *args, cwd=REPO)
        assert_clean_error(r, 5, "manifest.sqlite")
        assert manifest.read_bytes() == before


def test_damaged_bm25_and_vectors_are_repaired_by_ingest(tmp_path, data):
    ask = ("--data-dir", data, "query", "--no-llm", "--json", "How do I restore a single file?")
    good = json.loads(invoke(*ask, cwd=REPO).stdout)["hits"]
    current = (data / "bm25" / "CURRENT").read_text().strip()
    (data / "bm25" / current / "ids.json").write_text("[1, 2")
    assert_clean_error(invoke(*ask, cwd=REPO), 5, "BM25", "llmctl ingest")
    r = invoke("--data-dir", data, "ingest", "-q", "sample_data", cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert json.loads(invoke(*ask, cwd=REPO).stdout)["hits"] == good

    shutil.rmtree(data / "chroma")  # the vectors are gone, the manifest still lists every chunk
    assert_clean_error(invoke(*ask, cwd=REPO), 5, "--repair")
    assert not (data / "chroma").exists()  # a reader says so, and writes nothing
    shown = invoke("--data-dir", data, "status").stdout
    assert "vectors: 0 for 70 chunk(s)" in shown and "--repair" in shown, shown
    r = invoke("--data-dir", data, "ingest", "-q", "--repair", "sample_data", cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert_consistent(data)
    hits = json.loads(invoke(*ask, cwd=REPO).stdout)["hits"]
    assert [h["location"] for h in hits] == [h["location"] for h in good]


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_unreadable_vector_store_files_are_one_line_and_repair_makes_them_again(tmp_path, data, damage):
    ask = ("--data-dir", data, "query", "--no-llm", "--json", "How do I restore a single file?")
    good = json.loads(invoke(*ask, cwd=REPO).stdout)["hits"]
    store = data / "chroma" / "chroma.sqlite3"
    if damage == "truncated":
        with store.open("r+b") as f:
            f.truncate(4096)
    else:
        store.write_bytes(b"not a database" * 100)
    assert_clean_error(invoke(*ask, cwd=REPO), 5, "vector store", "cannot be read", "--repair")
    status = json.loads(invoke("--data-dir", data, "status", "--json").stdout)["index"]
    assert status["vectors"] is None and "--repair" in status["vectors_error"]
    r = invoke("--data-dir", data, "ingest", "-q", "--repair", "sample_data", cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "vector store could not be read" in r.stderr and "Traceback" not in r.stderr
    assert_consistent(data)
    hits = json.loads(invoke(*ask, cwd=REPO).stdout)["hits"]
    assert [h["location"] for h in hits] == [h["location"] for h in good]


def test_damaged_ledger_and_cache(tmp_path, data, fake_llm):
    cfg = tmp_path / "llmctl.yaml"
    cfg.write_text(yaml.safe_dump({"rerank": {"enabled": False}, "llm": {"providers": [
        {"name": "main", "base_url": fake_llm.base_url, "model": "m", "retries": 0}]}}))
    (data / "cache.sqlite").write_bytes(b"not sqlite at all" * 50)
    r = invoke("--config", cfg, "--data-dir", data, "query", "--json", "How do I restore a single file?")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["answer"] and any("cache" in w and "moved" in w for w in out["warnings"])
    assert any(p.name.startswith("cache.sqlite.corrupt") for p in data.iterdir())

    ledger = data / "ledger.sqlite"
    ledger.write_bytes(b"garbage" * 100)
    for args in (["cost-report"], ["query", "restore"]):
        r = invoke("--config", cfg, "--data-dir", data, *args)
        assert_clean_error(r, 5, "ledger.sqlite")
    assert ledger.read_bytes() == b"garbage" * 100
