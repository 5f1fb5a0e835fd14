"""The arithmetic of the indicators (``relance report``, :mod:`worker.services.report`): pure, no I/O.

What is counted, and from which facts, is written in ``docs/indicators.md``; this module holds the
part that is only arithmetic, so that it is defined once and tested on its own:

* :func:`median` — the middle value; with an even count, the mean of the two middle values;
* :func:`percentile` — the *nearest-rank* percentile: the smallest value such that at least
  ``p`` % of the values are at or below it (always one of the values, never an interpolation);
* :func:`delay_stats` — a cohort followed until today: among the droits that are at least ``N``
  days old (or whose fact already happened within ``N`` days), the share whose fact happened within
  ``N`` days. A droit opened 5 days ago and not yet invited is not counted as "not invited within 15
  days": it still has 10 days.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

SHARE_DAYS = (15, 30)  # the "share within 15 and 30 days"
MONTHS_FR = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
             "novembre", "décembre")
MONTHS_SHORT_FR = ("janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.", "nov.",
                   "déc.")


def median(values: Sequence[float]) -> float | None:
    """The median (mean of the two middle values for an even count); None without values."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return None
    middle = n // 2
    if n % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: the ``ceil(p/100 × n)``-th smallest value; None without values."""
    if not 0 < p <= 100:
        raise ValueError("p must be in (0, 100]")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(numerator: int, denominator: int) -> float | None:
    """``numerator / denominator`` (a fraction, 0 to 1), None when there is nothing to divide by."""
    return None if not denominator else numerator / denominator


@dataclass(frozen=True)
class Within:
    days: int
    count: int  # droits whose fact happened within `days` days
    of: int  # droits old enough to tell (see delay_stats)

    @property
    def share(self) -> float | None:
        return ratio(self.count, self.of)


@dataclass(frozen=True)
class DelayStats:
    cohort: int  # droits considered
    reached: int  # of which the fact happened
    median: float | None  # days, among those reached
    p90: float | None  # days, nearest rank, among those reached
    within: tuple[Within, ...]

    @property
    def not_yet(self) -> int:
        return self.cohort - self.reached

    def share(self, days: int) -> float | None:
        return next((w.share for w in self.within if w.days == days), None)


def delay_stats(items: Iterable[tuple[int | None, int]], thresholds: Sequence[int] = SHARE_DAYS) -> DelayStats:
    """``items``: for each droit, (days from the droit to the fact — None if it has not happened —,
    age of the droit in days at the report's date)."""
    items = list(items)
    delays = [d for d, _age in items if d is not None]
    within = []
    for days in thresholds:
        count = sum(1 for d, _age in items if d is not None and d <= days)
        old_enough = sum(1 for d, age in items if age >= days or (d is not None and d <= days))
        within.append(Within(days, count, old_enough))
    return DelayStats(cohort=len(items), reached=len(delays), median=median(delays), p90=percentile(delays, 90),
                      within=tuple(within))


# --- months ---------------------------------------------------------------------------------------------


def month_of(day: dt.date) -> dt.date:
    return day.replace(day=1)


def next_month(day: dt.date) -> dt.date:
    return dt.date(day.year + (day.month == 12), day.month % 12 + 1, 1)


def month_starts(first: dt.date, last: dt.date) -> list[dt.date]:
    """The first day of every month from ``first``'s to ``last``'s, both included (empty months too)."""
    out = []
    month = month_of(first)
    while month <= last:
        out.append(month)
        month = next_month(month)
    return out


def month_label(month: dt.date, short: bool = False) -> str:
    """``mars 2024`` (``mars 24`` short)."""
    if short:
        return f"{MONTHS_SHORT_FR[month.month - 1]} {month:%y}"
    return f"{MONTHS_FR[month.month - 1]} {month.year}"


def age_years(birth: dt.date | None, on: dt.date) -> int | None:
    """Age in full years on ``on``."""
    if birth is None:
        return None
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
