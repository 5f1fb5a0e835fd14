"""Examples of the pure engine, path by path and event by event.

Most tests run a person's life in the in-memory simulator (tests/engine_sim.py),
which applies the engine's actions the way the repository does and sends due
messages through ``send_verdict``; a few call the engine directly.
All times are given in local time (Europe/Paris) through :func:`paris`.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from tests.engine_sim import Sim, first_slot
from worker.domain.calendar import BusinessCalendar
from worker.domain.engine import EngineError, apply, assign_slot, decide, new_case, send_verdict
from worker.domain.model import (
    APPOINTMENT,
    AWAITING_RECEIPT,
    CLOSED,
    ENTER,
    EVENT_TYPES,
    HELD,
    OBSERVATION,
    PAUSED,
    REVIEW,
    TASK,
    WAITING,
    AppointmentOutcome,
    CancelPending,
    Event,
    Flag,
    MarkReturned,
    MessageView,
    NeedSlot,
    OpenCase,
    PlanMessage,
    ReplanMessage,
    RecordAppointment,
    ReferToCommission,
    StepChanged,
)
from worker.adapters.config_files import load_config

ROOT = Path(__file__).resolve().parents[2]
POLICY = load_config(ROOT / "config").policy
CAL = BusinessCalendar()
DAY = dt.timedelta(days=1)
ORGS = {"cd": "CDAS-REDON", "ft": "FT-REDON", "ft_unregistered": "FT-REDON", "ml": "ML-REDON"}


def paris(y, m, d, hh=0, mm=0) -> dt.datetime:
    """An aware UTC instant from a local (Europe/Paris) date and time."""
    return CAL.at(dt.date(y, m, d), dt.time(hh, mm))


def local(moment: dt.datetime) -> dt.datetime:
    return CAL.local(moment).replace(tzinfo=None)


MONDAY = paris(2024, 3, 4, 11)  # a Monday, no holiday around


def sim(path="cd", start=MONDAY, droit_days=3, phone=True, email=True, address=True, **kw) -> Sim:
    droit = CAL.local_date(start) - dt.timedelta(days=droit_days)
    return Sim(POLICY, CAL, path=path, organisation=ORGS[path], droit_opened_on=droit, start=start,
               has_phone=phone, has_email=email, has_address=address, **kw)


def channels(s: Sim, step: str, cid=None) -> list[str]:
    return sorted(x.channel for x in s.sent_for(step, cid=cid))


def to_review(s: Sim) -> Sim:
    """Let a silent person's CD path run to sanction_review."""
    s.advance(days=30)
    assert s.case.step == "convocation" and s.case.phase == APPOINTMENT
    s.advance_to(s.case.due_at)
    assert s.case.step == "sanction_review" and s.case.phase == REVIEW
    return s


# --- the CD path, silent person ------------------------------------------------------------------


def test_cd_silent_person_runs_the_whole_path_with_every_gate():
    s = sim()
    # invitation_1 at once: letter, SMS and e-mail (inside the window: Monday 11:00).
    assert s.entered() == ["invitation_1"]
    assert channels(s, "invitation_1") == ["email", "letter", "sms"]
    assert all(x.at == MONDAY for x in s.sent_for("invitation_1"))
    assert s.case.phase == WAITING and s.case.respond_by == dt.date(2024, 3, 19)
    assert s.case.first_invitation_at == MONDAY and s.case.late is False

    # 15 days without a booking: invitation_2 (the relance), not a second earlier.
    s.advance_to(MONDAY + 15 * DAY - dt.timedelta(seconds=1))
    assert s.entered() == ["invitation_1"]
    s.advance(seconds=1)
    assert s.entered() == ["invitation_1", "invitation_2"]
    assert s.entry("invitation_2").at == MONDAY + 15 * DAY
    assert channels(s, "invitation_2") == ["email", "letter", "sms"]

    # 15 more days: the convocation, with a slot at least 7 days after the letter.
    s.advance(days=15)
    conv = s.entry("convocation")
    assert conv.at == MONDAY + 30 * DAY
    case = s.case
    assert case.phase == APPOINTMENT and case.appointment_kind == "convocation" and case.appointment_count == 1
    slot = case.appointment_at
    assert slot >= conv.at + 7 * DAY and slot == first_slot(CAL, conv.at + 7 * DAY)
    assert local(slot) == dt.datetime(2024, 4, 11, 10, 0)  # Thursday 10:00
    assert channels(s, "convocation") == ["letter", "sms"]  # e-mail is not a convocation channel on this path
    assert all(x.at == conv.at for x in s.sent_for("convocation"))

    # The SMS reminder: two days before, at 10:00 local, inside the window, seq = appointment number.
    s.advance_to(slot - dt.timedelta(hours=1))
    (reminder,) = s.sent_for("rdv_reminder")
    assert local(reminder.at) == dt.datetime(2024, 4, 9, 10, 0) and reminder.channel == "sms" and reminder.seq == 1

    # No rdv_attended by the end of the next working day: missed -> sanction_review.
    s.advance_to(paris(2024, 4, 12, 23, 59))
    assert s.case.step == "convocation"
    s.advance_to(paris(2024, 4, 13))
    assert s.entered()[-1] == "sanction_review"
    assert s.entry("sanction_review").at == paris(2024, 4, 13)  # end of Friday 12 April, local
    assert s.case.phase == REVIEW and s.case.due_at is None

    # Human gate: nothing happens on its own, however long.
    s.advance(days=60)
    assert s.entered()[-1] == "sanction_review" and s.case.phase == REVIEW

    # review_decision proceed -> pre-sanction notice by LRAR (and SMS).
    d = s.event("review_decision", decision="proceed")
    assert StepChanged("sanction_review", "pre_sanction_notice", "review_decision:proceed") in d.actions
    assert s.case.phase == AWAITING_RECEIPT
    lrar = s.sent_for("pre_sanction_notice", "letter")
    assert len(lrar) == 1 and lrar[0].postage == "lrar"

    # The AR is signed on a given date: the observation period runs 10 days from it.
    receipt = CAL.local_date(s.now) + 2 * DAY
    s.advance(days=3)
    s.event("ar_signed", receipt_on=receipt)
    assert s.case.phase == OBSERVATION and s.case.receipt_on == receipt
    s.advance_to(CAL.start_of_day(receipt + 11 * DAY) - dt.timedelta(seconds=1))
    assert "crsa_referral" not in s.entered()
    s.advance(seconds=1)
    assert s.entered()[-1] == "crsa_referral"
    assert s.entry("crsa_referral").at == CAL.start_of_day(receipt + 11 * DAY)
    assert s.case.status == "closed" and s.case.outcome == "crsa_referral" and s.case.phase == CLOSED
    assert channels(s, "crsa_referral") == ["letter"]
    assert any(isinstance(a.action, ReferToCommission) for a in s.actions)


def test_referral_waits_for_the_end_of_observation_whatever_the_sweeps():
    s = to_review(sim())
    s.event("review_decision", decision="proceed")
    receipt = CAL.local_date(s.now)
    s.event("ar_signed", receipt_on=receipt)
    # The engine is asked early (a sweep that runs anyway): it only moves the due moment.
    d = decide(s.case, s.now + DAY, POLICY, CAL)
    assert d.actions == () and d.state.due_at == CAL.start_of_day(receipt + 11 * DAY)


def test_ar_unclaimed_counts_as_received_on_its_date():
    s = to_review(sim())
    s.event("review_decision", decision="proceed")
    s.advance(days=4)
    notice_left = CAL.local_date(s.now) - DAY
    s.event("ar_unclaimed", receipt_on=notice_left)
    assert s.case.phase == OBSERVATION and s.case.receipt_on == notice_left
    s.advance_to(CAL.start_of_day(notice_left + 11 * DAY) - dt.timedelta(minutes=1))
    assert s.case.status == "active"
    s.advance(minutes=1)
    assert s.case.outcome == "crsa_referral"


def test_receipt_without_a_date_is_the_event_day_and_a_second_receipt_changes_nothing():
    s = to_review(sim())
    s.event("review_decision", decision="proceed")
    s.advance(days=2)
    s.event("ar_signed")
    assert s.case.receipt_on == CAL.local_date(s.now)
    d = s.event("ar_signed", receipt_on=CAL.local_date(s.now) - DAY)  # after the notice: valid, but a second one
    assert d.note == "receipt already known" and s.case.receipt_on == CAL.local_date(s.now)


def test_receipt_outside_a_notice_is_ignored():
    s = sim()
    d = s.event("ar_signed", receipt_on=CAL.local_date(s.now))
    assert d.actions == () and s.case.receipt_on is None


def test_lrar_without_news_is_flagged_to_agents():
    s = to_review(sim())
    s.event("review_decision", decision="proceed")
    notice_at = s.now
    s.advance(days=POLICY.delays.receipt_wait_days + 1)
    assert s.case.phase == AWAITING_RECEIPT and s.case.due_at is None
    flags = [a.action for a in s.actions if isinstance(a.action, Flag) and a.at > notice_at]
    assert Flag("receipt_overdue", "pre_sanction_notice") in flags
    assert "crsa_referral" not in s.entered()


# --- the FT paths and the ML path ----------------------------------------------------------------------


def test_ft_registered_path_convocation_warning_report_review():
    s = sim("ft")
    assert s.entered() == ["ft_convocation"]
    slot = s.case.appointment_at
    assert slot >= MONDAY + 7 * DAY and CAL.local(slot).time() == dt.time(10, 0)
    assert channels(s, "ft_convocation") == ["email", "letter", "sms"]
    s.advance_to(s.case.due_at)  # nothing recorded by the end of the grace period: an agent confirms
    assert s.entered() == ["ft_convocation"]
    assert s.case.phase == APPOINTMENT and s.case.due_at is None
    assert Flag("task", "attendance_to_confirm") in [a.action for a in s.actions]
    s.advance(days=30)
    assert s.entered() == ["ft_convocation"] and not channels(s, "ft_warning")  # no accusation from silence
    s.event("rdv_missed")  # France Travail confirms the absence: the last reminder goes
    assert s.entered() == ["ft_convocation", "ft_warning"]
    s.advance(days=3)  # the SMS and e-mail wait for the sending window (a weekend here)
    assert channels(s, "ft_warning") == ["email", "letter", "sms"]
    assert s.case.organisation == "FT-REDON"
    s.advance(days=13)
    assert s.entered() == ["ft_convocation", "ft_warning", "ft_report", "sanction_review"]
    report, review = s.entry("ft_report"), s.entry("sanction_review")
    assert report.at == review.at and review.reason == "handoff:ft_report"
    assert s.case.phase == REVIEW
    # The department reviews it; France Travail's report stays on the case with its facts.
    assert s.case.organisation == "CDAS-RENNES" and s.case.reported_by == "FT-REDON"
    assert channels(s, "ft_convocation") == ["email", "letter", "sms"]


def test_ft_attendance_confirmed_attended_closes_the_case():
    s = sim("ft")
    s.advance_to(s.case.due_at)
    assert s.case.phase == APPOINTMENT and s.case.due_at is None
    s.event("rdv_attended")
    assert s.case.status == "closed" and s.case.outcome == "attended"
    assert "ft_warning" not in s.entered()


def test_cd_convocation_silence_is_an_unconfirmed_absence():
    s = to_review(sim())  # the CD path: nothing recorded after the convocation
    outcomes = [a.action for a in s.actions if isinstance(a.action, AppointmentOutcome)]
    assert AppointmentOutcome("unconfirmed") in outcomes and AppointmentOutcome("missed") not in outcomes
    assert s.entry("sanction_review").reason == "no_attendance_recorded"


def test_ft_review_relies_on_both_letters():
    s = sim("ft")
    s.advance_to(s.case.due_at)
    s.event("rdv_missed")
    assert s.case.step == "ft_warning"
    s.event("npai")  # the warning letter came back
    s.advance(days=16)
    assert "sanction_review" not in s.entered()
    assert s.case.phase == HELD and s.case.hold_reason == "npai"


def test_ft_unregistered_letter_then_phone_followup_then_cd_path():
    s = sim("ft_unregistered", phone=True, email=True)
    assert s.entered() == ["invitation_1"]
    assert channels(s, "invitation_1") == ["letter"]  # letter only, even with a phone and an e-mail
    s.advance(days=15)
    assert s.entered() == ["invitation_1", "phone_followup"]
    assert s.case.phase == TASK and s.case.due_at is None
    assert any(a.action == Flag("task", "phone_followup") for a in s.actions)
    s.advance(days=40)  # an agent's task: it waits for them
    assert s.entered()[-1] == "phone_followup"
    assert s.sent_for("phone_followup") == []
    d = s.event("phone_followup_done")
    assert StepChanged("phone_followup", "invitation_2", "phone_followup_done") in d.actions
    s.advance(days=2)  # (a Sunday: the SMS and e-mail go on Monday)
    assert channels(s, "invitation_2") == ["email", "letter", "sms"]
    s.advance(days=15)
    assert s.entered()[-1] == "convocation"


def test_phone_followup_done_outside_the_task_changes_nothing():
    s = sim("ft_unregistered")
    d = s.event("phone_followup_done")
    assert d.actions == () and d.note == "no task running" and s.case.step == "invitation_1"


def test_ml_path_email_first_and_convocation_by_email_too():
    s = sim("ml")
    assert s.entered() == ["invitation_1"]
    plans = [a.action for a in s.actions if isinstance(a.action, PlanMessage)]
    assert [p.channel for p in plans] == ["email", "sms", "letter"]
    s.advance(days=30)
    assert s.entered() == ["invitation_1", "invitation_2", "convocation"]
    assert channels(s, "convocation") == ["email", "letter", "sms"]


def test_no_contact_details_but_an_address_still_runs_on_letters():
    s = sim(phone=False, email=False)
    assert channels(s, "invitation_1") == ["letter"]
    s.advance(days=30)
    assert channels(s, "convocation") == ["letter"] and s.sent_for("rdv_reminder") == []


# --- appointments ----------------------------------------------------------------------------------


def test_rdv_booked_stops_relances_and_plans_the_reminder():
    s = sim()
    s.advance(days=3)
    appt = paris(2024, 3, 27, 14, 30)  # Wednesday, after the end of the 15 days
    d = s.event("rdv_booked", appointment_at=appt)
    assert RecordAppointment(appt, "booked", "invitation_1") in d.actions
    plan = next(a for a in d.actions if isinstance(a, PlanMessage))
    assert plan == PlanMessage("rdv_reminder", "sms", 1, paris(2024, 3, 25, 10), None)
    assert s.case.phase == APPOINTMENT and s.case.appointment_count == 1
    # 15 days after the invitation: no relance while booked.
    s.advance_to(MONDAY + 16 * DAY)
    assert "invitation_2" not in s.entered()
    assert s.sent_for("rdv_reminder") == []
    s.advance_to(appt)
    (reminder,) = s.sent_for("rdv_reminder")
    assert reminder.seq == 1 and local(reminder.at) == dt.datetime(2024, 3, 25, 10)
    assert len(s.sent) == 4  # invitation_1 on three channels, then only the reminder


def test_rebooking_cancels_the_first_reminder_and_numbers_the_new_one():
    s = sim()
    first = paris(2024, 3, 14, 14, 30)
    s.event("rdv_booked", appointment_at=first)
    second = paris(2024, 3, 21, 9, 30)
    d = s.event("rdv_booked", appointment_at=second)
    assert AppointmentOutcome("cancelled") in d.actions
    assert s.case.appointment_count == 2
    seq1 = s.messages(step="rdv_reminder", seq=1)[0]
    assert seq1.status == "cancelled"
    s.advance(days=20)
    assert [(x.seq, local(x.at)) for x in s.sent_for("rdv_reminder")] == [(2, dt.datetime(2024, 3, 19, 10))]


@pytest.mark.parametrize("appt,expected", [
    (paris(2024, 3, 19, 15), dt.datetime(2024, 3, 15, 10)),  # Tuesday: two days before is a Sunday -> Friday
    (paris(2024, 6, 17, 9), dt.datetime(2024, 6, 14, 10)),  # Monday 09:00: not Monday 09:00, nor dropped
    (paris(2024, 5, 10, 14), dt.datetime(2024, 5, 7, 10)),  # Friday 10 May: 8 May is a holiday -> Tuesday
])
def test_reminder_due_on_a_non_working_day_goes_on_the_working_day_before(appt, expected):
    s = sim()
    s.event("rdv_booked", appointment_at=appt)
    s.advance_to(appt)
    (reminder,) = s.sent_for("rdv_reminder")
    assert local(reminder.at) == expected


def test_reminder_booked_too_late_for_the_working_day_before_goes_at_the_next_opening():
    s = sim(start=paris(2024, 3, 16, 12))  # Saturday
    s.event("rdv_booked", appointment_at=paris(2024, 3, 19, 15))  # Tuesday: the Friday before is past
    s.advance(days=3)
    assert [local(x.at) for x in s.sent_for("rdv_reminder")] == [dt.datetime(2024, 3, 18, 9)]


def test_no_reminder_for_an_appointment_too_close():
    s = sim(start=paris(2024, 3, 5, 19, 30))  # Tuesday evening, window closed
    d = s.event("rdv_booked", appointment_at=paris(2024, 3, 6, 8, 30))  # tomorrow before the window opens
    assert not any(isinstance(a, PlanMessage) for a in d.actions)


def test_late_booking_is_reminded_at_once_when_the_window_is_open():
    s = sim(start=paris(2024, 3, 5, 18, 30))  # Tuesday evening, window open
    s.event("rdv_booked", appointment_at=paris(2024, 3, 6, 8, 30))
    assert [local(x.at) for x in s.sent_for("rdv_reminder")] == [dt.datetime(2024, 3, 5, 18, 30)]


def test_rdv_attended_closes_the_case():
    s = sim()
    s.event("rdv_booked", appointment_at=paris(2024, 3, 14, 14, 30))
    s.advance_to(paris(2024, 3, 14, 16))
    d = s.event("rdv_attended")
    assert AppointmentOutcome("attended") in d.actions
    assert s.case.status == "closed" and s.case.outcome == "attended" and s.case.closed_at == s.now
    sent = len(s.sent)
    s.advance(days=60)
    assert len(s.sent) == sent and s.entered() == ["invitation_1"]


def test_rdv_attended_on_a_convocation_closes_too():
    s = sim()
    s.advance(days=30)
    s.advance_to(s.case.appointment_at + dt.timedelta(hours=1))
    s.event("rdv_attended")
    assert s.case.outcome == "attended"
    s.advance(days=30)
    assert "sanction_review" not in s.entered()


def test_booked_appointment_missed_without_news_moves_to_the_next_step():
    s = sim()
    appt = paris(2024, 3, 15, 14)  # Friday
    s.event("rdv_booked", appointment_at=appt)
    s.advance_to(paris(2024, 3, 18, 23, 59))  # Monday is the next working day
    assert s.case.phase == APPOINTMENT
    s.advance(minutes=1)
    assert s.entered() == ["invitation_1", "invitation_2"]
    assert any(a.action == AppointmentOutcome("unconfirmed") for a in s.actions)  # nothing was recorded


def test_rdv_missed_event_moves_on_at_once():
    s = sim()
    s.event("rdv_booked", appointment_at=paris(2024, 3, 8, 14))
    s.advance_to(paris(2024, 3, 8, 15))
    d = s.event("rdv_missed")
    assert AppointmentOutcome("missed") in d.actions
    assert s.entered() == ["invitation_1", "invitation_2"]


def test_rdv_missed_without_an_appointment_changes_nothing():
    s = sim()
    d = s.event("rdv_missed")
    assert d.actions == () and s.case.phase == WAITING


def test_rdv_cancelled_gives_a_new_response_period():
    s = sim()
    s.advance(days=10)
    s.event("rdv_booked", appointment_at=paris(2024, 3, 20, 14))
    s.advance(days=2)
    d = s.event("rdv_cancelled")
    assert AppointmentOutcome("cancelled") in d.actions
    # 15 days from now, the date given to the person moved to a working day (here Sunday 31 March,
    # then Easter Monday: Tuesday 2 April)
    due = s.now + 15 * DAY
    respond_by = CAL.working_day_on_or_after(CAL.local_date(due))
    assert respond_by == dt.date(2024, 4, 2)
    assert s.case.phase == WAITING and s.case.respond_by == respond_by
    assert s.case.due_at == due + (respond_by - CAL.local_date(due))
    assert s.messages(step="rdv_reminder")[0].status == "cancelled"
    s.advance(days=17)
    assert s.entered() == ["invitation_1", "invitation_2"]


def test_cancelled_convocation_is_held_for_an_agent():
    s = sim()
    s.advance(days=31)
    d = s.event("rdv_cancelled")
    assert Flag("held", "rdv_cancelled") in d.actions
    assert s.case.phase == HELD and s.case.hold_reason == "rdv_cancelled"
    s.advance(days=30)
    assert "sanction_review" not in s.entered()


def test_booking_during_the_review_returns_to_the_review_when_missed():
    s = to_review(sim())
    s.event("rdv_booked", appointment_at=s.now + 3 * DAY)
    assert s.case.phase == APPOINTMENT
    assert s.event("review_decision", decision="proceed").note == "not under review"
    s.advance(days=8)
    assert s.case.phase == REVIEW and s.case.step == "sanction_review"
    assert "pre_sanction_notice" not in s.entered()


# --- legitimate reason ---------------------------------------------------------------------------------


def test_legitimate_reason_pauses_and_keeps_the_remaining_wait():
    s = sim()
    s.advance(days=5)  # 10 days of the 15 left
    until = s.now + 20 * DAY
    d = s.event("legitimate_reason", until=until, reason="hospitalisation")
    assert Flag("paused", "legitimate_reason") in d.actions
    assert s.case.phase == PAUSED and s.case.paused_remaining == pytest.approx(10 * 86400)
    sent = len(s.sent)
    s.advance_to(until - dt.timedelta(seconds=1))
    assert s.entered() == ["invitation_1"] and len(s.sent) == sent
    s.advance(seconds=1)
    assert s.case.phase == WAITING and s.case.due_at == until + 10 * DAY
    s.advance_to(until + 10 * DAY - dt.timedelta(seconds=1))
    assert s.entered() == ["invitation_1"]
    s.advance(seconds=1)
    assert s.entered() == ["invitation_1", "invitation_2"]
    assert s.entry("invitation_2").at == until + 10 * DAY


def test_legitimate_reason_cancels_what_was_planned_and_blocks_sending():
    s = sim(start=paris(2024, 3, 9, 23))  # Saturday night: the SMS waits for Monday
    s.advance(days=1)
    s.event("legitimate_reason", until=s.now + 5 * DAY)
    (sms,) = s.messages(step="invitation_1", channel="sms")
    assert sms.status == "cancelled" and sms.reason == "legitimate_reason"
    # and the re-check before sending refuses anything during the pause
    view = MessageView("invitation_1", "email", 0, "pending")
    assert send_verdict(s.case, view, s.now, POLICY, CAL) == "cancel:legitimate_reason"


def test_legitimate_reason_extended_keeps_the_latest_end():
    s = sim()
    s.event("legitimate_reason", until=s.now + 10 * DAY)
    d = s.event("legitimate_reason", until=s.now + 5 * DAY)
    assert Flag("paused", "extended") in d.actions and s.case.paused_until == MONDAY + 10 * DAY
    s.event("legitimate_reason", until=s.now + 20 * DAY)
    assert s.case.paused_until == MONDAY + 20 * DAY


def test_legitimate_reason_already_over_changes_nothing():
    s = sim()
    d = s.event("legitimate_reason", until=s.now - DAY)
    assert d.actions == () and s.case.phase == WAITING


def test_legitimate_reason_requires_until():
    s = sim()
    with pytest.raises(EngineError, match="--until"):
        apply(s.case, Event("legitimate_reason", s.now, category="sick_leave"), s.now, POLICY, CAL)


def test_appointment_falling_in_a_pause_is_not_an_absence():
    s = sim()
    s.advance(days=30)  # convocation
    slot = s.case.appointment_at
    until = slot + 3 * DAY
    s.event("legitimate_reason", until=until)
    s.advance_to(until)
    # the convocation is re-run after the pause, on a new case: no sanction_review
    assert s.states[1].status == "closed" and s.states[1].outcome == "restarted_after_legitimate_reason"
    assert any(a.action == AppointmentOutcome("cancelled") for a in s.actions if a.case_id == 1)
    assert s.entered(2) == ["convocation"] and s.entry("convocation", 2).at == until
    assert "sanction_review" not in s.entered()


def test_a_pause_ending_before_the_appointment_gives_its_reminder_back():
    s = sim()
    s.advance(days=3)
    appt = paris(2024, 3, 27, 14, 30)  # Wednesday: reminder Monday 25 at 10:00
    s.event("rdv_booked", appointment_at=appt)
    missed_check = s.case.due_at
    s.event("legitimate_reason", until=paris(2024, 3, 15, 9))  # a week off, long before the appointment
    (reminder,) = s.messages(step="rdv_reminder")
    assert reminder.status == "cancelled"
    s.advance_to(paris(2024, 3, 15, 9))
    assert s.case.phase == APPOINTMENT and s.case.paused_until is None
    assert any(a.action == ReplanMessage("rdv_reminder", "sms", 1, paris(2024, 3, 25, 10)) for a in s.actions)
    # the absence check stays tied to the appointment, not shifted by the pause
    assert s.case.due_at == missed_check
    s.advance_to(appt)
    (sent,) = s.sent_for("rdv_reminder")
    assert sent.seq == 1 and local(sent.at) == dt.datetime(2024, 3, 25, 10)


def test_a_pause_ending_after_the_reminder_time_sends_it_at_the_next_opening():
    s = sim()
    s.advance(days=3)
    appt = paris(2024, 3, 27, 14, 30)
    s.event("rdv_booked", appointment_at=appt)
    s.event("legitimate_reason", until=paris(2024, 3, 26, 7))  # until Tuesday 7:00, after Monday 10:00
    s.advance_to(appt)
    (sent,) = s.sent_for("rdv_reminder")
    assert local(sent.at) == dt.datetime(2024, 3, 26, 9)  # Tuesday, the window's opening
    assert sent.at < appt


def test_a_pause_covering_the_appointment_gives_no_reminder():
    s = sim()
    s.advance(days=3)
    appt = paris(2024, 3, 27, 14, 30)
    s.event("rdv_booked", appointment_at=appt)
    s.event("legitimate_reason", until=appt + DAY)
    s.advance_to(appt + 2 * DAY)
    assert s.sent_for("rdv_reminder") == []


def test_booking_during_a_pause_ends_it():
    s = sim()
    s.event("legitimate_reason", until=s.now + 30 * DAY)
    appt = paris(2024, 3, 14, 14)
    s.event("rdv_booked", appointment_at=appt)
    assert s.case.phase == APPOINTMENT and s.case.paused_until is None
    s.advance(days=9)
    assert [local(x.at) for x in s.sent_for("rdv_reminder")] == [dt.datetime(2024, 3, 12, 10)]


# --- NPAI, contact changes -----------------------------------------------------------------------------


def test_npai_marks_letters_returned_and_blocks_the_review():
    s = sim()
    s.advance(days=31)  # the convocation letter went out
    assert s.messages(step="convocation", channel="letter")[0].status == "sent"
    d = s.event("npai")
    assert MarkReturned(0) in d.actions and Flag("npai", "address unusable: phone and CAF lookup") in d.actions
    assert {m.status for m in s.messages(channel="letter")} == {"returned"}
    assert s.case.npai is True
    s.advance(days=15)  # the missed check passes
    assert "sanction_review" not in s.entered()
    assert s.case.phase == HELD and s.case.hold_reason == "npai"
    assert any(a.action == Flag("held", "npai:sanction_review") for a in s.actions)
    # address_updated: the path restarts on a new case at the new address.
    d = s.event("address_updated")
    assert OpenCase("cd", "invitation_1", s.now, "address_updated") in d.actions
    assert s.states[1].status == "closed" and s.states[1].outcome == "restarted_after_address_update"
    assert s.case_id == 2 and s.entered(2) == ["invitation_1"]
    assert channels(s, "invitation_1", cid=2) == ["email", "letter", "sms"]
    assert s.case.address_version == 0 and s.case.npai is False


def test_npai_during_the_review_holds_the_case():
    s = to_review(sim())
    d = s.event("npai")
    assert Flag("held", "npai") in d.actions and s.case.phase == HELD
    assert s.event("review_decision", decision="proceed").note == "not under review"
    assert "pre_sanction_notice" not in s.entered()


def test_npai_early_lets_the_path_run_on_other_channels_and_pending_letters_are_cancelled():
    s = sim()
    s.event("npai")
    s.advance(days=15)
    assert s.entered() == ["invitation_1", "invitation_2"]
    assert channels(s, "invitation_2") == ["email", "sms"]  # no letter to an NPAI address


def test_address_updated_when_not_held_only_bumps_the_version():
    s = sim()
    d = s.event("address_updated")
    assert d.actions == (Flag("address_updated"),) and s.case.address_version == 1 and s.case_id == 1


def test_sms_failed_cancels_pending_sms_and_letters_carry_on():
    s = sim(start=paris(2024, 3, 9, 23))  # Saturday night: the SMS is pending until Monday
    d = s.event("sms_failed")
    assert CancelPending("sms_failed", "sms") in d.actions
    assert s.messages(step="invitation_1", channel="sms")[0].status == "cancelled"
    assert s.messages(step="invitation_1", channel="email")[0].status == "pending"
    s.advance(days=17)  # 15 days end on Sunday 24 March: the deadline is Monday 25 (working day)
    assert channels(s, "invitation_1") == ["email", "letter"]
    assert channels(s, "invitation_2") == ["email", "letter"]
    s.event("phone_updated")
    s.advance(days=15)
    assert channels(s, "convocation") == ["letter", "sms"]


def test_sms_opt_out_cancels_pending_sms_only():
    s = sim(start=paris(2024, 3, 9, 23))
    d = s.event("sms_opt_out")
    assert CancelPending("sms_opt_out", "sms") in d.actions and s.case.sms_opt_out
    s.advance(days=17)  # the 15 days end on a Sunday: deadline on Monday
    assert channels(s, "invitation_2") == ["email", "letter"]


# --- closing, reorienting, reviewing -------------------------------------------------------------------


def test_droit_closed_cancels_everything_pending():
    s = sim(start=paris(2024, 3, 9, 23))
    d = s.event("droit_closed")
    assert s.case.status == "closed" and s.case.outcome == "droit_closed"
    assert CancelPending("case_closed:droit_closed") in d.actions
    assert {m.status for m in s.messages() if m.channel != "letter"} == {"cancelled"}
    s.advance(days=60)
    assert s.entered() == ["invitation_1"]


def test_droit_closed_during_a_convocation_frees_the_slot():
    s = sim()
    s.advance(days=31)
    d = s.event("droit_closed")
    assert d.actions[0] == AppointmentOutcome("cancelled")


def test_reoriented_opens_a_case_on_the_new_path():
    s = sim()
    s.advance(days=3)
    d = s.event("reoriented", to="ml")
    assert OpenCase("ml", "invitation_1", s.now, "reoriented:cd") in d.actions
    assert s.states[1].outcome == "reoriented"
    assert s.case_id == 2 and s.case.path == "ml" and s.entered(2) == ["invitation_1"]
    assert s.case.late is False  # a continuation is not a late first invitation


def test_reoriented_to_ft_starts_with_a_convocation():
    s = sim()
    s.event("reoriented", to="ft")
    assert s.case.path == "ft" and s.entered(2) == ["ft_convocation"] and s.case.phase == APPOINTMENT


def test_reoriented_to_the_same_path_or_an_unknown_one():
    s = sim()
    d = s.event("reoriented", to="cd")
    assert d.actions == () and d.note == "already on this path"
    with pytest.raises(EngineError, match="parcours inconnu"):
        apply(s.case, Event("reoriented", s.now, to="cnam"), s.now, POLICY, CAL)
    with pytest.raises(EngineError):
        apply(s.case, Event("reoriented", s.now), s.now, POLICY, CAL)


def test_review_decision_legitimate_reason_restarts_the_convocation_after_until():
    s = to_review(sim())
    until = s.now + 20 * DAY
    d = s.event("review_decision", decision="legitimate_reason", until=until)
    assert OpenCase("cd", "convocation", until, "review_decision:legitimate_reason") in d.actions
    assert s.states[1].outcome == "legitimate_reason"
    s.advance_to(until - dt.timedelta(seconds=1))
    assert s.entered(2) == [] and s.sent_for(cid=2) == []
    s.advance(seconds=1)
    assert s.entered(2) == ["convocation"] and s.case.phase == APPOINTMENT


def test_review_decision_close():
    s = to_review(sim())
    s.event("review_decision", decision="close")
    assert s.case.status == "closed" and s.case.outcome == "review_closed" and s.case.review_decision == "close"


def test_review_decision_errors():
    s = to_review(sim())
    with pytest.raises(EngineError, match="--decision"):
        apply(s.case, Event("review_decision", s.now, decision="sanction"), s.now, POLICY, CAL)
    with pytest.raises(EngineError, match="--until"):
        apply(s.case, Event("review_decision", s.now, decision="legitimate_reason", category="hospitalisation"),
              s.now, POLICY, CAL)
    with pytest.raises(EngineError, match="--category"):
        apply(s.case, Event("review_decision", s.now, decision="legitimate_reason", until=s.now + DAY),
              s.now, POLICY, CAL)


def test_review_decision_outside_a_review_changes_nothing():
    s = sim()
    d = s.event("review_decision", decision="proceed")
    assert d.actions == () and d.note == "not under review" and s.case.step == "invitation_1"


def test_review_proceed_with_a_letter_returned_meanwhile_is_held():
    """The gate is checked again when the agent decides."""
    s = to_review(sim())
    case = s.case
    returned = tuple(dataclasses.replace(m, status="returned") if m.channel == "letter" else m
                     for m in case.messages)
    d = apply(dataclasses.replace(case, messages=returned), Event("review_decision", s.now, decision="proceed"),
              s.now, POLICY, CAL)
    assert d.state.phase == HELD and not any(isinstance(a, StepChanged) for a in d.actions)


# --- creation, late droits, closed cases, errors -------------------------------------------------------


def test_late_droit_is_invited_at_once_and_flagged():
    s = sim(droit_days=40)
    assert s.entered() == ["invitation_1"] and s.entry("invitation_1").at == MONDAY
    assert s.case.late is True and s.case.first_invitation_at == MONDAY
    assert any(a.action == Flag("late", "first invitation after the target") for a in s.actions)


def test_droit_on_the_target_day_is_not_late():
    assert sim(droit_days=15).case.late is False
    assert sim(droit_days=16).case.late is True


def test_new_case_is_due_at_once_and_decide_before_due_does_nothing():
    case = new_case(path="cd", organisation="CDAS-REDON", droit_opened_on=dt.date(2024, 3, 1), now=MONDAY,
                    policy=POLICY, cal=CAL, has_phone=True)
    assert case.phase == ENTER and case.due_at == MONDAY and case.step == "invitation_1"
    assert decide(case, MONDAY - dt.timedelta(seconds=1), POLICY, CAL).actions == ()
    d = decide(case, MONDAY, POLICY, CAL)
    assert d.actions[0] == StepChanged(None, "invitation_1", "start")


def test_unknown_path_is_refused():
    with pytest.raises(KeyError):
        new_case(path="cnam", organisation="X", droit_opened_on=dt.date(2024, 3, 1), now=MONDAY, policy=POLICY,
                 cal=CAL)


VALID_PARAMS = {
    "rdv_booked": {"appointment_at": MONDAY + 5 * DAY},
    "legitimate_reason": {"until": MONDAY + 5 * DAY, "category": "sick_leave"},
    "legitimate_reason_ended": {},
    "preferences_updated": {"large_print": True},
    "reoriented": {"to": "ml"},
    "review_decision": {"decision": "proceed"},
    "ar_signed": {"receipt_on": dt.date(2024, 3, 5)},
    "ar_unclaimed": {"receipt_on": dt.date(2024, 3, 5)},
}


@pytest.mark.parametrize("type_", [t for t in EVENT_TYPES if t not in ("sanction_decided", "sanction_lifted")])
def test_events_on_a_closed_case_change_nothing(type_):
    s = sim()
    s.event("droit_closed")
    closed = s.case
    d = apply(closed, Event(type_, s.now + DAY, **VALID_PARAMS.get(type_, {})), s.now + DAY, POLICY, CAL)
    assert d.state == closed and d.actions == ()
    assert d.note.startswith("case closed")


@pytest.mark.parametrize("type_,params,match", [
    ("legitimate_reason", {"category": "sick_leave"}, "--until"),
    ("legitimate_reason", {"until": MONDAY + 5 * DAY}, "--category"),
    ("legitimate_reason", {"until": MONDAY + 5 * DAY, "category": "flu"}, "catégorie 'flu' inconnue"),
    ("legitimate_reason", {"until": MONDAY + 5 * DAY, "category": "homelessness"}, "--review-on"),
    ("legitimate_reason", {"review_on": dt.date(2024, 5, 1), "category": "sick_leave"}, "--review-on"),
    ("rdv_booked", {}, "--appointment-at"),
    ("review_decision", {"decision": "maybe"}, "--decision"),
    ("reoriented", {"to": "nowhere"}, "parcours inconnu"),
    ("lunar_eclipse", {}, "inconnu"),
])
def test_invalid_events_raise_engine_error(type_, params, match):
    s = sim()
    with pytest.raises(EngineError, match=match):
        apply(s.case, Event(type_, s.now, **params), s.now, POLICY, CAL)


def test_engine_error_is_a_value_error_with_a_french_message():
    assert issubclass(EngineError, ValueError)


# --- the sending window -----------------------------------------------------------------------------


def _plans(s):
    return {(a.action.step, a.action.channel): a.action.not_before for a in s.actions
            if isinstance(a.action, PlanMessage)}


def test_saturday_night_invitation_sms_waits_for_monday_letters_go_at_once():
    start = paris(2024, 3, 9, 23, 30)  # Saturday
    s = sim(start=start)
    plans = _plans(s)
    assert plans[("invitation_1", "letter")] == start
    assert local(plans[("invitation_1", "sms")]) == dt.datetime(2024, 3, 11, 9, 0)
    assert local(plans[("invitation_1", "email")]) == dt.datetime(2024, 3, 11, 9, 0)
    s.advance(days=3)
    assert {x.channel: local(x.at) for x in s.sent_for("invitation_1")} == {
        "letter": local(start), "sms": dt.datetime(2024, 3, 11, 9), "email": dt.datetime(2024, 3, 11, 9)}


@pytest.mark.parametrize("start,expected", [
    (paris(2024, 5, 8, 10), dt.datetime(2024, 5, 10, 9)),    # 8 May (Wed, holiday), 9 May Ascension -> Fri
    (paris(2024, 5, 7, 19, 0), dt.datetime(2024, 5, 10, 9)),  # Tuesday 19:00: window closed, then holidays
    (paris(2024, 7, 14, 12), dt.datetime(2024, 7, 15, 9)),    # 14 July is a Sunday
    (paris(2024, 12, 24, 20), dt.datetime(2024, 12, 26, 9)),  # Christmas Eve evening -> 26 Dec
    (paris(2024, 3, 11, 8, 59), dt.datetime(2024, 3, 11, 9)),  # Monday before the window
    (paris(2024, 3, 11, 18, 59), dt.datetime(2024, 3, 11, 18, 59)),  # Monday, last minute of the window
])
def test_sms_on_holidays_and_window_edges(start, expected):
    s = sim(start=start)
    assert local(_plans(s)[("invitation_1", "sms")]) == expected
    s.advance(days=4)
    assert local(s.sent_for("invitation_1", "sms")[0].at) == expected


def test_send_verdict_defers_outside_the_window_and_cancels_what_is_no_longer_wanted():
    s = sim()
    case = s.case
    pending = MessageView("invitation_1", "sms", 0, "pending")
    assert send_verdict(case, pending, paris(2024, 3, 9, 12), POLICY, CAL) == "defer"  # Saturday
    assert send_verdict(case, pending, paris(2024, 3, 11, 12), POLICY, CAL) == "send"
    letter = MessageView("invitation_1", "letter", 0, "pending")
    assert send_verdict(case, letter, paris(2024, 3, 9, 12), POLICY, CAL) == "send"  # letters: no window
    assert send_verdict(case, MessageView("invitation_1", "sms", 0, "sent"), MONDAY, POLICY, CAL) \
        == "cancel:status_sent"
    assert send_verdict(case, MessageView("convocation", "sms", 0, "pending"), MONDAY, POLICY, CAL) \
        == "cancel:step_changed"
    no_phone = dataclasses.replace(case, phone_unusable=True)
    assert send_verdict(no_phone, pending, MONDAY, POLICY, CAL) == "cancel:channel_unusable_sms"


def test_reminder_is_cancelled_once_the_appointment_is_gone_or_passed():
    s = sim()
    s.event("rdv_booked", appointment_at=paris(2024, 3, 14, 14))
    reminder = MessageView("rdv_reminder", "sms", 1, "pending")
    assert send_verdict(s.case, reminder, paris(2024, 3, 12, 10), POLICY, CAL) == "send"
    assert send_verdict(s.case, reminder, paris(2024, 3, 14, 15), POLICY, CAL) == "cancel:appointment_passed"
    assert send_verdict(s.case, dataclasses.replace(reminder, seq=2), paris(2024, 3, 12, 10), POLICY, CAL) \
        == "cancel:appointment_changed"


# --- the engine is pure ------------------------------------------------------------------------------


def test_assign_slot_outside_awaiting_slot_does_nothing():
    s = sim()
    d = assign_slot(s.case, MONDAY + 10 * DAY, MONDAY, POLICY, CAL)
    assert d.actions == () and d.state == s.case


def test_convocation_asks_for_a_slot_at_least_min_days_later():
    s = sim()
    s.advance(days=30)
    need = next(a.action for a in s.actions if isinstance(a.action, NeedSlot))
    assert need == NeedSlot("convocation", MONDAY + 30 * DAY + 7 * DAY)


def test_same_inputs_same_outputs():
    case = sim().case
    ev = Event("rdv_booked", MONDAY + DAY, appointment_at=MONDAY + 6 * DAY)
    assert apply(case, ev, MONDAY + DAY, POLICY, CAL) == apply(case, ev, MONDAY + DAY, POLICY, CAL)


# --- regressions: engine bugs found by these tests -----------------------------------------------------


def test_reoriented_during_a_legitimate_reason_waits_for_its_end():
    s = sim()
    until = s.now + 20 * DAY
    s.event("legitimate_reason", until=until)
    d = s.event("reoriented", to="ml")
    assert OpenCase("ml", "invitation_1", until, "reoriented:cd") in d.actions
    s.advance_to(until - dt.timedelta(seconds=1))
    assert s.sent_for(cid=2) == []
    s.advance(seconds=1)
    assert s.entered(2) == ["invitation_1"]


def test_reoriented_while_a_restart_waits_for_a_legitimate_reason():
    s = to_review(sim())
    until = s.now + 30 * DAY
    s.event("review_decision", decision="legitimate_reason", until=until)
    s.event("reoriented", to="ml")
    assert s.case_id == 3 and s.case.due_at == until
    s.advance_to(until - dt.timedelta(seconds=1))
    assert s.sent_for(cid=3) == []


def test_npai_during_a_pause_then_address_updated_restarts_after_the_pause():
    s = to_review(sim())
    until = s.now + 20 * DAY
    s.event("legitimate_reason", until=until)
    s.event("npai")
    assert s.case.phase == HELD and s.case.hold_reason == "npai"
    s.event("address_updated")
    assert s.case_id == 2 and s.case.due_at == until
    s.advance_to(until - dt.timedelta(seconds=1))
    assert s.sent_for(cid=2) == []
    s.advance(seconds=1)
    assert s.entered(2) == ["invitation_1"]


def test_booking_from_a_held_case_returns_to_the_same_hold():
    s = sim()
    s.advance(days=31)
    s.event("npai")
    s.advance(days=15)
    assert s.case.phase == HELD and s.case.hold_reason == "npai"
    s.event("rdv_booked", appointment_at=s.now + 3 * DAY)
    s.advance(days=8)  # missed
    assert s.case.phase == HELD and s.case.hold_reason == "npai"
    s.event("address_updated")
    assert s.case_id == 2 and s.entered(2) == ["invitation_1"]


def test_receipt_recorded_during_a_booking_is_kept():
    s = to_review(sim())
    s.event("review_decision", decision="proceed")
    s.advance(days=1)
    s.event("rdv_booked", appointment_at=s.now + 5 * DAY)
    receipt = CAL.local_date(s.now)
    d = s.event("ar_signed", receipt_on=receipt)
    assert d.note == "" and s.case.receipt_on == receipt
    s.advance(days=10)  # the appointment is missed: back to the observation period
    assert s.case.phase == OBSERVATION
    s.advance_to(CAL.start_of_day(receipt + 11 * DAY))
    assert s.case.outcome == "crsa_referral"


def test_booking_missed_before_a_restarted_step_is_entered_does_not_skip_it():
    s = to_review(sim())
    until = s.now + 20 * DAY
    s.event("review_decision", decision="legitimate_reason", until=until)
    s.event("rdv_booked", appointment_at=s.now + 3 * DAY)
    s.advance(days=8)  # missed
    assert "sanction_review" not in s.entered(2)
    assert s.case.phase == ENTER and s.case.step == "convocation" and s.case.due_at == until
    s.advance_to(until)
    assert s.entered(2) == ["convocation"] and s.case.phase == APPOINTMENT


def test_cancelled_booking_before_the_first_step_is_entered_sends_the_invitation():
    case = new_case(path="cd", organisation="CDAS-REDON", droit_opened_on=dt.date(2024, 3, 1), now=MONDAY,
                    policy=POLICY, cal=CAL, has_phone=True, start_step="invitation_2", due_at=MONDAY + DAY)
    booked = apply(case, Event("rdv_booked", MONDAY, appointment_at=MONDAY + 3 * DAY), MONDAY, POLICY, CAL).state
    d = apply(booked, Event("rdv_cancelled", MONDAY + 2 * DAY), MONDAY + 2 * DAY, POLICY, CAL)
    assert d.state.phase == ENTER and d.state.due_at == MONDAY + 2 * DAY
    entered = decide(d.state, MONDAY + 2 * DAY, POLICY, CAL)
    assert StepChanged(None, "invitation_2", "start") in entered.actions
    assert any(isinstance(a, PlanMessage) and a.channel == "letter" for a in entered.actions)


def test_closing_a_paused_appointment_frees_the_slot_and_attended_is_recorded_once():
    s = sim()
    s.advance(days=31)
    s.event("legitimate_reason", until=s.now + 2 * DAY)
    d = s.event("rdv_attended")
    assert [a for a in d.actions if isinstance(a, AppointmentOutcome)] == [AppointmentOutcome("attended")]


def test_booking_during_a_paused_lrar_keeps_the_receipt_wait():
    s = to_review(sim())
    s.event("review_decision", decision="proceed")
    notice_at = s.now
    s.advance(days=1)
    s.event("legitimate_reason", until=s.now + 5 * DAY)
    s.event("rdv_booked", appointment_at=s.now + 2 * DAY)
    s.advance(days=10)  # the appointment is missed: back to waiting for the receipt
    assert s.case.phase == AWAITING_RECEIPT and s.case.due_at >= notice_at + 30 * DAY
    assert not any(isinstance(a.action, Flag) and a.action.name == "receipt_overdue" for a in s.actions)


def test_address_updated_on_a_held_case_during_a_pause_restarts_after_the_pause():
    s = sim()
    s.advance(days=31)
    s.event("npai")
    s.advance(days=15)
    assert s.case.phase == HELD and s.case.hold_reason == "npai"
    until = s.now + 10 * DAY
    s.event("legitimate_reason", until=until)
    s.event("address_updated")
    assert s.states[1].status == "closed" and s.case_id == 2 and s.case.due_at == until
    s.advance_to(until)
    assert s.entered(2) == ["invitation_1"]


# --- letters written but not yet printed (the print batch) --------------------------------------


def _letter_view(s: Sim, step: str) -> MessageView:
    [m] = [m for m in s.case.messages if m.step == step and m.channel == "letter"]
    return m


def test_a_written_invitation_is_not_printed_after_a_booking_or_during_a_pause():
    from worker.domain.engine import stale_letter

    s = sim()
    view = _letter_view(s, "invitation_1")
    assert stale_letter(s.case, view, s.now, POLICY, CAL) is None
    s.event("rdv_booked", appointment_at=s.now + 5 * DAY)
    assert stale_letter(s.case, view, s.now, POLICY, CAL) == "rdv_booked"
    s2 = sim()
    s2.event("legitimate_reason", until=s2.now + 5 * DAY)
    assert stale_letter(s2.case, _letter_view(s2, "invitation_1"), s2.now, POLICY, CAL) == "legitimate_reason"
    s3 = sim()
    s3.event("droit_closed")
    assert stale_letter(s3.case, _letter_view(s3, "invitation_1"), s3.now, POLICY, CAL) == "case_closed"


def test_the_notice_once_written_goes_out_even_if_the_person_answers_or_falls_ill():
    from worker.domain.engine import stale_letter

    s = to_review(sim())
    s.event("review_decision", decision="proceed")
    view = _letter_view(s, "pre_sanction_notice")
    s.event("observations_received")  # the case is at observations_review now
    assert s.case.step == "observations_review"
    assert stale_letter(s.case, view, s.now, POLICY, CAL) is None
    s.event("legitimate_reason", until=s.now + 5 * DAY)
    assert stale_letter(s.case, view, s.now, POLICY, CAL) is None
    s.event("npai")  # but not to an address that came back
    assert stale_letter(s.case, view, s.now, POLICY, CAL) is not None


# --- legitimate reasons: categories, review dates, ended by an agent ------------------------------


def test_a_reason_without_a_natural_end_waits_for_an_agent_at_its_review_date():
    s = sim()
    review = CAL.local_date(s.now) + dt.timedelta(days=20)
    s.event("legitimate_reason", category="homelessness", review_on=review)
    assert s.case.phase == PAUSED and s.case.pause_category == "homelessness"
    assert s.case.paused_until == CAL.start_of_day(review)
    s.advance(days=60)  # the review date passed: nothing resumes by itself, an agent is asked
    assert s.case.phase == PAUSED and s.case.due_at is None
    assert Flag("task", "legitimate_reason_review") in [a.action for a in s.actions]
    assert s.entered() == ["invitation_1"]
    s.event("legitimate_reason_ended")
    assert s.case.phase == WAITING and s.case.due_at is not None


def test_default_review_date_is_review_days_ahead():
    s = sim()
    s.event("legitimate_reason", category="incarceration")
    assert CAL.local_date(s.case.paused_until) == CAL.local_date(s.now) + dt.timedelta(
        days=POLICY.legitimate_reasons.review_days)


def test_an_agent_ends_a_reason_early():
    s = sim()
    s.event("legitimate_reason", category="sick_leave", until=s.now + 20 * DAY)
    remaining = s.case.paused_remaining
    s.advance(days=2)
    s.event("legitimate_reason_ended")
    assert s.case.phase == WAITING and s.case.due_at == s.now + dt.timedelta(seconds=remaining)
    assert s.event("legitimate_reason_ended").note == "no legitimate reason running"


def test_a_case_opened_while_a_reason_without_end_runs_inherits_it():
    """Reoriented (or a new address) during homelessness: the new case starts paused by the same
    reason and waits for an agent at the review date, never starts by itself."""
    s = sim()
    review = CAL.local_date(s.now) + dt.timedelta(days=20)
    s.event("legitimate_reason", category="homelessness", review_on=review)
    s.event("reoriented", to="ml")
    new = s.case
    assert new.path == "ml" and new.phase == PAUSED and new.pause_category == "homelessness"
    assert new.paused_until == CAL.start_of_day(review)
    s.advance(days=40)
    assert s.case.phase == PAUSED and s.case.due_at is None and not s.sent_for("invitation_1", cid=2)
    s.event("legitimate_reason_ended")
    s.advance(hours=1)
    assert s.case.phase == WAITING and s.sent_for("invitation_1", cid=2)


def test_review_decision_with_a_reason_without_end_reopens_paused():
    s = to_review(sim())
    review = CAL.local_date(s.now) + dt.timedelta(days=30)
    d = s.event("review_decision", decision="legitimate_reason", category="incarceration", review_on=review)
    assert OpenCase("cd", "convocation", CAL.start_of_day(review), "review_decision:legitimate_reason",
                    "incarceration") in d.actions
    s.advance(days=60)
    assert s.case.phase == PAUSED and s.case.due_at is None
