"""RDV-Solidarités appointments waiting for an agent: "rendez-vous à rapprocher" (issue 16).

A participant of an RDV-Solidarités appointment whom :mod:`worker.services.rdv_solidarites` did not
recognise (unknown, ambiguous, or a matricule whose birth date differs) waits here, with what
RDV-Solidarités said, until an agent:

* **links** it to a person (:func:`link`, ``relance rdvs link N MATRICULE``, the workspace's form): the
  appointment's latest state is applied to that person's case at once, the same RDV-Solidarités user's
  other waiting appointments too, and the next notifications about that user are recognised;
* or **discards** it (:func:`discard`): not someone Relance follows; later notifications of that
  appointment change nothing.

Either way what RDV-Solidarités said about the person (name, birth date, affiliation number) is
erased from the row. The agenda, the digest and the workspace list the waiting ones (:func:`pending`:
ids and dates, no name); only :func:`detail` (the workspace's page, ``relance rdvs show``) shows what
RDV-Solidarités said. Each decision is an audit entry (ids, the agent, the events: no personal data).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select

from worker.adapters.rdv_solidarites import USER_FIELDS
from worker.adapters.store import audit
from worker.adapters.store.models import Case, Person, RdvsParticipation
from worker.adapters.store.session import session_scope
from worker.services.errors import ServiceError
from worker.services.rdv_solidarites import apply_state

STATUS_LABELS = {"unknown": "à venir ou à renseigner", "seen": "honoré", "noshow": "absence",
                 "excused": "annulé par la personne (excusé)", "revoked": "annulé par le service",
                 "destroyed": "supprimé", "removed": "personne retirée du rendez-vous"}


@dataclass(frozen=True)
class Pending:
    id: int
    organisation: str
    rdv_id: int
    participant: str
    received_at: dt.datetime
    updated_at: dt.datetime
    starts_at: dt.datetime | None
    status: str | None
    note: str  # why nobody was recognised (French, no name)


def _pending(row: RdvsParticipation) -> Pending:
    return Pending(row.id, row.organisation, row.rdv_id, row.participant, row.created_at, row.updated_at,
                   row.starts_at, row.status, row.note or "")


def pending(app, organisation: str | None = None) -> list[Pending]:
    """The appointments waiting for an agent, oldest first (of one organisation, or all)."""
    with session_scope(app.db_url) as s:
        q = select(RdvsParticipation).where(RdvsParticipation.match == "pending")
        if organisation:
            q = q.where(RdvsParticipation.organisation == organisation)
        return [_pending(r) for r in s.execute(q.order_by(RdvsParticipation.created_at, RdvsParticipation.id))
                .scalars()]


def _waiting(s, pending_id: int, scope: str | None, lock: bool = False) -> RdvsParticipation:
    q = select(RdvsParticipation).where(RdvsParticipation.id == pending_id)
    if lock and s.bind.dialect.name == "postgresql":
        q = q.with_for_update()
    row = s.execute(q).scalar() if 0 < pending_id < 2 ** 63 else None
    if row is None or row.match != "pending" or (scope is not None and row.organisation != scope):
        raise ServiceError(f"aucun rendez-vous à rapprocher n° {pending_id} (déjà traité, ou inconnu)")
    return row


def detail(app, pending_id: int, scope: str | None = None) -> dict:
    """What RDV-Solidarités said of one waiting appointment: for the agent who links it (never logged)."""
    with session_scope(app.db_url) as s:
        row = _waiting(s, pending_id, scope)
        data = (row.payload or {}).get("data") or {}
        user = (data.get("participant") or {}).get("user") or {}
        try:
            birth_date = dt.date.fromisoformat(str(user.get("birth_date") or "")[:10])
        except ValueError:
            birth_date = None
        return {"pending": _pending(row), "user": {k: user.get(k) for k in USER_FIELDS}, "birth_date": birth_date,
                "motif": (data.get("motif") or {}).get("name"),
                "category": (data.get("motif") or {}).get("category"), "lieu": data.get("lieu"),
                "collective": bool(data.get("collectif")), "event": ((row.payload or {}).get("meta") or {}).get("event"),
                "status_label": STATUS_LABELS.get(row.status or "", row.status or ""),
                "rdvs_organisation": (data.get("organisation") or {}).get("name")}


@dataclass(frozen=True)
class Linked:
    external_id: str
    case_id: int | None
    case_reference: str | None
    organisation: str | None  # the case's
    rows: int  # appointments linked (this one and the same user's others)
    events: list[str]  # the events applied


def link(app, pending_id: int, external_id: str, now: dt.datetime, actor: str,
         scope: str | None = None) -> Linked:
    """Link a waiting appointment to the person of ``external_id`` and apply it (``actor``: ``cli`` or
    ``web:<agent id>``; ``scope``: the agent's organisation, None for every one)."""
    with session_scope(app.db_url) as s:
        row = _waiting(s, pending_id, scope, lock=True)
        person = s.execute(select(Person).where(Person.external_id == (external_id or "").strip())).scalar()
        if person is None:
            raise ServiceError(f"personne inconnue : {external_id} (matricule attendu)")
        rows = [row]
        if row.rdvs_user_id is not None:  # the same RDV-Solidarités user's other appointments waiting
            rows += [r for r in s.execute(select(RdvsParticipation).where(
                RdvsParticipation.organisation == row.organisation, RdvsParticipation.match == "pending",
                RdvsParticipation.rdvs_user_id == row.rdvs_user_id, RdvsParticipation.id != row.id)
                .order_by(RdvsParticipation.event_at, RdvsParticipation.id)).scalars()]
        applied: list[str] = []
        for r in rows:
            status, starts_at = r.status or "unknown", r.starts_at
            r.status, r.booked_at = None, None  # nothing applied yet for this person
            r.match, r.matched_by, r.note, r.payload, r.updated_at = "linked", "agent", None, None, now
            key = f"rdvs:{r.organisation}:{r.rdv_id}:{r.participant}:link:{(r.digest or '')[:16]}"
            events = apply_state(s, app, r, person, status, starts_at, key, now)
            applied += [e["type"] for e in events if e["status"] == "applied"]
            audit.append(s, at=now, kind="rdvs_link", case_id=r.case_id, entity_id=r.id, data={
                "action": "linked", "organisation": r.organisation, "rdv_id": r.rdv_id, "actor": actor,
                "events": [e["type"] for e in events if e["status"] == "applied"]})
        case = s.get(Case, row.case_id) if row.case_id is not None else None
        return Linked(person.external_id, row.case_id, case.reference if case else None,
                      case.organisation if case else None, len(rows), applied)


def discard(app, pending_id: int, now: dt.datetime, actor: str, scope: str | None = None) -> None:
    """Not a person Relance follows: the appointment leaves the agenda; what was kept is erased."""
    with session_scope(app.db_url) as s:
        row = _waiting(s, pending_id, scope, lock=True)
        row.match, row.payload, row.note, row.updated_at = "discarded", None, None, now
        audit.append(s, at=now, kind="rdvs_link", entity_id=row.id, data={
            "action": "discarded", "organisation": row.organisation, "rdv_id": row.rdv_id, "actor": actor})
