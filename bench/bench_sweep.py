#!/usr/bin/env python3
"""Benchmark: claiming due cases (the sweep) among 1 000 000 cases in PostgreSQL.

    .venv/bin/python bench/bench_sweep.py [--cases 1000000] [--runs 20] [--batch 1000] [--clustered]
                                          [--revision head] [--legacy] [--shared-buffers 1GB]
                                          [--vacuum-between] [--due-by-clock]

Loads 1 000 000 persons and 1 000 000 cases with COPY (psycopg) into a fresh
PostgreSQL database (throwaway cluster of tests/infra/postgres.py, migrated
with Alembic to --revision: "head", or "0001" for the schema before the
partial index): 60 % active and waiting (due in 1 min - 30 days), 1 % active
and due (due 0-60 min ago), 9 % active without a due moment (held, tasks,
awaiting a slot), 30 % closed; the due cases are scattered over the table.
Then times ``cases.due_case_ids(app, now, 1000)`` -- the real claim through
the service layer (SQLAlchemy session, the claim, commit) -- --runs times,
each over a distinct due set: between two runs (untimed) the claimed cases are
"advanced" (due again in 15-45 days, claim cleared, as advance_case does) and
1 000 waiting cases become due (their due moment is set to the last hour: a
write in the due range, as an event would make), so that 1 % stays due, and the
simulated clock moves on one minute (the scheduler's sweep period); with
--due-by-clock no waiting case is written: the clock moves on until 1 000 more
cases are due, as time makes them due. Two warm-up claims are not
counted. Reported: median, p90 and max (ms), the time of the SQL statements
on the wire, and the plan (EXPLAIN ANALYZE, BUFFERS) of one more claim made in
the same state. --legacy times the former claim (bench/legacy_sweep.py; use it
with --revision 0001). Target: median < 10 ms.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _common  # noqa: E402

TARGET_MS = 10.0
NOW = dt.datetime(2024, 6, 10, 10, 0, tzinfo=ZoneInfo("Europe/Paris"))
UTC = dt.timezone.utc
BATCH = 1000
NULL = "\\N"


def naive(t: dt.datetime) -> str:
    return t.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


def load(conn, n: int, rnd: random.Random, clustered: bool = False) -> tuple[list[int], list[int]]:
    """COPY n persons and n cases; returns (due case ids, waiting active case ids).

    ``clustered``: the due cases come in runs of 1 000 consecutive ids (cases opened by
    one flux file fall due together); otherwise they are scattered at random."""
    stamp = naive(NOW - dt.timedelta(days=20))
    orgs = ("CDAS-REDON", "CDAS-VALLONS", "CCAS-REDON", "FT-REDON", "ML-REDON")
    t = time.perf_counter()
    with conn.cursor() as cur:
        with cur.copy("COPY persons (id, external_id, nir_hash, last_name, first_name, birth_date, sex, "
                      "address_line1, address_line2, postcode, city, phone, email, orientation, ft_registered, "
                      "organisation, droits_devoirs, droit_opened_on, address_status, phone_status, email_status, "
                      "fingerprint, extra, created_at, updated_at) FROM STDIN") as cp:
            buf = []
            for i in range(1, n + 1):
                h = hashlib.sha256(i.to_bytes(8, "little")).hexdigest()
                buf.append(f"{i}\tCAF35-{i:08d}\t{h}\tNom{i % 997}\tPrénom{i % 113}\t1980-01-{i % 28 + 1:02d}\tF\t"
                           f"{i % 150} rue des Tests\t{NULL}\t35600\tREDON\t+336123{i % 100000:05d}\t{NULL}\tcd\tf\t"
                           f"{orgs[i % 5]}\tt\t2024-05-{i % 28 + 1:02d}\tok\tok\tok\t{h}\t{{}}\t{stamp}\t{stamp}\n")
                if len(buf) == 50_000:
                    cp.write("".join(buf))
                    buf = []
            cp.write("".join(buf))
    print(f"  persons: {n} rows in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    due, waiting = [], []
    now_utc = NOW.astimezone(UTC)
    with conn.cursor() as cur:
        with cur.copy("COPY cases (id, person_id, path, organisation, droit_opened_on, status, step, phase, "
                      "step_entered_at, due_at, respond_by, appointment_count, npai, address_version, has_address, "
                      "has_phone, phone_unusable, sms_opt_out, has_email, email_unusable, late, created_at, "
                      "updated_at, closed_at, outcome, claimed_until, version) FROM STDIN") as cp:
            buf = []
            block = max(n // 10, BATCH)
            for i in range(1, n + 1):
                r = rnd.random()
                if clustered:  # 1 % due: the first 1 000 ids of each tenth of the table
                    r = 0.0 if (i - 1) % block < BATCH else 0.01 + r * 0.99
                status, phase, due_at, closed, outcome = "active", "waiting", NULL, NULL, NULL
                if r < 0.01:
                    due_at = naive(now_utc - dt.timedelta(seconds=rnd.randrange(3600)))
                    due.append(i)
                elif r < 0.61:
                    due_at = naive(now_utc + dt.timedelta(seconds=rnd.randrange(60, 30 * 86400)))
                    waiting.append(i)
                elif r < 0.70:
                    phase = "held"
                else:
                    status, phase, closed, outcome = "closed", "closed", stamp, "rdv_attended"
                buf.append(f"{i}\t{i}\tcd\t{orgs[i % 5]}\t2024-05-{i % 28 + 1:02d}\t{status}\tinvitation_1\t{phase}\t"
                           f"{stamp}\t{due_at}\t2024-06-{i % 28 + 1:02d}\t0\tf\t0\tt\tt\tf\tf\tf\tf\tf\t{stamp}\t"
                           f"{stamp}\t{closed}\t{outcome}\t{NULL}\t1\n")
                if len(buf) == 50_000:
                    cp.write("".join(buf))
                    buf = []
            cp.write("".join(buf))
    print(f"  cases: {n} rows in {time.perf_counter() - t:.1f} s ({len(due)} due)")
    for table in ("persons", "cases"):
        conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {n})")
    return due, waiting


class StatementLog:
    """The statements one call sends (SQLAlchemy cursor events), with their time on the wire."""

    def __init__(self, engine):
        from sqlalchemy import event

        self.engine, self.items, self._t = engine, [], 0.0
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        self._t = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        self.items.append((statement, parameters, (time.perf_counter() - self._t) * 1000))

    def close(self):
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)


def explain_call(engine, call, only: str = "") -> list[str]:
    """Run ``call`` with its UPDATE/SELECT statements (those naming ``only``) prefixed by EXPLAIN
    (ANALYZE, BUFFERS)."""
    from sqlalchemy import event

    sent = []

    def rewrite(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH")) and only in statement:
            sent.append(statement.strip())
            statement = "EXPLAIN (ANALYZE, BUFFERS) " + statement
        return statement, parameters

    event.listen(engine, "before_cursor_execute", rewrite, retval=True)
    try:
        lines = [str(line) for line in call()]
        return sent + ["    " + line for line in lines]
    finally:
        event.remove(engine, "before_cursor_execute", rewrite)


def explain(engine, statements) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement sent, in a transaction rolled back."""
    out = []
    with engine.connect() as c:
        tx = c.begin()
        try:
            for statement, parameters, _ms in statements:
                if not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH")):
                    continue
                plan = c.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).fetchall()
                out.append(statement.strip() + "\n" + "\n".join("    " + r[0] for r in plan))
        finally:
            tx.rollback()
    return "\n\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--revision", default="head", help="Alembic revision of the schema (0001: before the index)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=BATCH, help="cases claimed per call (the target: 1000; "
                    "jobs.sweep uses RELANCE_SWEEP_BATCH_SIZE, 500 by default)")
    ap.add_argument("--shared-buffers", default="1GB",
                    help="PostgreSQL shared_buffers (the test clusters' default is 128MB, smaller than the "
                         "1 000 000-case table and its indexes)")
    ap.add_argument("--clustered", action="store_true",
                    help="due cases in runs of consecutive ids (as one flux file's cases) instead of scattered")
    ap.add_argument("--vacuum-between", action="store_true",
                    help="VACUUM the queue between two claims (untimed): what autovacuum does within the minute "
                         "between two sweeps with case_due's settings (migration 0010)")
    ap.add_argument("--due-by-clock", action="store_true",
                    help="waiting cases become due as the clock moves on (it moves until 1 000 more are due), "
                         "instead of by a write of their due moment")
    ap.add_argument("--legacy", action="store_true",
                    help="time the former due_case_ids (bench/legacy_sweep.py) instead of services'")
    args = ap.parse_args()
    batch = args.batch

    from tests.infra.postgres import PostgresServer
    from worker.services import cases
    from worker.bootstrap import build_app
    from worker.adapters.store import session as db_session
    from worker.settings import Settings

    claim = cases.due_case_ids
    if args.legacy:
        import legacy_sweep

        claim = legacy_sweep.due_case_ids
    name = (f"sweep-{args.revision}" + ("-legacy" if args.legacy else "") + ("-clustered" if args.clustered else "")
            + (f"-batch{batch}" if batch != BATCH else "") + ("-vacuum" if args.vacuum_between else "")
            + ("-clock" if args.due_by_clock else ""))
    rnd = random.Random(args.seed)
    load_before = _common.loadavg()
    result: dict = {"cases": args.cases, "runs": args.runs, "batch": batch, "revision": args.revision,
                    "due_layout": "clustered" if args.clustered else "scattered",
                    "function": f"{claim.__module__}.due_case_ids", "target_ms": TARGET_MS,
                    "vacuum_between": args.vacuum_between,
                    "falling_due": "clock" if args.due_by_clock else "written"}
    result["shared_buffers"] = args.shared_buffers
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp, \
            PostgresServer(settings={"shared_buffers": args.shared_buffers}) as pg:
        url = pg.create_database("sweep")
        db_session.upgrade(url, args.revision)
        app = build_app(Settings(data_dir=Path(tmp), database_url=url, broker_url="memory://"))
        with pg.connect("sweep") as conn:
            result["postgresql"] = _common.pg_version(conn)
            conn.autocommit = False
            due, waiting = load(conn, args.cases, rnd, args.clustered)
            conn.commit()
            conn.autocommit = True
            t = time.perf_counter()
            conn.execute("VACUUM ANALYZE persons")
            conn.execute("VACUUM ANALYZE cases")
            if args.revision in ("head", "0010") or args.revision > "0009":
                conn.execute("VACUUM ANALYZE case_due")  # the sweep's queue (migration 0010), filled by trigger
            if conn.execute("SELECT to_regclass('case_claim')").fetchone()[0]:
                conn.execute("VACUUM ANALYZE case_claim")  # its claims (0011)
            print(f"  VACUUM ANALYZE: {time.perf_counter() - t:.1f} s")
            result["sizes"] = dict(conn.execute(
                "SELECT relname, pg_size_pretty(pg_relation_size(oid)) FROM pg_class WHERE relname IN "
                "('cases', 'persons', 'cases_pkey', 'ix_cases_due_active', 'ix_cases_due', 'ix_cases_person_id', "
                "'case_due', 'case_due_pkey', 'ix_case_due_due_at', 'case_claim')"
            ).fetchall())
            print(f"  sizes: {result['sizes']}")
            result["indexes"] = [r[0] for r in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'cases' ORDER BY indexname")]
            if args.clustered:  # promoted in runs of consecutive ids, from random places
                runs = [waiting[k:k + batch] for k in range(0, len(waiting) - batch, batch)]
                rnd.shuffle(runs)
                waiting = [i for run in runs for i in run]
            else:
                rnd.shuffle(waiting)
            timings, on_wire, claimed_total = [], [], 0
            now = NOW
            log = StatementLog(db_session.get_engine(url))
            for run in range(args.runs + 2):
                log.items.clear()
                t = time.perf_counter()
                ids = claim(app, now, batch)
                ms = (time.perf_counter() - t) * 1000
                assert len(ids) == batch and len(set(ids)) == batch, len(ids)
                if run >= 2:
                    timings.append(ms)
                    on_wire.append(sum(x[2] for x in log.items))
                claimed_total += len(ids)
                # Untimed: the claimed cases are advanced; 1 000 waiting cases become due; a minute passes.
                now += dt.timedelta(minutes=1)
                now_utc = now.astimezone(UTC)
                conn.execute("UPDATE cases SET due_at = %s::timestamp + random() * interval '30 days', "
                             "claimed_until = NULL, updated_at = %s, version = version + 1 WHERE id = ANY(%s)",
                             (naive(now + dt.timedelta(days=15)), naive(now), ids))
                if args.due_by_clock:  # on until 1 000 more cases are due (their moment, not a write)
                    now = conn.execute("SELECT due_at FROM cases WHERE status = 'active' AND due_at > %s "
                                       "ORDER BY due_at OFFSET %s LIMIT 1", (naive(now), batch - 1)
                                       ).fetchone()[0].replace(tzinfo=UTC)
                else:
                    promote, waiting = waiting[:batch], waiting[batch:]
                    conn.execute("UPDATE cases SET due_at = %s::timestamp - random() * interval '60 minutes', "
                                 "version = version + 1 WHERE id = ANY(%s)", (naive(now_utc), promote))
                if args.vacuum_between:  # what autovacuum does in the minute between two sweeps (0010)
                    conn.execute("VACUUM case_due")
            log.close()
            engine = db_session.get_engine(url)
            if not args.legacy and (ROOT / "worker/adapters/store/due_queue.py").exists():
                # One more claim, in the same state as the timed ones (the previous batch just
                # advanced): the claim's statement (migration 0011) run under EXPLAIN (ANALYZE, BUFFERS).
                from sqlalchemy import text

                from worker.adapters.store import due_queue

                params = {"now": naive(now), "n": batch, "until": naive(now + dt.timedelta(minutes=5))}
                with engine.connect() as c:
                    c = c.execution_options(isolation_level="AUTOCOMMIT")
                    lines = c.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + due_queue._PG_CLAIM.text), params).scalars()
                    result["plan"] = due_queue._PG_CLAIM.text.strip() + "\n" + "\n".join("    " + x for x in lines)
            elif not args.legacy:
                # The same for the claim of 0010: the function returns the plan's lines instead of ids.
                result["plan"] = "\n".join(explain_call(engine, lambda: claim(app, now, batch), only="case_due"))
            else:
                # The former claim sends the ids back: record its statements, undo the claim, EXPLAIN them.
                log = StatementLog(engine)
                ids = claim(app, now, batch)
                log.close()
                conn.execute("UPDATE cases SET claimed_until = NULL WHERE id = ANY(%s)", (ids,))
                result["plan"] = explain(engine, log.items)
            due_now = conn.execute("SELECT count(*) FROM cases WHERE status = 'active' AND due_at <= %s",
                                   (naive(now),)).fetchone()[0]
            result["due_at_end"] = due_now
        db_session.dispose_all()
    timings_sorted = sorted(timings)
    result.update({
        "timings_ms": [round(x, 2) for x in timings],
        "statements_median_ms": round(statistics.median(on_wire), 2),
        "median_ms": round(statistics.median(timings), 2),
        "p90_ms": round(timings_sorted[int(0.9 * (len(timings_sorted) - 1))], 2),
        "max_ms": round(max(timings), 2),
        "loadavg_before": load_before,
        "loadavg_after": _common.loadavg(),
    })
    result["met"] = result["median_ms"] < TARGET_MS
    saved = _common.save(name, result)
    print(result["plan"])
    print(f"{result['function']}(app, now, {batch}) over {args.cases:,} cases (1 % due, {result['due_layout']}), {args.runs} runs, schema "
          f"{args.revision}: median {result['median_ms']} ms (statements on the wire: median "
          f"{result['statements_median_ms']} ms), p90 {result['p90_ms']} ms, max {result['max_ms']} ms; "
          f"target < {TARGET_MS} ms: {'met' if result['met'] else 'MISSED'}; load average {load_before} -> "
          f"{saved.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
