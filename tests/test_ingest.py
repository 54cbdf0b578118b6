import json
import shutil

import pytest
from consistency import assert_consistent

from llmctl.datadir import DataDir, drop_chroma_handles
from llmctl.embedding.local import Embedder
from llmctl.errors import BusyError, IndexStateError, InputError
from llmctl.index import keyword
from llmctl.index.manifest import Manifest
from llmctl.index.vectors import VectorStore
from llmctl.ingest import pipeline
from llmctl.ingest.loaders import file_digest


def ingest(paths, cfg, **options):
    """``pipeline.ingest`` on the data dir ``cfg`` names, as the Workspace calls it."""
    return pipeline.ingest(paths, cfg, DataDir(cfg.data_dir), **options)


@pytest.fixture
def small(corpus):
    """Five sample files: quick to embed."""
    keep = {"guides/retention-policies.md", "guides/encryption.md", "faq.html",
            "policies/support-sla.pdf", "examples/pre_backup_hook.py"}
    for p in sorted(corpus.rglob("*"), reverse=True):
        rel = p.relative_to(corpus).as_posix()
        if p.is_file() and rel not in keep:
            p.unlink()
    return corpus


def test_first_ingest_then_noop_without_loading_the_model(small, make_config, embedder):
    cfg = make_config()
    r = ingest([small], cfg, embedder=embedder)
    assert len(r.files_added) == 5 and not r.files_skipped
    assert r.chunks_added == r.chunks_total > 5
    assert r.tokens_embedded > 500
    state = assert_consistent(cfg.data_dir)
    assert len(state["manifest"]) == r.chunks_total

    fresh = Embedder(cfg.embedding)
    again = ingest([small], cfg, embedder=fresh)
    assert (again.files_unchanged, again.chunks_added, again.chunks_deleted) == (5, 0, 0)
    assert not again.bm25_rebuilt
    assert "model" not in fresh.__dict__, "a no-op run must not load the embedding model"


def test_changed_file_reembeds_only_changed_chunks_and_removed_file_is_deleted(small, make_config, embedder):
    cfg = make_config()
    first = ingest([small], cfg, embedder=embedder)
    before = assert_consistent(cfg.data_dir)["manifest"]

    doc = small / "guides" / "retention-policies.md"
    doc.write_text(doc.read_text().replace("Run prune weekly", "Run prune every Sunday"))
    (small / "faq.html").unlink()
    r = ingest([small], cfg, embedder=embedder)
    assert len(r.files_changed) == 1 and r.files_changed[0].endswith("guides/retention-policies.md")
    assert len(r.files_removed) == 1 and r.files_removed[0].endswith("faq.html")
    assert 1 <= r.chunks_added <= 2  # only the edited section
    after = assert_consistent(cfg.data_dir)["manifest"]
    assert len(before - after) == r.chunks_deleted
    assert r.chunks_total == first.chunks_total + r.chunks_added - r.chunks_deleted

    index = keyword.load(cfg.data_dir / "bm25")
    assert index.search("Sunday prune", 1)
    deleted = before - after  # the removed FAQ's chunks and the edited section's old one
    assert deleted and not deleted & {cid for cid, _ in index.search("passphrase sealed envelope", 50)}


def test_dry_run_reports_and_writes_nothing(small, make_config, embedder):
    cfg = make_config()
    r = ingest([small], cfg, dry_run=True, embedder=embedder)
    assert r.dry_run and len(r.files_added) == 5 and r.tokens_embedded > 500
    assert not cfg.data_dir.exists()
    real = ingest([small], cfg, embedder=embedder)
    assert real.to_dict()["chunks"] == r.to_dict()["chunks"]  # the plan's counts are the run's
    (small / "glossary.md").write_text("# Glossary\n\nPack file: many chunks.\n")
    (small / "faq.html").unlink()
    r = ingest([small], cfg, dry_run=True, embedder=embedder)
    assert [p.rsplit("/", 1)[-1] for p in r.files_added] == ["glossary.md"] and r.chunks_added == 1
    real = ingest([small], cfg, embedder=embedder)  # the dry run changed nothing
    assert real.chunks_added == 1 and real.chunks_deleted > 0
    assert real.to_dict()["chunks"] == r.to_dict()["chunks"]
    r, real = ingest([small], cfg, dry_run=True, embedder=embedder), ingest([small], cfg, embedder=embedder)
    assert real.to_dict()["chunks"] == r.to_dict()["chunks"] == {  # nothing to do: every chunk is kept
        "added": 0, "deleted": 0, "kept": real.chunks_total, "total": real.chunks_total}


def test_bad_files_are_skipped_and_never_lose_earlier_work(small, make_config, embedder):
    cfg = make_config()
    ingest([small], cfg, embedder=embedder)
    good = small / "guides" / "encryption.md"
    # UTF-8 with a stray byte: damaged, skipped (read as Windows-1252 it would be mojibake)
    good.write_bytes(good.read_bytes() + "\nR\u00e9sum\u00e9: na\u00efve caf\u00e9.\n".encode() + b"\xff broken\n")
    (small / "empty.md").write_text("")
    (small / "bin.txt").write_bytes(b"\x00\x01\x02binary")
    (small / "legacy.txt").write_bytes("Caf\u00e9 cr\u00e8me for the night shift.\n".encode("cp1252"))
    r = ingest([small], cfg, embedder=embedder)
    assert [p.rsplit("/", 1)[-1] for p in r.files_added] == ["legacy.txt"]
    assert [n.split(":")[0] for n in r.notes] == ["read as Windows-1252 (not valid UTF-8, no charset declared)"]
    assert r.notes[0].split(": ")[1].endswith("legacy.txt; if some characters look wrong, save the file(s) as UTF-8")
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in r.files_skipped}
    assert reasons["encryption.md"].startswith("not valid UTF-8")
    assert reasons["empty.md"] == "empty file"
    assert reasons["bin.txt"].startswith("binary file")
    assert r.chunks_deleted == 0  # the old chunks of the now-broken file are kept
    assert keyword.load(cfg.data_dir / "bm25").search("Argon2id", 1)
    with pytest.raises(InputError, match="--strict"):
        ingest([small], cfg, strict=True, embedder=embedder)
    assert_consistent(cfg.data_dir)


def test_settings_mismatch_is_explained_and_rebuild_fixes_it(small, make_config, embedder):
    cfg = make_config()
    ingest([small], cfg, embedder=embedder)
    changed = make_config(**{"chunking.overlap_tokens": 8})
    with pytest.raises(IndexStateError, match=r"chunking.overlap_tokens: 32 -> 8.*--rebuild"):
        ingest([small], changed, embedder=embedder)
    r = ingest([small], changed, rebuild=True, embedder=embedder)
    assert len(r.files_added) == 5
    assert_consistent(cfg.data_dir)
    # BM25 settings only need a keyword-index rebuild, done automatically.
    r = ingest([small], make_config(**{"chunking.overlap_tokens": 8, "bm25.k1": 1.6}), embedder=embedder)
    assert r.bm25_rebuilt and r.chunks_added == 0
    assert keyword.load(DataDir(cfg.data_dir).bm25).cfg.k1 == 1.6


def test_second_writer_stops_with_a_clear_message(small, make_config, embedder):
    cfg = make_config()
    with DataDir(cfg.data_dir).write_lock():
        with pytest.raises(BusyError, match=r"Another ingest \(pid \d+\)"):
            ingest([small], cfg, embedder=embedder)


def test_a_writer_that_waited_writes_the_index_a_rebuild_published_meanwhile(small, make_config, embedder):
    """Writer B made its DataDir (INDEX read once) before A's --rebuild published index-1, then waited
    for the lock: it must write index-1, not delete it as unused (INDEX then named a deleted folder)."""
    cfg = make_config()
    ingest([small], cfg, embedder=embedder)
    stale = DataDir(cfg.data_dir)  # B, about to wait
    ingest([small], cfg, rebuild=True, embedder=embedder)  # A publishes index-1
    assert DataDir(cfg.data_dir).index.name == "index-1"
    (small / "new.md").write_text("# New\n\nA page written while the rebuild ran.\n")
    r = pipeline.ingest([small], cfg, stale, embedder=embedder)  # B gets the lock
    assert len(r.files_added) == 1
    now = DataDir(cfg.data_dir)
    assert now.index.name == "index-1" and now.exists()
    assert_consistent(cfg.data_dir)


def test_a_stop_request_ends_the_wait_for_another_writer(tmp_path):
    import threading

    from llmctl.errors import Interrupted
    from llmctl.interrupts import StopFlag

    data, flag = DataDir(tmp_path / "data"), StopFlag()
    with data.write_lock():  # another writer
        threading.Timer(0.3, lambda: setattr(flag, "signum", 15)).start()  # Ctrl-C or SIGTERM meanwhile
        with pytest.raises(Interrupted, match="waiting for another ingest"):
            with DataDir(tmp_path / "data").write_lock(wait_seconds=60, stop=flag):
                pass


def test_jsonl_corpus_is_incremental_per_document(tmp_path, make_config, embedder):
    path = tmp_path / "corpus.jsonl"
    rows = [{"_id": str(i), "title": f"Doc {i}", "text": f"Document {i} is about topic number {i}."}
            for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = make_config(**{"ingest.commit_every": 7})
    assert ingest([path], cfg, embedder=embedder).chunks_added == 40
    rows[3]["text"] = "Document 3 now discusses something else."
    del rows[10]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    r = ingest([path], cfg, embedder=embedder)
    assert (r.documents_changed, r.chunks_added, r.chunks_deleted) == (1, 1, 2)
    assert len(assert_consistent(cfg.data_dir)["manifest"]) == 39


def test_big_file_committed_in_parts_ends_with_its_real_hash(tmp_path, make_config, embedder):
    # 40 one-chunk documents, commits every 8: the file's last update carries no new chunk.
    # It records the file's hash, so it must be written after all the partial commits.
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps({"_id": str(i), "text": f"Doc {i} " + "word " * (i % 9)})
                              for i in range(40)))
    cfg = make_config(**{"ingest.commit_every": 8})
    ingest([path], cfg, embedder=embedder)
    m = Manifest(DataDir(cfg.data_dir).manifest, readonly=True)
    try:
        (rec,) = m.files().values()
    finally:
        m.close()
    assert (rec.sha256, rec.size) == (file_digest(path.read_bytes()), path.stat().st_size)
    r = ingest([path], cfg, embedder=embedder)
    assert (r.files_unchanged, r.documents_changed) == (1, 0)


def test_dense_search_settings_reach_new_and_existing_collections(small, make_config, embedder):
    cfg = make_config()
    old = VectorStore.embedded(DataDir(cfg.data_dir).chroma, ef_search=100)  # as before the setting
    assert old.collection.configuration_json["hnsw"]["ef_search"] == 100
    # made by an earlier process: its handle is gone (a second live handle on the same files in
    # one process once made the ingest's first write fail "database is locked" on a loaded machine)
    del old
    drop_chroma_handles()
    ingest([small], cfg, embedder=embedder)
    assert VectorStore.embedded(DataDir(cfg.data_dir).chroma).collection.configuration_json[
        "hnsw"]["ef_search"] == cfg.vector_store.ef_search == 400


def test_a_one_shot_ingest_frees_the_vector_index_before_building_bm25(small, tmp_path, make_config, embedder,
                                                                      monkeypatch):
    """The CLI ingests and exits: Chroma's embedded index (about 2 GB at a million chunks) leaves
    memory before BM25 is built, so the two peaks do not add up. A process that goes on searching
    (serve, a script) keeps it loaded, the default."""
    from chromadb.api.client import SharedSystemClient

    loaded = []
    build = keyword.build_and_save

    def recording(root, *args, **kwargs):  # at the chunks' BM25 build (the page heads' follows it)
        if root == data.bm25:
            loaded.append(str(data.chroma) in SharedSystemClient._identifier_to_system)
        return build(root, *args, **kwargs)

    monkeypatch.setattr(keyword, "build_and_save", recording)
    for release in (True, False):
        cfg = make_config(data_dir=tmp_path / f"release-{release}")
        data = DataDir(cfg.data_dir)
        ingest([small], cfg, embedder=embedder, release_vectors=release)
        assert_consistent(cfg.data_dir)
    assert loaded == [False, True]


def test_ingesting_another_folder_keeps_the_first(small, tmp_path, make_config, embedder):
    cfg = make_config()
    other = tmp_path / "other"
    other.mkdir()
    (other / "note.md").write_text("# Note\n\nSomething else entirely.\n")
    a = ingest([small], cfg, embedder=embedder).chunks_total
    b = ingest([other], cfg, embedder=embedder)
    assert b.chunks_total == a + 1 and not b.files_removed
    shutil.rmtree(other)
    other.mkdir()
    assert ingest([other], cfg, embedder=embedder).chunks_total == a  # files under it removed


def test_missing_path_and_no_matching_files(tmp_path, make_config, embedder):
    cfg = make_config()
    with pytest.raises(InputError, match="does not exist"):
        ingest([tmp_path / "nope"], cfg, embedder=embedder)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(InputError, match=r"No file to ingest under .*empty \(the folder holds no file\)"):
        ingest([tmp_path / "empty"], cfg, embedder=embedder)
    (tmp_path / "empty" / "sub" / "a.md").write_text("# A\n\ntext\n")
    with pytest.raises(InputError, match="none matches include"):
        ingest([tmp_path / "empty"], make_config(**{"ingest.include": ["*.rst"]}), embedder=embedder)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "only.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="No file to ingest.*only.png: unsupported type"):
        ingest([tmp_path / "images"], cfg, embedder=embedder)


def test_fifo_and_directories_with_text_names_do_not_hang(tmp_path, make_config, embedder):
    import os

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ok.md").write_text("# Ok\n\nFine.\n")
    os.mkfifo(docs / "pipe.md")
    (docs / "folder.md").mkdir()
    (docs / "folder.md" / "inner.txt").write_text("inside a folder named like a file")
    r = ingest([docs], make_config(), embedder=embedder)
    assert {s.reason for s in r.files_skipped} == {"not a regular file (FIFO, socket or device)"}
    assert len(r.files_added) == 2


def test_an_index_read_by_another_reader_rereads_every_file_and_keeps_unchanged_vectors(small, make_config,
                                                                                       embedder):
    cfg = make_config()
    first = ingest([small], cfg, embedder=embedder)
    m = Manifest(DataDir(cfg.data_dir).manifest)
    settings = m.settings()
    settings["reader"] = {"version": 1, "min_tokens": 0}  # as an older llmctl wrote it
    m.set_settings(settings)
    m.close()
    r = ingest([small], cfg, embedder=embedder)
    assert r.notes and "re-reading every file" in r.notes[0]
    assert len(r.files_changed) == 5  # re-read (their documents still hash the same here)
    assert r.chunks_added == 0 and r.chunks_total == first.chunks_total  # same chunks: nothing re-embedded
    assert_consistent(cfg.data_dir)
    again = ingest([small], cfg, embedder=embedder)
    assert not again.notes and again.files_unchanged == 5  # the index now records this reader
    cfg.chunking.min_tokens = 0  # a different setting: read again, and the small sections split
    split = ingest([small], cfg, embedder=embedder)
    assert split.notes and split.chunks_total > first.chunks_total and split.chunks_added > 0
    assert_consistent(cfg.data_dir)


def test_a_small_change_updates_bm25_in_segments_and_a_large_one_rebuilds_it(small, make_config, embedder,
                                                                            monkeypatch):
    cfg = make_config()
    ingest([small], cfg, embedder=embedder)
    doc = small / "guides" / "retention-policies.md"
    doc.write_text(doc.read_text().replace("Run prune weekly", "Run prune every Sunday"))
    (small / "faq.html").unlink()
    r = ingest([small], cfg, embedder=embedder)
    assert not r.bm25_rebuilt and r.chunks_added and r.chunks_deleted
    assert_consistent(cfg.data_dir)  # BM25's live chunks are the manifest's, its generation is published
    index = keyword.load(cfg.data_dir / "bm25")
    assert index.delta is not None and index.search("Sunday prune", 1)[0][0] in index.delta.ids
    assert all(i in index.live_ids() for i, _ in index.search("prune weekly passphrase windows", 50))
    monkeypatch.setattr(keyword, "MERGE_MIN", 0)  # any change is now past the merge threshold
    doc.write_text(doc.read_text().replace("every Sunday", "every Monday"))
    r = ingest([small], cfg, embedder=embedder)
    assert r.bm25_rebuilt
    assert_consistent(cfg.data_dir)
    assert keyword.load(cfg.data_dir / "bm25").delta is None


def test_planning_in_windows_gives_the_index_a_single_window_gives(docs_template, docs_data, make_config,
                                                                   embedder, monkeypatch):
    """Memory stays bounded because a run plans and commits a window of commit groups at a time;
    the index it builds is the same as the session's, built in one window."""
    from llmctl.ingest import pipeline

    docs, whole = docs_template[0], docs_data
    monkeypatch.setattr(pipeline, "WINDOW_GROUPS", 1)
    windowed = make_config(data_dir=str(docs_data.parent / "windowed"))
    windowed.ingest.commit_every = 4
    seen = []
    real = pipeline._by_length
    monkeypatch.setattr(pipeline, "_by_length", lambda window: seen.append(len(window)) or real(window))
    r = ingest([docs], windowed, embedder=embedder)
    assert len(seen) > 5 and r.chunks_added == r.chunks_total
    a, b = assert_consistent(whole), assert_consistent(windowed.data_dir)
    assert a["manifest"] == b["manifest"]
    q = "How many daily snapshots does the default retention policy keep?"
    assert keyword.load(whole / "bm25").search(q, 10) == keyword.load(windowed.data_dir / "bm25").search(q, 10)


OLD_CHUNKS = {  # the chunks tables older llmctl versions wrote
    "texts": "text TEXT NOT NULL, embed_text TEXT NOT NULL, meta TEXT NOT NULL",
    "compact": "body BLOB NOT NULL, prefix TEXT NOT NULL, meta TEXT NOT NULL",
}


@pytest.mark.parametrize("layout", list(OLD_CHUNKS))
def test_an_index_in_an_older_manifest_layout_is_read_then_converted_in_place(small, make_config, embedder, layout):
    """Chunks used to be stored as two plain texts ('texts'), then as a compressed text and a prefix
    with every field in JSON ('compact'). An old index is read as it is, even by a reader opened
    before the upgrade, and its next ingest converts it in one transaction, embedding nothing again."""
    import json
    import sqlite3

    from llmctl.index.manifest import pack

    cfg = make_config()
    ingest([small], cfg, embedder=embedder)
    path = DataDir(cfg.data_dir).manifest
    m = Manifest(path)
    ids = m.keyword_ids()
    before, corpus, texts = m.get_chunks(ids), list(m.keyword_corpus()), sorted(m.chunk_texts())
    doc_id = before[ids[0]]["doc_id"]
    document = m.document(doc_id)
    m.close()
    db = sqlite3.connect(path)  # as an older llmctl wrote it
    docs = db.execute("SELECT doc_id, path, sha256, title FROM documents").fetchall()
    db.executescript(f"""DROP TABLE chunks; DROP TABLE documents;
        CREATE TABLE documents (doc_id TEXT PRIMARY KEY, path TEXT NOT NULL REFERENCES files(path)
            ON DELETE CASCADE, sha256 TEXT NOT NULL, title TEXT NOT NULL DEFAULT '');
        CREATE INDEX documents_path ON documents(path);
        CREATE TABLE chunks (id TEXT PRIMARY KEY, doc_id TEXT NOT NULL REFERENCES documents(doc_id)
            ON DELETE CASCADE, ordinal INTEGER NOT NULL, {OLD_CHUNKS[layout]});
        CREATE INDEX chunks_doc ON chunks(doc_id);""")
    db.executemany("INSERT INTO documents VALUES (?, ?, ?, ?)", docs)
    for c in before.values():
        meta = json.dumps({k: v for k, v in c.items() if k not in ("id", "text", "embed_text")})
        prefix = c["embed_text"][:len(c["embed_text"]) - len(c["text"])]
        text_columns = (c["text"], c["embed_text"]) if layout == "texts" else (pack(c["text"]), prefix)
        db.execute("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)", (c["id"], c["doc_id"], c["ordinal"],
                                                                    *text_columns, meta))
    db.commit()
    db.close()

    def reads_as_before(m: Manifest) -> bool:
        return (m.get_chunks(ids) == before and list(m.keyword_corpus()) == corpus and m.keyword_ids() == ids
                and sorted(m.chunk_texts()) == texts and m.document(doc_id) == document
                and sorted(m.chunk_ids_of_files(m.files())) == sorted(ids))

    old = Manifest(path, readonly=True)
    assert old.layout == layout and reads_as_before(old)
    fresh = Embedder(cfg.embedding)
    r = ingest([small], cfg, embedder=fresh)
    assert r.chunks_added == 0 and "model" not in fresh.__dict__
    assert reads_as_before(old) and old.layout == "slim"  # the reader opened before now reads the new layout
    old.close()
    new = Manifest(path, readonly=True)
    assert new.layout == "slim" and reads_as_before(new)
    new.close()
    assert_consistent(cfg.data_dir)


def _unlistable(monkeypatch, folder):
    """os.scandir raising PermissionError for ``folder``: a folder chmod 000 to a user who is not
    root (the tests run as root, whom chmod 000 does not stop)."""
    import os

    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(folder):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_a_folder_that_cannot_be_listed_keeps_its_indexed_files(small, make_config, embedder, monkeypatch):
    cfg = make_config()
    first = ingest([small], cfg, embedder=embedder)
    (small / "faq.html").unlink()  # really gone: removed, as ever
    with monkeypatch.context() as m:
        _unlistable(m, small / "guides")
        r = ingest([small], cfg, embedder=embedder)
        assert [p.rsplit("/", 1)[-1] for p in r.files_removed] == ["faq.html"]
        assert [(s.path, s.reason) for s in r.files_skipped] == [  # spelled as sources are
            ("docs/guides",
             "cannot list folder: Permission denied (its 2 indexed file(s) are kept)")]
        assert keyword.load(cfg.data_dir / "bm25").search("Argon2id", 1)  # guides/encryption.md
        with pytest.raises(InputError, match="cannot list folder.*--strict"):
            ingest([small], cfg, strict=True, embedder=embedder)
        # The only folder given cannot be listed: nothing to look at, nothing changed (exit 4).
        _unlistable(m, small)
        with pytest.raises(InputError, match="cannot list folder.*nothing was changed"):
            ingest([small], cfg, embedder=embedder)
    state = assert_consistent(cfg.data_dir)
    assert r.chunks_total == len(state["manifest"]) == first.chunks_total - r.chunks_deleted > 0
    again = ingest([small], cfg, embedder=embedder)  # readable again: nothing to do
    assert (again.files_unchanged, again.files_removed, again.chunks_added) == (4, [], 0)


def test_cli_json_reports_the_folder_it_could_not_list(small, make_config, embedder, monkeypatch):
    from typer.testing import CliRunner

    from llmctl.cli import app

    cfg = make_config()
    ingest([small], cfg, embedder=embedder)
    monkeypatch.setenv("LLMCTL_DATA_DIR", str(cfg.data_dir))
    _unlistable(monkeypatch, small / "guides")
    result = CliRunner().invoke(app, ["ingest", str(small), "--json"])
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert (files["removed"], files["removed_paths"]) == (0, [])
    reason = "cannot list folder: Permission denied (its 2 indexed file(s) are kept)"
    assert files["skipped_files"] == [{"path": "docs/guides", "reason": reason}]


def test_a_folder_chmod_000_keeps_its_files_end_to_end(small, tmp_path):
    """The real thing, through the CLI: chmod 000 on a folder. Root ignores permissions, so then the
    run drops the capabilities that bypass them (setpriv), as test_bad_inputs does for a file."""
    import os
    import subprocess
    import sys

    from cli import child_env

    cmd = [sys.executable, "-m", "llmctl", "ingest", "--json", "-q", str(small)]
    if os.getuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: chmod 000 cannot stop this process")
        drop = "-dac_override,-dac_read_search"
        cmd = [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}", *cmd]
    env = child_env({"LLMCTL_DATA_DIR": str(tmp_path / "data")})
    first = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    (small / "guides").chmod(0o000)
    try:
        second = subprocess.run(cmd, env=env, capture_output=True, text=True)
    finally:
        (small / "guides").chmod(0o755)
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["files"]["removed"] == report["chunks"]["deleted"] == 0
    assert report["chunks"]["total"] == json.loads(first.stdout)["chunks"]["total"]
    assert [s["reason"] for s in report["files"]["skipped_files"]] == [
        "cannot list folder: Permission denied (its 2 indexed file(s) are kept)"]


@pytest.mark.parametrize("stops", [[3], [1, 3]], ids=["first run", "after a first run that kept nothing"])
def test_an_interrupted_first_ingest_can_be_searched(small, make_config, embedder, monkeypatch, stops):
    """Ctrl-C during a first ingest: what was committed is searchable at once (BM25 is built for
    it before exiting), and the next run completes the index. Also when an earlier run was stopped
    before its first commit (it recorded the index's settings, so this run is not the first)."""
    import os
    import signal

    from llmctl.errors import Interrupted
    from llmctl.workspace import Workspace

    cfg = make_config(**{"ingest.commit_every": 4})
    real = embedder.embed_documents
    for stop in stops:
        calls = []

        def embed_documents(texts, on_batch=None, calls=calls, stop=stop):
            calls.append(len(texts))
            if len(calls) == stop:  # Ctrl-C while this commit group is embedded
                os.kill(os.getpid(), signal.SIGINT)
            return real(texts, on_batch)

        monkeypatch.setattr(embedder, "embed_documents", embed_documents)
        with pytest.raises(Interrupted, match="run again to continue"):
            ingest([small], cfg, embedder=embedder)
        monkeypatch.undo()
    kept = Manifest(cfg.data_dir / "manifest.sqlite")
    committed, dirty = kept.chunk_count(), kept.dirty
    kept.close()
    assert committed > 0 and dirty  # two groups kept; the next run checks the index
    index = keyword.load(cfg.data_dir / "bm25")
    assert len(index.ids) == committed
    with Workspace(cfg) as ws:
        hits = ws.search("backup", k=3)
        assert hits and all(h.id in index.ids for h in hits)
    again = ingest([small], cfg, embedder=embedder)
    assert again.chunks_added == again.chunks_total - committed > 0
    assert len(keyword.load(cfg.data_dir / "bm25").ids) == again.chunks_total
    assert_consistent(cfg.data_dir)


def test_commit_groups_never_hold_more_than_commit_every_new_chunks():
    """A group closes before the file that would take it over: Ctrl-C keeps all but one group's
    work (before, a 378-chunk changelog after 500 chunks made one group of ~880, 92% of a run)."""
    from llmctl.ingest.pipeline import _batches, _Planned

    sizes = [3, 500, 378, 512, 0, 1, 511, 2, 40]  # a big file's parts are at most commit_every each
    planned = [_Planned(update=None, new_chunks=[None] * n) for n in sizes]
    groups = [[len(p.new_chunks) for p in g] for g in _batches(planned, 512)]
    assert [n for g in groups for n in g] == sizes  # every file once, in order
    assert all(sum(g) <= 512 for g in groups), groups
    assert groups == [[3, 500], [378], [512, 0], [1, 511], [2, 40]]


def test_a_run_after_a_kill_between_publishing_bm25_and_recording_it_never_deletes_what_readers_use(
        small, make_config, embedder, monkeypatch):
    """Killed after BM25 generation N+1 was published but before the manifest recorded it, the
    next run must write N+2 beside it: rewriting N+1 in place deleted the folder CURRENT names,
    and a query in that moment found no BM25 index."""
    cfg = make_config()
    ingest([small], cfg, embedder=embedder)
    m = Manifest(cfg.data_dir / "manifest.sqlite")
    published = m.get_meta("generation")
    m.set_meta("generation", str(int(published) - 1))  # the state such a kill leaves
    m.close()
    removed_while_current = []
    rmtree = shutil.rmtree

    def spy(path, *args, **kwargs):
        for root in (cfg.data_dir / "bm25", cfg.data_dir / "pages"):
            current = root / "CURRENT"
            if current.exists() and root / current.read_text().strip() == path:
                removed_while_current.append(path)
        return rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", spy)
    (small / "faq.html").unlink()
    ingest([small], cfg, embedder=embedder)
    assert removed_while_current == [], removed_while_current
    assert int(keyword.current_generation(cfg.data_dir / "bm25")) > int(published)
    assert_consistent(cfg.data_dir)


def test_a_folder_ingested_again_from_elsewhere_gets_one_spelling_of_its_sources(small, tmp_path, make_config,
                                                                                 embedder):
    """Sources are shown relative to where llmctl runs (or absolute outside it). Ingested first from
    another folder, then from the corpus's parent with one file added: every file under the path
    now reads 'docs/...', so --where source=docs/* finds them all (it found only the new one)."""
    from llmctl.workspace import Workspace

    cfg = make_config()
    cfg.base_dir = tmp_path / "elsewhere"
    ingest([small], cfg, embedder=embedder)
    assert all(f.source.startswith("/") for f in Manifest(cfg.data_dir / "manifest.sqlite").files().values())
    (small / "new.md").write_text("# New\n\nA new note about retention.\n")
    cfg.base_dir = tmp_path
    report = ingest([small], cfg, embedder=embedder)
    assert report.files_unchanged == 5 and report.chunks_added and not report.chunks_deleted
    sources = {f.source for f in Manifest(cfg.data_dir / "manifest.sqlite").files().values()}
    assert len(sources) == 6 and all(s.startswith("docs/") for s in sources), sources
    with Workspace(cfg) as ws:
        hits = ws.search("retention snapshots policy", k=20, where=["source=docs/*"])
        assert len({h.source for h in hits}) > 2
    cfg.base_dir = tmp_path / "elsewhere"  # a run over one subfolder re-spells the files it did not scan too
    ingest([small / "guides"], cfg, embedder=embedder)
    assert all(f.source.startswith("/") for f in Manifest(cfg.data_dir / "manifest.sqlite").files().values())
    assert_consistent(cfg.data_dir)
