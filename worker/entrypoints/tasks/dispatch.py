"""Enqueueing what the database says is due: ``advance`` tasks for the due cases, send tasks for the due
messages, in batches (RELANCE_ADVANCE_BATCH_SIZE cases, RELANCE_SEND_BATCH_SIZE messages per task).

Called by the scheduler's jobs (:mod:`worker.entrypoints.jobs`) and by the
maintenance tasks. The database holds time: no Celery ETA/countdown is used.
"""
from __future__ import annotations

import datetime as dt
import logging

from worker.entrypoints import queues
from worker.entrypoints.tasks import cases as case_tasks
from worker.entrypoints.tasks import email, letters, sms
from worker.entrypoints.tasks._common import as_task_arg, now_or_clock
from worker.services import cases, sending

MAX_ROUNDS = 50
log = logging.getLogger("relance.jobs")


def queue_depth(queue: str) -> int | None:
    """Messages waiting in ``queue`` at the broker (0 in eager mode); None if the broker does not answer."""
    from worker.entrypoints.celery_app import celery

    if celery.conf.task_always_eager:
        return 0
    try:
        with celery.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            return int(conn.default_channel.queue_declare(queue=queue, passive=False).message_count)
    except Exception as exc:  # noqa: BLE001 - broker down: publishing fails anyway; the caller holds back
        log.warning("queue %s: length unknown (%s)", queue, type(exc).__name__)
        return None


def sweep(app, now: dt.datetime | None = None, depth=queue_depth) -> int:
    """Enqueue ``advance_batch`` tasks for the due cases (claimed, RELANCE_ADVANCE_BATCH_SIZE per task).

    Back-pressure: nothing is published while ``advance`` tasks still wait in the ``cases``
    queue (workers down or busy): they would only pile up, each due case again every time
    its 5-minute claim expires. The cases wait in the database, which holds time.
    """
    waiting = depth(queues.CASES)
    if waiting is None or waiting > 0:
        log.info("sweep held back: %s advance tasks still queued", "?" if waiting is None else waiting)
        return 0
    total = 0
    size = app.settings.advance_batch_size
    for _ in range(MAX_ROUNDS):
        ids = cases.due_case_ids(app, now_or_clock(now), app.settings.sweep_batch_size)
        for start in range(0, len(ids), size):
            case_tasks.advance_batch.apply_async(args=[ids[start:start + size], as_task_arg(now)])
        total += len(ids)
        if len(ids) < app.settings.sweep_batch_size and not app.settings.eager:
            break
        if not ids:
            break
    return total


SEND_TASKS = {"sms": sms.send_batch, "letter": letters.send_batch, "email": email.send_batch}


def relay(app, now: dt.datetime | None = None, depth=queue_depth) -> int:
    """The outbox relay: enqueue send tasks (RELANCE_SEND_BATCH_SIZE messages each) for due pending
    messages; how many messages were published.

    Bounded, whatever the outage (docs/ops.md, *Queues stay bounded*):

    * a message is published once (``Message.enqueued_at``); it is published again only
      when its channel's queue is **empty** at the broker (so the task cannot be waiting
      there: Redis lost it, or the task failed, e.g. PostgreSQL was down) and it was
      published more than ``RELANCE_RELAY_REQUEUE_MINUTES`` (5) ago. With the workers
      down, a queue holds each pending message at most once, however long it lasts;
    * one pass publishes at most ``RELANCE_RELAY_MAX_PER_PASS`` messages (the rest go at
      the next pass, a minute later).
    """
    settings = app.settings
    moment = now_or_clock(now)
    cap = settings.relay_max_per_pass
    requeue = dt.timedelta(minutes=settings.relay_requeue_minutes)
    total = 0
    for _ in range(MAX_ROUNDS):
        published = 0
        for channel, task in SEND_TASKS.items():
            queue = queues.BY_CHANNEL[channel]
            waiting = 0 if settings.eager else depth(queue)
            again = requeue if waiting == 0 else None
            while total < cap:
                batch = min(settings.relay_batch_size, cap - total)
                rows = sending.due_messages(app, moment, batch, requeue_after=again, channel=channel)
                ids = [message_id for message_id, _channel in rows]
                for start in range(0, len(ids), settings.send_batch_size):
                    task.apply_async(args=[ids[start:start + settings.send_batch_size], as_task_arg(now)],
                                     queue=queue)
                total += len(rows)
                published += len(rows)
                if len(rows) < batch:
                    break
        # Eager (embedded mode, the demo): sends run inline and may plan more (a refused
        # number): go round again until nothing is due. With workers: one round per pass.
        if not settings.eager or not published or total >= cap:
            break
    if total >= cap:
        log.warning("relay capped at %s messages this pass (RELANCE_RELAY_MAX_PER_PASS): the rest go next pass", cap)
    return total
