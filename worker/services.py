"""The service layer: one function per business action.

Each opens its own transaction, loads what it needs, calls the pure engine and
persists the result. Celery tasks, the scheduler, the CLI and the API only
call these. ``now`` is always an argument: nothing here reads the clock, so
simulated time (``tick --now``, the demo, freezegun) dates everything.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import re
import shutil
import socket
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace

from sqlalchemy import bindparam, literal_column, or_, select, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.exc import StaleDataError

from . import audit, repository
from .channels.base import (
    OptOutError,
    OutgoingMessage,
    RecipientError,
    RetryableError,
    TechnicalError,
)
from .db.models import AuditEntry, Case, InboundEvent, Message, Person
from .db.session import session_scope
from .domain import engine
from .domain.model import EVENT_TYPES, PENDING, SENDING, Event, MessageView
from .leases import acquire_lease, release_lease

log = logging.getLogger("relance.services")

MAX_SEND_ATTEMPTS = 6
BACKOFF_BASE_SECONDS = 30
BACKOFF_CAP_SECONDS = 3600
CONTACT_EVENTS = {"npai", "address_updated", "phone_updated", "sms_failed", "sms_opt_out"}


class ServiceError(Exception):
    """A request that cannot be carried out: message in French, for agents."""


# --- ingestion ------------------------------------------------------------------------------
# In chunks, in worker/ingestion.py; these names stay importable from here.

from .ingestion import IngestReport, ingest_file  # noqa: E402,F401 - re-exported


# --- advancing cases ---------------------------------------------------------------------------


def _load_case(s: Session, case_id: int, lock: bool = False) -> Case | None:
    q = select(Case).where(Case.id == case_id).options(selectinload(Case.messages))
    if lock and s.bind.dialect.name == "postgresql":
        q = q.with_for_update()
    return s.execute(q).scalar()


def advance_case(app, case_id: int, now: dt.datetime) -> list[int]:
    """Run the engine on one due case; returns the messages it planned."""
    try:
        with session_scope(app.db_url) as s:
            case = _load_case(s, case_id, lock=True)
            if case is None:
                return []
            case.claimed_until = None
            state = repository.to_state(case)
            decision = engine.decide(state, now, app.policy, app.calendar)
            if not decision.actions and decision.state == state:
                return []
            return repository.persist(s, app, case, decision, now, cause="due")
    except StaleDataError:
        log.info("case %s changed concurrently; it will be swept again", case_id)
        return []


def due_case_ids(app, now: dt.datetime, limit: int) -> list[int]:
    """Claim up to ``limit`` due cases, the longest due first (SKIP LOCKED on PostgreSQL, so sweepers
    don't collide); their ids, in no particular order.

    One statement, no list of ids sent back and forth: the due cases are selected
    (and locked) and their claim set by the same UPDATE ... RETURNING id. On
    PostgreSQL they are found through the partial index ix_cases_due_active (status
    compared with a literal, so that every plan, prepared ones too, can use it) and
    updated by their ctid, without a second index lookup (bench/bench_sweep.py).
    """
    cases = Case.__table__
    with session_scope(app.db_url) as s:
        due = (select(cases.c.id)
               .where(cases.c.status == bindparam("active", "active", literal_execute=True), cases.c.due_at <= now,
                      or_(cases.c.claimed_until.is_(None), cases.c.claimed_until < now))
               .order_by(cases.c.due_at).limit(limit))
        if s.bind.dialect.name == "postgresql":
            ctid = literal_column("ctid")
            claim = update(cases).where(ctid.in_(due.with_only_columns(ctid).with_for_update(skip_locked=True)
                                                 .scalar_subquery()))
        else:
            claim = update(cases).where(cases.c.id.in_(due.scalar_subquery()))
        return list(s.execute(claim.values(claimed_until=now + dt.timedelta(minutes=5))
                              .returning(cases.c.id)).scalars())


# --- events -------------------------------------------------------------------------------------


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


def _apply_to_active_case(s: Session, app, person: Person, event: Event, now: dt.datetime, source: str,
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


def apply_event(app, *, external_id: str, type: str, now: dt.datetime, until: dt.datetime | None = None,
                appointment_at: dt.datetime | None = None, decision: str | None = None, to: str | None = None,
                reason: str | None = None, receipt_on: dt.date | None = None, source: str = "cli",
                idempotency_key: str | None = None, message_id: int | None = None) -> EventResult:
    """Record an event and apply it to the person's active case, once."""
    if type not in EVENT_TYPES:
        raise ServiceError(f"type d'événement inconnu : {type} (attendu : {', '.join(EVENT_TYPES)})")
    if type == "reoriented" and (not to or to not in app.policy.paths):
        raise ServiceError(f"reoriented : parcours inconnu {to!r} (attendu : {', '.join(app.policy.paths)})")
    payload = {"until": until, "appointment_at": appointment_at, "decision": decision, "to": to,
               "reason_given": bool(reason), "receipt_on": receipt_on, "message_id": message_id}
    payload = {k: v for k, v in payload.items() if v not in (None, False)}
    for attempt in range(3):
        try:
            with session_scope(app.db_url) as s:
                if idempotency_key:
                    existing = s.execute(select(InboundEvent).where(
                        InboundEvent.idempotency_key == idempotency_key)).scalar()
                    if existing is not None:
                        return EventResult(existing.id, "duplicate", existing.note or "", existing.case_id)
                person = s.execute(select(Person).where(Person.external_id == external_id)).scalar()
                if person is None:
                    raise ServiceError(f"personne inconnue : {external_id}")
                record = InboundEvent(idempotency_key=idempotency_key, person_id=person.id, type=type, at=now,
                                      recorded_at=now, source=source,
                                      payload=json.loads(json.dumps(payload, default=str)))
                s.add(record)
                s.flush()
                if type in CONTACT_EVENTS:
                    _update_person_contact(person, type, now)
                event = Event(type=type, at=now, until=until, appointment_at=appointment_at, decision=decision,
                              to=to, reason=reason, receipt_on=receipt_on)
                if type == "reoriented" and to:
                    person.orientation = {"ft_unregistered": "ft"}.get(to, to)
                case = None
                if message_id is not None:
                    msg = s.get(Message, message_id)
                    case = _load_case(s, msg.case_id, lock=True) if msg else None
                try:
                    status, note, case_id, planned = _apply_to_active_case(s, app, person, event, now, source,
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


# --- sending -------------------------------------------------------------------------------------


def _civility(sex: str | None) -> str:
    return {"F": "Madame", "M": "Monsieur"}.get(sex or "", "Madame, Monsieur")


def _address_lines(person: Person) -> list[str]:
    from .postal import address_block

    civ = {"F": "Madame", "M": "Monsieur"}.get(person.sex or "")
    return address_block(civility=civ, first_name=person.first_name, last_name=person.last_name,
                         line1=person.address_line1 or "", line2=person.address_line2,
                         postcode=person.postcode or "", city=person.city or "")


def _notice_context(s: Session, app, case: Case) -> SimpleNamespace:
    spec = app.policy.path(case.path)
    notice = next((st for st in spec.steps if st.kind == "notice"), None)
    from .db.models import Appointment

    missed = s.execute(select(Appointment).where(Appointment.case_id == case.id, Appointment.status == "missed")
                       .order_by(Appointment.at.desc()).limit(1)).scalar()
    cal = app.calendar
    if missed is not None:
        facts = (f"Vous avez été convoqué(e) à un rendez-vous le {_fr_date(cal.local_date(missed.at))} "
                 "auquel vous ne vous êtes pas présenté(e), sans nous avoir fait connaître de motif légitime.")
    else:
        facts = ("Vous n'avez pas répondu aux invitations et à la convocation qui vous ont été adressées, "
                 "sans nous avoir fait connaître de motif légitime.")
    return SimpleNamespace(facts=facts, sanction=app.policy.sanction_text,
                           observation_days=notice.observation_days if notice else 10)


def _fr_date(d: dt.date) -> str:
    from .rendering import date_fr

    return date_fr(d)


def build_context(s: Session, app, msg: Message, case: Case, person: Person, now: dt.datetime) -> dict:
    org = app.territory.organisations[case.organisation]
    cal = app.calendar
    appointment = None
    if case.appointment_at is not None:
        appointment = SimpleNamespace(at=cal.local(case.appointment_at), place=org.convocation.place)
    commission = None
    if case.commission_date is not None or msg.step == "crsa_referral":
        c = app.territory.commission
        commission = SimpleNamespace(name=c.name, place=c.place, session_date=case.commission_date)
    notice = _notice_context(s, app, case) if msg.step == "pre_sanction_notice" else None
    address_lines = _address_lines(person) if msg.channel == "letter" else [
        f"{_civility(person.sex)} {person.first_name} {person.last_name}"]
    return {
        "person": SimpleNamespace(civility=_civility(person.sex), first_name=person.first_name,
                                  last_name=person.last_name, address_lines=address_lines, sex=person.sex),
        "org": SimpleNamespace(code=case.organisation, kind=org.kind, name=org.name, short_name=org.short_name,
                               signatory=org.signatory, address=list(org.address), phone=org.phone,
                               email=org.email, booking_url=org.booking_url),
        "case": SimpleNamespace(reference=case.reference, path=case.path, droit_opened_on=case.droit_opened_on),
        "message": SimpleNamespace(reference=msg.reference),
        "step": msg.step,
        "today": cal.local_date(now),
        "respond_by": case.respond_by,
        "appointment": appointment,
        "notice": notice,
        "commission": commission,
    }


@dataclass
class SendResult:
    message_id: int
    outcome: str  # sent | deferred | cancelled | skipped | retry | failed | technical-failure
    detail: str = ""


def _backoff(attempts: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1)))


def send_message(app, message_id: int, now: dt.datetime) -> SendResult:
    """Claim, re-check, render and send one message. At most once, whatever happens."""
    # 1. Claim (compare-and-set pending -> sending), committed before the provider is called.
    with session_scope(app.db_url) as s:
        msg = s.get(Message, message_id)
        if msg is None:
            return SendResult(message_id, "skipped", "unknown message")
        if msg.status != PENDING:
            return SendResult(message_id, "skipped", f"already {msg.status}")
        if msg.not_before > now:
            return SendResult(message_id, "skipped", "not yet due")
        case = _load_case(s, msg.case_id)
        state = repository.to_state(case)
        verdict = engine.send_verdict(state, MessageView(msg.step, msg.channel, msg.seq, msg.status,
                                                         msg.address_version, msg.id),
                                      now, app.policy, app.calendar)
        if verdict == "defer":
            msg.not_before = app.calendar.next_send_slot(now)
            msg.enqueued_at = None
            return SendResult(message_id, "deferred", msg.not_before.isoformat())
        if verdict.startswith("cancel:"):
            repository.set_message_status(s, msg, "cancelled", now, reason=verdict[7:])
            return SendResult(message_id, "cancelled", verdict[7:])
        if not repository.claim_message(s, message_id, now):
            return SendResult(message_id, "skipped", "claimed by another worker")
        audit.append(s, at=now, kind="message", case_id=msg.case_id, entity_id=msg.id,
                     data={"step": msg.step, "channel": msg.channel, "seq": msg.seq, "status": SENDING})

    # 2. Render and send (outside any transaction).
    with session_scope(app.db_url) as s:
        msg = s.get(Message, message_id)
        case = _load_case(s, msg.case_id)
        person = s.get(Person, case.person_id)
        try:
            ctx = build_context(s, app, msg, case, person, now)
            rendered = app.renderer.render(msg.step, msg.channel, ctx)
        except Exception as exc:  # noqa: BLE001 - recorded and surfaced, never swallowed
            from .postal import AddressError

            kind = "failed" if isinstance(exc, AddressError) else "technical-failure"
            # The reason, never the refused value (« name », « street »…).
            masked = re.sub(r"«[^»]*»", "«…»", str(exc))
            repository.set_message_status(s, msg, kind, now, error=f"{type(exc).__name__}: {masked}"[:500])
            if isinstance(exc, AddressError):
                # The reason, never the refused value (« name », « street »…): no personal data in the audit log.
                audit.append(s, at=now, kind="case", case_id=case.id, entity_id=case.id,
                             data={"flag": "address_invalid", "detail": re.sub(r"«[^»]*»", "«…»", str(exc))[:200]})
            log.warning("message %s not rendered: %s", message_id, type(exc).__name__)
            return SendResult(message_id, kind, str(exc))
        to = {"sms": person.phone, "email": person.email, "letter": "\n".join(ctx["person"].address_lines)}[msg.channel]
        org = app.territory.organisations[case.organisation]
        outgoing = OutgoingMessage(
            message_id=msg.id, reference=msg.reference, channel=msg.channel, step=msg.step,
            organisation=case.organisation, case_reference=case.reference, to=to or "",
            subject=rendered.subject, text=rendered.text, html=rendered.html, postage=msg.postage,
            sender_name=org.name, extra={"day": app.calendar.local_date(now).isoformat()})
        template = (rendered.template_name, rendered.template_version, rendered.content_hash)

    channel = app.channel(msg.channel)
    error = None
    delivery = None
    try:
        delivery = channel.send(outgoing)
    except (RetryableError, RecipientError, OptOutError, TechnicalError) as exc:
        error = exc
    except Exception as exc:  # noqa: BLE001 - an unknown error is a technical failure, visible to ops
        error = TechnicalError(f"{type(exc).__name__}")

    # 3. Record the outcome.
    with session_scope(app.db_url) as s:
        # Lock the row before reading it: the provider's status callback may be
        # recording a delivery receipt for this very message at the same time.
        s.execute(update(Message).where(Message.id == message_id).values(status=Message.status)
                  .execution_options(synchronize_session=False))
        msg = s.get(Message, message_id)
        msg.template_name, msg.template_version, msg.content_hash = template
        if delivery is not None:
            msg.sent_at = now
            msg.provider_ref = delivery.provider_ref
            msg.segments = delivery.segments
            if msg.status == SENDING:
                repository.set_message_status(s, msg, delivery.status, now)
            else:
                # A callback got here first (delivered, failed...): never move it backwards.
                from .twilio_callbacks import next_status

                target = next_status(msg.status, delivery.status)
                if target is not None:
                    repository.set_message_status(s, msg, target, now)
            audit_data = {"template_version": template[1], "content_hash": template[2]}
            audit.append(s, at=now, kind="message", case_id=msg.case_id, entity_id=msg.id,
                         data={"step": msg.step, "channel": msg.channel, "sent": True, **audit_data})
            person = s.get(Person, s.get(Case, msg.case_id).person_id)
            person.last_contact_at = now
            return SendResult(message_id, "sent", delivery.provider_ref or "")
        code = f" ({error.code})" if error.code is not None else ""
        if isinstance(error, RetryableError) and error.code == "read_timeout":
            # The request left: the provider may have accepted it. Never resend blindly.
            repository.set_message_status(s, msg, "technical-failure", now,
                                          error="délai de réponse dépassé après envoi : vérifier chez le fournisseur")
            return SendResult(message_id, "technical-failure", "read_timeout")
        if isinstance(error, RetryableError) and msg.attempts < MAX_SEND_ATTEMPTS:
            wait = _backoff(msg.attempts)
            if error.retry_after:
                wait = max(wait, dt.timedelta(seconds=float(error.retry_after)))
            msg.not_before = now + wait
            msg.enqueued_at = None
            repository.set_message_status(s, msg, PENDING, now, error=f"retry: {error.kind}{code}")
            return SendResult(message_id, "retry", f"{error.kind}{code}")
        if isinstance(error, RetryableError):
            repository.set_message_status(s, msg, "technical-failure", now, error=f"gave up: {error.kind}{code}")
            return SendResult(message_id, "technical-failure", "too many attempts")
        if isinstance(error, (RecipientError, OptOutError)):
            repository.set_message_status(s, msg, "failed", now, error=f"{error.kind}{code}")
            case_id = msg.case_id
        else:
            repository.set_message_status(s, msg, "technical-failure", now, error=f"{error.kind}{code}: {error}"[:500])
            log.error("message %s: technical failure %s", message_id, code)
            return SendResult(message_id, "technical-failure", str(error))
    # A refused number/address: tell the engine (letters carry on).
    event_type = {("sms", "recipient"): "sms_failed", ("sms", "opt_out"): "sms_opt_out"}.get(
        (msg.channel, error.kind))
    if event_type:
        record_message_event(app, message_id, event_type, now)
    elif msg.channel == "email":
        mark_email_unusable(app, case_id, now)
    return SendResult(message_id, "failed", f"{error.kind}{code}")


def record_message_event(app, message_id: int, event_type: str, now: dt.datetime) -> EventResult | None:
    with session_scope(app.db_url) as s:
        msg = s.get(Message, message_id)
        if msg is None:
            return None
        external_id = s.get(Person, s.get(Case, msg.case_id).person_id).external_id
    return apply_event(app, external_id=external_id, type=event_type, now=now, source="provider",
                       idempotency_key=f"msg:{message_id}:{event_type}", message_id=message_id)


def mark_email_unusable(app, case_id: int, now: dt.datetime) -> None:
    with session_scope(app.db_url) as s:
        case = _load_case(s, case_id, lock=True)
        person = s.get(Person, case.person_id)
        person.email_status = "failed"
        state = dataclasses.replace(repository.to_state(case), email_unusable=True)
        repository.write_state(case, state, now)
        s.execute(update(Message).where(Message.case_id == case_id, Message.channel == "email",
                                        Message.status == PENDING)
                  .values(status="cancelled", cancel_reason="email_unusable", status_at=now))
        audit.append(s, at=now, kind="case", case_id=case_id, entity_id=case_id,
                     data={"flag": "email_unusable"})


def record_email_bounce(app, *, reference: str | None, message_id: str | None, status: str | None,
                        now: dt.datetime, recipient: str | None = None) -> str:
    """A permanent bounce came back for an e-mail the SMTP server had accepted.

    The message (found by its ``X-Relance-Reference``, else by its SMTP
    ``Message-ID``) becomes ``failed`` and the person's e-mail unusable (pending
    e-mails cancelled; letters carry on), as for a refusal at sending time,
    unless the address that bounced (``recipient``, when the notice gives it)
    is no longer the person's: then only the message is marked.
    Returns ``"applied"``, ``"duplicate"`` (already failed), ``"unknown"`` or
    a French reason why nothing changed.
    """
    with session_scope(app.db_url) as s:
        msg = None
        ids = Message.parse_reference(reference)
        if ids is not None:
            msg = s.get(Message, ids[1])
            if msg is not None and msg.case_id != ids[0]:
                msg = None
        if msg is None and message_id:
            msg = s.execute(select(Message).where(Message.channel == "email",
                                                  Message.provider_ref == message_id.strip())).scalars().first()
        if msg is None:
            return "unknown"
        if msg.channel != "email":
            return f"la référence {msg.reference} n'est pas un e-mail ({msg.channel})"
        person = s.get(Person, s.get(Case, msg.case_id).person_id)
        same_address = (recipient is None or person.email is None
                        or person.email.strip().lower() == recipient.strip().lower())
        # a crash after marking the message and before flagging the address: the rerun finishes the job
        flag = same_address and person.email_status != "failed"
        case_id = msg.case_id
        if msg.status == "failed":
            outcome = "duplicate"
        elif msg.status in ("sent", "delivered", "technical-failure"):  # a bounce proves it left
            repository.set_message_status(s, msg, "failed", now, error=f"non-remise (bounce {status or '5.0.0'})")
            outcome = "applied"
        else:
            return f"e-mail {msg.reference} au statut {msg.status} : non-remise non appliquée"
    if flag:
        mark_email_unusable(app, case_id, now)
    return outcome


def scan_bounces(app, now: dt.datetime) -> dict:
    """Record the bounces waiting in ``RELANCE_BOUNCE_MAILDIR`` (nothing if unset)."""
    from .bounces import empty_report, scan_maildir

    maildir = app.settings.bounce_maildir
    return empty_report() if maildir is None else scan_maildir(app, maildir, now)


def due_messages(app, now: dt.datetime, limit: int,
                 requeue_after: dt.timedelta = dt.timedelta(minutes=5)) -> list[tuple[int, str]]:
    """The relay: (id, channel) of pending messages that are due and not recently enqueued."""
    with session_scope(app.db_url) as s:
        q = (select(Message.id, Message.channel).where(Message.status == PENDING, Message.not_before <= now,
                                      or_(Message.enqueued_at.is_(None), Message.enqueued_at < now - requeue_after))
             .order_by(Message.not_before, Message.id).limit(limit))
        if s.bind.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        rows = [(r[0], r[1]) for r in s.execute(q)]
        if rows:
            s.execute(update(Message).where(Message.id.in_([r[0] for r in rows])).values(enqueued_at=now)
                      .execution_options(synchronize_session=False))
        return rows


def reconcile_stuck(app, now: dt.datetime) -> int:
    """Messages left in ``sending`` (a worker died mid-send) are surfaced, never resent."""
    limit = now - dt.timedelta(minutes=app.settings.sending_timeout_minutes)
    with session_scope(app.db_url) as s:
        stuck = s.execute(select(Message).where(Message.status == SENDING, Message.claimed_at < limit)).scalars().all()
        for msg in stuck:
            repository.set_message_status(
                s, msg, "technical-failure", now,
                error="interrompu pendant l'envoi : vérifier chez le fournisseur avant tout renvoi")
        return len(stuck)


def record_provider_status(app, message_id: int, status: str, now: dt.datetime, error_code: str | None = None) -> str | None:
    """A delivery receipt (Twilio callback): move the message forward only, idempotently."""
    from .twilio_callbacks import STATUS_MAP, is_permanent_recipient_failure, next_status

    new = STATUS_MAP.get(status)
    if new is None:
        return None
    with session_scope(app.db_url) as s:
        # Lock the row first (callbacks for one message may arrive concurrently,
        # or while the sender is still recording the provider's answer).
        s.execute(update(Message).where(Message.id == message_id).values(status=Message.status)
                  .execution_options(synchronize_session=False))
        msg = s.get(Message, message_id)
        if msg is None:
            return None
        target = next_status(msg.status, new)
        if target is None:
            return None
        repository.set_message_status(s, msg, target, now, error=f"provider: {error_code}" if error_code else None)
    if target == "failed" and error_code:
        event_type = is_permanent_recipient_failure(error_code)
        if event_type:
            record_message_event(app, message_id, event_type, now)
    return target


# --- inbox -----------------------------------------------------------------------------------------


INBOX_LEASE = "inbox"
# Longer than any flux file takes to ingest; only matters if a worker dies (or loses the
# database) mid-scan: the next scans then wait for the lease to expire.
INBOX_LEASE_SECONDS = 10 * 60


def scan_inbox(app, now: dt.datetime) -> list[dict]:
    """Ingest the inbox, one scan at a time: the scheduler enqueues a scan every run while a
    file is waiting, so a long file would otherwise be read by two workers at once. The lease
    runs on the real clock (it is about live processes, not business time)."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    if not acquire_lease(app, INBOX_LEASE, owner, dt.datetime.now(dt.timezone.utc), INBOX_LEASE_SECONDS):
        log.info("inbox scan skipped: another worker is scanning it")
        return []
    try:
        return _scan_inbox(app, now)
    finally:
        try:
            release_lease(app, INBOX_LEASE, owner)
        except Exception:  # noqa: BLE001 - database gone: the lease expires by itself
            log.warning("inbox lease not released (database unreachable?): it expires in %d s",
                        INBOX_LEASE_SECONDS)


def _scan_inbox(app, now: dt.datetime) -> list[dict]:
    """Ingest each file dropped in the inbox; move it to done/ or failed/ with a report beside it."""
    from .flux import FluxFormatError

    inbox = app.settings.inbox
    inbox.mkdir(parents=True, exist_ok=True)
    results = []
    for path in sorted(p for p in inbox.iterdir() if p.is_file() and not p.name.startswith(".")):
        stamp = now.strftime("%Y%m%dT%H%M%S")
        try:
            report = ingest_file(app, path, now)
            dest_dir, summary = inbox / "done", {"status": "done", **report.as_json(),
                                                 "cases_opened": report.cases_opened}
        except (FluxFormatError, OSError, UnicodeError) as exc:
            dest_dir, summary = inbox / "failed", {"status": "failed", "error": str(exc)}
        except (IntegrityError, DataError) as exc:
            # A row the database refuses (e.g. a NIR already another person's): the file must not stay
            # in the inbox, failing every tick. Only the driver's first line: no SQL, no parameters.
            reason = str(getattr(exc, "orig", None) or type(exc).__name__).strip().splitlines()[0]
            log.error("inbox file %s refused by the database: %s", path.name, reason)
            dest_dir, summary = inbox / "failed", {
                "status": "failed",
                "error": f"refusé par la base de données ({reason}) : corriger le fichier et le déposer à nouveau"}
        dest_dir.mkdir(exist_ok=True)
        dest = dest_dir / f"{stamp}_{path.name}"
        n = 1
        while dest.exists():  # the same name twice within a second: never overwrite
            n += 1
            dest = dest_dir / f"{stamp}-{n}_{path.name}"
        shutil.move(str(path), dest)
        dest.with_name(dest.name + ".report.json").write_text(
            json.dumps({"file": path.name, "at": now.isoformat(), **summary}, ensure_ascii=False, indent=2),
            encoding="utf-8")
        results.append({"file": path.name, **summary})
    return results


# --- reading ---------------------------------------------------------------------------------------


def timeline(app, external_id: str) -> list[dict]:
    with session_scope(app.db_url) as s:
        person = s.execute(select(Person).where(Person.external_id == external_id)).scalar()
        if person is None:
            raise ServiceError(f"personne inconnue : {external_id}")
        case_ids = [c.id for c in person.cases]
        items: list[dict] = []
        for msg in s.execute(select(Message).where(Message.case_id.in_(case_ids))).scalars():
            at = msg.sent_at if msg.sent_at is not None else (msg.not_before if msg.status == PENDING else msg.status_at)
            items.append({"at": at, "kind": "message", "id": msg.id, "case": msg.case_id, "step": msg.step,
                          "channel": msg.channel, "status": msg.status, "reference": msg.reference,
                          "detail": msg.error or msg.cancel_reason})
        for ev in s.execute(select(InboundEvent).where(InboundEvent.person_id == person.id)).scalars():
            items.append({"at": ev.at, "kind": "event", "id": ev.id, "case": ev.case_id, "type": ev.type,
                          "status": ev.status, "detail": ev.note})
        for entry in s.execute(select(AuditEntry).where(AuditEntry.case_id.in_(case_ids),
                                                        AuditEntry.kind.in_(("step", "case")))).scalars():
            if entry.kind == "step":
                items.append({"at": entry.at, "kind": "step", "id": entry.id, "case": entry.case_id,
                              "step": entry.data.get("to_step"), "from": entry.data.get("from_step"),
                              "reason": entry.data.get("reason")})
            elif entry.data.get("action") in ("opened", "closed") or "appointment" in entry.data \
                    or "appointment_outcome" in entry.data or "flag" in entry.data:
                items.append({"at": entry.at, "kind": "case", "id": entry.id, "case": entry.case_id,
                              "detail": {k: v for k, v in entry.data.items()}})
        # Case and step entries are both audit entries: at one instant, their ids give the true order.
        order = {"event": 0, "case": 1, "step": 1, "message": 2}
        items.sort(key=lambda i: (i["at"], order[i["kind"]], i["id"]))
        for i in items:
            i["at"] = i["at"].isoformat()
        return items
