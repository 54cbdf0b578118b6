"""kill -9 a real `llmctl ingest` at 20 random moments; every re-run must end consistent and complete."""

import os

import pytest
from crash_trials import run_trials


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_is_consistent(tmp_path):
    report = run_trials(tmp_path, trials=20, seed=int(os.environ.get("CRASH_SEED", "1234")))
    assert report["errors"] == [] and report["failures"] == 0, report
    assert report["trials"] == 20
    kills = report["kills"]
    assert kills.get("while writing", 0) >= 5, f"too few kills landed while the index was written: {kills}"
    assert kills.get("before writing", 0) >= 3, kills
    assert report["same_chunks_as_clean_ingest"] and report["same_query_results_as_clean_ingest"]
