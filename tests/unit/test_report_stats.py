"""The arithmetic of the indicators (worker/domain/indicators.py): median, nearest-rank percentile, shares
of a cohort still being followed, months."""
from __future__ import annotations

import datetime as dt

import pytest

from worker.domain.indicators import (age_years, delay_stats, median, month_label, month_starts, percentile,
                                      ratio)


def test_median_and_nearest_rank_percentile():
    assert median([]) is None and percentile([], 90) is None
    assert median([7]) == 7 and percentile([7], 90) == 7
    assert median([9, 2, 5]) == 5 and median([2, 3, 4, 5, 6, 7, 8, 9]) == 5.5
    # nearest rank: ceil(0.9 × n)-th smallest, always one of the values
    assert percentile([2, 3, 4, 5, 6, 7, 8, 9], 90) == 9
    assert percentile(list(range(1, 11)), 90) == 9 and percentile(list(range(1, 21)), 90) == 18
    assert percentile([24, 9], 90) == 24 and percentile([1, 2, 3, 4], 50) == 2
    with pytest.raises(ValueError):
        percentile([1], 0)


def test_shares_count_only_droits_old_enough_to_tell():
    # (delay in days or None, age of the droit in days)
    stats = delay_stats([(3, 40), (20, 40), (None, 40), (2, 5), (None, 5), (16, 20)])
    assert (stats.cohort, stats.reached, stats.not_yet) == (6, 4, 2)
    assert stats.median == 9.5 and stats.p90 == 20
    within15, within30 = stats.within
    # 15 days: the three 40-day-old droits, the 20-day-old one, and the young one invited on day 2 (not the
    # young one still waiting: it has 10 days left)
    assert (within15.count, within15.of) == (2, 5) and stats.share(15) == pytest.approx(0.4)
    # 30 days: the three old droits, and the two younger ones already invited (on days 2 and 16)
    assert (within30.count, within30.of) == (4, 5) and stats.share(30) == pytest.approx(0.8)
    empty = delay_stats([])
    assert (empty.median, empty.p90, empty.share(15)) == (None, None, None)
    assert ratio(1, 0) is None and ratio(1, 4) == 0.25


def test_months_include_the_empty_ones():
    assert month_starts(dt.date(2024, 11, 20), dt.date(2025, 2, 1)) == [
        dt.date(2024, 11, 1), dt.date(2024, 12, 1), dt.date(2025, 1, 1), dt.date(2025, 2, 1)]
    assert month_label(dt.date(2024, 8, 1)) == "août 2024" and month_label(dt.date(2024, 2, 1), short=True) == "févr. 24"
    assert age_years(dt.date(1980, 6, 4), dt.date(2024, 6, 3)) == 43 and age_years(None, dt.date(2024, 1, 1)) is None
    assert age_years(dt.date(1980, 6, 3), dt.date(2024, 6, 3)) == 44
