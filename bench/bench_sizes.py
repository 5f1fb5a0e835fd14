"""Storage per case, measured: the demo's 90 days (flux + stock campaign) copied into PostgreSQL.

    .venv/bin/python bench/bench_sizes.py            # --days 90

Runs ``relance demo --campaign`` (SQLite, simulated days, every letter rendered to PDF), then copies
every table into a throwaway PostgreSQL cluster at the schema's head revision, VACUUM ANALYZE, and
reports per table: rows, total size (heap + indexes + TOAST), bytes per row, and rows and bytes per
case; plus the letters' PDF bytes on disk. ``bench/RESULTS.md`` projects these to a department, a
region and the national stock.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import loadavg, pg_version, save


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=90)
    args = ap.parse_args()

    import psycopg
    from sqlalchemy import create_engine, func, select
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    from tests.infra.postgres import PostgresServer
    from worker.adapters.pdf import render_pdf
    from worker.adapters.store.models import Base
    from worker.adapters.store.session import upgrade
    from worker.entrypoints.demo import run_demo

    before = loadavg()
    with tempfile.TemporaryDirectory(prefix="relance-sizes-") as tmp:
        out = Path(tmp) / "demo"
        t = time.perf_counter()
        run_demo(days=args.days, out=out, campaign=True)
        demo_s = time.perf_counter() - t
        # The demo writes letters as HTML (letter_backend=local): a sample rendered to PDF alone, as the
        # workspace's preview does (a print batch shares the letterhead layer: smaller per letter).
        letters = sorted((out / "outbox" / "letters").rglob("*.html"))
        sample = letters[:: max(1, len(letters) // 40)][:40]
        pdf_sizes = [len(render_pdf([p.read_text(encoding="utf-8")], assets=ROOT / "templates")) for p in sample]
        src = create_engine(f"sqlite:///{out / 'relance.db'}")
        with PostgresServer() as pg:
            with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE sizes")
                version = pg_version(conn)
            url = pg.url("sizes")
            upgrade(url)
            dst = create_engine(url)
            tables = {}
            with src.connect() as s, dst.begin() as d:
                for table in Base.metadata.sorted_tables:
                    rows = [dict(r._mapping) for r in s.execute(select(table))]
                    if rows:
                        for i in range(0, len(rows), 2000):
                            d.execute(pg_insert(table).on_conflict_do_nothing(), rows[i:i + 2000])
                    tables[table.name] = len(rows)
                for table in Base.metadata.sorted_tables:  # ids taken from the copy: sequences follow
                    pk = [c for c in table.primary_key.columns]
                    if len(pk) == 1 and pk[0].autoincrement is not False and str(pk[0].type) in ("INTEGER", "BIGINT"):
                        d.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{pk[0].name}'), "
                                          f"GREATEST((SELECT max({pk[0].name}) FROM {table.name}), 1))")
            with psycopg.connect(pg.conninfo("sizes"), autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
                sizes = {}
                for name, n in tables.items():
                    total, heap = conn.execute("SELECT pg_total_relation_size(%s), pg_relation_size(%s)",
                                               (name, name)).fetchone()
                    sizes[name] = {"rows": n, "total_bytes": total, "heap_bytes": heap,
                                   "bytes_per_row": round(total / n) if n else None}
                database = conn.execute("SELECT pg_database_size('sizes')").fetchone()[0]
            with dst.connect() as d:
                from worker.adapters.store.models import Case
                cases = d.execute(select(func.count()).select_from(Case.__table__)).scalar_one()
            dst.dispose()
        src.dispose()
    data_bytes = sum(v["total_bytes"] for v in sizes.values() if v["rows"])
    per_case = {name: {"rows": round(v["rows"] / cases, 2), "bytes": round(v["total_bytes"] / cases)}
                for name, v in sizes.items() if v["rows"]}
    result = {
        "days": args.days, "demo_seconds": round(demo_s, 1), "postgresql": version, "cases": cases,
        "tables": sizes, "per_case": per_case,
        "data_bytes_per_case": round(data_bytes / cases), "database_bytes": database,
        "letters": {"count": len(letters), "per_case": round(len(letters) / cases, 2),
                    "pdf_sample": len(pdf_sizes),
                    "pdf_bytes_mean": round(sum(pdf_sizes) / len(pdf_sizes)) if pdf_sizes else None,
                    "pdf_bytes_max": max(pdf_sizes, default=None)},
        "loadavg_before": before, "loadavg_after": loadavg(),
    }
    path = save("sizes", result)
    print(f"{cases} cases, {data_bytes / cases / 1024:.1f} KiB of tables per case, "
          f"{len(letters)} letters (PDF {result['letters']['pdf_bytes_mean'] or 0:.0f} B each): {path}")
    for name, v in sorted(per_case.items(), key=lambda kv: -kv[1]["bytes"]):
        print(f"  {name:22} {v['rows']:7.2f} rows/case {v['bytes']:8d} B/case")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
