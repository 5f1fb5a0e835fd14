"""Ingestion tasks (queue ``ingest``)."""
from ..app import get_app
from ..celery_app import celery
from .. import services
from ._common import parse_now


@celery.task(name="relance.ingest.scan_inbox", acks_late=True, reject_on_worker_lost=False)
def scan_inbox(now_iso: str | None = None) -> list[dict]:
    return services.scan_inbox(get_app(), parse_now(now_iso))


@celery.task(name="relance.ingest.file", acks_late=True, reject_on_worker_lost=False)
def ingest_file(path: str, now_iso: str | None = None) -> dict:
    return services.ingest_file(get_app(), path, parse_now(now_iso)).as_json()
