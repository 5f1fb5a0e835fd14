"""The inbox: flux files dropped in ``RELANCE_INBOX`` are ingested, one scan at a time,
then moved to ``done/`` or ``failed/`` with a report beside them."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import socket
import uuid

from sqlalchemy.exc import DataError, IntegrityError

from worker.adapters.flux import FluxFormatError
from worker.adapters.store.leases import acquire_lease, release_lease
from worker.services.ingest import ingest_file

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
    for path in sorted(p for p in inbox.iterdir() if p.is_file() and not p.name.startswith(".")):
        stamp = now.strftime("%Y%m%dT%H%M%S")
        try:
            report = ingest_file(app, path, now)
            dest_dir, summary = inbox / "done", {"status": "done", **report.as_json(),
                                                 "cases_opened": report.cases_opened}
        except (FluxFormatError, OSError, UnicodeError) as exc:
            dest_dir, summary = inbox / "failed", {"status": "failed", "error": str(exc)}
        except (IntegrityError, DataError) as exc:
            # A row the database refuses (e.g. a NIR already another person's): the file must not stay
            # in the inbox, failing every tick. Only the driver's first line: no SQL, no parameters.
            reason = str(getattr(exc, "orig", None) or type(exc).__name__).strip().splitlines()[0]
            log.error("inbox file %s refused by the database: %s", path.name, reason)
            dest_dir, summary = inbox / "failed", {
                "status": "failed",
                "error": f"refusé par la base de données ({reason}) : corriger le fichier et le déposer à nouveau"}
        dest_dir.mkdir(exist_ok=True)
        dest = dest_dir / f"{stamp}_{path.name}"
        n = 1
        while dest.exists():  # the same name twice within a second: never overwrite
            n += 1
            dest = dest_dir / f"{stamp}-{n}_{path.name}"
        shutil.move(str(path), dest)
        dest.with_name(dest.name + ".report.json").write_text(
            json.dumps({"file": path.name, "at": now.isoformat(), **summary}, ensure_ascii=False, indent=2),
            encoding="utf-8")
        results.append({"file": path.name, **summary})
    return results
