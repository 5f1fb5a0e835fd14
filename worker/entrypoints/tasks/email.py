"""Send one email message (queue ``email``); scan the bounce Maildir. Sends are safe to redeliver:
the claim makes a rerun a no-op."""
from worker.bootstrap import get_app
from worker.entrypoints.celery_app import celery
from worker.entrypoints.tasks._common import (clock_for, long_limits, outcome_counts, parse_ids, parse_now,
                                              short_limits)
from worker.entrypoints.validation import parse_id
from worker.services import bounces, sending


@celery.task(name="relance.email.send", acks_late=True, reject_on_worker_lost=True, **short_limits())
def send(message_id: int, now_iso: str | None = None) -> str:
    app = get_app()
    return sending.send_message(app, parse_id(message_id, "message_id"), parse_now(now_iso, app.settings)).outcome


@celery.task(name="relance.email.send_batch", acks_late=True, reject_on_worker_lost=True, **short_limits())
def send_batch(message_ids: list[int], now_iso: str | None = None) -> dict:
    """A batch of messages (the relay's): claimed and sent concurrently, each at most once."""
    app = get_app()
    results = sending.send_messages(app, parse_ids(message_ids, "message_ids"), parse_now(now_iso, app.settings),
                                    clock=clock_for(now_iso))
    return outcome_counts(results)


@celery.task(name="relance.email.scan_bounces", acks_late=True, reject_on_worker_lost=False, **long_limits())
def scan_bounces(now_iso: str | None = None) -> dict:
    app = get_app()
    return bounces.scan_bounces(app, parse_now(now_iso, app.settings))
