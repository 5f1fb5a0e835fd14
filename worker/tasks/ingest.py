"""Ingestion tasks (queue ``ingest``)."""
import datetime as dt
import logging
import os
import socket

from ..app import get_app
from ..celery_app import celery
from .. import services
from ._common import parse_now

log = logging.getLogger("relance.tasks.ingest")
INBOX_LEASE = "inbox"
# Longer than any flux file takes to ingest; only matters if a worker dies (or loses the
# database) mid-scan: the next scans then wait for the lease to expire.
INBOX_LEASE_SECONDS = 10 * 60


@celery.task(name="relance.ingest.scan_inbox", bind=True, acks_late=True, reject_on_worker_lost=False)
def scan_inbox(self, now_iso: str | None = None) -> list[dict]:
    """Ingest the inbox, one scan at a time: the scheduler enqueues a scan every run while
    a file is waiting, so a long file would otherwise be read by two workers at once."""
    from ..scheduler import acquire_lease, release_lease

    app = get_app()
    owner = f"{socket.gethostname()}:{os.getpid()}:{self.request.id or 'eager'}"
    if not acquire_lease(app, INBOX_LEASE, owner, dt.datetime.now(dt.timezone.utc), INBOX_LEASE_SECONDS):
        log.info("inbox scan skipped: another worker is scanning it")
        return []
    try:
        return services.scan_inbox(app, parse_now(now_iso))
    finally:
        try:
            release_lease(app, INBOX_LEASE, owner)
        except Exception:  # noqa: BLE001 - database gone: the lease expires by itself
            log.warning("inbox lease not released (database unreachable?): it expires in %d s",
                        INBOX_LEASE_SECONDS)


@celery.task(name="relance.ingest.file", acks_late=True, reject_on_worker_lost=False)
def ingest_file(path: str, now_iso: str | None = None) -> dict:
    return services.ingest_file(get_app(), path, parse_now(now_iso)).as_json()
