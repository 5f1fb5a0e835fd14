"""The inbox: flux files dropped in ``RELANCE_INBOX`` are ingested, one scan at a time,
then moved to ``done/`` or ``failed/`` with a report beside them. One bad file never
blocks the others: whatever goes wrong with it (a file-level error, the database
refusing it, anything unexpected), it goes to ``failed/`` with the reason (never its
rows) and the scan goes on with the next file."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import socket
import traceback
import uuid
from pathlib import Path

from worker.adapters.files import PRIVATE_MODE, refuse_symlink, replace_file, settle
from worker.adapters.flux import FluxFormatError
from worker.adapters.store.bulk import database_error_kind, is_database_error
from worker.adapters.store.leases import acquire_lease, release_lease
from worker.services.errors import ServiceError
from worker.services.ingest import REFUSED, ingest_file

log = logging.getLogger("relance.services")

INBOX_LEASE = "inbox"
# Longer than any flux file takes to ingest; only matters if a worker dies (or loses the
# database) mid-scan: the next scans then wait for the lease to expire.
INBOX_LEASE_SECONDS = 10 * 60


def scan_inbox(app, now: dt.datetime) -> list[dict]:
    """Ingest the inbox, one scan at a time: the scheduler enqueues a scan every run while a
    file is waiting, so a long file would otherwise be read by two workers at once. The lease
    runs on the real clock (it is about live processes, not business time)."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    if not acquire_lease(app, INBOX_LEASE, owner, dt.datetime.now(dt.timezone.utc), INBOX_LEASE_SECONDS):
        log.info("inbox scan skipped: another worker is scanning it")
        return []
    try:
        return _scan_inbox(app, now)
    finally:
        try:
            release_lease(app, INBOX_LEASE, owner)
        except Exception:  # noqa: BLE001 - database gone: the lease expires by itself
            log.warning("inbox lease not released (database unreachable?): it expires in %d s",
                        INBOX_LEASE_SECONDS)


def _scan_inbox(app, now: dt.datetime) -> list[dict]:
    """Ingest each file dropped in the inbox; move it to done/ or failed/ with a report beside it."""
    inbox = app.settings.inbox
    inbox.mkdir(parents=True, exist_ok=True)
    results = []
    # A symbolic link dropped in the shared inbox (to /etc/…, to another flux) is never read: it goes to failed/.
    for path in sorted(p for p in inbox.iterdir() if (p.is_file() or p.is_symlink()) and not p.name.startswith(".")):
        stamp = now.strftime("%Y%m%dT%H%M%S")
        try:
            refuse_symlink(path)
            report = ingest_file(app, path, now)
            dest_dir, summary = inbox / "done", {"status": "done", **report.as_json(),
                                                 "cases_opened": report.cases_opened}
        except (FluxFormatError, ServiceError, OSError, UnicodeError) as exc:
            # The file as a whole (its format, a stock given as a flux, the database refusing it): the
            # message says why, in French, and quotes no row.
            dest_dir, summary = inbox / "failed", {"status": "failed", "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one bad file never blocks the inbox (RecursionError, driver...)
            dest_dir, summary = inbox / "failed", {"status": "failed", "error": _unexpected(path.name, exc)}
        try:
            dest_dir.mkdir(exist_ok=True)
            dest = dest_dir / f"{stamp}_{path.name}"
            n = 1
            while dest.exists():  # the same name twice within a second: never overwrite
                n += 1
                dest = dest_dir / f"{stamp}-{n}_{path.name}"
            # The report first (0600, written whole): a file in done/ or failed/ always has its report.
            report_path = dest.with_name(dest.name + ".report.json")
            replace_file(report_path, json.dumps({"file": path.name, "at": now.isoformat(), **summary},
                                                 ensure_ascii=False, indent=2).encode("utf-8"), PRIVATE_MODE)
            settle(report_path, now)
            try:
                shutil.move(str(path), dest)
            except OSError:
                report_path.unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.error("inbox file %s could not be moved to %s/ (%s): it stays in the inbox, the scan goes on",
                      path.name, dest_dir.name, type(exc).__name__)
            continue
        try:
            if not dest.is_symlink():
                settle(dest, now)  # clear NIRs: 0600, and deleted RELANCE_INBOX_DONE_DAYS after `now` (retention)
        except OSError as exc:
            log.error("inbox file %s: mode not set (%s)", dest.name, type(exc).__name__)
        results.append({"file": path.name, **summary})
    return results


def _unexpected(name: str, exc: Exception) -> str:
    """The report's reason for an unexpected failure, and one log line: the exception's kind and
    where it was raised, never its message (a driver's may quote a row)."""
    if is_database_error(exc):
        log.error("inbox file %s refused by the database (%s)", name, database_error_kind(exc))
        return REFUSED.format(kind=database_error_kind(exc))
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    log.error("inbox file %s set aside: unexpected %s at %s", name, type(exc).__name__, where)
    return (f"erreur inattendue ({type(exc).__name__}) pendant l'intégration : fichier mis de côté, à signaler à "
            "l'équipe technique ; les autres fichiers du dépôt ont été traités")
