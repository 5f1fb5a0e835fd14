"""Delivery status notifications (RFC 3464): what came back for an e-mail the SMTP server accepted.

An SMTP server may accept a message (the channel records it ``sent``) and the
destination refuse it afterwards: the relay then sends a *delivery status
notification* (DSN, ``multipart/report; report-type=delivery-status``) to the
envelope sender. :func:`parse_bounce` finds, in one DSN, the action and status
of the recipient (``failed`` + ``5.x.x`` is permanent; ``delayed`` is not a
bounce) and the returned message's ``X-Relance-Reference``, ``X-Relance-Token``
and ``Message-ID`` (from its ``message/rfc822`` or ``text/rfc822-headers``
part), or the reference and token of the VERP envelope sender the notice was
sent back to. Recording them is :mod:`worker.services.bounces`.

Anyone can write a notice naming a guessable reference (``RL-000001-0000003``).
Each e-mail therefore carries an unguessable token, an HMAC of its reference
under a key from the settings (:func:`bounce_token`), in a header and, with
VERP, in its envelope sender (:func:`verp_address`); only a notice that gives
it back for that reference is applied (:func:`verify_bounce_token`). The
addressee sees the token of their own e-mail, and nothing else.
"""
from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import re
from dataclasses import dataclass
from email.message import Message as MimeMessage
from email.parser import BytesHeaderParser, HeaderParser

_STATUS_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REFERENCE_HEADER = "X-Relance-Reference"
TOKEN_HEADER = "X-Relance-Token"
TOKEN_CHARS = 32  # hex digits of HMAC-SHA256 kept: 128 bits
# The envelope sender of an e-mail with VERP: <local>+<reference>.<token>@<domain>.
_VERP_RE = re.compile(r"\+(RL-\d{6,}-\d{7,})\.([0-9a-f]{%d})@" % TOKEN_CHARS, re.IGNORECASE)
# Where a notice names the address it was sent back to (the envelope sender).
_ENVELOPE_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To")


def bounce_token(key: bytes, reference: str) -> str:
    """The token of the e-mail ``reference``: HMAC-SHA256 under ``key``, 32 hex digits."""
    digest = hmac.new(key, b"relance-bounce:" + reference.strip().upper().encode(), hashlib.sha256)
    return digest.hexdigest()[:TOKEN_CHARS]


def verify_bounce_token(key: bytes, reference: str | None, token: str | None) -> bool:
    """True when ``token`` is the token of ``reference`` under ``key``."""
    if not reference or not token:
        return False
    return hmac.compare_digest(bounce_token(key, reference), token.strip().lower())


def verp_address(from_address: str, reference: str, token: str) -> str | None:
    """The envelope sender that brings a notice back with the reference and token
    (``relance+RL-000001-0000003.<token>@example.org``); None if its local part
    would exceed 64 characters (the header carries the token then)."""
    local, sep, domain = from_address.rpartition("@")
    if not sep or not local or not domain:
        return None
    local = f"{local}+{reference.strip().upper()}.{token}"
    return f"{local}@{domain}" if len(local) <= 64 else None


class NotABounce(ValueError):
    """The file is not a delivery status notification we can use."""


@dataclass(frozen=True)
class Bounce:
    reference: str | None  # X-Relance-Reference of the returned message
    message_id: str | None  # its Message-ID, with angle brackets
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str | None  # e.g. "5.1.1"
    recipient: str | None = None  # Final-Recipient (the address that bounced)
    token: str | None = None  # X-Relance-Token of the returned message, or of the VERP envelope sender

    @property
    def permanent(self) -> bool:
        return self.action == "failed" and (self.status is None or self.status.startswith("5."))


def _headers_of_returned_message(report: MimeMessage) -> MimeMessage | None:
    for part in report.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload:
                return payload[0]
            if isinstance(payload, MimeMessage):
                return payload
        if ctype in ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers"):
            raw = part.get_payload(decode=True) or b""
            return BytesHeaderParser().parsebytes(raw)
    return None


def _recipient_fields(report: MimeMessage) -> list[MimeMessage]:
    for part in report.walk():
        if part.get_content_type() not in ("message/delivery-status", "message/global-delivery-status"):
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload:
            # first block: per-message fields; then one block per recipient
            return [block for block in payload[1:] if isinstance(block, MimeMessage)]
        # not split into blocks by the parser: parse the text ourselves
        text = payload if isinstance(payload, str) else (part.get_payload(decode=True) or b"").decode(
            "utf-8", "replace")
        blocks = [b for b in re.split(r"\r?\n\s*\r?\n", text.strip()) if b.strip()]
        return [HeaderParser().parsestr(block) for block in blocks[1:]]
    return []


def parse_bounce(raw: bytes) -> Bounce:
    """The bounce in one DSN file; :class:`NotABounce` with the reason otherwise."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if message.get_content_type() != "multipart/report":
        raise NotABounce(f"pas un avis de non-remise (type {message.get_content_type()})")
    recipients = _recipient_fields(message)
    if not recipients:
        raise NotABounce("avis sans partie delivery-status")
    chosen = next((r for r in recipients if (r.get("Action") or "").strip().lower() == "failed"),
                  recipients[0])
    action = (chosen.get("Action") or "").strip().lower() or "unknown"
    match = _STATUS_RE.search(chosen.get("Status") or "")
    status = ".".join(match.groups()) if match else None
    final = (chosen.get("Final-Recipient") or chosen.get("Original-Recipient") or "").strip()
    recipient = final.split(";", 1)[-1].strip().strip("<>") or None
    returned = _headers_of_returned_message(message)
    reference = message_id = token = None
    if returned is not None:
        reference = (returned.get(_REFERENCE_HEADER) or "").strip() or None
        message_id = (returned.get("Message-ID") or "").strip() or None
        token = (returned.get(TOKEN_HEADER) or "").strip() or None
    verp = _verp(message)
    if verp is not None and (reference is None or (token is None and reference.upper() == verp[0])):
        reference, token = verp
    if reference is None and message_id is None:
        raise NotABounce("avis sans les en-têtes du message d'origine (X-Relance-Reference, Message-ID)")
    return Bounce(reference=reference, message_id=message_id, action=action, status=status,
                  recipient=recipient, token=token)


def _verp(message: MimeMessage) -> tuple[str, str] | None:
    """(reference, token) of the VERP address the notice was sent back to, if any."""
    for name in _ENVELOPE_HEADERS:
        for value in message.get_all(name) or ():
            match = _VERP_RE.search(str(value))
            if match:
                return match.group(1).upper(), match.group(2).lower()
    return None


