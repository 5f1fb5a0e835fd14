"""The scheduler's jobs: find what is due in the database and enqueue it.

The database holds time: no Celery ETA/countdown is ever used. On the embedded
default the enqueued tasks run eagerly, inline; on Redis, workers take them.
``now=None`` means the real clock (production); a given ``now`` (``tick --now``,
the demo) travels with each task so that everything it records is dated then.
"""
from __future__ import annotations

import datetime as dt
import logging

from worker.entrypoints import queues
from worker.entrypoints.tasks._common import as_task_arg, now_or_clock
from worker.entrypoints.tasks.dispatch import queue_depth, relay, sweep
from worker.services import sending

log = logging.getLogger("relance.jobs")


def scan_inbox(app, now: dt.datetime | None = None, depth=queue_depth) -> int:
    """Enqueue a scan of the inbox when a file waits there (and no task waits in ``ingest``): 1 if enqueued."""
    from worker.entrypoints.tasks.ingest import scan_inbox as task

    inbox = app.settings.inbox
    if inbox.exists() and any(p.is_file() and not p.name.startswith(".") for p in inbox.iterdir()):
        if depth(queues.INGEST) != 0:  # a scan is already waiting (workers down or busy)
            return 0
        task.apply_async(args=[as_task_arg(now)])
        return 1
    return 0


def scan_bounces(app, now: dt.datetime | None = None, depth=queue_depth) -> int:
    """Enqueue a scan of the bounce Maildir when a notice is waiting in ``new/``: 1 if enqueued.

    Not while tasks wait in the ``email`` queue (workers down or busy): the scan would only pile up."""
    from worker.entrypoints.tasks.email import scan_bounces as task

    maildir = app.settings.bounce_maildir
    new = maildir / "new" if maildir is not None else None
    if new is not None and new.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in new.iterdir()):
        if depth(queues.EMAIL) != 0:
            return 0
        task.apply_async(args=[as_task_arg(now)])
        return 1
    return 0


def reconcile(app, now: dt.datetime | None = None) -> int:
    return sending.reconcile_stuck(app, now_or_clock(now))


def digests(app, now: dt.datetime | None = None) -> int:
    """The agents' daily digests, once a working day from RELANCE_DIGEST_TIME (:mod:`worker.services.digests`)."""
    from worker.services.digests import send_due

    return sum(1 for r in send_due(app, now_or_clock(now)) if r.status != "already")


def watch_orientation(app, now: dt.datetime | None = None) -> int:
    """Flag the unoriented cases near their 6-week deadline (:mod:`worker.services.orientation`)."""
    from worker.services.orientation import watch

    return len(watch(app, now_or_clock(now)))


def campaign(app, now: dt.datetime | None = None) -> int:
    """The stock campaign's invitations of the day, after the flux (:mod:`worker.services.campaign`)."""
    from worker.services.campaign import invite_due

    return invite_due(app, now_or_clock(now))


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
    try:
        invited = campaign(app, now)  # after the flux: the stock campaign's people of the day
    except Exception as exc:  # noqa: BLE001 - the campaign waits for the next cycle; the flux went on
        log.error("campaign failed (%s)", type(exc).__name__)
        invited = 0
    # Sends may have changed cases (a refused number), the campaign opened some: a second pass.
    swept += sweep(app, now)
    relayed += relay(app, now)
    stuck = reconcile(app, now)
    orientation = watch_orientation(app, now)
    try:
        digested = digests(app, now)
    except Exception as exc:  # noqa: BLE001 - the digests wait for the next cycle; the cases went on
        log.error("digests failed (%s)", type(exc).__name__)
        digested = 0
    return {"swept": swept, "relayed": relayed, "stuck": stuck, "orientation": orientation, "digests": digested,
            "campaign": invited}


def scheduler_cycle(app, now: dt.datetime | None = None) -> dict:
    """One period of ``relance scheduler``: scan the inbox and the bounces, sweep, relay.

    Each step runs even if an earlier one failed (its failure is logged as ``job <name>
    failed``); returns the counts the scheduler logs on one line (``None`` = failed)."""
    counts: dict = {}
    for name, fn in (("inbox", scan_inbox), ("bounces", scan_bounces), ("swept", sweep), ("relayed", relay)):
        try:
            counts[name] = fn(app, now)
        except Exception:  # noqa: BLE001 - logged; the next period retries
            log.exception("job %s failed", {"swept": "sweep", "relayed": "relay"}.get(name, "scan_" + name))
            counts[name] = None
    return counts
