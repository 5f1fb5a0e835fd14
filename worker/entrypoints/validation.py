"""What the entry points accept, checked the same way by the HTTP API and the Celery tasks.

A task can be published by anyone who reaches the broker (Flower, a script): it must
not accept more than ``POST /events`` does. Bounds:

* every date lies between :data:`MIN_DATE` (1 January 2000) and now + :data:`MAX_AHEAD`
  (2 years); an event's own date (``at``) at most :data:`MAX_FUTURE` (5 minutes) ahead;
* every id fits a PostgreSQL BIGINT (1 … 2**63-1);
* strings carry no control characters (a NUL byte is refused by PostgreSQL).

Messages are in French (agents read them).
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

UTC = dt.timezone.utc
MIN_DATE = dt.date(2000, 1, 1)
MAX_AHEAD = dt.timedelta(days=731)  # 2 years: an appointment, the end of a legitimate reason
MAX_FUTURE = dt.timedelta(minutes=5)  # an event's `at` may not be later than now + this
MAX_ID = 2 ** 63 - 1  # PostgreSQL BIGINT
EVENT_SOURCES = ("api", "cli", "provider", "mailroom", "agent")

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


class InputError(ValueError):
    """Refused input: ``field`` (or None) and a French ``message``."""

    def __init__(self, field: str | None, message: str):
        self.field, self.message = field, message
        super().__init__(f"{field} : {message}" if field else message)


def parse_id(value: Any, field: str = "id") -> int:
    """A database id (message, case): a positive integer that fits a BIGINT."""
    if isinstance(value, bool):
        raise InputError(field, "identifiant entier attendu")
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[0-9]{1,19}", text):
            raise InputError(field, "identifiant entier positif attendu (19 chiffres au plus)")
        value = int(text)
    if not isinstance(value, int):
        raise InputError(field, "identifiant entier attendu")
    if not 1 <= value <= MAX_ID:
        raise InputError(field, f"identifiant hors bornes (1 à {MAX_ID})")
    return value


def check_field(name: str, value: Any) -> Any:
    """The static bounds of one input field (pydantic ``field_validator("*")``): no control
    characters in text (free text may span lines), no date before :data:`MIN_DATE`."""
    if isinstance(value, str):
        text = value if name == "reason" else value.replace("\n", "\x00").replace("\r", "\x00").replace("\t", "\x00")
        if _CONTROL.search(text):
            raise ValueError("caractères de contrôle interdits")
    elif isinstance(value, (dt.date, dt.datetime)):
        day = value.date() if isinstance(value, dt.datetime) else value
        if day < MIN_DATE:
            raise ValueError(f"date antérieure au {MIN_DATE:%d/%m/%Y} refusée")
    return value


def aware(value: dt.datetime | None, tz: ZoneInfo) -> dt.datetime | None:
    """A naive date-time is local to the territory; returned in UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(UTC)


def check_event_dates(event: BaseModel, now: dt.datetime, tz: ZoneInfo) -> None:
    """Every date of ``event`` at most 2 years after ``now`` (``at``: 5 minutes), at the
    earliest :data:`MIN_DATE`: :class:`InputError` for the first one out of bounds."""
    latest = now + MAX_AHEAD
    for name in type(event).model_fields:
        value = getattr(event, name)
        if not isinstance(value, (dt.date, dt.datetime)):
            continue
        day = value.date() if isinstance(value, dt.datetime) else value
        if day < MIN_DATE:
            raise InputError(name, f"date antérieure au {MIN_DATE:%d/%m/%Y} refusée")
        if isinstance(value, dt.datetime):
            # Compare the calendar day first: a far-away date cannot even be converted.
            if value.date() > latest.date() + dt.timedelta(days=1):
                raise InputError(name, f"date trop lointaine (au plus le {latest.astimezone(tz):%d/%m/%Y})")
            moment = aware(value, tz)
            limit = now + MAX_FUTURE if name == "at" else latest
            if moment > limit:
                if name == "at":
                    raise InputError(name, "la date de l'événement est dans le futur "
                                           "(au plus 5 minutes d'avance acceptées)")
                raise InputError(name, f"date trop lointaine (au plus le {latest.astimezone(tz):%d/%m/%Y})")
        elif value > latest.astimezone(tz).date():
            raise InputError(name, f"date trop lointaine (au plus le {latest.astimezone(tz):%d/%m/%Y})")


def check_now(now: dt.datetime, real_now: dt.datetime) -> None:
    """A simulated ``now`` carried by a task: within the same bounds as any date."""
    if now.date() < MIN_DATE or now > real_now + MAX_AHEAD:
        raise InputError("now_iso", f"instant simulé hors bornes ({MIN_DATE:%d/%m/%Y} … dans 2 ans)")
