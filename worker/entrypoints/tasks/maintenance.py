"""Maintenance tasks (queue ``maintenance``): sweep due cases, relay the outbox, reconcile.

The scheduler runs the same passes in its own process (worker.entrypoints.jobs); these
tasks are for a pass run by hand through a worker (``tests/e2e``)."""
from worker.bootstrap import get_app
from worker.entrypoints.celery_app import celery
from worker.entrypoints.tasks import dispatch
from worker.entrypoints.tasks._common import long_limits, parse_now


@celery.task(name="relance.maintenance.sweep", acks_late=True, reject_on_worker_lost=True, **long_limits())
def sweep(now_iso: str | None = None) -> int:
    app = get_app()
    return dispatch.sweep(app, parse_now(now_iso, app.settings) if now_iso else None)


@celery.task(name="relance.maintenance.relay", acks_late=True, reject_on_worker_lost=True, **long_limits())
def relay(now_iso: str | None = None) -> int:
    app = get_app()
    return dispatch.relay(app, parse_now(now_iso, app.settings) if now_iso else None)


@celery.task(name="relance.maintenance.reconcile", acks_late=True, reject_on_worker_lost=True, **long_limits())
def reconcile(now_iso: str | None = None) -> int:
    from worker.services import sending

    app = get_app()
    return sending.reconcile_stuck(app, parse_now(now_iso, app.settings))
