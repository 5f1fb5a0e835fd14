"""Engine, sessions and migrations."""
from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _create_private(path: str) -> None:
    """A new SQLite database file is created 0600 (personal data; its -wal and -shm files get
    the same mode from SQLite); an existing one is left as it is."""
    if "?" in path or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except FileExistsError:
        pass


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            _create_private(path)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


@lru_cache(maxsize=8)
def _factory(url: str) -> sessionmaker:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


# Set by one_transaction: (url, session) that every session_scope(url) inside it shares.
_SHARED: ContextVar[tuple[str, Session] | None] = ContextVar("relance_shared_session", default=None)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on error.

    Inside :func:`one_transaction` on the same URL: that transaction's session,
    committed or rolled back by it, as a whole."""
    shared = _SHARED.get()
    if shared is not None and shared[0] == url:
        yield shared[1]
        return
    session = _factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def one_transaction(url: str) -> Iterator[Session]:
    """All or nothing: every ``session_scope(url)`` opened inside (by any service this code
    calls) joins this one session; committed at the end, rolled back whole on any error."""
    with session_scope(url) as session:
        token = _SHARED.set((url, session))
        try:
            yield session
        finally:
            _SHARED.reset(token)


def ping_database(url: str) -> None:
    """Raises if the database does not answer ``SELECT 1``."""
    with get_engine(url).connect() as conn:
        conn.execute(text("SELECT 1"))


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    get_engine(url)  # creates the SQLite folder
    command.upgrade(alembic_config(url), revision)


def dispose_all() -> None:
    for fn in (get_engine,):
        fn.cache_clear()
    _factory.cache_clear()
