"""Send one email message (queue ``email``). Safe to redeliver: the claim makes a rerun a no-op."""
from worker.bootstrap import get_app
from worker.entrypoints.celery_app import celery
from worker.services import bounces, sending
from worker.entrypoints.tasks._common import parse_now


@celery.task(name="relance.email.send", acks_late=True, reject_on_worker_lost=True)
def send(message_id: int, now_iso: str | None = None) -> str:
    return sending.send_message(get_app(), message_id, parse_now(now_iso)).outcome


@celery.task(name="relance.email.scan_bounces", acks_late=True, reject_on_worker_lost=False)
def scan_bounces(now_iso: str | None = None) -> dict:
    return bounces.scan_bounces(get_app(), parse_now(now_iso))
