"""Hardening of ingestion (issue 11, "Data and input"), on both backends.

Each test reproduces one defect found by the audit: one bad file blocking the
inbox, over-long values refused by the database instead of per row, a stray
byte re-encoding a whole file, the stock sent as a flux, unknown columns kept,
control characters and formula prefixes in identity fields, a 128 KiB field
ending the file, the returns file applied half-way, row data in CLI errors.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from worker.adapters import flux
from worker.adapters.flux import FluxFormatError
from worker.adapters.store.models import InboundEvent, Message, Person
from worker.adapters.store.session import session_scope
from worker.entrypoints import jobs
from worker.services import ingest, inbox, letter_returns

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
PARIS = ZoneInfo("Europe/Paris")


def local(y, m, d, hh=10, mm=0) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=PARIS)


def _persons(app) -> dict[str, Person]:
    with session_scope(app.db_url) as s:
        return {p.external_id: p for p in s.execute(select(Person)).scalars()}


def _count(app, model) -> int:
    with session_scope(app.db_url) as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def _drop(app, name: str, content: bytes) -> Path:
    box = app.settings.inbox
    box.mkdir(parents=True, exist_ok=True)
    (box / name).write_bytes(content)
    return box / name


def _reports(app) -> dict[str, dict]:
    out = {}
    for report in app.settings.inbox.rglob("*.report.json"):
        data = json.loads(report.read_text(encoding="utf-8"))
        out[data["file"]] = {**data, "folder": report.parent.name}
    return out


def _left_in_inbox(app) -> list[str]:
    return sorted(p.name for p in app.settings.inbox.iterdir() if p.is_file())


NOW = local(2024, 6, 10, 8)


# --- one bad file never blocks the inbox ----------------------------------------------------------------


def test_a_deeply_nested_jsonl_line_is_one_rejected_line_and_the_inbox_goes_on(relance_app, flux_writer):
    app = relance_app
    good = json.dumps({"external_id": "CAF35-0008101", "last_name": "Testeur", "first_name": "Alix",
                       "birth_date": "1980-01-15", "address_line1": "1 rue des Tests", "postcode": "35600",
                       "city": "REDON", "droit_opened_on": "2024-06-03", "organisation": "CDAS-REDON"})
    nested = "[" * 100_000 + "]" * 100_000
    _drop(app, "a_nested.jsonl", (good + "\n" + nested + "\n").encode())
    shutil.copy(flux_writer([{"external_id": "CAF35-0008102"}]), app.settings.inbox / "b_good.csv")
    results = inbox.scan_inbox(app, NOW)  # must not raise
    assert _left_in_inbox(app) == []
    assert [r["file"] for r in results] == ["a_nested.jsonl", "b_good.csv"]
    reports = _reports(app)
    assert reports["a_nested.jsonl"]["folder"] == "done"
    assert [(r["line"], r["field"]) for r in reports["a_nested.jsonl"]["rejected"]] == [(2, "ligne")]
    assert reports["a_nested.jsonl"]["accepted"] == 1
    assert reports["b_good.csv"]["folder"] == "done" and reports["b_good.csv"]["accepted"] == 1
    assert set(_persons(app)) == {"CAF35-0008101", "CAF35-0008102"}


def test_any_failure_of_one_file_moves_it_to_failed_and_the_others_are_read(relance_app, flux_writer, monkeypatch):
    app = relance_app
    shutil.copy(flux_writer([{"external_id": "CAF35-0008201"}], name="x.csv"), _drop(app, "a_boom.csv", b"x"))
    shutil.copy(flux_writer([{"external_id": "CAF35-0008202"}], name="y.csv"), _drop(app, "b_good.csv", b"x"))
    real = ingest.ingest_file

    def flaky(app_, path, now, progress=None):
        if Path(path).name == "a_boom.csv":
            raise RuntimeError("Le Goff Gwenaël 185013500090067")  # an unexpected error quoting row data
        return real(app_, path, now, progress)

    monkeypatch.setattr(inbox, "ingest_file", flaky)
    inbox.scan_inbox(app, NOW)  # must not raise
    assert _left_in_inbox(app) == []
    reports = _reports(app)
    assert reports["a_boom.csv"]["folder"] == "failed" and reports["a_boom.csv"]["status"] == "failed"
    error = reports["a_boom.csv"]["error"]
    assert "inattendue" in error and "Gwenaël" not in error and "185013500090067" not in error
    assert reports["b_good.csv"]["folder"] == "done"
    assert set(_persons(app)) == {"CAF35-0008202"}


def test_a_file_that_cannot_be_moved_does_not_stop_the_scan(relance_app, flux_writer, monkeypatch):
    app = relance_app
    shutil.copy(flux_writer([{"external_id": "CAF35-0008301"}], name="x.csv"), _drop(app, "a.csv", b"x"))
    shutil.copy(flux_writer([{"external_id": "CAF35-0008302"}], name="y.csv"), _drop(app, "b.csv", b"x"))
    real_move = shutil.move

    def move(src, dst):
        if Path(src).name == "a.csv":
            raise PermissionError("refusé")
        return real_move(src, dst)

    monkeypatch.setattr(inbox.shutil, "move", move)
    inbox.scan_inbox(app, NOW)  # must not raise
    assert _left_in_inbox(app) == ["a.csv"]
    assert set(_persons(app)) == {"CAF35-0008301", "CAF35-0008302"}


# --- over-long values: per row, on both backends, limits from the models ------------------------------------


def test_limits_are_the_model_columns():
    table = Person.__table__
    for name, limit in flux.FIELD_MAX_LENGTHS.items():
        assert table.c[name].type.length == limit, name
    assert {"external_id", "last_name", "first_name", "address_line1", "address_line2", "city",
            "postcode", "phone", "email", "organisation"} <= set(flux.FIELD_MAX_LENGTHS)


def test_over_long_values_are_rejected_per_row(relance_app, flux_writer):
    app = relance_app
    long_name = "Kerguélen-" * 23 + "Tremarec"  # 238 characters
    assert len(long_name) == 238
    path = flux_writer([
        {"external_id": "CAF35-0008401"},
        {"external_id": "CAF35-0008402", "last_name": long_name},
        {"external_id": "C" * 65},
        {"external_id": "CAF35-0008404", "city": "V" * 101},
        {"external_id": "CAF35-0008405", "address_line2": "B" * 201},
        {"external_id": "CAF35-0008406"},
    ])
    rep = ingest.ingest_file(app, path, NOW)  # no driver error on PostgreSQL
    assert [(r["line"], r["field"]) for r in rep.rejected] == [
        (3, "last_name"), (4, "external_id"), (5, "city"), (6, "address_line2")]
    assert all("caractères" in r["reason"] for r in rep.rejected)
    assert all(long_name not in r["reason"] and "C" * 65 not in r["reason"] for r in rep.rejected)
    assert rep.rejected[1]["external_id"] is None  # the over-long identifier is not echoed either
    assert rep.accepted == 2
    assert set(_persons(app)) == {"CAF35-0008401", "CAF35-0008406"}


def test_over_long_values_in_the_inbox_do_not_block_it(relance_app, flux_writer):
    app = relance_app
    shutil.copy(flux_writer([{"external_id": "CAF35-0008501", "last_name": "N" * 238}], name="x.csv"),
                _drop(app, "a_long.csv", b"x"))
    shutil.copy(flux_writer([{"external_id": "CAF35-0008502"}], name="y.csv"), _drop(app, "b_good.csv", b"x"))
    inbox.scan_inbox(app, NOW)
    assert _left_in_inbox(app) == []
    reports = _reports(app)
    assert reports["a_long.csv"]["folder"] == "done"
    assert [(r["line"], r["field"]) for r in reports["a_long.csv"]["rejected"]] == [(2, "last_name")]
    assert set(_persons(app)) == {"CAF35-0008502"}


# --- encoding decided per file, with evidence ------------------------------------------------------------------


def _stray_byte_copy(tmp_path: Path) -> tuple[Path, str]:
    """flux_2024-03.csv (UTF-8) with one name typed in Windows-1252 (one stray byte)."""
    raw = (SAMPLES / "flux_2024-03.csv").read_bytes()
    lines = raw.split(b"\n")
    i = next(k for k, line in enumerate(lines) if b"Zo\xc3\xa9" in line)
    lines[i] = lines[i].replace(b"Zo\xc3\xa9", b"Zo\xe9")
    out = tmp_path / "flux_stray.csv"
    out.write_bytes(b"\n".join(lines))
    return out, lines[i].split(b",")[0].decode()


def test_one_stray_cp1252_byte_does_not_re_encode_the_whole_file(relance_app, tmp_path):
    app = relance_app
    path, bad_id = _stray_byte_copy(tmp_path)
    rep = ingest.ingest_file(app, path, local(2024, 4, 2))
    assert [(r["external_id"], r["field"]) for r in rep.rejected] == [(bad_id, "first_name")]
    assert "UTF-8" in rep.rejected[0]["reason"]
    assert rep.accepted == 29
    persons = _persons(app)
    assert persons["CAF35-0001002"].first_name == "Inès"
    assert persons["CAF35-0001002"].address_line1 == "59 allée des Chênes"
    assert not any("Ã" in (p.first_name + p.last_name + (p.address_line1 or "")) for p in persons.values())


def test_a_re_ingest_never_rewrites_names_to_mojibake(relance_app, tmp_path):
    app = relance_app
    ingest.ingest_file(app, SAMPLES / "flux_2024-03.csv", local(2024, 4, 2, 8))
    before = {e: (p.first_name, p.last_name, p.address_line1, p.address_line2, p.city)
              for e, p in _persons(app).items()}
    # The same people, once with a stray byte, once as a double-encoded export (UTF-8 read as cp1252).
    stray, bad_id = _stray_byte_copy(tmp_path)
    rep = ingest.ingest_file(app, stray, local(2024, 4, 3))
    assert (rep.updated, rep.unchanged, [r["external_id"] for r in rep.rejected]) == (0, 29, [bad_id])
    double = tmp_path / "flux_double.csv"
    double.write_bytes((SAMPLES / "flux_2024-03.csv").read_bytes().decode("utf-8").encode("utf-8")
                       .decode("cp1252").encode("utf-8"))
    rep = ingest.ingest_file(app, double, local(2024, 4, 4))
    assert rep.updated == 0 and rep.rejected and rep.accepted == 0
    assert all("encod" in r["reason"] for r in rep.rejected)
    after = {e: (p.first_name, p.last_name, p.address_line1, p.address_line2, p.city)
             for e, p in _persons(app).items()}
    assert after == before


def test_a_windows_1252_file_is_still_read_as_such(relance_app):
    rep = ingest.ingest_file(relance_app, SAMPLES / "flux_2024-04_excel.csv", local(2024, 5, 2))
    assert (rep.accepted, rep.rejected) == (30, [])
    assert _persons(relance_app)["CAF35-0002000"].address_line2 == "Résidence Les Ajoncs"


# --- the stock is not a flux ------------------------------------------------------------------------------------------


def test_the_stock_file_is_refused_as_a_flux(relance_app):
    app = relance_app
    with pytest.raises(FluxFormatError) as exc:
        ingest.ingest_file(app, SAMPLES / "stock_2023-03.csv", local(2023, 4, 15))
    message = str(exc.value)
    assert "stock" in message and "utilisez l'import du stock" in message and "segment" in message
    assert (_count(app, Person), _count(app, Message)) == (0, 0)
    # Through the inbox: failed, with that message; nothing sent at the next tick.
    shutil.copy(SAMPLES / "stock_2023-03.csv", _drop(app, "stock.csv", b""))
    jobs.cycle(app, local(2023, 4, 17))
    report = _reports(app)["stock.csv"]
    assert report["folder"] == "failed" and "utilisez l'import du stock" in report["error"]
    assert (_count(app, Person), _count(app, Message)) == (0, 0)


def test_a_stock_without_its_columns_is_refused_by_its_old_droits(relance_app, tmp_path):
    rows = list(csv.DictReader(io.StringIO((SAMPLES / "stock_2023-03.csv").read_text(encoding="utf-8"))))
    out = tmp_path / "export_caf.csv"
    with open(out, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[c for c in rows[0] if c not in ("segment", "priority")],
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(FluxFormatError, match="utilisez l'import du stock"):
        ingest.ingest_file(relance_app, out, local(2023, 4, 15))
    assert _count(relance_app, Person) == 0


def test_a_flux_processed_late_is_still_a_flux(relance_app):
    rep = ingest.ingest_file(relance_app, SAMPLES / "flux_2024-03.csv", local(2025, 2, 3))
    assert (rep.accepted, rep.rejected) == (30, [])


# --- unknown columns ------------------------------------------------------------------------------------------------------


def _with_columns(tmp_path: Path, name: str, **columns) -> Path:
    rows = list(csv.DictReader(io.StringIO((SAMPLES / "flux_2024-03.csv").read_text(encoding="utf-8"))))
    out = tmp_path / name
    with open(out, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[*rows[0], *columns])
        w.writeheader()
        for r in rows:
            w.writerow({**r, **columns})
    return out


def test_unknown_columns_are_not_stored_and_are_named_in_a_warning(relance_app, tmp_path):
    app = relance_app
    path = _with_columns(tmp_path, "flux_caf.csv", situation_sante="ALD diabète", csp="ouvrier")
    rep = ingest.ingest_file(app, path, local(2024, 4, 2))
    assert rep.accepted == 30 and rep.rejected == []
    [warning] = rep.warnings
    assert warning["field"] == "colonnes" and warning["external_id"] is None
    assert "situation_sante" in warning["reason"] and "csp" in warning["reason"]
    assert "diabète" not in warning["reason"] and "ouvrier" not in warning["reason"]
    assert all(p.extra == {} for p in _persons(app).values())


def test_whitelisted_columns_are_kept(relance_app, tmp_path):
    from worker.bootstrap import build_app

    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config)
    (config / "flux_columns.yaml").write_text("extra_columns:\n  - numero_allocataire_cd\n", encoding="utf-8")
    app = build_app(relance_app.settings.model_copy(update={"config_dir": config}))
    path = _with_columns(tmp_path, "flux_cd.csv", numero_allocataire_cd="A-12", csp="ouvrier")
    rep = ingest.ingest_file(app, path, local(2024, 4, 2))
    assert rep.accepted == 30
    assert [w["field"] for w in rep.warnings] == ["colonnes"] and "csp" in rep.warnings[0]["reason"]
    assert all(p.extra == {"numero_allocataire_cd": "A-12"} for p in _persons(app).values())


# --- control characters, bidi overrides, formula prefixes ---------------------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("last_name", "=HYPERLINK(\"http://x\",\"Martin\")"),
    ("first_name", "+Léa"),
    ("last_name", "-2+3"),
    ("city", "@SUM(A1)"),
    ("address_line1", "1 rue\x07 X"),
    ("last_name", "Mar\u202etin"),
    ("first_name", "L\u2066éa"),
    ("address_line2", "Bât\x1bB"),
    ("external_id", "=CAF35-1"),
], ids=["eq", "plus", "minus", "at", "bell", "rlo", "lri", "esc", "id"])
def test_identity_fields_refuse_control_bidi_and_formula_characters(relance_app, flux_writer, field, value):
    rows = [{"external_id": "CAF35-0008601"}, {"external_id": "CAF35-0008602", field: value}]
    rep = ingest.ingest_file(relance_app, flux_writer(rows), NOW)
    assert [(r["line"], r["field"]) for r in rep.rejected] == [(3, field)]
    assert value not in rep.rejected[0]["reason"]
    assert set(_persons(relance_app)) == {"CAF35-0008601"}


def test_a_hyphen_inside_a_name_is_fine(relance_app, flux_writer):
    rep = ingest.ingest_file(relance_app, flux_writer([{"external_id": "CAF35-0008701", "last_name": "Le Goff-Riou",
                                                        "address_line2": "Bât. B - 2e étage"}]), NOW)
    assert (rep.accepted, rep.rejected) == (1, [])


# --- a field over 128 KiB ---------------------------------------------------------------------------------------------------


def test_a_field_over_128_kib_is_one_rejected_row(relance_app, flux_writer):
    app = relance_app
    path = flux_writer([{"external_id": "CAF35-0008801"}, {"external_id": "CAF35-0008802"},
                        {"external_id": "CAF35-0008803"}])
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"2 rue des Tests", b"2 rue " + b"x" * (200 * 1024))
    path.write_bytes(b"\n".join(lines))
    rep = ingest.ingest_file(app, path, NOW)
    assert [(r["line"], r["field"]) for r in rep.rejected] == [(3, "address_line1")]
    assert "128" in rep.rejected[0]["reason"] and "reste du fichier" not in rep.rejected[0]["reason"]
    assert set(_persons(app)) == {"CAF35-0008801", "CAF35-0008803"}


# --- the mail room's returns file: all or nothing -------------------------------------------------------------------------


def _letters_sent(app, flux_writer) -> list[str]:
    path = flux_writer([{"external_id": f"CAF35-00089{i:02d}"} for i in range(3)], name="returns_flux.csv")
    ingest.ingest_file(app, path, local(2024, 6, 3, 8))
    jobs.cycle(app, local(2024, 6, 3, 10))
    with session_scope(app.db_url) as s:
        letters = s.execute(select(Message).where(Message.channel == "letter").order_by(Message.id)).scalars().all()
        for m in letters:  # sent as the letter channel records it (whatever the templates say today)
            m.status, m.sent_at = "sent", m.sent_at or local(2024, 6, 3, 10)
        return [m.reference for m in letters]


def test_a_returns_field_over_128_kib_is_one_rejected_line(relance_app, flux_writer, tmp_path):
    app = relance_app
    refs = _letters_sent(app, flux_writer)
    assert len(refs) == 3
    path = tmp_path / "retours.csv"
    path.write_text("reference,date,outcome\n" + f"{refs[0]},2024-06-04,npai\n"
                    + f"{refs[1]},2024-06-04,npai " + "x" * (200 * 1024) + "\n"
                    + f"{refs[2]},2024-06-04,npai\n", encoding="utf-8")
    report = letter_returns.process_returns(app, path, local(2024, 6, 5))
    assert report["applied"] == 2
    assert [r["line"] for r in report["rejected"]] == [3] and "128" in report["rejected"][0]["reason"]


def test_the_returns_file_is_applied_all_or_nothing(relance_app, flux_writer, tmp_path, monkeypatch):
    app = relance_app
    refs = _letters_sent(app, flux_writer)
    path = tmp_path / "retours.csv"
    path.write_text("reference,date,outcome\n" + "".join(f"{r},2024-06-04,npai\n" for r in refs), encoding="utf-8")
    from worker.services import cases

    real = cases.apply_event
    calls = []

    def failing(*args, **kwargs):
        calls.append(kwargs.get("idempotency_key"))
        if len(calls) == 2:
            raise RuntimeError("base perdue")
        return real(*args, **kwargs)

    monkeypatch.setattr(cases, "apply_event", failing)
    with pytest.raises(RuntimeError):
        letter_returns.process_returns(app, path, local(2024, 6, 5))
    assert _count(app, InboundEvent) == 0  # the first line was not kept: nothing applied
    with session_scope(app.db_url) as s:
        assert set(s.execute(select(Person.address_status)).scalars()) == {"ok"}
    monkeypatch.setattr(cases, "apply_event", real)
    report = letter_returns.process_returns(app, path, local(2024, 6, 5, 11))
    assert (report["applied"], report["rejected"]) == (3, [])
    assert _count(app, InboundEvent) == 3


# --- CLI errors carry no row data ---------------------------------------------------------------------------------------------


# Keys fit for "real data" (the CLI refuses the development defaults).
TEST_KEYS = {"RELANCE_NIR_HASH_KEY": "5e" * 32, "RELANCE_AUDIT_KEY": "a7" * 32}


def _cli(env: dict, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker.entrypoints.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.postgres
def _cli_on_a_fresh_database(monkeypatch, tmp_path: Path, *args: str):
    """``relance ARGS`` in this process on a new SQLite database with the test keys: its SystemExit."""
    from worker.adapters.store.session import upgrade
    from worker.bootstrap import set_app
    from worker.entrypoints import cli
    from worker.settings import reset_settings

    monkeypatch.setenv("RELANCE_DATA_DIR", str(tmp_path / "data"))
    for name, value in TEST_KEYS.items():
        monkeypatch.setenv(name, value)
    upgrade(f"sqlite:///{tmp_path / 'data' / 'relance.db'}")
    reset_settings()
    set_app(None)
    monkeypatch.setattr(sys, "argv", ["relance", *args])
    try:
        with pytest.raises(SystemExit) as exc:
            cli.main()
    finally:
        set_app(None)
        reset_settings()
    return exc.value


def test_cli_ingest_on_postgresql_prints_no_row_data(pg_url, tmp_path, flux_writer):
    name = "Kerguélen-Tremarec" * 14  # 252 characters: longer than persons.last_name
    path = flux_writer([{"external_id": "CAF35-0009901", "last_name": name}, {"external_id": "CAF35-0009902"}])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELANCE_")}
    env.update(RELANCE_DATA_DIR=str(tmp_path / "data"), RELANCE_DATABASE_URL=pg_url, **TEST_KEYS)
    assert _cli(env, "db", "upgrade", cwd=tmp_path).returncode == 0
    proc = _cli(env, "ingest", str(path), "--now", "2024-06-10T08:00", cwd=tmp_path)
    assert "Traceback" not in proc.stderr and "configuration" not in proc.stderr, proc.stderr
    assert "CAF35-0009901" in proc.stdout, proc.stdout + proc.stderr  # the row is rejected, by its identifier
    assert "Kerguélen" not in proc.stdout + proc.stderr
    assert "CAF35-0009902" not in proc.stderr


def test_cli_database_errors_are_printed_without_their_detail(monkeypatch, capsys, flux_writer, tmp_path):
    """Whatever the database says (it may quote a value), the CLI prints only its kind."""
    from sqlalchemy.exc import DataError

    class Orig(Exception):
        sqlstate = "22001"

    def boom(*args, **kwargs):
        raise DataError("COPY persons", {}, Orig('value too long\nCONTEXT: COPY persons, line 1: "Le Goff Gwenaël"'))

    monkeypatch.setattr(ingest, "_ingest_chunk", boom)
    exc = _cli_on_a_fresh_database(monkeypatch, tmp_path, "ingest", str(flux_writer([{"external_id": "CAF35-0009903"}])),
                                   "--now", "2024-06-10T08:00")
    err = capsys.readouterr().err
    assert exc.code != 0
    assert "Gwenaël" not in err and "COPY" not in err
    assert "base de données" in err and len(err.strip().splitlines()) == 1


def test_cli_unexpected_database_errors_are_printed_without_their_detail(monkeypatch, capsys, tmp_path):
    """Any command: a raw database error reaching the CLI prints its kind, not its text."""
    from sqlalchemy.exc import IntegrityError

    def boom(*args, **kwargs):
        raise IntegrityError("UPDATE persons", {}, Exception("Key (last_name)=(Le Goff Gwenaël) already exists"))

    returns = tmp_path / "retours.csv"
    returns.write_text("reference,date,outcome\n", encoding="utf-8")
    monkeypatch.setattr(letter_returns, "process_returns", boom)
    exc = _cli_on_a_fresh_database(monkeypatch, tmp_path, "letters", "returns", str(returns))
    err = capsys.readouterr().err
    assert exc.code != 0 and len(err.strip().splitlines()) == 1
    assert "Gwenaël" not in err and "UPDATE" not in err and "IntegrityError" in err


# --- exports: formula-safe -------------------------------------------------------------------------------------------------


def test_spreadsheet_cells_are_never_formulas():
    from worker.adapters.spreadsheet import safe_row

    assert safe_row(["=HYPERLINK(\"http://x\")", "+33612345678", "-1", "@SUM(A1)", "\t=1", "\r=1", "RL-000001-0000002",
                     "Le Goff", 3, -2, None, ""]) == [
        "'=HYPERLINK(\"http://x\")", "'+33612345678", "'-1", "'@SUM(A1)", "'\t=1", "'\r=1", "RL-000001-0000002",
        "Le Goff", 3, -2, None, ""]


def test_every_csv_or_xlsx_writer_goes_through_safe_row():
    """A standing check: a new CSV/XLSX export in worker/ must use worker.adapters.spreadsheet."""
    import re

    writers = re.compile(r"csv\.writer|DictWriter|openpyxl|xlsxwriter")
    offenders = []
    for path in (REPO / "worker").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name != "spreadsheet.py" and writers.search(text) and "safe_row" not in text:
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
