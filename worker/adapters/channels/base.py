"""The one small interface every channel backend implements.

A backend receives an :class:`OutgoingMessage` (already rendered, addressed and
identified) and either returns a :class:`Delivery` (the provider accepted it, or
the local backend wrote it) or raises one of the :class:`ChannelError`
subclasses below. The send service maps each error class onto the message
status lifecycle:

* :class:`RetryableError`  -> stays ``sending``/``pending``, retried with backoff
  (rate limiting, 5xx, network errors, SMTP 4xx);
* :class:`RecipientError`  -> ``failed`` (permanent); the phone/e-mail is flagged
  and the engine is told (``sms_failed``): letters carry on;
* :class:`OptOutError`     -> ``failed``; the person's opt-out is recorded
  (``sms_opt_out``);
* :class:`TechnicalError`  -> ``technical-failure``; visible to ops, not retried. Also
  what the account or the sender cannot do (Twilio 21408 Geo Permissions, 21612
  sender/route): an alert for ops, the person's phone is kept.

``RecipientError`` with ``code="not_mobile"`` (or Twilio 21635) means a landline:
the phone is flagged ``not_mobile`` rather than just failed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class OutgoingMessage:
    message_id: int
    reference: str  # printed on letters, sent as metadata; never contains PII
    channel: str  # "sms" | "email" | "letter"
    step: str
    organisation: str  # organisation code (e.g. CDAS-REDON)
    case_reference: str
    to: str  # E.164 phone, e-mail address, or the postal block joined by "\n"
    subject: str | None
    text: str  # SMS body, e-mail text part, or letter plain text (for search)
    html: str | None = None  # e-mail HTML part, or the letter HTML
    postage: str | None = None  # letters: "simple" | "lrar"
    sender_name: str | None = None  # organisation display name
    reply_to: str | None = None  # e-mails: the organisation's mailbox, where answers go
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Delivery:
    status: str  # "sent" (handed to provider / written) or "delivered"
    provider_ref: str | None = None
    segments: int | None = None
    detail: str | None = None


class ChannelError(Exception):
    kind = "technical"

    def __init__(self, message: str, code: str | int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class RetryableError(ChannelError):
    kind = "retry"


class RecipientError(ChannelError):
    kind = "recipient"


class OptOutError(ChannelError):
    kind = "opt_out"


class TechnicalError(ChannelError):
    kind = "technical"


class Channel(Protocol):
    name: str  # "sms" | "email" | "letter"
    is_local: bool  # local outbox backends allow simulated time (tick --now)

    def send(self, message: OutgoingMessage) -> Delivery:
        ...
