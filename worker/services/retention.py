"""Retention: case data is kept ``RELANCE_RETENTION_MONTHS`` (24 by default)
after the last contact, then purged — in the database and on disk.

A person is purged when none of their cases is active and nothing happened to
them (last contact, last update, last case closure, last event) for the
retention period: their messages, events, appointments, cases, their place in
the stock campaign and the person row are deleted, and with them the files that
hold their personal data: their letters (``<letters dir>/<day>/…html``) and
their lines of the local SMS and e-mail outbox (``sms.jsonl``, ``email.jsonl``).

The same job (:func:`purge_expired`, daily at 03:30) deletes:

* the flux files taken in by the inbox (``inbox/done/`` and ``inbox/failed/``,
  clear NIRs) and their reports, ``RELANCE_INBOX_DONE_DAYS`` (7) days after
  they were ingested;
* the day folders of print batches and agents' digests older than the
  retention period;
* RDV-Solidarités' appointments (``rdvs_participations``) of the people purged, and those
  nobody touched for the retention period (an unrecognised person's data with them).

The audit log keeps its entries (ids, steps, statuses and hashes — no personal
data), so the chain stays verifiable. If the audit log itself must be cut, the
owner of the database runs :func:`purge_audit_log` (``relance audit purge
--before DATE``): it removes the chain's *beginning* only, after a checkpoint
entry (see :func:`worker.adapters.store.audit.purge_prefix`); the
application's role is not allowed to delete from ``audit_log``.

Logs carry counts only.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

from sqlalchemy import delete, func, select

from worker.adapters import files
from worker.adapters.store import audit
from worker.adapters.store.models import (Appointment, AuditEntry, CampaignMember, Case, CaseClaim, InboundEvent,
                                          Message, Person, RdvsParticipation)
from worker.adapters.store.session import session_scope
from worker.services.errors import ServiceError

log = logging.getLogger("relance.retention")


def cutoff(now: dt.datetime, months: int) -> dt.datetime:
    year, month = now.year, now.month - months
    while month <= 0:
        month += 12
        year -= 1
    day = min(now.day, 28)
    return now.replace(year=year, month=month, day=day)


def purge_expired(app, now: dt.datetime, batch: int = 500) -> int:
    """The retention job: purge the people past the retention period (rows and files), then the old
    inbox files, print batches and digests. Returns the number of people purged."""
    limit = cutoff(now, app.settings.retention_months)
    purged = 0
    while True:
        with session_scope(app.db_url) as s:
            active = select(Case.person_id).where(Case.status == "active")
            recent_case = select(Case.person_id).where(
                func.coalesce(Case.closed_at, Case.updated_at) >= limit)
            recent_event = select(InboundEvent.person_id).where(InboundEvent.recorded_at >= limit,
                                                                InboundEvent.person_id.is_not(None))
            ids = list(s.execute(
                select(Person.id).where(
                    Person.id.not_in(active), Person.id.not_in(recent_case), Person.id.not_in(recent_event),
                    Person.updated_at < limit,
                    (Person.last_contact_at.is_(None)) | (Person.last_contact_at < limit),
                ).limit(batch)).scalars())
            if not ids:
                break
            case_ids = select(Case.id).where(Case.person_id.in_(ids))
            sent = s.execute(select(Message.id, Message.case_id, Message.channel, Message.provider_ref)
                             .where(Message.case_id.in_(case_ids))).all()
            s.execute(delete(Message).where(Message.case_id.in_(case_ids)))
            s.execute(delete(Appointment).where(Appointment.case_id.in_(case_ids)))
            s.execute(delete(InboundEvent).where(InboundEvent.person_id.in_(ids)))
            s.execute(delete(InboundEvent).where(InboundEvent.case_id.in_(case_ids)))
            s.execute(delete(RdvsParticipation).where(RdvsParticipation.person_id.in_(ids)))
            s.execute(delete(CampaignMember).where(CampaignMember.person_id.in_(ids)))  # the stock campaign's
            s.execute(delete(CaseClaim).where(CaseClaim.case_id.in_(case_ids)))  # no cascade (see CaseClaim)
            s.execute(delete(Case).where(Case.person_id.in_(ids)))
            s.execute(delete(Person).where(Person.id.in_(ids)))
            audit.append(s, at=now, kind="retention", data={"persons_purged": len(ids), "before": limit})
        # The rows are gone (committed): now the files that held the same data.
        removed = _purge_message_files(app, sent)
        purged += len(ids)
        log.info("retention: %d persons purged, %d of their files or outbox lines deleted", len(ids), removed)
    with session_scope(app.db_url) as s:
        # RDV-Solidarités' appointments nobody touched for the retention period (waiting ones included:
        # what they keep of a person goes with them)
        s.execute(delete(RdvsParticipation).where(RdvsParticipation.updated_at < limit))
    _purge_old_files(app, now, limit)
    return purged


def _purge_message_files(app, messages) -> int:
    """Delete the letters and the local outbox lines of purged messages; returns how many.

    The rows are already gone: a file that cannot be deleted is counted and logged (never its
    name: it carries the message reference), and the others go on."""
    removed = failed = 0
    letters_root = Path(app.settings.letters)
    references = set()
    for message_id, case_id, channel, provider_ref in messages:
        references.add(f"RL-{case_id:06d}-{message_id:07d}")
        if channel == "letter" and provider_ref:
            path = _inside(letters_root, provider_ref)
            try:
                if path is not None and (path.is_file() or path.is_symlink()):
                    path.unlink()
                    removed += 1
                    _remove_if_empty(path.parent, letters_root)
            except OSError:
                failed += 1
    if references:
        def keep(line: str) -> bool:
            try:
                return json.loads(line).get("reference") not in references
            except (ValueError, AttributeError):
                return True

        for name in ("sms.jsonl", "email.jsonl"):
            try:
                removed += files.rewrite_lines(Path(app.settings.outbox) / name, keep)
            except OSError:
                failed += 1
    if failed:
        log.error("retention: %d files of purged persons could not be deleted (permissions?): delete them by hand",
                  failed)
    return removed


def _inside(root: Path, relative: str) -> Path | None:
    """``root/relative`` if it stays inside ``root`` (without following a final link)."""
    path = root / relative
    try:
        path.parent.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return None
    return path


def _remove_if_empty(directory: Path, root: Path) -> None:
    if directory != root and directory.is_dir() and not directory.is_symlink() and not any(directory.iterdir()):
        directory.rmdir()


def _purge_old_files(app, now: dt.datetime, limit: dt.datetime) -> None:
    settings = app.settings
    kept_until = now - dt.timedelta(days=settings.inbox_done_days)
    inbox = Path(settings.inbox)
    flux = sum(files.remove_older_than(inbox / name, kept_until) for name in ("done", "failed"))
    day = app.calendar.local_date(limit)
    batches = files.remove_day_dirs(Path(settings.print_dir), day)
    digests = files.remove_day_dirs(Path(settings.digests), day)
    if flux or batches or digests:
        log.info("retention: %d inbox files, %d print batch days, %d digest days deleted", flux, batches, digests)


class AuditPurgeError(ServiceError):
    """The audit log's beginning could not be purged (French message)."""


def purge_audit_log(app, before: dt.datetime, now: dt.datetime) -> int:
    """Remove the audit log's entries before ``before`` — its beginning only, up to the first entry
    dated ``before`` or later — after a checkpoint entry; returns how many.

    Needs a database role allowed to delete from ``audit_log`` (the owner, that runs the
    migrations): the application's role may only insert and read.
    """
    from sqlalchemy.exc import DBAPIError

    try:
        with session_scope(app.settings.owner_db_url) as s:
            first_kept = s.execute(select(func.min(AuditEntry.id)).where(AuditEntry.at >= before)).scalar()
            last = select(func.max(AuditEntry.id))
            if first_kept is not None:
                last = last.where(AuditEntry.id < first_kept)
            through = s.execute(last).scalar()
            if through is None:
                return 0
            removed = audit.purge_prefix(s, through, now)
    except ValueError as exc:
        raise AuditPurgeError(str(exc)) from None
    except DBAPIError as exc:
        reason = (str(getattr(exc, "orig", None) or type(exc).__name__).strip().splitlines() or [""])[0]
        raise AuditPurgeError(f"purge du journal d'audit refusée par la base ({reason}) : elle se fait avec le "
                              "rôle propriétaire de la base (celui de « relance db upgrade »)") from None
    log.info("retention: %d audit entries purged (checkpoint appended)", removed)
    return removed
