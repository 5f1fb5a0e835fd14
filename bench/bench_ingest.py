#!/usr/bin/env python3
"""Benchmark: flux ingestion rows/s into PostgreSQL through ingest.ingest_file.

    .venv/bin/python bench/bench_ingest.py [-n 100000] [--runs 3] [--baseline-rows 5000] [--profile]

Generates an N-row synthetic flux CSV (bench/flux_gen.py: valid rows, fictional
people, droit opened 0-9 days before the simulated now, 2024-06-10 10:00
Paris), then, per run, ingests it into a fresh PostgreSQL database (throwaway
cluster of tests/infra/postgres.py on 127.0.0.1, migrated with Alembic) through
``ingest.ingest_file``: the real path (parse, upsert people, open cases,
audit). Reported: rows/s of the first ingestion (wall clock; CPU time of this
process beside it), rows/s of re-ingesting the same file (everything
unchanged), the parse alone (worker.adapters.flux.parse_flux), and -- with
--baseline-rows -- the former per-row ORM ingestion (bench/legacy_ingest.py)
on the first rows of the file, for comparison. Each run checks the counts and
the audit chain. Target: >= 10 000 rows/s.
"""
from __future__ import annotations

import argparse
import datetime as dt
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
import flux_gen  # noqa: E402

TARGET = 10_000
NOW = dt.datetime(2024, 6, 10, 10, 0, tzinfo=ZoneInfo("Europe/Paris"))  # a Monday


def make_app(url: str, data_dir: Path):
    from worker.bootstrap import build_app
    from worker.adapters.store import session as db_session
    from worker.settings import Settings

    settings = Settings(data_dir=data_dir, database_url=url, broker_url="memory://")
    db_session.upgrade(url)
    return build_app(settings)


def counts(url: str) -> dict:
    from sqlalchemy import func, select

    from worker.adapters.store import audit
    from worker.adapters.store.models import AuditEntry, Case, Person
    from worker.adapters.store.session import session_scope

    with session_scope(url) as s:
        out = {name: s.execute(select(func.count()).select_from(m)).scalar_one()
               for name, m in (("persons", Person), ("cases", Case), ("audit", AuditEntry))}
        t = time.perf_counter()
        v = audit.verify(s)
        out["audit_chain_ok"] = v.ok
        out["verify_s"] = round(time.perf_counter() - t, 2)
    return out


def timed(fn, *args, **kw):
    w, c = time.perf_counter(), time.process_time()
    res = fn(*args, **kw)
    return res, time.perf_counter() - w, time.process_time() - c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000, help="rows in the flux file")
    ap.add_argument("--runs", type=int, default=3, help="fresh-database runs (median reported)")
    ap.add_argument("--baseline-rows", type=int, default=5000, help="rows for the former per-row path (0: skip)")
    ap.add_argument("--profile", action="store_true", help="cProfile the first ingestion of the last run")
    args = ap.parse_args()

    from tests.infra.postgres import PostgresServer
    from worker.services import ingest
    from worker.adapters.store import session as db_session
    from worker.adapters.flux import parse_flux

    load_before = _common.loadavg()
    results: dict = {"rows": args.n, "now": NOW.isoformat(), "target_rows_per_s": TARGET, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp, PostgresServer() as pg:
        tmp = Path(tmp)
        with pg.connect() as conn:
            results["postgresql"] = _common.pg_version(conn)
        path = flux_gen.write_flux(tmp / f"flux_{args.n}.csv", args.n, NOW, seed=1)
        expected_cases = sum(1 for r in flux_gen.rows(args.n, NOW, seed=1) if r["droits_devoirs"] == "true")
        print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB, {args.n} rows, {expected_cases} with droits et devoirs")

        # The parse alone, for the breakdown.
        data = path.read_bytes()
        app0 = make_app(pg.create_database("parse_only"), tmp / "var0")
        parsed, pw, pc = timed(parse_flux, data, organisations=frozenset(app0.territory.organisations),
                               today=app0.calendar.local_date(NOW), filename=path.name)
        assert len(parsed.rows) == args.n and not parsed.rejected, (len(parsed.rows), parsed.rejected[:3])
        results["parse_s"] = round(pw, 2)
        print(f"parse alone: {pw:.2f} s wall, {pc:.2f} s CPU ({args.n / pw:,.0f} rows/s)")
        del parsed
        db_session.dispose_all()

        for run in range(args.runs):
            url = pg.create_database(f"run{run}")
            app = make_app(url, tmp / f"var{run}")
            ticks = []
            if args.profile and run == args.runs - 1:
                import cProfile
                import pstats

                prof = cProfile.Profile()
                prof.enable()
            server0 = _common.tree_cpu_seconds(pg.pid)
            rep, w, c = timed(ingest.ingest_file, app, path, NOW, progress=lambda d, t: ticks.append(d))
            server = _common.tree_cpu_seconds(pg.pid) - server0
            if args.profile and run == args.runs - 1:
                prof.disable()
                pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
            assert (rep.accepted, rep.updated, rep.unchanged, len(rep.rejected)) == (args.n, 0, 0, 0), rep.as_json()
            assert rep.cases_opened == expected_cases, rep.cases_opened
            assert ticks and ticks[-1] == args.n
            server0 = _common.tree_cpu_seconds(pg.pid)
            rep2, w2, c2 = timed(ingest.ingest_file, app, path, NOW + dt.timedelta(hours=1))
            server2 = _common.tree_cpu_seconds(pg.pid) - server0
            assert (rep2.accepted, rep2.updated, rep2.unchanged, rep2.cases_opened) == (0, 0, args.n, 0)
            n = counts(url)
            assert n["persons"] == args.n and n["cases"] == expected_cases and n["audit"] == expected_cases + 2, n
            assert n["audit_chain_ok"], n
            one = {"first_s": round(w, 2), "first_cpu_s": round(c, 2), "first_server_cpu_s": round(server, 2),
                   "first_rows_per_s": round(args.n / w),
                   "reingest_s": round(w2, 2), "reingest_cpu_s": round(c2, 2), "reingest_server_cpu_s": round(server2, 2),
                   "reingest_rows_per_s": round(args.n / w2), **n,
                   "loadavg_after": _common.loadavg()}
            results["runs"].append(one)
            print(f"run {run + 1}: first ingestion {w:.2f} s ({args.n / w:,.0f} rows/s; CPU: this process {c:.2f} s, "
                  f"PostgreSQL {server:.2f} s); re-ingestion {w2:.2f} s ({args.n / w2:,.0f} rows/s; CPU {c2:.2f} s, "
                  f"PostgreSQL {server2:.2f} s); {n}")
            db_session.dispose_all()
            pg.drop_database(f"run{run}")

        if args.baseline_rows:
            import csv
            import legacy_ingest

            small = tmp / f"flux_{args.baseline_rows}.csv"
            with open(path, encoding="utf-8", newline="") as src, open(small, "w", encoding="utf-8", newline="") as dst:
                reader = csv.reader(src)
                out = csv.writer(dst)
                for i, line in enumerate(reader):
                    if i > args.baseline_rows:
                        break
                    out.writerow(line)
            for label, fn in (("legacy", legacy_ingest.ingest_file), ("new", ingest.ingest_file)):
                url = pg.create_database(f"base_{label}")
                app = make_app(url, tmp / f"var_{label}")
                rep, w, c = timed(fn, app, small, NOW)
                assert rep.accepted == args.baseline_rows
                results[f"{label}_{args.baseline_rows}_rows_per_s"] = round(args.baseline_rows / w)
                print(f"{label} path, {args.baseline_rows} rows: {w:.2f} s ({args.baseline_rows / w:,.0f} rows/s)")
                db_session.dispose_all()

    firsts = [r["first_rows_per_s"] for r in results["runs"]]
    results["median_rows_per_s"] = statistics.median(firsts)
    results["best_rows_per_s"] = max(firsts)
    results["median_reingest_rows_per_s"] = statistics.median(r["reingest_rows_per_s"] for r in results["runs"])
    results["loadavg_before"] = load_before
    results["met"] = results["median_rows_per_s"] >= TARGET
    saved = _common.save("ingest", results)
    print(f"median {results['median_rows_per_s']:,} rows/s (best {results['best_rows_per_s']:,}); target {TARGET:,}: "
          f"{'met' if results['met'] else 'MISSED'}; load average before {load_before}; -> {saved.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
