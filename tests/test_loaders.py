import json
from pathlib import Path

import pytest

from llmctl.ingest.loaders import SkipFile, html_to_text, load_documents

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


def load(path: Path, data: bytes | None = None):
    return list(load_documents(path, path.name, path.read_bytes() if data is None else data))


def test_html_keeps_title_headings_and_visible_text_only():
    title, text = html_to_text((SAMPLE / "reference" / "error-codes.html").read_text())
    assert title == "Kestrel Backup error codes"
    assert "# Error codes" in text and "## Reporting a new error" in text
    assert "KB-1042" in text and "repository locked" in text
    assert "analytics" not in text and "border-collapse" not in text


def test_pdf_text_per_page_with_page_numbers():
    [doc] = load(SAMPLE / "policies" / "support-sla.pdf")
    assert doc.kind == "pdf"
    assert [p for _, p in doc.pages] == [1, 2]
    second = doc.pages[1][0]
    assert "99.9%" in doc.text[:second]
    assert "Service credits" in doc.text[second:]


def test_jsonl_one_document_per_line(tmp_path):
    p = tmp_path / "corpus.jsonl"
    rows = [{"_id": "d1", "title": "T1", "text": "alpha"}, {"id": "d2", "text": "beta"}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    docs = load(p)
    assert [(d.doc_id, d.title, d.text) for d in docs] == [
        ("corpus.jsonl#d1", "T1", "alpha"), ("corpus.jsonl#d2", "", "beta")]


@pytest.mark.parametrize("name, data, reason", [
    ("a.txt", b"", "empty file"),
    ("a.md", b"  \n\t\n", "empty file"),
    ("a.txt", b"abc\x00\x01\x02", "binary file"),
    ("a.md", b"caf\xe9 latin-1", "not valid UTF-8"),
    ("a.pdf", b"%PDF-1.4 garbage", "unreadable PDF"),
    ("a.jsonl", b'{"_id": 1, "text": "x"}\n{broken\n', "line 2: invalid JSON"),
    ("a.jsonl", b'{"title": "no id"}\n', "needs an '_id'"),
    ("a.xyz", b"hello", "unsupported file type"),
])
def test_bad_files_give_a_reason(tmp_path, name, data, reason):
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(SkipFile, match=reason):
        load(p)


def test_utf8_bom_is_dropped(tmp_path):
    p = tmp_path / "bom.md"
    p.write_bytes(b"\xef\xbb\xbf# Title\n\ntext\n")
    [doc] = load(p)
    assert doc.text.startswith("# Title") and doc.title == "Title"


def test_code_file_keeps_language():
    [doc] = load(SAMPLE / "examples" / "pre_backup_hook.py")
    assert (doc.kind, doc.language) == ("code", "python")
