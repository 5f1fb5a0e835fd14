"""The 6-week orientation deadline (CASF D262-65-2), watched.

When the department has not oriented a person within 6 weeks of receiving the
information, France Travail orients them. A person who arrives in the flux
without an orientation (empty ``orientation``: "not oriented yet", invited to a
co-diagnostic on the CD path) is oriented when an orientation is recorded for
them (a ``reoriented`` event, or a later flux row with one) or when their case
closes (the co-diagnostic was attended, the droit closed, ...).

* :func:`watch` finds each active case of a person still without orientation
  whose deadline -- the day the flux first brought this droit, plus
  ``orientation_deadline_days`` (42) -- is ``orientation_warning_days`` (7) or
  fewer away, and flags it once: an audit entry ``orientation_deadline`` on
  the case (shown by ``relance timeline``), remembered on the person for that
  droit (a new droit is watched again).
* :func:`report` lists every active case still waiting for an orientation, with
  its deadline and the days left (``relance orientation``), soonest first.

Only case references, external ids, dates and counts: no name, no contact.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from sqlalchemy import and_, func, select

from worker.adapters.store import audit
from worker.adapters.store.models import Case, Person
from worker.adapters.store.session import session_scope

log = logging.getLogger("relance.orientation")


@dataclasses.dataclass(frozen=True)
class Waiting:
    case_id: int
    case_reference: str
    external_id: str
    organisation: str
    step: str | None
    received_on: dt.date  # the day the flux first brought this droit
    deadline: dt.date
    days_left: int  # negative: past the deadline
    flagged: bool

    def as_json(self) -> dict:
        return {**dataclasses.asdict(self), "received_on": self.received_on.isoformat(),
                "deadline": self.deadline.isoformat()}


def _waiting(session, app, today: dt.date) -> list[tuple[Waiting, Person, Case]]:
    delays = app.policy.delays
    first_seen = (
        select(Case.person_id, Case.droit_opened_on, func.min(Case.created_at).label("received_at"))
        .join(Person, Person.id == Case.person_id)
        .where(Person.orientation.is_(None))
        .group_by(Case.person_id, Case.droit_opened_on)
        .subquery()
    )
    rows = session.execute(
        select(Case, Person, first_seen.c.received_at)
        .join(Person, Person.id == Case.person_id)
        .join(first_seen, and_(first_seen.c.person_id == Case.person_id,
                               first_seen.c.droit_opened_on == Case.droit_opened_on))
        # the stock campaign's cases are not new entrants: their deadline ran long ago (issue 14)
        .where(Case.status == "active", Person.orientation.is_(None), Case.segment.is_(None))
    ).all()
    out = []
    for case, person, received_at in rows:
        if received_at.tzinfo is None:
            received_at = received_at.replace(tzinfo=dt.timezone.utc)
        received_on = app.calendar.local_date(received_at)
        deadline = received_on + dt.timedelta(days=delays.orientation_deadline_days)
        out.append((Waiting(
            case_id=case.id, case_reference=case.reference, external_id=person.external_id,
            organisation=case.organisation, step=case.step,
            received_on=received_on, deadline=deadline, days_left=(deadline - today).days,
            flagged=person.orientation_flagged_for == case.droit_opened_on,
        ), person, case))
    out.sort(key=lambda item: (item[0].deadline, item[0].case_id))
    return out


def report(app, now: dt.datetime) -> list[Waiting]:
    """Every active case still waiting for an orientation, soonest deadline first."""
    with session_scope(app.db_url) as s:
        return [w for w, _person, _case in _waiting(s, app, app.calendar.local_date(now))]


def watch(app, now: dt.datetime) -> list[Waiting]:
    """Flag, once per person and droit, the cases whose deadline is near or past; returns them."""
    warning = app.policy.delays.orientation_warning_days
    flagged = []
    with session_scope(app.db_url) as s:
        for w, person, case in _waiting(s, app, app.calendar.local_date(now)):
            if w.flagged or w.days_left > warning:
                continue
            person.orientation_flagged_for = case.droit_opened_on
            audit.append(s, at=now, kind="case", case_id=w.case_id, entity_id=w.case_id,
                         data={"flag": "orientation_deadline", "deadline": w.deadline.isoformat(),
                               "days_left": w.days_left})
            log.warning("case %s: not oriented, deadline %s (%d days left)", w.case_reference,
                        w.deadline.isoformat(), w.days_left)
            flagged.append(dataclasses.replace(w, flagged=True))
    return flagged
