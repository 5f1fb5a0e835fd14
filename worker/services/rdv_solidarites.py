"""RDV-Solidarités' webhooks (issue 16): its appointments become Relance's events.

RDV-Solidarités posts one notification per creation, update or deletion of an appointment
(:mod:`worker.adapters.rdv_solidarites` reads it; ``POST /webhooks/rdv-solidarites/{ORG}`` checks its
signature first). :func:`receive` takes one in:

* a notification of another object (``meta.model`` not ``Rdv``), of a motif category that is not an
  RSA one (``config/territory.yaml`` ``rdv_solidarites.motif_categories``) or of another organisation
  (``rdv_solidarites.organisation_id``) is acknowledged and changes nothing;
* older than the last one taken in for that appointment (``meta.timestamp``): changes nothing; the
  same body twice: changes nothing (``duplicate``);
* each participant (``participations``, else ``users`` with the appointment's status) is recognised
  by an agent's earlier link of that RDV-Solidarités user, then by ``affiliation_number`` (the
  matricule: the person's external id, or its part after the last ``-``), then by last name (or birth
  name) and birth date; a date of birth that contradicts the matricule, several people or nobody: the
  row waits for an agent (``pending``, :mod:`worker.services.rdv_matches`), with what RDV-Solidarités
  said, and is applied once linked;
* the appointment's state is compared with what Relance last applied for that participant
  (:func:`apply_state`): a new date → ``rdv_booked`` (a move, when it had another), ``seen`` →
  ``rdv_attended``, ``noshow`` → ``rdv_missed`` (a confirmed absence; booked first if Relance did
  not hold it), ``excused`` → ``rdv_cancelled`` with ``excused`` in its payload (cancelled by the
  person: never a failure), ``revoked``, ``destroyed`` or a participant removed → ``rdv_cancelled``
  (by the service). A cancellation or an absence applies only to the appointment the case holds.

Events go through the engine like any other (source ``rdv-solidarites``, idempotency keys scoped per
appointment, participant and delivery). Every delivery is one audit entry (organisation, appointment
id, event, outcome, counts: no personal data); logs carry ids and outcomes only.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
import unicodedata
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from worker.adapters import rdv_solidarites as rdvs
from worker.adapters.store import audit
from worker.adapters.store.models import Case, InboundEvent, Person, RdvsParticipation
from worker.adapters.store.session import session_scope
from worker.domain import engine
from worker.domain.model import Event
from worker.services import cases
from worker.services.errors import ServiceError

log = logging.getLogger("relance.rdv_solidarites")

SOURCE = "rdv-solidarites"
MIN_DATE = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
MAX_AHEAD = dt.timedelta(days=731)
MAX_CLOCK_SKEW = dt.timedelta(hours=1)  # a meta.timestamp later than now + this is refused
CANCELLED = ("destroyed", "removed", "revoked")


class WebhookRefused(ServiceError):
    """A signed notification Relance cannot read (422): French, quotes no value."""


@dataclass
class WebhookResult:
    status: str  # applied | unchanged | pending | ignored | older | duplicate
    note: str = ""
    participants: list[dict] = field(default_factory=list)  # participant key, outcome, events (no personal data)

    def as_json(self) -> dict:
        return {"status": self.status, "note": self.note, "participants": self.participants}


# --- recognising a person -------------------------------------------------------------------------------


def name_key(text: str | None) -> str:
    """A name compared without accents, case, hyphens, apostrophes or spaces."""
    text = unicodedata.normalize("NFKD", text or "")
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return re.sub(r"[^a-z0-9]", "", text)


def _by_affiliation(s, number: str) -> list[Person]:
    clean = re.sub(r"\s", "", number)
    if not clean:
        return []
    found = s.execute(select(Person).where(Person.external_id.in_({clean, clean.upper()})).limit(2)).scalars().all()
    if found:
        return list(found)
    # the CAF/MSA number alone, of a matricule the flux prefixes ("CAF35-0001001" for "0001001")
    if not re.fullmatch(r"[0-9A-Za-z]{4,}", clean):  # no LIKE wildcard, not a fragment
        return []
    return list(s.execute(select(Person).where(Person.external_id.like(f"%-{clean.upper()}")).limit(2)).scalars())


def find_person(s, organisation: str, p: rdvs.Participant) -> tuple[Person | None, str, str]:
    """(person, how, why not): an agent's link of this RDV-Solidarités user, the affiliation number,
    then last name and birth date. ``why not`` is French and names nobody."""
    if p.user_id is not None:
        linked = s.execute(select(RdvsParticipation.person_id).where(
            RdvsParticipation.organisation == organisation, RdvsParticipation.rdvs_user_id == p.user_id,
            RdvsParticipation.match == "linked", RdvsParticipation.person_id.is_not(None))
            .order_by(RdvsParticipation.updated_at.desc()).limit(1)).scalar()
        if linked is not None and (person := s.get(Person, linked)) is not None:
            return person, "agent", ""
    if p.affiliation_number:
        found = _by_affiliation(s, p.affiliation_number)
        if len(found) > 1:
            return None, "", "numéro d'allocataire porté par plusieurs personnes"
        if found:
            if p.birth_date is not None and found[0].birth_date != p.birth_date:
                return None, "", "numéro d'allocataire connu, mais la date de naissance diffère"
            return found[0], "affiliation_number", ""
    names = {name_key(p.last_name), name_key(p.birth_name)} - {""}
    if p.birth_date is None or not names:
        return None, "", "personne non reconnue (ni numéro d'allocataire connu, ni nom et date de naissance)"
    same_day = s.execute(select(Person).where(Person.birth_date == p.birth_date)).scalars().all()
    found = [x for x in same_day if name_key(x.last_name) in names]
    if len(found) == 1:
        return found[0], "name_birth_date", ""
    if found:
        return None, "", "plusieurs personnes de même nom et date de naissance"
    return None, "", "personne inconnue de Relance (ni numéro d'allocataire, ni nom et date de naissance)"


# --- applying an appointment's state ---------------------------------------------------------------------


def _active_case(s, person: Person) -> Case | None:
    return s.execute(select(Case).where(Case.person_id == person.id)
                     .order_by((Case.status == "active").desc(), Case.id.desc()).limit(1)).scalar()


def _record(s, app, row: RdvsParticipation, person: Person, type_: str, key: str, now: dt.datetime,
            extra: dict) -> dict:
    """One event, once (its key), applied to the person's case like ``relance event`` does."""
    stored = cases.scoped_idempotency_key(person.id, type_, key)
    existing = s.execute(select(InboundEvent).where(InboundEvent.idempotency_key == stored)).scalar()
    if existing is not None:
        return {"type": type_, "status": "duplicate"}
    payload = {**extra, "rdv_solidarites": {"rdv_id": row.rdv_id, "participant": row.participant}}
    record = InboundEvent(idempotency_key=stored, person_id=person.id, type=type_, at=now, recorded_at=now,
                          source=SOURCE, payload=json.loads(json.dumps(payload, default=str)))
    s.add(record)
    s.flush()
    event = Event(type=type_, at=now, appointment_at=extra.get("appointment_at"))
    try:
        status, note, case_id, _planned = cases.apply_to_active_case(s, app, person, event, now, SOURCE)
    except engine.EngineError as exc:
        status, note, case_id = "rejected", str(exc), None
    record.status, record.note, record.case_id = status, note, case_id
    row.case_id = case_id or row.case_id
    return {"type": type_, "status": status}


def apply_state(s, app, row: RdvsParticipation, person: Person, status: str, starts_at: dt.datetime | None,
                key: str, now: dt.datetime) -> list[dict]:
    """Bring the person's case to what RDV-Solidarités says of this participant; the events recorded."""
    case = _active_case(s, person)
    booked = row.booked_at
    current = (booked is not None and case is not None and case.status == "active"
               and case.phase == "appointment" and case.appointment_at == booked)
    plan: list[tuple[str, dict]] = []
    if status in CANCELLED or status == "excused":
        if current:
            plan.append(("rdv_cancelled", {"cancelled_by": "person", "excused": True} if status == "excused"
                         else {"cancelled_by": "service"}))
        row.booked_at = None
    elif status == "seen":
        if row.status != "seen":
            plan.append(("rdv_attended", {}))
    elif status == "noshow":
        if row.status != "noshow":
            if starts_at is not None and starts_at != booked:
                plan.append(("rdv_booked", {"appointment_at": starts_at}))
                row.booked_at, current = starts_at, True
            if current:
                plan.append(("rdv_missed", {}))
    elif starts_at is not None and starts_at != booked:  # unknown: booked, or moved
        plan.append(("rdv_booked", {"appointment_at": starts_at}))
        row.booked_at = starts_at
    row.status, row.starts_at, row.person_id = status, starts_at, person.id
    return [_record(s, app, row, person, type_, f"{key}:{type_}", now, extra) for type_, extra in plan]


# --- one notification ------------------------------------------------------------------------------------


def _ignored_because(app, organisation: str, d: rdvs.Delivery) -> str:
    if d.model != "Rdv":
        return f"notification d'un autre objet que les rendez-vous ({d.model}) : sans effet"
    config = app.territory.rdv_solidarites
    if d.motif_category not in config.motif_categories:
        return "rendez-vous d'une catégorie de motif hors RSA : sans effet"
    own = app.territory.organisations[organisation].rdv_solidarites
    if own and own.organisation_id is not None and d.organisation_id not in (None, own.organisation_id):
        return "rendez-vous d'une autre organisation de RDV-Solidarités : sans effet"
    return ""


def _check_dates(d: rdvs.Delivery, now: dt.datetime) -> None:
    if d.starts_at is not None and not MIN_DATE <= d.starts_at <= now + MAX_AHEAD:
        raise WebhookRefused("data.starts_at : date hors bornes (2000 … dans 2 ans)")
    if d.timestamp is not None and not MIN_DATE <= d.timestamp <= now + MAX_CLOCK_SKEW:
        raise WebhookRefused("meta.timestamp : date hors bornes (2000 … maintenant)")


def _audit(s, now: dt.datetime, organisation: str, d: rdvs.Delivery, outcome: str, participants: list[dict]):
    applied = sorted({e["type"] for p in participants for e in p.get("events", []) if e["status"] == "applied"})
    audit.append(s, at=now, kind="rdvs_webhook", entity_id=d.rdv_id, data={
        "organisation": organisation, "model": d.model, "event": d.event, "rdv_id": d.rdv_id,
        "timestamp": d.timestamp.isoformat() if d.timestamp else None, "outcome": outcome,
        "participants": len(participants), "pending": sum(1 for p in participants if p["outcome"] == "pending"),
        "applied": applied})


def _take(s, app, row: RdvsParticipation, d: rdvs.Delivery, p: rdvs.Participant | None, digest: str,
          now: dt.datetime) -> dict:
    """One participant of a notification (``p`` None: no longer in the appointment)."""
    status = "destroyed" if d.event == "destroyed" else "removed" if p is None else p.status
    row.event_at, row.digest, row.updated_at = d.timestamp or row.event_at, digest, now
    out = {"participant": row.participant, "outcome": row.match, "events": []}
    if row.match == "discarded":
        row.status, row.starts_at = status, d.starts_at
        return out
    person = s.get(Person, row.person_id) if row.person_id is not None else None
    if person is None and p is not None:
        person, how, why = find_person(s, row.organisation, p)
        if person is not None:  # recognised now (maybe after waiting): nothing was applied for them yet
            row.match, row.matched_by, row.note, row.payload = "matched", how, None, None
            row.status, row.booked_at = None, None
        else:
            row.match, row.note = "pending", why
    if person is None:  # waits for an agent: what RDV-Solidarités says now is kept
        if p is not None:
            row.payload = d.state(p)
        elif row.payload:
            row.payload = {**row.payload, "removed": True}
        row.status, row.starts_at = status, d.starts_at
        out.update(outcome="pending", note=row.note)
        return out
    key = f"rdvs:{row.organisation}:{row.rdv_id}:{row.participant}:{digest[:16]}"
    out["events"] = apply_state(s, app, row, person, status, d.starts_at, key, now)
    out["outcome"] = "applied" if any(e["status"] == "applied" for e in out["events"]) else "unchanged"
    return out


def _receive(s, app, organisation: str, d: rdvs.Delivery, digest: str, now: dt.datetime) -> WebhookResult:
    q = select(RdvsParticipation).where(RdvsParticipation.organisation == organisation,
                                        RdvsParticipation.rdv_id == d.rdv_id)
    if s.bind.dialect.name == "postgresql":
        q = q.with_for_update()
    rows = {r.participant: r for r in s.execute(q).scalars()}
    latest = max((r.event_at for r in rows.values() if r.event_at is not None), default=None)
    keys = [p.key for p in d.participants]
    if latest is not None and d.timestamp is not None and d.timestamp < latest:
        _audit(s, now, organisation, d, "older", [])
        return WebhookResult("older", "notification plus ancienne que la dernière prise en compte pour ce "
                                      "rendez-vous : sans effet")
    if rows and set(keys) == set(rows) and all(r.digest == digest for r in rows.values()):
        _audit(s, now, organisation, d, "duplicate", [])
        return WebhookResult("duplicate", "notification déjà reçue : sans effet")
    outcomes = []
    for p in d.participants:
        row = rows.get(p.key)
        if row is None:
            row = RdvsParticipation(organisation=organisation, rdv_id=d.rdv_id, participant=p.key,
                                    rdvs_user_id=p.user_id, match="new", created_at=now, updated_at=now)
            s.add(row)
        outcomes.append(_take(s, app, row, d, p, digest, now))
    for key, row in rows.items():
        if key not in keys:
            outcomes.append(_take(s, app, row, d, None, digest, now))
    s.flush()
    states = {o["outcome"] for o in outcomes}
    status = ("pending" if "pending" in states else "applied" if "applied" in states
              else "ignored" if states <= {"discarded"} and states else "unchanged")
    _audit(s, now, organisation, d, status, outcomes)
    notes = {"pending": "au moins une personne n'est pas reconnue : un agent la rapprochera",
             "unchanged": "rien ne change pour les personnes suivies", "ignored": "rendez-vous écarté par un agent"}
    return WebhookResult(status, notes.get(status, ""), outcomes)


def receive(app, organisation: str, body: bytes, now: dt.datetime) -> WebhookResult:
    """Take in one signed notification of ``organisation`` (a key of ``config/territory.yaml``)."""
    if organisation not in app.territory.organisations:
        raise ServiceError(f"organisation inconnue : {organisation}")
    try:
        d = rdvs.parse(body, app.calendar.tz)
    except rdvs.PayloadError as exc:
        raise WebhookRefused(str(exc)) from None
    digest = rdvs.digest(body)
    why = _ignored_because(app, organisation, d)
    if why:
        with session_scope(app.db_url) as s:
            _audit(s, now, organisation, d, "ignored", [])
        log.info("rdv-solidarites %s: %s %s #%s ignored", organisation, d.model, d.event, d.rdv_id)
        return WebhookResult("ignored", why)
    _check_dates(d, now)
    for attempt in range(3):
        try:
            with session_scope(app.db_url) as s:
                result = _receive(s, app, organisation, d, digest, now)
            log.info("rdv-solidarites %s: rdv #%s %s -> %s (%d participants)", organisation, d.rdv_id, d.event,
                     result.status, len(result.participants))
            return result
        except (IntegrityError, StaleDataError):
            if attempt == 2:
                raise
            continue  # the same appointment was taken in concurrently: read it again
    raise AssertionError("unreachable")
