"""``relance scheduler``: the APScheduler jobs that feed the Celery queues.

Only one scheduler is active at a time, even if several are started: each
holds a lease in the database (table ``locks``) and runs jobs only while it
holds it. Missed runs are coalesced (``coalesce=True``), not replayed.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path

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
        self._was_leader: bool | None = None
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
            t0 = time.monotonic()
            try:
                result = fn(self.app)
            except Exception:  # noqa: BLE001 - logged; the next run retries
                log.exception("job %s failed", name)
                return
            log.info("job %s done: %s in %.2f s", name, result if result is not None else "ok", time.monotonic() - t0)
        run.__name__ = name
        return run

    def cycle(self) -> dict | None:
        """One period: scan, sweep, relay (leader only); one log line with the counts; the heartbeat."""
        t0 = time.monotonic()
        leader = self.is_leader()
        counts = jobs.scheduler_cycle(self.app) if leader else None
        write_heartbeat(self.app, self.owner, leader=leader, interval=self.interval)
        if leader != self._was_leader:
            log.info("this scheduler (%s) is %s", self.owner,
                     "now the leader" if leader else "on standby (another one holds the lease, or the database is down)")
            self._was_leader = leader
        if counts is not None:
            shown = ", ".join(f"{k} {'failed' if v is None else v}" for k, v in counts.items())
            log.info("cycle: %s in %.2f s", shown, time.monotonic() - t0)
        return counts

    def add_jobs(self) -> None:
        add = self.scheduler.add_job
        every = self.interval
        add(self.cycle, "interval", seconds=every, id="cycle", next_run_time=dt.datetime.now(UTC))
        add(self._guarded("reconcile", jobs.reconcile), "interval", seconds=5 * every, id="reconcile")
        add(self._guarded("orientation", jobs.watch_orientation), "interval", seconds=60 * every, id="orientation")
        add(self._guarded("digests", jobs.digests), "interval", seconds=5 * every, id="digests")
        add(self._guarded("campaign", jobs.campaign), "interval", seconds=5 * every, id="campaign")
        add(self._guarded("retention", _retention), "cron", hour=3, minute=30, id="retention")
        for name, trigger, fn in extra_jobs(self.app):
            add(self._guarded(name, fn), trigger=trigger, id=name)

    def run(self) -> None:
        from worker.bootstrap import startup_line
        from worker.entrypoints import queues

        self.add_jobs()
        log.info(startup_line(self.app.settings, "scheduler", ",".join(queues.ALL)))
        log.info("scheduler %s: jobs every %g s, lease %g s, heartbeat %s", self.owner, self.interval, self.lease,
                 heartbeat_path(self.app))
        try:
            self.scheduler.start()
        finally:
            release_lease(self.app, "scheduler", self.owner)


def _retention(app):
    from worker.services.retention import purge_expired

    return purge_expired(app, dt.datetime.now(UTC))


# --- the heartbeat: `relance scheduler --check` (the compose health check) ---------------------------------


def heartbeat_path(app, host: str | None = None) -> Path:
    """One file per machine (the data directory may be shared): ``<data dir>/run/scheduler-<host>.json``."""
    return app.settings.data_dir / "run" / f"scheduler-{host or socket.gethostname()}.json"


def write_heartbeat(app, owner: str, *, leader: bool, interval: float, now: dt.datetime | None = None) -> None:
    path = heartbeat_path(app)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"owner": owner, "pid": os.getpid(), "leader": leader, "interval": interval,
                                   "at": (now or dt.datetime.now(UTC)).isoformat()}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # the health check will say so; the scheduler goes on
        log.warning("heartbeat not written (%s)", type(exc).__name__)


def check_heartbeat(app, now: dt.datetime | None = None) -> str:
    """The scheduler on this machine ran a cycle recently: its state in French; ValueError otherwise."""
    path = heartbeat_path(app)
    try:
        beat = json.loads(path.read_text(encoding="utf-8"))
        at = dt.datetime.fromisoformat(beat["at"])
        interval = float(beat["interval"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"aucun battement du planificateur sur cette machine ({path}) : "
                         "« relance scheduler » ne tourne pas ou n'a pas encore fait de cycle") from None
    age = ((now or dt.datetime.now(UTC)) - at).total_seconds()
    if age > 3 * interval + 30:
        raise ValueError(f"planificateur figé : dernier cycle il y a {age:.0f} s (période {interval:g} s)")
    role = "actif" if beat.get("leader") else "en attente (un autre planificateur détient le bail)"
    return f"planificateur {role}, dernier cycle il y a {age:.0f} s"


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
