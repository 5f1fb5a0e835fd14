from __future__ import annotations

import datetime as dt

UTC = dt.timezone.utc


def parse_now(now_iso: str | None) -> dt.datetime:
    """Simulated time travels with the task; otherwise the real clock, at execution."""
    if now_iso:
        value = dt.datetime.fromisoformat(now_iso)
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return dt.datetime.now(UTC)
