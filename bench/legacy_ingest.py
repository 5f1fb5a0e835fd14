"""The per-row ORM ingestion as it was before worker/services/ingest.py (commit 516ba5a).

Kept verbatim (imports aside) for two uses only: the baseline rows/s of
bench_ingest.py and the old-vs-new equivalence check (bench/check_ingest.py).
Not used by the application.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.adapters.store import audit

from worker.adapters.store import repository
from worker.adapters.store.models import Case, Person
from worker.adapters.store.session import session_scope
from worker.domain.model import Event
from worker.services.cases import apply_to_active_case as _apply_to_active_case
from worker.services.ingest import ADDRESS_FIELDS, PERSON_FIELDS, IngestReport


def ingest_file(app, path: Path, now: dt.datetime, progress=None) -> IngestReport:
    from worker.adapters.flux import parse_flux

    path = Path(path)
    data = path.read_bytes()
    orgs = frozenset(app.territory.organisations)
    parsed = parse_flux(data, organisations=orgs, today=app.calendar.local_date(now), filename=path.name)
    report = IngestReport(file=path.name)
    report.rejected = [{"line": r.line, "external_id": r.external_id, "field": r.field, "reason": r.reason}
                       for r in parsed.rejected]
    report.warnings = [{"line": w.line, "external_id": w.external_id, "field": w.field, "reason": w.reason}
                       for w in parsed.warnings]
    chunk = 500
    rows = parsed.rows
    for start in range(0, len(rows), chunk):
        with session_scope(app.db_url) as s:
            for row in rows[start:start + chunk]:
                _upsert_row(s, app, row, now, report)
        if progress:
            progress(min(start + chunk, len(rows)), len(rows))
    with session_scope(app.db_url) as s:
        audit.append(s, at=now, kind="ingest", data={
            "file_sha256": hashlib.sha256(data).hexdigest(), "file": path.name, "rows": len(rows),
            "accepted": report.accepted, "updated": report.updated, "unchanged": report.unchanged,
            "rejected": len(report.rejected), "cases_opened": report.cases_opened})
    return report


def _upsert_row(s: Session, app, row, now: dt.datetime, report: IngestReport) -> None:
    from worker.adapters.flux import row_fingerprint

    fingerprint = row_fingerprint(row)
    nir_hash = app.nir_hash(row.nir)
    person = s.execute(select(Person).where(Person.external_id == row.external_id)).scalar()
    if person is None and nir_hash:
        person = s.execute(select(Person).where(Person.nir_hash == nir_hash)).scalar()
    values = {f: getattr(row, f) for f in PERSON_FIELDS}
    if person is None:
        person = Person(external_id=row.external_id, nir_hash=nir_hash, fingerprint=fingerprint,
                        extra=dict(row.extra), created_at=now, updated_at=now, **values)
        s.add(person)
        s.flush()
        report.accepted += 1
        _open_case_if_needed(s, app, person, now, report)
        return
    if person.fingerprint == fingerprint and person.external_id == row.external_id:
        report.unchanged += 1
        return
    address_changed = any(getattr(person, f) != values[f] for f in ADDRESS_FIELDS)
    phone_changed = person.phone != values["phone"] and values["phone"] is not None
    for f, v in values.items():
        setattr(person, f, v)
    person.external_id = row.external_id
    if nir_hash:
        person.nir_hash = nir_hash
    person.fingerprint = fingerprint
    person.extra = dict(row.extra)
    person.updated_at = now
    report.updated += 1
    if address_changed:
        person.address_status = "ok"
        _apply_to_active_case(s, app, person, Event("address_updated", now), now, source="ingest")
    if phone_changed:
        person.phone_status = "ok"
        _apply_to_active_case(s, app, person, Event("phone_updated", now), now, source="ingest")
    _open_case_if_needed(s, app, person, now, report)


def _open_case_if_needed(s: Session, app, person: Person, now: dt.datetime, report: IngestReport) -> None:
    if not person.droits_devoirs:
        return
    cases = s.execute(select(Case).where(Case.person_id == person.id)).scalars().all()
    if any(c.status == "active" for c in cases):
        return
    if any(c.droit_opened_on == person.droit_opened_on for c in cases):
        return  # this droit was already followed (and closed)
    path = app.policy.route(person.orientation, person.ft_registered)
    repository.create_case(s, app, person, path, now)
    report.cases_opened += 1
