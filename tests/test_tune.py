"""``llmctl tune``: a grid on the tune half, confirmed on the check half, written only when the gain
is significant. In process, real embedding model, real index."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml
from cli import assert_clean_error, invoke

from llmctl.config import load_config
from llmctl.errors import InputError
from llmctl.evals.tune import half_of, write_change
from llmctl.workspace import Workspace

# Fifty pages that say the same thing except for their error code: only BM25 can tell them apart.
CODES = [f"QX{n:04d}" for n in random.Random(7).sample(range(1000, 9999), 50)]


def _corpus(tmp_path: Path) -> tuple[Path, Path]:
    docs = tmp_path / "docs"
    docs.mkdir()
    for code in CODES:
        (docs / f"{code.lower()}.md").write_text(
            f"# Error {code}\n\nThe service stopped because a request could not be completed. Check the "
            f"logs, wait a minute and retry; if error {code} persists, contact the operator on call.\n")
    suite = {"name": "codes", "metrics": ["mrr@10", "hit@1"],
             "cases": [{"id": f"case-{code}", "query": f"What does error {code} mean?",
                        "expected": [f"{code.lower()}.md"]} for code in CODES]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return docs, path


def test_the_split_is_fixed_by_the_case_ids_and_about_even():
    ids = [f"case-{n}" for n in range(1000)]
    assert [half_of(i) for i in ids] == [half_of(i) for i in ids]
    assert 430 < sum(half_of(i) == "tune" for i in ids) < 570


def test_a_significant_gain_is_written_into_the_config_keeping_its_comments(tmp_path, embedder, monkeypatch):
    docs, suite = _corpus(tmp_path)
    config = tmp_path / "llmctl.yaml"
    config.write_text("# our settings\nretrieval:\n  k: 5  # five hits\n  bm25_weight: 0.0  # dense only\n"
                      "  page_weight: 0\nrerank:\n  enabled: false\n")
    monkeypatch.chdir(tmp_path)
    ws = Workspace(config_path=config, data_dir=tmp_path / "data")
    ws.__dict__["embedder"] = embedder
    with ws:
        ws.ingest([docs])
        report = ws.tune(suite, write=True)
    assert report["current"] == "zscore, BM25 0, page 0"
    assert report["decision"] == "change", report["reason"]
    assert report["check"]["p_value"] < 0.05 and report["check"]["delta"] > 0
    assert report["change"]["bm25_weight"] > 0
    text = config.read_text()
    assert "# our settings" in text and "k: 5  # five hits" in text and "enabled: false" in text
    cfg = load_config(config, {})
    assert cfg.retrieval.bm25_weight == report["change"]["bm25_weight"] and cfg.retrieval.k == 5
    # run again: the written settings are now the current ones, and they stand
    ws = Workspace(config_path=config, data_dir=tmp_path / "data")
    ws.__dict__["embedder"] = embedder
    with ws:
        again = ws.tune(suite)
    assert again["decision"] == "default stands"


def test_too_few_cases_change_nothing_and_say_how_many_are_needed(tmp_path, embedder):
    docs, suite = _corpus(tmp_path)
    ws = Workspace(data_dir=tmp_path / "data")
    ws.__dict__["embedder"] = embedder
    with ws:
        ws.ingest([docs])
    r = invoke("--data-dir", "data", "tune", suite, "--limit", "12", "--write", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "The current settings stand: too few judged cases" in r.stdout
    assert not (tmp_path / "llmctl.yaml").exists()


def test_write_change_appends_a_block_or_refuses_an_inline_mapping(tmp_path):
    plain = tmp_path / "a.yaml"
    plain.write_text("data_dir: x\n")
    write_change(plain, {"fusion": "zscore", "bm25_weight": 0.3})
    assert yaml.safe_load(plain.read_text()) == {"data_dir": "x", "retrieval": {"fusion": "zscore", "bm25_weight": 0.3}}
    inline = tmp_path / "b.yaml"
    inline.write_text("retrieval: {k: 3}\n")
    with pytest.raises(InputError, match="retrieval: on one line"):
        write_change(inline, {"bm25_weight": 0.3})
    assert inline.read_text() == "retrieval: {k: 3}\n"


def test_a_bad_metric_or_limit_is_one_line_and_exit_2_before_any_work(tmp_path):
    _, suite = _corpus(tmp_path)  # no index either: the arguments are checked first
    assert_clean_error(invoke("--data-dir", tmp_path / "data", "tune", suite, "--metric", "bogus"), 2,
                       "--metric", "unknown metric 'bogus'")
    assert_clean_error(invoke("--data-dir", tmp_path / "data", "tune", suite, "--limit", "0"), 2,
                       "--limit", "at least 1")
    assert not (tmp_path / "data").exists()
