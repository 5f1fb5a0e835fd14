"""Send one email message (queue ``email``); scan the bounce Maildir. Sends are safe to redeliver:
the claim makes a rerun a no-op."""
from worker.bootstrap import get_app
from worker.entrypoints.celery_app import celery
from worker.entrypoints.tasks._common import long_limits, parse_now, short_limits
from worker.entrypoints.validation import parse_id
from worker.services import bounces, sending


@celery.task(name="relance.email.send", acks_late=True, reject_on_worker_lost=True, **short_limits())
def send(message_id: int, now_iso: str | None = None) -> str:
    app = get_app()
    return sending.send_message(app, parse_id(message_id, "message_id"), parse_now(now_iso, app.settings)).outcome


@celery.task(name="relance.email.scan_bounces", acks_late=True, reject_on_worker_lost=False, **long_limits())
def scan_bounces(now_iso: str | None = None) -> dict:
    app = get_app()
    return bounces.scan_bounces(app, parse_now(now_iso, app.settings))
