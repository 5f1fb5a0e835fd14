"""Between the engine and the store: load a case as a :class:`CaseState`,
persist the state and actions the engine returns (in the caller's
transaction: the step change and its messages commit together — the outbox).
"""
from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from worker.adapters.store import audit
from worker.domain import engine
from worker.domain.contact import can_receive_sms
from worker.domain.model import (
    OPEN,
    PENDING,
    REACHED,
    RETURNED,
    AppointmentOutcome,
    CancelPending,
    CaseState,
    Decision,
    Flag,
    HandOver,
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
from worker.adapters.store.models import Appointment, Case, Message, Person

STATE_FIELDS = [f.name for f in dataclasses.fields(CaseState) if f.name not in ("messages", "id", "created_at")]


def to_state(case: Case) -> CaseState:
    values = {name: getattr(case, name) for name in STATE_FIELDS}
    msgs = tuple(MessageView(m.step, m.channel, m.seq, m.status, m.address_version, m.id) for m in case.messages)
    return CaseState(id=case.id, created_at=case.created_at, messages=msgs, **values)


def write_state(case: Case, state: CaseState, now: dt.datetime) -> None:
    for name in STATE_FIELDS:
        setattr(case, name, getattr(state, name))
    case.updated_at = now


def contact_flags(person: Person) -> dict:
    return {
        "has_address": bool(person.address_line1 and person.postcode and person.city),
        "has_phone": can_receive_sms(person.phone),  # has a phone that can take an SMS
        "has_email": bool(person.email),
    }


def create_case(session: Session, app, person: Person, path: str, now: dt.datetime,
                start_step: str | None = None, due_at: dt.datetime | None = None, reason: str = "flux",
                pause_category: str | None = None, segment: str | None = None, first_channels: str | None = None,
                organisation: str | None = None) -> Case:
    """A new case (``segment``, ``first_channels``, ``organisation``: one the stock campaign opens)."""
    state = engine.new_case(path=path, organisation=organisation or person.organisation,
                            droit_opened_on=person.droit_opened_on, now=now, policy=app.policy, cal=app.calendar,
                            start_step=start_step, due_at=due_at, pause_category=pause_category, segment=segment,
                            first_channels=first_channels, **contact_flags(person))
    state = dataclasses.replace(
        state,
        npai=person.address_status == "npai",
        phone_unusable=person.phone_status in ("failed", "not_mobile"),
        sms_opt_out=person.phone_status == "opted_out",
        email_unusable=person.email_status == "failed",
    )
    case = Case(person_id=person.id, created_at=now, version=0)
    write_state(case, state, now)
    session.add(case)
    session.flush()
    audit.append(session, at=now, kind="case", case_id=case.id, entity_id=case.id,
                 data={"action": "opened", "path": path, "start_step": state.step, "reason": reason,
                       "late": state.late, "due_at": state.due_at, **({"segment": segment} if segment else {})})
    return case


def find_slot(session: Session, app, organisation: str, earliest: dt.datetime, horizon_days: int = 120,
              campaign_now: dt.datetime | None = None):
    """The first free convocation slot of the organisation at or after ``earliest``.

    ``campaign_now``: for a case of the stock campaign, which comes after the flux: whole days from the
    day after ``earliest``'s, earliest times first, and on each day no more than the campaign's share
    (:func:`worker.adapters.store.campaign_books.campaign_limits`): the last places of each day stay
    free for the flux."""
    org = app.territory.organisations.get(organisation)
    if org is None:
        return None
    slots = org.convocation
    cal = app.calendar
    weekdays = {("mon", "tue", "wed", "thu", "fri", "sat", "sun").index(d) for d in slots.weekdays}
    day = cal.local_date(earliest)
    limits = None
    if campaign_now is not None:
        from worker.adapters.store.campaign_books import campaign_limits

        if cal.local(earliest).time() != dt.time(0, 0):
            day += dt.timedelta(days=1)
        earliest = cal.start_of_day(day)
        limits = campaign_limits(session, app, organisation, campaign_now, day,
                                 day + dt.timedelta(days=horizon_days))
    for _ in range(horizon_days):
        if limits is not None and limits.get(day, 0) <= 0:
            day += dt.timedelta(days=1)
            continue
        if day.weekday() in weekdays and cal.is_working_day(day):
            for t in sorted(slots.times):
                at = cal.at(day, t)
                if at < earliest:
                    continue
                taken = session.execute(
                    select(func.count()).select_from(Appointment).where(
                        Appointment.organisation == organisation, Appointment.at == at,
                        Appointment.status == "scheduled")
                ).scalar_one()
                if taken < slots.capacity:
                    return at
        day += dt.timedelta(days=1)
    return None


def persist(session: Session, app, case: Case, decision: Decision, now: dt.datetime, cause: str,
            flush: bool = True) -> list:
    """Write the decision; returns the ids of the messages it planned (to relay after commit).

    ``flush=False`` (a batch of cases, flushed once by the caller): new messages are returned as
    rows, whose ids come with that flush (:func:`planned_ids`)."""
    planned: list = []  # ids, and new messages whose ids come with the flush below
    state = decision.state
    follow_ups: list[Decision] = []
    for action in decision.actions:
        if isinstance(action, PlanMessage):
            msg = Message(case_id=case.id, step=action.step, channel=action.channel, seq=action.seq,
                          status=PENDING, postage=action.postage, not_before=action.not_before, created_at=now,
                          status_at=now, address_version=case.address_version)
            session.add(msg)
            planned.append(msg)
            # the id once flushed (one INSERT for the case's messages; audit.buffered: at its end)
            audit.append(session, at=now, kind="message", case_id=case.id, entity_id=lambda m=msg: m.id,
                         data={"step": msg.step, "channel": msg.channel, "seq": msg.seq, "status": PENDING,
                               "not_before": msg.not_before, "cause": cause})
        elif isinstance(action, ReplanMessage):
            msg = session.execute(select(Message).where(
                Message.case_id == case.id, Message.step == action.step, Message.channel == action.channel,
                Message.seq == action.seq, Message.status == "cancelled")).scalar_one()
            msg.status, msg.status_at, msg.not_before = PENDING, now, action.not_before
            msg.cancel_reason = msg.enqueued_at = msg.claimed_at = None
            planned.append(msg.id)
            audit.append(session, at=now, kind="message", case_id=case.id, entity_id=msg.id,
                         data={"step": msg.step, "channel": msg.channel, "seq": msg.seq, "status": PENDING,
                               "not_before": msg.not_before, "cause": cause, "reason": "replanned"})
        elif isinstance(action, CancelPending):
            q = select(Message).where(Message.case_id == case.id, Message.status == PENDING)
            if action.channel:
                q = q.where(Message.channel == action.channel)
            if action.keep_step:
                q = q.where(Message.step != action.keep_step)
            for msg in session.execute(q).scalars():
                _set_status(session, msg, "cancelled", now, reason=action.reason)
        elif isinstance(action, MarkReturned):
            q = select(Message).where(Message.case_id == case.id, Message.channel == "letter",
                                      Message.address_version == action.address_version,
                                      Message.status.in_(REACHED))
            for msg in session.execute(q).scalars():
                _set_status(session, msg, RETURNED, now, reason="npai")
        elif isinstance(action, StepChanged):
            audit.append(session, at=now, kind="step", case_id=case.id, entity_id=case.id,
                         data={"from_step": action.from_step, "to_step": action.to_step, "reason": action.reason})
        elif isinstance(action, NeedSlot):
            slot = find_slot(session, app, case.organisation, action.earliest,
                             campaign_now=now if state.segment else None)
            if slot is None:
                state = dataclasses.replace(state, phase="held", hold_reason="no_slot", due_at=None)
                audit.append(session, at=now, kind="case", case_id=case.id, entity_id=case.id,
                             data={"flag": "held", "detail": "no_slot"})
            else:
                follow_ups.append(engine.assign_slot(state, slot, now, app.policy, app.calendar))
        elif isinstance(action, RecordAppointment):
            org = app.territory.organisations.get(case.organisation)
            session.add(Appointment(case_id=case.id, step=action.step, kind=action.kind, at=action.at,
                                    organisation=case.organisation,
                                    place=org.convocation.place if org else None, status="scheduled",
                                    created_at=now, updated_at=now))
            session.flush()
            audit.append(session, at=now, kind="case", case_id=case.id, entity_id=case.id,
                         data={"appointment": action.kind, "step": action.step, "at": action.at})
        elif isinstance(action, AppointmentOutcome):
            appt = session.execute(
                select(Appointment).where(Appointment.case_id == case.id, Appointment.status == "scheduled")
                .order_by(Appointment.id.desc()).limit(1)
            ).scalar()
            if appt is not None:
                appt.status = action.status
                appt.updated_at = now
                audit.append(session, at=now, kind="case", case_id=case.id, entity_id=case.id,
                             data={"appointment_outcome": action.status})
        elif isinstance(action, OpenCase):
            person = session.get(Person, case.person_id)
            # a stock campaign case goes on as one (its segment; on the same path, its appointment book)
            same = case.segment is not None and action.path == case.path
            organisation = case.organisation if same else None
            if action.path != case.path and person is not None:
                # re-oriented: the organisation that runs the new path takes the person (territory rule)
                organisation = app.territory.organisation_for_path(action.path, person.postcode,
                                                                   person.organisation)
                if organisation and organisation != person.organisation:
                    audit.append(session, at=now, kind="case", case_id=case.id, entity_id=case.id,
                                 data={"organisation_from": person.organisation, "organisation_to": organisation,
                                       "path": action.path})
                    person.organisation = organisation
            new = create_case(session, app, person, action.path, now, start_step=action.start_step,
                              due_at=action.due_at, reason=action.reason, pause_category=action.pause_category,
                              segment=case.segment, first_channels=case.first_channels if same else None,
                              organisation=organisation)
            audit.append(session, at=now, kind="case", case_id=case.id, entity_id=case.id,
                         data={"action": "continued_in", "case": new.id, "reason": action.reason})
        elif isinstance(action, HandOver):
            # France Travail reported: the department's organisation for the person's postcode reviews it.
            person = session.get(Person, case.person_id)
            reviewer = app.territory.department.review_organisation(person.postcode if person else None)
            state = dataclasses.replace(state, organisation=reviewer,
                                        reported_by=state.reported_by or state.organisation)
            audit.append(session, at=now, kind="case", case_id=case.id, entity_id=case.id,
                         data={"handed_over_to": reviewer, "reported_by": state.reported_by,
                               "reason": action.reason})
        elif isinstance(action, ReferToCommission):
            session_date = app.territory.commission.next_session(action.after)
            case.commission_date = session_date
            audit.append(session, at=now, kind="case", case_id=case.id, entity_id=case.id,
                         data={"commission_session": session_date or "none configured"})
        elif isinstance(action, Flag):
            audit.append(session, at=now, kind="case", case_id=case.id, entity_id=case.id,
                         data={"flag": action.name, "detail": action.detail})
    was_active = case.status == "active"
    write_state(case, state, now)
    if was_active and state.status != "active":
        audit.append(session, at=now, kind="case", case_id=case.id, entity_id=case.id,
                     data={"action": "closed", "outcome": state.outcome})
    if not flush and not follow_ups:
        return planned
    session.flush()
    planned = planned_ids(planned)
    for follow in follow_ups:
        # assign_slot works from the state above; message rows exist already for nothing it plans.
        session.refresh(case, attribute_names=["messages"])
        planned += persist(session, app, case, follow, now, cause)
    return planned


def planned_ids(planned: list) -> list[int]:
    """The ids of what :func:`persist` planned (new messages: once flushed)."""
    return [p if isinstance(p, int) else p.id for p in planned]


def _set_status(session: Session, msg: Message, status: str, now: dt.datetime, reason: str | None = None,
                error: str | None = None) -> None:
    msg.status = status
    msg.status_at = now
    if reason:
        msg.cancel_reason = reason
    if error:
        msg.error = error
    data = {"step": msg.step, "channel": msg.channel, "seq": msg.seq, "status": status}
    if reason:
        data["reason"] = reason
    audit.append(session, at=now, kind="message", case_id=msg.case_id, entity_id=msg.id, data=data)


set_message_status = _set_status


def claim_message(session: Session, message_id: int, now: dt.datetime) -> bool:
    """Compare-and-set ``pending -> sending``: only one sender ever wins."""
    res = session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == PENDING)
        .values(status="sending", claimed_at=now, status_at=now, attempts=Message.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    return res.rowcount == 1


__all__ = ["to_state", "write_state", "persist", "create_case", "claim_message", "find_slot", "OPEN"]
