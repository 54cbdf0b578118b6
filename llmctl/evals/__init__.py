"""Golden-query suites and BEIR datasets: metrics per stage, answer checks, CI gates, reports."""
