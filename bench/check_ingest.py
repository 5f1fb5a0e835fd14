#!/usr/bin/env python3
"""Old-vs-new ingestion equivalence check (and a quick functional check).

    .venv/bin/python bench/check_ingest.py [--backend sqlite|postgresql|both]

Runs one scenario twice on fresh databases -- once through the per-row ORM
ingestion kept in bench/legacy_ingest.py, once through ``ingest.ingest_file``
(worker/services/ingest.py) -- and compares every row of persons, cases, messages,
events and audit_log (audit entries compared in order; the chain verified).
The scenario: the bundled samples (with the expected counts of
samples/flux_2024-05_with_errors.csv: 22 accepted, 10 rejected, 21 cases, then
22 unchanged), a scheduler cycle, a file of changes (address, phone, e-mail,
new external_id for a known NIR, droits_devoirs false -> true, a closed case
with the same / a new droit, two new rows sharing one NIR, new rows interleaved
with changed ones), then 5 000 synthetic rows (3 chunks) ingested twice.
Exit status 0 when everything matches.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import sys
import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sqlalchemy import select  # noqa: E402

PARIS = ZoneInfo("Europe/Paris")


def at(y, m, d, hh=10):
    return dt.datetime(y, m, d, hh, tzinfo=PARIS)


def _rows_of(path: Path) -> list[dict]:
    text = path.read_bytes().decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


def _write(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows)
    return path


def scenario(app, ingest, work: Path) -> list:
    from worker.entrypoints import jobs
    from worker.services import cases, ingest
    import flux_gen

    out = []

    def run(path, now):
        rep = ingest(app, path, now)
        out.append((Path(path).name, rep.accepted, rep.updated, rep.unchanged, rep.cases_opened,
                    len(rep.rejected), len(rep.warnings)))
        if Path(path).name == "changes.csv" and rep.rejected:
            print("   rejected in changes.csv:", rep.rejected)
        return rep

    samples = ROOT / "samples"
    run(samples / "flux_2024-03.csv", at(2024, 3, 25))
    run(samples / "flux_2024-04_excel.csv", at(2024, 5, 2))
    rep = run(samples / "flux_2024-05_with_errors.csv", at(2024, 6, 3))
    assert (rep.accepted, len(rep.rejected), rep.cases_opened) == (22, 10, 21), out[-1]
    rep = run(samples / "flux_2024-05_with_errors.csv", at(2024, 6, 3, 11))
    assert (rep.accepted, rep.updated, rep.unchanged, rep.cases_opened) == (0, 0, 22, 0), out[-1]
    run(samples / "flux_2024-06.jsonl", at(2024, 7, 1))
    jobs.cycle(app, at(2024, 7, 2))  # invitations go out: cases are waiting
    # the stock file is refused as a flux (issue 11) until the stock import exists: nothing stored
    try:
        run(samples / "stock_2023-03.csv", at(2024, 7, 2, 9))
    except Exception as exc:  # noqa: BLE001 - FluxFormatError, with its French message
        out.append(f"stock refused as a flux: {exc}")
    else:
        raise AssertionError("the stock file was accepted as a flux")

    base = _rows_of(samples / "flux_2024-05_with_errors.csv")
    seen: set[str] = set()
    good = []
    for r in base:
        if r["external_id"].startswith("CAF35-00030") and r["droits_devoirs"] == "true" \
                and r["external_id"] not in seen:
            seen.add(r["external_id"])
            good.append(r)
    good = good[:8]
    assert len(good) == 8, [r["external_id"] for r in good]
    cases.apply_event(app, external_id=good[6]["external_id"], type="droit_closed", now=at(2024, 7, 2, 11))
    cases.apply_event(app, external_id=good[7]["external_id"], type="droit_closed", now=at(2024, 7, 2, 11))
    new = [dict(r) for r in flux_gen.rows(4, at(2024, 7, 3), seed=7, start=900_000)]
    changes = []
    r = dict(good[0]); r["address_line1"] = "1 rue Neuve"; changes.append(r)               # address
    n0 = dict(new[0]); n0["last_name"] = "O\\Brien-N\\A"; n0["address_line2"] = "Bât.\tB \\ 2"
    changes.append(n0)                                                                      # new, COPY escapes
    r = dict(good[1]); r["phone"] = "06 12 34 00 01"; changes.append(r)                    # phone
    r = dict(good[2]); r["phone"] = "06 12 34 00 02"; r["city"] = "REDON"; changes.append(r)  # both
    changes.append(new[1])                                                                  # new
    r = dict(good[3]); r["email"] = "nouvelle.adresse@example.org"; changes.append(r)      # e-mail only
    r = dict(good[4]); r["external_id"] = "CAF35-0009990"; changes.append(r)               # new id, same NIR
    r = dict(good[5]); changes.append(r)                                                    # unchanged
    r = dict(good[6]); r["phone"] = "06 12 34 00 06"; changes.append(r)                    # closed, same droit
    r = dict(good[7]); r["droit_opened_on"] = "2024-07-01"; changes.append(r)              # closed, new droit
    n2 = dict(new[2]); n3 = dict(new[3]); n3["nir"] = n2["nir"]; n3["sex"] = n2["sex"]; n3["birth_date"] = n2["birth_date"]
    changes += [n2, n3]                                                                     # one NIR, two rows
    dd = [r for r in base if r.get("droits_devoirs") == "false"]
    if dd:
        r = dict(dd[0]); r["droits_devoirs"] = "true"; changes.append(r)                    # false -> true
    run(_write(work / "changes.csv", changes), at(2024, 7, 3))
    run(_write(work / "changes.csv", changes), at(2024, 7, 3, 11))                          # again: unchanged

    big = flux_gen.write_flux(work / "synthetic_5000.csv", 5000, at(2024, 7, 10), seed=3, start=2_000_000)
    rep = run(big, at(2024, 7, 10))
    assert rep.accepted == 5000, out[-1]
    rep = run(big, at(2024, 7, 10, 11))
    assert rep.unchanged == 5000 and rep.cases_opened == 0, out[-1]
    return out


def snapshot(url: str) -> dict:
    from worker.adapters.store import audit
    from worker.adapters.store.models import AuditEntry, Case, InboundEvent, Message, Person
    from worker.adapters.store.session import session_scope

    def dump(s, model, order):
        cols = [c.key for c in model.__table__.columns]
        res = []
        for obj in s.execute(select(model).order_by(*order)).scalars():
            res.append({c: getattr(obj, c if c != "metadata" else c) for c in
                        [p.key for p in model.__mapper__.column_attrs]})
        return json.loads(json.dumps(res, default=str)), cols

    with session_scope(url) as s:
        snap = {name: dump(s, model, [model.id])[0] for name, model in
                (("persons", Person), ("cases", Case), ("messages", Message), ("events", InboundEvent),
                 ("audit", AuditEntry))}
        v = audit.verify(s)
        snap["verify"] = [v.ok, v.checked, v.broken_id, v.reason]
    return snap


# Rendering is not ingestion's business, and templates may change between the two runs.
RENDER_KEYS = {"template_version", "content_hash"}


def _strip(table: str, row: dict) -> dict:
    row = {k: v for k, v in row.items() if k not in RENDER_KEYS}
    if table == "audit":
        row.pop("hash", None)  # the chain covers rendered hashes: each run's chain is verified instead
        row.pop("prev_hash", None)
        row["data"] = {k: v for k, v in row["data"].items() if k not in RENDER_KEYS}
    return row


def compare(a: dict, b: dict) -> list[str]:
    diffs = []
    for table in a:
        ra, rb = a[table], b[table]
        if table == "verify":
            if ra != rb or not ra[0]:
                diffs.append(f"verify: legacy {ra} new {rb}")
            continue
        if len(ra) != len(rb):
            diffs.append(f"{table}: {len(ra)} rows (legacy) vs {len(rb)} (new)")
        for x, y in zip(ra, rb):
            x, y = _strip(table, x), _strip(table, y)
            if x != y:
                keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
                diffs.append(f"{table} id {x.get('id')}: " + ", ".join(
                    f"{k}: {str(x.get(k))[:60]!r} != {str(y.get(k))[:60]!r}" for k in keys))
                if len(diffs) > 30:
                    return diffs
    return diffs


def run_backend(backend: str) -> bool:
    import legacy_ingest
    from worker.services import ingest
    from worker.bootstrap import build_app, set_app
    from worker.entrypoints.celery_app import configure
    from worker.adapters.store import session as db_session
    from worker.settings import Settings

    pg = None
    if backend == "postgresql":
        from tests.infra.postgres import PostgresServer

        pg = PostgresServer().start()
    try:
        snaps, outs = {}, {}
        for impl, fn in (("legacy", legacy_ingest.ingest_file), ("new", ingest.ingest_file)):
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                url = pg.create_database(f"check_{impl}") if pg else f"sqlite:///{tmp / 'relance.db'}"
                settings = Settings(data_dir=tmp / "var", database_url=url, broker_url="memory://",
                                    sms_window_start="00:00", sms_window_end="23:59")
                app = build_app(settings)
                configure(settings)
                db_session.upgrade(url)
                set_app(app)
                try:
                    outs[impl] = scenario(app, fn, tmp)
                    snaps[impl] = snapshot(url)
                finally:
                    set_app(None)
                    db_session.get_engine(url).dispose()
                    db_session.dispose_all()
        ok = True
        for line_a, line_b in zip(outs["legacy"], outs["new"]):
            flag = "ok " if line_a == line_b else "DIFF"
            ok &= line_a == line_b
            print(f"  [{backend}] {flag} file, accepted, updated, unchanged, cases_opened, rejected, warnings:"
                  f" legacy {line_a[1:]} new {line_b[1:]}  {line_a[0]}")
        diffs = compare(snaps["legacy"], snaps["new"])
        for d in diffs:
            print(f"  [{backend}] DIFF {d}")
        counts = {t: len(v) for t, v in snaps["new"].items() if t != "verify"}
        print(f"  [{backend}] rows: {counts}; audit chain: {snaps['new']['verify']}")
        return ok and not diffs
    finally:
        if pg:
            pg.close()


def check_fingerprint() -> bool:
    """ingestion.fingerprint == flux.row_fingerprint on every sample row and 100 000 synthetic rows."""
    import flux_gen
    from worker.bootstrap import build_app
    from worker.adapters.flux import parse_flux, row_fingerprint
    from worker.services.ingest import fingerprint

    app = build_app()
    orgs = frozenset(app.territory.organisations)
    rows = []
    for path in sorted((ROOT / "samples").glob("*.*sv")) + sorted((ROOT / "samples").glob("*.jsonl")):
        rows += parse_flux(path.read_bytes(), organisations=orgs, today=dt.date(2024, 7, 31), filename=path.name).rows
    with tempfile.TemporaryDirectory() as tmp:
        big = flux_gen.write_flux(Path(tmp) / "f.csv", 100_000, at(2024, 6, 10), seed=1)
        rows += parse_flux(big.read_bytes(), organisations=orgs, today=dt.date(2024, 6, 10), filename="f.csv").rows
    bad = [r.external_id for r in rows if fingerprint(r) != row_fingerprint(r)]
    print(f"  fingerprint: {len(rows)} rows (samples with extra columns, cp1252, JSONL; 100 000 synthetic), "
          f"{len(bad)} different{': ' + str(bad[:5]) if bad else ''}")
    return not bad


def _audit_entries() -> list[dict]:
    """Entries of every shape append() accepts: ids or not, nested data, datetimes, unicode, shared data."""
    shared = {"action": "opened", "path": "cd", "late": False, "due_at": at(2024, 6, 10)}
    out = []
    for i in range(40):
        moment = at(2024, 6, 10, 8) + dt.timedelta(seconds=i * 7, microseconds=i * 137)
        if i % 3 == 0:
            moment = moment.astimezone(dt.timezone.utc)
        data = shared if i % 4 == 0 else {
            "step": f"invitation_{i % 2 + 1}", "note": "délai « 15 jours » \\ tab\tnl\n", "n": i,
            "nested": {"b": [1, 2.5, None, True], "a": {"z": dt.date(2024, 6, i % 28 + 1)}},
            "when": moment, "ratio": i / 7,
        }
        out.append({"at": moment, "kind": ("case", "message", "step", "event")[i % 4], "data": data,
                    "case_id": None if i % 5 == 0 else 1000 + i, "entity_id": None if i % 7 == 0 else 2000 + i})
    return out


def check_append_many(backend: str, pg=None) -> bool:
    """audit.append_many writes what that many audit.append calls write (hashes, rows, chain)."""
    from worker.adapters.store import audit
    from worker.adapters.store import session as db_session
    from worker.adapters.store.models import AuditEntry
    from worker.adapters.store.session import session_scope

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for how in ("append", "append_many"):
            url = pg.create_database(f"audit_{how}") if pg else f"sqlite:///{Path(tmp) / (how + '.db')}"
            db_session.upgrade(url)
            with session_scope(url) as s:  # an existing chain to extend
                audit.append(s, at=at(2024, 6, 1), kind="ingest", data={"file": "x.csv", "rows": 3})
            entries = _audit_entries()
            with session_scope(url) as s:
                if how == "append":
                    for e in entries[:25]:
                        audit.append(s, **e)
                else:
                    audit.append_many(s, entries[:25])
            with session_scope(url) as s:  # a second batch chains onto the first
                if how == "append":
                    for e in entries[25:]:
                        audit.append(s, **e)
                else:
                    audit.append_many(s, entries[25:])
            with session_scope(url) as s:
                rows = [(e.id, e.at, e.kind, e.case_id, e.entity_id, e.data, e.prev_hash, e.hash)
                        for e in s.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars()]
                v = audit.verify(s)
            results[how] = (rows, (v.ok, v.checked))
            db_session.get_engine(url).dispose()
            db_session.dispose_all()
    same = results["append"] == results["append_many"]
    print(f"  [{backend}] append_many vs append: {len(results['append'][0])} entries, identical: {same}; "
          f"verify: {results['append_many'][1]}")
    return same and results["append_many"][1][0]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = ap.parse_args()
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    ok = check_fingerprint()
    for b in backends:
        if b == "postgresql":
            from tests.infra.postgres import PostgresServer

            with PostgresServer() as pg:
                ok &= check_append_many(b, pg)
        else:
            ok &= check_append_many(b)
    ok &= all([run_backend(b) for b in backends])
    print("EQUIVALENT" if ok else "DIFFERENCES FOUND")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
