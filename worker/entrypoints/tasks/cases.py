"""Case tasks (queue ``cases``): advance one due case, apply one event.

Both are safe to rerun: advancing a case that is no longer due does nothing,
and events carry an idempotency key.
"""
from worker.bootstrap import get_app
from worker.entrypoints.celery_app import celery
from worker.services import cases
from worker.entrypoints.tasks._common import parse_now


@celery.task(name="relance.cases.advance", acks_late=True, reject_on_worker_lost=True)
def advance(case_id: int, now_iso: str | None = None) -> list[int]:
    return cases.advance_case(get_app(), case_id, parse_now(now_iso))


@celery.task(name="relance.cases.apply_event", acks_late=True, reject_on_worker_lost=True)
def apply_event(external_id: str, type: str, now_iso: str | None = None, idempotency_key: str | None = None,
                **fields) -> dict:
    for key in ("until", "appointment_at"):
        if fields.get(key):
            fields[key] = parse_now(fields[key])
    if fields.get("receipt_on"):
        import datetime as dt

        fields["receipt_on"] = dt.date.fromisoformat(fields["receipt_on"])
    res = cases.apply_event(get_app(), external_id=external_id, type=type, now=parse_now(now_iso),
                               idempotency_key=idempotency_key, source=fields.pop("source", "api"), **fields)
    return {"event_id": res.event_id, "status": res.status, "note": res.note}
