"""Delivery status notifications (RFC 3464): what came back for an e-mail the SMTP server accepted.

An SMTP server may accept a message (the channel records it ``sent``) and the
destination refuse it afterwards: the relay then sends a *delivery status
notification* (DSN, ``multipart/report; report-type=delivery-status``) to the
envelope sender. :func:`parse_bounce` finds, in one DSN, the action and status
of the recipient (``failed`` + ``5.x.x`` is permanent; ``delayed`` is not a
bounce) and the returned message's ``X-Relance-Reference`` and ``Message-ID``
(from its ``message/rfc822`` or ``text/rfc822-headers`` part). Recording them
is :mod:`worker.services.bounces`.
"""
from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import Message as MimeMessage
from email.parser import BytesHeaderParser, HeaderParser

_STATUS_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REFERENCE_HEADER = "X-Relance-Reference"


class NotABounce(ValueError):
    """The file is not a delivery status notification we can use."""


@dataclass(frozen=True)
class Bounce:
    reference: str | None  # X-Relance-Reference of the returned message
    message_id: str | None  # its Message-ID, with angle brackets
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str | None  # e.g. "5.1.1"
    recipient: str | None = None  # Final-Recipient (the address that bounced)

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
    reference = message_id = None
    if returned is not None:
        reference = (returned.get(_REFERENCE_HEADER) or "").strip() or None
        message_id = (returned.get("Message-ID") or "").strip() or None
    if reference is None and message_id is None:
        raise NotABounce("avis sans les en-têtes du message d'origine (X-Relance-Reference, Message-ID)")
    return Bounce(reference=reference, message_id=message_id, action=action, status=status,
                  recipient=recipient)


