"""Cases and events: advance a due case, record an agent's or a provider's event.

Each function opens its own transaction, loads what it needs, calls the pure
engine and persists the result. Celery tasks, the scheduler, the CLI and the
API only call these. ``now`` is always an argument: nothing here reads the
clock, so simulated time (``tick --now``, the demo, freezegun) dates everything.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, field

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.exc import StaleDataError

from worker.adapters.store import audit, due_queue, repository
from worker.adapters.store.models import Case, InboundEvent, Message, Person
from worker.adapters.store.session import session_scope
from worker.domain import engine
from worker.domain.model import EVENT_TYPES, LANGUAGES, Event
from worker.services.errors import IdempotencyConflict, ServiceError

log = logging.getLogger("relance.services")

CONTACT_EVENTS = {"npai", "address_updated", "phone_updated", "sms_failed", "sms_opt_out", "preferences_updated"}


def load_case(s: Session, case_id: int, lock: bool = False) -> Case | None:
    q = select(Case).where(Case.id == case_id).options(selectinload(Case.messages))
    if lock and s.bind.dialect.name == "postgresql":
        q = q.with_for_update()
    return s.execute(q).scalar()


def advance_case(app, case_id: int, now: dt.datetime) -> list[int]:
    """Run the engine on one due case; returns the messages it planned."""
    try:
        with session_scope(app.db_url) as s:
            case = load_case(s, case_id, lock=True)
            if case is None:
                return []
            planned = _advance(s, app, case, now)
            _release_claims(s, [case_id])
            return planned
    except StaleDataError:
        log.info("case %s changed concurrently; it will be swept again", case_id)
        return []


def _advance(s: Session, app, case: Case, now: dt.datetime, flush: bool = True) -> list:
    state = repository.to_state(case)
    decision = engine.decide(state, now, app.policy, app.calendar)
    if not decision.actions and decision.state == state:
        return []
    if flush:
        return repository.persist(s, app, case, decision, now, cause="due")
    return repository.persist(s, app, case, decision, now, cause="due", flush=False)  # the batch flushes


def _release_claims(s: Session, case_ids: list[int]) -> None:
    """The sweep's claims of these cases end (a case whose due moment changed was released by the
    trigger that moved it in the queue; one still due is swept again)."""
    due_queue.release(s, case_ids)


def advance_cases(app, case_ids: list[int], now: dt.datetime) -> dict[int, list[int]]:
    """Advance a batch of due cases: one load (the cases locked in id order, with their messages),
    the engine on each, one transaction, the audit entries in one write at its end. Returns the
    messages planned per case. If the batch fails (a case changed concurrently, a bug on one case),
    its cases are advanced one by one, each in its own transaction (:func:`advance_case`)."""
    ids = sorted({int(i) for i in case_ids})
    if not ids:
        return {}
    try:
        with session_scope(app.db_url) as s, audit.buffered(s):
            q = select(Case).where(Case.id.in_(ids)).order_by(Case.id).options(selectinload(Case.messages))
            if s.bind.dialect.name == "postgresql":
                q = q.with_for_update()
            planned = {case.id: _advance(s, app, case, now, flush=False) for case in s.execute(q).scalars().all()}
            _release_claims(s, ids)  # flushes every case of the batch at once
            planned = {case_id: repository.planned_ids(p) for case_id, p in planned.items()}
        return planned
    except Exception as exc:  # noqa: BLE001 - each case alone, so that one bad case stops none of the others
        log.warning("batch of %d cases failed (%s): advanced one by one", len(ids), type(exc).__name__)
    planned, failed = {}, None
    for case_id in ids:
        try:
            planned[case_id] = advance_case(app, case_id, now)
        except Exception as exc:  # noqa: BLE001 - logged; the case is swept again when its claim expires
            log.exception("case %s: advance failed", case_id)
            failed = exc
    if failed is not None and not planned:
        raise failed
    return planned


def due_case_ids(app, now: dt.datetime, limit: int) -> list[int]:
    """Claim up to ``limit`` due cases for 5 minutes, the longest due first (claims that expired
    before them); their ids, in no particular order. Concurrent sweepers never claim a case twice
    (one may get fewer: what the other took). The queue: :mod:`worker.adapters.store.due_queue`
    (bench/bench_sweep.py)."""
    return due_queue.claim(app.db_url, now, limit, now + dt.timedelta(minutes=5))


@dataclass
class EventResult:
    event_id: int
    status: str  # applied | ignored | duplicate
    note: str = ""
    case_id: int | None = None
    planned: list[int] = field(default_factory=list)


def _active_case(s: Session, person: Person) -> Case | None:
    return s.execute(select(Case).where(Case.person_id == person.id).order_by(
        (Case.status == "active").desc(), Case.id.desc()).limit(1).options(selectinload(Case.messages))).scalar()


def _update_preferences(person: Person, large_print: bool | None, language: str | None) -> None:
    """Large print and language live in ``person.extra`` (also the flux's optional columns)."""
    extra = dict(person.extra or {})
    if large_print is not None:
        extra["large_print"] = "true" if large_print else "false"
    if language is not None:
        extra["language"] = language
    person.extra = extra


def _update_person_contact(person: Person, event_type: str, now: dt.datetime) -> None:
    if event_type == "npai":
        person.address_status = "npai"
    elif event_type == "address_updated":
        person.address_status = "ok"
    elif event_type == "sms_failed":
        person.phone_status = "failed"
    elif event_type == "sms_opt_out":
        person.phone_status = "opted_out"
    elif event_type == "phone_updated":
        person.phone_status = "ok"
    person.updated_at = now


def apply_to_active_case(s: Session, app, person: Person, event: Event, now: dt.datetime, source: str,
                          case: Case | None = None) -> tuple[str, str, int | None, list[int]]:
    case = case or _active_case(s, person)
    if case is None:
        return "ignored", "aucun dossier pour cette personne", None, []
    state = repository.to_state(case)
    decision = engine.apply(state, event, now, app.policy, app.calendar)
    audit.append(s, at=now, kind="event", case_id=case.id, entity_id=case.id,
                 data={"type": event.type, "source": source, "note": decision.note})
    if not decision.actions and decision.state == state:
        return "ignored", decision.note, case.id, []
    planned = repository.persist(s, app, case, decision, now, cause=f"event:{event.type}")
    return "applied", decision.note, case.id, planned


def _household_size(person: Person) -> int | None:
    """The household's size when the flux gives it (``household_size``, config/flux_columns.yaml)."""
    value = str((person.extra or {}).get("household_size") or "").strip()
    return int(value) if value.isdigit() and 0 < int(value) < 100 else None


def apply_event(app, *, external_id: str, type: str, now: dt.datetime, until: dt.datetime | None = None,
                appointment_at: dt.datetime | None = None, decision: str | None = None, to: str | None = None,
                reason: str | None = None, receipt_on: dt.date | None = None, source: str = "cli",
                idempotency_key: str | None = None, message_id: int | None = None, rate: int | None = None,
                months: int | None = None, repeat: bool = False, start_on: dt.date | None = None,
                category: str | None = None, review_on: dt.date | None = None,
                extra: dict | None = None, large_print: bool | None = None,
                language: str | None = None) -> EventResult:
    """Record an event and apply it to the person's active case, once.

    ``extra``: what the workspace adds to the stored payload (``actor``: the agent's id, also in
    ``source`` ``web:<id>``; ``justification``: the agent's own text, required for a review decision
    taken there; ``outcome`` of a phone follow-up). Never the person's words."""
    if type not in EVENT_TYPES:
        raise ServiceError(f"type d'événement inconnu : {type} (attendu : {', '.join(EVENT_TYPES)})")
    if type == "reoriented" and (not to or to not in app.policy.paths):
        raise ServiceError(f"reoriented : parcours inconnu {to!r} (attendu : {', '.join(app.policy.paths)})")
    payload = {"until": until, "appointment_at": appointment_at, "decision": decision, "to": to,
               "reason_given": bool(reason), "receipt_on": receipt_on, "message_id": message_id,
               "rate": rate, "months": months, "repeat": repeat, "start_on": start_on,
               "category": category, "review_on": review_on, "language": language}
    payload = {k: v for k, v in payload.items() if v not in (None, False)}
    if large_print is not None:
        payload["large_print"] = large_print
    if language is not None and language not in LANGUAGES:
        raise ServiceError(f"--language : langue inconnue {language!r} (attendu : {', '.join(LANGUAGES)})")
    if source.startswith("web:") and type == "review_decision" and not str((extra or {}).get("justification")
                                                                            or "").strip():
        raise ServiceError("review_decision : la justification de la décision est obligatoire")
    payload.update({k: v for k, v in (extra or {}).items() if v not in (None, "")})
    if idempotency_key:
        payload["content_hmac"] = _content_hmac(app, type, payload, reason)
    for attempt in range(3):
        try:
            with session_scope(app.db_url) as s:
                person = s.execute(select(Person).where(Person.external_id == external_id)).scalar()
                if person is None:
                    raise ServiceError(f"personne inconnue : {external_id}")
                stored_key = scoped_idempotency_key(person.id, type, idempotency_key) if idempotency_key else None
                if idempotency_key:
                    existing = s.execute(select(InboundEvent).where(or_(
                        InboundEvent.idempotency_key == stored_key,
                        # a key recorded before keys were scoped (same person and type)
                        (InboundEvent.idempotency_key == idempotency_key) & (InboundEvent.person_id == person.id)
                        & (InboundEvent.type == type))).limit(1)).scalar()
                    if existing is not None:
                        known = (existing.payload or {}).get("content_hmac")
                        if known is not None and not hmac.compare_digest(known, payload["content_hmac"]):
                            raise IdempotencyConflict(
                                f"clé d'idempotence déjà utilisée pour un autre événement {type} de cette personne "
                                f"(n° {existing.id}, contenu différent) : rien n'est enregistré ; utilisez une "
                                "autre clé pour un nouvel événement")
                        return EventResult(existing.id, "duplicate", existing.note or "", existing.case_id)
                record = InboundEvent(idempotency_key=stored_key, person_id=person.id, type=type, at=now,
                                      recorded_at=now, source=source,
                                      payload=json.loads(json.dumps(payload, default=str)))
                s.add(record)
                s.flush()
                if type in CONTACT_EVENTS:
                    _update_person_contact(person, type, now)
                if type == "preferences_updated":
                    _update_preferences(person, large_print, language)
                event = Event(type=type, at=now, until=until, appointment_at=appointment_at, decision=decision,
                              to=to, reason=reason, receipt_on=receipt_on, rate=rate, months=months,
                              repeat=repeat, start_on=start_on, category=category, review_on=review_on,
                              household_size=_household_size(person), large_print=large_print,
                              language=language)
                if type == "reoriented" and to:
                    person.orientation = {"ft_unregistered": "ft"}.get(to, to)
                case = None
                if message_id is not None:
                    msg = s.get(Message, message_id)
                    case = load_case(s, msg.case_id, lock=True) if msg else None
                try:
                    status, note, case_id, planned = apply_to_active_case(s, app, person, event, now, source,
                                                                           case=case)
                except engine.EngineError as exc:
                    raise ServiceError(str(exc)) from None
                record.case_id = case_id
                record.status = status
                record.note = note
                return EventResult(record.id, status, note, case_id, planned)
        except IntegrityError:
            if attempt == 2:
                raise
            continue  # the same idempotency key was recorded concurrently: read it back
        except StaleDataError:
            if attempt == 2:
                raise
            continue
    raise AssertionError("unreachable")


def scoped_idempotency_key(person_id: int, type: str, key: str) -> str:
    """The stored form of an idempotency key: scoped by person and event type, so that one
    client's key never swallows another person's or another type's event (the column is unique)."""
    stored = f"{person_id}:{type}:{key}"
    if len(stored) > 200:  # the column's size: a long key is kept as its digest
        stored = f"{person_id}:{type}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return stored


def _content_hmac(app, type: str, payload: dict, reason: str | None) -> str:
    """What the event says (everything but its recording time and source), keyed: a reused key with
    other content is refused. Keyed because it covers the reason's text, which is not stored."""
    content = {k: (v.astimezone(dt.timezone.utc) if isinstance(v, dt.datetime) and v.tzinfo else v)
               for k, v in payload.items() if k != "reason_given"}  # one instant, one text
    content.update(type=type, reason=reason or None)
    blob = json.dumps(content, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hmac.new(app.settings.nir_hash_key.encode(), b"relance-event-content\0" + blob,
                    hashlib.sha256).hexdigest()


def person_exists(app, external_id: str) -> bool:
    with session_scope(app.db_url) as s:
        return s.execute(select(Person.id).where(Person.external_id == external_id)).first() is not None
