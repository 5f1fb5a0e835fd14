#!/usr/bin/env python3
"""Benchmark: end-to-end SMS throughput (flux -> engine -> fake Twilio) vs bare Celery.

    .venv/bin/python bench/bench_sms_pipeline.py [--sms 2000] [--noop 4000] [--workers 1,2]
                                                 [--memory-sms 12000] [--breakdown 300] [--max-seconds 1500]

Everything is real and on loopback: a throwaway PostgreSQL and redis-server
(tests/infra), real ``celery worker`` subprocesses (bench/celery_bench.py: the
`relance worker` app and options -- acks_late, prefetch multiplier 1, task
events, INFO logs -- consuming the ``cases`` and ``sms`` queues, with
``--concurrency`` = the number of worker processes), the Twilio SMS channel
talking to the fake Twilio server of tests/fakes (no status callbacks: the
pipeline ends when Twilio accepted the message).

For each worker count:

1. bare Celery: --noop no-op tasks (``bench.noop``, same queue ``sms``, same
   settings) published from this process; tasks/s = count / time until the
   queue and the unacked set are empty;
2. the SMS pipeline on a fresh database: a flux of --sms people (valid rows,
   a mobile phone each, droits et devoirs) is ingested (ingest.ingest_file,
   timed apart), then this process runs the scheduler's jobs with the
   simulated now (a Monday, 10:00 Paris) travelling with each task:
   jobs.sweep once (one ``advance`` task per case: the engine plans the
   invitation's letter and SMS), then jobs.relay every 0.2 s (one ``send``
   task per due SMS; letters go to the ``letters`` queue, not consumed here).
   SMS/s = count / time from the sweep until the fake Twilio accepted the last
   SMS. Every case advanced exactly once and every SMS was accepted once
   (checked at the end).

The ratio SMS/s : no-op tasks/s is reported (target >= 30 %). With
--memory-sms, a longer run (two worker processes) samples the RSS of every
worker process each second: start / middle / end reported. Each phase stops
by itself (--max-seconds overall budget; a phase that runs out of time is
reported as such). Results: bench/results/sms_pipeline.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _common  # noqa: E402
import flux_gen  # noqa: E402

TARGET_RATIO = 0.30
NOW = dt.datetime(2024, 6, 10, 10, 0, tzinfo=ZoneInfo("Europe/Paris"))  # a Monday, not a holiday
QUEUES = ("cases", "sms")


class Deadline(Exception):
    pass


class Bench:
    def __init__(self, tmp: Path, pg, redis, fake, max_seconds: float):
        self.tmp, self.pg, self.redis, self.fake = tmp, pg, redis, fake
        self.deadline = time.monotonic() + max_seconds
        self.procs: list[subprocess.Popen] = []
        self.app = None
        self.url = None
        self.n_db = 0

    # -- environment ---------------------------------------------------------------------------
    def settings_env(self) -> dict[str, str]:
        return {
            "RELANCE_DATABASE_URL": self.url,
            "RELANCE_BROKER_URL": self.redis.url,
            "RELANCE_DATA_DIR": str(self.tmp / "var"),
            "RELANCE_SMS_BACKEND": "twilio",
            "RELANCE_TWILIO_ACCOUNT_SID": self.fake.account_sid,
            "RELANCE_TWILIO_AUTH_TOKEN": self.fake.auth_token,
            "RELANCE_TWILIO_SENDER_ID": "CDREDON",
            "RELANCE_TWILIO_API_BASE_URL": self.fake.url,
            "RELANCE_PUBLIC_BASE_URL": "http://127.0.0.1:9",  # callbacks are switched off at the fake
            "RELANCE_EMAIL_BACKEND": "local",
            "RELANCE_LETTER_BACKEND": "local",
            "RELANCE_SMS_WINDOW_START": "00:00",
            "RELANCE_SMS_WINDOW_END": "23:59",
        }

    def fresh_database(self) -> None:
        """A new database; this process's app and Celery producer point at it."""
        from worker.bootstrap import build_app, set_app
        from worker.entrypoints.celery_app import configure
        from worker.adapters.store import session as db_session
        from worker.settings import Settings

        self.n_db += 1
        self.url = self.pg.create_database(f"sms{self.n_db}")
        env = self.settings_env()
        settings = Settings(**{k[len("RELANCE_"):].lower(): v for k, v in env.items()})
        db_session.upgrade(self.url)
        self.app = build_app(settings)
        configure(settings)
        set_app(self.app)

    # -- workers ----------------------------------------------------------------------------------
    def start_workers(self, concurrency: int, tag: str) -> subprocess.Popen:
        from tests.infra import env_without, spawn

        env = env_without(("RELANCE_", "CELERY_"))
        env.update(self.settings_env())
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = str(ROOT)
        log = self.tmp / f"worker-{tag}.log"
        proc = spawn([sys.executable, str(ROOT / "bench" / "celery_bench.py"), "-Q", ",".join(QUEUES),
                      "-c", str(concurrency), "-n", f"bench-{tag}@%h"],
                     log_path=log, cwd=self.tmp, env=env, death_signal=signal.SIGKILL)
        self.procs.append(proc)
        self.wait(lambda: " ready." in log.read_text(errors="replace"), 120, f"worker {tag} ready", proc, log)
        return proc

    def stop_workers(self, proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc.poll() is None:
            proc.wait(timeout=10)

    def wait(self, predicate, timeout: float, what: str, proc=None, log: Path | None = None,
             interval: float = 0.05) -> None:
        end = min(time.monotonic() + timeout, self.deadline)
        while not predicate():
            if proc is not None and proc.poll() is not None:
                tail = log.read_text(errors="replace").splitlines()[-30:] if log else []
                raise RuntimeError(f"worker exited while waiting for {what}:\n" + "\n".join(tail))
            if time.monotonic() >= end:
                raise Deadline(f"gave up waiting for {what} after {timeout:.0f} s (or the overall budget)")
            time.sleep(interval)

    # -- measurements ------------------------------------------------------------------------------
    def broker_idle(self, client) -> bool:
        return sum(client.llen(q) for q in QUEUES) == 0 and client.hlen("unacked") == 0

    def noop_rate(self, concurrency: int, count: int) -> dict:
        import redis as redis_lib

        from worker.entrypoints.celery_app import celery

        self.fresh_database()
        client = redis_lib.Redis.from_url(self.redis.url)
        client.flushall()
        proc = self.start_workers(concurrency, f"noop-c{concurrency}")
        try:
            t0 = time.perf_counter()
            for _ in range(count):
                celery.send_task("bench.noop", queue="sms")
            published = time.perf_counter() - t0
            self.wait(lambda: self.broker_idle(client), 600, f"{count} no-op tasks")
            elapsed = time.perf_counter() - t0
        finally:
            self.stop_workers(proc)
        executed = self.executed(f"noop-c{concurrency}")
        assert executed.get("bench.noop") == count, executed  # each task ran once
        return {"tasks": count, "seconds": round(elapsed, 2), "publish_seconds": round(published, 2),
                "tasks_per_s": round(count / elapsed, 1)}

    def executed(self, tag: str) -> dict[str, int]:
        """Tasks the worker logged as succeeded, by name."""
        import collections
        import re

        log = (self.tmp / f"worker-{tag}.log").read_text(errors="replace")
        return dict(collections.Counter(re.findall(r"Task ([\w.]+)\[[0-9a-f-]+\] succeeded", log)))

    def sms_run(self, concurrency: int, count: int, sample_rss: bool = False) -> dict:
        import redis as redis_lib
        from sqlalchemy import func, select

        from worker.entrypoints import jobs

        from worker.services import ingest
        from worker.adapters.store.models import Case, Message
        from worker.adapters.store.session import session_scope

        self.fresh_database()
        redis_lib.Redis.from_url(self.redis.url).flushall()
        self.fake.reset()
        flux = flux_gen.write_rows(self.tmp / f"flux_sms_{count}.csv", _sms_people(count, self.n_db))
        people = _only_mobiles(flux)
        for number in people:
            self.fake.set_rule(number, "no_callback")
        t = time.perf_counter()
        report = ingest.ingest_file(self.app, flux, NOW)
        ingest_s = time.perf_counter() - t
        expected = report.cases_opened
        proc = self.start_workers(concurrency, f"sms-c{concurrency}-{count}")
        sampler = RssSampler(proc.pid) if sample_rss else None
        try:
            if sampler:
                sampler.start()
            t0 = time.perf_counter()
            swept = jobs.sweep(self.app, NOW)
            relayed = 0

            def done() -> bool:
                nonlocal relayed
                relayed += jobs.relay(self.app, NOW)
                return len(self.fake.messages) >= expected

            self.wait(done, 3600, f"{expected} SMS at the fake Twilio", proc, interval=0.2)
            elapsed = time.perf_counter() - t0
            # Let the last sends record their outcome before counting.
            self.wait(lambda: self._sms_sent(expected), 60, "the last outcomes recorded", proc)
        finally:
            if sampler:
                sampler.stop()
            self.stop_workers(proc)
        with session_scope(self.app.db_url) as s:
            advanced = s.execute(select(func.count()).select_from(Case).where(Case.step_entered_at.isnot(None))
                                 ).scalar_one()
            sms_rows = s.execute(select(Message.status, func.count()).where(Message.channel == "sms")
                                 .group_by(Message.status)).all()
        accepted = self.fake.message_id_counts() if hasattr(self.fake, "message_id_counts") else None
        sent_once = len(self.fake.messages)
        tasks = self.executed(f"sms-c{concurrency}-{count}")
        out = {"people": count, "cases": expected, "sms": sent_once, "swept": swept, "relayed": relayed,
               "tasks_executed": tasks,
               "ingest_s": round(ingest_s, 2), "seconds": round(elapsed, 2), "sms_per_s": round(expected / elapsed, 1),
               "cases_advanced": advanced, "sms_statuses": dict(sms_rows)}
        assert advanced == expected, out
        assert sent_once == expected, out
        if accepted is not None:
            assert all(n == 1 for n in accepted.values()), "an SMS was accepted twice"
        if sampler:
            out["rss"] = sampler.summary()
        return out

    def breakdown(self, count: int) -> dict:
        """In this process, without Celery: time and SQL statements of advance_case and send_message."""
        from sqlalchemy import event, select

        from worker.services import cases, ingest, sending
        from worker.adapters.store.models import Case, Message
        from worker.adapters.store.session import get_engine, session_scope

        self.fresh_database()
        self.fake.reset()
        flux = flux_gen.write_rows(self.tmp / f"flux_breakdown_{count}.csv", _sms_people(count, 99))
        for number in _only_mobiles(flux):
            self.fake.set_rule(number, "no_callback")
        ingest.ingest_file(self.app, flux, NOW)
        engine = get_engine(self.app.db_url)
        counter = {"statements": 0, "commits": 0}

        def on_execute(*_a):
            counter["statements"] += 1

        def on_commit(*_a):
            counter["commits"] += 1

        event.listen(engine, "before_cursor_execute", on_execute)
        event.listen(engine, "commit", on_commit)
        out = {}
        try:
            with session_scope(self.app.db_url) as s:
                case_ids = list(s.execute(select(Case.id).order_by(Case.id)).scalars())
            for label, ids, fn in (("advance_case", case_ids, cases.advance_case),
                                   ("send_message (sms)", None, sending.send_message)):
                if ids is None:
                    with session_scope(self.app.db_url) as s:
                        ids = list(s.execute(select(Message.id).where(Message.channel == "sms")
                                             .order_by(Message.id)).scalars())
                warm, timed_ids = ids[:20], ids[20:]
                for i in warm:
                    fn(self.app, i, NOW)
                counter.update(statements=0, commits=0)
                t, c = time.perf_counter(), time.process_time()
                for i in timed_ids:
                    fn(self.app, i, NOW)
                n = len(timed_ids)
                out[label] = {"calls": n, "ms_per_call": round((time.perf_counter() - t) * 1000 / n, 2),
                              "cpu_ms_per_call": round((time.process_time() - c) * 1000 / n, 2),
                              "sql_statements_per_call": round(counter["statements"] / n, 1),
                              "transactions_per_call": round(counter["commits"] / n, 1)}
        finally:
            event.remove(engine, "before_cursor_execute", on_execute)
            event.remove(engine, "commit", on_commit)
        return out

    def _sms_sent(self, expected: int) -> bool:
        from sqlalchemy import func, select

        from worker.adapters.store.models import Message
        from worker.adapters.store.session import session_scope

        with session_scope(self.app.db_url) as s:
            n = s.execute(select(func.count()).select_from(Message).where(
                Message.channel == "sms", Message.status == "sent")).scalar_one()
        return n >= expected

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                self.stop_workers(p)


def _sms_people(count: int, seed: int):
    """Synthetic people all followed on the CD path (invitation_1: letter + SMS), each with a mobile."""
    import random

    rnd = random.Random(seed)
    for row in flux_gen.rows(count, NOW, seed=seed, start=seed * 1_000_000):
        row.update(orientation=rnd.choice(("cd", "")), organisation=rnd.choice(("CDAS-REDON", "CDAS-VALLONS")),
                   ft_registered="false", droits_devoirs="true", email="",
                   phone=f"06 12 34 {rnd.randrange(100):02d} {rnd.randrange(100):02d}")
        yield row


def _only_mobiles(flux: Path) -> set[str]:
    """E.164 of the phones in the file (the fake's no-callback rules)."""
    import csv

    out = set()
    with open(flux, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            digits = row["phone"].replace(" ", "")
            if digits:
                out.add("+33" + digits[1:])
    return out


class RssSampler:
    """RSS (KiB) of a worker's process tree, once a second, in a thread."""

    def __init__(self, root_pid: int):
        self.root = root_pid
        self.samples: list[tuple[float, dict[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _tree(self) -> list[int]:
        pids = [self.root]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                raw = stat.read_text()
            except OSError:
                continue
            if int(raw[raw.rindex(")") + 2:].split()[1]) == self.root:
                pids.append(int(stat.parent.name))
        return pids

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            snap = {pid: _common.rss_kib(pid) for pid in self._tree()}
            self.samples.append((round(time.monotonic() - t0, 1), {p: r for p, r in snap.items() if r}))
            self._stop.wait(1.0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary(self) -> dict:
        if not self.samples:
            return {}
        n = len(self.samples)
        picks = {"start": self.samples[0], "quarter": self.samples[n // 4], "middle": self.samples[n // 2],
                 "three_quarters": self.samples[3 * n // 4], "end": self.samples[-1]}
        out = {name: {"t_s": t, "rss_mib": {("main" if pid == self.root else str(pid)): round(kib / 1024, 1)
                                             for pid, kib in sorted(snap.items())}}
               for name, (t, snap) in picks.items()}
        out["samples"] = len(self.samples)
        out["children_max_mib"] = round(max((kib for _, snap in self.samples for pid, kib in snap.items()
                                             if pid != self.root), default=0) / 1024, 1)
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sms", type=int, default=2000, help="people (= SMS) per throughput run")
    ap.add_argument("--noop", type=int, default=4000, help="no-op tasks per bare-Celery run")
    ap.add_argument("--workers", default="1,2", help="worker process counts to measure")
    ap.add_argument("--memory-sms", type=int, default=12000, help="SMS of the memory run (2 workers; 0: skip)")
    ap.add_argument("--max-seconds", type=float, default=1500, help="overall time budget")
    ap.add_argument("--breakdown", type=int, default=300,
                    help="cases for the in-process breakdown of one SMS's work (0: skip)")
    args = ap.parse_args()

    from tests.fakes.fake_twilio import FakeTwilio
    from tests.infra.postgres import PostgresServer
    from tests.infra.redis_server import RedisServer

    class CountingFake(FakeTwilio):
        def message_id_counts(self):
            import collections
            import re

            counts = collections.Counter()
            for m in self.messages:
                match = re.search(r"/twilio/status/(\d+)$", m.status_callback or "")
                counts[match.group(1) if match else m.sid] += 1
            return counts

    load_before = _common.loadavg()
    result: dict = {"now": NOW.isoformat(), "queues": QUEUES, "target_ratio": TARGET_RATIO, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="bench-sms-") as tmp, PostgresServer() as pg, RedisServer() as redis, \
            CountingFake() as fake:
        tmp = Path(tmp)
        bench = Bench(tmp, pg, redis, fake, args.max_seconds)
        try:
            with pg.connect() as conn:
                result["postgresql"] = _common.pg_version(conn)
            if args.breakdown:
                result["breakdown"] = bench.breakdown(args.breakdown)
                print(f"[in process, no Celery] {result['breakdown']}", flush=True)
            for c in [int(x) for x in args.workers.split(",") if x]:
                run: dict = {}
                try:
                    run["noop"] = bench.noop_rate(c, args.noop)
                    print(f"[{c} worker process(es)] bare Celery: {run['noop']}", flush=True)
                    run["sms"] = bench.sms_run(c, args.sms)
                    print(f"[{c} worker process(es)] SMS pipeline: {run['sms']}", flush=True)
                    run["ratio"] = round(run["sms"]["sms_per_s"] / run["noop"]["tasks_per_s"], 3)
                    run["met"] = run["ratio"] >= TARGET_RATIO
                    print(f"[{c} worker process(es)] ratio {run['ratio']:.1%} (target {TARGET_RATIO:.0%})", flush=True)
                except Deadline as exc:
                    run["error"] = str(exc)
                    print(f"[{c}] stopped: {exc}", flush=True)
                result["runs"][str(c)] = run
            if args.memory_sms:
                try:
                    mem = bench.sms_run(2, args.memory_sms, sample_rss=True)
                    result["memory_run"] = mem
                    print(f"[memory] {args.memory_sms} SMS, 2 worker processes: {mem['seconds']} s; RSS "
                          f"{ {k: mem['rss'][k] for k in ('start', 'middle', 'end')} }", flush=True)
                except Deadline as exc:
                    result["memory_run"] = {"error": str(exc)}
                    print(f"[memory] stopped: {exc}", flush=True)
        finally:
            bench.close()
            from worker.bootstrap import set_app
            from worker.entrypoints.celery_app import celery, configure
            from worker.adapters.store import session as db_session
            from worker.settings import Settings

            set_app(None)
            celery.close()
            configure(Settings(broker_url="memory://"))
            db_session.dispose_all()
    result["loadavg_before"] = load_before
    result["loadavg_after"] = _common.loadavg()
    saved = _common.save("sms_pipeline", result)
    print(f"-> {saved.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
