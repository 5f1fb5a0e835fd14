#!/usr/bin/env python3
"""Benchmark: end-to-end SMS throughput (flux -> engine -> fake Twilio) vs bare Celery; with a slow
provider; under a rate limit; worker memory over a long run.

    .venv/bin/python bench/bench_sms_pipeline.py [--sms 3000] [--noop 4000] [--workers 1,2]
        [--latency 0.15] [--latency-sms 4000] [--latency-workers 1,2] [--rate 50] [--rate-sms 3000]
        [--memory-sms 100000] [--breakdown 400] [--max-seconds 3600] [--name sms_pipeline]

Everything is real and on loopback: a throwaway PostgreSQL and redis-server
(tests/infra), real ``celery worker`` subprocesses (bench/celery_bench.py: the
`relance worker` app and options -- acks_late, prefetch multiplier 1, task
events, INFO logs -- consuming the ``cases`` and ``sms`` queues, with
``--concurrency`` = the number of worker processes), the Twilio SMS channel
(the real ``twilio`` client, its pooled HTTP connections) talking to the fake
Twilio of tests/fakes, with kept-alive HTTP/1.1 connections like the real API
(no status callbacks: the pipeline ends when Twilio accepted the message).
The batches are the settings' defaults (RELANCE_ADVANCE_BATCH_SIZE,
RELANCE_SEND_BATCH_SIZE, RELANCE_SEND_CONCURRENCY) unless given.

Phases (each stops by itself; --max-seconds is the overall budget):

1. ``--breakdown``: in this process, without Celery: time, SQL statements and
   transactions per case of ``advance_cases`` (batches of RELANCE_ADVANCE_BATCH_SIZE)
   and per SMS of ``send_messages`` (batches of RELANCE_SEND_BATCH_SIZE, fake answering at once);
2. for each of ``--workers``: bare Celery (``--noop`` no-op tasks, ``bench.noop``, same
   queue and settings; tasks/s until the queue and the unacked set are empty), then the
   SMS pipeline on a fresh database: a flux of ``--sms`` people (each a mobile, on the CD
   path) is ingested (timed apart), then this process runs the scheduler's jobs every 0.2 s
   (sweep and relay) with the simulated now (a Monday, 10:00 Paris) travelling with each
   task. SMS/s = count / time from the first sweep until the fake accepted the last SMS;
   the ratio SMS/s : no-op tasks/s is reported (target >= 30 %);
3. ``--latency``: the same pipeline with the fake answering each request after that many
   seconds, for each of ``--latency-workers`` (target >= 100 SMS/s with 2 processes);
4. ``--rate``: the same, 2 processes, with RELANCE_SMS_RATE_LIMIT set: the rate measured at
   the fake (accepted messages over the time from the first to the last) must be within 5 %;
5. ``--memory-sms``: a long run (2 processes, instant fake) sampling the RSS of every worker
   process each second: start / quarter / middle / three quarters / end.

Every run checks that every case advanced once and every SMS was accepted once and
recorded ``sent``. Results: bench/results/<--name>.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
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
TARGET_LATENCY_SMS_PER_S = 100
NOW = dt.datetime(2024, 6, 10, 10, 0, tzinfo=ZoneInfo("Europe/Paris"))  # a Monday, not a holiday
QUEUES = ("cases", "sms")
BENCH_NIR_KEY = "bench-nir-key-" + "0123456789abcdef" * 3  # fictional data, keys of this run only
BENCH_AUDIT_KEY = "bench-audit-key-" + "fedcba9876543210" * 3


class Deadline(Exception):
    pass


class Bench:
    def __init__(self, tmp: Path, pg, redis, fake, max_seconds: float, batch_env: dict[str, str]):
        self.tmp, self.pg, self.redis, self.fake = tmp, pg, redis, fake
        self.deadline = time.monotonic() + max_seconds
        self.batch_env = batch_env
        self.procs: list[subprocess.Popen] = []
        self.app = None
        self.url = None
        self.n_db = 0

    # -- environment ---------------------------------------------------------------------------
    def settings_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
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
            "RELANCE_NIR_HASH_KEY": BENCH_NIR_KEY,  # every process refuses the development keys
            "RELANCE_AUDIT_KEY": BENCH_AUDIT_KEY,
            **self.batch_env,
            **(extra or {}),
        }

    def fresh_database(self, extra: dict[str, str] | None = None) -> None:
        """A new database; this process's app and Celery producer point at it."""
        from worker.adapters.store import session as db_session
        from worker.bootstrap import build_app, set_app
        from worker.entrypoints.celery_app import configure
        from worker.settings import Settings

        self.n_db += 1
        self.url = self.pg.create_database(f"sms{self.n_db}")
        env = self.settings_env(extra)
        settings = Settings(**{k[len("RELANCE_"):].lower(): v for k, v in env.items()})
        db_session.upgrade(self.url)
        self.app = build_app(settings)
        configure(settings)
        set_app(self.app)

    # -- workers ----------------------------------------------------------------------------------
    def start_workers(self, concurrency: int, tag: str, extra: dict[str, str] | None = None) -> subprocess.Popen:
        from tests.infra import env_without, spawn

        env = env_without(("RELANCE_", "CELERY_"))
        env.update(self.settings_env(extra))
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

    def sms_run(self, concurrency: int, count: int, tag: str, extra: dict[str, str] | None = None,
                sample_rss: bool = False, timeout: float = 3600) -> dict:
        import redis as redis_lib
        from sqlalchemy import func, select

        from worker.adapters.store.models import Case, Message
        from worker.adapters.store.session import session_scope
        from worker.entrypoints import jobs
        from worker.services import ingest

        self.fresh_database(extra)
        redis_lib.Redis.from_url(self.redis.url).flushall()
        self.fake.reset()
        flux = flux_gen.write_rows(self.tmp / f"flux_sms_{count}.csv", _sms_people(count, self.n_db))
        for number in _only_mobiles(flux):
            self.fake.set_rule(number, "no_callback")
        t = time.perf_counter()
        report = ingest.ingest_file(self.app, flux, NOW)
        ingest_s = time.perf_counter() - t
        expected = report.cases_opened
        tag = f"{tag}-c{concurrency}-{count}-{self.n_db}"
        proc = self.start_workers(concurrency, tag, extra)
        sampler = RssSampler(proc.pid) if sample_rss else None
        swept = relayed = 0
        pg_cpu0, self_cpu0 = _common.tree_cpu_seconds(self.pg.pid), time.process_time()
        try:
            if sampler:
                sampler.start()
            t0 = time.perf_counter()

            rounds = 0

            def done() -> bool:  # the scheduler's jobs, every 0.2 s (it runs them every minute)
                nonlocal swept, relayed, rounds
                swept += jobs.sweep(self.app, NOW)
                relayed += jobs.relay(self.app, NOW)
                rounds += 1
                if rounds % 25 == 0:
                    self._no_retries()  # now stands still here: a message put off would never go
                return len(self.fake.messages) >= expected

            self.wait(done, timeout, f"{expected} SMS at the fake Twilio", proc, interval=0.2)
            elapsed = time.perf_counter() - t0
            # Let the last sends record their outcome before counting.
            self.wait(lambda: self._sms_sent(expected), 120, "the last outcomes recorded", proc)
            cpu = {"workers_s": round(_common.tree_cpu_seconds(proc.pid), 2),
                   "postgresql_s": round(_common.tree_cpu_seconds(self.pg.pid) - pg_cpu0, 2),
                   "bench_and_fake_s": round(time.process_time() - self_cpu0, 2)}
        finally:
            if sampler:
                sampler.stop()
            self.stop_workers(proc)
        with session_scope(self.app.db_url) as s:
            advanced = s.execute(select(func.count()).select_from(Case).where(Case.step_entered_at.isnot(None))
                                 ).scalar_one()
            sms_rows = s.execute(select(Message.status, func.count()).where(Message.channel == "sms")
                                 .group_by(Message.status)).all()
        accepted = self.fake.message_id_counts()
        at_fake = sorted(m.date_created for m in self.fake.messages)
        out = {"people": count, "cases": expected, "sms": len(at_fake), "swept": swept, "relayed": relayed,
               "tasks_executed": self.executed(tag), "settings": {k: v for k, v in (extra or {}).items()},
               "ingest_s": round(ingest_s, 2), "seconds": round(elapsed, 2),
               "sms_per_s": round(expected / elapsed, 1), "cases_advanced": advanced,
               "sms_statuses": dict(sms_rows), "loadavg_after": _common.loadavg(),
               "cpu": cpu, "cpu_ms_per_sms": {k[:-2]: round(v * 1000 / expected, 2) for k, v in cpu.items()}}
        if len(at_fake) > 1:
            span = (at_fake[-1] - at_fake[0]).total_seconds()
            out["rate_at_fake_per_s"] = round((len(at_fake) - 1) / span, 2) if span > 0 else None
            out["per_second_at_fake"] = _per_second(at_fake)
        assert advanced == expected, out
        assert len(at_fake) == expected, out
        assert all(n == 1 for n in accepted.values()), "an SMS was accepted twice"
        if sampler:
            out["rss"] = sampler.summary()
        return out

    def breakdown(self, count: int) -> dict:
        """In this process, without Celery: time and SQL statements of a batch of advances and sends."""
        from sqlalchemy import event, select

        from worker.adapters.store.models import Case
        from worker.adapters.store.session import get_engine, session_scope
        from worker.services import cases, ingest, sending

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
        settings = self.app.settings
        out = {}
        try:
            with session_scope(self.app.db_url) as s:
                case_ids = list(s.execute(select(Case.id).order_by(Case.id)).scalars())
            for label, size, fn, get_ids in (
                    ("advance_cases", settings.advance_batch_size, cases.advance_cases, lambda: case_ids),
                    ("send_messages (sms)", settings.send_batch_size, sending.send_messages, lambda: _sms_ids())):
                ids = get_ids()
                batches = [ids[i:i + size] for i in range(0, len(ids), size)]
                fn(self.app, batches[0], NOW)  # warm-up
                counter.update(statements=0, commits=0)
                t, c = time.perf_counter(), time.process_time()
                for b in batches[1:]:
                    fn(self.app, b, NOW)
                n = sum(len(b) for b in batches[1:])
                out[label] = {"items": n, "batch": size, "ms_per_item": round((time.perf_counter() - t) * 1000 / n, 2),
                              "cpu_ms_per_item": round((time.process_time() - c) * 1000 / n, 2),
                              "sql_statements_per_item": round(counter["statements"] / n, 2),
                              "transactions_per_batch": round(counter["commits"] / max(1, len(batches) - 1), 1)}
        finally:
            event.remove(engine, "before_cursor_execute", on_execute)
            event.remove(engine, "commit", on_commit)
        return out

    def _no_retries(self) -> None:
        from sqlalchemy import func, select

        from worker.adapters.store.models import Message
        from worker.adapters.store.session import session_scope

        with session_scope(self.app.db_url) as s:
            n = s.execute(select(func.count()).select_from(Message).where(
                Message.channel == "sms", Message.status == "pending", Message.error.is_not(None))).scalar_one()
        if n:
            raise RuntimeError(f"{n} SMS put off for a retry (provider errors): the run is invalid")

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


def _sms_ids() -> list[int]:
    from sqlalchemy import select

    from worker.adapters.store.models import Message
    from worker.adapters.store.session import session_scope
    from worker.bootstrap import get_app

    with session_scope(get_app().db_url) as s:
        return list(s.execute(select(Message.id).where(Message.channel == "sms").order_by(Message.id)).scalars())


def _per_second(stamps) -> dict:
    """Accepted messages per whole second of the run at the fake (the first and last seconds left out)."""
    import collections

    t0 = stamps[0]
    counts = collections.Counter(int((t - t0).total_seconds()) for t in stamps)
    inner = [counts.get(i, 0) for i in range(1, max(counts))] if len(counts) > 2 else []
    if not inner:
        return {}
    return {"seconds": len(inner), "min": min(inner), "max": max(inner), "mean": round(sum(inner) / len(inner), 2)}


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
        out["samples"] = n
        # every tenth of the run: the largest pool process and the main process (a leak grows steadily)
        out["deciles_mib"] = [{"t_s": t, "pool_max": round(max((kib for pid, kib in snap.items() if pid != self.root),
                                                                default=0) / 1024, 1),
                               "main": round(snap.get(self.root, 0) / 1024, 1)}
                              for t, snap in (self.samples[min(n - 1, n * i // 10)] for i in range(11))]
        out["children_max_mib"] = round(max((kib for _, snap in self.samples for pid, kib in snap.items()
                                             if pid != self.root), default=0) / 1024, 1)
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sms", type=int, default=3000, help="people (= SMS) per throughput run (0: skip)")
    ap.add_argument("--noop", type=int, default=4000, help="no-op tasks per bare-Celery run")
    ap.add_argument("--workers", default="1,2", help="worker process counts to measure (instant fake)")
    ap.add_argument("--latency", type=float, default=0.15, help="the slow fake's answer time (s; 0: skip)")
    ap.add_argument("--latency-sms", type=int, default=4000, help="SMS of each slow-fake run")
    ap.add_argument("--latency-workers", default="1,2", help="worker process counts with the slow fake")
    ap.add_argument("--rate", type=float, default=50, help="RELANCE_SMS_RATE_LIMIT of the rate run (0: skip)")
    ap.add_argument("--rate-sms", type=int, default=3000, help="SMS of the rate run")
    ap.add_argument("--memory-sms", type=int, default=100_000, help="SMS of the memory run (2 workers; 0: skip)")
    ap.add_argument("--breakdown", type=int, default=400, help="cases of the in-process breakdown (0: skip)")
    ap.add_argument("--advance-batch", type=int, default=None, help="RELANCE_ADVANCE_BATCH_SIZE (default: settings)")
    ap.add_argument("--send-batch", type=int, default=None, help="RELANCE_SEND_BATCH_SIZE (default: settings)")
    ap.add_argument("--concurrency", type=int, default=None, help="RELANCE_SEND_CONCURRENCY (default: settings)")
    ap.add_argument("--max-seconds", type=float, default=5400, help="overall time budget")
    ap.add_argument("--name", default="sms_pipeline", help="results file bench/results/<name>.json")
    args = ap.parse_args()

    from tests.fakes.fake_twilio import FakeTwilio
    from tests.infra.postgres import PostgresServer
    from tests.infra.redis_server import RedisServer
    from worker.settings import Settings

    class CountingFake(FakeTwilio):
        def message_id_counts(self):
            import collections
            import re

            counts = collections.Counter()
            for m in self.messages:
                match = re.search(r"/twilio/status/(\d+)$", m.status_callback or "")
                counts[match.group(1) if match else m.sid] += 1
            return counts

    batch_env = {name: str(value) for name, value in (("RELANCE_ADVANCE_BATCH_SIZE", args.advance_batch),
                                                       ("RELANCE_SEND_BATCH_SIZE", args.send_batch),
                                                       ("RELANCE_SEND_CONCURRENCY", args.concurrency))
                 if value is not None}
    defaults = Settings(broker_url="memory://")
    load_before = _common.loadavg()
    result: dict = {"now": NOW.isoformat(), "queues": QUEUES, "target_ratio": TARGET_RATIO, "runs": {},
                    "batches": {"advance_batch_size": args.advance_batch or defaults.advance_batch_size,
                                "send_batch_size": args.send_batch or defaults.send_batch_size,
                                "send_concurrency": args.concurrency or defaults.send_concurrency}}
    with tempfile.TemporaryDirectory(prefix="bench-sms-") as tmp, PostgresServer() as pg, RedisServer() as redis, \
            CountingFake(keep_alive=True) as fake:
        tmp = Path(tmp)
        bench = Bench(tmp, pg, redis, fake, args.max_seconds, batch_env)
        try:
            with pg.connect() as conn:
                result["postgresql"] = _common.pg_version(conn)
            if args.breakdown:
                result["breakdown"] = bench.breakdown(args.breakdown)
                print(f"[in process, no Celery] {result['breakdown']}", flush=True)
            for c in [int(x) for x in args.workers.split(",") if x] if args.sms else []:
                run: dict = {}
                try:
                    run["noop"] = bench.noop_rate(c, args.noop)
                    print(f"[{c} worker process(es)] bare Celery: {run['noop']}", flush=True)
                    run["sms"] = bench.sms_run(c, args.sms, "instant")
                    print(f"[{c} worker process(es)] SMS pipeline: {run['sms']}", flush=True)
                    run["ratio"] = round(run["sms"]["sms_per_s"] / run["noop"]["tasks_per_s"], 3)
                    run["met"] = run["ratio"] >= TARGET_RATIO
                    print(f"[{c} worker process(es)] ratio {run['ratio']:.1%} (target {TARGET_RATIO:.0%})", flush=True)
                except Deadline as exc:
                    run["error"] = str(exc)
                    print(f"[{c}] stopped: {exc}", flush=True)
                result["runs"][str(c)] = run
            if len(result["runs"]) == 2 and all("sms" in r for r in result["runs"].values()):
                one, two = (result["runs"][k]["sms"]["sms_per_s"] for k in sorted(result["runs"]))
                result["scaling_instant"] = round(two / one, 2)
            if args.latency:
                fake.response_delay = args.latency
                result["latency"] = {"response_delay_s": args.latency, "runs": {}}
                for c in [int(x) for x in args.latency_workers.split(",") if x]:
                    try:
                        r = bench.sms_run(c, args.latency_sms, "slow")
                    except Deadline as exc:
                        r = {"error": str(exc)}
                    result["latency"]["runs"][str(c)] = r
                    print(f"[slow fake {args.latency} s, {c} worker process(es)] {r}", flush=True)
                runs = result["latency"]["runs"]
                if "2" in runs and "sms_per_s" in runs["2"]:
                    result["latency"]["met"] = runs["2"]["sms_per_s"] >= TARGET_LATENCY_SMS_PER_S
                if "1" in runs and "2" in runs and "sms_per_s" in runs["1"] and "sms_per_s" in runs["2"]:
                    result["latency"]["scaling"] = round(runs["2"]["sms_per_s"] / runs["1"]["sms_per_s"], 2)
                fake.response_delay = 0
            if args.rate:
                fake.response_delay = args.latency
                try:
                    r = bench.sms_run(2, args.rate_sms, "rate", extra={"RELANCE_SMS_RATE_LIMIT": str(args.rate)})
                    r["limit"] = args.rate
                    r["deviation"] = round(r["rate_at_fake_per_s"] / args.rate - 1, 4)
                    r["met"] = abs(r["deviation"]) <= 0.05
                except Deadline as exc:
                    r = {"error": str(exc)}
                result["rate_limit"] = r
                print(f"[rate limit {args.rate}/s, slow fake, 2 worker processes] {r}", flush=True)
                fake.response_delay = 0
            if args.memory_sms:
                try:
                    mem = bench.sms_run(2, args.memory_sms, "memory", sample_rss=True, timeout=args.max_seconds)
                    result["memory_run"] = mem
                    print(f"[memory] {args.memory_sms} SMS, 2 worker processes: {mem['seconds']} s; RSS "
                          f"{ {k: mem['rss'][k] for k in ('start', 'quarter', 'middle', 'three_quarters', 'end')} }",
                          flush=True)
                except Deadline as exc:
                    result["memory_run"] = {"error": str(exc)}
                    print(f"[memory] stopped: {exc}", flush=True)
        finally:
            bench.close()
            from worker.adapters.store import session as db_session
            from worker.bootstrap import set_app
            from worker.entrypoints.celery_app import celery, configure

            set_app(None)
            celery.close()
            configure(Settings(broker_url="memory://"))
            db_session.dispose_all()
    result["loadavg_before"] = load_before
    result["loadavg_after"] = _common.loadavg()
    saved = _common.save(args.name, result)
    print(f"-> {saved.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
