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


@pytest.fixture
def relance_app(db_url, tmp_path):
    """A migrated database on each backend and the process-wide app context
    built on it (local channels, eager Celery, outbox/inbox under tmp_path/var).

    Tasks (``worker.entrypoints.tasks.*``) use this context through ``get_app()``; it is
    reset to None and the database engine disposed afterwards (so PostgreSQL
    databases can be dropped)."""
    from worker.bootstrap import build_app, set_app
    from worker.entrypoints.celery_app import celery, configure
    from worker.adapters.store import session as db_session
    from worker.settings import Settings

    settings = Settings(data_dir=tmp_path / "var", database_url=db_url, broker_url="memory://")
    app = build_app(settings)
    saved = {k: celery.conf[k] for k in ("broker_url", "task_always_eager")}
    configure(settings)  # eager, in-process tasks (whatever RELANCE_BROKER_URL says)
    db_session.upgrade(db_url)
    set_app(app)
    try:
        yield app
    finally:
        set_app(None)
        celery.conf.update(saved)
        db_session.get_engine(db_url).dispose()
        db_session.dispose_all()


FLUX_COLUMNS = ("external_id", "nir", "last_name", "first_name", "birth_date", "sex", "address_line1",
                "address_line2", "postcode", "city", "phone", "email", "droit_opened_on", "orientation",
                "ft_registered", "organisation", "droits_devoirs")


def make_nir(n: int, sex: int = 1) -> str:
    """A syntactically valid NIR (13 digits + mod-97 key), distinct for each ``n``."""
    body = f"{sex}850135{n % 1000000:06d}"
    return body + f"{97 - int(body) % 97:02d}"


@pytest.fixture
def flux_writer(tmp_path):
    """``write(rows, name="flux.csv") -> Path``: a UTF-8 CSV flux file of synthetic
    people; each row is a dict of overrides on a complete CD person
    (``external_id`` required)."""
    import csv

    def write(rows, name="flux.csv"):
        path = tmp_path / "flux" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as fh:
            out = csv.DictWriter(fh, fieldnames=FLUX_COLUMNS)
            out.writeheader()
            for i, row in enumerate(rows):
                digits = "".join(c for c in row["external_id"] if c.isdigit()) or str(i)
                full = {
                    "nir": make_nir(int(digits) + i), "last_name": "Testeur", "first_name": f"Alix{i}",
                    "birth_date": "1980-01-15", "sex": "F", "address_line1": f"{i + 1} rue des Tests",
                    "address_line2": "", "postcode": "35600", "city": "REDON",
                    "phone": f"06 12 34 {i // 100 % 100:02d} {i % 100:02d}",
                    "email": f"alix{i}@example.org", "droit_opened_on": "2024-06-03", "orientation": "cd",
                    "ft_registered": "false", "organisation": "CDAS-REDON", "droits_devoirs": "true",
                }
                full.update(row)
                out.writerow(full)
        return path

    return write
