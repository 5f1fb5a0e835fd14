"""E-mail bounces: the delivery status notifications that come back later, and what they change.

The mail server delivers DSNs to a Maildir (``RELANCE_BOUNCE_MAILDIR``);
:func:`scan_maildir` reads ``new/`` of it, parses each notice
(:func:`worker.adapters.dsn.parse_bounce`), records each permanent bounce
(:func:`record_email_bounce`: the message becomes ``failed``, the person's
e-mail is flagged, their pending e-mails are cancelled, letters carry on) and
moves each file to ``cur/``: seen (``:2,S``) or, if it could not be used,
flagged (``:2,F``) for a person to look at.

A notice is used only if it gives back the token of the e-mail it names
(``X-Relance-Token`` of the returned headers, or the VERP envelope sender: see
:mod:`worker.adapters.dsn`): the reference alone is guessable, and a forged
notice would otherwise mark anyone's e-mail failed and their address unusable.

Nothing here logs an address: only references, statuses and file names.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path

from sqlalchemy import select, update

from worker.adapters.dsn import NotABounce, parse_bounce, verify_bounce_token
from worker.adapters.store import audit, repository
from worker.adapters.store.models import Case, Message, Person
from worker.adapters.store.session import session_scope
from worker.domain.model import PENDING
from worker.services import replies
from worker.services.cases import load_case

log = logging.getLogger("relance.bounces")


def mark_email_unusable(app, case_id: int, now: dt.datetime) -> None:
    with session_scope(app.db_url) as s:
        case = load_case(s, case_id, lock=True)
        person = s.get(Person, case.person_id)
        person.email_status = "failed"
        state = dataclasses.replace(repository.to_state(case), email_unusable=True)
        repository.write_state(case, state, now)
        s.execute(update(Message).where(Message.case_id == case_id, Message.channel == "email",
                                        Message.status == PENDING)
                  .values(status="cancelled", cancel_reason="email_unusable", status_at=now))
        audit.append(s, at=now, kind="case", case_id=case_id, entity_id=case_id,
                     data={"flag": "email_unusable"})


def record_email_bounce(app, *, reference: str | None, message_id: str | None, status: str | None,
                        now: dt.datetime, recipient: str | None = None) -> str:
    """A permanent bounce came back for an e-mail the SMTP server had accepted.

    The message (found by its ``X-Relance-Reference``, else by its SMTP
    ``Message-ID``) becomes ``failed`` and the person's e-mail unusable (pending
    e-mails cancelled; letters carry on), as for a refusal at sending time,
    unless the address that bounced (``recipient``, when the notice gives it)
    is no longer the person's: then only the message is marked.
    Returns ``"applied"``, ``"duplicate"`` (already failed), ``"unknown"`` or
    a French reason why nothing changed.
    """
    with session_scope(app.db_url) as s:
        msg = None
        ids = Message.parse_reference(reference)
        if ids is not None:
            msg = s.get(Message, ids[1])
            if msg is not None and msg.case_id != ids[0]:
                msg = None
        if msg is None and message_id:
            msg = s.execute(select(Message).where(Message.channel == "email",
                                                  Message.provider_ref == message_id.strip())).scalars().first()
        if msg is None:
            return "unknown"
        if msg.channel != "email":
            return f"la référence {msg.reference} n'est pas un e-mail ({msg.channel})"
        person = s.get(Person, s.get(Case, msg.case_id).person_id)
        same_address = (recipient is None or person.email is None
                        or person.email.strip().lower() == recipient.strip().lower())
        # a crash after marking the message and before flagging the address: the rerun finishes the job
        flag = same_address and person.email_status != "failed"
        case_id = msg.case_id
        if msg.status == "failed":
            outcome = "duplicate"
        elif msg.status in ("sent", "delivered", "technical-failure"):  # a bounce proves it left
            repository.set_message_status(s, msg, "failed", now, error=f"non-remise (bounce {status or '5.0.0'})")
            outcome = "applied"
        else:
            return f"e-mail {msg.reference} au statut {msg.status} : non-remise non appliquée"
    if flag:
        mark_email_unusable(app, case_id, now)
    return outcome


def scan_bounces(app, now: dt.datetime) -> dict:
    """Record the bounces waiting in ``RELANCE_BOUNCE_MAILDIR`` (nothing if unset)."""
    maildir = app.settings.bounce_maildir
    return empty_report() if maildir is None else scan_maildir(app, maildir, now)


def _move(path: Path, maildir: Path, flag: str) -> None:
    cur = maildir / "cur"
    cur.mkdir(exist_ok=True)
    base = path.name.split(":2,", 1)[0]
    try:
        path.replace(cur / f"{base}:2,{flag}")
    except FileNotFoundError:  # another worker's scan moved it first (recording is idempotent)
        pass


def record_file(app, raw: bytes, now: dt.datetime) -> tuple[str, str]:
    """(outcome, detail) for one DSN: applied | duplicate | ignored | rejected; or ``reply`` for a
    message a person wrote (or an automatic answer): forwarded to agents, never a bounce."""
    if replies.is_reply(raw):
        return replies.record_reply(app, raw, now)
    try:
        bounce = parse_bounce(raw)
    except NotABounce as exc:
        return "rejected", str(exc)
    if not verify_bounce_token(app.settings.bounce_token_key, bounce.reference, bounce.token):
        shown = bounce.reference if Message.parse_reference(bounce.reference) else "?"  # never a forged header's text
        log.warning("bounce %s rejected: %s token", shown, "invalid" if bounce.token else "no")
        return "rejected", ("avis sans jeton valide (X-Relance-Token) pour sa référence : non appliqué "
                            "(avis falsifié, ou e-mail envoyé sans jeton)")
    if not bounce.permanent:
        return "ignored", f"{bounce.action} {bounce.status or ''}".strip()
    outcome = record_email_bounce(app, reference=bounce.reference, message_id=bounce.message_id,
                                  status=bounce.status, recipient=bounce.recipient, now=now)
    log.info("bounce %s: %s (%s)", bounce.reference or "?", outcome, bounce.status)
    if outcome in ("applied", "duplicate"):
        return outcome, bounce.reference or bounce.message_id or ""
    if outcome == "unknown":
        return "rejected", "message inconnu (référence et Message-ID)"
    return "ignored", outcome


def empty_report() -> dict:
    return {"applied": 0, "duplicates": 0, "replies": 0, "ignored": [], "rejected": []}


def _count(report: dict, outcome: str, name: str, detail: str) -> None:
    if outcome == "applied":
        report["applied"] += 1
    elif outcome == "reply":
        report["replies"] += 1
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
            report["replies"] += part["replies"]
            report["ignored"] += part["ignored"]
            report["rejected"] += part["rejected"]
        else:
            outcome, detail = record_file(app, path.read_bytes(), now)
            _count(report, "ignored" if outcome == "retry" else outcome, path.name, detail)
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
        if outcome == "retry":  # a reply not forwarded yet: left in new/ for the next scan
            report["ignored"].append({"file": path.name, "reason": detail})
            continue
        _count(report, outcome, path.name, detail)
        if outcome == "rejected":
            log.warning("bounce file %s not used: %s", path.name, detail)
        _move(path, maildir, "F" if outcome == "rejected" else "S")
    return report
