"""Retention: case data is kept ``RELANCE_RETENTION_MONTHS`` (24 by default)
after the last contact, then purged.

A person is purged when none of their cases is active and nothing happened to
them (last contact, last update, last case closure, last event) for the
retention period: their messages, events, appointments, cases and the person
row are deleted. The audit log keeps its entries (ids, steps, statuses and
hashes — no personal data), so the chain stays verifiable.
"""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import delete, func, select

from worker.adapters.store import audit
from worker.adapters.store.models import Appointment, Case, InboundEvent, Message, Person
from worker.adapters.store.session import session_scope

log = logging.getLogger("relance.retention")


def cutoff(now: dt.datetime, months: int) -> dt.datetime:
    year, month = now.year, now.month - months
    while month <= 0:
        month += 12
        year -= 1
    day = min(now.day, 28)
    return now.replace(year=year, month=month, day=day)


def purge_expired(app, now: dt.datetime, batch: int = 500) -> int:
    limit = cutoff(now, app.settings.retention_months)
    purged = 0
    while True:
        with session_scope(app.db_url) as s:
            active = select(Case.person_id).where(Case.status == "active")
            recent_case = select(Case.person_id).where(
                func.coalesce(Case.closed_at, Case.updated_at) >= limit)
            recent_event = select(InboundEvent.person_id).where(InboundEvent.recorded_at >= limit,
                                                                InboundEvent.person_id.is_not(None))
            ids = list(s.execute(
                select(Person.id).where(
                    Person.id.not_in(active), Person.id.not_in(recent_case), Person.id.not_in(recent_event),
                    Person.updated_at < limit,
                    (Person.last_contact_at.is_(None)) | (Person.last_contact_at < limit),
                ).limit(batch)).scalars())
            if not ids:
                return purged
            case_ids = select(Case.id).where(Case.person_id.in_(ids))
            s.execute(delete(Message).where(Message.case_id.in_(case_ids)))
            s.execute(delete(Appointment).where(Appointment.case_id.in_(case_ids)))
            s.execute(delete(InboundEvent).where(InboundEvent.person_id.in_(ids)))
            s.execute(delete(InboundEvent).where(InboundEvent.case_id.in_(case_ids)))
            s.execute(delete(Case).where(Case.person_id.in_(ids)))
            s.execute(delete(Person).where(Person.id.in_(ids)))
            audit.append(s, at=now, kind="retention", data={"persons_purged": len(ids), "before": limit})
            purged += len(ids)
            log.info("retention: %d persons purged", len(ids))
