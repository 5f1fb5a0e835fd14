"""A letter is dated on the working day its print batch goes out (issue 9, "Dates")."""
from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from worker.adapters.rendering import letter_date, redate_letter
from worker.domain.calendar import BusinessCalendar
from worker.services.message_content import letter_day

CAL = BusinessCalendar("Europe/Paris")
APP = SimpleNamespace(calendar=CAL, settings=SimpleNamespace(print_batch_time="16:00"))


def at(y, m, d, hh, mm=0):
    return CAL.at(dt.date(y, m, d), dt.time(hh, mm))


def test_a_letter_written_before_the_days_batch_bears_that_day():
    assert letter_day(APP, at(2024, 6, 4, 10)) == dt.date(2024, 6, 4)  # Tuesday morning


def test_after_the_batch_or_on_a_day_off_it_bears_the_next_working_day():
    assert letter_day(APP, at(2024, 6, 4, 16, 0)) == dt.date(2024, 6, 5)  # the batch has run
    assert letter_day(APP, at(2024, 6, 7, 17)) == dt.date(2024, 6, 10)  # Friday evening -> Monday
    assert letter_day(APP, at(2024, 6, 8, 9)) == dt.date(2024, 6, 10)  # Saturday -> Monday
    # 8 May and Ascension (Thursday 9 May 2024) are public holidays: Friday 10 May
    assert letter_day(APP, at(2024, 5, 8, 9)) == dt.date(2024, 5, 10)
    assert letter_day(APP, at(2024, 5, 7, 18)) == dt.date(2024, 5, 10)


def test_redating_sets_the_batch_day_and_only_the_date():
    html = f'<p class="place-date">Redon, le {letter_date(dt.date(2024, 6, 3))}</p><p>avant le lundi 3 juin 2024</p>'
    new, changed = redate_letter(html, dt.date(2024, 6, 5))
    assert changed
    assert 'datetime="2024-06-05">5 juin 2024</time>' in new  # the letter's own date has no weekday (issue 10)
    assert "avant le lundi 3 juin 2024" in new  # a deadline in the text is not a letter date
    again, changed = redate_letter(new, dt.date(2024, 6, 5))
    assert again == new and not changed
