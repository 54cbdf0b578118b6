"""kill -9 a real `llmctl ingest` at random moments; the re-run must end consistent and complete."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from cli import run_cli
from consistency import assert_consistent

from llmctl.index.manifest import Manifest


def make_corpus(root, n_docs=150):
    root.mkdir()
    rng = random.Random(7)
    words = "backup snapshot restore prune chunk key repository daemon schedule policy".split()
    rows = []
    for i in range(n_docs):
        text = " ".join(f"{rng.choice(words)}{rng.randint(0, 99)}" for _ in range(rng.randint(40, 260)))
        rows.append({"_id": f"d{i}", "title": f"Document {i}", "text": f"Document {i}. {text}."})
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    for i in range(5):
        (root / f"note{i}.md").write_text(f"# Note {i}\n\nA short note number {i} about restores.\n")
    return root


def is_writing(data) -> bool:
    """True once the ingest has raised its dirty flag (it is writing Chroma and the manifest)."""
    if not (data / "manifest.sqlite").exists():
        return False
    try:
        m = Manifest(data / "manifest.sqlite")
        try:
            return m.dirty
        finally:
            m.close()
    except Exception:  # noqa: BLE001 - the file may be mid-creation
        return False


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_is_consistent(tmp_path):
    docs = make_corpus(tmp_path / "docs", n_docs=250)
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_")}
    env.update({"LLMCTL_DATA_DIR": str(data), "LLMCTL_INGEST__COMMIT_EVERY": "16"})
    rng = random.Random(int(os.environ.get("CRASH_SEED", "1234")))
    kills, mid_write = 0, 0
    for trial in range(7):
        proc = subprocess.Popen([sys.executable, "-m", "llmctl", "ingest", "-q", str(docs)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if trial == 0:
            time.sleep(1.0)  # during start-up, before anything is written
        else:
            deadline = time.monotonic() + 120
            while proc.poll() is None and not is_writing(data) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 2.5))  # somewhere in embedding, commits, deletes or BM25
        if proc.poll() is None:
            was_writing = is_writing(data)
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
            mid_write += was_writing
        proc.wait()
        if trial == 3:  # change the corpus between crashes: edits and removals must survive too
            (docs / "note0.md").write_text("# Note 0\n\nRewritten after a crash.\n")
            (docs / "note1.md").unlink()
    assert kills >= 5, "runs finished before they could be killed: the trial tested too little"
    assert mid_write >= 4, "too few kills landed while the index was being written"

    final = run_cli("ingest", "-q", docs, env={"LLMCTL_DATA_DIR": str(data)})
    assert final.returncode == 0, final.stderr
    crashed = assert_consistent(data)

    clean = run_cli("ingest", "-q", docs, env={"LLMCTL_DATA_DIR": str(tmp_path / "clean")})
    assert clean.returncode == 0, clean.stderr
    reference = assert_consistent(tmp_path / "clean")
    assert crashed["manifest"] == reference["manifest"]  # nothing lost, stale or duplicated
    assert sorted(crashed["bm25"]) == sorted(reference["bm25"])
