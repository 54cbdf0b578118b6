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
