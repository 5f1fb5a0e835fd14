"""Maintenance tasks (queue ``maintenance``): sweep due cases, relay the outbox, reconcile."""
from worker.bootstrap import get_app
from worker.entrypoints.celery_app import celery
from worker.entrypoints.tasks import dispatch
from worker.entrypoints.tasks._common import parse_now


@celery.task(name="relance.maintenance.sweep", acks_late=True, reject_on_worker_lost=True)
def sweep(now_iso: str | None = None) -> int:
    return dispatch.sweep(get_app(), parse_now(now_iso) if now_iso else None)


@celery.task(name="relance.maintenance.relay", acks_late=True, reject_on_worker_lost=True)
def relay(now_iso: str | None = None) -> int:
    return dispatch.relay(get_app(), parse_now(now_iso) if now_iso else None)


@celery.task(name="relance.maintenance.reconcile", acks_late=True, reject_on_worker_lost=True)
def reconcile(now_iso: str | None = None) -> int:
    from worker.services import sending

    return sending.reconcile_stuck(get_app(), parse_now(now_iso))
