"""``relance scheduler``: the APScheduler jobs that feed the Celery queues.

Only one scheduler is active at a time, even if several are started: each
holds a lease in the database (table ``locks``) and runs jobs only while it
holds it. Missed runs are coalesced (``coalesce=True``), not replayed.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid

from apscheduler.schedulers.blocking import BlockingScheduler
from worker.entrypoints import jobs
from worker.adapters.store.leases import acquire_lease, release_lease

log = logging.getLogger("relance.scheduler")
UTC = dt.timezone.utc
INTERVAL_SECONDS = 60
LEASE_SECONDS = 90

# Tuning knobs read from the environment by the scheduler only (not Settings):
# the period of the scan/sweep/relay jobs (reconcile runs every 5 periods) and
# the leader lease (default 1.5 periods: a leader renews it at every run; when
# it dies, another scheduler takes over once the lease has expired).
# Production keeps the defaults; the end-to-end tests shorten both.
INTERVAL_ENV = "RELANCE_SCHEDULER_INTERVAL_SECONDS"
LEASE_ENV = "RELANCE_SCHEDULER_LEASE_SECONDS"


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} : nombre de secondes attendu, reçu {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} : doit être strictement positif, reçu {raw!r}")
    return value


def timing_from_env() -> tuple[float, float]:
    """(interval, lease) in seconds; the lease must outlast the interval."""
    interval = _env_seconds(INTERVAL_ENV, INTERVAL_SECONDS)
    lease = _env_seconds(LEASE_ENV, LEASE_SECONDS * interval / INTERVAL_SECONDS)
    if lease <= interval:
        raise ValueError(f"{LEASE_ENV} ({lease:g} s) doit dépasser {INTERVAL_ENV} ({interval:g} s) : "
                         "sinon le bail expire entre deux passages et les planificateurs se le disputent")
    return interval, lease


class LeaderScheduler:
    def __init__(self, app, owner: str | None = None, *, interval_seconds: float | None = None,
                 lease_seconds: float | None = None):
        self.app = app
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        interval, lease = timing_from_env()
        if interval_seconds is not None:
            interval, lease = interval_seconds, LEASE_SECONDS * interval_seconds / INTERVAL_SECONDS
        self.interval, self.lease = interval, lease_seconds or lease
        if self.lease <= self.interval:
            raise ValueError("the scheduler lease must outlast the job interval")
        self.scheduler = BlockingScheduler(timezone=app.settings.timezone,
                                           job_defaults={"coalesce": True, "max_instances": 1,
                                                         "misfire_grace_time": 30})

    def is_leader(self) -> bool:
        try:
            return acquire_lease(self.app, "scheduler", self.owner, dt.datetime.now(UTC), self.lease)
        except Exception:  # noqa: BLE001 - database down: not the leader for now, retry later
            log.warning("scheduler lease check failed (database unreachable?)")
            return False

    def _guarded(self, name, fn):
        def run():
            if not self.is_leader():
                return
            try:
                fn(self.app)
            except Exception:  # noqa: BLE001 - logged; the next run retries
                log.exception("job %s failed", name)
        run.__name__ = name
        return run

    def add_jobs(self) -> None:
        add = self.scheduler.add_job
        every = self.interval
        add(self._guarded("scan_inbox", jobs.scan_inbox), "interval", seconds=every, id="scan_inbox")
        add(self._guarded("scan_bounces", jobs.scan_bounces), "interval", seconds=every, id="scan_bounces")
        add(self._guarded("sweep", jobs.sweep), "interval", seconds=every, id="sweep")
        add(self._guarded("relay", jobs.relay), "interval", seconds=every, id="relay")
        add(self._guarded("reconcile", jobs.reconcile), "interval", seconds=5 * every, id="reconcile")
        add(self._guarded("orientation", jobs.watch_orientation), "interval", seconds=60 * every, id="orientation")
        add(self._guarded("digests", jobs.digests), "interval", seconds=5 * every, id="digests")
        add(self._guarded("retention", _retention), "cron", hour=3, minute=30, id="retention")
        for name, trigger, fn in extra_jobs(self.app):
            add(self._guarded(name, fn), trigger=trigger, id=name)

    def run(self) -> None:
        self.add_jobs()
        log.info("scheduler started (jobs every %g s, lease %g s)", self.interval, self.lease)
        try:
            self.scheduler.start()
        finally:
            release_lease(self.app, "scheduler", self.owner)


def _retention(app) -> None:
    from worker.services.retention import purge_expired

    purge_expired(app, dt.datetime.now(UTC))


def extra_jobs(app=None):
    """Jobs added by later capabilities (print batch, digests, retention): [(name, trigger, fn(app))].

    ``print_batch``: the day's print batch (:func:`worker.services.print_batches.daily_print_batch`)
    at ``RELANCE_PRINT_BATCH_TIME`` (local time), Monday to Friday (public holidays
    are skipped by the job itself), only with ``RELANCE_LETTER_BACKEND=pdf``: with
    the local backend the letters stay HTML files (``relance letters batch`` still
    works in both modes).
    """
    from apscheduler.triggers.cron import CronTrigger

    from worker.domain.calendar import parse_hhmm
    from worker.services.print_batches import daily_print_batch

    found = []
    if app is not None and app.settings.letter_backend == "pdf":
        try:
            at = parse_hhmm(app.settings.print_batch_time)
        except ValueError:
            raise ValueError(f"RELANCE_PRINT_BATCH_TIME invalide : {app.settings.print_batch_time!r} "
                             "(format HH:MM)") from None
        found.append(("print_batch",
                      CronTrigger(day_of_week="mon-fri", hour=at.hour, minute=at.minute,
                                  timezone=app.settings.timezone),
                      daily_print_batch))
    return found
