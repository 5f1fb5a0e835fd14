"""Property-based tests of the pure engine: random lives, DESIGN.md's invariants.

Each example draws a starting case (path, contact details, droit date) and a
sequence of operations — let time pass (minutes to 20 days, or exactly to the
case's next due moment), or apply a random event with plausible parameters —
and runs it in the simulator (tests/engine_sim.py), which sends due messages
in between. The checkers below read the simulator's logs only (steps entered
with the message table at that moment, events applied, messages sent,
closures), not the engine's own bookkeeping.

The last tests feed deliberately broken engines / logs into the checkers to
show they are not vacuous.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.engine_sim import Applied, Closed, Sent, Sim, StepEntered
from worker.domain.calendar import BusinessCalendar
from worker.domain import engine
from worker.services import message_content
from worker.domain.model import (
    EVENT_TYPES,
    REVIEW_DECISIONS,
    AppointmentOutcome,
    Event,
    Flag,
    RecordAppointment,
    ReplanMessage,
)
from worker.adapters.config_files import load_config

ROOT = Path(__file__).resolve().parents[2]
POLICY = load_config(ROOT / "config").policy
CAL = BusinessCalendar()
PARIS = ZoneInfo("Europe/Paris")
UTC = dt.timezone.utc
REACHED_STATUSES = {"sent", "dispatched", "delivered"}
ORGS = {"cd": "CDAS-REDON", "ft": "FT-REDON", "ft_unregistered": "FT-REDON", "ml": "ML-REDON"}
MAX_EXAMPLES = int(os.environ.get("ENGINE_PROPERTY_EXAMPLES", "1500"))


# --- the checkers ------------------------------------------------------------------------------


def _kind(path: str, step: str) -> str | None:
    p = POLICY.path(path)
    return p.step(step).kind if p.has(step) else None


def _paths(sim) -> dict[int, str]:
    return {o.case_id: o.path for o in sim.opened}


def _case_log(sim, cid):
    return [r for r in sim.log if getattr(r, "case_id", None) == cid]


def check_review_relies_on_letters(sim) -> list[str]:
    """sanction_review entered only if every step it relies on has a letter that reached the person."""
    out = []
    for e in sim.steps:
        if _kind(e.path, e.step) != "review":
            continue
        for needed in POLICY.path(e.path).step(e.step).relies_on:
            letters = [m for m in e.messages if m.step == needed and m.channel == "letter"]
            if not any(m.status in REACHED_STATUSES for m in letters):
                out.append(f"case {e.case_id}: {e.step} entered at {e.at} although the {needed} letter "
                           f"did not reach ({[m.status for m in letters] or 'none'})")
    return out


def check_notice_after_proceed(sim) -> list[str]:
    """pre_sanction_notice only after review_decision proceed applied while the case was in sanction_review."""
    out = []
    for e in sim.steps:
        if _kind(e.path, e.step) != "notice":
            continue
        current = None
        proceed = False
        for r in _case_log(sim, e.case_id):
            if r.n >= e.n:
                break
            if isinstance(r, StepEntered):
                current, proceed = r.step, False
            elif isinstance(r, Applied) and r.event.type == "review_decision" and r.event.decision == "proceed":
                if current is not None and _kind(e.path, current) == "review":
                    proceed = True
        if not (current is not None and _kind(e.path, current) == "review" and proceed):
            out.append(f"case {e.case_id}: {e.step} entered at {e.at} without review_decision proceed "
                       f"during the review (last step entered: {current})")
    return out


def check_referral_after_observation(sim) -> list[str]:
    """crsa_referral only once observation_days have run from a known receipt date."""
    out = []
    for e in sim.steps:
        if _kind(e.path, e.step) != "referral":
            continue
        notice_entry = None
        receipt = None
        for r in _case_log(sim, e.case_id):
            if r.n >= e.n:
                break
            if isinstance(r, StepEntered) and _kind(e.path, r.step) == "notice":
                notice_entry, receipt = r, None
            elif (isinstance(r, Applied) and r.event.type in ("ar_signed", "ar_unclaimed")
                  and notice_entry is not None and receipt is None):
                receipt = r.event.receipt_on or r.at.astimezone(PARIS).date()
        if notice_entry is None or receipt is None:
            out.append(f"case {e.case_id}: {e.step} entered at {e.at} without a known receipt date")
            continue
        days = POLICY.path(e.path).step(notice_entry.step).observation_days
        end = dt.datetime.combine(receipt + dt.timedelta(days=days + 1), dt.time(0), tzinfo=PARIS)
        if e.at < end:
            out.append(f"case {e.case_id}: {e.step} entered at {e.at}, before the end of the observation "
                       f"period ({end}, receipt {receipt})")
    return out


def check_no_referral_after_observations_without_refer(sim) -> list[str]:
    """After observations, a hearing request or a legitimate reason at or after sanction_review, crsa_referral
    only after an agent's review_decision refer (applied at observations_review, after them)."""
    out = []
    for e in sim.steps:
        if _kind(e.path, e.step) != "referral":
            continue
        heard = None
        refer = False
        in_procedure = False
        for r in _case_log(sim, e.case_id):
            if r.n >= e.n:
                break
            if isinstance(r, StepEntered):
                in_procedure = in_procedure or _kind(e.path, r.step) in ("review", "notice")
            elif isinstance(r, Applied):
                t = r.event.type
                if in_procedure and (t in ("observations_received", "hearing_requested")
                                     or (t == "legitimate_reason" and _reason_end(r.event) > r.at)):
                    if r.before.status == "active" and (t != "observations_received" and t != "hearing_requested"
                                                        or r.before.notice_on is not None):
                        heard, refer = r, False
                elif t == "review_decision" and r.event.decision == "refer" and r.before.step == "observations_review":
                    refer = True
                elif t == "review_decision" and r.event.decision == "proceed" and r.after.step != r.before.step:
                    heard = None  # an agent weighed it and sent a (new) notice: only what follows counts
        if heard is not None and not refer:
            out.append(f"case {e.case_id}: {e.step} entered at {e.at} after {heard.event.type} ({heard.at}) "
                       "without an agent's review_decision refer")
    return out


def check_measure_within_bounds(sim) -> list[str]:
    """Every notice and decision letter states a rate and a duration within the décret's bounds, and a
    decision is never harsher than the measure the notice announced."""
    out = []
    measure = POLICY.measure
    for s in sim.sent:
        if s.step not in ("pre_sanction_notice", "sanction_decision") or s.channel != "letter":
            continue
        state = sim.states[s.case_id]
        if s.step == "pre_sanction_notice":
            rate, months, repeat = state.measure_rate, state.measure_months, state.measure_repeat
        else:
            rate, months, repeat = state.decision_rate, state.decision_months, state.measure_repeat
        bounds = measure.repeat if repeat else measure.first
        if rate is None or months is None or not (bounds.rate[0] <= rate <= bounds.rate[1]) \
                or not (bounds.months[0] <= months <= bounds.months[1]):
            out.append(f"case {s.case_id}: {s.step} sent with measure {rate} % / {months} months "
                       f"(repeat={repeat}) outside {bounds}")
        elif s.step == "sanction_decision" and (state.measure_rate is None or rate > state.measure_rate
                                                or months > state.measure_months):
            out.append(f"case {s.case_id}: decision {rate} % / {months} months harsher than the notice "
                       f"({state.measure_rate} % / {state.measure_months} months)")
    return out


def _states(sim):
    for r in sim.log:
        if isinstance(r, StepEntered):
            yield r, r.state
        elif isinstance(r, Applied):
            yield r, r.after


def check_deadlines_on_working_days(sim) -> list[str]:
    """A date given to a person (respond_by, the last day of the observation period) is a working day."""
    out = []
    for r, s in _states(sim):
        if s.respond_by is not None and not CAL.is_working_day(s.respond_by):
            out.append(f"case {r.case_id}: respond_by {s.respond_by} is not a working day")
        if s.phase == "observation" and s.due_at is not None and s.status == "active":
            last = (s.due_at.astimezone(PARIS) - dt.timedelta(days=1)).date()
            if not CAL.is_working_day(last):
                out.append(f"case {r.case_id}: observation period ends on {last}, not a working day")
    return out


def check_no_receipt_before_dispatch(sim) -> list[str]:
    """A receipt date recorded on a case is neither before the notice was issued nor in the future."""
    out = []
    for r in sim.log:
        if not isinstance(r, Applied) or r.event.type not in ("ar_signed", "ar_unclaimed"):
            continue
        got = r.after.receipt_on
        if got is None or got == r.before.receipt_on:
            continue
        if r.after.notice_on is None or got < r.after.notice_on or got > r.at.astimezone(PARIS).date():
            out.append(f"case {r.case_id}: receipt {got} recorded (notice issued {r.after.notice_on}, event {r.at})")
    return out


FOREVER = dt.datetime(9999, 1, 1, tzinfo=UTC)


def _reason_end(ev) -> dt.datetime:
    """When a legitimate reason ends by itself: ``until``; never for a category without a natural end
    (homelessness, incarceration), which waits for an agent at its review date."""
    category = POLICY.legitimate_reasons.categories.get(ev.category or "")
    if category is not None and not category.natural_end:
        return FOREVER if ev.review_on is not None else dt.datetime.min.replace(tzinfo=UTC)
    return ev.until if ev.until is not None else dt.datetime.min.replace(tzinfo=UTC)


def _legitimate_windows(sim) -> list[tuple[int, dt.datetime, int]]:
    """(start n, until, end n) of each legitimate reason: from the event to its end, for the person's
    every case; it ends early if the person books an appointment (the engine's rule) or an agent records
    that it ended; one without a natural end ends only so (or when another reason is recorded, which then
    rules)."""
    windows = []
    for a in sim.applied:
        ev = a.event
        if a.before.status != "active":
            continue
        if ev.type == "legitimate_reason" and _reason_end(ev) > a.at:
            windows.append([a.n, _reason_end(ev), None])
        elif (ev.type == "review_decision" and ev.decision == "legitimate_reason" and a.before.phase == "review"
              and _reason_end(ev) > a.at):
            windows.append([a.n, _reason_end(ev), None])
    for w in windows:
        for a in sim.applied:
            if a.n > w[0] and a.at < w[1] and a.event.type == "rdv_booked" and any(
                    isinstance(x, RecordAppointment) and x.kind == "booked" for x in a.actions):
                w[2] = a.n
                break
            if a.n > w[0] and a.at < w[1] and a.before.phase == "paused" and (
                    a.event.type == "legitimate_reason_ended"  # an agent says it is over, early or at review
                    or (w[1] == FOREVER and a.event.type == "legitimate_reason")):  # a new reason rules
                w[2] = a.n
                break
    return [(s, u, e if e is not None else 10**12) for s, u, e in windows]


def _booking_windows(sim) -> dict[int, list[tuple[int, int]]]:
    """Per case, (start n, end n) of each voluntary booking: from its RecordAppointment to the next
    appointment outcome, step change or closure of the case."""
    out: dict[int, list[tuple[int, int]]] = {}
    for cid in _paths(sim):
        start = None
        for r in _case_log(sim, cid):
            action = getattr(r, "action", None)
            ends = (isinstance(action, AppointmentOutcome) or isinstance(r, (StepEntered, Closed))
                    or (isinstance(action, RecordAppointment)))
            if start is not None and ends:
                out.setdefault(cid, []).append((start, r.n))
                start = None
            if isinstance(action, RecordAppointment) and action.kind == "booked":
                start = r.n
        if start is not None:
            out.setdefault(cid, []).append((start, 10**12))
    return out


def check_quiet_periods(sim) -> list[str]:
    """Nothing sent during a legitimate reason, during a booking (but its reminder), after closure
    (but the referral letter written as the case is referred)."""
    out = []
    paths = _paths(sim)
    closed = {c.case_id: c for c in sim.closed}
    legit = _legitimate_windows(sim)
    booked = _booking_windows(sim)
    reminder = POLICY.reminder.step
    # The Département's letters once the case has left the worker's hands (issue 9): the commission's
    # decision and its end after a referral, the closing letter of a review.
    after_closure = {"crsa_referral": {"sanction_decision", "sanction_lifting"}, "review_closed": {"procedure_closed"}}
    for s in sim.sent:
        c = closed.get(s.case_id)
        if c is not None and s.n > c.n and s.step in after_closure.get(c.outcome, ()):
            continue
        for start, until, end in legit:
            if start < s.n < end and s.at < until:
                out.append(f"case {s.case_id}: {s.step}/{s.channel} sent at {s.at} during a legitimate reason "
                           f"(until {until})")
        if s.step != reminder:
            for start, end in booked.get(s.case_id, ()):
                if start < s.n < end:
                    out.append(f"case {s.case_id}: {s.step}/{s.channel} sent at {s.at} while an appointment "
                               "is booked")
        c = closed.get(s.case_id)
        if c is not None and s.n > c.n and not (c.outcome == "crsa_referral"
                                                and _kind(paths[s.case_id], s.step) == "referral"):
            out.append(f"case {s.case_id}: {s.step}/{s.channel} sent at {s.at} after the case closed "
                       f"({c.outcome} at {c.at})")
    return out


def check_once_per_step_channel(sim) -> list[str]:
    seen: dict[tuple, Sent] = {}
    out = []
    for s in sim.sent:
        key = (s.case_id, s.step, s.channel, s.seq) if s.step == POLICY.reminder.step else (
            s.case_id, s.step, s.channel)
        if key in seen:
            out.append(f"case {s.case_id}: {s.step}/{s.channel} sent twice ({seen[key].at} and {s.at})")
        seen[key] = s
    return out


def _fr_holidays(year: int):
    return holidays.France(years=year)


def _working(day: dt.date) -> bool:
    return day.weekday() < 5 and day not in _fr_holidays(day.year)


def _in_window(moment: dt.datetime) -> bool:
    loc = moment.astimezone(PARIS)
    return _working(loc.date()) and dt.time(9) <= loc.time() < dt.time(19)


def _next_opening(moment: dt.datetime) -> dt.datetime:
    if _in_window(moment):
        return moment
    loc = moment.astimezone(PARIS)
    day = loc.date() if loc.time() < dt.time(9) else loc.date() + dt.timedelta(days=1)
    while not _working(day):
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(9), tzinfo=PARIS).astimezone(UTC)


def check_sending_window(sim) -> list[str]:
    out = []
    for s in sim.sent:
        if s.channel in ("sms", "email") and not _in_window(s.at):
            out.append(f"case {s.case_id}: {s.step}/{s.channel} sent at {s.at.astimezone(PARIS)} "
                       "(outside the sending window)")
    return out


def check_reminder_timing(sim) -> list[str]:
    """The appointment reminder goes at 10:00 two days before (the working day before if that one is
    not worked), or at the first opening of the window after a later booking (or after the end of a
    legitimate reason that cancelled it) — and never after the appointment."""
    out = []
    records: dict[tuple[int, int], tuple] = {}
    counts: dict[int, int] = {}
    resumes: dict[int, list[dt.datetime]] = {}
    for a in sim.actions:
        if isinstance(a.action, RecordAppointment):
            counts[a.case_id] = counts.get(a.case_id, 0) + 1
            records[(a.case_id, counts[a.case_id])] = (a.at, a.action.at)
        elif isinstance(a.action, Flag) and a.action.name == "resumed" and a.action.detail == "appointment":
            resumes.setdefault(a.case_id, []).append(a.at)
    for s in sim.sent:
        if s.step != POLICY.reminder.step:
            continue
        booked_at, appointment = records[(s.case_id, s.seq)]
        # planned at the booking, or planned again when a pause ended before the appointment
        booked_at = max([booked_at] + [r for r in resumes.get(s.case_id, ()) if booked_at <= r <= s.at])
        day = appointment.astimezone(PARIS).date() - dt.timedelta(days=2)
        while not _working(day):
            day -= dt.timedelta(days=1)
        ideal = dt.datetime.combine(day, dt.time(10), tzinfo=PARIS).astimezone(UTC)
        expected = ideal if ideal >= booked_at else _next_opening(booked_at)
        late_ok = sim.lag > dt.timedelta(0) and expected <= s.at  # the scheduler ran late
        if not (s.at == expected or late_ok) or s.at >= appointment:
            out.append(f"case {s.case_id}: reminder {s.seq} sent at {s.at.astimezone(PARIS)}, expected "
                       f"{expected.astimezone(PARIS)} (appointment {appointment.astimezone(PARIS)}, "
                       f"booked {booked_at.astimezone(PARIS)})")
    return out


def check_first_step_at_once(sim) -> list[str]:
    """Every case opened for a new droit enters its first step at creation; a late droit is flagged."""
    out = []
    first = sim.opened[0]
    entries = [e for e in sim.steps if e.case_id == first.case_id]
    if any(a.case_id == first.case_id and a.at <= first.at + sim.lag for a in sim.applied) \
            or sim.now < first.at + sim.lag:
        return out  # an event reached the case before the scheduler first ran (possible with a lag)
    if not entries or entries[0].at != first.at + sim.lag or entries[0].step != POLICY.path(first.path).first.id:
        out.append(f"case {first.case_id}: first step not entered at creation ({entries[:1]})")
    target = POLICY.delays.first_invitation_target_days
    late = first.at.astimezone(PARIS).date() > sim.droit_opened_on + dt.timedelta(days=target)
    state = sim.states[first.case_id]
    if state.late != late:
        out.append(f"case {first.case_id}: late={state.late}, expected {late}")
    if state.first_invitation_at is not None and _kind(first.path, POLICY.path(first.path).first.id) == "invite" \
            and state.first_invitation_at != first.at + sim.lag:
        out.append(f"case {first.case_id}: first invitation at {state.first_invitation_at}, opened {first.at}")
    return out


TIMED_PHASES = ("enter", "waiting", "appointment", "paused", "observation")
AGENT_PHASES = ("review", "task", "held", "awaiting_receipt")  # receipt overdue: flagged to agents


def _waits_for_agent(sim, cid: int, s) -> bool:
    """A timed phase handed to an agent on purpose, with the task flagged: an appointment passed with
    nothing recorded on a path where attendance is confirmed, or a reason without end at its review."""
    flags = [a.action for a in sim.actions if a.case_id == cid and isinstance(a.action, Flag)]
    if s.phase == "appointment":
        return (POLICY.path(s.path).confirm_attendance and s.appointment_at is not None
                and s.appointment_at <= sim.now and Flag("task", "attendance_to_confirm") in flags)
    if s.phase == "paused":
        category = POLICY.legitimate_reasons.categories.get(s.pause_category or "")
        return (category is not None and not category.natural_end and s.paused_until is not None
                and s.paused_until <= sim.now and Flag("task", "legitimate_reason_review") in flags)
    return False


def check_no_case_silently_stuck(sim) -> list[str]:
    """An active case either has a next due moment or waits for an agent who can see why."""
    out = []
    for cid, s in sim.states.items():
        if s.status != "active":
            continue
        if s.phase in TIMED_PHASES and s.due_at is None:
            if _waits_for_agent(sim, cid, s):
                continue
            out.append(f"case {cid}: phase {s.phase} without a due moment")
        elif s.phase == "held" and not s.hold_reason:
            out.append(f"case {cid}: held without a reason")
        elif s.phase not in TIMED_PHASES + AGENT_PHASES:
            out.append(f"case {cid}: active in phase {s.phase}")
    return out


def check_one_active_case(sim) -> list[str]:
    """A person has at most one active case; a case opened by the engine replaces one it closed."""
    out = []
    active = [cid for cid, s in sim.states.items() if s.status == "active"]
    if len(active) > 1:
        out.append(f"several active cases: {active}")
    closed_at = {c.case_id: c.n for c in sim.closed}
    for o in sim.opened[1:]:
        if o.from_case is None or o.from_case not in closed_at:
            out.append(f"case {o.case_id} opened ({o.reason}) without closing case {o.from_case}")
    return out


# The sanction path's letters: what only the Président du Conseil départemental may say (CASF L262-37).
SANCTION_LETTERS = ("pre_sanction_notice", "crsa_referral", "sanction_decision", "sanction_lifting",
                    "procedure_closed")


def check_issued_by_the_department(sim) -> list[str]:
    """Every notice, referral, decision, lifting and closing letter sent is one the Département issues
    (message_content.DEPARTMENT_STEPS), whatever the case's organisation."""
    return [f"case {s.case_id}: {s.step} letter issued by {sim.states[s.case_id].organisation}, "
            "not by the Département"
            for s in sim.sent if s.channel == "letter" and s.step in SANCTION_LETTERS
            and s.step not in message_content.DEPARTMENT_STEPS]


def check_no_absence_assumed(sim) -> list[str]:
    """On a path where attendance is confirmed by an agent (France Travail), no step follows an
    appointment because nothing was recorded: only rdv_missed moves it on."""
    return [f"case {e.case_id}: {e.step} entered at {e.at} without a recorded absence ({e.reason})"
            for e in sim.steps
            if POLICY.path(e.path).confirm_attendance and e.reason == "no_attendance_recorded"]


def check_department_reviews(sim) -> list[str]:
    """A France Travail report hands the review to the department: the sanction_review after a handoff
    belongs to the department's organisation, and who reported stays on the case."""
    out = []
    for e in sim.steps:
        if e.reason.startswith("handoff:") and (e.state.organisation != sim.review_organisation
                                                or e.state.reported_by is None):
            out.append(f"case {e.case_id}: {e.step} after {e.reason} kept by {e.state.organisation} "
                       f"(reported by {e.state.reported_by})")
    return out


CHECKS = (
    check_one_active_case,
    check_issued_by_the_department,
    check_no_absence_assumed,
    check_department_reviews,
    check_no_case_silently_stuck,
    check_review_relies_on_letters,
    check_notice_after_proceed,
    check_referral_after_observation,
    check_no_referral_after_observations_without_refer,
    check_measure_within_bounds,
    check_deadlines_on_working_days,
    check_no_receipt_before_dispatch,
    check_quiet_periods,
    check_once_per_step_channel,
    check_sending_window,
    check_reminder_timing,
    check_first_step_at_once,
)


def violations(sim) -> list[str]:
    return [v for check in CHECKS for v in check(sim)]


# --- the generator ----------------------------------------------------------------------------

DAY = 86400.0

starts = st.builds(
    lambda days, minutes: dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(days=days, minutes=minutes),
    st.integers(0, 3 * 365), st.integers(0, 24 * 60 - 1))

EVENT_WEIGHTS = {
    "rdv_booked": 3, "rdv_attended": 1, "rdv_missed": 2, "rdv_cancelled": 2, "legitimate_reason": 3, "npai": 2,
    "address_updated": 2, "phone_updated": 1, "sms_failed": 1, "sms_opt_out": 1, "droit_closed": 1,
    "reoriented": 1, "review_decision": 6, "phone_followup_done": 3, "ar_signed": 4, "ar_unclaimed": 2,
    "observations_received": 2, "hearing_requested": 1, "sanction_decided": 2, "sanction_lifted": 1,
    "legitimate_reason_ended": 1, "preferences_updated": 1,
}
assert set(EVENT_WEIGHTS) == set(EVENT_TYPES)
WEIGHTED_EVENTS = [t for t, w in EVENT_WEIGHTS.items() for _ in range(w)]

advance_op = st.tuples(st.just("advance"), st.floats(60.0, 20 * DAY))
to_due_op = st.tuples(st.just("to_due"), st.floats(0.0, 3600.0))
event_op = st.tuples(
    st.just("event"),
    st.sampled_from(WEIGHTED_EVENTS),
    st.fixed_dictionaries({
        "ahead": st.floats(1.0, 20.0),          # rdv_booked: days ahead
        "until": st.floats(1.0, 40.0),          # legitimate_reason / review_decision: days ahead
        "decision": st.sampled_from(REVIEW_DECISIONS + ("proceed", "proceed")),
        "to": st.sampled_from(sorted(POLICY.paths)),
        "frac": st.floats(0.0, 1.0),            # ar_*: where between the LRAR send and now
        "rate": st.integers(30, 100),           # review_decision proceed / sanction_decided
        "months": st.integers(1, 4),
        "repeat": st.booleans(),
        "category": st.sampled_from(sorted(POLICY.legitimate_reasons.categories)),
        "review": st.integers(1, 60),           # a reason without a natural end: its review, days ahead
    }),
)
# "agent": the event an agent or the post would most plausibly record in the case's current phase
# (review decision under review, call outcome for a phone task, AR for a registered letter): it
# lets random lives reach the deep steps of the paths often enough.
agent_op = st.tuples(st.just("agent"), event_op.map(lambda op: op[2]))
ops = st.lists(st.one_of(advance_op, to_due_op, to_due_op, to_due_op, event_op, event_op, agent_op, agent_op),
               min_size=1, max_size=40)

lives = st.fixed_dictionaries({
    "path": st.sampled_from(sorted(POLICY.paths)),
    "start": starts,
    "droit_days": st.integers(0, 60),
    "has_phone": st.booleans(),
    "has_email": st.booleans(),
    "has_address": st.sampled_from([True, True, True, True, False]),
    # the scheduler's delay (sweeps and relay running late, a worker down for a while)
    "lag": st.sampled_from([0.0, 0.0, 0.0, 60.0, 3600.0, 6 * 3600.0, 2 * DAY]),
    "ops": ops,
})


def _event_params(sim, type_: str, p: dict) -> dict | None:
    now = sim.now
    if type_ == "rdv_booked":
        return {"appointment_at": now + dt.timedelta(days=p["ahead"])}
    if type_ == "legitimate_reason":
        return _reason_params(sim, p)
    if type_ == "preferences_updated":
        return {"large_print": p["repeat"], "language": "ar" if p["frac"] > 0.5 else None}
    if type_ == "reoriented":
        return {"to": p["to"]}
    if type_ == "review_decision":
        state = sim.states[sim.case_id]
        decision = p["decision"]
        # an agent picks among the decisions the review offers (proceed before the notice, refer after)
        if decision in ("proceed", "refer"):
            decision = "refer" if state.notice_on is not None else "proceed"
        params = {"decision": decision}
        if decision == "legitimate_reason":
            params.update(_reason_params(sim, p))
        if decision == "proceed":
            params.update(_measure(p))
        return params
    if type_ == "sanction_decided":
        state = sim.states[sim.case_id]
        if state.outcome != "crsa_referral":
            return None  # only after a referral to the commission
        # the commission decides within what the notice announced (a harsher measure is refused)
        measure = _measure({**p, "repeat": state.measure_repeat})
        if state.measure_rate is not None:
            measure.update(rate=min(measure["rate"], state.measure_rate),
                           months=min(measure["months"], state.measure_months))
        return {"rate": measure["rate"], "months": measure["months"],
                "start_on": now.astimezone(PARIS).date() + dt.timedelta(days=1)}
    if type_ == "sanction_lifted":
        state = sim.states[sim.case_id]
        if state.decision_rate is None:
            return None
        return {"receipt_on": max(now.astimezone(PARIS).date(), state.decision_from)}
    if type_ in ("ar_signed", "ar_unclaimed"):
        cid = sim.case_id
        lrar = [s for s in sim.sent if s.case_id == cid and s.postage == "lrar"]
        if not lrar:
            return None  # no registered letter left: nothing to acknowledge
        sent_at = lrar[-1].at
        at = sent_at + (now - sent_at) * p["frac"]
        return {"receipt_on": at.astimezone(PARIS).date()}
    return {}


def _reason_params(sim, p: dict) -> dict:
    category = p["category"]
    if POLICY.legitimate_reasons.categories[category].natural_end:
        return {"category": category, "until": sim.now + dt.timedelta(days=p["until"])}
    return {"category": category, "review_on": sim.now.astimezone(PARIS).date() + dt.timedelta(days=p["review"])}


def _measure(p: dict) -> dict:
    repeat = p.get("repeat", False)
    bounds = POLICY.measure.repeat if repeat else POLICY.measure.first
    months = p.get("months", bounds.months[0])
    return {"rate": p.get("rate", bounds.rate[0]), "months": min(max(months, bounds.months[0]), bounds.months[1]),
            "repeat": repeat}


def _agent_event(sim, p: dict) -> str | None:
    state = sim.states[sim.case_id]
    if state.outcome == "crsa_referral":
        return "sanction_decided" if state.decision_rate is None else "sanction_lifted"
    phase = state.phase
    if phase in ("awaiting_receipt", "observation") and p["frac"] > 0.8:
        return "observations_received" if p["frac"] > 0.9 else "hearing_requested"
    if phase == "review":
        return "review_decision"
    if phase == "task":
        return "phone_followup_done"
    if phase == "paused" and state.due_at is None:
        return "legitimate_reason_ended"  # a reason without a natural end, at its review
    if phase in ("awaiting_receipt", "paused"):
        return "ar_unclaimed" if p["frac"] < 0.3 else "ar_signed"
    if phase == "appointment":
        return "rdv_missed" if p["frac"] < 0.7 else "rdv_attended"
    if phase == "held":
        return "address_updated" if p["frac"] < 0.6 else "rdv_booked"
    return None


def run_life(life, engine_module=engine) -> Sim:
    start = life["start"]
    droit = start.astimezone(PARIS).date() - dt.timedelta(days=life["droit_days"])
    sim = Sim(POLICY, CAL, path=life["path"], organisation=ORGS[life["path"]], droit_opened_on=droit, start=start,
              has_phone=life["has_phone"], has_email=life["has_email"], has_address=life["has_address"],
              engine=engine_module, lag=dt.timedelta(seconds=life.get("lag", 0.0)))
    for op in life["ops"]:
        if op[0] == "advance":
            sim.advance(dt.timedelta(seconds=op[1]))
        elif op[0] == "to_due":
            due = sim.states[sim.case_id].due_at
            if due is not None and due > sim.now:
                sim.advance_to(due + dt.timedelta(seconds=op[1]))
            else:
                sim.advance(dt.timedelta(seconds=60 + op[1]))
        else:
            if op[0] == "agent":
                type_, p = _agent_event(sim, op[1]), op[1]
                if type_ is None:
                    continue
            else:
                _, type_, p = op
            params = _event_params(sim, type_, p)
            if params is not None:
                sim.event(type_, **params)
    sim.advance(dt.timedelta(days=1))  # let what is due now happen
    return sim


# --- the properties ----------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@PROPERTY_SETTINGS
@given(lives)
def test_random_lives_keep_every_invariant(life):
    sim = run_life(life)  # any exception (other than EngineError, never expected here) fails
    entered = set(sim.entered())
    for step in ("sanction_review", "pre_sanction_notice", "crsa_referral"):
        if step in entered:
            event(f"reached {step}")
    event(f"cases opened: {min(len(sim.opened), 3)}")
    if any(s.phase == "held" for s in sim.states.values()):
        event("a case was held")
    problems = violations(sim)
    assert not problems, "\n".join(problems)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(sorted(POLICY.paths)), start=starts, droit_days=st.integers(16, 60),
       has_phone=st.booleans(), has_email=st.booleans())
def test_late_droit_is_invited_at_once_and_flagged(path, start, droit_days, has_phone, has_email):
    droit = start.astimezone(PARIS).date() - dt.timedelta(days=droit_days)
    sim = Sim(POLICY, CAL, path=path, organisation=ORGS[path], droit_opened_on=droit, start=start,
              has_phone=has_phone, has_email=has_email)
    first = sim.steps[0]
    assert first.at == start and first.step == POLICY.path(path).first.id
    assert sim.case.late is True
    if POLICY.path(path).first.kind == "invite":
        assert sim.case.first_invitation_at == start
        assert [s.channel for s in sim.sent_for(first.step, "letter")] == ["letter"]
        assert sim.sent_for(first.step, "letter")[0].at == start  # letters are not windowed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=starts, droit_days=st.integers(0, 15))
def test_timely_droit_is_not_late(start, droit_days):
    droit = start.astimezone(PARIS).date() - dt.timedelta(days=droit_days)
    sim = Sim(POLICY, CAL, droit_opened_on=droit, start=start)
    assert sim.case.late is False and sim.steps[0].at == start


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(life=lives, bad_type=st.sampled_from(["legitimate_reason", "rdv_booked", "review_decision", "reoriented"]))
def test_invalid_parameters_raise_engine_error_only(life, bad_type):
    life = dict(life, ops=life["ops"][:8])
    sim = run_life(life)
    state = sim.state()
    if state.status != "active":
        return  # closed cases record any event and change nothing
    bad = {"legitimate_reason": {}, "rdv_booked": {}, "review_decision": {"decision": "maybe"},
           "reoriented": {"to": "nowhere"}}[bad_type]
    with pytest.raises(engine.EngineError):
        engine.apply(state, Event(bad_type, sim.now, **bad), sim.now, POLICY, CAL)


# --- the checkers catch what they claim to catch ------------------------------------------------


SILENT_CD = {"path": "cd", "start": dt.datetime(2024, 3, 4, 10, tzinfo=UTC), "droit_days": 3, "has_phone": True,
             "has_email": True, "has_address": True, "ops": []}


def _silent_to_review(engine_module=engine) -> Sim:
    return run_life(dict(SILENT_CD, ops=[("advance", 45 * DAY)]), engine_module)


def test_a_correct_run_has_no_violation_and_reaches_every_gate():
    sim = run_life(dict(SILENT_CD, ops=[
        ("advance", 45 * DAY),
        ("event", "review_decision", {"decision": "proceed", "ahead": 1, "until": 1, "to": "cd", "frac": 0}),
        ("advance", 2 * DAY),
        ("event", "ar_signed", {"decision": "proceed", "ahead": 1, "until": 1, "to": "cd", "frac": 1.0}),
        ("advance", 20 * DAY),
    ]))
    assert sim.entered() == ["invitation_1", "invitation_2", "convocation", "sanction_review",
                             "pre_sanction_notice", "crsa_referral"]
    assert violations(sim) == []


def test_checker_catches_review_entered_on_a_returned_letter(monkeypatch):
    """A broken engine that ignores returned letters enters sanction_review after an NPAI."""
    monkeypatch.setattr(engine, "letters_reached", lambda case, steps: True)
    sim = run_life(dict(SILENT_CD, ops=[("advance", 32 * DAY),
                                        ("event", "npai", {}), ("advance", 15 * DAY)]))
    assert "sanction_review" in sim.entered()
    problems = check_review_relies_on_letters(sim)
    assert problems and "convocation letter did not reach" in problems[0]


def test_checker_catches_a_referral_before_the_observation_period_ends():
    """A broken engine that counts the observation period from the day the LRAR was sent."""
    real_decide, real_apply = engine.decide, engine.apply

    def early_apply(case, event, now, policy, cal):
        decision = real_apply(case, event, now, policy, cal)
        if event.type in ("ar_signed", "ar_unclaimed") and decision.state.phase == "observation":
            decision = dataclasses.replace(decision, state=dataclasses.replace(decision.state, due_at=now))
        return decision

    def early_decide(case, now, policy, cal):
        if case.phase == "observation":
            case = dataclasses.replace(case, receipt_on=cal.local_date(case.step_entered_at)
                                       - dt.timedelta(days=10))
        return real_decide(case, now, policy, cal)

    class Broken:
        pass

    broken = Broken()
    for name in ("new_case", "assign_slot", "send_verdict"):
        setattr(broken, name, getattr(engine, name))
    broken.decide, broken.apply = early_decide, early_apply
    sim = run_life(dict(SILENT_CD, ops=[
        ("advance", 45 * DAY),
        ("event", "review_decision", {"decision": "proceed", "ahead": 1, "until": 1, "to": "cd", "frac": 0}),
        ("advance", 2 * DAY),
        ("event", "ar_signed", {"decision": "proceed", "ahead": 1, "until": 1, "to": "cd", "frac": 1.0}),
        ("advance", 20 * DAY),
    ]), broken)
    assert "crsa_referral" in sim.entered()
    problems = check_referral_after_observation(sim)
    assert problems and "before the end of the observation period" in problems[0]


def test_checker_catches_messages_outside_the_window(monkeypatch):
    """A broken send_verdict that never defers sends the Saturday-night invitation SMS at once."""
    real = engine.send_verdict

    def never_defer(case, message, now, policy, cal):
        v = real(case, message, now, policy, cal)
        return "send" if v == "defer" else v

    monkeypatch.setattr(engine, "send_verdict", never_defer)
    monkeypatch.setattr(CAL.__class__, "next_send_slot", lambda self, moment: moment)
    life = dict(SILENT_CD, start=dt.datetime(2024, 3, 9, 22, tzinfo=UTC))  # Saturday 23:00 in Paris
    sim = run_life(life)
    problems = check_sending_window(sim)
    assert problems and all("outside the sending window" in p for p in problems)


def test_checker_catches_sends_during_a_legitimate_reason_and_after_closure():
    sim = run_life(dict(SILENT_CD, ops=[("advance", 3 * DAY)]))
    until = sim.now + dt.timedelta(days=10)
    sim.event("legitimate_reason", until=until, reason="hospitalisation")
    assert check_quiet_periods(sim) == []
    # Forge what a broken engine would have logged: a letter sent during the pause...
    forged = Sent(n=10**9, case_id=1, step="invitation_2", channel="letter", seq=0, at=sim.now,
                  postage="simple", case_status="active", case_step="invitation_1", case_phase="paused")
    sim.log.append(forged)
    sim.sent.append(forged)
    assert any("legitimate reason" in p for p in check_quiet_periods(sim))
    # ... and an SMS after the case closed.
    sim.event("droit_closed")
    late = dataclasses.replace(forged, n=10**9 + 1, step="invitation_1", channel="sms",
                               at=until + dt.timedelta(days=1))
    sim.log.append(late)
    sim.sent.append(late)
    assert any("after the case closed" in p for p in check_quiet_periods(sim))


def test_checker_catches_a_notice_without_proceed_and_a_duplicate_send():
    sim = _silent_to_review()
    review = sim.entry("sanction_review")
    forged = dataclasses.replace(review, n=10**9, step="pre_sanction_notice", from_step="sanction_review")
    sim.log.append(forged)
    sim.steps.append(forged)
    assert check_notice_after_proceed(sim)
    dup = dataclasses.replace(sim.sent[0], n=10**9 + 1)
    sim.sent.append(dup)
    assert check_once_per_step_channel(sim)


def test_checker_catches_a_reminder_pushed_to_the_morning_of_the_appointment(monkeypatch):
    """The engine's former rule: a reminder due on a weekend went on the next working morning."""
    real_plan = engine._plan

    def pushed_forward(case, appointment_at, now, policy, cal):
        day = cal.local_date(appointment_at) - dt.timedelta(days=policy.delays.reminder_days_before)
        at = cal.next_send_slot(max(cal.at(day, policy.delays.reminder_time), now))
        if at >= appointment_at:
            return case, []
        return real_plan(case, policy.reminder.step, policy.reminder.channels, now, cal,
                         seq=case.appointment_count, not_before=at)

    monkeypatch.setattr(engine, "_plan_reminder", pushed_forward)
    sim = run_life(dict(SILENT_CD, ops=[]))
    sim.event("rdv_booked", appointment_at=dt.datetime(2024, 3, 11, 13, tzinfo=UTC))  # Monday 14:00
    sim.advance(dt.timedelta(days=10))
    problems = check_reminder_timing(sim)
    assert problems and "expected 2024-03-08 10:00" in problems[0]


def _booked_then_paused_before_the_appointment() -> Sim:
    sim = run_life(dict(SILENT_CD, ops=[]))
    sim.event("rdv_booked", appointment_at=dt.datetime(2024, 3, 27, 13, 30, tzinfo=UTC))  # Wednesday 14:30
    sim.event("legitimate_reason", until=dt.datetime(2024, 3, 15, 8, tzinfo=UTC), reason="hospitalisation")
    sim.advance(dt.timedelta(days=25))
    return sim


def test_checker_follows_a_reminder_given_back_after_a_pause_and_catches_a_late_one(monkeypatch):
    sim = _booked_then_paused_before_the_appointment()
    assert [s.seq for s in sim.sent if s.step == POLICY.reminder.step] == [1]
    assert check_reminder_timing(sim) == [] and check_quiet_periods(sim) == []

    real = engine._plan_reminder

    def late(case, appointment_at, now, policy, cal, *, revive=False):
        case, actions = real(case, appointment_at, now, policy, cal, revive=revive)
        return case, [dataclasses.replace(a, not_before=a.not_before + dt.timedelta(hours=3))
                      if isinstance(a, ReplanMessage) else a for a in actions]

    monkeypatch.setattr(engine, "_plan_reminder", late)
    problems = check_reminder_timing(_booked_then_paused_before_the_appointment())
    assert problems and "expected 2024-03-25 10:00" in problems[0]


# --- due process (issue 9): the new checkers catch what they claim to catch ---------------------------

OPS = {"decision": "proceed", "ahead": 1, "until": 1, "to": "cd", "frac": 1.0}


def _to_observation(engine_module=engine, **proceed) -> Sim:
    """A silent CD case: proceed, the LRAR signed two days later (observation period running)."""
    return run_life(dict(SILENT_CD, ops=[("advance", 45 * DAY), ("event", "review_decision", {**OPS, **proceed}),
                                         ("advance", 2 * DAY), ("event", "ar_signed", OPS)]), engine_module)


def test_observations_stop_the_referral_until_an_agent_refers():
    sim = _to_observation()
    sim.event("observations_received")
    assert sim.state().step == "observations_review" and sim.state().phase == "review"
    sim.advance(dt.timedelta(days=30))
    assert "crsa_referral" not in sim.entered()
    sim.event("review_decision", decision="refer")
    sim.advance(dt.timedelta(days=1))
    assert sim.entered()[-1] == "crsa_referral"
    assert violations(sim) == []


def test_checker_catches_a_referral_after_observations_without_refer(monkeypatch):
    """A broken engine that records observations and lets the period run to the referral."""
    monkeypatch.setitem(engine._HANDLERS, "observations_received", lambda case, ev, now, policy, cal: (case, [], ""))
    sim = _to_observation()
    sim.event("observations_received")
    sim.advance(dt.timedelta(days=20))
    assert "crsa_referral" in sim.entered()
    problems = check_no_referral_after_observations_without_refer(sim)
    assert problems and "without an agent's review_decision refer" in problems[0]


def test_checker_catches_a_referral_after_a_legitimate_reason_without_refer(monkeypatch):
    """A broken engine whose pause, once over, resumes the observation period as if nothing happened."""
    real_resume = engine._resume
    monkeypatch.setattr(engine, "_in_procedure", lambda case, policy: False)
    sim = _to_observation()
    sim.event("legitimate_reason", until=sim.now + dt.timedelta(days=3))
    sim.advance(dt.timedelta(days=20))
    assert real_resume is engine._resume and "crsa_referral" in sim.entered()
    problems = check_no_referral_after_observations_without_refer(sim)
    assert problems and "legitimate_reason" in problems[0]


def test_checker_catches_a_measure_out_of_bounds(monkeypatch):
    """A broken policy check that lets any rate through: the notice states 150 %."""
    monkeypatch.setattr(type(POLICY.measure), "check",
                        lambda self, rate, months, repeat, household_size=None: (rate, months))
    sim = _to_observation(rate=150, months=9)
    problems = check_measure_within_bounds(sim)
    assert problems and "150 %" in problems[0]


def test_an_out_of_bounds_measure_is_refused():
    sim = run_life(dict(SILENT_CD, ops=[("advance", 45 * DAY)]))
    for params in ({"rate": 20}, {"rate": 101}, {"months": 3}, {"months": 5, "repeat": True}):
        with pytest.raises(engine.EngineError, match="hors des bornes"):
            engine.apply(sim.state(), Event("review_decision", sim.now, decision="proceed", **params), sim.now,
                         POLICY, CAL)
    d = engine.apply(sim.state(), Event("review_decision", sim.now, decision="proceed", months=4, repeat=True),
                     sim.now, POLICY, CAL)
    assert (d.state.measure_rate, d.state.measure_months, d.state.measure_repeat) == (30, 4, True)


def test_checker_catches_a_deadline_on_a_sunday(monkeypatch):
    """A broken engine that gives the person the 15th day, whatever day it is."""
    def calendar_days(now, days, cal):
        due = now + dt.timedelta(days=days)
        return due, cal.local_date(due)

    monkeypatch.setattr(engine, "_respond_deadline", calendar_days)
    # Saturday 9 March 2024: the 15 days end on Sunday 24 March
    sim = run_life(dict(SILENT_CD, start=dt.datetime(2024, 3, 9, 10, tzinfo=UTC), ops=[("advance", DAY)]))
    problems = check_deadlines_on_working_days(sim)
    assert problems and "2024-03-24" in problems[0]


def test_checker_catches_a_receipt_before_the_notice(monkeypatch):
    """A broken engine that takes any receipt date (the API once accepted 2000-01-01)."""
    real = engine._on_receipt

    def trusting(case, ev, now, policy, cal):
        state, actions, note = real(dataclasses.replace(case, notice_on=None), dataclasses.replace(
            ev, receipt_on=now.astimezone(PARIS).date()), now, policy, cal)
        return dataclasses.replace(state, notice_on=case.notice_on, receipt_on=ev.receipt_on), actions, note

    monkeypatch.setitem(engine._HANDLERS, "ar_signed", trusting)
    sim = run_life(dict(SILENT_CD, ops=[("advance", 45 * DAY), ("event", "review_decision", OPS)]))
    sim.event("ar_signed", receipt_on=dt.date(2000, 1, 1))
    problems = check_no_receipt_before_dispatch(sim)
    assert problems and "receipt 2000-01-01" in problems[0]


def test_a_receipt_before_the_notice_or_in_the_future_is_refused():
    sim = run_life(dict(SILENT_CD, ops=[("advance", 45 * DAY), ("event", "review_decision", OPS)]))
    state = sim.state()
    for day, words in ((dt.date(2000, 1, 1), "antérieure à l'envoi"),
                       (sim.now.astimezone(PARIS).date() + dt.timedelta(days=3), "dans le futur")):
        with pytest.raises(engine.EngineError, match=words):
            engine.apply(state, Event("ar_signed", sim.now, receipt_on=day), sim.now, POLICY, CAL)


def test_after_the_commission_decision_and_lifting_letters_go_from_a_closed_case():
    sim = _to_observation(rate=50, months=2)
    sim.advance(dt.timedelta(days=20))
    assert sim.state().outcome == "crsa_referral"
    start = sim.now.astimezone(PARIS).date() + dt.timedelta(days=5)
    sim.event("sanction_decided", rate=50, months=2, start_on=start)
    sim.advance(dt.timedelta(days=1))
    assert [s.channel for s in sim.sent_for("sanction_decision")] == ["letter"]
    sim.event("sanction_lifted", receipt_on=start + dt.timedelta(days=20))
    sim.advance(dt.timedelta(days=1))
    assert [s.channel for s in sim.sent_for("sanction_lifting")] == ["letter"]
    assert sim.state().lifted_on == start + dt.timedelta(days=20)
    assert violations(sim) == []


def test_a_decision_harsher_than_the_notice_is_refused():
    sim = _to_observation(rate=40, months=1)
    sim.advance(dt.timedelta(days=20))
    assert sim.state().outcome == "crsa_referral"
    start = sim.now.astimezone(PARIS).date() + dt.timedelta(days=5)
    for rate, months in ((50, 1), (40, 2)):
        with pytest.raises(engine.EngineError, match="dépasse la mesure annoncée"):
            engine.apply(sim.state(), Event("sanction_decided", sim.now, rate=rate, months=months, start_on=start),
                         sim.now, POLICY, CAL)
    d = engine.apply(sim.state(), Event("sanction_decided", sim.now, rate=30, months=1, start_on=start),
                     sim.now, POLICY, CAL)
    assert (d.state.decision_rate, d.state.decision_months) == (30, 1)


def test_checker_catches_a_decision_harsher_than_the_notice(monkeypatch):
    """A broken engine that records whatever the commission is said to have decided."""
    real = engine._on_sanction_decided

    def lenient(case, ev, now, policy, cal):
        state, actions, note = real(case, dataclasses.replace(ev, rate=case.measure_rate,
                                                              months=case.measure_months), now, policy, cal)
        return dataclasses.replace(state, decision_rate=ev.rate, decision_months=ev.months), actions, note

    monkeypatch.setitem(engine._HANDLERS, "sanction_decided", lenient)
    sim = _to_observation(rate=40, months=1)
    sim.advance(dt.timedelta(days=20))
    sim.event("sanction_decided", rate=60, months=2, start_on=sim.now.astimezone(PARIS).date())
    sim.advance(dt.timedelta(days=1))
    problems = check_measure_within_bounds(sim)
    assert problems and "harsher than the notice" in problems[0]


def test_silence_after_a_new_decision_to_proceed_still_leads_to_the_commission():
    """A legitimate reason at sanction_review, then an agent decides to proceed: the reason was weighed.
    If the person then says nothing, the end of the observation period puts the case on the agenda."""
    sim = run_life(dict(SILENT_CD, ops=[("advance", 45 * DAY)]))
    assert sim.state().step == "sanction_review"
    sim.event("legitimate_reason", until=sim.now + dt.timedelta(days=3))
    sim.advance(dt.timedelta(days=4))
    assert (sim.state().step, sim.state().phase) == ("observations_review", "review")
    sim.event("review_decision", decision="proceed", rate=30, months=1)
    sim.advance(dt.timedelta(days=2))
    sim.event("ar_signed", receipt_on=sim.now.astimezone(PARIS).date())
    sim.advance(dt.timedelta(days=20))
    assert sim.entered()[-1] == "crsa_referral"
    assert violations(sim) == []


def _ft_to_review() -> Sim:
    sim = Sim(POLICY, CAL, path="ft", organisation=ORGS["ft"], droit_opened_on=dt.date(2024, 3, 1),
              start=dt.datetime(2024, 3, 4, 10, tzinfo=UTC))
    sim.advance_to(sim.state().due_at)
    sim.event("rdv_missed")
    sim.advance(dt.timedelta(days=20))
    assert sim.state().step == "sanction_review"
    return sim


def test_ft_path_reaches_the_department_review_without_violation():
    sim = _ft_to_review()
    assert sim.state().organisation == sim.review_organisation and sim.state().reported_by == ORGS["ft"]
    assert violations(sim) == []


def test_checker_catches_a_letter_not_issued_by_the_department(monkeypatch):
    """A broken content layer that lets the organisation issue the notice."""
    monkeypatch.setattr(message_content, "DEPARTMENT_STEPS", frozenset({"crsa_referral"}))
    sim = _to_observation()
    problems = check_issued_by_the_department(sim)
    assert problems and "pre_sanction_notice" in problems[0]


def test_checker_catches_an_absence_assumed_on_the_france_travail_path(monkeypatch):
    """A broken policy that lets the engine take silence after a France Travail appointment for an absence."""
    broken = POLICY.model_copy(update={"paths": {**POLICY.paths, "ft": POLICY.paths["ft"].model_copy(
        update={"confirm_attendance": False})}})
    sim = Sim(broken, CAL, path="ft", organisation=ORGS["ft"], droit_opened_on=dt.date(2024, 3, 1),
              start=dt.datetime(2024, 3, 4, 10, tzinfo=UTC))
    sim.advance(dt.timedelta(days=20))
    assert "ft_warning" in sim.entered()
    problems = check_no_absence_assumed(sim)
    assert problems and "ft_warning" in problems[0]


def test_checker_catches_a_review_left_with_france_travail(monkeypatch):
    """A broken engine whose handoff does not hand the case over."""
    real_enter = engine._enter

    def enter_without_handover(case, step_id, now, policy, cal, reason):
        state, actions = real_enter(case, step_id, now, policy, cal, reason)
        return state, [a for a in actions if not isinstance(a, engine.HandOver)]

    monkeypatch.setattr(engine, "_enter", enter_without_handover)
    sim = _ft_to_review()
    problems = check_department_reviews(sim)
    assert problems and "kept by FT-REDON" in problems[0]
