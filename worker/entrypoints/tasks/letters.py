"""Send one letter message (queue ``letters``). Safe to redeliver: the claim makes a rerun a no-op."""
from worker.bootstrap import get_app
from worker.entrypoints.celery_app import celery
from worker.entrypoints.tasks._common import parse_now, short_limits
from worker.entrypoints.validation import parse_id
from worker.services import sending


@celery.task(name="relance.letters.send", acks_late=True, reject_on_worker_lost=True, **short_limits())
def send(message_id: int, now_iso: str | None = None) -> str:
    app = get_app()
    return sending.send_message(app, parse_id(message_id, "message_id"), parse_now(now_iso, app.settings)).outcome
