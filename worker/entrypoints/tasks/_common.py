"""What every task shares: its simulated ``now``, its argument checks, its time limits.

A task can be published by anyone who reaches the broker (a script, a Flower user):
it checks its arguments like ``POST /events`` does (:mod:`worker.entrypoints.validation`)
and refuses a simulated ``now`` that real channels would act on (the ``--now`` rule).
A refused task raises :class:`~worker.entrypoints.validation.InputError` (FAILURE in
Flower, one line in the worker's log) and does nothing.
"""
from __future__ import annotations

import datetime as dt

from worker.entrypoints.validation import InputError, check_now, parse_id

UTC = dt.timezone.utc
MAX_BATCH = 1000  # ids in one batch task


def parse_now(now_iso: str | None, settings=None) -> dt.datetime:
    """Simulated time travels with the task; otherwise the real clock, at execution.

    With ``settings`` (the worker's), a simulated time is refused when a real provider
    could act on it (``Settings.simulated_time_allowed``; eager mode: the caller is this
    very process, which already applied the rule), and it must lie between 2000 and now + 2 years.
    """
    real = dt.datetime.now(UTC)
    if not now_iso:
        return real
    if not isinstance(now_iso, str):
        raise InputError("now_iso", "instant ISO 8601 attendu")
    try:
        value = dt.datetime.fromisoformat(now_iso)
    except ValueError:
        raise InputError("now_iso", f"instant ISO 8601 invalide {now_iso[:40]!r}") from None
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    if settings is not None:
        check_now(value, real)
        if not settings.eager and not settings.simulated_time_allowed:
            raise InputError("now_iso", "instant simulé refusé : des canaux réels sont configurés "
                                        "(comme --now, permis seulement avec les canaux locaux)")
    return value


def parse_ids(values, field: str) -> list[int]:
    """The ids of a batch task: 1 to MAX_BATCH database ids."""
    if not isinstance(values, (list, tuple)) or not 1 <= len(values) <= MAX_BATCH:
        raise InputError(field, f"liste de 1 à {MAX_BATCH} identifiants attendue")
    return [parse_id(v, field) for v in values]


def clock_for(now_iso: str | None):
    """The real clock for a task without a simulated ``now`` (a long batch dates each wave), else None."""
    return None if now_iso else (lambda: dt.datetime.now(UTC))


def outcome_counts(results) -> dict[str, int]:
    """What a batch task returns (Flower shows it): outcome -> how many."""
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    return counts


def now_or_clock(now: dt.datetime | None) -> dt.datetime:
    """The given (simulated) moment, else the real clock."""
    return now or dt.datetime.now(UTC)


def as_task_arg(now: dt.datetime | None) -> str | None:
    """``now`` as it travels with a task (``None``: the worker reads its clock)."""
    return now.isoformat() if now is not None else None


def _settings():
    from worker.settings import get_settings

    return get_settings()


def short_limits() -> dict:
    """Time limits of the ordinary tasks (a send, advancing a case): RELANCE_TASK_TIME_LIMIT."""
    s = _settings()
    return {"time_limit": s.task_time_limit, "soft_time_limit": s.task_soft_time_limit}


def long_limits() -> dict:
    """Time limits of the long tasks (a flux file, a bounce scan, the maintenance passes): RELANCE_INGEST_TIME_LIMIT."""
    s = _settings()
    return {"time_limit": s.ingest_time_limit, "soft_time_limit": s.ingest_soft_time_limit}
