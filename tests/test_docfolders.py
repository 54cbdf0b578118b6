"""Documentation folders as Debian ships them (/usr/share/doc/PACKAGE): compressed pages,
extensionless README/AUTHORS, MyST Markdown; progress that knows its end; ingest --watch's
start line; failed commands leave no data dir behind."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cli import assert_clean_error, child_env, invoke
from typer.testing import CliRunner

from llmctl import Workspace
from llmctl.cli import app
from llmctl.ingest.discover import UNSUPPORTED, discover
from llmctl.ingest.loaders import PLAIN, SkipFile, kind_of, load_documents
from llmctl.ingest.markup import clean_myst
from llmctl.records import SkippedFile

PAGE_MD = """# Configuration

pip reads configuration files.

## Custom index

Set index-url in the [global] section to use a custom package index instead of PyPI:
the zanzibar mirror answers every request.
"""
PAGE_HTML = """<html><head><title>Q</title></head><body><main><h1>Quokka guide</h1>
<p>The quokka lives on Rottnest Island and eats leaves of the shrub peppermint.</p></main></body></html>"""
COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


def _workspace(tmp_path: Path, embedder, **overrides) -> Workspace:
    ws = Workspace(data_dir=tmp_path / "data", **{"rerank.enabled": False, **overrides})
    ws.embedder = embedder  # the session's loaded model
    return ws


@pytest.mark.parametrize("ext", [".gz", ".bz2", ".xz"])
def test_compressed_markdown_and_html_are_read_as_the_format_under_the_suffix(tmp_path, ext):
    md = tmp_path / f"configuration.md{ext}"
    md.write_bytes(COMPRESS[ext](PAGE_MD.encode()))
    html = tmp_path / f"quokka.html{ext}"
    html.write_bytes(COMPRESS[ext](PAGE_HTML.encode()))
    assert kind_of(md) == "markdown" and kind_of(html) == "html"
    [doc] = load_documents(md, "topics/" + md.name, md.read_bytes())
    assert doc.kind == "markdown" and doc.title == "Configuration" and "zanzibar mirror" in doc.text
    assert doc.source == f"topics/configuration.md{ext}"
    [page] = load_documents(html, html.name, html.read_bytes())
    assert page.kind == "html" and page.title == "Quokka guide" and "Rottnest" in page.text
    code = tmp_path / f"tool.py{ext}"
    code.write_bytes(COMPRESS[ext](b"def f():\n    return 1\n"))
    [src] = load_documents(code, code.name, code.read_bytes())
    assert src.language == "python" and src.title == code.name


def test_compressed_pages_are_cited_by_their_name_on_disk(tmp_path, embedder):
    docs = tmp_path / "doc"
    (docs / "topics").mkdir(parents=True)
    (docs / "topics" / "configuration.md.gz").write_bytes(gzip.compress(PAGE_MD.encode()))
    (docs / "quokka.html.xz").write_bytes(lzma.compress(PAGE_HTML.encode()))
    (docs / "changelog.Debian.gz").write_bytes(gzip.compress(b"pkg (1.0-1) unstable; urgency=low\n\n"
                                                             b"  * Wombat support added for burrows.\n"))
    ws = _workspace(tmp_path, embedder)
    report = ws.ingest([docs])
    assert not report.files_skipped and len(report.files_added) == 3
    hit = ws.search("custom package index zanzibar mirror", k=1)[0]
    assert hit.location().startswith("doc/topics/configuration.md.gz:")
    assert re.search(r"configuration\.md\.gz:\d+-\d+", hit.location())
    assert ws.search("wombat burrows", k=1)[0].chunk["source"] == "doc/changelog.Debian.gz"
    assert ws.search("quokka Rottnest", k=1)[0].chunk["source"] == "doc/quokka.html.xz"


def test_a_compression_bomb_is_refused_with_a_reason(tmp_path, embedder):
    bomb = tmp_path / "doc" / "bomb.txt.gz"
    bomb.parent.mkdir()
    bomb.write_bytes(gzip.compress(b"a" * (3 * 1024 * 1024), 9))  # 3 MB of text in a few KB
    assert bomb.stat().st_size < 20_000
    with pytest.raises(SkipFile, match=r"decompresses to more than ingest.max_file_mb \(1 MB\)"):
        list(load_documents(bomb, bomb.name, bomb.read_bytes(), max_bytes=1024 * 1024))
    (tmp_path / "doc" / "ok.md").write_text("# Fine\n\nA page that is fine to read.\n")
    report = _workspace(tmp_path, embedder, **{"ingest.max_file_mb": 1}).ingest([tmp_path / "doc"])
    [skipped] = report.files_skipped
    assert skipped.path.endswith("bomb.txt.gz") and "decompresses to more than" in skipped.reason
    bad = tmp_path / "broken.md.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    with pytest.raises(SkipFile, match="not a valid gzip file"):
        list(load_documents(bad, bad.name, bad.read_bytes()))


def test_extensionless_text_files_are_read_and_binaries_skipped(tmp_path):
    folder = tmp_path / "doc"
    folder.mkdir()
    (folder / "README").write_text("Valgrind for Debian\n\nInstall libc6-dbg for i386 support.\n")
    (folder / "AUTHORS").write_text("Julian Seward wrote Memcheck. Müller did the KDE bits.\n")
    (folder / "README.Debian").write_text("Load debian.supp with --suppressions.\n")
    (folder / "NEWS.gz").write_bytes(gzip.compress(b"Version 2: faster.\n"))
    (folder / "valgrind-tool").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(200) + b"text")  # a program
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / ".env").write_text("TOKEN=secret\n")  # a dot file is not a document
    skipped: list[SkippedFile] = []
    found = sorted(f.path.name for f in discover([folder], _ingest_cfg(), skipped))
    assert found == ["AUTHORS", "NEWS.gz", "README", "README.Debian"]
    assert sorted((Path(s.path).name, s.reason) for s in skipped) == [
        (".env", UNSUPPORTED), ("image.png", UNSUPPORTED), ("valgrind-tool", UNSUPPORTED)]
    assert kind_of(folder / "README") == PLAIN and kind_of(folder / "changelog.Debian.gz") == PLAIN
    # what follows the last dot is part of the name, not a type: offered as text too
    for name in ("v2.13-ReleaseNotes.gz", "MORE.STUFF.gz", "descore.README.gz", "notes.txt~"):
        assert kind_of(folder / name) == PLAIN, name
    for name in ("photo.jpeg", "data.json.gz", "page.1", "archive.7z", "Thesis.PDF"):
        assert kind_of(folder / name) != PLAIN, name
    [doc] = load_documents(folder / "AUTHORS", "AUTHORS", (folder / "AUTHORS").read_bytes())
    assert doc.kind == "text" and "Memcheck" in doc.text
    # named explicitly, a binary is still refused, with its reason
    with pytest.raises(SkipFile, match="binary"):
        list(load_documents(folder / "valgrind-tool", "valgrind-tool", (folder / "valgrind-tool").read_bytes()))


def _ingest_cfg():
    from llmctl.config import IngestConfig

    return IngestConfig()


MYST = """(configuration)=

# Configuration

```{toctree}
:hidden:

topics/index
cli/index
```

```{note}
Options can also be given as environment variables.
```

:::{admonition} Custom index
:class: tip
Set index-url in the global section.
:::

```{seealso}
{doc}`../cli/pip_config` command manages it.
```

````{tab} Unix
```ini
[global]
index-url = https://example.org/simple
```
````

```{code-block} python
import pip
```

```{eval-rst}
.. note:: Read from reST.
```
"""


def test_myst_directive_fences_are_handled_like_rest_directives(tmp_path):
    out = clean_myst(MYST)
    assert out.count("\n") == MYST.count("\n")  # lines kept: citations still point at the file
    lines = out.split("\n")
    assert "topics/index" not in out and ":hidden:" not in out and "{toctree}" not in out
    assert "Note: Options can also be given" not in out  # the note's text is on its own line...
    assert "Note" in lines and "Options can also be given as environment variables." in lines
    assert "Custom index" in lines and ":class: tip" not in out and "Set index-url in the global section." in lines
    assert "See also" in lines and "../cli/pip_config command manages it." in lines
    assert "Unix" in lines and "index-url = https://example.org/simple" in lines and "```ini" in lines
    assert "```python" in lines and "import pip" in lines
    assert "Note: Read from reST." in lines
    assert "(configuration)=" not in out and not any(ln.startswith(":::") for ln in lines)
    page = tmp_path / "configuration.md.gz"
    page.write_bytes(gzip.compress(MYST.encode()))
    [doc] = load_documents(page, page.name, page.read_bytes())
    assert doc.title == "Configuration" and "topics/index" not in doc.text


def test_an_admonition_argument_reads_like_rest():
    out = clean_myst("```{warning} Do not run as root\nIt breaks things.\n```\n")
    assert out.split("\n")[:2] == ["Warning: Do not run as root", "It breaks things."]


# -- progress ------------------------------------------------------------------------------

STYLE = re.compile(r"\x1b\[[0-9;]*m")  # colours: removed
MOVES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")  # cursor moves, erases: a new line


def test_ingest_in_a_terminal_shows_totals_and_an_eta_while_embedding(tmp_path):
    import pty

    docs = tmp_path / "docs"
    docs.mkdir()
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()
    for n in range(150):
        body = " ".join(words[(n + i) % len(words)] for i in range(60))
        (docs / f"page{n:03d}.md").write_text(f"# Page {n}\n\n{body} {n}.\n\n## More\n\n{body} again {n}.\n")
    primary, secondary = pty.openpty()
    env = child_env({"TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"})
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "--data-dir", str(tmp_path / "data"), "ingest",
                             str(docs)], stdin=secondary, stdout=secondary, stderr=secondary, env=env,
                            cwd=tmp_path, close_fds=True)
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=600)
    os.close(primary)
    out = MOVES.sub("\n", STYLE.sub("", b"".join(chunks).decode("utf-8", "replace")))
    assert proc.returncode == 0, out[-2000:]
    embedding = [ln for ln in out.split("\n") if "Embedding" in ln and "Embedding:" not in ln]  # the bar
    assert embedding, out[-3000:]
    embedded = int(re.search(r"Chunks: (\d+) embedded", out).group(1))
    totals = [int(total.replace(",", "")) for ln in embedding for _, total in re.findall(r"([\d,]+)/([\d,]+)", ln)]
    assert totals and set(totals) == {embedded}, (embedded, embedding[-5:])
    assert "/?" not in " ".join(embedding)
    assert any(re.search(r"ETA \d+:\d\d:\d\d", ln) for ln in embedding), embedding[-5:]
    assert re.search(r"Embedding: [\d,]+ in \d+\.\d s", out)  # the one-line summary
    assert "Ingested 150 file(s)" in out


def test_no_progress_without_a_terminal_or_with_quiet(tmp_path, embedder):
    from llmctl import render

    assert not render.RichProgress(enabled=True).enabled  # pytest's stderr is not a terminal
    task = render.RichProgress(enabled=False).task("Embedding", 10)
    task.set_total(12)
    task.advance(3)
    task.done()  # a no-op: nothing printed


# -- watch and data dirs -------------------------------------------------------------------

def test_watch_says_it_is_watching_once_the_watcher_is_up(tmp_path, embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nSome text about otters.\n")
    ws = _workspace(tmp_path, embedder)
    stop = threading.Event()
    started: list[float] = []

    def on_start() -> None:
        started.append(time.monotonic())
        stop.set()

    thread = threading.Thread(target=ws.watch, args=([docs],),
                              kwargs={"stop": stop, "on_report": lambda r: None, "on_error": lambda e: None,
                                      "on_start": on_start, "debounce_ms": 50})
    thread.start()
    thread.join(120)
    assert not thread.is_alive() and len(started) == 1


def test_ingest_watch_prints_the_watching_line_on_stderr(tmp_path, monkeypatch):
    def fake_watch(self, paths, *, stop, on_report, on_error, on_start=None, **options):
        on_start()

    monkeypatch.setattr(Workspace, "watch", fake_watch)
    (tmp_path / "docs").mkdir()
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "data"), "ingest", "--watch",
                                      str(tmp_path / "docs")])
    assert result.exit_code == 0, result.output
    assert f"watching {tmp_path / 'docs'}… (Ctrl-C to stop)" in result.stderr
    assert "watching" not in result.stdout


@pytest.mark.parametrize("args", [
    ["query", "x"],
    ["ingest", "missing"],
    ["ingest", "empty"],
    ["ingest", "--dry-run", "missing"],
    ["remove", "x"],
])
def test_a_command_that_fails_before_writing_makes_no_data_dir(tmp_path, args):
    (tmp_path / "empty").mkdir()
    for data_dir in (["--data-dir", "new/nested"], []):  # the default is ./.llmctl
        result = CliRunner().invoke(app, [*data_dir, *args])
        assert result.exit_code != 0
        assert not (tmp_path / "new").exists() and not (tmp_path / ".llmctl").exists(), args


def test_a_model_that_fails_to_load_leaves_no_data_dir(tmp_path):
    """The manifest's settings and Chroma's empty store were made before the model loaded: the
    failed first ingest left a data dir with nothing in it."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\nSome text.\n")
    (tmp_path / "gpu.yaml").write_text("embedding:\n  device: 'cuda:7'\n  backend: torch\n")
    r = invoke("--config", "gpu.yaml", "--data-dir", "new", "ingest", "docs", cwd=tmp_path)
    assert_clean_error(r, 3, "embedding.device 'cuda:7'")
    assert not (tmp_path / "new").exists()


def test_a_data_dir_that_holds_the_users_own_files_is_refused_and_kept(tmp_path, embedder):
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("mine")
    ws = _workspace(tmp_path, embedder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="holds files llmctl did not write"):  # a folder of the user's own
        ws.ingest([tmp_path / "empty"])
    assert (data / "notes.txt").exists()
