"""Case tasks (queue ``cases``): advance due cases (one, or a batch), apply one event.

Both are safe to rerun: advancing a case that is no longer due does nothing,
and events carry an idempotency key. ``apply_event`` checks its arguments exactly
as ``POST /events`` does (the same model, the same date bounds).
"""
import datetime as dt
from zoneinfo import ZoneInfo

from worker.bootstrap import get_app
from worker.entrypoints.celery_app import celery
from worker.entrypoints.tasks._common import parse_ids, parse_now, short_limits
from worker.entrypoints.validation import EVENT_SOURCES, InputError, aware, check_event_dates, parse_id
from worker.services import cases

UTC = dt.timezone.utc


@celery.task(name="relance.cases.advance", acks_late=True, reject_on_worker_lost=True, **short_limits())
def advance(case_id: int, now_iso: str | None = None) -> list[int]:
    app = get_app()
    return cases.advance_case(app, parse_id(case_id, "case_id"), parse_now(now_iso, app.settings))


@celery.task(name="relance.cases.advance_batch", acks_late=True, reject_on_worker_lost=True, **short_limits())
def advance_batch(case_ids: list[int], now_iso: str | None = None) -> int:
    """A batch of due cases (the sweep's): one transaction; how many planned messages."""
    app = get_app()
    planned = cases.advance_cases(app, parse_ids(case_ids, "case_ids"), parse_now(now_iso, app.settings))
    return sum(len(ids) for ids in planned.values())


@celery.task(name="relance.cases.apply_event", acks_late=True, reject_on_worker_lost=True, **short_limits())
def apply_event(external_id: str, type: str, now_iso: str | None = None, idempotency_key: str | None = None,
                **fields) -> dict:
    from pydantic import ValidationError

    from worker.entrypoints.api import EventIn, _french_error

    app = get_app()
    tz = ZoneInfo(app.settings.timezone)
    source = fields.pop("source", "api")
    if source not in EVENT_SOURCES:
        raise InputError("source", f"source inconnue {str(source)[:20]!r} (attendu : {', '.join(EVENT_SOURCES)})")
    now = parse_now(now_iso, app.settings)
    try:
        event = EventIn.model_validate({"type": type, "external_id": external_id,
                                        "idempotency_key": idempotency_key, **fields})
    except ValidationError as exc:
        first = _french_error(exc.errors()[0])
        raise InputError(first["field"], first["message"]) from None
    check_event_dates(event, max(now, dt.datetime.now(UTC)), tz)
    if event.at is not None:
        now = aware(event.at, tz)
    values = event.model_dump(exclude={"type", "external_id", "idempotency_key", "at"})
    for key in ("until", "appointment_at"):
        values[key] = aware(values.get(key), tz)
    res = cases.apply_event(app, external_id=event.external_id, type=event.type, now=now,
                            idempotency_key=event.idempotency_key, source=source, **values)
    return {"event_id": res.event_id, "status": res.status, "note": res.note}
