"""Bulk writes for large files: COPY on PostgreSQL, multi-row INSERT ... RETURNING elsewhere;
database errors turned into messages that quote no row (:func:`database_errors_as`)."""
from __future__ import annotations

import contextlib
import datetime as dt

from sqlalchemy import String, any_, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError
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


def database_error_kind(exc: BaseException) -> str:
    """The driver's class and SQLSTATE (``StringDataRightTruncation, SQLSTATE 22001``): never its
    message, which may quote a value (a COPY error quotes the whole line)."""
    orig = getattr(exc, "orig", None) or exc
    state = getattr(orig, "sqlstate", None)
    return f"{type(orig).__name__}, SQLSTATE {state}" if state else type(orig).__name__


def is_database_error(exc: BaseException) -> bool:
    """SQLAlchemy's errors, and the driver's own (raised as is by the COPY cursor)."""
    return isinstance(exc, SQLAlchemyError) or type(exc).__module__.split(".")[0] in ("psycopg", "sqlite3")


@contextlib.contextmanager
def database_errors_as(error_cls: type[Exception], message: str):
    """Re-raise any database error as ``error_cls(message.format(kind=...))``, without the driver's
    text nor its chain (tracebacks and reports then carry no row data)."""
    try:
        yield
    except Exception as exc:
        if not is_database_error(exc):
            raise
        kind = database_error_kind(exc)
    else:
        return
    raise error_cls(message.format(kind=kind))
