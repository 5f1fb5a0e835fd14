"""What a provider's answer does to a message: sent, retried with backoff, failed (and the case told),
technical failure; shared by the batched sends (:mod:`worker.services.send_batch`) and the receipts
(:mod:`worker.services.sending`)."""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session

from worker.adapters.channels.base import Delivery, OptOutError, RecipientError, RetryableError
from worker.adapters.channels.twilio_callbacks import (
    ACCOUNT_ERROR_CODES,
    ACCOUNT_ERROR_TEXT,
    error_code_kind,
    next_status,
)
from worker.adapters.store import audit, repository
from worker.adapters.store.models import Case, Message, Person
from worker.adapters.store.session import session_scope
from worker.domain.model import PENDING, SENDING
from worker.services.bounces import mark_email_unusable
from worker.services.cases import EventResult, apply_event

log = logging.getLogger("relance.services")

MAX_SEND_ATTEMPTS = 6
BACKOFF_BASE_SECONDS = 30
BACKOFF_CAP_SECONDS = 3600
# A handset reported unreachable (Twilio 30003): sent again after 30 min, 1 h, 2 h...
# while the message is still valid (RELANCE_TWILIO_VALIDITY_PERIOD after its first hand-over).
UNREACHABLE_RETRY_SECONDS = 1800
UNREACHABLE_RETRY = "retry: unreachable"  # the message's error while it waits to be sent again
NOT_MOBILE = "not_mobile"  # persons.phone_status of a number that cannot take an SMS (a landline)


@dataclass
class SendResult:
    message_id: int
    outcome: str  # sent | deferred | cancelled | skipped | retry | failed | technical-failure
    detail: str = ""


@dataclass
class FollowUp:
    """What a refused number or address tells the case, after the outcome's transaction."""

    message_id: int
    case_id: int
    channel: str
    kind: str  # recipient | opt_out
    code: object = None


def _backoff(attempts: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1)))


def account_alert(code) -> str:
    return (f"alerte exploitation : Twilio {code} — {ACCOUNT_ERROR_TEXT.get(code, 'problème du compte')} ; "
            "le numéro de la personne n'est pas en cause (remettre en envoi une fois corrigé : "
            "relance messages retry)")


def record_outcome(s: Session, msg: Message, delivery: Delivery | None, error, template: tuple,
                   now: dt.datetime, recipient: str | None = None) -> tuple[SendResult, FollowUp | None, int | None]:
    """Record the provider's answer on ``msg`` (its row locked by the caller; a receipt may have moved
    it already), and where it was sent (``recipient``, whatever the answer). Returns the result, what
    to tell the case afterwards, and the person to mark contacted."""
    message_id = msg.id
    msg.template_name, msg.template_version, msg.content_hash = template
    if recipient:
        msg.recipient = recipient
    if delivery is not None:
        if msg.sent_at is None or not (msg.error or "").startswith(UNREACHABLE_RETRY):
            msg.sent_at = now  # sent again after an unreachable handset: it keeps its first hand-over
        msg.segments = delivery.segments
        # A receipt got here first and said the handset is unreachable: the message already waits to be
        # sent again, without a provider ref (later receipts of this attempt are not applied); keep that.
        rescheduled = msg.status == PENDING and (msg.error or "").startswith(UNREACHABLE_RETRY)
        if not rescheduled:
            msg.provider_ref = delivery.provider_ref
        if msg.status == SENDING:
            repository.set_message_status(s, msg, delivery.status, now)
        else:
            # A callback got here first (delivered, failed...): never move it backwards.
            target = None if rescheduled else next_status(msg.status, delivery.status)
            if target is not None:
                repository.set_message_status(s, msg, target, now)
        audit.append(s, at=now, kind="message", case_id=msg.case_id, entity_id=msg.id,
                     data={"step": msg.step, "channel": msg.channel, "sent": True,
                           "template_version": template[1], "content_hash": template[2]})
        return SendResult(message_id, "sent", delivery.provider_ref or ""), None, msg.case_id
    code = f" ({error.code})" if error.code is not None else ""
    if isinstance(error, RetryableError) and error.code == "read_timeout":
        # The request left: the provider may have accepted it. Never resend blindly.
        repository.set_message_status(s, msg, "technical-failure", now,
                                      error="délai de réponse dépassé après envoi : vérifier chez le fournisseur")
        return SendResult(message_id, "technical-failure", "read_timeout"), None, None
    if isinstance(error, RetryableError) and msg.attempts < MAX_SEND_ATTEMPTS:
        wait = _backoff(msg.attempts)
        if error.retry_after:
            wait = max(wait, dt.timedelta(seconds=float(error.retry_after)))
        msg.not_before = now + wait
        msg.enqueued_at = None
        repository.set_message_status(s, msg, PENDING, now, error=f"retry: {error.kind}{code}")
        return SendResult(message_id, "retry", f"{error.kind}{code}"), None, None
    if isinstance(error, RetryableError):
        repository.set_message_status(s, msg, "technical-failure", now, error=f"gave up: {error.kind}{code}")
        return SendResult(message_id, "technical-failure", "too many attempts"), None, None
    if isinstance(error, (RecipientError, OptOutError)):
        repository.set_message_status(s, msg, "failed", now, error=f"{error.kind}{code}")
        follow = FollowUp(message_id, msg.case_id, msg.channel, error.kind, error.code)
        return SendResult(message_id, "failed", f"{error.kind}{code}"), follow, None
    if msg.channel == "sms" and error.code in ACCOUNT_ERROR_CODES:
        # The account or the sender, not the person's number: an alert for ops, the phone is kept.
        repository.set_message_status(s, msg, "technical-failure", now, error=account_alert(error.code))
        log.error("OPS ALERT: message %s: Twilio %s, account or sender problem; the phone is kept",
                  message_id, error.code)
        return SendResult(message_id, "technical-failure", f"account ({error.code})"), None, None
    repository.set_message_status(s, msg, "technical-failure", now, error=f"{error.kind}{code}: {error}"[:500])
    log.error("message %s: technical failure %s", message_id, code)
    return SendResult(message_id, "technical-failure", str(error)), None, None


def apply_follow_up(app, follow: FollowUp, now: dt.datetime) -> None:
    """A refused number/address: tell the engine (letters carry on), flag a landline or an address."""
    event_type = {("sms", "recipient"): "sms_failed", ("sms", "opt_out"): "sms_opt_out"}.get(
        (follow.channel, follow.kind))
    if event_type:
        record_message_event(app, follow.message_id, event_type, now)
        if event_type == "sms_failed" and (follow.code == NOT_MOBILE or error_code_kind(follow.code) == NOT_MOBILE):
            mark_phone_not_mobile(app, follow.message_id, now)
    elif follow.channel == "email":
        mark_email_unusable(app, follow.case_id, now)


def record_message_event(app, message_id: int, event_type: str, now: dt.datetime) -> EventResult | None:
    with session_scope(app.db_url) as s:
        msg = s.get(Message, message_id)
        if msg is None:
            return None
        external_id = s.get(Person, s.get(Case, msg.case_id).person_id).external_id
    return apply_event(app, external_id=external_id, type=event_type, now=now, source="provider",
                       idempotency_key=f"msg:{message_id}:{event_type}", message_id=message_id)


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
