"""Ingestion tasks (queue ``ingest``)."""
from pathlib import Path

from worker.bootstrap import get_app
from worker.entrypoints.celery_app import celery
from worker.entrypoints.tasks._common import long_limits, parse_now
from worker.entrypoints.validation import InputError
from worker.services import inbox, ingest


@celery.task(name="relance.ingest.scan_inbox", acks_late=True, reject_on_worker_lost=False, **long_limits())
def scan_inbox(now_iso: str | None = None) -> list[dict]:
    app = get_app()
    return inbox.scan_inbox(app, parse_now(now_iso, app.settings))


@celery.task(name="relance.ingest.file", acks_late=True, reject_on_worker_lost=False, **long_limits())
def ingest_file(path: str, now_iso: str | None = None) -> dict:
    """One flux file, which must be a regular file directly in the inbox (RELANCE_INBOX_DIR)."""
    app = get_app()
    if not isinstance(path, str) or not path or "\x00" in path:
        raise InputError("path", "chemin de fichier attendu")
    inbox_dir = app.settings.inbox.resolve()
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = inbox_dir / candidate
    if candidate.is_symlink() or candidate.resolve().parent != inbox_dir or not candidate.is_file():
        raise InputError("path", "seul un fichier déposé dans la boîte de dépôt (RELANCE_INBOX_DIR) peut être intégré")
    return ingest.ingest_file(app, candidate, parse_now(now_iso, app.settings)).as_json()
