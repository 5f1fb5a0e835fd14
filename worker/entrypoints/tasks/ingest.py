"""Ingestion tasks (queue ``ingest``)."""
from worker.bootstrap import get_app
from worker.entrypoints.celery_app import celery
from worker.services import inbox, ingest
from worker.entrypoints.tasks._common import parse_now


@celery.task(name="relance.ingest.scan_inbox", acks_late=True, reject_on_worker_lost=False)
def scan_inbox(now_iso: str | None = None) -> list[dict]:
    return inbox.scan_inbox(get_app(), parse_now(now_iso))


@celery.task(name="relance.ingest.file", acks_late=True, reject_on_worker_lost=False)
def ingest_file(path: str, now_iso: str | None = None) -> dict:
    return ingest.ingest_file(get_app(), path, parse_now(now_iso)).as_json()
