"""The appointment books as the stock campaign sees them: what the flux holds or will need (queries).

Used by the campaign's planner (:mod:`worker.services.campaign`) and by the convocation slot search
(:func:`worker.adapters.store.repository.find_slot`) for a case the campaign opened: both keep, on
each open day of a book, the places of the flux (the weekly reserve of ``config/campaign.yaml``
``flux_reserve``, or what the flux is known to need that day, when more), so that a new entrant is
never pushed back by the campaign. Counts only: no personal data.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.adapters.store.models import Appointment, Case
from worker.domain import campaign as plan_math

ACTIVE_APPOINTMENT = "scheduled"


def reserve_per_week(session: Session, app, now: dt.datetime) -> dict[str, int]:
    """Places a week kept for the flux, per organisation: the floor of ``flux_reserve``, or the flux
    cases opened over its last ``weeks`` weeks, per week, times its ``margin``, when more."""
    cfg = app.config.campaign
    if cfg is None:
        return {}
    fr = cfg.flux_reserve
    since = now - dt.timedelta(weeks=fr.weeks)
    opened = dict(session.execute(
        select(Case.organisation, func.count()).where(Case.segment.is_(None), Case.created_at >= since)
        .group_by(Case.organisation)).all())
    return {code: plan_math.weekly_reserve(fr.floor(code), opened.get(code, 0), fr.weeks, fr.margin)
            for code in app.territory.organisations}


def _day_counts(app, rows) -> dict[str, dict[dt.date, int]]:
    out: dict[str, dict[dt.date, int]] = {}
    for organisation, at in rows:
        bucket = out.setdefault(organisation, {})
        day = app.calendar.local_date(at)
        bucket[day] = bucket.get(day, 0) + 1
    return out


SPILL_DAYS = 60  # the flux's convocations that do not fit a day go to the next ones: looked that far


def known_flux(session: Session, app, start: dt.date, end: dt.date,
               organisation: str | None = None) -> dict[str, dict[dt.date, int]]:
    """Per organisation and open day: the flux's appointments fixed that day, plus the convocations
    its cases waiting on an invitation will need if the person stays silent, placed as the slot search
    would place them alone (a day full, the next ones: :func:`worker.domain.campaign.flux_needs`)."""
    cal = app.calendar
    last = end + dt.timedelta(days=SPILL_DAYS)
    lo, hi = cal.start_of_day(start), cal.start_of_day(last + dt.timedelta(days=1))
    q = (select(Appointment.organisation, Appointment.at).join(Case, Case.id == Appointment.case_id)
         .where(Case.segment.is_(None), Appointment.status == ACTIVE_APPOINTMENT, Appointment.at >= lo,
                Appointment.at < hi))
    if organisation is not None:
        q = q.where(Appointment.organisation == organisation)
    fixed = _day_counts(app, session.execute(q).all())
    demand: dict[str, dict[dt.date, int]] = {}
    waiting = (select(Case.organisation, Case.path, Case.step, Case.phase, Case.due_at)
               .where(Case.segment.is_(None), Case.status == "active", Case.phase.in_(("enter", "waiting"))))
    if organisation is not None:
        waiting = waiting.where(Case.organisation == organisation)
    for code, path, step, phase, due_at in session.execute(waiting):
        if code not in app.territory.organisations or path not in app.policy.paths:
            continue
        at = plan_math.silent_convocation(app.policy, path, step, phase, due_at)
        if at is not None and cal.local_date(at) <= last:
            bucket = demand.setdefault(code, {})
            day = max(cal.local_date(at), start)
            bucket[day] = bucket.get(day, 0) + 1
    out = {}
    for code in set(fixed) | set(demand):
        book = plan_math.build_books(app.territory, cal, start, last, {}, [code])[code]
        units = {d: b.units for d, b in book.items()}
        needs = plan_math.flux_needs(units, fixed.get(code, {}), demand.get(code, {}))
        out[code] = {d: n for d, n in needs.items() if start <= d <= end and d in units}
    return out


def campaign_held(session: Session, app, organisation: str, start: dt.date, end: dt.date) -> dict[dt.date, int]:
    """The campaign's appointments fixed on each day of a book."""
    cal = app.calendar
    rows = session.execute(
        select(Appointment.organisation, Appointment.at).join(Case, Case.id == Appointment.case_id)
        .where(Case.segment.is_not(None), Appointment.organisation == organisation,
               Appointment.status == ACTIVE_APPOINTMENT, Appointment.at >= cal.start_of_day(start),
               Appointment.at < cal.start_of_day(end + dt.timedelta(days=1)))).all()
    return _day_counts(app, rows).get(organisation, {})


def books(session: Session, app, now: dt.datetime, start: dt.date, end: dt.date,
          organisations=None, extra_per_week=None) -> plan_math.Books:
    """The books from ``start`` to ``end`` with the flux's places kept (see the module's docstring)."""
    return plan_math.build_books(app.territory, app.calendar, start, end, reserve_per_week(session, app, now),
                                 organisations, extra_per_week, known_flux(session, app, start, end))


def campaign_limits(session: Session, app, organisation: str, now: dt.datetime, start: dt.date,
                    end: dt.date) -> dict[dt.date, int]:
    """How many more of the campaign's appointments each open day of a book may take."""
    book = plan_math.build_books(app.territory, app.calendar, start, end, reserve_per_week(session, app, now),
                                 [organisation], None,
                                 known_flux(session, app, start, end, organisation)).get(organisation, {})
    held = campaign_held(session, app, organisation, start, end)
    return {day: max(0, b.free - held.get(day, 0)) for day, b in book.items()}
