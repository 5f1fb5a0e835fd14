"""E-mail bounces: the delivery status notifications that come back later.

An SMTP server may accept a message (the channel records it ``sent``) and the
destination refuse it afterwards: the relay then sends a *delivery status
notification* (DSN, RFC 3464: ``multipart/report; report-type=delivery-status``)
to the envelope sender, ``RELANCE_SMTP_FROM_ADDRESS``. The mail server delivers
those to a Maildir (``RELANCE_BOUNCE_MAILDIR``); this module reads them:

* :func:`parse_bounce` finds, in one DSN, the action and status of the
  recipient (``failed`` + ``5.x.x`` is permanent; ``delayed`` is not a bounce)
  and the returned message's ``X-Relance-Reference`` and ``Message-ID``
  (from its ``message/rfc822`` or ``text/rfc822-headers`` part);
* :func:`scan_maildir` reads ``new/`` of the Maildir, records each permanent
  bounce (:func:`worker.services.record_email_bounce`: the message becomes
  ``failed``, the person's e-mail is flagged, their pending e-mails are
  cancelled, letters carry on) and moves each file to ``cur/``: seen (``:2,S``)
  or, if it could not be used, flagged (``:2,F``) for a person to look at.

Nothing here logs an address: only references, statuses and file names.
"""
from __future__ import annotations

import datetime as dt
import email
import email.policy
import logging
import re
from dataclasses import dataclass
from email.message import Message as MimeMessage
from email.parser import BytesHeaderParser, HeaderParser
from pathlib import Path

log = logging.getLogger("relance.bounces")

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


def _move(path: Path, maildir: Path, flag: str) -> None:
    cur = maildir / "cur"
    cur.mkdir(exist_ok=True)
    base = path.name.split(":2,", 1)[0]
    try:
        path.replace(cur / f"{base}:2,{flag}")
    except FileNotFoundError:  # another worker's scan moved it first (recording is idempotent)
        pass


def record_file(app, raw: bytes, now: dt.datetime) -> tuple[str, str]:
    """(outcome, detail) for one DSN: applied | duplicate | ignored | rejected."""
    from . import services

    try:
        bounce = parse_bounce(raw)
    except NotABounce as exc:
        return "rejected", str(exc)
    if not bounce.permanent:
        return "ignored", f"{bounce.action} {bounce.status or ''}".strip()
    outcome = services.record_email_bounce(app, reference=bounce.reference, message_id=bounce.message_id,
                                           status=bounce.status, recipient=bounce.recipient, now=now)
    log.info("bounce %s: %s (%s)", bounce.reference or "?", outcome, bounce.status)
    if outcome in ("applied", "duplicate"):
        return outcome, bounce.reference or bounce.message_id or ""
    if outcome == "unknown":
        return "rejected", "message inconnu (référence et Message-ID)"
    return "ignored", outcome


def empty_report() -> dict:
    return {"applied": 0, "duplicates": 0, "ignored": [], "rejected": []}


def _count(report: dict, outcome: str, name: str, detail: str) -> None:
    if outcome == "applied":
        report["applied"] += 1
    elif outcome == "duplicate":
        report["duplicates"] += 1
    else:
        report[outcome].append({"file": name, "reason": detail})


def record_paths(app, paths: list[Path], now: dt.datetime) -> dict:
    """Bounces given by hand: Maildirs (scanned as by the scheduler) or single files (left in place)."""
    report = empty_report()
    for path in map(Path, paths):
        if path.is_dir():
            part = scan_maildir(app, path, now)
            report["applied"] += part["applied"]
            report["duplicates"] += part["duplicates"]
            report["ignored"] += part["ignored"]
            report["rejected"] += part["rejected"]
        else:
            outcome, detail = record_file(app, path.read_bytes(), now)
            _count(report, outcome, path.name, detail)
    return report


def scan_maildir(app, maildir: Path, now: dt.datetime) -> dict:
    """Record the bounces waiting in ``maildir/new``; each file is handled once.

    Returns ``{"applied": n, "duplicates": n, "ignored": [{"file", "reason"}],
    "rejected": [{"file", "reason"}]}``: ``applied`` counts the messages marked
    failed now; ``ignored`` lists usable notices that change nothing (a delay,
    a message no longer sent); ``rejected`` the files that are not usable
    bounces (left flagged in ``cur/``).
    """
    maildir = Path(maildir)
    report = empty_report()
    new = maildir / "new"
    if not new.is_dir():
        return report
    for path in sorted(p for p in new.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            raw = path.read_bytes()
        except FileNotFoundError:  # taken by another worker's scan
            continue
        outcome, detail = record_file(app, raw, now)
        _count(report, outcome, path.name, detail)
        if outcome == "rejected":
            log.warning("bounce file %s not used: %s", path.name, detail)
        _move(path, maildir, "F" if outcome == "rejected" else "S")
    return report
