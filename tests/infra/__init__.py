"""Throwaway servers for the test-suite (PostgreSQL, Redis), started from the
system binaries on 127.0.0.1 and a free port.

- ``tests.infra.postgres``: :class:`PostgresServer`, :func:`find_pg_bin`
- ``tests.infra.redis_server``: :class:`RedisServer`, :func:`find_redis_server`

This module only holds the small helpers both share. It deliberately imports
neither submodule, so that ``from tests.infra import ...`` never drags
psycopg/redis in.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import time
import weakref
from pathlib import Path
from typing import Callable

LOCALHOST = "127.0.0.1"


class ServerError(RuntimeError):
    """A throwaway server could not be started/stopped; the message carries
    the tail of its log."""


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that is free on ``host`` right now (the kernel picks it).

    There is an unavoidable race between closing this socket and the server
    binding the port: the servers retry with another port if the bind fails
    on their *first* start.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --- child-process helpers ---------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> Callable[[], None]:
    """preexec_fn: ask Linux to send ``sig`` to the child when the pytest
    process (strictly: the thread that spawned it) dies, so a SIGKILLed test
    run does not leak servers. Best effort, no-op off Linux.

    Runs after subprocess's setuid/setgid (CPython calls preexec_fn last),
    which matters: changing credentials clears the setting.
    """

    def preexec() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        except Exception:  # pragma: no cover - best effort only
            pass

    return preexec


def spawn(
    argv: list[str],
    *,
    log_path: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    user: int | None = None,
    group: int | None = None,
    death_signal: int = signal.SIGTERM,
) -> subprocess.Popen:
    """Start a long-running server process.

    - stdout+stderr appended to ``log_path`` (opened by us, so it works even
      when the child runs as another user);
    - its own session, so a Ctrl-C in the terminal reaches pytest only and
      the fixtures' teardown does an orderly stop;
    - killed with ``death_signal`` if the test process dies.
    """
    kwargs: dict = {}
    if user is not None:
        kwargs.update(user=user, group=group, extra_groups=[])
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent(death_signal),
            **kwargs,
        )


def run_checked(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    user: int | None = None,
    group: int | None = None,
    timeout: float = 120,
) -> None:
    kwargs: dict = {}
    if user is not None:
        kwargs.update(user=user, group=group, extra_groups=[])
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
        timeout=timeout,
        **kwargs,
    )
    if proc.returncode != 0:
        out = proc.stdout.decode(errors="replace")[-4000:]
        raise ServerError(f"{argv[0]} exited with {proc.returncode}:\n{out}")


def terminate(proc: subprocess.Popen | None, sig: int, timeout: float) -> bool:
    """Send ``sig`` and wait up to ``timeout``; then SIGKILL. True if the
    process exited on ``sig`` alone."""
    if proc is None or proc.poll() is not None:
        return True
    try:
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return False


# Last-resort cleanup: anything still running when the interpreter exits
# (a fixture's teardown skipped by an internal error, a script that forgot
# close()). Normal runs stop servers in fixture teardown before this.
_live: "weakref.WeakSet" = weakref.WeakSet()


def track(server) -> None:
    _live.add(server)


@atexit.register
def _close_leftovers() -> None:  # pragma: no cover - exercised at exit only
    for server in list(_live):
        try:
            server.close()
        except Exception:
            pass


def env_without(prefixes: tuple[str, ...]) -> dict[str, str]:
    """os.environ minus variables starting with any of ``prefixes``."""
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
