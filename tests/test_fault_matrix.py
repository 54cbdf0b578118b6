"""Every provider fault class, streamed and not, with and without fallback, through the CLI."""

import shutil

import pytest
from fault_matrix import FAULTS, run_matrix


@pytest.mark.slow
def test_every_fault_class_ends_as_designed_with_a_complete_ledger(tmp_path, sample_index):
    data = tmp_path / "data"
    shutil.copytree(sample_index, data)
    report = run_matrix(tmp_path, data)
    assert report["failed"] == [], report["failed"]
    assert report["cases"] == report["survived"] == 90  # 16 fault classes
    assert {r["fault"] for r in report["results"]} == set(FAULTS)
    assert report["ledger_rows"] == report["requests"] > 100  # one row per request, none lost
    assert report["files_with_key"] == []
    by = {r["case"]: r for r in report["results"]}
    # fallback really answered from the backup, and a bad key never fell through to it
    assert by["500 | stream | fallback | persistent"]["requests"] == 3  # 2 attempts, then the backup
    assert by["401 | --json | fallback | persistent"]["requests"] == 1
    assert "LLMCTL_FAULT_MATRIX_KEY" in by["401 | stream | single provider | persistent"]["error"]
