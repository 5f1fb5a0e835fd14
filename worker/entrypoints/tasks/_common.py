from __future__ import annotations

import datetime as dt

UTC = dt.timezone.utc


def parse_now(now_iso: str | None) -> dt.datetime:
    """Simulated time travels with the task; otherwise the real clock, at execution."""
    if now_iso:
        value = dt.datetime.fromisoformat(now_iso)
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return dt.datetime.now(UTC)


def now_or_clock(now: dt.datetime | None) -> dt.datetime:
    """The given (simulated) moment, else the real clock."""
    return now or dt.datetime.now(UTC)


def as_task_arg(now: dt.datetime | None) -> str | None:
    """``now`` as it travels with a task (``None``: the worker reads its clock)."""
    return now.isoformat() if now is not None else None
