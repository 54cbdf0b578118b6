"""kill -9 a real `llmctl ingest` at 6 random moments; every re-run must end consistent and complete.

The suite runs 6 trials (2 per moment: start-up, writing, late) on 100 documents of 40-120 words
(the longer series: 200 of 40-260): each trial rewrites 8-30 of them. The kill moments follow the
measured length of the runs, so they land in the same phases either way (seeds 1234, 7, 99 and 5:
4, 2, 3 and 4 kills while writing); the test costs 55 CPU-s instead of 85.
`python tests/crash_trials.py --trials 20` runs the longer series reported in docs/robustness.md."""

import json
import os

import pytest
from crash_trials import run_trials


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sigkill_at_random_moments_then_rerun_is_consistent(tmp_path):
    report = run_trials(tmp_path, trials=6, seed=int(os.environ.get("CRASH_SEED", "1234")), n_docs=100,
                        words=(40, 120))
    assert report["errors"] == [], report["errors"]
    assert report["trials"] == 6
    kills = report["kills"]
    assert kills.get("while writing", 0) >= 2, f"too few kills landed while the index was written: {kills}"
    assert kills.get("before writing", 0) >= 1, kills
    assert report["same_chunks_as_clean_ingest"], report
    assert report["same_query_results_as_clean_ingest"], json.dumps(
        {k: report.get(k) for k in ("query_differences", "query_differences_when_asked_again")})
