"""The daily print batch and the mail room's returns, on the demo's database.

The demo (``worker.entrypoints.demo.run_demo``) runs once per module through the
production paths: its letters are real HTML files in the shared letters folder
and real ``sent`` messages. Each test works on its own copy of it.

47 simulated days (2024-04-01 .. 2024-05-17) give ordinary letters from the
first day and pre-sanction notices (LRAR) on 2024-05-16 and 17 that still await
their receipt when the demo stops (France Travail's absences are confirmed by an
agent before its last reminder, so the first notices come in mid-May).

The batches of D1 and D2 are run on a database that has lived on to 17 May: by then most
cases of D1's letters have moved on, which would (rightly) drop those letters as stale. The
tests of the batch mechanics therefore run them with ``drop_stale=False``; the stale rule has
its own test on the demo's last day, where the cases are as they are.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlalchemy import func, select, update

from worker.adapters.rendering import date_plain
from worker.services import letter_returns
from worker.services import print_batches as letters

from worker.services import timeline
from worker.bootstrap import build_app
from worker.adapters.store.models import AuditEntry, Case, InboundEvent, Message, Person
from worker.adapters.store.session import session_scope
from worker.entrypoints.demo import DEMO_SECRETS, run_demo
from worker.settings import Settings

DEMO_DAYS = 47
D1 = dt.date(2024, 4, 16)  # a Tuesday with letters; the batch also takes those of 1 and 9 April
D2 = dt.date(2024, 5, 16)  # the day of the first pre-sanction notices
RELANCE = Path(sys.executable).with_name("relance")
POSTCODE_CITY = re.compile(r"(\d{5}) ([A-Z0-9]+(?: [A-Z0-9]+)*)")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    run_demo(days=DEMO_DAYS, out=out)
    return out


@pytest.fixture
def demo(demo_dir, tmp_path) -> Path:
    copy = tmp_path / "demo"
    shutil.copytree(demo_dir, copy)
    return copy


def make_app(out: Path):
    return build_app(Settings(data_dir=out, database_url=f"sqlite:///{out / 'relance.db'}",
                              **{k.removeprefix("RELANCE_").lower(): v for k, v in DEMO_SECRETS.items()}))


def letter_rows(app) -> dict[int, dict]:
    """Every letter message with what the checks need, by message id."""
    with session_scope(app.db_url) as s:
        rows = s.execute(
            select(Message, Case.organisation, Case.phase, Case.status, Person.last_name, Person.postcode,
                   Person.external_id, Case.step)
            .join(Case, Case.id == Message.case_id).join(Person, Person.id == Case.person_id)
            .where(Message.channel == "letter")).all()
        return {m.id: {"id": m.id, "reference": m.reference, "step": m.step, "status": m.status,
                       "postage": m.postage or "simple", "sent_at": m.sent_at, "batch_id": m.batch_id,
                       "pages": m.pages, "error": m.error, "provider_ref": m.provider_ref, "org": org,
                       "case_id": m.case_id, "case_phase": phase, "case_status": cstatus, "last_name": last,
                       "postcode": postcode, "external_id": ext, "case_step": cstep}
                for m, org, phase, cstatus, last, postcode, ext, cstep in rows}


def due_on(app, rows: dict[int, dict], day: dt.date) -> dict[int, dict]:
    return {i: r for i, r in rows.items()
            if r["status"] == "sent" and r["batch_id"] is None and r["sent_at"] is not None
            and app.calendar.local_date(r["sent_at"]) <= day}


def set_status(app, message_id: int, **values) -> None:
    with session_scope(app.db_url) as s:
        s.execute(update(Message).where(Message.id == message_id).values(**values))


def read_manifest(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["first_page"], r["pages"] = int(r["first_page"]), int(r["pages"])
    return rows


def pdf_pages_text(pdf: Path) -> list[str]:
    """One text per page, laid out as printed (pdftotext -layout)."""
    out = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, text=True)
    pages = out.stdout.split("\f")
    return pages[:-1] if pages and not pages[-1].strip() else pages


def address_block(page: str, last_name: str) -> list[str]:
    """The recipient block found on a letter's first page (the name's line down to the blank line)."""
    name = re.compile(rf"(?<![A-ZÀ-Ý]){re.escape(last_name.upper())}(?![A-ZÀ-Ý])")
    lines = page.splitlines()
    hits = [i for i, line in enumerate(lines) if name.search(line)]
    assert len(hits) == 1, f"{last_name}: {len(hits)} name lines on the first page"
    i = hits[0]
    line = lines[i]
    gap = line.rfind("   ", 0, name.search(line).start())
    col = gap + 3 if gap >= 0 else 0
    while line[col] == " ":
        col += 1
    block = [line[col:].strip()]
    for following in lines[i + 1:]:
        part = following[col:].strip() if len(following) > col else ""
        if not part or following[:col].strip() and following[col - 1] != " ":
            break
        block.append(part)
    return block


def check_batch(app, batch, rows: dict[int, dict], day: dt.date, stem: str) -> list[dict]:
    """The batch's files and its messages; returns the manifest."""
    folder = app.settings.print_dir / day.isoformat()
    assert batch.pdf_path == folder / f"{stem}.pdf"
    assert batch.manifest_path == folder / f"{stem}_manifest.csv"
    assert batch.batch_id == f"{day.isoformat()}/{stem}"
    manifest = read_manifest(batch.manifest_path)
    assert [m["reference"] for m in manifest] == list(batch.references)
    assert len(manifest) == batch.letters
    # Page count of the PDF == sum of the manifest's pages, letters one after the other from page 1.
    assert len(PdfReader(batch.pdf_path).pages) == sum(m["pages"] for m in manifest) == batch.pages
    expected_first = 1
    for m in manifest:
        assert m["first_page"] == expected_first and m["pages"] >= 1
        expected_first += m["pages"]
    by_ref = {r["reference"]: r for r in rows.values()}
    pages = pdf_pages_text(batch.pdf_path)
    assert len(pages) == batch.pages
    for m in manifest:
        row = by_ref[m["reference"]]
        assert (row["org"], row["postage"]) == (batch.organisation, batch.postage)
        assert row["status"] == "dispatched" and row["batch_id"] == batch.batch_id
        assert row["pages"] == m["pages"]
        assert m["case_reference"] == f"RL-{row['case_id']:06d}" and m["step"] == row["step"]
        first = pages[m["first_page"] - 1]
        assert m["reference"] in first
        # dated on the working day its batch goes out, even a letter that waited since an earlier day
        assert f", le {date_plain(day)}" in " ".join(first.split()), m["reference"]  # no weekday
        # Exactly one recipient block per letter: the name once on the first page, nowhere else.
        block = address_block(first, row["last_name"])
        assert 2 <= len(block) <= 6 and row["last_name"].upper() in block[0]
        last_line = POSTCODE_CITY.fullmatch(block[-1])
        assert last_line, f"{m['reference']}: last line of the address is {block[-1]!r}"
        assert last_line.group(1) == row["postcode"]
        others = pages[m["first_page"]:m["first_page"] - 1 + m["pages"]]
        assert not any(row["last_name"].upper() in p for p in others)
    return manifest


# --- the print batch --------------------------------------------------------------------------


def test_print_batch_of_a_demo_day(demo, monkeypatch):
    app = make_app(demo)
    cal = app.calendar
    rows = letter_rows(app)
    due = due_on(app, rows, D1)
    later = {i for i, r in rows.items() if r["status"] == "sent" and i not in due}
    assert len(due) > 20 and later, "the demo should have letters before and after D1"
    assert len({r["org"] for r in due.values()}) >= 3

    # One letter lost its HTML file; another one is still being sent when the batch runs.
    ids = sorted(due)
    lost, in_flight = rows[ids[3]], rows[ids[-1]]
    (app.settings.letters / lost["provider_ref"]).unlink()
    set_status(app, in_flight["id"], status="sending")

    now = cal.at(D1, dt.time(16, 0))
    batches = letters.produce_batches(app, D1, now, drop_stale=False)
    printed = {i: r for i, r in due.items() if i not in (lost["id"], in_flight["id"])}
    groups = {(r["org"], r["postage"]) for r in printed.values()}
    assert sorted((b.organisation, b.postage) for b in batches) == sorted(groups)
    assert all(b.postage == "simple" for b in batches)  # no LRAR before the 27th

    rows = letter_rows(app)
    seen: list[str] = []
    for b in batches:
        manifest = check_batch(app, b, rows, D1, f"{b.organisation}_{b.postage}")
        seen += [m["reference"] for m in manifest]
    assert sorted(seen) == sorted(r["reference"] for r in printed.values())
    assert len(seen) == len(set(seen))

    # The lost letter is not silently dropped: technical failure, explained and audited.
    failed = rows[lost["id"]]
    assert failed["status"] == "technical-failure" and failed["batch_id"] is None
    assert "introuvable" in failed["error"] and lost["provider_ref"] in failed["error"]
    with session_scope(app.db_url) as s:
        entries = s.execute(select(AuditEntry).where(AuditEntry.kind == "message",
                                                     AuditEntry.entity_id == lost["id"])).scalars().all()
        assert entries[-1].data["status"] == "technical-failure"
        batch_entries = s.execute(select(AuditEntry).where(AuditEntry.kind == "batch")).scalars().all()
        assert sorted(e.data["batch_id"] for e in batch_entries) == sorted(b.batch_id for b in batches)
    # Letters sent after the day wait for their own batch.
    assert all(rows[i]["status"] == "sent" and rows[i]["batch_id"] is None for i in later)
    assert rows[in_flight["id"]]["batch_id"] is None

    # A second run of the day prints nothing again.
    folder = app.settings.print_dir / D1.isoformat()
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    assert letters.produce_batches(app, D1, now + dt.timedelta(hours=1), drop_stale=False) == []
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()} == before

    # The letter in flight is sent after the first batch: the next run of the day writes a _2 batch.
    set_status(app, in_flight["id"], status="sent")
    again = letters.produce_batches(app, D1, now + dt.timedelta(hours=2), drop_stale=False)
    assert len(again) == 1 and again[0].references == (in_flight["reference"],)
    stem = f"{in_flight['org']}_{in_flight['postage']}_2"
    check_batch(app, again[0], letter_rows(app), D1, stem)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()
            if p.name in before} == before  # nothing overwritten

    # D2: if rendering fails, the claim is released and nothing is marked.
    rows = letter_rows(app)
    due2 = due_on(app, rows, D2)
    assert any(r["postage"] == "lrar" for r in due2.values())

    def broken(*args, **kwargs):
        raise OSError("disque plein")

    with monkeypatch.context() as m:
        m.setattr("worker.adapters.pdf.write_print_batch", broken)
        with pytest.raises(letters.BatchError, match="disque plein"):
            letters.produce_batches(app, D2, cal.at(D2, dt.time(16, 0)), drop_stale=False)
    rows = letter_rows(app)
    assert all(rows[i]["status"] == "sent" and rows[i]["batch_id"] is None for i in due2)

    # ... and the next run prints them: the LRAR notice in its own _lrar batch.
    batches2 = letters.produce_batches(app, D2, cal.at(D2, dt.time(16, 30)), drop_stale=False)
    rows = letter_rows(app)
    lrar = [b for b in batches2 if b.postage == "lrar"]
    assert lrar and all(b.pdf_path.name.endswith("_lrar.pdf") for b in lrar)
    for b in batches2:
        manifest = check_batch(app, b, rows, D2, f"{b.organisation}_{b.postage}")
        steps = {m["step"] for m in manifest}
        if b.postage == "lrar":
            assert steps == {"pre_sanction_notice"}
        else:
            assert "pre_sanction_notice" not in steps
    assert sorted(r for b in batches2 for r in b.references) == sorted(r["reference"] for r in due2.values())

    with session_scope(app.db_url) as s:
        from worker.adapters.store import audit

        assert audit.verify(s).ok


def test_interrupted_run_is_recovered(demo):
    """A run that died after its claim: finished from the manifest if printed, released otherwise."""
    app = make_app(demo)
    cal = app.calendar
    batches = letters.produce_batches(app, D2, cal.at(D2, dt.time(16, 0)), drop_stale=False)
    lrar = next(b for b in batches if b.postage == "lrar")
    printed_id = int(lrar.references[0].rsplit("-", 1)[1])
    # As if a run claimed it at 14:00, wrote the PDF and died before recording it.
    token = "claim:2024-05-16:20240516T120000:0123456789ab"
    set_status(app, printed_id, status="sent", batch_id=token, pages=None)
    # And another letter (already due) claimed by a run that died before writing anything.
    may_day = dt.date(2024, 5, 17)  # the next day's batch
    later = next(r for r in letter_rows(app).values()
                 if r["status"] == "sent" and cal.local_date(r["sent_at"]) == may_day)
    set_status(app, later["id"], batch_id="claim:2024-05-16:20240516T120000:ba9876543210")

    # A claim younger than 30 minutes belongs to a run still working: left alone.
    assert letters.produce_batches(app, D2, cal.at(D2, dt.time(14, 10)), drop_stale=False) == []
    assert letter_rows(app)[printed_id]["batch_id"] == token

    out = letters.produce_batches(app, may_day, cal.at(may_day, dt.time(16, 0)), drop_stale=False)
    rows = letter_rows(app)
    assert rows[printed_id]["status"] == "dispatched" and rows[printed_id]["batch_id"] == lrar.batch_id
    assert rows[printed_id]["pages"] == read_manifest(lrar.manifest_path)[0]["pages"]
    assert rows[later["id"]]["status"] == "dispatched"
    assert any(later["reference"] in b.references for b in out)
    assert not any(r["batch_id"] and r["batch_id"].startswith("claim:") for r in rows.values())


# --- the mail room's returns ------------------------------------------------------------------


def test_mail_room_returns(demo, tmp_path):
    app = make_app(demo)
    rows = letter_rows(app)
    awaiting = sorted((r for r in rows.values() if r["postage"] == "lrar" and r["case_phase"] == "awaiting_receipt"),
                      key=lambda r: r["id"])
    assert len(awaiting) >= 2, "the demo should stop while two LRAR notices await their receipt"
    signed, unclaimed = awaiting[:2]
    lrar_people = {signed["external_id"], unclaimed["external_id"]}
    simple = [r for r in rows.values() if r["postage"] == "simple" and r["status"] == "sent"
              and r["case_status"] == "active" and r["external_id"] not in lrar_people]
    returned, other = simple[0], next(r for r in simple if r["external_id"] != simple[0]["external_id"])
    with session_scope(app.db_url) as s:
        sms = s.execute(select(Message).where(Message.channel == "sms", Message.status == "sent")).scalars().first()
        sms_ref = sms.reference

    content = "\r\n".join([
        "reference;date;outcome",
        f"{returned['reference']};2024-05-20;npai",               # 2
        f"{signed['reference']};2024-05-18;ar_signed",            # 3
        f"{unclaimed['reference']};20/05/2024;ar_unclaimed",      # 4 (as Excel re-saves dates)
        "RL-999999-9999999;2024-05-20;npai",                      # 5 unknown reference
        f"{other['reference']};2024-05-20;ar_signed",             # 6 not an LRAR
        f"{other['reference']};2024-13-40;npai",                  # 7 bad date
        f"{other['reference']};2024-05-20;égaré",                 # 8 bad outcome
        "",                                                       # 9 blank: skipped
        "n'importe quoi;;",                                       # 10 not a reference
        f"{sms_ref};2024-05-20;npai",                             # 11 not a letter
        f"{other['reference']};2030-01-01;npai",                  # 12 in the future
        f"{other['reference']};2024-03-01;npai",                  # 13 before the letter was sent
        "",
    ])
    path = tmp_path / "retours.csv"
    path.write_bytes(content.encode("cp1252"))
    now = app.calendar.at(dt.date(2024, 5, 21), dt.time(10, 0))

    def events(external_id):
        return [i for i in timeline.timeline(app, external_id) if i["kind"] == "event"]

    other_before = events(other["external_id"])
    report = letter_returns.process_returns(app, path, now)
    assert report["applied"] == 3 and report["duplicates"] == 0, report
    reasons = {r["line"]: r["reason"] for r in report["rejected"]}
    assert sorted(reasons) == [5, 6, 7, 8, 10, 11, 12, 13], reasons
    assert "inconnue" in reasons[5]
    assert "recommandée" in reasons[6]
    assert "date invalide" in reasons[7]
    assert "égaré" in reasons[8] and "npai" in reasons[8]  # cp1252 read as such
    assert "référence invalide" in reasons[10]
    assert "pas un courrier" in reasons[11]
    assert "futur" in reasons[12]
    assert "antérieure" in reasons[13]

    npai = [e for e in events(returned["external_id"]) if e["type"] == "npai"]
    assert len(npai) == 1 and npai[0]["status"] == "applied"
    rows = letter_rows(app)
    assert rows[returned["id"]]["status"] == "returned"
    assert events(other["external_id"]) == other_before
    for target, kind, receipt in ((signed, "ar_signed", dt.date(2024, 5, 18)),
                                  (unclaimed, "ar_unclaimed", dt.date(2024, 5, 20))):
        got = [e for e in events(target["external_id"]) if e["type"] == kind]
        assert len(got) == 1 and got[0]["status"] == "applied"
        with session_scope(app.db_url) as s:
            case = s.get(Case, target["case_id"])
            assert case.receipt_on == receipt and case.phase == "observation"
            event = s.execute(select(InboundEvent).where(InboundEvent.id == got[0]["id"])).scalar_one()
            assert event.source == "mail_room" and event.payload["message_id"] == target["id"]

    # The same file again: nothing changes.
    with session_scope(app.db_url) as s:
        count = s.execute(select(func.count()).select_from(InboundEvent)).scalar_one()
    again = letter_returns.process_returns(app, path, now + dt.timedelta(hours=1))
    assert again["applied"] == 0 and again["duplicates"] == 3
    assert [r["line"] for r in again["rejected"]] == sorted(reasons)
    with session_scope(app.db_url) as s:
        assert s.execute(select(func.count()).select_from(InboundEvent)).scalar_one() == count


def test_returns_file_with_a_bad_header(demo, tmp_path):
    app = make_app(demo)
    path = tmp_path / "retours.csv"
    path.write_text("ref,jour,quoi\nRL-000001-0000001,2024-05-20,npai\n", encoding="utf-8")
    report = letter_returns.process_returns(app, path, app.calendar.at(dt.date(2024, 5, 21), dt.time(10, 0)))
    assert report["applied"] == 0 and len(report["rejected"]) == 1
    assert report["rejected"][0]["line"] == 1 and "en-tête" in report["rejected"][0]["reason"]


# --- the scheduler's job ----------------------------------------------------------------------


def test_print_batch_job_is_scheduled_in_pdf_mode_only(tmp_path):
    from worker.entrypoints.scheduler import extra_jobs

    local = build_app(Settings(data_dir=tmp_path, letter_backend="local"))
    assert [name for name, _, _ in extra_jobs(local)] == []
    pdf = build_app(Settings(data_dir=tmp_path, letter_backend="pdf", print_batch_time="16:45"))
    jobs = {name: (trigger, fn) for name, trigger, fn in extra_jobs(pdf)}
    trigger, fn = jobs["print_batch"]
    fields = {f.name: str(f) for f in trigger.fields}
    assert (fields["day_of_week"], fields["hour"], fields["minute"]) == ("mon-fri", "16", "45")
    assert str(trigger.timezone) == "Europe/Paris"
    assert fn is letters.daily_print_batch


def test_daily_job_skips_days_off(demo):
    app = make_app(demo)
    cal = app.calendar
    # Wednesday 1 May 2024 is a public holiday, Saturday 27 April a weekend day.
    assert letters.daily_print_batch(app, cal.at(dt.date(2024, 5, 1), dt.time(16, 0))) == []
    assert letters.daily_print_batch(app, cal.at(dt.date(2024, 4, 27), dt.time(16, 0))) == []
    assert not (app.settings.print_dir).exists()
    assert all(r["batch_id"] is None for r in letter_rows(app).values())


# --- the CLI ------------------------------------------------------------------------------------


def _env(data_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELANCE_")}
    env["RELANCE_DATA_DIR"] = str(data_dir)
    env.update(DEMO_SECRETS)  # the demo's data is keyed with the demo's keys
    return env


def test_cli_batch_twice_at_once_and_returns(demo, tmp_path):
    app = make_app(demo)
    day = LAST  # the cases are as they are: letters of cases that moved on are dropped, not printed
    due = due_on(app, letter_rows(app), day)
    env = _env(demo)
    # Two machines start the batch at the same moment: every letter is printed exactly once.
    procs = [subprocess.Popen([str(RELANCE), "letters", "batch", "--date", day.isoformat()], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert "courriers" in "".join(out for out, _ in outs)
    folder = demo / "outbox" / "print" / day.isoformat()
    refs = [m["reference"] for f in sorted(folder.glob("*_manifest.csv")) for m in read_manifest(f)]
    assert len(refs) == len(set(refs)) and refs
    rows = letter_rows(app)
    printed = {i for i in due if rows[i]["status"] == "dispatched"}
    assert sorted(refs) == sorted(rows[i]["reference"] for i in printed)
    assert all(rows[i]["batch_id"].startswith(f"{day}/") for i in printed)
    with session_scope(app.db_url) as s:  # every other due letter was dropped, once, with its reason
        dropped = {m.id: m.cancel_reason for m in s.execute(select(Message).where(
            Message.id.in_(set(due) - printed))).scalars()}
    assert all(rows[i]["status"] == "cancelled" and reason.startswith("not_printed:")
               for i, reason in dropped.items())

    again = subprocess.run([str(RELANCE), "letters", "batch", "--date", day.isoformat()], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "Aucun courrier à imprimer pour le 17/05/2024" in again.stdout

    # Returns, comma-separated UTF-8 this time.
    target = rows[min(printed)]
    path = tmp_path / "retours.csv"
    path.write_text(f"reference,date,outcome\n{target['reference']},2024-05-20,npai\nRL-1,2024-05-20,npai\n",
                    encoding="utf-8")
    first = subprocess.run([str(RELANCE), "letters", "returns", str(path), "--json"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 3, first.stderr  # done, with a rejected line (README, exit codes)
    report = json.loads(first.stdout)
    assert report["applied"] == 1 and report["duplicates"] == 0
    assert [r["line"] for r in report["rejected"]] == [3]
    second = subprocess.run([str(RELANCE), "letters", "returns", str(path)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 3, second.stderr  # done, with a rejected line
    assert "0 retours enregistrés, 1 déjà connus, 1 lignes rejetées" in second.stdout
    assert "ligne 3 :" in second.stdout
    assert [e for e in timeline.timeline(app, target["external_id"]) if e["kind"] == "event" and e["type"] == "npai"]


# --- stale letters (issue 10): never printed once the case moved on --------------------------------

LAST = dt.date(2024, 5, 17)  # the demo's last day: the cases are as they are


def test_letters_whose_case_moved_on_are_dropped_from_the_batch(demo):
    from worker.services import cases

    app = make_app(demo)
    cal = app.calendar
    rows = letter_rows(app)
    due = due_on(app, rows, LAST)
    live = [r for r in due.values() if r["case_status"] == "active" and r["case_phase"] == "waiting"
            and r["step"].startswith("invitation") and r["step"] == r["case_step"]]
    assert len(live) >= 4, "the demo should leave invitation letters of waiting cases unprinted"
    booked, paused, closed = live[:3]
    untouched = {r["id"] for r in live[3:]}
    now = cal.at(LAST, dt.time(15, 0))
    cases.apply_event(app, external_id=booked["external_id"], type="rdv_booked", now=now,
                      appointment_at=cal.at(LAST + dt.timedelta(days=6), dt.time(10, 0)))
    cases.apply_event(app, external_id=paused["external_id"], type="legitimate_reason", now=now,
                      category="hospitalisation", until=now + dt.timedelta(days=20))
    cases.apply_event(app, external_id=closed["external_id"], type="droit_closed", now=now)
    batches = letters.produce_batches(app, LAST, cal.at(LAST, dt.time(16, 0)))
    printed = {ref for b in batches for ref in b.references}
    after = letter_rows(app)
    for row, reason in ((booked, "rdv_booked"), (paused, "legitimate_reason"), (closed, "case_closed")):
        assert row["reference"] not in printed
        assert after[row["id"]]["status"] == "cancelled" and after[row["id"]]["batch_id"] is None
        with session_scope(app.db_url) as s:
            assert s.get(Message, row["id"]).cancel_reason == f"not_printed:{reason}"
    # the letters of cases still at their step go out
    assert untouched and all(after[i]["status"] == "dispatched" and rows[i]["reference"] in printed
                             for i in untouched)
    # and nothing is both printed and cancelled
    assert not [i for i, r in after.items() if r["status"] == "cancelled" and r["reference"] in printed]
