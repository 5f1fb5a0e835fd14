"""What ``relance report`` reads from the store; :mod:`worker.services.report` turns it into tables.

Two kinds of figures (``docs/indicators.md``):

* a **cohort**: the droits opened in the period (``cases.droit_opened_on``), each followed until
  today. A *droit* is a person and the opening date of their right: the cases opened for it (a
  re-orientation, a new address, a legitimate reason at the review open a new case for the same
  droit) count once. :func:`droits` gives one :class:`Droit` each, with the facts found by SQL
  aggregates grouped by (person, droit): first invitation sent, a letter returned, first appointment
  attended, first appointment (a window function), re-orientations.
* **activity**: what happened in the period (messages planned or sent, steps entered, events
  recorded, appointments held, cases closed), counted by ``GROUP BY`` — :func:`activity`.

Everything comes from the stored facts (messages, events, appointments, the steps of the audit
log), never from counters kept beside them. Portable SQL (SQLite and PostgreSQL): aggregates, CASE,
ROW_NUMBER, JSON fields read through SQLAlchemy's JSON accessors. Local (Europe/Paris) months are
CASE buckets on their UTC bounds (:func:`month_bucket`): a letter sent at 00:30 on the 1st counts in
its own month. Expressions with parameters are grouped from a subquery (PostgreSQL does not match a
GROUP BY expression with the same expression in the select list when each has its own parameters).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter

from sqlalchemy import and_, case, exists, func, select
from sqlalchemy.orm import Session, aliased

from worker.adapters.store.models import Appointment, AuditEntry, Case, InboundEvent, Message, Person

# Steps whose messages invite the person (an invitation, a relance, a convocation, France Travail's
# last reminder): the first one sent is "the first invitation". Read from config/paths.yaml.
INVITING_KINDS = ("invite", "appointment")


@dataclasses.dataclass(frozen=True)
class Scope:
    start: dt.date  # first droit / first day of the period (local dates, both included)
    end: dt.date
    organisation: str | None
    today: dt.date
    window: tuple[dt.datetime, dt.datetime]  # [start of `start`, start of the day after `end`) in UTC
    months: tuple[tuple[dt.date, dt.datetime, dt.datetime], ...]  # (month, its UTC start, its UTC end)


@dataclasses.dataclass(frozen=True)
class FirstAppointment:
    kind: str  # booked | convocation
    step: str | None  # the case's step when it was booked or fixed
    status: str  # scheduled | attended | missed | unconfirmed (never cancelled: see droits())
    at: dt.datetime


@dataclasses.dataclass
class Droit:
    person_id: int
    opened_on: dt.date
    received_at: dt.datetime  # the first case of this droit was opened (the flux brought it)
    path: str  # of the first case
    organisation: str  # the organisation that received it (France Travail's, after it reported the case)
    late: bool  # the flux brought it after the first-invitation target
    active: bool  # one of its cases is still running
    closed_at: dt.datetime | None  # the last case's closing, when none is running
    orientation: str | None  # the person's orientation today
    first_invitation_at: dt.datetime | None = None
    letter_returned: bool = False
    first_attended_at: dt.datetime | None = None
    first_appointment: FirstAppointment | None = None
    reoriented: tuple[dt.datetime, str] | None = None  # the first re-orientation after the flux: (when, to)


def inviting_steps(policy) -> set[str]:
    return {s.id for p in policy.paths.values() for s in p.steps if s.kind in INVITING_KINDS}


def _stock_excluded(query, case_table):
    """Hook — stock campaign progress: once issue 14 lands. The stock's people are not entrants: only
    the flux's cases make the cohort. Issue 14 marks a campaign's case with its ``segment``; until that
    column exists every case comes from the flux (ingest refuses a stock file) and nothing is excluded.
    The campaign's own table (progress against its targets) is still to add to the report."""
    segment = getattr(case_table, "segment", None)
    return query if segment is None else query.where(segment.is_(None))


def first_droit_on(s: Session, organisation: str | None) -> dt.date | None:
    q = select(func.min(Case.droit_opened_on))
    if organisation:
        q = q.where(func.coalesce(Case.reported_by, Case.organisation) == organisation)
    return s.execute(q).scalar()


def in_range(scope: Scope):
    return and_(Case.droit_opened_on >= scope.start, Case.droit_opened_on <= scope.end)


def droits(s: Session, policy, scope: Scope) -> dict[tuple[int, dt.date], Droit]:
    """The cohort: one :class:`Droit` per (person, droit opened in the period), with its facts."""
    g = (select(Case.person_id.label("person_id"), Case.droit_opened_on.label("opened_on"),
                func.min(Case.id).label("first_id"), func.min(Case.created_at).label("received_at"),
                func.max(case((Case.status == "active", 1), else_=0)).label("active"),
                func.max(Case.closed_at).label("closed_at"))
         .where(in_range(scope)).group_by(Case.person_id, Case.droit_opened_on))
    g = _stock_excluded(g, Case).subquery()
    first = aliased(Case)
    entry_org = func.coalesce(first.reported_by, first.organisation)
    q = (select(g.c.person_id, g.c.opened_on, g.c.received_at, g.c.active, g.c.closed_at, first.path, entry_org,
                first.late, Person.orientation)
         .join(first, first.id == g.c.first_id).join(Person, Person.id == g.c.person_id))
    if scope.organisation:
        q = q.where(entry_org == scope.organisation)
    out: dict[tuple[int, dt.date], Droit] = {}
    for pid, opened_on, received_at, active, closed_at, path, org, late, orientation in s.execute(q):
        out[(pid, opened_on)] = Droit(pid, opened_on, received_at, path, org, bool(late), bool(active),
                                      None if active else closed_at, orientation)
    if not out:
        return out
    key = (Case.person_id, Case.droit_opened_on)

    inviting = and_(Message.step.in_(sorted(inviting_steps(policy))), Message.sent_at.is_not(None))
    q = (select(*key, func.min(case((inviting, Message.sent_at))),
                func.max(case((Message.status == "returned", 1), else_=0)))
         .join(Message, Message.case_id == Case.id).where(in_range(scope)).group_by(*key))
    for pid, opened_on, first_sent, returned in s.execute(q):
        droit = out.get((pid, opened_on))
        if droit is not None:
            droit.first_invitation_at, droit.letter_returned = first_sent, bool(returned)

    q = (select(*key, func.min(Appointment.at)).join(Appointment, Appointment.case_id == Case.id)
         .where(in_range(scope), Appointment.status == "attended").group_by(*key))
    for pid, opened_on, at in s.execute(q):
        if (pid, opened_on) in out:
            out[(pid, opened_on)].first_attended_at = at

    # The first appointment that was not cancelled (a booking moved to another date is not "missed").
    rank = func.row_number().over(partition_by=key, order_by=Appointment.id).label("rank")
    inner = (select(Case.person_id.label("pid"), Case.droit_opened_on.label("opened_on"), Appointment.kind,
                    Appointment.step, Appointment.status, Appointment.at, rank)
             .join(Appointment, Appointment.case_id == Case.id)
             .where(in_range(scope), Appointment.status != "cancelled")).subquery()
    q = select(inner.c.pid, inner.c.opened_on, inner.c.kind, inner.c.step, inner.c.status, inner.c.at).where(
        inner.c.rank == 1)
    for pid, opened_on, kind, step, status, at in s.execute(q):
        if (pid, opened_on) in out:
            out[(pid, opened_on)].first_appointment = FirstAppointment(kind, step, status, at)

    to = InboundEvent.payload["to"].as_string()
    q = (select(InboundEvent.person_id, InboundEvent.at, to)
         .where(InboundEvent.type == "reoriented", InboundEvent.status == "applied",
                InboundEvent.person_id.in_(select(Case.person_id).where(in_range(scope))))
         .order_by(InboundEvent.at, InboundEvent.id))
    by_person: dict[int, list[Droit]] = {}
    for droit in out.values():
        by_person.setdefault(droit.person_id, []).append(droit)
    for pid, at, target in s.execute(q):
        for droit in by_person.get(pid, ()):
            if droit.reoriented is None and at >= droit.received_at:
                droit.reoriented = (at, target or "")
    return out


def without_duties(s: Session, scope: Scope) -> Counter:
    """Droits opened in the period of people not subject to "droits et devoirs" (no case), by month."""
    q = (select(Person.droit_opened_on, func.count())
         .where(Person.droits_devoirs.is_(False), Person.droit_opened_on >= scope.start,
                Person.droit_opened_on <= scope.end).group_by(Person.droit_opened_on))
    if scope.organisation:
        q = q.where(Person.organisation == scope.organisation)
    out: Counter = Counter()
    for day, count in s.execute(q):
        out[day.replace(day=1)] += count
    return out


# --- activity: what happened in the period ------------------------------------------------------------


def month_bucket(column, scope: Scope):
    """The index of the local month ``column`` falls in (None outside the period)."""
    return case(*[(and_(column >= lo, column < hi), i) for i, (_m, lo, hi) in enumerate(scope.months)],
                else_=None)


@dataclasses.dataclass
class Activity:
    messages: Counter  # (channel, status) -> messages planned in the period
    sent_by_month: Counter  # (month index, channel) -> messages handed to their channel that month
    steps: Counter  # step -> cases that entered it in the period
    events: Counter  # (type, decision, category) -> events applied in the period
    appointments: Counter  # (kind, status, excused) -> appointments whose date is in the period
    outcomes: Counter  # outcome -> cases closed in the period


def _grouped(s: Session, inner) -> Counter:
    inner = inner.subquery()
    cols = list(inner.c)
    return Counter({tuple(row[:-1]): row[-1]
                    for row in s.execute(select(*cols, func.count()).group_by(*cols))})


def activity(s: Session, scope: Scope) -> Activity:
    lo, hi = scope.window
    org = scope.organisation

    def by_case(q, column):
        q = q.where(column >= lo, column < hi)
        return q.join(Case, Case.id == Message.case_id).where(Case.organisation == org) if org else q

    messages = _grouped(s, by_case(select(Message.channel, Message.status), Message.created_at))
    bucket = month_bucket(Message.sent_at, scope).label("month")
    sent = _grouped(s, by_case(select(bucket, Message.channel).where(Message.sent_at.is_not(None)),
                               Message.sent_at))

    q = select(AuditEntry.data["to_step"].as_string().label("step")).where(
        AuditEntry.kind == "step", AuditEntry.at >= lo, AuditEntry.at < hi)
    if org:
        q = q.join(Case, Case.id == AuditEntry.case_id).where(Case.organisation == org)
    steps = Counter({k[0]: v for k, v in _grouped(s, q).items()})

    q = select(InboundEvent.type, InboundEvent.payload["decision"].as_string().label("decision"),
               InboundEvent.payload["category"].as_string().label("category")).where(
        InboundEvent.status == "applied", InboundEvent.at >= lo, InboundEvent.at < hi)
    if org:
        q = q.join(Case, Case.id == InboundEvent.case_id).where(Case.organisation == org)
    events = _grouped(s, q)

    reason = aliased(InboundEvent)
    excused = exists().where(reason.case_id == Appointment.case_id, reason.type == "legitimate_reason",
                             reason.status == "applied", reason.at >= Appointment.created_at,
                             reason.at <= Appointment.updated_at)
    q = select(Appointment.kind, Appointment.status,
               case((and_(Appointment.status == "cancelled", excused), 1), else_=0).label("excused")).where(
        Appointment.at >= lo, Appointment.at < hi)
    if org:
        q = q.where(Appointment.organisation == org)
    appointments = _grouped(s, q)

    q = select(Case.outcome).where(Case.closed_at >= lo, Case.closed_at < hi)
    if org:
        q = q.where(Case.organisation == org)
    outcomes = Counter({k[0]: v for k, v in _grouped(s, q).items()})
    return Activity(messages, sent, steps, events, appointments, outcomes)
