"""Issue "Trust in daily use": filters never delete, Ctrl-C/SIGTERM keep finished work, a big
document commits in parts and resumes, queries keep working during a rebuild, and files of
an unsupported type are reported instead of vanishing."""

from __future__ import annotations

import gzip
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli import assert_clean_error, child_env, invoke
from consistency import assert_consistent

from llmctl.datadir import DataDir
from llmctl.errors import IndexStateError, InputError
from llmctl.index.manifest import Manifest
from llmctl.ingest import pipeline

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


def ingest(paths, cfg, **options):
    """``pipeline.ingest`` on the data dir ``cfg`` names, as the Workspace calls it."""
    return pipeline.ingest(paths, cfg, DataDir(cfg.data_dir), **options)


def remove(paths, cfg, **options):
    return pipeline.remove(paths, cfg, DataDir(cfg.data_dir), **options)


def _count(data: Path, sql: str, index: Path | None = None) -> int:
    """A count from the manifest of the published index (or of ``index``); 0 while it is being created."""
    path = (index or DataDir(data).index) / "manifest.sqlite"
    try:
        m = Manifest(path, readonly=True)
    except IndexStateError:  # not there yet, or its schema not yet written
        return 0
    try:
        return m.db.execute(sql).fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        m.close()


def test_filters_narrow_the_run_and_never_delete(make_config, corpus, embedder):
    cfg = make_config()
    first = ingest([corpus], cfg, embedder=embedder)
    total = first.chunks_total
    with pytest.raises(InputError, match="nothing was changed"):
        ingest([corpus], make_config(**{"ingest.include": ["*.zzz"]}), embedder=embedder)
    only_md = ingest([corpus], make_config(**{"ingest.include": ["*.md"]}), embedder=embedder)
    assert only_md.files_removed == [] and only_md.chunks_total == total
    cfg_ex = make_config()
    cfg_ex.ingest.exclude = cfg_ex.ingest.exclude + ["guides"]
    no_guides = ingest([corpus], cfg_ex, embedder=embedder)
    assert no_guides.files_removed == [] and no_guides.chunks_total == total
    # A file really gone from disk is removed, if the run's filters would take it.
    (corpus / "guides" / "restore.md").unlink()
    (corpus / "faq.html").unlink()
    md_run = ingest([corpus], make_config(**{"ingest.include": ["*.md"]}), embedder=embedder)
    assert [Path(p).name for p in md_run.files_removed] == ["restore.md"]  # faq.html: not looked at
    assert ingest([corpus], cfg, embedder=embedder).files_removed[0].endswith("faq.html")
    assert_consistent(cfg.data_dir)


def test_remove_command_drops_a_subtree(tmp_path, corpus, make_config, embedder):
    cfg = make_config()
    ingest([corpus], cfg, embedder=embedder)
    before = _count(cfg.data_dir, "SELECT count(*) FROM chunks")
    r = invoke("--data-dir", cfg.data_dir, "remove", corpus / "guides", "--dry-run", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    dry = json.loads(r.stdout)
    assert dry["files"]["removed"] == 8 and dry["chunks"]["deleted"] > 0
    assert _count(cfg.data_dir, "SELECT count(*) FROM chunks") == before  # dry run wrote nothing
    report = remove([corpus / "guides"], cfg)
    assert len(report.files_removed) == 8
    assert report.chunks_total == before - dry["chunks"]["deleted"]
    state = assert_consistent(cfg.data_dir)
    assert not any("/guides/" in p for p in state["files"])
    assert_clean_error(invoke("--data-dir", cfg.data_dir, "remove", corpus / "guides", cwd=tmp_path),
                       4, "Nothing indexed")


def test_unsupported_files_are_listed_as_skipped(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nSome text about snapshots.\n")
    (docs / "img.png").write_bytes(b"\x89PNG\r\n")
    (docs / "data.gz").write_bytes(gzip.compress(b"\x00\x01\x02 binary" * 50))  # read, and not text
    (docs / "cut.gz").write_bytes(b"\x1f\x8b\x08")  # damaged: it may have held text, so it is bad input
    (docs / "graph.dot").write_text("digraph { a -> b }")
    r = invoke("--data-dir", tmp_path / "data", "ingest", docs, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    files = json.loads(r.stdout)["files"]
    assert files["added"] == 1 and files["skipped"] == 4
    assert {Path(s["path"]).name: s["reason"].split(" (")[0] for s in files["skipped_files"]} == {
        "img.png": "unsupported type", "data.gz": "unsupported type", "graph.dot": "unsupported type",
        "cut.gz": "not a valid gzip file"}
    # A folder with nothing readable is an input error, like an empty one.
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"\x89PNG")
    assert_clean_error(invoke("--data-dir", tmp_path / "data", "ingest", only_bad, cwd=tmp_path), 4,
                       "unsupported type")


def _start(args: list, data: Path, **env) -> subprocess.Popen:
    full = child_env()
    full.update({"LLMCTL_DATA_DIR": str(data), **env})
    return subprocess.Popen([sys.executable, "-m", "llmctl", *map(str, args)], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"finished before the event: {proc.communicate()}"
        assert time.monotonic() < deadline, "event never came"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_commits_what_is_embedded(tmp_path, sig):
    docs = tmp_path / "docs"
    for i in range(2):
        shutil.copytree(SAMPLE, docs / f"copy{i}")
    data = tmp_path / "data"
    proc = _start(["ingest", docs, "--quiet"], data, LLMCTL_INGEST__COMMIT_EVERY="8")
    _wait_for(lambda: _count(data, "SELECT count(*) FROM files WHERE sha256 != ''") >= 3, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Interrupted: ") and "run again to continue" in lines[0]
    committed = int(lines[0].split()[1])
    assert committed >= 3
    assert _count(data, "SELECT count(*) FROM files WHERE sha256 != ''") == committed
    r = invoke("ingest", docs, "--json", env={"LLMCTL_DATA_DIR": str(data)})
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    assert again["files"]["unchanged"] == committed  # nothing committed was embedded twice
    assert again["files"]["added"] == again["files"]["seen"] - committed - again["files"]["skipped"]
    assert_consistent(data)


@pytest.mark.slow
def test_one_big_document_commits_in_parts_and_resumes(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    words = [f"word{i % 997} topic{i % 13}" for i in range(2000)]  # ~37 chunks
    (docs / "big.txt").write_text(" ".join(words))  # one line, no paragraph breaks
    data = tmp_path / "data"
    proc = _start(["ingest", docs, "--quiet"], data, LLMCTL_INGEST__COMMIT_EVERY="8")
    _wait_for(lambda: _count(data, "SELECT count(*) FROM chunks") >= 16, proc)
    proc.kill()
    proc.wait(60)
    kept = _count(data, "SELECT count(*) FROM chunks")
    assert kept >= 16
    assert _count(data, "SELECT count(*) FROM documents WHERE sha256 = ''") == 1  # marked incomplete
    r = invoke("ingest", docs, "--json", env={"LLMCTL_DATA_DIR": str(data)})
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["chunks"]["added"] == report["chunks"]["total"] - kept  # only the rest was embedded
    assert _count(data, "SELECT count(*) FROM documents WHERE sha256 = ''") == 0
    state = assert_consistent(data)
    clean = tmp_path / "clean"
    r = invoke("ingest", docs, "--json", env={"LLMCTL_DATA_DIR": str(clean)})
    assert json.loads(r.stdout)["chunks"]["total"] == len(state["manifest"])
    assert assert_consistent(clean)["manifest"] == state["manifest"]


@pytest.mark.slow
def test_queries_keep_working_during_a_rebuild(tmp_path, corpus):
    data = tmp_path / "data"
    env = {"LLMCTL_DATA_DIR": str(data)}
    assert invoke("ingest", corpus, "--quiet", env=env).returncode == 0
    proc = _start(["ingest", corpus, "--rebuild", "--quiet"], data, LLMCTL_INGEST__COMMIT_EVERY="8")
    _wait_for(lambda: _count(data, "SELECT count(*) FROM chunks", index=data / "index-1") > 0, proc)
    r = invoke("query", "--no-llm", "--json", "How many daily snapshots are kept?", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["hits"]
    assert proc.wait(400) == 0, proc.communicate()
    assert (data / "INDEX").read_text().strip() == "index-1"
    r = invoke("query", "--no-llm", "--json", "How many daily snapshots are kept?", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["hits"]
    assert (data / "manifest.sqlite").exists()  # the old index stays until the next writer
    assert invoke("ingest", corpus, "--quiet", env=env).returncode == 0
    assert not (data / "manifest.sqlite").exists() and not (data / "chroma").exists()
    assert_consistent(data)
