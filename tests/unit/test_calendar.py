"""The business calendar: French public holidays, working days, the sending window, DST."""
from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.domain.calendar import UTC, BusinessCalendar, parse_hhmm

CAL = BusinessCalendar()
D = dt.date


def paris(y, m, d, hh=0, mm=0) -> dt.datetime:
    return CAL.at(D(y, m, d), dt.time(hh, mm))


# --- holidays and working days --------------------------------------------------------------------


@pytest.mark.parametrize("day", [
    D(2024, 1, 1), D(2024, 4, 1),  # New Year, Easter Monday
    D(2024, 5, 1), D(2024, 5, 8), D(2024, 5, 9),  # Labour Day, Victory Day (Wed), Ascension (Thu)
    D(2024, 5, 20),  # Whit Monday
    D(2024, 8, 15), D(2024, 11, 1), D(2024, 11, 11), D(2024, 12, 25), D(2025, 1, 1), D(2025, 4, 21),
])
def test_public_holidays_are_not_working_days(day):
    assert CAL.is_holiday(day)
    assert not CAL.is_working_day(day)


def test_14_july_2024_is_a_sunday_and_a_holiday_and_the_monday_after_is_worked():
    assert D(2024, 7, 14).weekday() == 6
    assert CAL.is_holiday(D(2024, 7, 14))
    assert CAL.is_working_day(D(2024, 7, 15))  # no "bridge" Monday in France
    assert CAL.next_working_day(D(2024, 7, 12)) == D(2024, 7, 15)


@pytest.mark.parametrize("day,working", [
    (D(2024, 5, 7), True), (D(2024, 5, 10), True),  # the days around 8-9 May
    (D(2024, 5, 11), False), (D(2024, 5, 12), False),  # weekend
    (D(2024, 12, 24), True), (D(2024, 12, 26), True),  # not holidays in Brittany (Alsace-Moselle only)
])
def test_working_days(day, working):
    assert CAL.is_working_day(day) is working


def test_next_working_day_jumps_holidays_and_weekends():
    assert CAL.next_working_day(D(2024, 5, 7)) == D(2024, 5, 10)  # over 8 and 9 May
    assert CAL.next_working_day(D(2024, 5, 10)) == D(2024, 5, 13)  # over the weekend
    assert CAL.next_working_day(D(2024, 5, 17)) == D(2024, 5, 21)  # over Whit Monday
    assert CAL.next_working_day(D(2024, 12, 31)) == D(2025, 1, 2)  # across the year and New Year
    assert CAL.next_working_day(D(2024, 3, 11)) == D(2024, 3, 12)  # strictly after


def test_add_working_days():
    assert CAL.add_working_days(D(2024, 5, 7), 0) == D(2024, 5, 7)
    assert CAL.add_working_days(D(2024, 5, 7), 1) == D(2024, 5, 10)
    assert CAL.add_working_days(D(2024, 5, 7), 2) == D(2024, 5, 13)
    assert CAL.add_working_days(D(2024, 5, 11), 1) == D(2024, 5, 13)  # from a Saturday


# --- end_of_working_days_after ------------------------------------------------------------------------


def test_end_of_next_working_day_is_local_midnight():
    # Thursday 11 April 10:00 -> the end of Friday 12 April = Saturday 00:00 local (22:00 UTC)
    end = CAL.end_of_working_days_after(paris(2024, 4, 11, 10), 1)
    assert end == paris(2024, 4, 13) == dt.datetime(2024, 4, 12, 22, 0, tzinfo=UTC)


def test_end_of_working_days_after_friday_and_holidays():
    assert CAL.end_of_working_days_after(paris(2024, 4, 12, 10), 1) == paris(2024, 4, 16)  # Fri -> end of Mon
    assert CAL.end_of_working_days_after(paris(2024, 5, 7, 15), 1) == paris(2024, 5, 11)  # Tue -> end of Fri 10
    assert CAL.end_of_working_days_after(paris(2024, 5, 7, 15), 0) == paris(2024, 5, 8)  # end of the same day


def test_end_of_working_days_after_uses_the_local_date():
    # 22:30 UTC on Thursday 11 April is already Friday 00:30 in Paris.
    moment = dt.datetime(2024, 4, 11, 22, 30, tzinfo=UTC)
    assert CAL.local_date(moment) == D(2024, 4, 12)
    assert CAL.end_of_working_days_after(moment, 1) == paris(2024, 4, 16)
    # 21:30 UTC is still Thursday 23:30 in Paris.
    assert CAL.end_of_working_days_after(dt.datetime(2024, 4, 11, 21, 30, tzinfo=UTC), 1) == paris(2024, 4, 13)


def test_end_of_working_days_after_across_the_dst_change():
    # Friday 29 March 2024 -> Tuesday 2 April (Easter Monday in between, and DST on Sunday 31).
    end = CAL.end_of_working_days_after(paris(2024, 3, 29, 10), 1)
    assert end == paris(2024, 4, 3) == dt.datetime(2024, 4, 2, 22, 0, tzinfo=UTC)


# --- the sending window ----------------------------------------------------------------------------------


@pytest.mark.parametrize("hh,mm,inside", [
    (8, 59, False), (9, 0, True), (12, 0, True), (18, 59, True), (19, 0, False), (23, 30, False), (0, 0, False),
])
def test_window_edges_on_a_working_day(hh, mm, inside):
    assert CAL.in_window(paris(2024, 3, 11, hh, mm)) is inside  # a Monday


def test_window_edges_to_the_second():
    assert not CAL.in_window(paris(2024, 3, 11, 8, 59) + dt.timedelta(seconds=59))
    assert CAL.in_window(paris(2024, 3, 11, 18, 59) + dt.timedelta(seconds=59))


@pytest.mark.parametrize("moment", [
    paris(2024, 3, 9, 12),  # Saturday
    paris(2024, 3, 10, 12),  # Sunday
    paris(2024, 5, 8, 12),  # 8 May
    paris(2024, 5, 9, 12),  # Ascension
    paris(2024, 7, 14, 12),  # 14 July (a Sunday in 2024)
])
def test_no_window_on_weekends_and_holidays(moment):
    assert not CAL.in_window(moment)


@pytest.mark.parametrize("moment,expected", [
    (paris(2024, 3, 11, 8, 59), paris(2024, 3, 11, 9)),  # before the window: same day 09:00
    (paris(2024, 3, 11, 9, 0), paris(2024, 3, 11, 9, 0)),  # inside: unchanged
    (paris(2024, 3, 11, 18, 59), paris(2024, 3, 11, 18, 59)),
    (paris(2024, 3, 11, 19, 0), paris(2024, 3, 12, 9)),  # closed: next working day
    (paris(2024, 3, 8, 19, 0), paris(2024, 3, 11, 9)),  # Friday evening -> Monday
    (paris(2024, 3, 9, 23, 30), paris(2024, 3, 11, 9)),  # Saturday night -> Monday
    (paris(2024, 5, 7, 20), paris(2024, 5, 10, 9)),  # over 8 and 9 May
    (paris(2024, 5, 8, 8), paris(2024, 5, 10, 9)),  # early on a holiday
    (paris(2024, 7, 14, 10), paris(2024, 7, 15, 9)),
])
def test_next_send_slot(moment, expected):
    assert CAL.next_send_slot(moment) == expected
    assert CAL.in_window(CAL.next_send_slot(moment))


def test_next_send_slot_across_the_spring_dst_change():
    # Saturday 30 March 2024 evening; clocks go forward on Sunday 31; Monday 1 April is Easter Monday.
    slot = CAL.next_send_slot(paris(2024, 3, 30, 20))
    assert slot == dt.datetime(2024, 4, 2, 7, 0, tzinfo=UTC)  # Tuesday 09:00 CEST (UTC+2)
    assert CAL.local(slot).time() == dt.time(9, 0)


def test_next_send_slot_across_the_autumn_dst_change():
    # Saturday 26 October 2024; clocks go back on Sunday 27.
    slot = CAL.next_send_slot(paris(2024, 10, 26, 12))
    assert slot == dt.datetime(2024, 10, 28, 8, 0, tzinfo=UTC)  # Monday 09:00 CET (UTC+1)
    # the same UTC time of day is inside the window before the change and outside after it
    assert CAL.in_window(dt.datetime(2024, 10, 25, 7, 30, tzinfo=UTC))  # 09:30 CEST
    assert not CAL.in_window(dt.datetime(2024, 10, 28, 7, 30, tzinfo=UTC))  # 08:30 CET


def test_days_are_local_days_across_dst():
    assert CAL.start_of_day(D(2024, 3, 31)) == dt.datetime(2024, 3, 30, 23, 0, tzinfo=UTC)
    assert CAL.start_of_day(D(2024, 4, 1)) == dt.datetime(2024, 3, 31, 22, 0, tzinfo=UTC)
    assert CAL.start_of_day(D(2024, 4, 1)) - CAL.start_of_day(D(2024, 3, 31)) == dt.timedelta(hours=23)
    assert CAL.start_of_day(D(2024, 10, 28)) - CAL.start_of_day(D(2024, 10, 27)) == dt.timedelta(hours=25)


def test_conversions_are_aware_utc():
    at = CAL.at(D(2024, 7, 1), dt.time(10, 0))
    assert at.tzinfo is UTC and at == dt.datetime(2024, 7, 1, 8, 0, tzinfo=UTC)
    assert CAL.local(at).hour == 10 and CAL.local_date(dt.datetime(2024, 7, 1, 22, 30, tzinfo=UTC)) == D(2024, 7, 2)


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2027, 12, 31),
                    timezones=st.just(UTC)))
def test_next_send_slot_is_the_earliest_instant_in_the_window(moment):
    slot = CAL.next_send_slot(moment)
    assert slot >= moment and CAL.in_window(slot)
    if slot > moment:
        # nothing in between is inside the window: the slot opens a window (09:00 local of a working day)
        assert CAL.local(slot).time() == dt.time(9, 0) and CAL.is_working_day(CAL.local_date(slot))
        assert not CAL.in_window(moment)


# --- construction ------------------------------------------------------------------------------------------


def test_window_must_start_before_it_ends():
    with pytest.raises(ValueError):
        BusinessCalendar(window_start=dt.time(19), window_end=dt.time(9))
    with pytest.raises(ValueError):
        BusinessCalendar(window_start=dt.time(9), window_end=dt.time(9))


def test_custom_window_and_weekdays():
    cal = BusinessCalendar(window_start=dt.time(8), window_end=dt.time(12), working_weekdays=frozenset({0, 1, 2, 3, 4, 5}))
    assert cal.is_working_day(D(2024, 3, 9))  # Saturday worked
    assert cal.next_send_slot(paris(2024, 3, 8, 13)) == paris(2024, 3, 9, 8)
    assert not cal.is_working_day(D(2024, 5, 8))  # holidays still off


def test_parse_hhmm():
    assert parse_hhmm("09:00") == dt.time(9, 0) and parse_hhmm("18:45") == dt.time(18, 45)
    with pytest.raises(ValueError):
        parse_hhmm("9h")
