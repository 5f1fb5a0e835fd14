"""Bulk writes for large files: COPY on PostgreSQL, multi-row INSERT ... RETURNING elsewhere."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import String, any_, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

UTC = dt.timezone.utc
COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
COPY_NULL = "\\N"


def in_values(s: Session, column, values: list):
    """``column IN (values)``; on PostgreSQL ``= ANY(array)``: one parameter, not thousands."""
    if s.bind.dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(String)))
    return column.in_(values)


def copy_text(value) -> str:
    """One field in COPY's text format, as the store keeps it (UTCDateTime: naive UTC)."""
    kind = type(value)
    if kind is str:
        return value.translate(COPY_ESCAPES)
    if value is None:
        return COPY_NULL
    if kind is bool:
        return "t" if value else "f"
    if kind is int or kind is float:
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        return repr(float(value))
    raise TypeError(f"no COPY text for {kind.__name__}")


def take_ids(s: Session, table: str, n: int) -> list[int]:
    """``n`` new ids of ``table`` (PostgreSQL sequence), ascending."""
    if not n:
        return []
    ids = s.execute(text(f"SELECT array_agg(nextval(pg_get_serial_sequence('{table}', 'id'))) "
                         "FROM generate_series(1, :n)"), {"n": n}).scalar_one()
    return sorted(ids)


def copy_rows(s: Session, table: str, columns: tuple[str, ...], lines: list[str]) -> None:
    if not lines:
        return
    cursor = s.connection().connection.driver_connection.cursor()
    try:
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            copy.write("".join(lines))
    finally:
        cursor.close()


def insert_returning_ids(s: Session, table, rows: list[dict]) -> list[int]:
    """Multi-row INSERT; the new ids in the order of ``rows``."""
    if not rows:
        return []
    stmt = table.insert().returning(table.c.id, sort_by_parameter_order=True)
    return list(s.execute(stmt, rows).scalars())
