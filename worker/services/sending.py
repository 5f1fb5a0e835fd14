"""Messages and sending: claim, re-check, render, send, record; the relay, stuck sends, receipts.

At most once per message: a message is claimed (``pending -> sending``) and
committed before the provider is called; whatever happens after, it is never
sent again by this code (``relance messages retry`` is the ops' decision).
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass

from sqlalchemy import or_, select, update

from worker.adapters.channels.base import (
    OptOutError,
    OutgoingMessage,
    RecipientError,
    RetryableError,
    TechnicalError,
)
from worker.adapters.channels.twilio_callbacks import (
    ACCOUNT_ERROR_CODES,
    ACCOUNT_ERROR_TEXT,
    PARTIALLY_DELIVERED,
    STATUS_MAP,
    error_code_kind,
    is_permanent_recipient_failure,
    next_status,
)
from worker.adapters.store import audit, repository
from worker.adapters.store.models import Case, Message, Person
from worker.adapters.store.session import session_scope
from worker.domain import engine
from worker.domain.model import PENDING, SENDING, MessageView
from worker.domain.postal import AddressError
from worker.services.bounces import mark_email_unusable
from worker.services.cases import EventResult, apply_event, load_case
from worker.services.message_content import build_context

log = logging.getLogger("relance.services")

MAX_SEND_ATTEMPTS = 6
BACKOFF_BASE_SECONDS = 30
BACKOFF_CAP_SECONDS = 3600
# A handset reported unreachable (Twilio 30003): sent again after 30 min, 1 h, 2 h...
# while the message is still valid (RELANCE_TWILIO_VALIDITY_PERIOD after its first hand-over).
UNREACHABLE_RETRY_SECONDS = 1800
UNREACHABLE_RETRY = "retry: unreachable"  # the message's error while it waits to be sent again
# Statuses in which a message may have reached the provider: the only ones a delivery receipt may move.
SENDING_OR_HANDED_OVER = frozenset({SENDING, "sent", "delivered", "failed", "technical-failure"})
NOT_MOBILE = "not_mobile"  # persons.phone_status of a number that cannot take an SMS (a landline)


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
        case = load_case(s, msg.case_id)
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
        case = load_case(s, msg.case_id)
        person = s.get(Person, case.person_id)
        try:
            ctx = build_context(s, app, msg, case, person, now)
            rendered = app.renderer.render(msg.step, msg.channel, ctx)
        except Exception as exc:  # noqa: BLE001 - recorded and surfaced, never swallowed
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
            sender_name=org.name, reply_to=org.email if msg.channel == "email" else None,
            extra={"day": app.calendar.local_date(now).isoformat()})
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
            if msg.sent_at is None or not (msg.error or "").startswith(UNREACHABLE_RETRY):
                msg.sent_at = now  # sent again after an unreachable handset: it keeps its first hand-over
            msg.provider_ref = delivery.provider_ref
            msg.segments = delivery.segments
            if msg.status == SENDING:
                repository.set_message_status(s, msg, delivery.status, now)
            else:
                # A callback got here first (delivered, failed...): never move it backwards.
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
        elif msg.channel == "sms" and error.code in ACCOUNT_ERROR_CODES:
            # The account or the sender, not the person's number: an alert for ops, the phone is kept.
            repository.set_message_status(s, msg, "technical-failure", now, error=_account_alert(error.code))
            log.error("OPS ALERT: message %s: Twilio %s, account or sender problem; the phone is kept",
                      message_id, error.code)
            return SendResult(message_id, "technical-failure", f"account ({error.code})")
        else:
            repository.set_message_status(s, msg, "technical-failure", now, error=f"{error.kind}{code}: {error}"[:500])
            log.error("message %s: technical failure %s", message_id, code)
            return SendResult(message_id, "technical-failure", str(error))
    # A refused number/address: tell the engine (letters carry on).
    event_type = {("sms", "recipient"): "sms_failed", ("sms", "opt_out"): "sms_opt_out"}.get(
        (msg.channel, error.kind))
    if event_type:
        record_message_event(app, message_id, event_type, now)
        if event_type == "sms_failed" and (error.code == NOT_MOBILE or error_code_kind(error.code) == NOT_MOBILE):
            mark_phone_not_mobile(app, message_id, now)
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


def _account_alert(code) -> str:
    return (f"alerte exploitation : Twilio {code} — {ACCOUNT_ERROR_TEXT.get(code, 'problème du compte')} ; "
            "le numéro de la personne n'est pas en cause (remettre en envoi une fois corrigé : "
            "relance messages retry)")


def mark_phone_not_mobile(app, message_id: int, now: dt.datetime) -> None:
    """The provider said the number is a landline: the phone is flagged ``not_mobile``
    (no SMS for this person until the phone changes; letters carry on)."""
    with session_scope(app.db_url) as s:
        msg = s.get(Message, message_id)
        if msg is None:
            return
        case = s.get(Case, msg.case_id)
        person = s.get(Person, case.person_id)
        if person.phone_status != NOT_MOBILE:
            person.phone_status = NOT_MOBILE
            person.updated_at = now
            audit.append(s, at=now, kind="case", case_id=case.id, entity_id=case.id,
                         data={"flag": "phone_not_mobile", "message": msg.id})


def due_messages(app, now: dt.datetime, limit: int,
                 requeue_after: dt.timedelta | None = dt.timedelta(minutes=5),
                 channel: str | None = None) -> list[tuple[int, str]]:
    """The relay: (id, channel) of pending messages that are due and not recently enqueued,
    marked enqueued at ``now``. ``requeue_after=None``: only messages never enqueued (or put
    back by a deferral/retry); ``channel``: that channel only."""
    with session_scope(app.db_url) as s:
        not_queued = Message.enqueued_at.is_(None)
        if requeue_after is not None:
            not_queued = or_(not_queued, Message.enqueued_at < now - requeue_after)
        q = (select(Message.id, Message.channel).where(Message.status == PENDING, Message.not_before <= now,
                                                       not_queued)
             .order_by(Message.not_before, Message.id).limit(limit))
        if channel is not None:
            q = q.where(Message.channel == channel)
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
    """A delivery receipt (Twilio callback): move the message forward only, idempotently.

    Returns the message's new status, or None when nothing changed. By error code
    (twilio_callbacks.error_code_kind): 21408 / 21612, the account's or the
    sender's problem, make it a ``technical-failure`` with an alert for ops (the
    phone is kept); 30003, a handset unreachable for now, puts it back in the
    outbox while the message is valid (``pending``); a landline (21635) flags the
    phone ``not_mobile``; ``partially_delivered`` is recorded on a sent message.
    """
    new = STATUS_MAP.get(status)
    if new is None:
        return None
    kind = error_code_kind(error_code)
    with session_scope(app.db_url) as s:
        # Lock the row first (callbacks for one message may arrive concurrently,
        # or while the sender is still recording the provider's answer).
        s.execute(update(Message).where(Message.id == message_id).values(status=Message.status)
                  .execution_options(synchronize_session=False))
        msg = s.get(Message, message_id)
        if msg is None:
            return None
        if status == PARTIALLY_DELIVERED:
            if msg.status != "sent" or (msg.error or "").startswith("remise partielle"):
                return None
            repository.set_message_status(s, msg, "sent", now, error=(
                "remise partielle (partially_delivered) : une partie seulement du SMS est arrivée"))
            return "sent"
        target = next_status(msg.status, new)
        if target is None:
            return None
        if target == "failed" and kind == "account":
            repository.set_message_status(s, msg, "technical-failure", now, error=_account_alert(error_code))
            log.error("OPS ALERT: message %s: Twilio %s in a receipt, account or sender problem; the phone is kept",
                      message_id, error_code)
            return "technical-failure"
        if target == "failed" and kind == "temporary" and msg.channel == "sms" and msg.status == "sent":
            # (a receipt that beats the sender's own record, still ``sending``, just fails the message)
            wait = dt.timedelta(seconds=UNREACHABLE_RETRY_SECONDS * 2 ** max(0, msg.attempts - 1))
            valid_until = (msg.sent_at or now) + dt.timedelta(seconds=app.settings.twilio_validity_period)
            if msg.attempts < MAX_SEND_ATTEMPTS and now + wait <= valid_until:
                msg.not_before = now + wait
                msg.enqueued_at = msg.claimed_at = None
                msg.provider_ref = None  # the next attempt gets its own; receipts of this one are not applied
                repository.set_message_status(s, msg, PENDING, now,
                                              error=f"{UNREACHABLE_RETRY} ({error_code}, téléphone injoignable)")
                log.info("message %s: handset unreachable (%s), sent again from %s", message_id, error_code,
                         msg.not_before.isoformat())
                return PENDING
            error = f"provider: {error_code} (téléphone injoignable, validité du message dépassée)"
        else:
            error = f"provider: {error_code}" if error_code else None
        repository.set_message_status(s, msg, target, now, error=error)
    if target == "failed" and error_code:
        event_type = is_permanent_recipient_failure(error_code)
        if event_type:
            record_message_event(app, message_id, event_type, now)
            if kind == NOT_MOBILE:
                mark_phone_not_mobile(app, message_id, now)
    return target


def record_sms_callback(app_ctx, message_id: int | None, callback, now: dt.datetime) -> str:
    """A Twilio status callback for one SMS (signature already checked): ``recorded`` / ``ignored`` /
    ``unknown`` / ``conflict``. The receipt must be for an SMS we sent, with its MessageSid."""
    if message_id is None:
        log.warning("twilio callback for a malformed message id ignored")
        return "unknown"
    with session_scope(app_ctx.db_url) as s:
        row = s.execute(select(Message.channel, Message.provider_ref, Message.status)
                        .where(Message.id == message_id)).first()
    if row is None:
        log.warning("twilio callback for unknown message %s (%s) ignored", message_id, callback.twilio_status)
        return "unknown"
    channel, provider_ref, current = row
    if channel != "sms":
        log.warning("twilio callback for message %s, which is not an SMS, ignored", message_id)
        return "unknown"
    # A receipt is only about a message handed to Twilio, or being handed (``sending``: Twilio may call
    # back before the sender has stored its answer), or whose request left without an answer
    # (technical-failure). Not yet sent (pending, cancelled, or refused before Twilio took it): never
    # applied, only logged.
    if current not in SENDING_OR_HANDED_OVER or (current == "failed" and not provider_ref):
        log.warning("twilio callback for message %s in status %s (not sent) ignored: %s", message_id, current,
                    callback.twilio_status[:20])
        return "not_sent"
    if provider_ref and callback.message_sid != provider_ref:
        log.warning("twilio callback for message %s: MessageSid %s does not match %s", message_id,
                    callback.message_sid[:40], provider_ref)
        return "conflict"
    if callback.status is None:
        log.info("twilio callback for message %s: status %r ignored", message_id, callback.twilio_status[:20])
        return "ignored"
    error_code = str(callback.error_code) if callback.error_code is not None else None
    target = record_provider_status(app_ctx, message_id, callback.twilio_status, now, error_code=error_code)
    log.info("twilio callback for message %s: %s (code %s) -> %s", message_id, callback.twilio_status,
             error_code, target or "unchanged")
    return "recorded" if target else "ignored"
