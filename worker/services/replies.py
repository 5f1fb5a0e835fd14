"""Replies from beneficiaries: e-mails that reach the bounce mailbox and are not bounces.

Every e-mail to a beneficiary carries ``Reply-To`` = its organisation's mailbox (``email`` in
``config/territory.yaml``), so most answers go there directly. Some mail clients answer the
envelope sender anyway, and then the answer lands in the bounce Maildir
(``RELANCE_BOUNCE_MAILDIR``). There it is **a reply, not a bounce**: :func:`record_reply` finds
the case it answers (``In-Reply-To`` / ``References`` naming one of our e-mails, a reference
``RL-…`` in the subject, or the sender's address known for one person), forwards the whole
message to that organisation's mailbox (SMTP; with the local backends, a ``.eml`` file under
``<outbox>/replies/``), and records it so that the agenda and the digest show "réponse reçue — à
lire" until an agent marks it read (``relance replies read ID``). Automatic answers (out of
office: ``Auto-Submitted``) are counted, not forwarded. A reply naming no known case goes to the
Département's mailbox.

The text of a reply is never stored in the database nor logged: only who it concerns, where it
was forwarded and when.
"""
from __future__ import annotations

import datetime as dt
import email
import email.policy
import email.utils
import hashlib
import logging
import os
import re
from dataclasses import dataclass

from sqlalchemy import func, select

from worker.adapters.channels.base import ChannelError
from worker.adapters.store import audit
from worker.adapters.store.models import Case, InboundEvent, Message, Person
from worker.adapters.store.session import session_scope
from worker.services.errors import ServiceError

log = logging.getLogger("relance.replies")

REPLY = "reply_received"  # the InboundEvent type of a reply (not an engine event: nothing changes)
_REFERENCE_RE = re.compile(r"RL-\d{6,}(?:-\d{7,})?", re.IGNORECASE)
_MESSAGE_ID_RE = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True)
class Reply:
    id: int
    received_at: dt.datetime
    case_id: int | None
    case_reference: str | None
    external_id: str | None
    organisation: str | None
    forwarded_to: str
    automatic: bool
    status: str  # received (to read) | read


def is_reply(raw: bytes) -> bool:
    """A message that is not a delivery status notification (a person wrote it, or an auto-reply)."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    return message.get_content_type() != "multipart/report"


def _find_case(s, message) -> tuple[Case | None, str]:
    """(case, how it was found) for a reply."""
    ids = _MESSAGE_ID_RE.findall(" ".join(str(message.get(h) or "") for h in ("In-Reply-To", "References")))
    if ids:
        msg = s.execute(select(Message).where(Message.channel == "email", Message.provider_ref.in_(ids))
                        .order_by(Message.id.desc()).limit(1)).scalar()
        if msg is not None:
            return s.get(Case, msg.case_id), "in_reply_to"
    for ref in _REFERENCE_RE.findall(str(message.get("Subject") or "")):
        parsed = Message.parse_reference(ref)
        case_id = parsed[0] if parsed else int(ref.upper().removeprefix("RL-"))
        if case_id < 2**63 and (case := s.get(Case, case_id)) is not None:
            return case, "subject_reference"
    sender = email.utils.parseaddr(str(message.get("From") or ""))[1].strip().lower()
    if sender:
        persons = s.execute(select(Person).where(func.lower(Person.email) == sender).limit(2)).scalars().all()
        if len(persons) == 1 and persons[0].cases:
            return max(persons[0].cases, key=lambda c: c.id), "sender"
    return None, "unknown"


def _forward(app, to: str, subject: str, note: str, raw: bytes, reference: str, now: dt.datetime) -> None:
    settings = app.settings
    if settings.email_backend == "smtp":
        from worker.adapters.channels.smtp_email import send_email

        send_email(settings.smtp_settings(), to=to, subject=subject, text=note, reference=reference,
                   sender_name=settings.smtp_from_name or "Relance", attachment=raw)
        return
    folder = settings.outbox / "replies"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{now.astimezone(dt.timezone.utc):%Y%m%dT%H%M%S}_{reference}_{hashlib.sha256(raw).hexdigest()[:12]}.eml"
    fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(f"To: {to}\nSubject: {subject}\n\n{note}\n\n".encode("utf-8") + raw)


def record_reply(app, raw: bytes, now: dt.datetime) -> tuple[str, str]:
    """Forward and record one reply found in the bounce mailbox; (outcome, detail) as bounces do."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    digest = hashlib.sha256(raw).hexdigest()
    key = f"reply:{digest}"
    automatic = (str(message.get("Auto-Submitted") or "no").strip().lower() != "no"
                 or bool(message.get("X-Autoreply")) or str(message.get("Precedence") or "").lower() == "auto_reply")
    with session_scope(app.db_url) as s:
        if s.execute(select(InboundEvent.id).where(InboundEvent.idempotency_key == key)).first():
            return "duplicate", "réponse déjà transmise"
        case, how = _find_case(s, message)
        if case is not None:
            org = app.territory.organisations.get(case.organisation)
            to = org.email if org else app.territory.department.email
            person_id, case_id, case_ref, org_code = case.person_id, case.id, case.reference, case.organisation
        else:
            to, person_id, case_id, case_ref, org_code = app.territory.department.email, None, None, None, None
    reference = case_ref or "RL-INCONNU"
    if not automatic:
        subject = f"[Relance] Réponse d'un bénéficiaire — dossier {reference} — à lire"
        note = (f"Une personne a répondu à un message de Relance (dossier {reference}). "
                "Sa réponse est jointe. Lisez-la et donnez-y suite ; puis marquez-la lue "
                "(relance replies read N) pour qu'elle quitte l'agenda."
                if case_ref else
                "Une réponse est arrivée sans référence de dossier reconnue. Elle est jointe : "
                "retrouvez la personne et donnez-y suite.")
        try:
            _forward(app, to, subject, note, raw, reference, now)
        except ChannelError as exc:  # the file stays in new/: forwarded at the next scan
            log.warning("reply for %s not forwarded yet (%s): retried at the next scan", reference,
                        type(exc).__name__)
            return "retry", f"réponse non transmise pour l'instant ({type(exc).__name__}) : nouvel essai au prochain passage"
    with session_scope(app.db_url) as s:
        record = InboundEvent(idempotency_key=key, person_id=person_id, case_id=case_id, type=REPLY, at=now,
                              recorded_at=now, source="mail", status="read" if automatic else "received",
                              payload={"forwarded_to": None if automatic else to, "found_by": how,
                                       "automatic": automatic, "organisation": org_code})
        s.add(record)
        s.flush()
        audit.append(s, at=now, kind="event", case_id=case_id, entity_id=record.id,
                     data={"type": REPLY, "found_by": how, "automatic": automatic, "forwarded": not automatic})
    log.info("reply for %s (%s)%s", reference, how, ": automatic, not forwarded" if automatic else ": forwarded")
    return "reply", reference


def pending(app, organisation: str | None = None) -> list[Reply]:
    """The replies no agent has marked read yet (oldest first)."""
    with session_scope(app.db_url) as s:
        q = (select(InboundEvent, Case, Person).outerjoin(Case, Case.id == InboundEvent.case_id)
             .outerjoin(Person, Person.id == InboundEvent.person_id)
             .where(InboundEvent.type == REPLY, InboundEvent.status == "received").order_by(InboundEvent.at))
        out = []
        for ev, case, person in s.execute(q):
            org = case.organisation if case is not None else None
            if organisation and org != organisation:
                continue
            out.append(Reply(ev.id, ev.at, ev.case_id, case.reference if case else None,
                             person.external_id if person else None, org, ev.payload.get("forwarded_to") or "",
                             bool(ev.payload.get("automatic")), ev.status))
        return out


def mark_read(app, reply_id: int, now: dt.datetime) -> None:
    with session_scope(app.db_url) as s:
        ev = s.get(InboundEvent, reply_id) if 0 < reply_id < 2**63 else None
        if ev is None or ev.type != REPLY:
            raise ServiceError(f"réponse inconnue : {reply_id}")
        if ev.status == "read":
            return
        ev.status = "read"
        audit.append(s, at=now, kind="event", case_id=ev.case_id, entity_id=ev.id,
                     data={"type": REPLY, "status": "read"})
