"""A throwaway redis-server for tests, from the system binary.

Usage::

    with RedisServer() as r:                 # ~50 ms
        r.url                                # "redis://127.0.0.1:PORT/0"
        r.restart()                          # same port; data gone...
    with RedisServer(appendonly=True) as r:  # ...unless appendonly: kept,
        r.kill(); r.start()                  # even across a SIGKILL

- ``redis-server --port P --bind 127.0.0.1 --save "" --appendonly no``,
  working dir (and AOF, when enabled: ``appendfsync always``) in a temp dir;
- a direct child process: ``stop()`` (SIGTERM, orderly) / ``kill()``
  (SIGKILL, crash) and wait; it also gets SIGTERM if the test process dies.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from . import LOCALHOST, ServerError, free_port, spawn, terminate, track


def find_redis_server() -> Path | None:
    """``$RELANCE_REDIS_SERVER`` if set, else ``redis-server`` on PATH, else
    /usr/bin or /usr/local/bin; None if not found."""
    override = os.environ.get("RELANCE_REDIS_SERVER")
    if override:
        p = Path(override)
        return p if os.access(p, os.X_OK) else None
    hit = shutil.which("redis-server")
    if hit:
        return Path(hit)
    for p in (Path("/usr/bin/redis-server"), Path("/usr/local/bin/redis-server")):
        if os.access(p, os.X_OK):
            return p
    return None


def _command(host: str, port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one command (RESP) and return the raw first reply line."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args
    )
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(payload)
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf


class RedisServer:
    """One throwaway redis-server. Not thread-safe."""

    def __init__(
        self,
        binary: Path | str | None = None,
        *,
        appendonly: bool = False,
        port: int | None = None,
        base_dir: Path | str | None = None,
        startup_timeout: float = 30.0,
        extra_args: list[str] | None = None,
    ) -> None:
        found = Path(binary) if binary else find_redis_server()
        if found is None:
            raise ServerError("redis-server binary not found")
        self.binary: Path = found
        self.appendonly = appendonly
        self.host = LOCALHOST
        self._fixed_port = port
        self.port: int | None = port
        self._base_hint = Path(base_dir) if base_dir else None
        self.base_dir: Path | None = None
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self._proc: subprocess.Popen | None = None
        self._closed = False

    @property
    def url(self) -> str:
        """redis://127.0.0.1:PORT/0"""
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        if self.port is None:
            raise ServerError("server never started: no port yet")
        return f"redis://{self.host}:{self.port}/{db}"

    @property
    def log_path(self) -> Path:
        assert self.base_dir is not None, "server never started"
        return self.base_dir / "redis.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running else None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> "RedisServer":
        """Start and wait for PONG. Idempotent; later calls reuse the port."""
        if self._closed:
            raise ServerError("server was closed")
        if self.running:
            return self
        if self.base_dir is None:
            parent = self._base_hint or Path(tempfile.gettempdir())
            parent.mkdir(parents=True, exist_ok=True)
            self.base_dir = Path(tempfile.mkdtemp(prefix="relance-redis-", dir=parent))
            track(self)
        attempts = 3 if (self.port is None and self._fixed_port is None) else 1
        for attempt in range(attempts):
            if self.port is None or attempt:
                self.port = free_port(self.host)
            try:
                self._spawn_and_wait()
                return self
            except ServerError as exc:
                if attempt + 1 < attempts and "address already in use" in str(exc).lower():
                    continue  # lost the free-port race: pick another one
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float = 15.0) -> None:
        """Orderly shutdown (SIGTERM: AOF flushed, no RDB since save "")."""
        proc, self._proc = self._proc, None
        terminate(proc, signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Crash it (SIGKILL). With appendonly, acknowledged writes survive."""
        proc, self._proc = self._proc, None
        terminate(proc, signal.SIGKILL, 10)

    def restart(self) -> "RedisServer":
        self.stop()
        return self.start()

    def flushall(self) -> None:
        reply = _command(self.host, self.port, "FLUSHALL")
        if not reply.startswith(b"+OK"):
            raise ServerError(f"FLUSHALL failed: {reply!r}")

    def close(self) -> None:
        """Stop and delete the temp dir. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop()
        finally:
            if self.base_dir is not None:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.host}:{self.port} {state} aof={self.appendonly}>"

    # -- internals ---------------------------------------------------------------
    def _argv(self) -> list[str]:
        argv = [
            str(self.binary),
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--dir", str(self.base_dir),
            "--daemonize", "no",
            "--logfile", "",
        ]
        if self.appendonly:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        return argv + self.extra_args

    def _ready_logged(self, offset: int) -> bool:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return b"Ready to accept connections" in f.read()

    def _spawn_and_wait(self) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._proc = spawn(
            self._argv(), log_path=self.log_path, cwd=self.base_dir, death_signal=signal.SIGTERM
        )
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.01
        while time.monotonic() < deadline and self._proc.poll() is None:
            # Our own log line first: a PONG alone could come from another
            # server that won the race for this port.
            if self._ready_logged(offset):
                try:
                    if _command(self.host, self.port, "PING", timeout=1).startswith(b"+PONG"):
                        return
                except OSError:
                    pass
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)
        exited = self._proc.poll() is not None
        self.kill()
        log = self.log_path.read_text(errors="replace")[offset:]
        why = "exited" if exited else f"not ready after {self.startup_timeout:.0f}s"
        raise ServerError(
            f"redis-server on {self.host}:{self.port} {why}; log {self.log_path}:\n"
            + "\n".join(log.splitlines()[-40:])
        )


@contextlib.contextmanager
def redis_server(**kwargs) -> Iterator[RedisServer]:
    """``with redis_server() as r:`` — started, and removed on exit."""
    server = RedisServer(**kwargs)
    try:
        yield server.start()
    finally:
        server.close()


__all__ = ["RedisServer", "find_redis_server", "redis_server", "ServerError"]
