"""Business calendar: French public holidays, working days, the SMS window.

Pure and deterministic: the engine receives one as an argument. All datetimes
in and out are timezone-aware; business rules are evaluated in local time
(Europe/Paris by default).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

UTC = dt.timezone.utc


@lru_cache(maxsize=64)
def _french_holidays(year: int) -> frozenset[dt.date]:
    return frozenset(holidays.France(years=year).keys())


def parse_hhmm(value: str) -> dt.time:
    hh, mm = value.split(":")
    return dt.time(int(hh), int(mm))


@dataclass(frozen=True)
class BusinessCalendar:
    tz_name: str = "Europe/Paris"
    window_start: dt.time = dt.time(9, 0)
    window_end: dt.time = dt.time(19, 0)
    working_weekdays: frozenset[int] = field(default_factory=lambda: frozenset({0, 1, 2, 3, 4}))

    def __post_init__(self) -> None:
        if self.window_start >= self.window_end:
            raise ValueError("la fenêtre d'envoi doit commencer avant de finir")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.tz_name)

    # --- conversions ------------------------------------------------------
    def local(self, moment: dt.datetime) -> dt.datetime:
        return moment.astimezone(self.tz)

    def local_date(self, moment: dt.datetime) -> dt.date:
        return self.local(moment).date()

    def at(self, day: dt.date, time: dt.time) -> dt.datetime:
        """The aware UTC instant of a local date and time."""
        return dt.datetime.combine(day, time, tzinfo=self.tz).astimezone(UTC)

    def start_of_day(self, day: dt.date) -> dt.datetime:
        return self.at(day, dt.time(0, 0))

    # --- working days -------------------------------------------------------
    def is_holiday(self, day: dt.date) -> bool:
        return day in _french_holidays(day.year)

    def is_working_day(self, day: dt.date) -> bool:
        return day.weekday() in self.working_weekdays and not self.is_holiday(day)

    def next_working_day(self, day: dt.date) -> dt.date:
        """The first working day strictly after ``day``."""
        d = day + dt.timedelta(days=1)
        while not self.is_working_day(d):
            d += dt.timedelta(days=1)
        return d

    def working_day_on_or_after(self, day: dt.date) -> dt.date:
        """``day`` if it is a working day, else the next one: where a deadline given to a person ends."""
        return day if self.is_working_day(day) else self.next_working_day(day)

    def add_working_days(self, day: dt.date, n: int) -> dt.date:
        d = day
        for _ in range(n):
            d = self.next_working_day(d)
        return d

    def end_of_working_days_after(self, moment: dt.datetime, n: int) -> dt.datetime:
        """The end (local midnight) of the n-th working day after the local day of ``moment``."""
        day = self.add_working_days(self.local_date(moment), n)
        return self.start_of_day(day + dt.timedelta(days=1))

    # --- the SMS sending window --------------------------------------------
    def in_window(self, moment: dt.datetime) -> bool:
        loc = self.local(moment)
        return self.is_working_day(loc.date()) and self.window_start <= loc.time() < self.window_end

    def next_send_slot(self, moment: dt.datetime) -> dt.datetime:
        """The earliest instant at or after ``moment`` inside the sending window."""
        if self.in_window(moment):
            return moment
        loc = self.local(moment)
        day = loc.date()
        if self.is_working_day(day) and loc.time() < self.window_start:
            return self.at(day, self.window_start)
        return self.at(self.next_working_day(day), self.window_start)
