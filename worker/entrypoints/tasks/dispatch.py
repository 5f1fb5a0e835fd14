"""Enqueueing what the database says is due: one ``advance`` task per due case, one send per due message.

Called by the scheduler's jobs (:mod:`worker.entrypoints.jobs`) and by the
maintenance tasks. The database holds time: no Celery ETA/countdown is used.
"""
from __future__ import annotations

import datetime as dt

from worker.entrypoints.queues import BY_CHANNEL
from worker.entrypoints.tasks import cases as case_tasks
from worker.entrypoints.tasks import email, letters, sms
from worker.entrypoints.tasks._common import as_task_arg, now_or_clock
from worker.services import cases, sending

MAX_ROUNDS = 50


def sweep(app, now: dt.datetime | None = None) -> int:
    """Enqueue an ``advance`` task for every due case (in batches, claimed)."""
    total = 0
    for _ in range(MAX_ROUNDS):
        ids = cases.due_case_ids(app, now_or_clock(now), app.settings.sweep_batch_size)
        for case_id in ids:
            case_tasks.advance.apply_async(args=[case_id, as_task_arg(now)])
        total += len(ids)
        if len(ids) < app.settings.sweep_batch_size and not app.settings.eager:
            break
        if not ids:
            break
    return total


def relay(app, now: dt.datetime | None = None) -> int:
    """The outbox relay: enqueue a send for every due pending message."""
    tasks = {"sms": sms.send, "letter": letters.send, "email": email.send}
    total = 0
    for _ in range(MAX_ROUNDS):
        rows = sending.due_messages(app, now_or_clock(now), app.settings.relay_batch_size)
        for message_id, channel in rows:
            tasks[channel].apply_async(args=[message_id, as_task_arg(now)], queue=BY_CHANNEL[channel])
        total += len(rows)
        if not rows or (len(rows) < app.settings.relay_batch_size and not app.settings.eager):
            break
    return total
