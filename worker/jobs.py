"""The scheduler's jobs: find what is due in the database and enqueue it.

The database holds time: no Celery ETA/countdown is ever used. On the embedded
default the enqueued tasks run eagerly, inline; on Redis, workers take them.
``now=None`` means the real clock (production); a given ``now`` (``tick --now``,
the demo) travels with each task so that everything it records is dated then.
"""
from __future__ import annotations

import datetime as dt
import logging

from . import services
from .queues import BY_CHANNEL

log = logging.getLogger("relance.jobs")
UTC = dt.timezone.utc
MAX_ROUNDS = 50


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(UTC)


def _iso(now: dt.datetime | None) -> str | None:
    return now.isoformat() if now is not None else None


def scan_inbox(app, now: dt.datetime | None = None) -> None:
    from .tasks.ingest import scan_inbox as task

    inbox = app.settings.inbox
    if inbox.exists() and any(p.is_file() and not p.name.startswith(".") for p in inbox.iterdir()):
        task.apply_async(args=[_iso(now)])


def scan_bounces(app, now: dt.datetime | None = None) -> None:
    """Enqueue a scan of the bounce Maildir when a notice is waiting in ``new/``."""
    from .tasks.email import scan_bounces as task

    maildir = app.settings.bounce_maildir
    new = maildir / "new" if maildir is not None else None
    if new is not None and new.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in new.iterdir()):
        task.apply_async(args=[_iso(now)])


def sweep(app, now: dt.datetime | None = None) -> int:
    """Enqueue an ``advance`` task for every due case (in batches, claimed)."""
    from .tasks.cases import advance

    total = 0
    for _ in range(MAX_ROUNDS):
        ids = services.due_case_ids(app, _now(now), app.settings.sweep_batch_size)
        for case_id in ids:
            advance.apply_async(args=[case_id, _iso(now)])
        total += len(ids)
        if len(ids) < app.settings.sweep_batch_size and not app.settings.eager:
            break
        if not ids:
            break
    return total


def relay(app, now: dt.datetime | None = None) -> int:
    """The outbox relay: enqueue a send for every due pending message."""
    from .tasks import email, letters, sms

    tasks = {"sms": sms.send, "letter": letters.send, "email": email.send}
    total = 0
    for _ in range(MAX_ROUNDS):
        rows = services.due_messages(app, _now(now), app.settings.relay_batch_size)
        for message_id, channel in rows:
            tasks[channel].apply_async(args=[message_id, _iso(now)], queue=BY_CHANNEL[channel])
        total += len(rows)
        if not rows or (len(rows) < app.settings.relay_batch_size and not app.settings.eager):
            break
    return total


def reconcile(app, now: dt.datetime | None = None) -> int:
    return services.reconcile_stuck(app, _now(now))


def digests(app, now: dt.datetime | None = None) -> int:
    """The agents' daily digests, once a working day from RELANCE_DIGEST_TIME (:mod:`worker.digests`)."""
    from .digests import send_due

    return sum(1 for r in send_due(app, _now(now)) if r.status != "already")


def watch_orientation(app, now: dt.datetime | None = None) -> int:
    """Flag the unoriented cases near their 6-week deadline (:mod:`worker.orientation`)."""
    from .orientation import watch

    return len(watch(app, _now(now)))


def cycle(app, now: dt.datetime | None = None) -> dict:
    """One full scheduler cycle (``relance tick``)."""
    try:
        scan_inbox(app, now)
    except Exception as exc:  # noqa: BLE001 - a bad inbox file must not stop the invitations (eager: inline)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        log.error("inbox scan failed (%s: %s); sweeping and relaying all the same", type(exc).__name__, first)
    try:
        scan_bounces(app, now)
    except Exception as exc:  # noqa: BLE001 - same: the bounces wait for the next cycle
        log.error("bounce scan failed (%s); sweeping and relaying all the same", type(exc).__name__)
    swept = sweep(app, now)
    relayed = relay(app, now)
    # Sends may have changed cases (a refused number): give them a second pass.
    swept += sweep(app, now)
    relayed += relay(app, now)
    stuck = reconcile(app, now)
    orientation = watch_orientation(app, now)
    try:
        digested = digests(app, now)
    except Exception as exc:  # noqa: BLE001 - the digests wait for the next cycle; the cases went on
        log.error("digests failed (%s)", type(exc).__name__)
        digested = 0
    return {"swept": swept, "relayed": relayed, "stuck": stuck, "orientation": orientation, "digests": digested}
