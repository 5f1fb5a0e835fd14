"""Send one sms message (queue ``sms``). Safe to redeliver: the claim makes a rerun a no-op."""
from worker.bootstrap import get_app
from worker.entrypoints.celery_app import celery
from worker.services import sending
from worker.entrypoints.tasks._common import parse_now


@celery.task(name="relance.sms.send", acks_late=True, reject_on_worker_lost=True)
def send(message_id: int, now_iso: str | None = None) -> str:
    return sending.send_message(get_app(), message_id, parse_now(now_iso)).outcome
