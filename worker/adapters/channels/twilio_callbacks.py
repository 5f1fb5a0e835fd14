"""Pure helpers for Twilio message status callbacks.

The HTTP route (FastAPI) lives elsewhere; it should:

1. rebuild the exact public URL Twilio called with :func:`status_callback_url`
   (``settings.status_callback_base_url`` + the message id of the path) rather
   than trust ``request.url``, which is the internal URL behind a proxy;
2. reject the request (HTTP 403) unless :func:`verify_signature` is True;
3. parse the form with :func:`parse_status_callback`, move the message status
   with :func:`next_status` (``None``: nothing to do, answer 200 anyway so
   Twilio does not retry), and for a failed message ask
   :func:`is_permanent_recipient_failure` whether the phone must be flagged
   (``"sms_failed"``) or the opt-out recorded (``"sms_opt_out"``).

Twilio may deliver callbacks more than once and out of order: every helper
here is idempotent and :func:`next_status` never moves a status backwards.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twilio.request_validator import RequestValidator

SIGNATURE_HEADER = "X-Twilio-Signature"
STATUS_CALLBACK_PATH = "/twilio/status/{message_id}"

# Twilio message status -> our message status.
# Our lifecycle: pending -> sending -> sent -> delivered | failed | technical-failure.
STATUS_MAP: dict[str, str] = {
    "queued": "sent",
    "accepted": "sent",
    "scheduled": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}

# Rank of our statuses: a status only ever moves to a strictly higher rank.
# "delivered" is the top: a late delivery receipt after an "undelivered" one is
# proof the person got the text, and nothing replaces a delivery.
STATUS_RANK: dict[str, int] = {
    "pending": 0,
    "sending": 1,
    "sent": 2,
    "failed": 3,
    "technical-failure": 3,
    "delivered": 4,
}

# ErrorCodes of a failed/undelivered callback that say the number itself is
# unusable for SMS (invalid, not a mobile, unknown/unreachable handset,
# landline): the phone is flagged, letters carry on.
PERMANENT_SMS_FAILURE_CODES: frozenset[int] = frozenset({30003, 30005, 30006, 21211, 21614})
# The recipient replied STOP (Twilio blocks every later message to them).
OPT_OUT_CODES: frozenset[int] = frozenset({21610})


def status_callback_url(base_url: str, message_id: int | str) -> str:
    """The StatusCallback URL for one message: ``{base}/twilio/status/{message_id}``."""
    return base_url.rstrip("/") + STATUS_CALLBACK_PATH.format(message_id=message_id)


def map_status(twilio_status: str | None) -> str | None:
    """Our status for a Twilio ``MessageStatus`` (``None`` if unknown, e.g. "receiving")."""
    if not twilio_status:
        return None
    return STATUS_MAP.get(twilio_status.strip().lower())


def next_status(current: str, incoming: str) -> str | None:
    """The status a message should move to, or ``None`` to leave it unchanged.

    ``current`` is our stored status; ``incoming`` is a Twilio ``MessageStatus``
    (mapped through :data:`STATUS_MAP`; note Twilio's "sending" means our
    "sent") or, if Twilio has no such status, one of our own statuses.
    Never moves backwards (sent after delivered, failed after delivered are
    ignored), equal ranks keep the current status, and an unknown status is
    ignored, so replays and out-of-order callbacks are harmless.
    """
    target = map_status(incoming)
    if target is None and incoming in STATUS_RANK:
        target = incoming
    if target is None or target == current:
        return None
    current_rank = STATUS_RANK.get(current, -1)
    if STATUS_RANK[target] <= current_rank:
        return None
    return target


def verify_signature(
    auth_token: str, url: str, params: Mapping[str, Any] | None, signature: str | None
) -> bool:
    """True if ``signature`` (the X-Twilio-Signature header) signs ``url`` + ``params``.

    ``url`` must be the full public URL Twilio requested (scheme, host, path
    and query string); ``params`` the POSTed form fields (a dict, or a
    multi-dict such as Starlette's ``FormData``). False when the signature or
    the token is missing.
    """
    if not signature or not auth_token:
        return False
    try:
        return bool(RequestValidator(auth_token).validate(url, params if params is not None else {}, signature))
    except Exception:  # malformed input is an invalid signature, never a 500
        return False


def _error_code(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def is_permanent_recipient_failure(error_code: Any) -> str | None:
    """The engine event a failed/undelivered callback's ``ErrorCode`` implies.

    ``"sms_opt_out"`` for 21610 (the recipient unsubscribed); ``"sms_failed"``
    for a number that cannot take SMS (30003 unreachable handset, 30005 unknown
    handset, 30006 landline/unreachable carrier, 21211 invalid number, 21614
    not a mobile); ``None`` otherwise: the message is recorded as failed but
    the phone is not flagged (carrier filtering 30007, blocked 30004, queue
    overflow, expired validity period, ...). Accepts ints or strings.
    """
    code = _error_code(error_code)
    if code is None:
        return None
    if code in OPT_OUT_CODES:
        return "sms_opt_out"
    if code in PERMANENT_SMS_FAILURE_CODES:
        return "sms_failed"
    return None


@dataclass(frozen=True)
class StatusCallback:
    message_sid: str
    twilio_status: str
    status: str | None  # our status (STATUS_MAP), None if unknown
    error_code: int | None
    account_sid: str | None


def parse_status_callback(params: Mapping[str, Any]) -> StatusCallback:
    """Read the fields we use from a status callback form (no phone numbers kept)."""
    twilio_status = str(params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
    return StatusCallback(
        message_sid=str(params.get("MessageSid") or params.get("SmsSid") or ""),
        twilio_status=twilio_status,
        status=map_status(twilio_status),
        error_code=_error_code(params.get("ErrorCode")),
        account_sid=params.get("AccountSid"),
    )
