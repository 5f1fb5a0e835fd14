"""The test infrastructure itself: throwaway PostgreSQL/Redis servers and the
fixtures of tests/conftest.py, exercised for real."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from tests.infra import LOCALHOST, port_accepts
from tests.infra.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]

# database names handed out by pg_url, in this module, in order
_seen_pg_dbs: list[str] = []


def _engine(url: str, **kw) -> sa.Engine:
    if url.startswith("postgresql"):
        kw.setdefault("connect_args", {"connect_timeout": 3})
    return sa.create_engine(url, **kw)


def _roundtrip(engine: sa.Engine) -> list[tuple[int, str]]:
    meta = sa.MetaData()
    t = sa.Table(
        "infra_probe",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("label", sa.String(50), nullable=False),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"id": 1, "label": "é-un"}, {"id": 2, "label": "deux"}])
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(t.c.id, t.c.label).order_by(t.c.id))]


# --- PostgreSQL ---------------------------------------------------------------


@pytest.mark.postgres
def test_pg_roundtrip_with_sqlalchemy_psycopg(pg_url):
    assert pg_url.startswith(f"postgresql+psycopg://postgres@{LOCALHOST}:")
    engine = _engine(pg_url)
    try:
        assert engine.dialect.driver == "psycopg"
        assert _roundtrip(engine) == [(1, "é-un"), (2, "deux")]
        with engine.connect() as conn:
            settings = dict(
                conn.execute(
                    sa.text(
                        "SELECT name, setting FROM pg_settings WHERE name IN "
                        "('listen_addresses', 'fsync', 'server_encoding', 'TimeZone', 'lc_collate')"
                    )
                ).all()
            )
            user = conn.execute(sa.text("SELECT current_user")).scalar()
    finally:
        engine.dispose()
    assert settings == {
        "listen_addresses": "127.0.0.1",
        "fsync": "off",
        "server_encoding": "UTF8",
        "TimeZone": "UTC",
        "lc_collate": "C",
    }
    assert user == "postgres"


@pytest.mark.postgres
def test_pg_server_does_not_run_as_root(pg_server):
    owner = pg_server.data_dir.stat().st_uid
    proc_uid = os.stat(f"/proc/{pg_server.pid}").st_uid
    assert proc_uid == owner
    if os.geteuid() == 0:
        assert proc_uid != 0


@pytest.mark.postgres
@pytest.mark.parametrize("run", [1, 2])
def test_pg_url_is_a_fresh_database_per_test(pg_server, pg_url, run):
    name = pg_url.rsplit("/", 1)[1]
    assert name not in _seen_pg_dbs
    engine = _engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar() == name
            # empty: nothing left by the other run
            assert sa.inspect(conn).get_table_names() == []
        _roundtrip(engine)
    finally:
        engine.dispose()
    # databases of earlier tests were dropped
    with pg_server.connect() as conn:
        existing = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    assert name in existing
    assert not existing & set(_seen_pg_dbs)
    _seen_pg_dbs.append(name)


@pytest.mark.postgres
def test_pg_stop_then_start_same_port_same_data(pg_server, pg_url):
    engine = _engine(pg_url, pool_pre_ping=True)
    try:
        _roundtrip(engine)
        port, pid = pg_server.port, pg_server.pid

        pg_server.stop()
        assert not pg_server.running
        assert not port_accepts(LOCALHOST, port)
        with pytest.raises(sa.exc.OperationalError):
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))

        pg_server.start()
        assert pg_server.running and pg_server.port == port and pg_server.pid != pid
        # same engine recovers (pre-ping replaces the dead pooled connection)
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, label FROM infra_probe ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, "é-un"), (2, "deux")]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_pg_immediate_stop_recovers(pg_server, pg_url):
    """Crash-like stop (no checkpoint): committed data survives recovery."""
    engine = _engine(pg_url)
    try:
        _roundtrip(engine)
    finally:
        engine.dispose()
    pg_server.stop("immediate")
    pg_server.start()
    engine = _engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM infra_probe")).scalar() == 2
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_pg_url_restarts_a_cluster_left_stopped(pg_server):
    # a fault test that forgets to start() again must not break the next ones
    pg_server.stop()


@pytest.mark.postgres
def test_pg_after_left_stopped(pg_server, pg_url):
    assert pg_server.running
    engine = _engine(pg_url)
    try:
        assert _roundtrip(engine)
    finally:
        engine.dispose()


# --- both SQL backends ----------------------------------------------------------


def test_db_url_both_backends(db_url, request, tmp_path):
    backend = request.node.callspec.params["db_url"]
    if backend == "sqlite":
        assert db_url == f"sqlite:///{tmp_path}/relance.db"
        assert request.node.get_closest_marker("postgres") is None
    else:
        assert db_url.startswith("postgresql+psycopg://")
        assert request.node.get_closest_marker("postgres") is not None
    engine = _engine(db_url)
    try:
        assert engine.dialect.name == backend
        assert _roundtrip(engine) == [(1, "é-un"), (2, "deux")]
    finally:
        engine.dispose()


# --- Redis ----------------------------------------------------------------------


@pytest.mark.redis
def test_redis_set_get(redis_url, redis_server):
    assert redis_url == f"redis://{LOCALHOST}:{redis_server.port}/0"
    r = redis.Redis.from_url(redis_url)
    try:
        r.set("k", "v")
        assert r.get("k") == b"v"
        assert r.config_get("bind")["bind"] == LOCALHOST
        assert r.config_get("save")["save"] == ""
    finally:
        r.close()


@pytest.mark.redis
@pytest.mark.parametrize("run", [1, 2])
def test_redis_flushed_per_test(redis_url, redis_server, run):
    r0 = redis.Redis.from_url(redis_url)
    r5 = redis.Redis.from_url(redis_server.url_for(5))
    try:
        assert r0.dbsize() == 0 and r5.dbsize() == 0
        r0.set("left-over", run)
        r5.set("left-over", run)
    finally:
        r0.close()
        r5.close()


@pytest.mark.redis
def test_redis_restart_keeps_nothing(redis_url, redis_server):
    port = redis_server.port
    r = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        r.set("k", "v")
        redis_server.stop()
        assert not port_accepts(LOCALHOST, port)
        with pytest.raises(redis.ConnectionError):
            r.get("k")
        redis_server.start()
        assert redis_server.port == port
        assert r.get("k") is None  # the client reconnects by itself
    finally:
        r.close()


@pytest.mark.redis
def test_redis_url_restarts_a_server_left_stopped(redis_server):
    redis_server.stop()


@pytest.mark.redis
def test_redis_after_left_stopped(redis_url):
    r = redis.Redis.from_url(redis_url)
    try:
        assert r.ping()
    finally:
        r.close()


@pytest.mark.redis
def test_redis_appendonly_survives_restart_and_kill(redis_server):
    # redis_server is requested only for the skip/fail logic (binary present)
    with RedisServer(appendonly=True) as srv:
        r = redis.Redis.from_url(srv.url)
        try:
            r.set("k", "v")
            srv.restart()
            assert r.get("k") == b"v"
            r.set("k2", "v2")
            pid = srv.pid
            srv.kill()
            srv.start()
            assert srv.pid != pid
            assert r.mget("k", "k2") == [b"v", b"v2"]
        finally:
            r.close()
    assert not srv.running and not srv.base_dir.exists()


# --- skip / fail when the binaries are missing ------------------------------------


@pytest.mark.parametrize("ci", [None, "true"])
def test_missing_pg_binaries_skip_or_fail(tmp_path, ci):
    (tmp_path / "test_needs_pg.py").write_text(
        textwrap.dedent(
            """
            def test_needs_pg(pg_url):
                pass
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["RELANCE_PG_BIN"] = str(tmp_path / "no-such-dir")
    if ci:
        env["CI"] = ci
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "-rsf", "-q", str(tmp_path / "test_needs_pg.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    if ci:
        assert proc.returncode == 1, out
        assert "CI=true but PostgreSQL server binaries" in out
        assert ".ci/run must install them" in out
    else:
        assert proc.returncode == 0, out
        assert "1 skipped" in out and "PostgreSQL server binaries" in out
