import calendar

import pytest

from llmctl.stats import day_start, month_start, percentile


def test_percentile_nearest_rank():
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.95) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 51.0 and percentile(values, 0.95) == 95.0


@pytest.mark.parametrize("ts, day, month", [
    (calendar.timegm((2026, 11, 22, 12, 30, 0)), (2026, 11, 22), (2026, 11, 1)),
    (calendar.timegm((2026, 1, 1, 0, 0, 0)), (2026, 1, 1), (2026, 1, 1)),
    (calendar.timegm((2024, 2, 29, 23, 59, 59)), (2024, 2, 29), (2024, 2, 1)),
])
def test_utc_period_starts(ts, day, month):
    assert day_start(ts) == calendar.timegm((*day, 0, 0, 0))
    assert month_start(ts) == calendar.timegm((*month, 0, 0, 0))


def test_paired_bootstrap_delta_ci_p_value_and_counts():
    from llmctl.stats import paired_bootstrap

    same = paired_bootstrap([0.0] * 40)
    assert same["delta"] == 0 and same["ci95"] == [0, 0] and same["p_value"] == 1.0 and same["ties"] == 40
    shifted = paired_bootstrap([0.1] * 30 + [0.0] * 10)
    assert shifted["delta"] == 0.075 and shifted["ci95"][0] > 0 and shifted["p_value"] < 0.001
    assert (shifted["wins"], shifted["losses"], shifted["ties"]) == (30, 0, 10)
    noise = paired_bootstrap([0.2, -0.2] * 20 + [0.01])
    assert noise["ci95"][0] < 0 < noise["ci95"][1] and noise["p_value"] > 0.5
    assert paired_bootstrap([0.3, -0.1, 0.2], seed=7) == paired_bootstrap([0.3, -0.1, 0.2], seed=7)  # seedable
