"""A corpus of bad inputs through the real CLI: each one a clear message and a documented
exit code, no traceback, and nothing else lost (docs/robustness.md counts them)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from cli import assert_clean_error, child_env, invoke
from conftest import REPO
from consistency import assert_consistent

BIG_MB = 50

# file name -> content, and the reason ingest must give for skipping it (None: ingested)
BAD_FILES = {
    "image.md": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8, "binary file"),
    # UTF-8 with a stray byte (a text in no UTF, such as Latin-1, is read as Windows-1252 instead)
    "damaged-utf8.txt": ("Caf\xe9 cr\xe8me: the restore costs 5 \xa3.\n".encode() + b"\xa3 stray\n", "not valid UTF-8"),
    "empty.md": (b"", "empty file"),
    "blank.txt": (b"  \n\t\n   \n", "empty file"),
    "only-scripts.html": (b"<html><head><script>var a = 'zqxscriptword';</script><style>p{}</style></head>"
                          b"<body><script>track('zqxscriptword')</script><noscript>x</noscript></body></html>",
                          "no main text"),
    "broken.pdf": (None, "unreadable PDF"),
    "locked.pdf": (None, "encrypted PDF"),
    # a corpus file with a broken line is skipped whole, naming the line (never half-ingested)
    "broken.jsonl": (b'{"_id": "a", "text": "fine"}\n{"_id": "b", "text": \n', "line 2: invalid JSON"),
}
GOOD_FILES = {
    "good.md": "# Good\n\nThe restore window is 30 days for the Gold plan.\n",
    "with space.md": "# Spaces\n\nFile names with spaces are fine: zebrafile one.\n",
    "ünïcödé 名前.md": "# Unicode\n\nUnicode names are fine too: zebrafile two.\n",
    "new\nline.md": "# Newline\n\nEven a newline in a name: zebrafile three.\n",
    "scripts-and-text.html": "<html><head><title>Mixed</title><script>var s='zqxscriptword';</script></head>"
                             "<body><h1>Mixed page</h1><p>Visible zebrafile four.</p>"
                             "<script>alert('zqxscriptword')</script></body></html>",
}


def make_pdfs(folder):
    from pypdf import PdfWriter

    sample = (REPO / "sample_data" / "policies" / "support-sla.pdf").read_bytes()
    (folder / "broken.pdf").write_bytes(sample[: len(sample) // 3])
    w = PdfWriter()
    w.add_blank_page(200, 200)
    w.encrypt("secret", algorithm="RC4-128")
    with open(folder / "locked.pdf", "wb") as fh:
        w.write(fh)


def make_corpus(root, big: bool):
    root.mkdir()
    for name, (data, _) in BAD_FILES.items():
        if data is not None:
            (root / name).write_bytes(data)
    make_pdfs(root)
    for name, text in GOOD_FILES.items():
        (root / name).write_text(text)
    deep = root
    for i in range(60):
        deep = deep / f"level{i}"
    deep.mkdir(parents=True)
    (deep / "deep.md").write_text("# Deep\n\nSixty folders down: zebrafile five.\n")
    # names that are not UTF-8 (a Latin-1 "résumé" file and folder): skipped, named with \x escapes
    os.makedirs(os.fsencode(root) + b"/dir-r\xe9sum\xe9")
    for name in (b"/r\xe9sum\xe9.md", b"/dir-r\xe9sum\xe9/inside.md"):
        with open(os.fsencode(root) + name, "w") as fh:
            fh.write("# Resume\n\nzebrafile latin.\n")
    os.symlink(root, root / "loop")  # a loop: not followed
    outside = root.parent / "outside-secret.md"
    outside.write_text("# Outside\n\nzebrafile outside the root.\n")
    os.symlink(outside, root / "outside.md")  # leads out of the root: not followed
    if big:
        line = b"backup restore snapshot prune repository " * 24 + b"\n"
        with open(root / "huge.log.txt", "wb") as fh:
            for _ in range(BIG_MB * 1024 * 1024 // len(line) + 1):
                fh.write(line)


def run_measured(corpus, data, *extra):
    """Run `llmctl ingest --json`: (exit code, stdout, stderr, peak RSS in MB of that process)."""
    env = child_env()
    env["LLMCTL_DATA_DIR"] = str(data)
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "ingest", "--json", "-q", *extra, str(corpus)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out.decode(), err.decode(), usage.ru_maxrss / 1024


@pytest.mark.slow
def test_bad_files_are_skipped_with_reasons_and_memory_stays_bounded(tmp_path):
    ref_corpus, corpus = tmp_path / "ref" / "docs", tmp_path / "docs"
    (tmp_path / "ref").mkdir()
    make_corpus(ref_corpus, big=False)
    make_corpus(corpus, big=True)
    code, _, err, ref_rss = run_measured(ref_corpus, tmp_path / "ref-data")
    assert code == 0, err
    code, out, err, rss = run_measured(corpus, tmp_path / "data")
    assert code == 0, err
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if not ln.startswith("Warning: skipped ")] == []  # nothing bare, e.g. pypdf's
    report = json.loads(out)
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in report["files"]["skipped_files"]}
    for name, (_, reason) in BAD_FILES.items():
        assert reason in reasons.get(name, ""), (name, reasons.get(name))
    assert "larger than ingest.max_file_mb" in reasons["huge.log.txt"]
    assert "not valid UTF-8" in reasons["r\\xe9sum\\xe9.md"] and "rename it" in reasons["dir-r\\xe9sum\\xe9"]
    assert "symlink not followed" in reasons["loop"] and "symlink not followed" in reasons["outside.md"]
    added = {p.rsplit("/", 1)[-1] for p in report["files"]["added_paths"]}
    assert set(GOOD_FILES) | {"deep.md"} <= added and not added & set(BAD_FILES)
    # the 50 MB file was never loaded: peak memory equals the run without it (bytes+str would add >= 100 MB)
    assert rss - ref_rss < BIG_MB / 2, (rss, ref_rss)
    state = assert_consistent(tmp_path / "data")

    # the index has the good files, including odd names; script text never reached BM25
    r = invoke("--data-dir", tmp_path / "data", "query", "--no-llm", "--json", "--k", "10", "zebrafile")
    sources = {h["source"].rsplit("/", 1)[-1] for h in json.loads(r.stdout)["hits"]}
    assert {"with space.md", "ünïcödé 名前.md", "new\nline.md", "deep.md", "scripts-and-text.html"} <= sources
    r = invoke("--data-dir", tmp_path / "data", "query", "--no-llm", "--json", "zqxscriptword")
    assert all("zqxscriptword" not in h["text"] for h in json.loads(r.stdout)["hits"])

    # --strict: one line naming a bad file (newline in a name shown escaped), exit 4, index untouched
    r = invoke("--data-dir", tmp_path / "data", "ingest", "--strict", corpus)
    assert_clean_error(r, 4, "--strict")
    assert assert_consistent(tmp_path / "data")["manifest"] == state["manifest"]
    # human output: one warning line per skipped file, even for a name with a newline
    (corpus / "new\nline.md").write_bytes("na\xefve caf\xe9 ".encode() + b"\xff not utf-8")
    r = invoke("--data-dir", tmp_path / "data", "ingest", "-q", corpus)
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert "skipped docs/new\\nline.md" in r.stderr  # spelled as sources are: relative to the cwd


def test_unreadable_file_is_skipped_and_keeps_its_old_chunks(tmp_path):
    corpus, data = tmp_path / "docs", tmp_path / "data"
    corpus.mkdir()
    (corpus / "a.md").write_text("# A\n\nReadable alpha text.\n")
    (corpus / "b.md").write_text("# B\n\nSoon unreadable beta text.\n")
    env = child_env()
    env["LLMCTL_DATA_DIR"] = str(data)
    cmd = [sys.executable, "-m", "llmctl", "ingest", "--json", "-q", str(corpus)]
    if os.getuid() == 0:  # root reads everything: drop the capabilities that bypass file permissions
        drop = "-dac_override,-dac_read_search"
        cmd = [shutil.which("setpriv"), f"--inh-caps={drop}", f"--bounding-set={drop}", *cmd]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    (corpus / "b.md").chmod(0o000)
    os.utime(corpus / "b.md", None)  # looks changed
    second = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    skipped = json.loads(second.stdout)["files"]["skipped_files"]
    reasons = [(s["path"].rsplit("/", 1)[-1], s["reason"]) for s in skipped]
    assert reasons == [("b.md", "cannot read: Permission denied")]
    assert json.loads(second.stdout)["chunks"]["deleted"] == 0  # its earlier chunks are kept
    # named on its own, it is the same path problem: exit 4 naming the reason, not a usage error (2)
    alone = subprocess.run(cmd[:-1] + [str(corpus / "b.md")], env=env, capture_output=True, text=True)
    assert alone.returncode == 4 and "cannot read: Permission denied" in alone.stderr, alone.stderr
    assert "Traceback" not in alone.stderr and "Invalid value" not in alone.stderr
    (corpus / "b.md").chmod(0o644)


def test_an_indexed_file_emptied_loses_its_chunks_and_a_damaged_one_keeps_them(tmp_path):
    """An empty file holds no text, so the chunks of what it held go (they were served as its
    content); a file now damaged (not UTF-8, binary) may be an accident: its chunks stay."""
    docs, data = tmp_path / "docs", tmp_path / "data"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nAlpha text about zebras.\n")
    (docs / "b.md").write_text("# B\n\nBeta text about zebras.\n")
    (docs / "c.jsonl").write_text('{"_id": "1", "text": "Gamma record about zebras."}\n')
    env = {"LLMCTL_DATA_DIR": str(data)}
    assert invoke("ingest", "-q", docs, env=env).returncode == 0
    (docs / "a.md").write_text("  \n")
    (docs / "c.jsonl").write_text("\n")
    (docs / "b.md").write_bytes("Beta text caf\xe9 ".encode() * 20 + b"\xff")
    r = invoke("ingest", "-q", "--json", docs, env=env)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    files = report["files"]
    # every path spelled the same way: relative to where the run runs (the test's cwd)
    assert sorted(files["changed_paths"]) == ["docs/a.md", "docs/c.jsonl"], files
    assert [(s["path"], s["reason"][:15]) for s in files["skipped_files"]] == [
        ("docs/b.md", "not valid UTF-8")], files
    assert report["chunks"]["deleted"] == 2 and report["chunks"]["total"] == 1
    hits = json.loads(invoke("query", "--no-llm", "--json", "zebras", env=env).stdout)["hits"]
    assert [h["source"].rsplit("/", 1)[-1] for h in hits] == ["b.md"]
    assert_consistent(data)
    (docs / "a.md").write_text("# A\n\nAlpha is back.\n")  # filled again: indexed again
    again = json.loads(invoke("ingest", "-q", "--json", docs, env=env).stdout)
    assert again["chunks"]["added"] == 1 and again["chunks"]["total"] == 2
