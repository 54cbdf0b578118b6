"""Crash trials: SIGKILL a real `llmctl ingest` at random moments, re-run it, check the index.

Each trial edits the corpus (rewrites, additions and removals, so every phase has work:
embedding, manifest commits, vector deletes, the BM25 rebuild), starts `llmctl ingest` in a
subprocess and kills it with SIGKILL at a random moment — during start-up, while it writes
(its dirty flag is up) or late in the run. Then a plain re-run must leave:
  * manifest, Chroma and BM25 holding exactly the same chunk ids, no duplicates, flag down;
  * the manifest's files and hashes equal to the files on disk (nothing lost or stale).
After the last trial the index is compared with a clean ingest of the same corpus: the same
chunks, and the same `llmctl query --json` hits and scores for a few questions.

    python tests/crash_trials.py --trials 30 --seed 7      # prints a JSON report
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli import child_env, invoke  # noqa: E402
from consistency import assert_consistent  # noqa: E402

from llmctl.index.manifest import Manifest  # noqa: E402

WORDS = "backup snapshot restore prune chunk key repository daemon schedule policy".split()
QUESTIONS = ["restore snapshot policy", "How is the repository key rotated?", "prune schedule daemon"]


def _env(data: Path) -> dict:
    env = child_env()
    env.update({"LLMCTL_DATA_DIR": str(data), "LLMCTL_INGEST__COMMIT_EVERY": "16"})
    return env


def _llmctl(*args, data: Path, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "llmctl", *map(str, args)], env=_env(data),
                       capture_output=True, text=True, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"llmctl {' '.join(map(str, args))} exited {r.returncode}: {r.stderr}")
    return r


def _doc(rng: random.Random, i: int, version: int, words: tuple[int, int] = (40, 260)) -> dict:
    text = " ".join(f"{rng.choice(WORDS)}{rng.randint(0, 99)}" for _ in range(rng.randint(*words)))
    return {"_id": f"d{i}", "title": f"Document {i} v{version}", "text": f"Document {i}. {text}."}


class Corpus:
    """A JSONL corpus plus Markdown notes that each trial changes a little."""

    def __init__(self, root: Path, rng: random.Random, n_docs: int, words: tuple[int, int] = (40, 260)):
        self.root, self.rng, self.version, self.words = root, rng, 0, words
        root.mkdir(parents=True, exist_ok=True)
        self.docs = {i: _doc(rng, i, 0, words) for i in range(n_docs)}
        self.notes = set(range(5))
        self.write()

    def write(self) -> None:
        (self.root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in self.docs.values()) + "\n")
        for p in self.root.glob("note*.md"):
            if int(p.stem[4:]) not in self.notes:
                p.unlink()
        for n in self.notes:
            (self.root / f"note{n}.md").write_text(f"# Note {n} v{self.version}\n\nA short note {n} about restores.\n")

    def mutate(self) -> None:
        self.version += 1
        rng = self.rng
        for i in rng.sample(sorted(self.docs), k=min(len(self.docs), rng.randint(8, 30))):
            self.docs[i] = _doc(rng, i, self.version, self.words)  # rewritten: new chunks, old ones deleted
        for i in rng.sample(sorted(self.docs), k=rng.randint(0, 3)):
            del self.docs[i]
        start = max(self.docs) + 1
        for i in range(start, start + rng.randint(0, 6)):
            self.docs[i] = _doc(rng, i, self.version, self.words)
        if self.notes and rng.random() < 0.5:
            self.notes.discard(rng.choice(sorted(self.notes)))
        if rng.random() < 0.5:
            self.notes.add(max(self.notes, default=0) + 1)
        self.write()


def _writing(data: Path) -> bool:
    """True once the ingest raised its dirty flag (it is writing Chroma and the manifest)."""
    if not (data / "manifest.sqlite").exists():
        return False
    try:
        m = Manifest(data / "manifest.sqlite", readonly=True)
        try:
            return m.dirty
        finally:
            m.close()
    except Exception:  # noqa: BLE001 - the file may be mid-creation
        return False


def _start(docs: Path, data: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "llmctl", "ingest", "-q", str(docs)], env=_env(data),
                            stdout=subprocess.DEVNULL, **kw)


def _wait_for_writing(proc: subprocess.Popen, data: Path, started: float, timing: dict) -> bool:
    """Wait until the dirty flag goes up; False when the run ended first."""
    while proc.poll() is None and not _writing(data) and time.monotonic() < started + 120:
        time.sleep(0.02)
    if proc.poll() is not None:
        return False
    timing["to_writing"].append(time.monotonic() - started)
    return True


def _kill_at_random(docs: Path, data: Path, rng: random.Random, moment: str, timing: dict) -> str:
    """Start an ingest, SIGKILL it at a random moment of the given kind; say where it was.

    The moments follow the runs seen so far (``timing``), so they land in the same phases on a
    fast or a busy machine and for short or long documents: a start-up kill before the dirty flag
    goes up (imports, scanning, chunking, model load), a writing kill in the first 30% of the
    shortest write seen, a late one in the rest of it."""
    started = time.monotonic()
    proc = _start(docs, data, stderr=subprocess.DEVNULL)
    if moment == "start-up":
        time.sleep(rng.uniform(0.1, 0.9) * min(timing["to_writing"], default=2.0))
    else:
        _wait_for_writing(proc, data, started, timing)
        shortest = min(timing["writing"], default=2.0)
        time.sleep(shortest * (rng.uniform(0.0, 0.3) if moment == "writing" else rng.uniform(0.3, 0.8)))
    if proc.poll() is not None:
        return "finished before the kill"
    where = "while writing" if _writing(data) else "before writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return where


def _rerun(docs: Path, data: Path, timing: dict, first: bool) -> None:
    """The plain re-run that must succeed; how long it took to raise the dirty flag and how long
    it wrote go to ``timing`` (unless it is the first, a whole ingest: longer than any trial's)."""
    started = time.monotonic()
    proc = _start(docs, data, stderr=subprocess.PIPE, text=True)
    stale = _writing(data)  # the killed run's flag: this run's own writing cannot be timed
    raised = _wait_for_writing(proc, data, started, timing) and time.monotonic()
    err = proc.communicate(timeout=600)[1]
    if proc.returncode != 0:
        raise AssertionError(f"llmctl ingest exited {proc.returncode}: {err}")
    if raised and not stale and not first:
        timing["writing"].append(time.monotonic() - raised)


def _check_files(data: Path, docs: Path) -> None:
    m = Manifest(data / "manifest.sqlite", readonly=True)
    try:
        recorded = {Path(f.path).name: f.sha256 for f in m.files().values()}
    finally:
        m.close()
    on_disk = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in docs.iterdir()}
    if recorded != on_disk:
        diff = sorted(n for n in recorded.keys() | on_disk.keys() if recorded.get(n) != on_disk.get(n))
        raise AssertionError(f"manifest files/hashes differ from the corpus on disk (lost or stale): {diff}")


def _query(data: Path) -> list:
    """`llmctl query --json` hits for each question, run in this process (``invoke``: the same entry
    point, one model load for all): the processes that matter here are the ingests that are killed."""
    out = []
    for q in QUESTIONS:
        r = invoke("query", "--no-llm", "--json", "--k", "10", q, env={"LLMCTL_DATA_DIR": str(data)})
        if r.returncode != 0:
            raise AssertionError(f"llmctl query {q!r} exited {r.returncode}: {r.stderr}")
        hits = json.loads(r.stdout)["hits"]
        out.append([(h["id"], h["stages"]["fused"]["score"]) for h in hits])
    return out


def _differences(after: list, clean: list, tolerance: float = 1e-5) -> list[dict]:
    """Per question, each rank where the hits differ: another chunk, or a fused score off by more
    than ``tolerance`` (--json prints 6 decimals; a tolerance, not rounding both sides, since two
    values a rounding step apart can round apart however close they are)."""
    out = []
    for q, a, b in zip(QUESTIONS, after, clean, strict=True):
        ranks = [{"rank": n, "after_crashes": x, "clean": y} for n, (x, y) in enumerate(zip(a, b, strict=False), 1)
                 if x[0] != y[0] or abs(x[1] - y[1]) > tolerance]
        if ranks or len(a) != len(b):
            out.append({"question": q, "hits": (len(a), len(b)), "ranks": ranks})
    return out


def run_trials(workdir: Path, trials: int = 20, seed: int = 1234, n_docs: int = 200,
               words: tuple[int, int] = (40, 260)) -> dict:
    rng = random.Random(seed)
    corpus = Corpus(workdir / "docs", rng, n_docs, words)
    data = workdir / "data"
    moments = ["start-up", "writing", "late"]
    timing: dict[str, list[float]] = {"to_writing": [], "writing": []}
    report = {"trials": 0, "failures": 0, "kills": {}, "errors": [], "seed": seed}
    for trial in range(trials):
        if trial:
            corpus.mutate()
        where = _kill_at_random(corpus.root, data, rng, moments[trial % 3], timing)
        report["kills"][where] = report["kills"].get(where, 0) + 1
        report["trials"] += 1
        try:
            _rerun(corpus.root, data, timing, first=not trial)
            assert_consistent(data)
            _check_files(data, corpus.root)
        except AssertionError as exc:
            report["failures"] += 1
            report["errors"].append(f"trial {trial} ({where}): {exc}")
    clean = workdir / "clean"
    _llmctl("ingest", "-q", corpus.root, data=clean)
    try:
        crashed_state, clean_state = assert_consistent(data), assert_consistent(clean)
    except AssertionError as exc:  # with what the trials saw: the last one's error explains this one
        raise AssertionError(f"after the trials: {exc}; kills {report['kills']}; errors {report['errors']}") from None
    report["chunks"] = len(clean_state["manifest"])
    report["same_chunks_as_clean_ingest"] = crashed_state["manifest"] == clean_state["manifest"]
    # BM25 updated in segments scores with its base's statistics, so its scores differ from a fresh
    # build's in the last digits (rankings are reported). Rebuilt from the manifest the crashes left,
    # every score must equal a clean ingest's.
    segmented, clean_hits = _query(data), _query(clean)
    report["same_rankings_before_bm25_rebuild"] = [[i for i, _ in hits] for hits in segmented] == [
        [i for i, _ in hits] for hits in clean_hits]
    _llmctl("ingest", "-q", "--repair", corpus.root, data=data)
    differences = _differences(_query(data), clean_hits)
    if differences:
        # Asked again at once, both indexes: a difference that stays is in the index (lost, stale or
        # doubled vectors: what a crash could leave). One that goes was that query's: Chroma's local
        # HNSW is rebuilt from its log by each reader with several threads, and now and then a dense
        # query misses one near vector (docs/robustness.md, "traced further"); reported, not failed.
        report["query_differences"] = differences
        differences = report["query_differences_when_asked_again"] = _differences(_query(data), _query(clean))
    report["same_query_results_as_clean_ingest"] = not differences
    if not (report["same_chunks_as_clean_ingest"] and report["same_query_results_as_clean_ingest"]):
        report["failures"] += 1
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    args = ap.parse_args()
    if args.keep:
        report = run_trials(args.keep, args.trials, args.seed, args.docs)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            report = run_trials(Path(tmp), args.trials, args.seed, args.docs)
    print(json.dumps(report, indent=2))
    sys.exit(1 if report["failures"] else 0)


if __name__ == "__main__":
    main()
