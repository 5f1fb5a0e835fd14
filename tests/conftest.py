"""Shared pytest fixtures.

Infrastructure (tests/infra/), one server of each kind per pytest process
(per xdist worker), on 127.0.0.1 and a free port, stopped at session end:

- ``pg_server``  (session)  -> tests.infra.postgres.PostgresServer
- ``pg_url``     (function) -> str, SQLAlchemy URL of a fresh, empty database
                               "postgresql+psycopg://postgres@127.0.0.1:PORT/t_<hex>"
                               (dropped after the test)
- ``redis_server`` (session) -> tests.infra.redis_server.RedisServer
- ``redis_url``  (function) -> str "redis://127.0.0.1:PORT/0", FLUSHALL'ed first
- ``db_url``     (function, params "sqlite" / "postgresql") -> str, a fresh
                               SQLAlchemy URL on each backend: use it to run
                               store/engine tests on both.

Fault tests may ``pg_server.stop()`` / ``redis_server.stop()`` the session
servers: ``pg_url``/``redis_url`` start them again for the next test. A test
that needs its own server (appendonly Redis, a cluster it may wreck) can build
one with ``PostgresServer()`` / ``RedisServer(appendonly=True)`` as a context
manager.

Missing server binaries: skip, except under CI=true where it is a failure
(.ci/run must install them). Tests using these fixtures are auto-marked
``postgres`` / ``redis``, so ``-m "not postgres and not redis"`` selects the
tests that need no server.
"""

from __future__ import annotations

import os

import pytest

from tests.infra.postgres import PostgresServer, find_pg_bin
from tests.infra.redis_server import RedisServer, find_redis_server


def _missing(what: str) -> None:
    """Fail under CI (the CI script must install it), skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {what} not found: .ci/run must install them", pytrace=False)
    pytest.skip(f"{what} not found (install them to run this test)")


# --- infrastructure: PostgreSQL ---------------------------------------------


@pytest.fixture(scope="session")
def pg_server():
    """The session's throwaway PostgreSQL cluster (started once)."""
    if find_pg_bin() is None:
        _missing(
            "PostgreSQL server binaries (initdb, postgres: PATH, $RELANCE_PG_BIN or "
            "/usr/lib/postgresql/*/bin)"
        )
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(pg_server):
    """A fresh empty database in the session cluster; dropped afterwards."""
    pg_server.start()  # no-op unless a previous test stopped it
    url = pg_server.create_database()
    yield url
    if pg_server.running:
        pg_server.drop_database(url.rsplit("/", 1)[1])


# --- infrastructure: Redis --------------------------------------------------


@pytest.fixture(scope="session")
def redis_server():
    """The session's throwaway redis-server (no persistence)."""
    if find_redis_server() is None:
        _missing("redis-server binary (PATH or $RELANCE_REDIS_SERVER)")
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server):
    """redis://127.0.0.1:PORT/0 on the session server, all dbs flushed."""
    redis_server.start()  # no-op unless a previous test stopped it
    redis_server.flushall()
    return redis_server.url


# --- infrastructure: both SQL backends --------------------------------------


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def db_url(request, tmp_path):
    """A fresh SQLAlchemy URL, once per backend: ``sqlite:////<tmp>/relance.db``
    and a new PostgreSQL database (see ``pg_url``)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'relance.db'}"
    return request.getfixturevalue("pg_url")


def pytest_collection_modifyitems(items):
    """Auto-mark tests by the servers they use. Extend this hook rather than
    defining a second one in this file (the latter would replace it)."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "pg_server" in names:
            item.add_marker(pytest.mark.postgres)
        if "redis_server" in names:
            item.add_marker(pytest.mark.redis)


# --- app fixtures below ---
