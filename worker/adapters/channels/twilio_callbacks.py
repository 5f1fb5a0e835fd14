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
   (``"sms_failed"``) or the opt-out recorded (``"sms_opt_out"``), and
   :func:`error_code_kind` whether it is the account's problem (ops), a
   landline, or a handset unreachable for now (send again).

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
    # Some segments of a long SMS reached the handset, not all: recorded on the
    # message (see PARTIALLY_DELIVERED), neither a delivery nor a failure.
    "partially_delivered": "sent",
}
PARTIALLY_DELIVERED = "partially_delivered"

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

# Twilio error codes, as Twilio's error dictionary describes them (checked
# against these pages):
#
# * 21408 https://www.twilio.com/docs/api/errors/21408 "Message blocked:
#   permissions disabled for the destination region": the destination's
#   country code is disabled in the account's Messaging Geo Permissions (which
#   treat +262, +590, +594 and +596 apart from +33; see also
#   https://support.twilio.com/hc/en-us/articles/223181108). An account setting.
# * 21612 https://www.twilio.com/docs/api/errors/21612 "Message cannot be sent
#   with the current combination of 'To' and/or 'From' parameters": sender ID
#   restrictions of the destination country or network, an alphanumeric sender
#   not supported or not registered there, no connectivity to the carrier. The
#   sender or the route, not the person's number.
# * 21635 https://www.twilio.com/docs/api/errors/21635 "'To' number cannot be a
#   landline": the phone is not a mobile.
# * 30003 https://www.twilio.com/docs/api/errors/30003 "Unreachable destination
#   handset": powered off, no signal, roaming, "otherwise temporarily
#   unreachable"; Twilio's first suggested solution is to retry.
# * 30006 https://www.twilio.com/docs/api/errors/30006 "Landline or unreachable
#   carrier": do not retry the same SMS to that destination.
# * ``partially_delivered`` is a value of the Message resource's status enum
#   (twilio-python ``MessageInstance.Status.PARTIALLY_DELIVERED``), not
#   described on the Message resource page (twilio/twilio-node issue 607).

# The account or the sender cannot reach this destination: ops must act (alert,
# technical-failure); the person's phone is kept.
ACCOUNT_ERROR_CODES: frozenset[int] = frozenset({21408, 21612})
# The number is a landline: the phone is flagged "not_mobile" (no SMS, letters carry on).
NOT_MOBILE_CODES: frozenset[int] = frozenset({21635})
# The handset is temporarily unreachable: the message is sent again while still valid.
TEMPORARY_DELIVERY_CODES: frozenset[int] = frozenset({30003})
# ErrorCodes of a failed/undelivered callback that say the number itself is
# unusable for SMS (invalid, not a mobile, unknown handset, landline): the
# phone is flagged, letters carry on.
PERMANENT_SMS_FAILURE_CODES: frozenset[int] = frozenset({30005, 30006, 21211, 21614}) | NOT_MOBILE_CODES
# The recipient replied STOP (Twilio blocks every later message to them).
OPT_OUT_CODES: frozenset[int] = frozenset({21610})

# For ops (French: it is shown by ``relance messages list``), never the number.
ACCOUNT_ERROR_TEXT: dict[int, str] = {
    21408: ("destination non autorisée pour le compte Twilio (Geo Permissions de Messaging : "
            "activer l'indicatif du pays ou du DROM)"),
    21612: ("combinaison expéditeur / destinataire refusée par Twilio (expéditeur alphanumérique non "
            "accepté ou non enregistré pour cette destination, ou pas de route)"),
}


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
    for a number that cannot take SMS (30005 unknown handset, 30006
    landline/unreachable carrier, 21211 invalid number, 21614 not a mobile,
    21635 landline); ``None`` otherwise: the message is recorded as failed but
    the phone is not flagged (30003 unreachable handset, usually temporary;
    carrier filtering 30007, blocked 30004, queue overflow, expired validity
    period; 21408 / 21612, the account's or the sender's problem, ...).
    Accepts ints or strings.
    """
    code = _error_code(error_code)
    if code is None:
        return None
    if code in OPT_OUT_CODES:
        return "sms_opt_out"
    if code in PERMANENT_SMS_FAILURE_CODES:
        return "sms_failed"
    return None


def error_code_kind(error_code: Any) -> str | None:
    """What a Twilio error code (API refusal or failed callback) says about whom:
    ``"account"`` (ops must act, the phone is kept), ``"not_mobile"``,
    ``"temporary"`` (send again while valid), ``"opt_out"``, ``"unusable"``
    (the number), or None (the message only)."""
    code = _error_code(error_code)
    if code is None:
        return None
    if code in ACCOUNT_ERROR_CODES:
        return "account"
    if code in NOT_MOBILE_CODES:
        return "not_mobile"
    if code in TEMPORARY_DELIVERY_CODES:
        return "temporary"
    if code in OPT_OUT_CODES:
        return "opt_out"
    if code in PERMANENT_SMS_FAILURE_CODES:
        return "unusable"
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
