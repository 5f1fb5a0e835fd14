#!/usr/bin/env python3
"""Benchmark: the indicators' report (``relance report``) on 100 000 cases with their messages, events,
appointments and audit log, in PostgreSQL.

    .venv/bin/python bench/bench_report.py [--cases 100000] [--runs 3] [--shared-buffers 512MB]

Loads, with COPY, into a fresh database of a throwaway cluster (tests/infra/postgres.py, migrated to head)
a synthetic history over twelve months of droits (2023-07 to 2024-06, reported on 2024-09-02): one person
and one case per droit, plus a second case for 5 % of them (a re-orientation: same droit, FT-REDON); 15 %
of the droits late; per case about 5 messages (invitation, relance, convocation on letter/SMS/e-mail, sent,
delivered, returned, failed, cancelled), 0-2 appointments (booked or convocation; attended, missed,
unconfirmed, cancelled, scheduled), 1-3 events (bookings, attendances, legitimate reasons with a
category, review decisions, re-orientations) and an audit log of about 20 entries per case (its steps, and
message and case entries the report does not read but scans past). Then times ``report.build`` over the
twelve months for every organisation (the target: under 10 s), for one organisation, and the HTML file
with its four charts and the XLSX workbook made from it. Results: ``bench/results/report.json``;
summary in ``bench/RESULTS-report.md``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
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

TARGET_S = 10.0
PARIS = ZoneInfo("Europe/Paris")
UTC = dt.timezone.utc
NOW = dt.datetime(2024, 9, 2, 12, 0, tzinfo=PARIS)
FIRST = dt.date(2023, 7, 1)
LAST = dt.date(2024, 6, 30)
NULL = "\\N"
ORGS = ("CDAS-REDON", "CDAS-VALLONS", "CCAS-REDON", "FT-REDON", "ML-REDON")
PATHS = {"CDAS-REDON": "cd", "CDAS-VALLONS": "cd", "CCAS-REDON": "cd", "FT-REDON": "ft", "ML-REDON": "ml"}
CATEGORIES = ("hospitalisation", "sick_leave", "no_childcare", "homelessness", "training_or_work", "other")


def ts(t: dt.datetime) -> str:
    return t.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


class Copier:
    """Rows for one table, written with COPY in blocks."""

    def __init__(self, conn, table: str, columns: str, parents: tuple = ()):
        self.conn, self.sql, self.buf, self.count = conn, f"COPY {table} ({columns}) FROM STDIN", [], 0
        self.parents = parents  # flushed first (foreign keys)

    def add(self, *values) -> None:
        self.buf.append("\t".join(NULL if v is None else str(v) for v in values) + "\n")
        self.count += 1
        if len(self.buf) >= 50_000:
            self.flush()

    def flush(self) -> None:
        for parent in self.parents:
            parent.flush()
        if self.buf:
            with self.conn.cursor() as cur, cur.copy(self.sql) as cp:
                cp.write("".join(self.buf))
            self.buf = []


def load(conn, n: int, rnd: random.Random) -> dict:
    days = (LAST - FIRST).days + 1
    persons = Copier(conn, "persons", "id, external_id, nir_hash, last_name, first_name, birth_date, sex, "
                                      "address_line1, postcode, city, phone, email, orientation, ft_registered, "
                                      "organisation, droits_devoirs, droit_opened_on, address_status, phone_status, "
                                      "email_status, fingerprint, extra, created_at, updated_at")
    cases = Copier(conn, "cases", "id, person_id, path, organisation, droit_opened_on, status, step, phase, "
                                  "step_entered_at, due_at, appointment_count, npai, address_version, has_address, "
                                  "has_phone, phone_unusable, sms_opt_out, has_email, email_unusable, late, "
                                  "first_invitation_at, created_at, updated_at, closed_at, outcome, version",
                    (persons,))
    messages = Copier(conn, "messages", "id, case_id, step, channel, seq, status, address_version, not_before, "
                                        "created_at, sent_at, status_at, attempts", (cases,))
    appointments = Copier(conn, "appointments", "id, case_id, step, kind, at, organisation, status, created_at, "
                                                "updated_at", (cases,))
    events = Copier(conn, "events", "id, person_id, case_id, type, at, recorded_at, source, payload, status", (cases,))
    audit = Copier(conn, "audit_log", "id, at, kind, case_id, entity_id, data, prev_hash, hash")
    ids = {"case": 0, "message": 0, "appointment": 0, "event": 0, "audit": 0}

    def next_id(kind: str) -> int:
        ids[kind] += 1
        return ids[kind]

    def log(at, kind, case_id, data) -> None:
        i = next_id("audit")
        audit.add(i, ts(at), kind, case_id, case_id, json.dumps(data), "0" * 64,
                  hashlib.sha256(i.to_bytes(8, "little")).hexdigest())

    def case_row(pid, org, opened, received, late, outcome, closed):
        cid = next_id("case")
        status = "active" if outcome is None else "closed"
        cases.add(cid, pid, PATHS[org], org, opened, status, "invitation_1", "waiting" if status == "active" else
                  "closed", ts(received), NULL, 0, "f", 0, "t", "t", "f", "f", "t", "f", "t" if late else "f",
                  ts(received), ts(received), ts(received), ts(closed) if closed else None, outcome, 1)
        log(received, "case", cid, {"action": "opened", "path": PATHS[org], "reason": "flux"})
        return cid

    t = time.perf_counter()
    for pid in range(1, n + 1):
        org = ORGS[pid % 5]
        opened = FIRST + dt.timedelta(days=rnd.randrange(days))
        late = rnd.random() < 0.15
        received = dt.datetime.combine(opened + dt.timedelta(days=rnd.randrange(16, 60) if late else
                                                             rnd.randrange(1, 12)), dt.time(8), PARIS)
        persons.add(pid, f"CAF35-{pid:08d}", hashlib.sha256(pid.to_bytes(8, "little")).hexdigest(), f"Nom{pid % 997}",
                    f"Prénom{pid % 113}", f"19{60 + pid % 40}-01-{pid % 28 + 1:02d}", "F", f"{pid % 150} rue des Tests",
                    "35600", "REDON", f"+336123{pid % 100000:05d}", f"p{pid}@example.org",
                    {"cd": "cd", "ft": "ft", "ml": "ml"}[PATHS[org]] if pid % 7 else None, "t", org, "t", opened,
                    "ok", "ok", "ok", "x" * 64, "{}", ts(received), ts(received))
        invited = received + dt.timedelta(hours=2)
        r = rnd.random()
        outcome = "attended" if r < 0.45 else ("droit_closed" if r < 0.5 else None)
        closed = invited + dt.timedelta(days=rnd.randrange(5, 60)) if outcome else None
        cid = case_row(pid, org, opened, received, late, outcome, closed)
        steps = ["invitation_1"] + (["invitation_2"] if r > 0.3 else []) + (["convocation"] if r > 0.6 else []) + \
            (["sanction_review", "pre_sanction_notice"] if r > 0.9 else [])
        for k, step in enumerate(steps):
            at = invited + dt.timedelta(days=15 * k)
            log(at, "step", cid, {"from_step": steps[k - 1] if k else None, "to_step": step, "reason": "start"})
            for channel in ("letter", "sms", "email"):
                mid = next_id("message")
                q = rnd.random()
                status = ("returned" if channel == "letter" and q < 0.03 else "failed" if q < 0.05 else
                          "cancelled" if q < 0.08 else "delivered" if channel == "sms" else "sent")
                sent = None if status == "cancelled" else ts(at)
                messages.add(mid, cid, step, channel, 0, status, 0, ts(at), ts(at), sent, ts(at), 1)
                for st in ("pending", "sending", status):
                    log(at, "message", cid, {"step": step, "channel": channel, "seq": 0, "status": st})
        person_events = []
        if r < 0.75:
            at = invited + dt.timedelta(days=rnd.randrange(3, 40))
            kind = "booked" if rnd.random() < 0.6 else "convocation"
            status = rnd.choice(("attended", "attended", "missed", "unconfirmed", "cancelled", "scheduled"))
            appointments.add(next_id("appointment"), cid, "invitation_1" if kind == "booked" else "convocation", kind,
                             ts(at), org, status, ts(at - dt.timedelta(days=7)), ts(at + dt.timedelta(days=1)))
            person_events.append(("rdv_booked", at - dt.timedelta(days=7), {}))
            if status in ("attended", "missed"):
                person_events.append((f"rdv_{status}", at, {}))
        if rnd.random() < 0.12:
            person_events.append(("legitimate_reason", invited + dt.timedelta(days=5),
                                  {"category": rnd.choice(CATEGORIES)}))
        if r > 0.9:
            person_events.append(("review_decision", invited + dt.timedelta(days=50),
                                  {"decision": rnd.choice(("proceed", "refer", "close", "legitimate_reason"))}))
        for type_, at, payload in person_events:
            events.add(next_id("event"), pid, cid, type_, ts(at), ts(at), "cli", json.dumps(payload), "applied")
        if pid % 20 == 0:  # re-oriented: same droit, a second case at France Travail
            moved = invited + dt.timedelta(days=10)
            events.add(next_id("event"), pid, cid, "reoriented", ts(moved), ts(moved), "cli", '{"to": "ft"}', "applied")
            case_row(pid, "FT-REDON", opened, moved, False, None, None)
    for c in (persons, cases, messages, appointments, events, audit):
        c.flush()
    for table, kind in (("persons", None), ("cases", "case"), ("messages", "message"), ("appointments", "appointment"),
                        ("events", "event"), ("audit_log", "audit")):
        conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {ids[kind] if kind else n})")
    counts = {"persons": n, "cases": ids["case"], "messages": ids["message"], "appointments": ids["appointment"],
              "events": ids["event"], "audit_log": ids["audit"]}
    print(f"  loaded {counts} in {time.perf_counter() - t:.1f} s")
    return counts


def timed(fn, runs: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return times, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000, help="droits (one person and case each; 5 %% get a second case)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shared-buffers", default="512MB")
    args = ap.parse_args()

    from tests.infra.postgres import PostgresServer
    from worker.adapters.store import session as db_session
    from worker.bootstrap import build_app
    from worker.services import report, report_output
    from worker.settings import Settings

    rnd = random.Random(args.seed)
    result: dict = {"droits": args.cases, "runs": args.runs, "target_s": TARGET_S, "load_before": _common.loadavg(),
                    "shared_buffers": args.shared_buffers}
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp, \
            PostgresServer(settings={"shared_buffers": args.shared_buffers}) as pg:
        url = pg.create_database("report")
        db_session.upgrade(url)
        app = build_app(Settings(data_dir=Path(tmp), database_url=url, broker_url="memory://"))
        with pg.connect("report") as conn:
            result["postgresql"] = _common.pg_version(conn)
            conn.autocommit = False
            result["rows"] = load(conn, args.cases, rnd)
            conn.commit()
            conn.autocommit = True
            t = time.perf_counter()
            conn.execute("VACUUM ANALYZE")
            print(f"  VACUUM ANALYZE: {time.perf_counter() - t:.1f} s")
        build = lambda org=None: report.build(app, NOW, FIRST, LAST, org)  # noqa: E731
        build()  # warm-up (imports, first connection, caches), not counted
        times, rep = timed(build, args.runs)
        result["all_organisations_s"] = times
        result["entrants"] = rep.table("entrants_mois").rows[-1][1]
        print(f"  report, all organisations: {', '.join(f'{x:.2f}' for x in times)} s "
              f"({result['entrants']} entrants)")
        org_times, _ = timed(lambda: build("CDAS-REDON"), args.runs)
        result["one_organisation_s"] = org_times
        print(f"  report, CDAS-REDON: {', '.join(f'{x:.2f}' for x in org_times)} s")
        html_times, _ = timed(lambda: report_output.to_html(app, rep), args.runs)
        xlsx_times, _ = timed(lambda: report_output.to_xlsx(rep), args.runs)
        result["html_with_charts_s"], result["xlsx_s"] = html_times, xlsx_times
        print(f"  HTML with its 4 charts: {statistics.median(html_times):.2f} s; XLSX: "
              f"{statistics.median(xlsx_times):.2f} s")
        db_session.dispose_all()
    result["load_after"] = _common.loadavg()
    median = statistics.median(result["all_organisations_s"])
    result["median_s"] = median
    result["met"] = median < TARGET_S
    path = _common.save("report", result)
    print(f"median {median:.2f} s (target < {TARGET_S:.0f} s): {'met' if result['met'] else 'MISSED'} — {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
