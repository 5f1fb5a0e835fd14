"""A throwaway PostgreSQL cluster for tests, from the system server binaries.

Usage::

    with PostgresServer() as pg:          # initdb + start, ~1-2 s
        url = pg.create_database("t1")    # "postgresql+psycopg://postgres@127.0.0.1:PORT/t1"
        pg.stop()                         # unreachable (connection refused)
        pg.start()                        # back, same port, same data

- binaries: :func:`find_pg_bin` (``$RELANCE_PG_BIN``, then ``PATH``, then the
  highest ``/usr/lib/postgresql/<version>/bin``);
- cluster in a fresh temp dir: ``initdb -A trust -E UTF8 --locale=C``,
  superuser ``postgres``, fsync and full_page_writes off (synchronous_commit
  stays on: see _initdb), timezone UTC, listening on 127.0.0.1:<free port> only, unix socket in the
  temp dir;
- PostgreSQL refuses to run as root: when euid == 0 initdb and postgres run
  as the ``postgres`` system user (``nobody`` if there is none) and the temp
  dir is chown'ed to it;
- ``postgres`` is a direct child (no pg_ctl daemon): ``stop()`` signals it
  and waits, so nothing outlives ``close()``; it also gets SIGQUIT if the
  test process dies.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

from . import (
    LOCALHOST,
    ServerError,
    env_without,
    free_port,
    run_checked,
    spawn,
    terminate,
    track,
)

SUPERUSER = "postgres"
_REQUIRED = ("initdb", "postgres")
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# pg "shutdown modes": smart waits for clients, fast disconnects them,
# immediate aborts without a checkpoint (crash-like: recovery on next start).
_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
# unix socket paths are limited to ~107 bytes (sun_path).
_MAX_SOCKET_DIR = 90


def _has_binaries(d: Path) -> bool:
    return all(os.access(d / name, os.X_OK) for name in _REQUIRED)


def _version_key(p: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin  ->  (15,) / (9, 6)
    return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)


def find_pg_bin() -> Path | None:
    """Directory holding the PostgreSQL server binaries (initdb, postgres), or
    None.

    Order: ``$RELANCE_PG_BIN`` if set; the directory of ``postgres``/``initdb``
    on PATH (symlinks resolved: Debian-style /usr/local/bin links point into
    /usr/lib/postgresql/N/bin); the highest ``/usr/lib/postgresql/*/bin``.
    """
    override = os.environ.get("RELANCE_PG_BIN")
    if override:
        d = Path(override)
        return d if _has_binaries(d) else None
    for name in _REQUIRED:
        hit = shutil.which(name)
        if hit:
            d = Path(hit).resolve().parent
            if _has_binaries(d):
                return d
    candidates = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if _has_binaries(d)]
    if candidates:
        return max(candidates, key=_version_key)
    return None


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to run the server as, or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return pw.pw_uid, pw.pw_gid
    raise ServerError("running as root and neither a 'postgres' nor a 'nobody' user exists")


def _reachable_by(path: Path, uid: int, gid: int) -> bool:
    """Can uid/gid traverse every ancestor of ``path``? (root-only check)"""
    for p in [path, *path.parents]:
        st = p.stat()
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return False
    return True


class PostgresServer:
    """One throwaway cluster. Not thread-safe; one per pytest process."""

    def __init__(
        self,
        bin_dir: Path | str | None = None,
        *,
        base_dir: Path | str | None = None,
        port: int | None = None,
        startup_timeout: float = 60.0,
        settings: dict[str, str | int] | None = None,
    ) -> None:
        found = Path(bin_dir) if bin_dir else find_pg_bin()
        if found is None or not _has_binaries(found):
            raise ServerError("PostgreSQL server binaries (initdb, postgres) not found")
        self.bin_dir: Path = found
        self.host = LOCALHOST
        self.startup_timeout = startup_timeout
        self._fixed_port = port
        self.port: int | None = port
        self._extra_settings = dict(settings or {})
        self._owner = _run_as()
        self._base_hint = Path(base_dir) if base_dir else None
        self.base_dir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._closed = False

    # -- paths ---------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None, "server never started"
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        assert self.base_dir is not None, "server never started"
        return self.base_dir / "postgres.log"

    @property
    def socket_dir(self) -> Path | None:
        if self.base_dir is None or len(str(self.base_dir)) > _MAX_SOCKET_DIR:
            return None
        return self.base_dir

    # -- state ---------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running else None

    # -- URLs ------------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) for ``dbname``."""
        self._need_port()
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def conninfo(self, dbname: str = "postgres") -> str:
        """libpq connection string, for psycopg.connect()."""
        self._need_port()
        return f"host={self.host} port={self.port} user={SUPERUSER} dbname={dbname}"

    def _need_port(self) -> None:
        if self.port is None:
            raise ServerError("server never started: no port yet")

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> "PostgresServer":
        """initdb on first call, then start postgres and wait until it accepts
        connections. Idempotent. Later calls reuse the same port and data."""
        if self._closed:
            raise ServerError("server was closed")
        if self.running:
            return self
        if self.base_dir is None:
            self._make_base_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        first_start = self.port is None
        attempts = 3 if (first_start and self._fixed_port is None) else 1
        for attempt in range(attempts):
            if self.port is None or (attempt and self._fixed_port is None):
                self.port = free_port(self.host)
            try:
                self._spawn_and_wait()
                return self
            except ServerError as exc:
                if attempt + 1 < attempts and "could not bind" in str(exc).lower():
                    continue  # lost the free-port race: pick another one
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Shut postgres down and wait; SIGKILL after ``timeout``. Data dir
        and port are kept for start().

        ``fast`` (default) disconnects clients and checkpoints; ``smart``
        waits for clients to leave; ``immediate`` is crash-like (no
        checkpoint, WAL recovery on next start: committed transactions
        survive, since fsync=off only matters if the OS crashes)."""
        if mode not in _STOP_SIGNALS:
            raise ValueError(f"mode must be one of {sorted(_STOP_SIGNALS)}")
        proc, self._proc = self._proc, None
        if not terminate(proc, _STOP_SIGNALS[mode], timeout):
            # killed: its lock file would make the next start refuse
            with contextlib.suppress(OSError):
                (self.data_dir / "postmaster.pid").unlink()

    def restart(self, mode: str = "fast") -> "PostgresServer":
        self.stop(mode)
        return self.start()

    def close(self) -> None:
        """Stop and delete the cluster. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop()
        finally:
            if self.base_dir is not None:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<PostgresServer {self.host}:{self.port} {state} {self.base_dir}>"

    # -- databases ---------------------------------------------------------------
    def create_database(self, name: str | None = None) -> str:
        """CREATE DATABASE ``name`` (default: a unique ``t_<hex>``) and return
        its SQLAlchemy URL."""
        from psycopg import sql

        name = name or f"t_{uuid.uuid4().hex[:16]}"
        if not _DB_NAME.match(name):
            raise ValueError(f"database name must match {_DB_NAME.pattern}: {name!r}")
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE IF EXISTS ``name``, disconnecting its clients."""
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def connect(self, dbname: str = "postgres", **kwargs):
        """A raw psycopg connection (autocommit), e.g. for assertions."""
        import psycopg

        kwargs.setdefault("connect_timeout", 5)
        kwargs.setdefault("autocommit", True)
        return psycopg.connect(self.conninfo(dbname), **kwargs)

    def _admin(self):
        return self.connect("postgres")

    # -- internals ---------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = env_without(("PG", "LC_"))
        env["LC_ALL"] = "C"
        env["LANG"] = "C"
        return env

    def _user_kwargs(self) -> dict:
        if self._owner is None:
            return {}
        return {"user": self._owner[0], "group": self._owner[1]}

    def _make_base_dir(self) -> None:
        parent = self._base_hint or Path(tempfile.gettempdir())
        if self._owner is not None and not _reachable_by(parent.resolve(), *self._owner):
            if self._base_hint is not None:
                raise ServerError(f"{parent} is not reachable by uid {self._owner[0]}")
            parent = Path("/tmp")
        parent.mkdir(parents=True, exist_ok=True)
        self.base_dir = Path(tempfile.mkdtemp(prefix="relance-pg-", dir=parent))
        track(self)
        if self._owner is not None:
            os.chown(self.base_dir, *self._owner)

    def _initdb(self) -> None:
        argv = [
            str(self.bin_dir / "initdb"),
            "-D", str(self.data_dir),
            "-U", SUPERUSER,
            "-A", "trust",
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
        ]
        run_checked(argv, cwd=self.base_dir, env=self._env(), **self._user_kwargs())
        settings: dict[str, str | int] = {
            "listen_addresses": f"'{self.host}'",
            "unix_socket_directories": f"'{self.socket_dir or ''}'",
            "fsync": "off",
            # NOT off, although asked for speed: with fsync=off it buys
            # nothing measurable (~55 vs ~65-80 us per commit here), and with
            # it off stop("immediate") loses the last ~0.6 s of commits that
            # clients saw succeed -- a crash test would then see "acknowledged
            # writes lost", which production (synchronous_commit=on) never
            # does. Override with settings={"synchronous_commit": "off"}.
            "synchronous_commit": "on",
            "full_page_writes": "off",
            "timezone": "'UTC'",
            "log_timezone": "'UTC'",
            "max_connections": 200,
            "log_line_prefix": "'%m [%p] %d '",
            # parallel query needs /dev/shm, often tiny in containers
            "max_parallel_workers_per_gather": 0,
        }
        settings.update(self._extra_settings)
        conf = "\n# --- tests.infra.postgres ---\n" + "".join(
            f"{k} = {v}\n" for k, v in settings.items()
        )
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write(conf)

    def _spawn_and_wait(self) -> None:
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._proc = spawn(
            argv,
            log_path=self.log_path,
            cwd=self.base_dir,
            env=self._env(),
            death_signal=signal.SIGQUIT,
            **self._user_kwargs(),
        )
        if self._wait_ready():
            return
        exited = self._proc.poll() is not None
        self.stop("immediate", timeout=10)
        log = self.log_path.read_text(errors="replace")[offset:]
        why = "exited" if exited else f"not ready after {self.startup_timeout:.0f}s"
        raise ServerError(
            f"postgres on {self.host}:{self.port} {why}; log {self.log_path}:\n"
            + "\n".join(log.splitlines()[-40:])
        )

    def _wait_ready(self) -> bool:
        import psycopg

        deadline = time.monotonic() + self.startup_timeout
        delay = 0.02
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with psycopg.connect(self.conninfo(), connect_timeout=2) as conn:
                    # make sure it is ours, not another server that won
                    # the race for this port
                    (data_dir,) = conn.execute("SHOW data_directory").fetchone()
                if Path(data_dir).resolve() != self.data_dir.resolve():
                    return False
                return True
            except psycopg.OperationalError:
                time.sleep(delay)
                delay = min(delay * 1.5, 0.25)
        return False


@contextlib.contextmanager
def postgres_server(**kwargs) -> Iterator[PostgresServer]:
    """``with postgres_server() as pg:`` — started, and removed on exit."""
    server = PostgresServer(**kwargs)
    try:
        yield server.start()
    finally:
        server.close()


__all__ = ["PostgresServer", "find_pg_bin", "postgres_server", "ServerError"]
