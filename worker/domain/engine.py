"""The pure decision engine.

``decide(case, now, policy, calendar)`` says what a due case must do now;
``apply(case, event, now, policy, calendar)`` says how an event changes it;
``assign_slot`` completes a convocation once the service layer found a slot;
``send_verdict`` re-checks a planned message just before it is sent.

No I/O, no clock, no database: everything comes in as arguments and goes out
as a new :class:`CaseState` plus a tuple of actions. The rules of DESIGN.md that
must hold whatever the order of events live here:

* ``sanction_review`` is entered only if the letters it relies on reached an
  address not marked NPAI; otherwise the case is held for an agent;
* ``pre_sanction_notice`` only after ``review_decision proceed``;
* ``crsa_referral`` only once the observation period has run from a known
  receipt date;
* nothing is sent while a legitimate reason runs, after a booking (except the
  appointment reminder), or after the case is closed;
* at most one message per (case, step, channel) — per appointment for the
  reminder, whose ``seq`` is the appointment's number;
* SMS and e-mails only inside the sending window (deferred, never dropped);
* a droit received late is invited at once and counted as late.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

from worker.domain.calendar import BusinessCalendar
from worker.domain.policy import Policy, StepSpec
from worker.domain.model import (
    OBSERVATIONS_REVIEW,
    PROCEDURE_CLOSED,
    SANCTION_DECISION,
    SANCTION_LIFTING,
    APPOINTMENT,
    AWAITING_RECEIPT,
    AWAITING_SLOT,
    CANCELLED,
    CLOSED,
    ENTER,
    HELD,
    OBSERVATION,
    OPEN,
    PAUSED,
    PENDING,
    REACHED,
    RETURNED,
    REVIEW,
    TASK,
    WAITING,
    AppointmentOutcome,
    CancelPending,
    CaseState,
    Decision,
    Event,
    Flag,
    HandOver,
    MarkReturned,
    MessageView,
    NeedSlot,
    OpenCase,
    PlanMessage,
    RecordAppointment,
    ReferToCommission,
    ReplanMessage,
    StepChanged,
)

WINDOWED_CHANNELS = frozenset({"sms", "email"})
ATTENDANCE_TO_CONFIRM = "attendance_to_confirm"  # agent task: an appointment passed, nothing recorded
LEGITIMATE_REASON_REVIEW = "legitimate_reason_review"  # agent task: a reason without end reaches its review


class EngineError(ValueError):
    """An event that cannot apply (missing date, unknown path...): message in French."""


# --- helpers ---------------------------------------------------------------------


def _replace(case: CaseState, **changes) -> CaseState:
    return dataclasses.replace(case, **changes)


def _step(policy: Policy, case: CaseState, step_id: str | None = None) -> StepSpec:
    return policy.path(case.path).step(step_id or case.step)


def _days(n: int) -> dt.timedelta:
    return dt.timedelta(days=n)


def _respond_deadline(now: dt.datetime, days: int, cal: BusinessCalendar) -> tuple[dt.datetime, dt.date]:
    """(due_at, respond_by): ``days`` from now, the date given to the person moved to a working day."""
    due = now + _days(days)
    day = cal.local_date(due)
    respond_by = cal.working_day_on_or_after(day)
    return due + (respond_by - day), respond_by


def observation_end(receipt_on: dt.date, days: int, cal: BusinessCalendar) -> dt.datetime:
    """The end of the observation period: ``days`` after the receipt, ending on a working day
    (the whole of that day is the person's: the period is over at the next midnight)."""
    last = cal.working_day_on_or_after(receipt_on + _days(days))
    return cal.start_of_day(last + _days(1))


def _notice_spec(policy: Policy, case: CaseState) -> StepSpec:
    return next(s for s in policy.path(case.path).steps if s.kind == "notice")


def _in_procedure(case: CaseState, policy: Policy) -> bool:
    """At or after sanction_review: a review or the pre-sanction notice."""
    if case.step is None or not policy.path(case.path).has(case.step):
        return False
    return _step(policy, case).kind in ("review", "notice")


def channel_usable(case: CaseState, channel: str) -> bool:
    if channel == "letter":
        return case.has_address and not case.npai
    if channel == "sms":
        return case.has_phone and not case.phone_unusable and not case.sms_opt_out
    if channel == "email":
        return case.has_email and not case.email_unusable
    return False


def _has_message(case: CaseState, step: str, channel: str, seq: int) -> bool:
    return any(m.step == step and m.channel == channel and m.seq == seq for m in case.messages)


def _plan(case: CaseState, step: StepSpec | str, channels, now: dt.datetime, cal: BusinessCalendar,
          seq: int = 0, not_before: dt.datetime | None = None, postage: str | None = None):
    """Plan the messages of a step on its usable channels (never twice)."""
    step_id = step if isinstance(step, str) else step.id
    if postage is None and not isinstance(step, str):
        postage = step.postage
    actions: list = []
    new_msgs: list[MessageView] = []
    for channel in channels:
        if not channel_usable(case, channel) or _has_message(case, step_id, channel, seq):
            continue
        at = not_before or now
        if channel in WINDOWED_CHANNELS:
            at = cal.next_send_slot(at)
        actions.append(PlanMessage(step_id, channel, seq, at, postage if channel == "letter" else None))
        new_msgs.append(MessageView(step_id, channel, seq, PENDING, case.address_version))
    return _replace(case, messages=case.messages + tuple(new_msgs)), actions


def _cancel(case: CaseState, reason: str, channel: str | None = None, keep_step: str | None = None):
    """Cancel the planned (pending) messages; returns the state and the action."""
    if not any(m.status == PENDING and (channel is None or m.channel == channel)
               and (keep_step is None or m.step != keep_step) for m in case.messages):
        return case, []
    msgs = tuple(
        dataclasses.replace(m, status=CANCELLED)
        if m.status == PENDING and (channel is None or m.channel == channel) and (keep_step is None or m.step != keep_step)
        else m
        for m in case.messages
    )
    return _replace(case, messages=msgs), [CancelPending(reason, channel, keep_step)]


def letters_reached(case: CaseState, step_ids) -> bool:
    """Each step of ``step_ids`` has a letter that was sent and did not come back."""
    for step_id in step_ids:
        if not any(m.step == step_id and m.channel == "letter" and m.status in REACHED for m in case.messages):
            return False
    return True


def _appointment_scheduled(case: CaseState) -> bool:
    return case.appointment_at is not None and (
        case.phase == APPOINTMENT or (case.phase == PAUSED and case.paused_phase == APPOINTMENT))


def _close(case: CaseState, outcome: str, now: dt.datetime) -> tuple[CaseState, list]:
    # A closed case keeps no appointment: its slot is freed (the caller records "attended" itself).
    freed = [AppointmentOutcome("cancelled")] if outcome != "attended" and _appointment_scheduled(case) else []
    case, actions = _cancel(case, f"case_closed:{outcome}")
    actions = freed + actions
    case = _replace(case, status="closed", phase=CLOSED, outcome=outcome, closed_at=now, due_at=None,
                    hold_reason=None)
    return case, actions


def _restart_at(case: CaseState, now: dt.datetime) -> dt.datetime:
    """When a case opened to replace this one may start: not while a legitimate reason runs
    (a pause, or a restart already waiting for the end of one)."""
    at = now
    if case.paused_until is not None and case.paused_until > at:
        at = case.paused_until
    if case.phase == ENTER and case.due_at is not None and case.due_at > at:
        at = case.due_at
    return at


def _open_pause(case: CaseState, policy: Policy) -> str | None:
    """The category of a legitimate reason without a natural end that still runs on this case: a case
    opened to replace it inherits it (it waits for an agent too, never starts by itself)."""
    if case.paused_until is None or _reason_has_end(case, policy):
        return None
    return case.pause_category


def _missed_check_at(appointment_at: dt.datetime, policy: Policy, cal: BusinessCalendar) -> dt.datetime:
    return cal.end_of_working_days_after(appointment_at, policy.delays.missed_grace_working_days)


def _plan_reminder(case: CaseState, appointment_at: dt.datetime, now: dt.datetime, policy: Policy,
                   cal: BusinessCalendar, *, revive: bool = False):
    """Plan the appointment's reminder; with ``revive``, a reminder of this
    appointment cancelled by a legitimate reason is planned again."""
    d = policy.delays
    remind_day = cal.local_date(appointment_at) - _days(d.reminder_days_before)
    while not cal.is_working_day(remind_day):
        # Not pushed forward to the morning of the appointment (or after it): the working day before.
        remind_day -= _days(1)
    at = cal.at(remind_day, d.reminder_time)
    if at < now:
        at = now
    at = cal.next_send_slot(at)
    if at >= appointment_at:
        return case, []
    step, seq = policy.reminder.step, case.appointment_count
    revived: list = []
    if revive:
        msgs = []
        for m in case.messages:
            if (m.step == step and m.seq == seq and m.status == CANCELLED
                    and m.channel in policy.reminder.channels and channel_usable(case, m.channel)):
                revived.append(ReplanMessage(step, m.channel, seq, at))
                m = dataclasses.replace(m, status=PENDING)
            msgs.append(m)
        case = _replace(case, messages=tuple(msgs))
    case, planned = _plan(case, step, policy.reminder.channels, now, cal, seq=seq, not_before=at)
    return case, revived + planned


# --- creation ----------------------------------------------------------------------


def new_case(*, path: str, organisation: str, droit_opened_on: dt.date, now: dt.datetime, policy: Policy,
             cal: BusinessCalendar, has_address: bool = True, has_phone: bool = False,
             has_email: bool = False, start_step: str | None = None,
             due_at: dt.datetime | None = None, pause_category: str | None = None,
             segment: str | None = None, first_channels: str | None = None) -> CaseState:
    """A new case: it enters its first step at once (or ``start_step`` at ``due_at``); with
    ``pause_category`` it starts paused by that legitimate reason until ``due_at`` (its review date).
    ``segment``: a case of the stock campaign (never late: the 15-day target is the flux's), whose
    first step goes on ``first_channels`` (the segment's) when given."""
    spec = policy.path(path)
    target = policy.delays.first_invitation_target_days
    late = cal.local_date(now) > droit_opened_on + _days(target) and segment is None
    if pause_category is not None:
        until = due_at or now
        return dataclasses.replace(
            new_case(path=path, organisation=organisation, droit_opened_on=droit_opened_on, now=now,
                     policy=policy, cal=cal, has_address=has_address, has_phone=has_phone, has_email=has_email,
                     start_step=start_step, due_at=until, segment=segment, first_channels=first_channels),
            phase=PAUSED, paused_phase=ENTER, paused_until=until, paused_remaining=0.0,
            pause_category=pause_category, due_at=until)
    return CaseState(
        path=path,
        organisation=organisation,
        droit_opened_on=droit_opened_on,
        created_at=now,
        step=start_step or spec.first.id,
        phase=ENTER,
        due_at=due_at or now,
        has_address=has_address,
        has_phone=has_phone,
        has_email=has_email,
        late=late and start_step is None,
        segment=segment,
        first_channels=first_channels,
    )


def step_channels(case: CaseState, spec: StepSpec, policy: Policy) -> tuple[str, ...]:
    """The channels of a step for this case: a campaign segment's for its path's first step (an entry
    ``a|b`` is the first of them usable now), else the step's own."""
    if not case.first_channels or spec.id != policy.path(case.path).first.id:
        return spec.channels
    out: list[str] = []
    for entry in case.first_channels.split():
        usable = next((c for c in entry.split("|") if channel_usable(case, c)), None)
        if usable is not None and usable not in out:
            out.append(usable)
    return tuple(out)


# --- entering a step -------------------------------------------------------------------


def _enter(case: CaseState, step_id: str, now: dt.datetime, policy: Policy, cal: BusinessCalendar,
           reason: str) -> tuple[CaseState, list]:
    path = policy.path(case.path)
    spec = path.step(step_id)
    actions: list = []

    if spec.kind == "review":
        if not letters_reached(case, spec.relies_on):
            hold = "npai" if case.npai else "letter_missing"
            case = _replace(case, phase=HELD, hold_reason=hold, due_at=None)
            return case, [Flag("held", f"{hold}:{step_id}")]

    from_step = case.step if case.step_entered_at is not None else None
    actions.append(StepChanged(from_step, step_id, reason))
    case = _replace(case, step=step_id, step_entered_at=now, hold_reason=None, respond_by=None,
                    appointment_at=None, appointment_kind=None, prebook_phase=None, prebook_due_at=None)

    if spec.kind == "invite":
        case, acts = _plan(case, spec, step_channels(case, spec, policy), now, cal)
        actions += acts
        due, respond_by = _respond_deadline(now, spec.respond_days, cal)
        case = _replace(case, phase=WAITING, due_at=due, respond_by=respond_by)
        if case.first_invitation_at is None:
            case = _replace(case, first_invitation_at=now)
        return case, actions

    if spec.kind == "appointment":
        case = _replace(case, phase=AWAITING_SLOT, due_at=None)
        return case, actions + [NeedSlot(step_id, now + _days(spec.min_days))]

    if spec.kind == "task":
        case = _replace(case, phase=TASK, due_at=None)
        return case, actions + [Flag("task", step_id)]

    if spec.kind == "handoff":
        # France Travail reports the failure: the department's organisation reviews it (the service
        # layer picks it from the postcode and records who reported). The facts stay on the case.
        actions.append(HandOver(f"handoff:{step_id}"))
        case2, acts = _enter(case, spec.next, now, policy, cal, reason=f"handoff:{step_id}")
        return case2, actions + acts

    if spec.kind == "review":
        case = _replace(case, phase=REVIEW, due_at=None, review_decision=None)
        return case, actions + [Flag("review", step_id)]

    if spec.kind == "notice":
        if not channel_usable(case, "letter"):
            case = _replace(case, phase=HELD, hold_reason="npai" if case.npai else "no_address", due_at=None)
            return case, actions + [Flag("held", f"{case.hold_reason}:{step_id}")]
        case, acts = _plan(case, spec, spec.channels, now, cal)
        case = _replace(case, notice_on=cal.local_date(now))
        wait_end = cal.working_day_on_or_after(cal.local_date(now + _days(policy.delays.receipt_wait_days)))
        case = _replace(case, phase=AWAITING_RECEIPT, receipt_on=None, due_at=cal.start_of_day(wait_end + _days(1)))
        return case, actions + acts

    if spec.kind == "referral":
        case, acts = _plan(case, spec, spec.channels, now, cal)
        actions += acts + [ReferToCommission(cal.local_date(now))]
        case = _replace(case, status="closed", phase=CLOSED, outcome="crsa_referral", closed_at=now, due_at=None)
        return case, actions

    raise AssertionError(spec.kind)  # pragma: no cover - policy validation forbids it


def assign_slot(case: CaseState, slot: dt.datetime, now: dt.datetime, policy: Policy,
                cal: BusinessCalendar) -> Decision:
    """The service layer found a convocation slot: plan the convocation and its reminder."""
    if case.status != "active" or case.phase != AWAITING_SLOT:
        return Decision(case, (), "no slot needed")
    spec = _step(policy, case)
    count = case.appointment_count + 1
    case = _replace(case, phase=APPOINTMENT, appointment_at=slot, appointment_kind="convocation",
                    appointment_count=count, due_at=_missed_check_at(slot, policy, cal))
    case, actions = _plan(case, spec, step_channels(case, spec, policy), now, cal)
    case, reminder = _plan_reminder(case, slot, now, policy, cal)
    return Decision(case, tuple([RecordAppointment(slot, "convocation", spec.id)] + actions + reminder))


# --- time passes -------------------------------------------------------------------------


def decide(case: CaseState, now: dt.datetime, policy: Policy, cal: BusinessCalendar) -> Decision:
    """What a case must do now (nothing unless it is due)."""
    if case.status != "active" or case.due_at is None or case.due_at > now:
        return Decision(case, (), "not due")

    if case.phase == ENTER:
        case2, actions = _enter(case, case.step, now, policy, cal, reason="start")
        if case.late and case.step_entered_at is None:
            actions = [Flag("late", "first invitation after the target")] + actions
        return Decision(case2, tuple(actions))

    if case.phase == WAITING:
        spec = _step(policy, case)
        case2, actions = _enter(case, spec.next, now, policy, cal, reason="no_response")
        return Decision(case2, tuple(actions))

    if case.phase == APPOINTMENT:
        if policy.path(case.path).confirm_attendance:
            # No automatic accusation from a missing record: an agent confirms attended or missed.
            return Decision(_replace(case, due_at=None), (Flag("task", ATTENDANCE_TO_CONFIRM),))
        case2, actions = _missed(case, now, policy, cal, reason="no_attendance_recorded")
        return Decision(case2, tuple(actions))

    if case.phase == PAUSED:
        if not _reason_has_end(case, policy):
            # No natural end (homelessness, incarceration): on its review date an agent re-examines the
            # case (legitimate_reason_ended, or a new legitimate_reason with a later review date).
            return Decision(_replace(case, due_at=None), (Flag("task", LEGITIMATE_REASON_REVIEW),))
        case2, actions = _resume(case, now, policy, cal)
        return Decision(case2, tuple(actions))

    if case.phase == OBSERVATION:
        spec = _notice_spec(policy, case)
        if case.receipt_on is None:  # cannot happen: observation starts with a receipt
            return Decision(_replace(case, phase=HELD, hold_reason="no_receipt", due_at=None), (Flag("held", "no_receipt"),))
        end = observation_end(case.receipt_on, spec.observation_days, cal)
        if now < end:
            return Decision(_replace(case, due_at=end), (), "observation running")
        if case.observations_at is not None and case.review_decision != "refer":
            # The person answered (or had a legitimate reason) and no one has decided yet.
            case2, actions = _enter(case, OBSERVATIONS_REVIEW, now, policy, cal, reason="observations")
            return Decision(case2, tuple(actions))
        # Silence until the end of the period (or an agent's `refer` at observations_review): the referral.
        case2, actions = _enter(case, _step(policy, case).next, now, policy, cal, reason="observation_period_over")
        return Decision(case2, tuple(actions))

    if case.phase == AWAITING_RECEIPT:
        return Decision(_replace(case, due_at=None), (Flag("receipt_overdue", case.step),))

    return Decision(_replace(case, due_at=None), (), f"nothing due in phase {case.phase}")


def _resume(case: CaseState, now: dt.datetime, policy: Policy, cal: BusinessCalendar):
    until = case.paused_until or now
    phase = case.paused_phase or ENTER
    remaining = case.paused_remaining
    base = _replace(case, paused_until=None, paused_phase=None, paused_remaining=None)
    if _in_procedure(case, policy) and phase in (REVIEW, AWAITING_RECEIPT, OBSERVATION):
        # A legitimate reason at or after sanction_review stops the procedure: a person decides what
        # follows (refer, close...), never the end of the pause alone.
        case2, actions = _enter(base, OBSERVATIONS_REVIEW, now, policy, cal, reason="legitimate_reason_over")
        return case2, [Flag("resumed", phase)] + actions
    if phase == APPOINTMENT and case.appointment_at is not None and case.appointment_at <= until:
        # The appointment fell during the legitimate reason: it is not an absence.
        outcome = [AppointmentOutcome("cancelled")]
        if case.appointment_kind == "convocation":
            closed, actions = _close(base, "restarted_after_legitimate_reason", now)
            return closed, outcome + actions + [OpenCase(case.path, case.step, until, "legitimate_reason_over")]
        case2, actions = _after_booking_lost(base, now, policy, cal, reason="legitimate_reason_over")
        return case2, outcome + actions
    due = None if remaining is None else until + dt.timedelta(seconds=remaining)
    if phase == ENTER and due is None:
        due = until
    if phase == APPOINTMENT and case.appointment_at is not None:
        # The appointment still stands, after the pause: its absence check stays tied to it,
        # and its reminder (cancelled with everything planned when the pause began) is wanted again.
        due = _missed_check_at(case.appointment_at, policy, cal)
        resumed, actions = _plan_reminder(_replace(base, phase=phase, due_at=due), case.appointment_at, now,
                                          policy, cal, revive=True)
        return resumed, [Flag("resumed", phase)] + actions
    return _replace(base, phase=phase, due_at=due), [Flag("resumed", phase)]


def _after_booking_lost(case: CaseState, now: dt.datetime, policy: Policy, cal: BusinessCalendar, reason: str):
    """A voluntary booking is gone (cancelled, or fell in a pause): back to what the case was doing."""
    spec = _step(policy, case)
    case = _replace(case, appointment_at=None, appointment_kind=None)
    if case.prebook_phase in (WAITING, None) and spec.kind == "invite":
        due, respond_by = _respond_deadline(now, spec.respond_days, cal)
        return _replace(case, phase=WAITING, due_at=due, respond_by=respond_by, prebook_phase=None,
                        prebook_due_at=None), []
    if case.prebook_phase in (REVIEW, TASK, AWAITING_RECEIPT, OBSERVATION, HELD, ENTER, WAITING):
        due = case.prebook_due_at
        if due is not None and due < now:
            due = now
        return _replace(case, phase=case.prebook_phase, due_at=due, prebook_phase=None, prebook_due_at=None), []
    return _replace(case, phase=HELD, hold_reason=reason, due_at=None, prebook_phase=None,
                    prebook_due_at=None), [Flag("held", reason)]


def _missed(case: CaseState, now: dt.datetime, policy: Policy, cal: BusinessCalendar, reason: str):
    # Without a record the absence is "unconfirmed": the agent at the review sees it was not reported.
    actions: list = [AppointmentOutcome("unconfirmed" if reason == "no_attendance_recorded" else "missed")]
    case, acts = _cancel(case, "appointment_missed")
    actions += acts
    spec = _step(policy, case)
    if case.appointment_kind == "convocation" or spec.kind in ("invite", "task", "appointment"):
        if case.prebook_phase in (ENTER, REVIEW, AWAITING_RECEIPT, OBSERVATION, HELD):
            case2, acts = _after_booking_lost(case, now, policy, cal, reason)
            return case2, actions + acts
        case2, acts = _enter(case, spec.next, now, policy, cal, reason=reason)
        return case2, actions + acts
    case2, acts = _after_booking_lost(case, now, policy, cal, reason)
    return case2, actions + acts


# --- events --------------------------------------------------------------------------------


def apply(case: CaseState, event: Event, now: dt.datetime, policy: Policy, cal: BusinessCalendar) -> Decision:
    """How an event changes a case. Events on a closed case change nothing."""
    handler = _HANDLERS.get(event.type)
    if handler is None:
        raise EngineError(f"type d'événement inconnu : {event.type}")
    if case.status != "active" and event.type not in _AFTER_REFERRAL:
        return Decision(case, (), "case closed: event recorded, nothing changes")
    state, actions, note = handler(case, event, now, policy, cal)
    return Decision(state, tuple(actions), note)


def _on_rdv_booked(case, ev, now, policy, cal):
    if ev.appointment_at is None:
        raise EngineError("rdv_booked : la date du rendez-vous (--appointment-at) est obligatoire")
    prebook_phase, prebook_due = case.prebook_phase, case.prebook_due_at
    if case.phase == PAUSED:
        # The person booked: the legitimate reason no longer stops them; what was waiting resumes now.
        due = None if case.paused_remaining is None else now + dt.timedelta(seconds=case.paused_remaining)
        case = _replace(case, phase=case.paused_phase or WAITING, paused_until=None, paused_phase=None,
                        paused_remaining=None, due_at=due)
    if case.phase != APPOINTMENT:
        prebook_phase, prebook_due = case.phase, case.due_at
    actions: list = []
    if case.phase == APPOINTMENT:
        actions.append(AppointmentOutcome("cancelled"))
    case, acts = _cancel(case, "rdv_booked")
    actions += acts
    count = case.appointment_count + 1
    case = _replace(case, phase=APPOINTMENT, appointment_at=ev.appointment_at, appointment_kind="booked",
                    appointment_count=count, prebook_phase=prebook_phase, prebook_due_at=prebook_due,
                    paused_until=None, due_at=_missed_check_at(ev.appointment_at, policy, cal))
    actions.append(RecordAppointment(ev.appointment_at, "booked", case.step))
    case, acts = _plan_reminder(case, ev.appointment_at, now, policy, cal)
    return case, actions + acts, ""


def _on_rdv_attended(case, ev, now, policy, cal):
    actions: list = [AppointmentOutcome("attended")] if _appointment_scheduled(case) else []
    case, acts = _close(case, "attended", now)
    return case, actions + acts, ""


def _on_rdv_missed(case, ev, now, policy, cal):
    if case.phase != APPOINTMENT:
        return case, [], "no appointment to miss"
    case, actions = _missed(case, now, policy, cal, reason="rdv_missed")
    return case, actions, ""


def _on_rdv_cancelled(case, ev, now, policy, cal):
    if case.phase != APPOINTMENT:
        return case, [], "no appointment to cancel"
    actions: list = [AppointmentOutcome("cancelled")]
    case, acts = _cancel(case, "rdv_cancelled")
    actions += acts
    if case.appointment_kind == "convocation":
        case = _replace(case, phase=HELD, hold_reason="rdv_cancelled", due_at=None)
        return case, actions + [Flag("held", "rdv_cancelled")], ""
    case, acts = _after_booking_lost(case, now, policy, cal, reason="rdv_cancelled")
    return case, actions + acts, ""


def _reason_has_end(case: CaseState, policy: Policy) -> bool:
    cats = policy.legitimate_reasons.categories
    return case.pause_category not in cats or cats[case.pause_category].natural_end


def _reason_until(ev, now: dt.datetime, policy: Policy, cal: BusinessCalendar, what: str) -> dt.datetime:
    """The end of a legitimate reason: ``--until`` for a category with a natural end, else its review
    date (``--review-on``, default ``review_days`` ahead), at the start of that day."""
    reasons = policy.legitimate_reasons
    try:
        category = reasons.get(ev.category)
    except ValueError as exc:
        raise EngineError(f"{what} : {exc}") from None
    if category.natural_end:
        if ev.review_on is not None:
            raise EngineError(f"{what} : --review-on est réservé aux motifs sans fin prévisible "
                              f"({', '.join(k for k, c in reasons.categories.items() if not c.natural_end)})")
        if ev.until is None:
            raise EngineError(f"{what} : la date de fin (--until) est obligatoire")
        return ev.until
    if ev.until is not None:
        raise EngineError(f"{what} : « {category.label} » n'a pas de fin prévisible : donner une date "
                          "de réexamen (--review-on) au lieu de --until")
    review_on = ev.review_on or cal.local_date(now) + _days(reasons.review_days)
    if review_on <= cal.local_date(now):
        raise EngineError(f"{what} : la date de réexamen doit être postérieure à aujourd'hui")
    return cal.start_of_day(review_on)


def _on_legitimate_reason_ended(case, ev, now, policy, cal):
    """An agent records that the legitimate reason is over (early, or at its review date)."""
    if case.phase != PAUSED:
        return case, [], "no legitimate reason running"
    case2, actions = _resume(_replace(case, paused_until=now), now, policy, cal)
    return case2, actions, ""


def _on_legitimate_reason(case, ev, now, policy, cal):
    until = _reason_until(ev, now, policy, cal, "legitimate_reason")
    ev = dataclasses.replace(ev, until=until)
    if ev.until <= now:
        return case, [], "legitimate reason already over"
    case = _replace(case, pause_category=ev.category)
    case, actions = _cancel(case, "legitimate_reason")
    if _in_procedure(case, policy):
        # At or after sanction_review the procedure stops: a person decides what follows.
        case = _replace(case, observations_at=case.observations_at or now)
    if case.phase == PAUSED:
        until = max(case.paused_until or ev.until, ev.until)
        return _replace(case, paused_until=until, due_at=until), actions + [Flag("paused", "extended")], ""
    remaining = None if case.due_at is None else max(0.0, (case.due_at - now).total_seconds())
    until = max(ev.until, case.paused_until or ev.until)  # a held case may keep an earlier, longer one
    case = _replace(case, paused_phase=case.phase, paused_remaining=remaining, paused_until=until,
                    phase=PAUSED, due_at=until)
    return case, actions + [Flag("paused", "legitimate_reason")], ""


def _on_npai(case, ev, now, policy, cal):
    version = case.address_version
    msgs = tuple(
        dataclasses.replace(m, status=RETURNED)
        if m.channel == "letter" and m.address_version == version and m.status in REACHED
        else m
        for m in case.messages
    )
    case = _replace(case, npai=True, messages=msgs)
    actions: list = [MarkReturned(version)]
    case, acts = _cancel(case, "npai", channel="letter")
    actions += acts + [Flag("npai", "address unusable: phone and CAF lookup")]
    spec = _step(policy, case) if case.step else None
    path = policy.path(case.path)
    review = path.review_step()
    blocked = False
    phase = case.paused_phase if case.phase == PAUSED else case.phase
    if phase in (REVIEW, AWAITING_RECEIPT, OBSERVATION) and review is not None:
        blocked = not letters_reached(case, review.relies_on)
        if spec is not None and spec.kind == "notice" and not letters_reached(case, [spec.id]):
            blocked = True
    if phase == AWAITING_RECEIPT and case.receipt_on is None:
        blocked = True  # the LRAR itself came back: no receipt date
    if blocked:
        # paused_until stays: a restart after the address update must wait for the legitimate reason.
        case = _replace(case, phase=HELD, hold_reason="npai", due_at=None, paused_phase=None,
                        paused_remaining=None)
        actions.append(Flag("held", "npai"))
    return case, actions, ""


def _on_address_updated(case, ev, now, policy, cal):
    held_npai = case.hold_reason in ("npai", "no_address", "letter_missing") and (
        case.phase == HELD or (case.phase == PAUSED and case.paused_phase == HELD))
    case = _replace(case, npai=False, has_address=True, address_version=case.address_version + 1)
    if held_npai:
        path = policy.path(case.path)
        closed, actions = _close(case, "restarted_after_address_update", now)
        return closed, actions + [OpenCase(case.path, path.first.id, _restart_at(case, now), "address_updated",
                                           _open_pause(case, policy))], ""
    return case, [Flag("address_updated")], ""


def _on_phone_updated(case, ev, now, policy, cal):
    return _replace(case, has_phone=True, phone_unusable=False, sms_opt_out=False), [Flag("phone_updated")], ""


def _on_sms_failed(case, ev, now, policy, cal):
    case = _replace(case, phone_unusable=True)
    case, actions = _cancel(case, "sms_failed", channel="sms")
    return case, actions + [Flag("sms_failed")], ""


def _on_sms_opt_out(case, ev, now, policy, cal):
    case = _replace(case, sms_opt_out=True)
    case, actions = _cancel(case, "sms_opt_out", channel="sms")
    return case, actions + [Flag("sms_opt_out")], ""


def _on_droit_closed(case, ev, now, policy, cal):
    case, actions = _close(case, "droit_closed", now)
    return case, actions, ""


def _on_reoriented(case, ev, now, policy, cal):
    if not ev.to or ev.to not in policy.paths:
        raise EngineError(f"reoriented : parcours inconnu {ev.to!r} (attendu : {', '.join(policy.paths)})")
    if ev.to == case.path:
        return case, [], "already on this path"
    closed, actions = _close(case, "reoriented", now)
    return closed, actions + [OpenCase(ev.to, policy.path(ev.to).first.id, _restart_at(case, now),
                                       f"reoriented:{case.path}", _open_pause(case, policy))], ""


def _on_review_decision(case, ev, now, policy, cal):
    if ev.decision not in ("proceed", "refer", "legitimate_reason", "close"):
        raise EngineError("review_decision : --decision doit valoir proceed, refer, legitimate_reason ou close")
    if case.phase != REVIEW:
        return case, [], "not under review"
    spec = _step(policy, case)
    notice_sent = case.notice_on is not None
    if ev.decision == "proceed":
        if notice_sent:
            raise EngineError("review_decision proceed : le préavis est déjà parti ; "
                              "décider refer, close ou legitimate_reason")
        try:
            rate, months = policy.measure.check(ev.rate, ev.months, ev.repeat, ev.household_size)
        except ValueError as exc:
            raise EngineError(f"review_decision proceed : {exc}") from None
        if not letters_reached(case, spec.relies_on):
            case = _replace(case, phase=HELD, hold_reason="npai" if case.npai else "letter_missing", due_at=None)
            return case, [Flag("held", case.hold_reason)], ""
        # The agent's decision covers what the person said or had until now: from the notice on,
        # only what comes after it stops the referral.
        case = _replace(case, review_decision="proceed", measure_rate=rate, measure_months=months,
                        measure_repeat=bool(ev.repeat), observations_at=None)
        notice = _notice_spec(policy, case)
        case, actions = _enter(case, notice.id, now, policy, cal, reason="review_decision:proceed")
        return case, actions, ""
    if ev.decision == "refer":
        if not notice_sent:
            raise EngineError("review_decision refer : aucun préavis n'est parti ; "
                              "décider proceed (avec la mesure envisagée), legitimate_reason ou close")
        case = _replace(case, review_decision="refer")
        if case.receipt_on is None:
            # The period has not even started: the referral waits for the receipt date, then for its end.
            return _replace(case, phase=AWAITING_RECEIPT, due_at=None), [Flag("referral_waits", "receipt")], ""
        end = observation_end(case.receipt_on, _notice_spec(policy, case).observation_days, cal)
        if now < end:
            return _replace(case, phase=OBSERVATION, due_at=end), [Flag("referral_waits", "observation_period")], ""
        case, actions = _enter(case, spec.next, now, policy, cal, reason="review_decision:refer")
        return case, actions, ""
    if ev.decision == "legitimate_reason":
        until = _reason_until(ev, now, policy, cal, "review_decision legitimate_reason")
        path = policy.path(case.path)
        restart = next((s.id for s in path.steps if s.kind == "appointment"), path.first.id)
        case = _replace(case, review_decision="legitimate_reason", pause_category=ev.category)
        closed, actions = _close(case, "legitimate_reason", now)
        no_end = None if policy.legitimate_reasons.get(ev.category).natural_end else ev.category
        return closed, actions + [OpenCase(case.path, restart, max(until, now), "review_decision:legitimate_reason",
                                           no_end)], ""
    case = _replace(case, review_decision="close")
    closed, actions = _close(case, "review_closed", now)
    closed, letter = _plan(closed, PROCEDURE_CLOSED, ("letter",), now, cal, postage="simple")
    return closed, actions + letter, ""


def _on_observations(case, ev, now, policy, cal):
    """Observations or a hearing request, received after the notice and before the referral."""
    notice = _notice_spec(policy, case)
    if case.step not in (notice.id, OBSERVATIONS_REVIEW):
        return case, [], "no pre-sanction notice pending: recorded"
    case = _replace(case, observations_at=case.observations_at or now)
    if case.step == OBSERVATIONS_REVIEW and case.phase == REVIEW:
        return case, [Flag("observations", ev.type)], "already with an agent"
    if case.phase == PAUSED:
        # The pause ends at observations_review anyway (see _resume).
        return case, [Flag("observations", ev.type)], ""
    if case.phase in (AWAITING_RECEIPT, OBSERVATION, HELD) or case.step == OBSERVATIONS_REVIEW:
        case, actions = _enter(case, OBSERVATIONS_REVIEW, now, policy, cal, reason=ev.type)
        return case, [Flag("observations", ev.type)] + actions, ""
    return case, [Flag("observations", ev.type)], ""


def _on_sanction_decided(case, ev, now, policy, cal):
    if case.outcome != "crsa_referral":
        raise EngineError("sanction_decided : ce dossier n'a pas été renvoyé devant la commission")
    if ev.start_on is None:
        raise EngineError("sanction_decided : la date de début (--from) est obligatoire")
    if ev.rate is None or ev.months is None:
        raise EngineError("sanction_decided : le taux (--rate) et la durée (--months) sont obligatoires")
    try:
        rate, months = policy.measure.check(ev.rate, ev.months, case.measure_repeat, ev.household_size)
    except ValueError as exc:
        raise EngineError(f"sanction_decided : {exc}") from None
    if case.measure_rate is not None and (rate > case.measure_rate or months > (case.measure_months or 0)):
        # The person answered the measure the notice stated: a harsher one needs a new notice.
        raise EngineError(f"sanction_decided : {rate} % pendant {months} mois dépasse la mesure annoncée dans le "
                          f"préavis ({case.measure_rate} % pendant {case.measure_months} mois)")
    if case.decision_rate is not None:
        return case, [], "decision already recorded"
    case = _replace(case, decision_rate=rate, decision_months=months, decision_from=ev.start_on)
    case, actions = _plan(case, SANCTION_DECISION, ("letter",), now, cal, postage="lrar")
    return case, [Flag("sanction_decided", f"{rate} % pendant {months} mois")] + actions, ""


def _on_sanction_lifted(case, ev, now, policy, cal):
    if case.decision_rate is None:
        raise EngineError("sanction_lifted : aucune suspension décidée pour ce dossier")
    lifted = ev.receipt_on or cal.local_date(ev.at)
    if case.decision_from is not None and lifted < case.decision_from:
        raise EngineError("sanction_lifted : la levée ne peut pas précéder le début de la suspension")
    if case.lifted_on is not None:
        return case, [], "already lifted"
    case = _replace(case, lifted_on=lifted)
    case, actions = _plan(case, SANCTION_LIFTING, ("letter",), now, cal, postage="simple")
    return case, [Flag("sanction_lifted")] + actions, ""


def _on_preferences_updated(case, ev, now, policy, cal):
    """Large print or language: the person's record changes (the service layer), not the procedure."""
    if ev.large_print is None and ev.language is None:
        raise EngineError("preferences_updated : préciser --large-print / --no-large-print ou --language")
    return case, [Flag("preferences_updated")], ""


def _on_phone_followup_done(case, ev, now, policy, cal):
    if case.phase != TASK:
        return case, [], "no task running"
    spec = _step(policy, case)
    case, actions = _enter(case, spec.next, now, policy, cal, reason="phone_followup_done")
    return case, actions, ""


def _on_receipt(case, ev, now, policy, cal):
    receipt = ev.receipt_on or cal.local_date(ev.at)
    if receipt > cal.local_date(now):
        raise EngineError(f"{ev.type} : date de réception {receipt:%d/%m/%Y} dans le futur")
    if case.notice_on is not None and receipt < case.notice_on:
        raise EngineError(f"{ev.type} : date de réception {receipt:%d/%m/%Y} antérieure à l'envoi du préavis "
                          f"({case.notice_on:%d/%m/%Y})")
    spec = _step(policy, case) if case.step else None
    if case.step == OBSERVATIONS_REVIEW and case.receipt_on is None:
        # Observations came before the receipt: the period still runs from it (a `refer` waits for its end).
        notice = _notice_spec(policy, case)
        end = observation_end(receipt, notice.observation_days, cal)
        if case.phase == AWAITING_RECEIPT:  # refer decided, waiting for the receipt
            return _replace(case, receipt_on=receipt, phase=OBSERVATION, due_at=end), [Flag("receipt", ev.type)], ""
        return _replace(case, receipt_on=receipt), [Flag("receipt", ev.type)], ""
    if spec is None or spec.kind != "notice":
        return case, [], "no registered letter awaiting receipt"
    if case.phase == AWAITING_RECEIPT:
        end = observation_end(receipt, spec.observation_days, cal)
        return _replace(case, receipt_on=receipt, phase=OBSERVATION, due_at=end), [Flag("receipt", ev.type)], ""
    if case.phase == PAUSED and case.paused_phase == AWAITING_RECEIPT:
        end = observation_end(receipt, spec.observation_days, cal)
        remaining = max(0.0, (end - now).total_seconds())
        return _replace(case, receipt_on=receipt, paused_phase=OBSERVATION, paused_remaining=remaining), [Flag("receipt", ev.type)], ""
    if case.receipt_on is None and case.prebook_phase == AWAITING_RECEIPT and (
            case.phase == APPOINTMENT or (case.phase == PAUSED and case.paused_phase == APPOINTMENT)):
        # The person booked while the LRAR was on its way: the receipt still starts the period.
        end = observation_end(receipt, spec.observation_days, cal)
        return _replace(case, receipt_on=receipt, prebook_phase=OBSERVATION, prebook_due_at=end), [Flag("receipt", ev.type)], ""
    return case, [], "receipt already known"


_HANDLERS = {
    "rdv_booked": _on_rdv_booked,
    "rdv_attended": _on_rdv_attended,
    "rdv_missed": _on_rdv_missed,
    "rdv_cancelled": _on_rdv_cancelled,
    "legitimate_reason": _on_legitimate_reason,
    "npai": _on_npai,
    "address_updated": _on_address_updated,
    "phone_updated": _on_phone_updated,
    "sms_failed": _on_sms_failed,
    "sms_opt_out": _on_sms_opt_out,
    "droit_closed": _on_droit_closed,
    "reoriented": _on_reoriented,
    "review_decision": _on_review_decision,
    "phone_followup_done": _on_phone_followup_done,
    "ar_signed": _on_receipt,
    "ar_unclaimed": _on_receipt,
    "observations_received": _on_observations,
    "hearing_requested": _on_observations,
    "sanction_decided": _on_sanction_decided,
    "sanction_lifted": _on_sanction_lifted,
    "legitimate_reason_ended": _on_legitimate_reason_ended,
    "preferences_updated": _on_preferences_updated,
}
# Events that still apply once the case has left the worker's hands (referred to the commission).
_AFTER_REFERRAL = frozenset({"sanction_decided", "sanction_lifted"})


# --- just before printing ----------------------------------------------------------------------


def _procedure_letter(case: CaseState, step: str, policy: Policy) -> bool:
    """The procedure's own letters (notice, referral, the Département's decisions): once written they
    go out unless the case was closed without wanting them or the address is unusable; a pause or an
    answer after the notice is for the agent at observations_review to weigh, with the period running."""
    if step in (SANCTION_DECISION, SANCTION_LIFTING, PROCEDURE_CLOSED):
        return True
    path = policy.path(case.path)
    return path.has(step) and path.step(step).kind in ("notice", "referral")


def stale_letter(case: CaseState, message: MessageView, now: dt.datetime, policy: Policy,
                 cal: BusinessCalendar) -> str | None:
    """Why a letter written but not yet printed must not be printed (its case moved on since: a
    booking, a closure, a legitimate reason, NPAI), or None if it still goes out."""
    verdict = send_verdict(case, dataclasses.replace(message, status=PENDING), now, policy, cal)
    if not verdict.startswith("cancel:"):
        return None
    reason = verdict.split(":", 1)[1]
    if _procedure_letter(case, message.step, policy) and reason in (
            "step_changed", "rdv_booked", "legitimate_reason"):
        return None
    return reason


# --- just before sending ----------------------------------------------------------------------


def send_verdict(case: CaseState, message: MessageView, now: dt.datetime, policy: Policy,
                 cal: BusinessCalendar) -> str:
    """``send``, ``defer`` (outside the sending window) or ``cancel:<reason>``.

    The case may have changed since the message was planned: a booking, a
    pause, a closed case, an unusable channel all cancel it.
    """
    if message.status not in OPEN:
        return f"cancel:status_{message.status}"
    if case.status != "active":
        # The referral letter is written as the case leaves the worker's hands; the Département's
        # decision and lifting letters after the commission; the closing letter of a review.
        wanted = {"crsa_referral": (case.step, SANCTION_DECISION, SANCTION_LIFTING),
                  "review_closed": (PROCEDURE_CLOSED,)}.get(case.outcome or "", ())
        if message.step not in wanted:
            return "cancel:case_closed"
    elif case.phase == PAUSED:
        return "cancel:legitimate_reason"
    if not channel_usable(case, message.channel):
        return f"cancel:channel_unusable_{message.channel}"
    if case.status == "active":  # (a closed case's letters above do not depend on its step)
        if message.step == policy.reminder.step:
            if case.phase != APPOINTMENT or message.seq != case.appointment_count:
                return "cancel:appointment_changed"
            if case.appointment_at is not None and now >= case.appointment_at:
                return "cancel:appointment_passed"
        elif case.phase == APPOINTMENT and case.appointment_kind == "booked":
            return "cancel:rdv_booked"
        elif message.step != case.step:
            return "cancel:step_changed"
    if message.channel in WINDOWED_CHANNELS and not cal.in_window(now):
        return "defer"
    return "send"
