"""Messages and sending: claim, re-check, render, send, record; the relay, stuck sends, receipts.

At most once per message: a message is claimed (``pending -> sending``) and
committed before the provider is called; whatever happens after, it is never
sent again by this code (``relance messages retry`` is the ops' decision).
"""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import or_, select, update

from worker.adapters.channels.twilio_callbacks import (
    PARTIALLY_DELIVERED,
    STATUS_MAP,
    error_code_kind,
    is_permanent_recipient_failure,
    next_status,
)
from worker.adapters.store import repository
from worker.adapters.store.models import Message
from worker.adapters.store.session import session_scope
from worker.domain.model import PENDING, SENDING
from worker.services.send_batch import send_messages
from worker.services.send_outcome import (  # noqa: F401 - re-exported: what callers used from here
    BACKOFF_BASE_SECONDS,
    BACKOFF_CAP_SECONDS,
    MAX_SEND_ATTEMPTS,
    NOT_MOBILE,
    UNREACHABLE_RETRY,
    UNREACHABLE_RETRY_SECONDS,
    SendResult,
    _backoff,
    account_alert,
    mark_phone_not_mobile,
    record_message_event,
)

log = logging.getLogger("relance.services")

# Statuses in which a message may have reached the provider: the only ones a delivery receipt may move.
SENDING_OR_HANDED_OVER = frozenset({SENDING, "sent", "delivered", "failed", "technical-failure"})
_account_alert = account_alert


def send_message(app, message_id: int, now: dt.datetime) -> SendResult:
    """Claim, re-check, render and send one message. At most once, whatever happens
    (a batch of one: :func:`worker.services.send_batch.send_messages`)."""
    return send_messages(app, [message_id], now)[0]


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
        if target == "failed" and kind == "temporary" and msg.channel == "sms" and msg.status in ("sent", SENDING):
            # (a receipt may beat the sender's own record, still ``sending``: the sender then keeps this)
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
