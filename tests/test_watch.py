"""`ingest --watch` and `serve --watch`: real file events, a real subprocess, real signals."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from cli import assert_clean_error, child_env, invoke
from test_serve import Served

from llmctl import Workspace

pytestmark = pytest.mark.slow


class Watcher:
    def __init__(self, data, folder):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmctl", "--data-dir", str(data), "ingest", "--watch", "--json", str(folder)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(json.loads(x)) for x in self.proc.stdout], daemon=True).start()
        self.syncs: list[dict] = []

    def until(self, done, timeout: float = 240) -> dict:
        """Sync reports until one satisfies ``done``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                report = self.lines.get(timeout=1)
            except queue.Empty:
                assert self.proc.poll() is None, self.proc.stderr.read()
                continue
            self.syncs.append(report)
            if done(report):
                return report
        raise AssertionError(f"no matching sync in {timeout} s: {self.syncs[-3:]}")


def test_ingest_watch_follows_changes_batches_a_burst_and_stops_on_ctrl_c(tmp_path):
    folder, data = tmp_path / "docs", tmp_path / "data"
    folder.mkdir()
    (folder / "a.md").write_text("# Alpha\n\nThe alpha gateway retries three times.\n")
    w = Watcher(data, folder)
    try:
        first = w.until(lambda r: True)
        assert first["files"]["added"] == 1 and first["chunks"]["total"] == 1

        (folder / "b.md").write_text("# Quokka relay\n\nThe quokka relay rotates its keys every 17 days.\n")
        w.until(lambda r: r["files"]["added"] == 1)
        with Workspace(data_dir=data) as ws:
            assert ws.search("How often does the quokka relay rotate keys?", k=1)[0].source.endswith("b.md")

        (folder / "b.md").write_text("# Quokka relay\n\nThe quokka relay rotates its keys every 30 days.\n")
        w.until(lambda r: r["files"]["changed"] == 1)
        (folder / "a.md").unlink()
        w.until(lambda r: r["files"]["removed"] == 1)
        (folder / "bad.md").write_bytes(b"# Bad\n\ncaf\xc3\xa9 \xfe not UTF-8\n")  # nothing to index: still reported
        bad = w.until(lambda r: any(s["path"].endswith("bad.md") for s in r["files"]["skipped_files"]))
        assert bad["files"]["added"] == 0
        (folder / "bad.md").unlink()

        before = len(w.syncs)
        burst = folder / "burst"
        burst.mkdir()
        for i in range(1000):
            (burst / f"n{i:04d}.txt").write_text(f"Note {i}: the value of item {i} is {i * 7}.\n")
        last = w.until(lambda r: r["chunks"]["total"] == 1001)
        burst_syncs = len(w.syncs) - before
        assert burst_syncs <= 20, burst_syncs  # batched, not one ingest per event
        assert last["files"]["seen"] == 1001

        w.proc.send_signal(signal.SIGINT)
        assert w.proc.wait(timeout=60) == 0
        err = w.proc.stderr.read()
        assert "Stopped watching" in err and "Traceback" not in err
    finally:
        if w.proc.poll() is None:
            w.proc.kill()
    with Workspace(data_dir=data) as ws:
        st = ws.status().index
        assert st["files"] == 1001 and not st["dirty"]


def test_serve_watch_serves_new_files_without_restart(tmp_path):
    folder, data = tmp_path / "docs", tmp_path / "data"
    folder.mkdir()
    (folder / "a.md").write_text("# Alpha\n\nThe alpha gateway retries three times.\n")
    (folder / "bin.txt").write_bytes(b"abc\x00\x00def")  # skipped: named on stderr, as ingest --watch does
    s = Served("--data-dir", str(data), env={"LLMCTL_RERANK__ENABLED": "false"}, watch=folder)
    try:
        deadline = time.monotonic() + 180
        question = {"query": "How often does the quokka relay rotate its keys?", "k": 1}
        code = None
        while time.monotonic() < deadline:  # the initial sync
            code, got = s.json("POST", "/search", question)
            if code == 200:
                break
            time.sleep(0.5)
        assert code == 200
        (folder / "q.md").write_text("# Quokka relay\n\nThe quokka relay rotates its keys every 17 days.\n")
        while time.monotonic() < deadline:
            code, got = s.json("POST", "/search", question)
            if code == 200 and got["hits"][0]["source"].endswith("q.md"):
                break
            time.sleep(0.5)
        assert got["hits"][0]["source"].endswith("q.md")
    finally:
        assert s.stop() == 0
    log = s.proc.stderr.read()
    assert "watch: synced 2 file(s): 1 added, 0 changed, 0 removed; 1 chunk(s) embedded" in log, log
    assert log.count("bin.txt: binary file") == 1, log  # once, not at every sync
    assert "No index" not in log  # the watcher builds it: no warning that there is none


def test_serve_watch_stopped_during_a_sync_stops_it_cleanly(tmp_path):
    """SIGTERM while the watcher thread embeds: it stops at its next safe point and is waited for,
    instead of being left in native code while the interpreter exits (SIGABRT, exit 134, the index
    left dirty)."""
    from consistency import assert_consistent
    from crash_trials import _writing

    folder, data = tmp_path / "docs", tmp_path / "data"
    folder.mkdir()
    (folder / "a.md").write_text("# Alpha\n\nThe alpha gateway retries three times.\n")
    s = Served("--data-dir", str(data), env={"LLMCTL_RERANK__ENABLED": "false", "LLMCTL_INGEST__COMMIT_EVERY": "8"},
               watch=folder)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and s.json("POST", "/search", {"query": "alpha", "k": 1})[0] != 200:
            time.sleep(0.3)
        for i in range(60):  # a sync that lasts: one chunk each (~200 tokens), embedded in groups of 8
            (folder / f"p{i}.md").write_text(f"# Page {i}\n\n" + " ".join(f"word{i}x{j}" for j in range(40)))
        while time.monotonic() < deadline and not _writing(data):
            time.sleep(0.05)
        assert _writing(data), "the watcher never started writing"
    finally:
        code = s.stop()
    log = s.proc.stderr.read()
    assert code == 0 and "terminate called" not in log and "Traceback" not in log, (code, log)
    r = invoke("--data-dir", data, "ingest", "-q", folder)  # the next run finishes what the stop left
    assert r.returncode == 0, r.stderr
    assert_consistent(data)


def test_a_watched_folder_or_file_that_is_replaced_is_watched_again(tmp_path):
    """A folder deleted and made again, and a file saved by renaming a new one over it (editors,
    sed -i): the watcher of the old one hears nothing, so every later change was missed."""
    import shutil

    folder, page = tmp_path / "docs", tmp_path / "single" / "page.md"
    folder.mkdir()
    page.parent.mkdir()
    (folder / "one.md").write_text("# One\n\nThe first page.\n")
    page.write_text("# Page\n\nVersion one.\n")
    stop, reports, errors = threading.Event(), queue.Queue(), []

    def added_or_changed(name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = reports.get(timeout=0.5)
            except queue.Empty:
                continue
            if any(p.endswith(name) for p in r.files_added + r.files_changed):
                return
        raise AssertionError(f"{name} was never synced (errors: {errors})")

    with Workspace(data_dir=tmp_path / "data", **{"rerank.enabled": False}) as ws:
        up = threading.Event()
        t = threading.Thread(target=ws.watch, args=([folder, page],), daemon=True,
                             kwargs={"stop": stop, "on_report": reports.put, "on_error": errors.append,
                                     "debounce_ms": 200, "on_start": up.set})
        t.start()
        try:
            assert up.wait(120)
            shutil.rmtree(folder)
            folder.mkdir()
            (folder / "two.md").write_text("# Two\n\nThe second page.\n")
            added_or_changed("two.md")
            time.sleep(1.5)  # the new folder's watcher is up
            (folder / "three.md").write_text("# Three\n\nThe third page.\n")
            added_or_changed("three.md")
            for version in ("two", "three"):  # saved as editors do: a new file renamed over the old
                (page.parent / ".tmp").write_text(f"# Page\n\nVersion {version}.\n")
                (page.parent / ".tmp").rename(page)
                added_or_changed("page.md")
                time.sleep(1.5)
        finally:
            stop.set()
            t.join(60)


def test_a_watch_refuses_a_path_that_is_not_there(tmp_path):
    r = invoke("--data-dir", tmp_path / "data", "serve", "--port", "0", "--watch", tmp_path / "nope")
    assert_clean_error(r, 4, "nope does not exist")
    r = invoke("--data-dir", tmp_path / "data", "ingest", "--watch", tmp_path / "nope")  # was a traceback
    assert_clean_error(r, 4, "nope does not exist")


def test_a_watch_names_a_skipped_file_once_when_it_shows_up(capsys):
    from llmctl import render
    from llmctl.records import IngestReport, SkippedFile

    def report(*skipped):
        r = IngestReport()
        r.files_skipped = list(skipped)
        return r

    bad = SkippedFile("/docs/bad.md", "not valid UTF-8 text (byte 6)")
    png = SkippedFile("/docs/logo.png", "unsupported type")
    render.sync_line(report(bad, png), as_json=False)
    render.sync_line(report(bad, png), as_json=False)
    err = capsys.readouterr().err
    assert err.count("skipped /docs/bad.md: not valid UTF-8 text (byte 6)") == 1 and "logo.png" not in err
