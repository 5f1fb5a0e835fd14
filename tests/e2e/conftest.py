"""End-to-end fixtures: REAL processes on REAL Redis + PostgreSQL.

``stack`` (function scope) gives a :class:`Stack`: a fresh PostgreSQL
database (``pg_url``), the session Redis (``redis_url``, flushed), a fake
Twilio (:class:`SlowFakeTwilio`, optional latency), a data dir under
``tmp_path`` and the environment every process gets. It starts real
subprocesses on demand::

    stack.start_worker("all", queues.ALL, concurrency=2)   # python -m worker.entrypoints.cli worker -Q ... -c 2
    stack.start_api()                                       # python -m worker.entrypoints.cli api --port P
    stack.start_scheduler(interval=1)                       # python -m worker.entrypoints.cli scheduler

and, in the test process, an app context + Celery configured on the same
database and Redis: ``jobs.sweep(stack.app, now)`` / ``jobs.relay(...)``
publish tasks that the real workers consume. Every process runs in its own
process group; all are killed (group-wide) at teardown, and every wait is
bounded (:meth:`Stack.wait_until`).

Missing PostgreSQL/Redis binaries: the infra fixtures skip (fail under
CI=true).
"""
from __future__ import annotations

import collections
import datetime as dt
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pytest

from tests.fakes.fake_twilio import FakeTwilio
from tests.infra import env_without, free_port, port_accepts, spawn

UTC = dt.timezone.utc
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_FLUX = PROJECT_ROOT / "samples" / "flux_2024-03.csv"

# Simulated "now" for the tests that drive the jobs themselves: Wednesday
# 3 April 2024, 10:00 in Paris (a working day, inside the SMS window), so
# SMS and e-mails go out whatever day the suite runs. Tasks carry it
# (``now_iso``): the worker processes date everything with it.
SIM_NOW = dt.datetime(2024, 4, 3, 8, 0, tzinfo=UTC)
# What the sample flux plans at SIM_NOW and sends at once (checked by the tests).
SAMPLE_CASES = 28

INTERRUPTED = "interrompu pendant l'envoi"
TERMINAL_SENT = ("sent", "delivered")


# --- the fake Twilio, with latency ---------------------------------------------------------


class SlowFakeTwilio(FakeTwilio):
    """FakeTwilio plus ``latency`` seconds before each message request is answered.

    The latency is spent after the request was read and before the message is
    accepted: a sender killed meanwhile leaves a request Twilio still accepts
    (like the real one would), which is exactly the "died mid-send" case.
    ``started`` counts the message requests received so far.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.latency = 0.0
        self.started = 0

    def start(self) -> "SlowFakeTwilio":
        super().start()
        default = self._server.handle_error

        def handle_error(request, client_address):
            # A sender killed while we "think": the answer goes nowhere. Expected, not news.
            if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                default(request, client_address)

        self._server.handle_error = handle_error
        return self

    def _kind_for(self, to):
        with self._lock:
            self.started += 1
        if self.latency:
            time.sleep(self.latency)
        return super()._kind_for(to)

    def message_id_counts(self) -> collections.Counter:
        """How many times the fake accepted each of our message ids (from the StatusCallback URL)."""
        counts: collections.Counter = collections.Counter()
        for m in self.messages:
            match = re.search(r"/twilio/status/(\d+)$", m.status_callback or "")
            assert match, f"fake Twilio got a message without our StatusCallback: {m.status_callback!r}"
            counts[int(match.group(1))] += 1
        return counts


# --- processes -------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path
    ready: Callable[[], bool] = lambda: True

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def signal_group(self, sig: int) -> None:
        """Signal the whole process group (a Celery worker and its pool children)."""
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the group, like a crashed machine/container; reap the leader."""
        self.signal_group(signal.SIGKILL)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            pass

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group (Celery: warm shutdown), SIGKILL after ``timeout``."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Pool children may outlive their parent for a moment: always sweep the group.
        self.signal_group(signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.wait(timeout=10)


class Stack:
    """One end-to-end environment; see the module docstring."""

    def __init__(self, *, tmp_path: Path, pg_url: str, redis_url: str, fake: SlowFakeTwilio):
        self.tmp_path = tmp_path
        self.pg_url = pg_url
        self.redis_url = redis_url
        self.fake = fake
        self.data_dir = tmp_path / "var"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs = tmp_path / "logs"
        self.logs.mkdir(exist_ok=True)
        self.procs: list[Proc] = []
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.app = None
        self._counter = collections.Counter()

    # -- environment ------------------------------------------------------------------------
    @property
    def settings_env(self) -> dict[str, str]:
        """The RELANCE_* settings every process of this stack shares."""
        return {
            "RELANCE_DATABASE_URL": self.pg_url,
            "RELANCE_BROKER_URL": self.redis_url,
            "RELANCE_DATA_DIR": str(self.data_dir),
            # The commands refuse the development keys (real data): the tests bring their own.
            "RELANCE_NIR_HASH_KEY": "tests-only-nir-hash-key-0123456789abcdef",
            "RELANCE_AUDIT_KEY": "tests-only-audit-chain-key-0123456789abcdef",
            "RELANCE_SMS_BACKEND": "twilio",
            "RELANCE_TWILIO_ACCOUNT_SID": self.fake.account_sid,
            "RELANCE_TWILIO_AUTH_TOKEN": self.fake.auth_token,
            "RELANCE_TWILIO_SENDER_ID": "CDREDON",
            "RELANCE_TWILIO_API_BASE_URL": self.fake.url,
            # Twilio posts its signed status callbacks to `relance api` there.
            "RELANCE_PUBLIC_BASE_URL": self.api_url,
            "RELANCE_API_PORT": str(self.api_port),
            "RELANCE_EMAIL_BACKEND": "local",
            "RELANCE_LETTER_BACKEND": "local",
            # Weekends and public holidays still defer SMS and e-mails (see the tests).
            "RELANCE_SMS_WINDOW_START": "00:00",
            "RELANCE_SMS_WINDOW_END": "23:59",
            # Small batches (issue 15): the sample flux's few dozen messages make several batch
            # tasks per queue, each sent in waves of two, so that the faults fall in the middle of
            # batches and waves, with more batches still queued.
            "RELANCE_ADVANCE_BATCH_SIZE": "4",
            "RELANCE_SEND_BATCH_SIZE": "4",
            "RELANCE_SEND_CONCURRENCY": "2",
        }

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = env_without(("RELANCE_", "CELERY_"))
        env.update(self.settings_env)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("PYTHONPATH", None)
        env["PYTHONPATH"] = str(PROJECT_ROOT)
        env.update(extra or {})
        return env

    # -- the in-process side (jobs, assertions) -------------------------------------------------
    def setup_in_process(self) -> None:
        from worker.bootstrap import build_app, set_app
        from worker.entrypoints.celery_app import configure
        from worker.adapters.store import session as db_session
        from worker.settings import Settings

        settings = Settings(**{k[len("RELANCE_"):].lower(): v for k, v in self.settings_env.items()})
        db_session.upgrade(self.pg_url)  # before any process starts: no concurrent migrations
        self.app = build_app(settings)
        configure(settings)  # tasks published from here go to Redis, to the real workers
        set_app(self.app)

    def teardown_in_process(self) -> None:
        from worker.bootstrap import set_app
        from worker.entrypoints.celery_app import celery, configure
        from worker.adapters.store import session as db_session
        from worker.settings import Settings

        set_app(None)
        try:
            celery.close()  # drop the producer pool (connections to this Redis)
        finally:
            configure(Settings(broker_url="memory://"))
            db_session.get_engine(self.pg_url).dispose()
            db_session.dispose_all()

    # -- processes ----------------------------------------------------------------------------
    def start(self, name: str, *args: str, extra_env: dict[str, str] | None = None) -> Proc:
        """``python -m worker.entrypoints.cli <args>`` in its own process group; output in logs/<name>.log."""
        self._counter[name] += 1
        log_path = self.logs / f"{name}.{self._counter[name]}.log"
        popen = spawn([sys.executable, "-m", "worker.entrypoints.cli", *args], log_path=log_path, cwd=self.tmp_path,
                      env=self.env(extra_env), death_signal=signal.SIGKILL)
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def start_worker(self, name: str, queues: Iterable[str], concurrency: int = 2,
                     extra_env: dict[str, str] | None = None, wait: bool = True) -> Proc:
        """``relance worker -Q <queues> -c <concurrency>``; waits for "ready." unless ``wait=False``
        (then call :meth:`wait_ready`, e.g. to start several processes in parallel)."""
        proc = self.start(f"worker-{name}", "worker", "-Q", ",".join(queues), "-c", str(concurrency),
                          "-n", f"{name}-{self._counter['worker-' + name] + 1}@%h", extra_env=extra_env)
        proc.ready = lambda: " ready." in proc.log()
        if wait:
            self.wait_ready(proc)
        return proc

    def start_api(self, wait: bool = True) -> Proc:
        if importlib.util.find_spec("worker.entrypoints.api") is None:
            pytest.skip("worker/entrypoints/api.py (the `relance api` FastAPI app) is not in the tree")
        proc = self.start("api", "api", "--host", "127.0.0.1", "--port", str(self.api_port))
        proc.ready = lambda: port_accepts("127.0.0.1", self.api_port) and _http_ok(self.api_url + "/health")
        if wait:
            self.wait_ready(proc)
        return proc

    def maybe_start_api(self, wait: bool = True) -> Proc | None:
        """The API if this tree has it (worker/entrypoints/api.py), else None: Twilio's callbacks then go nowhere."""
        if importlib.util.find_spec("worker.entrypoints.api") is None:
            return None
        return self.start_api(wait)

    def wait_ready(self, *procs: Proc | None, timeout: float = 90) -> None:
        procs = [p for p in procs if p is not None]
        self.wait_until(lambda: all(p.ready() for p in procs), timeout,
                        "ready: " + ", ".join(p.name for p in procs), procs=procs)

    def start_scheduler(self, interval: float = 1.0, lease: float | None = None, name: str = "scheduler") -> Proc:
        extra = {"RELANCE_SCHEDULER_INTERVAL_SECONDS": str(interval)}
        if lease is not None:
            extra["RELANCE_SCHEDULER_LEASE_SECONDS"] = str(lease)
        return self.start(name, "scheduler", extra_env=extra)

    def task_outcome(self, task_id: str) -> str | None:
        """What a worker logged for task ``task_id``: the repr of its return value,
        ``"raised: ..."``, or None while it has not finished."""
        pattern = re.compile(re.escape(f"[{task_id}]") + r" (succeeded in [0-9.e-]+s: (?P<ret>.*)|raised (?P<exc>.*))$",
                             re.MULTILINE)
        for proc in self.procs:
            match = pattern.search(proc.log())
            if match:
                return match.group("ret") if match.group("ret") is not None else "raised: " + match.group("exc")
        return None

    def wait_tasks(self, task_ids: Iterable[str], timeout: float = 30) -> list[str]:
        task_ids = list(task_ids)
        self.wait_until(lambda: all(self.task_outcome(t) is not None for t in task_ids), timeout,
                        f"{len(task_ids)} task(s) to finish")
        return [self.task_outcome(t) for t in task_ids]

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except Exception:  # noqa: BLE001 - teardown: keep stopping the others
                pass

    # -- waiting --------------------------------------------------------------------------------
    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str,
                   procs: list[Proc] | None = None, interval: float = 0.1) -> None:
        """Poll ``predicate`` until true; fail after ``timeout`` s with the processes' log tails."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if predicate():
                    return
            except Exception as exc:  # noqa: BLE001 - e.g. the database is still starting
                last = exc
            else:
                last = None
            for proc in procs or ():
                if not proc.alive():
                    pytest.fail(f"{proc.name} exited ({proc.popen.returncode}) while waiting for {what}:\n"
                                f"{proc.tail()}", pytrace=False)
            if time.monotonic() >= deadline:
                tails = "\n\n".join(f"--- {p.name} ({'alive' if p.alive() else 'dead'})\n{p.tail(25)}"
                                    for p in (procs or self.procs))
                pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}"
                            f"{f' (last error: {last!r})' if last else ''}\n{tails}", pytrace=False)
            time.sleep(interval)

    # -- reading the database ------------------------------------------------------------------
    def messages(self) -> list[dict]:
        from sqlalchemy import select

        from worker.adapters.store.models import Message
        from worker.adapters.store.session import session_scope

        with session_scope(self.pg_url) as s:
            return [{"id": m.id, "case_id": m.case_id, "step": m.step, "channel": m.channel, "status": m.status,
                     "error": m.error, "not_before": m.not_before, "reference": m.reference,
                     "provider_ref": m.provider_ref, "attempts": m.attempts}
                    for m in s.execute(select(Message).order_by(Message.id)).scalars()]

    def count_cases(self) -> int:
        from sqlalchemy import func, select

        from worker.adapters.store.models import Case
        from worker.adapters.store.session import session_scope

        with session_scope(self.pg_url) as s:
            return s.execute(select(func.count()).select_from(Case)).scalar_one()

    def audit_sent_counts(self) -> collections.Counter:
        """Message id -> number of "sent" audit entries (one per provider hand-over)."""
        from sqlalchemy import select

        from worker.adapters.store.models import AuditEntry
        from worker.adapters.store.session import session_scope

        with session_scope(self.pg_url) as s:
            rows = s.execute(select(AuditEntry.entity_id, AuditEntry.data).where(AuditEntry.kind == "message"))
            return collections.Counter(eid for eid, data in rows if (data or {}).get("sent"))

    def email_counts(self) -> collections.Counter:
        """Reference -> lines in the local e-mail outbox."""
        path = self.data_dir / "outbox" / "email.jsonl"
        if not path.exists():
            return collections.Counter()
        return collections.Counter(json.loads(line)["reference"]
                                   for line in path.read_text(encoding="utf-8").splitlines() if line.strip())

    def letter_files(self) -> list[Path]:
        root = self.data_dir / "outbox" / "letters"
        return sorted(root.rglob("*.html")) if root.exists() else []

    def queue_lengths(self) -> dict[str, int]:
        import redis

        from worker.entrypoints import queues

        client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
        try:
            return {q: client.llen(q) for q in queues.ALL}
        finally:
            client.close()

    def unsettled(self, due_by: dt.datetime) -> list[dict]:
        """Messages due by ``due_by`` that are not in a final state yet (pending or sending)."""
        return [m for m in self.messages() if m["not_before"] <= due_by and m["status"] in ("pending", "sending")]

    # -- the usual flow, driven from here with a simulated now -----------------------------------
    def ingest_and_plan(self, now: dt.datetime = SIM_NOW, timeout: float = 60) -> list[dict]:
        """Ingest the sample flux, sweep (advance tasks run in the workers), wait for the plan."""
        from worker.entrypoints import jobs
        from worker.services import ingest

        report = ingest.ingest_file(self.app, SAMPLE_FLUX, now)
        assert report.cases_opened == SAMPLE_CASES, report.as_json()
        jobs.sweep(self.app, now)
        self.wait_until(lambda: len({m["case_id"] for m in self.messages()}) == SAMPLE_CASES, timeout,
                        f"messages planned for {SAMPLE_CASES} cases")
        return self.messages()


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 200 <= response.status < 300
    except OSError:
        return False


def due_by(messages: list[dict], moment: dt.datetime) -> list[dict]:
    return [m for m in messages if m["not_before"] <= moment]


def assert_exactly_once(stack: Stack, moment: dt.datetime, *, interrupted: Iterable[int] = (),
                        expect_delivered: bool = False) -> dict:
    """Every message due by ``moment`` went out exactly once, or (for ``interrupted`` ids only:
    sends cut by a crash) was surfaced as a technical failure and never resent.

    Exactly once is checked at the provider (the fake Twilio's accepted messages, per message
    id), in the local outboxes (e-mail lines, letter files) and in the audit log (one "sent"
    entry per message). Returns a summary for the test's own checks.
    """
    messages = stack.messages()
    due = due_by(messages, moment)
    ids = {m["id"] for m in messages}
    at_fake = stack.fake.message_id_counts()
    audit = stack.audit_sent_counts()
    emails = stack.email_counts()
    letters = {p.name.split("_", 1)[0] for p in stack.letter_files()}
    interrupted = set(interrupted)

    assert due, "nothing was planned"
    assert set(at_fake) <= ids, f"the fake got messages we never planned: {set(at_fake) - ids}"
    twice = {i: n for i, n in at_fake.items() if n > 1}
    assert not twice, f"SMS sent more than once to Twilio: {twice}"
    twice = {i: n for i, n in audit.items() if n > 1}
    assert not twice, f"messages recorded as sent more than once: {twice}"
    twice = {r: n for r, n in emails.items() if n > 1}
    assert not twice, f"e-mails written more than once: {twice}"

    by_status = collections.Counter(m["status"] for m in due)
    problems = []
    for m in due:
        if m["status"] in TERMINAL_SENT:
            if m["channel"] == "sms" and at_fake[m["id"]] != 1:
                problems.append(f"{m['id']} sms {m['status']} but seen {at_fake[m['id']]}x by Twilio")
            if m["channel"] == "email" and emails[m["reference"]] != 1:
                problems.append(f"{m['id']} email {m['status']} but written {emails[m['reference']]}x")
            if m["channel"] == "letter" and m["reference"] not in letters:
                problems.append(f"{m['id']} letter {m['status']} but no letter file")
            if m["status"] == "sent" and audit[m["id"]] != 1:
                problems.append(f"{m['id']} {m['channel']} sent but {audit[m['id']]} 'sent' audit entries")
            if expect_delivered and m["channel"] == "sms" and m["status"] != "delivered":
                problems.append(f"{m['id']} sms still {m['status']} (callback not applied)")
        elif m["status"] == "technical-failure" and m["id"] in interrupted:
            if not (m["error"] or "").startswith(INTERRUPTED):
                problems.append(f"{m['id']} technical-failure for another reason: {m['error']}")
        else:
            problems.append(f"{m['id']} {m['channel']} {m['status']} ({m['error']})")
    assert not problems, "not exactly once:\n" + "\n".join(problems)
    return {"due": len(due), "by_status": dict(by_status), "at_fake": sum(at_fake.values())}


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def fake_twilio_slow():
    fake = SlowFakeTwilio()
    fake.start()
    try:
        yield fake
    finally:
        fake.latency = 0
        fake.stop()


@pytest.fixture
def stack(tmp_path, pg_url, redis_url, fake_twilio_slow):
    """A Stack on a fresh database and a flushed Redis; every process stopped afterwards."""
    st = Stack(tmp_path=tmp_path, pg_url=pg_url, redis_url=redis_url, fake=fake_twilio_slow)
    try:
        st.setup_in_process()
        yield st
    finally:
        st.stop_all()
        st.teardown_in_process()
