"""Ingesting flux files through the service layer and the inbox, on both backends."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from worker.entrypoints import jobs

from worker.services import cases, ingest
from worker.adapters.store.models import AuditEntry, Case, Message, Person
from worker.adapters.store.session import session_scope

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
PARIS = ZoneInfo("Europe/Paris")


def local(y, m, d, hh=10, mm=0) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=PARIS)


def _rows(name: str) -> list[dict]:
    """The sample's rows, read independently of the parser under test."""
    path = SAMPLES / name
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1252")
    delimiter = ";" if text.splitlines()[0].count(";") > text.splitlines()[0].count(",") else ","
    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))


def _no_relance(row) -> bool:
    return str(row.get("droits_devoirs")).strip().lower() == "false"


def _counts(app) -> tuple[int, int, int]:
    with session_scope(app.db_url) as s:
        return tuple(s.execute(select(func.count()).select_from(m)).scalar_one() for m in (Person, Case, Message))


def _expected_errors() -> list[tuple[int, str | None, str]]:
    out = []
    for line in (SAMPLES / "flux_2024-05_with_errors.expected.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        num, ext, what = line.split("\t")
        out.append((int(num), ext or None, what))
    return out


CLEAN_SAMPLES = [
    ("flux_2024-03.csv", local(2024, 4, 2)),
    ("flux_2024-04_excel.csv", local(2024, 5, 2)),
    ("flux_2024-06.jsonl", local(2024, 7, 1)),
]


@pytest.mark.parametrize("name,now", CLEAN_SAMPLES, ids=[n for n, _ in CLEAN_SAMPLES])
def test_clean_sample_files(relance_app, name, now):
    app = relance_app
    rows = _rows(name)
    rep = ingest.ingest_file(app, SAMPLES / name, now)
    assert (rep.accepted, rep.updated, rep.unchanged, rep.rejected, rep.warnings) == (len(rows), 0, 0, [], [])
    no_relance = {r["external_id"] for r in rows if _no_relance(r)}
    assert no_relance  # each sample has some people without droits et devoirs
    assert rep.cases_opened == len(rows) - len(no_relance)
    with session_scope(app.db_url) as s:
        persons = {p.external_id: p for p in s.execute(select(Person)).scalars()}
        with_case = set(s.execute(select(Person.external_id).join(Case, Case.person_id == Person.id)).scalars())
    assert set(persons) == {r["external_id"] for r in rows}
    assert with_case == set(persons) - no_relance
    assert all(persons[e].droits_devoirs is False for e in no_relance)
    # Second ingestion of the same file (after the first invitations went): nothing changes.
    jobs.cycle(app, now)
    before = _counts(app)
    again = ingest.ingest_file(app, SAMPLES / name, now + dt.timedelta(days=1))
    assert (again.accepted, again.updated, again.unchanged, again.cases_opened) == (0, 0, len(rows), 0)
    assert _counts(app) == before


def test_excel_export_is_decoded(relance_app):
    ingest.ingest_file(relance_app, SAMPLES / "flux_2024-04_excel.csv", local(2024, 5, 2))
    with session_scope(relance_app.db_url) as s:
        p = s.execute(select(Person).where(Person.external_id == "CAF35-0002000")).scalar_one()
    assert p.address_line2 == "Résidence Les Ajoncs"
    assert p.phone == "+33612340968"


def test_file_with_errors(relance_app):
    app = relance_app
    rep = ingest.ingest_file(app, SAMPLES / "flux_2024-05_with_errors.csv", local(2024, 6, 15))
    expected = _expected_errors()
    warned = [(n, e) for n, e, what in expected if "row kept" in what]
    rejected = [(n, e) for n, e, what in expected if "row kept" not in what]
    assert len(warned) == 2 and len(rejected) == 10
    assert [(r["line"], r["external_id"]) for r in rep.rejected] == rejected
    assert all(r["field"] and r["reason"] for r in rep.rejected)
    assert [(w["line"], w["external_id"], w["field"]) for w in rep.warnings] == [
        (warned[0][0], warned[0][1], "phone"), (warned[1][0], warned[1][1], "email")]
    total = len(_rows("flux_2024-05_with_errors.csv"))
    assert rep.accepted == total - len(rejected) == 22
    with session_scope(app.db_url) as s:
        persons = {p.external_id: p for p in s.execute(select(Person)).scalars()}
    # The rows with a warning are kept, without the unusable contact.
    assert persons["CAF35-0003106"].phone is None
    assert persons["CAF35-0003111"].email is None
    # A rejected row is not stored (the duplicate's first occurrence is).
    assert not {e for _, e in rejected if e and e != "CAF35-0003000"} & set(persons)
    assert "CAF35-0003000" in persons and persons["CAF35-0003000"].last_name == "Laurent"
    # The JSON contract.
    assert set(rep.as_json()) == {"accepted", "updated", "unchanged", "rejected", "warnings"}
    assert all(set(r) == {"line", "external_id", "field", "reason"} for r in rep.as_json()["rejected"])


def test_stock_file(relance_app):
    # Issue 11: the stock given as a flux is refused whole (its 1 396 people would all be sent a
    # "premier entretien" letter); it will have its own import (issue 14). Was: accepted as new entrants.
    from worker.adapters.flux import FluxFormatError

    app = relance_app
    rows = _rows("stock_2023-03.csv")
    assert len(rows) == 1396
    with pytest.raises(FluxFormatError, match="utilisez l'import du stock"):
        ingest.ingest_file(app, SAMPLES / "stock_2023-03.csv", local(2023, 4, 15))
    assert _counts(app) == (0, 0, 0)


# --- changes between two files --------------------------------------------------------------------------


def _copy_with(tmp_path: Path, name: str, who: str, **changes) -> Path:
    rows = _rows(name)
    for r in rows:
        if r["external_id"] == who:
            r.update(changes)
    out = tmp_path / f"changed_{name}"
    with open(out, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def test_changed_address_updates_the_person_and_the_case(relance_app, tmp_path):
    app = relance_app
    ingest.ingest_file(app, SAMPLES / "flux_2024-03.csv", local(2024, 4, 2, 8))
    before = _counts(app)
    changed = _copy_with(tmp_path, "flux_2024-03.csv", "CAF35-0001001", address_line1="5 place Saint-Sauveur",
                         address_line2="", postcode="35600", city="REDON")
    rep = ingest.ingest_file(app, changed, local(2024, 4, 5))
    assert (rep.accepted, rep.updated, rep.unchanged, rep.cases_opened) == (0, 1, 29, 0)
    assert _counts(app) == before
    with session_scope(app.db_url) as s:
        p = s.execute(select(Person).where(Person.external_id == "CAF35-0001001")).scalar_one()
        assert (p.address_line1, p.address_line2, p.city) == ("5 place Saint-Sauveur", None, "REDON")
        [case] = p.cases
        assert case.address_version == 1 and case.npai is False
        events = [e.data for e in s.execute(select(AuditEntry).where(AuditEntry.kind == "event",
                                                                      AuditEntry.case_id == case.id)).scalars()]
    assert [(e["type"], e["source"]) for e in events] == [("address_updated", "ingest")]


def test_changed_address_reopens_a_case_held_for_npai(relance_app, flux_writer):
    app = relance_app
    eid = "CAF35-0008001"
    ingest.ingest_file(app, flux_writer([{"external_id": eid}]), local(2024, 6, 10, 8))
    for day in (local(2024, 6, 10), local(2024, 6, 25), local(2024, 7, 10)):
        jobs.cycle(app, day)
    with session_scope(app.db_url) as s:
        case = s.execute(select(Case).join(Person).where(Person.external_id == eid)).scalar_one()
        assert case.step == "convocation"
    cases.apply_event(app, external_id=eid, type="npai", now=local(2024, 7, 12))
    jobs.cycle(app, local(2024, 7, 25))
    with session_scope(app.db_url) as s:
        case = s.get(Case, case.id)
        assert (case.phase, case.hold_reason) == ("held", "npai")
    changed = flux_writer([{"external_id": eid, "address_line1": "5 place Saint-Sauveur"}], name="flux2.csv")
    rep = ingest.ingest_file(app, changed, local(2024, 7, 26))
    assert (rep.accepted, rep.updated, rep.cases_opened) == (0, 1, 0)
    with session_scope(app.db_url) as s:
        p = s.execute(select(Person).where(Person.external_id == eid)).scalar_one()
        assert p.address_status == "ok"
        assert [(c.status, c.step) for c in p.cases] == [("closed", "convocation"), ("active", "invitation_1")]
    jobs.cycle(app, local(2024, 7, 26, 10, 5))
    with session_scope(app.db_url) as s:
        new = s.execute(select(Case).where(Case.status == "active")).scalar_one()
        assert sorted(m.channel for m in new.messages if m.status == "sent") == ["email", "letter", "sms"]


def test_matching_by_nir_when_the_external_id_changed(relance_app, tmp_path):
    app = relance_app
    ingest.ingest_file(app, SAMPLES / "flux_2024-03.csv", local(2024, 4, 2, 8))
    with session_scope(app.db_url) as s:
        old = s.execute(select(Person).where(Person.external_id == "CAF35-0001001")).scalar_one()
    before = _counts(app)
    changed = _copy_with(tmp_path, "flux_2024-03.csv", "CAF35-0001001", external_id="CAF35-0001901")
    rep = ingest.ingest_file(app, changed, local(2024, 4, 5))
    assert (rep.accepted, rep.updated, rep.unchanged, rep.cases_opened) == (0, 1, 29, 0)
    assert _counts(app) == before
    with session_scope(app.db_url) as s:
        p = s.execute(select(Person).where(Person.external_id == "CAF35-0001901")).scalar_one()
        assert p.id == old.id and p.nir_hash == old.nir_hash
        assert s.execute(select(Person).where(Person.external_id == "CAF35-0001001")).scalar() is None
    # And the new identifier is now stable.
    again = ingest.ingest_file(app, changed, local(2024, 4, 6))
    assert (again.accepted, again.updated, again.unchanged) == (0, 0, 30)


# --- the inbox ---------------------------------------------------------------------------------------------


def test_inbox_file_is_ingested_and_moved_to_done(relance_app):
    app = relance_app
    inbox = app.settings.inbox
    inbox.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLES / "flux_2024-06.jsonl", inbox / "flux_2024-06.jsonl")
    now = local(2024, 7, 1, 9).astimezone(dt.timezone.utc)  # as the scheduler gives it
    jobs.cycle(app, now)
    assert [p.name for p in inbox.iterdir() if p.is_file()] == []
    done = sorted(p.name for p in (inbox / "done").iterdir())
    assert done == ["20240701T070000_flux_2024-06.jsonl", "20240701T070000_flux_2024-06.jsonl.report.json"]
    report = json.loads((inbox / "done" / done[1]).read_text(encoding="utf-8"))
    assert report["status"] == "done" and report["file"] == "flux_2024-06.jsonl"
    assert (report["accepted"], report["updated"], report["unchanged"], report["rejected"]) == (20, 0, 0, [])
    assert report["cases_opened"] == 19
    assert (inbox / "done" / done[0]).read_bytes() == (SAMPLES / "flux_2024-06.jsonl").read_bytes()
    # The same tick went on to invite the people it brought in.
    with session_scope(app.db_url) as s:
        assert s.execute(select(func.count()).select_from(Case).where(Case.step_entered_at.isnot(None))).scalar_one() == 19
    # Nothing left: the next tick does not pick it again.
    jobs.cycle(app, now + dt.timedelta(minutes=1))
    assert len(list((inbox / "done").iterdir())) == 2


@pytest.mark.parametrize("content,reason", [
    (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "PDF"),
    ("nir,last_name,first_name,birth_date,address_line1,postcode,city,droit_opened_on,organisation\n"
     "185013500090067,Martin,Léa,1980-01-15,1 rue X,35600,REDON,2024-06-03,CDAS-REDON\n".encode(), "external_id"),
], ids=["pdf", "no-external_id-column"])
def test_unusable_inbox_file_goes_to_failed(relance_app, content, reason):
    app = relance_app
    inbox = app.settings.inbox
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "flux_juin.csv").write_bytes(content)
    jobs.cycle(app, local(2024, 7, 1, 9).astimezone(dt.timezone.utc))
    assert [p.name for p in inbox.iterdir() if p.is_file()] == []
    assert not (inbox / "done").exists() or not list((inbox / "done").iterdir())
    failed = sorted(p.name for p in (inbox / "failed").iterdir())
    assert failed == ["20240701T070000_flux_juin.csv", "20240701T070000_flux_juin.csv.report.json"]
    report = json.loads((inbox / "failed" / failed[1]).read_text(encoding="utf-8"))
    assert report["status"] == "failed" and report["file"] == "flux_juin.csv"
    assert reason in report["error"]
    assert _counts(app) == (0, 0, 0)


def _two_people_then_a_conflict(app, flux_writer):
    """E1 (NIR a) and E2 (NIR b) are known; the new file says E1 has NIR b."""
    from tests.conftest import make_nir

    a, b = make_nir(700001), make_nir(700002)
    first = flux_writer([{"external_id": "CAF35-0007101", "nir": a}, {"external_id": "CAF35-0007102", "nir": b}],
                        name="first.csv")
    ingest.ingest_file(app, first, local(2024, 6, 10, 8))
    return flux_writer([{"external_id": "CAF35-0007101", "nir": b},
                        {"external_id": "CAF35-0007103", "nir": make_nir(700003)}], name="conflict.csv")


def test_a_file_the_database_refuses_does_not_block_the_scheduler(relance_app, flux_writer):
    app = relance_app
    conflict = _two_people_then_a_conflict(app, flux_writer)
    inbox = app.settings.inbox
    inbox.mkdir(parents=True, exist_ok=True)
    shutil.copy(conflict, inbox / "conflict.csv")
    now = local(2024, 6, 10).astimezone(dt.timezone.utc)
    jobs.cycle(app, now)  # must not raise
    # The invitations of the people already known went out all the same.
    with session_scope(app.db_url) as s:
        steps = set(s.execute(select(Case.step_entered_at)).scalars())
    assert None not in steps
    # The file left the inbox (it would fail every minute otherwise), with its reason.
    assert [p.name for p in inbox.iterdir() if p.is_file()] == []
    reports = list(inbox.rglob("*.report.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text(encoding="utf-8"))
    if report["status"] == "failed":
        assert "base de données" in report["error"] and "INSERT" not in report["error"]
        assert "UPDATE" not in report["error"]
    else:  # the conflicting row rejected, the others taken
        assert [r["line"] for r in report["rejected"]] == [2]


def test_a_row_whose_nir_belongs_to_another_person_is_rejected(relance_app, flux_writer):
    app = relance_app
    conflict = _two_people_then_a_conflict(app, flux_writer)
    rep = ingest.ingest_file(app, conflict, local(2024, 6, 11))
    assert [(r["line"], r["external_id"], r["field"]) for r in rep.rejected] == [(2, "CAF35-0007101", "nir")]
    assert rep.accepted == 1
