"""The evaluation's export (``relance export evaluation``, worker/services/evaluation.py) on the known
history of tests/integration/report_history.py, on SQLite and PostgreSQL: one pseudonymised row per person
and droit (no name, NIR, matricule, address, phone or e-mail anywhere in the file), the dates of each action,
the fields the project does not hold marked as such, the file 0600, the export in the audit log, the
refusals (no purpose, no proper key). Then the commands themselves, in a subprocess."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sqlite3

import openpyxl
import pytest
from sqlalchemy import select

from tests.conftest import make_nir
from tests.integration import report_history as h
from tests.integration.test_cli import SAMPLES, Cli
from worker.adapters.store.models import AuditEntry
from worker.adapters.store.session import session_scope
from worker.services import evaluation
from worker.services.errors import ServiceError

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
KEY = "tests-only-evaluation-pseudonym-key-0123456789"
PURPOSE = "Évaluation de l'expérimentation, transmise à l'évaluateur désigné par la convention"
D = dt.date


def exports(app) -> list[dict]:
    with session_scope(app.db_url) as s:
        return [e.data for e in s.execute(select(AuditEntry).where(AuditEntry.kind == "export")
                                          .order_by(AuditEntry.id)).scalars()]


def test_the_export_is_pseudonymised_and_holds_every_action(relance_app, flux_writer, tmp_path):
    h.build(relance_app, flux_writer)
    relance_app.settings.evaluation_key = KEY
    path = tmp_path / "evaluation.xlsx"
    result = evaluation.export(relance_app, path, purpose=PURPOSE, actor="cli:tester", now=h.REPORT_NOW,
                               start=h.PERIOD[0], end=h.PERIOD[1])
    assert (result.people, result.rows) == (9, 9)  # F (no "droits et devoirs") is not in the experiment
    assert (path.stat().st_mode & 0o777) == 0o600
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["Lisez-moi", "Personnes", "Variables"]
    table = [list(r) for r in wb["Personnes"].iter_rows(values_only=True)]
    header, data = table[0], table[1:]
    assert header == [c[0] for c in evaluation.COLUMNS] + [c[0] for c in evaluation.NOT_HELD_COLUMNS]
    # Nothing that identifies a person, in any sheet.
    everything = " ".join(str(v) for ws in wb.worksheets for r in ws.iter_rows(values_only=True) for v in r)
    for identity in ("Testeur", "Alix", "CAF35-", "rue des Tests", "REDON 35600", "@example.org", "06 12 34",
                     "+336", make_nir(1)[:10], "1980-01-15"):
        assert identity not in everything
    ids = h.person_ids(relance_app)
    by = {r[0]: dict(zip(header, r)) for r in data}
    assert set(by) == {evaluation.pseudonym(KEY.encode(), ids[x]) for x in (h.A, h.B, h.C, h.D, h.E, h.G, h.H,
                                                                            h.I, h.J)}
    assert all(len(p) == 22 and p.startswith("P-") for p in by)

    def person(external_id):
        return by[evaluation.pseudonym(KEY.encode(), ids[external_id])]

    def dates(external_id, *columns):
        return [None if person(external_id)[c] is None else person(external_id)[c].date() for c in columns]

    a = person(h.A)
    assert (a["sexe"], a["annee_naissance"], a["age_ouverture_droit"], a["code_postal"]) == ("F", 1980, 44, "35600")
    assert dates(h.A, "date_ouverture_droit", "date_reception_flux", "date_premiere_invitation", "date_premier_rdv",
                 "date_premier_rdv_honore", "date_sortie") == [D(2024, 6, 3), D(2024, 6, 10), D(2024, 6, 10),
                                                              D(2024, 6, 27), D(2024, 6, 27), D(2024, 6, 27)]
    assert (a["droit_recu_en_retard"], a["organisation"], a["parcours_entree"], a["orientation_delai"],
            a["premier_rdv_fixe_par"], a["statut_premier_rdv"], a["nb_rdv_honores"], a["en_cours"],
            a["motif_sortie"], a["date_relance"]) == ("non", "CDAS-REDON", "parcours CD", "à l'entrée (flux)",
                                                      "la personne", "honoré", 1, "non", "rendez-vous honoré", None)
    b = person(h.B)
    assert dates(h.B, "date_relance", "date_convocation", "date_premier_rdv", "date_examen_sanction",
                 "date_preavis") == [D(2024, 6, 25), D(2024, 7, 10), D(2024, 7, 18), D(2024, 7, 20), D(2024, 7, 22)]
    assert (b["decision_examen"], b["nb_absences"], b["en_cours"], b["date_sortie"], b["statut_premier_rdv"]) == (
        "poursuivre (préavis)", 1, "oui", None, "passé sans présence enregistrée (absence non confirmée)")
    c = person(h.C)  # late; its relance was cancelled by the new booking before it went: no relance sent
    assert (c["droit_recu_en_retard"], c["date_relance"], c["statut_premier_rdv"], c["nb_rdv_honores"],
            c["nb_absences"]) == ("oui", None, "manqué", 1, 1)
    assert dates(h.C, "date_premier_rdv", "date_premier_rdv_honore") == [D(2024, 7, 1), D(2024, 7, 15)]
    d = person(h.D)  # re-oriented: one row, its orientation dated by the event
    assert (d["parcours_entree"], d["orientation"], d["orientation_delai"], d["premier_rdv_fixe_par"],
            d["statut_premier_rdv"]) == ("parcours CD", "France Travail", "dans les 6 semaines", "convocation",
                                         "à venir ou à confirmer")
    assert dates(h.D, "date_orientation", "date_convocation") == [D(2024, 6, 20), D(2024, 6, 20)]
    e = person(h.E)
    assert (e["annee_naissance"], e["age_ouverture_droit"], e["motifs_legitimes"], e["courrier_revenu_npai"],
            e["orientation"]) == (2001, 22, "hospitalisation", "oui", "Mission locale")
    assert person(h.H)["motifs_legitimes"] == "arrêt maladie" and person(h.H)["date_premier_rdv"] is None
    assert (person(h.I)["motif_sortie"], person(h.I)["orientation_delai"]) == (
        "droit clos", "sorti avant l'échéance sans orientation")
    j = person(h.J)
    assert (j["orientation"], j["orientation_delai"], j["motifs_legitimes"], j["en_cours"]) == (
        None, "non orienté, échéance passée", "sans domicile stable", "oui")
    for row in data:  # what the project does not hold: said, never filled in
        assert row[len(evaluation.COLUMNS):] == [evaluation.NOT_HELD] * len(evaluation.NOT_HELD_COLUMNS)
    dictionary = {r[0]: r[3] for r in wb["Variables"].iter_rows(min_row=2, values_only=True)}
    assert dictionary["date_signature_contrat"] == "non" and dictionary["pseudonyme"] == "oui"
    assert [r for r in wb["Lisez-moi"].iter_rows(values_only=True) if r[0] == "Finalité déclarée"] == [
        ("Finalité déclarée", PURPOSE)]
    for ws in wb.worksheets:
        for r in ws.iter_rows():
            assert all(cell.data_type != "f" and not (isinstance(cell.value, str) and cell.value[:1] in "=+-@")
                       for cell in r)

    # The audit log: who, when, the period, how many; never a pseudonym.
    [entry] = exports(relance_app)
    assert entry == {"export": "evaluation", "actor": "cli:tester", "purpose": PURPOSE, "people": 9, "rows": 9,
                     "droits_from": "2024-05-01", "droits_until": "2024-08-31", "format": "xlsx"}

    # CSV: the same rows; the same key gives the same pseudonyms, another key others.
    evaluation.export(relance_app, tmp_path / "evaluation.csv", purpose=PURPOSE, actor="cli:tester",
                      now=h.REPORT_NOW, start=h.PERIOD[0], end=h.PERIOD[1])
    raw = (tmp_path / "evaluation.csv").read_bytes()
    assert raw.startswith("\ufeff".encode()) and ((tmp_path / "evaluation.csv").stat().st_mode & 0o777) == 0o600
    lines = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert lines[0] == header and {r[0] for r in lines[1:]} == set(by)
    assert {r[0]: r[header.index("date_preavis")] for r in lines[1:]}[b["pseudonyme"]] == "2024-07-22"
    relance_app.settings.evaluation_key = "another-evaluation-key-for-another-recipient-0123"
    evaluation.export(relance_app, tmp_path / "other.csv", purpose=PURPOSE, actor="cli:tester", now=h.REPORT_NOW)
    other = list(csv.reader(io.StringIO((tmp_path / "other.csv").read_text(encoding="utf-8-sig"))))
    assert len(other) == 10 and not {r[0] for r in other[1:]} & set(by)
    assert [e["format"] for e in exports(relance_app)] == ["xlsx", "csv", "csv"]


@SQLITE
def test_the_export_is_refused_without_a_purpose_or_a_proper_key(relance_app, tmp_path):
    path = tmp_path / "evaluation.xlsx"

    def refused(purpose=PURPOSE, key=KEY, target=path) -> str:
        relance_app.settings.evaluation_key = key
        with pytest.raises(ServiceError) as err:
            evaluation.export(relance_app, target, purpose=purpose, actor="cli:tester", now=h.REPORT_NOW)
        return str(err.value)

    assert "--purpose" in refused(purpose="") and "--purpose" in refused(purpose="  pour  ")
    assert "RELANCE_EVALUATION_KEY est obligatoire" in refused(key=None)
    assert "trop courte" in refused(key="short-key")
    nir_key, relance_app.settings.nir_hash_key = relance_app.settings.nir_hash_key, KEY
    assert "doit différer" in refused(key=KEY)
    relance_app.settings.nir_hash_key = nir_key
    assert ".xlsx ou .csv" in refused(target=tmp_path / "evaluation.ods")
    assert "dossier introuvable" in refused(target=tmp_path / "absent" / "evaluation.csv")
    assert not path.exists() and exports(relance_app) == []


def test_the_commands(tmp_path):
    cli = Cli(tmp_path)
    cli.run("db", "upgrade")
    cli.run("ingest", str(SAMPLES / "flux_2024-03.csv"), "--now", "2024-04-02T08:00")
    cli.run("tick", "--now", "2024-04-02T10:00")
    now = ("--now", "2024-04-15T12:00")
    data = cli.json("report", "--from", "2024-03-01", "--to", "2024-03-31", *now, "--json")
    entrants = data["tables"]["entrants_mois"]["rows"]
    assert data["from"] == "2024-03-01" and entrants[-1]["month"] == "Total" and entrants[-1]["entrants"] > 0
    assert data["tables"]["delais"]["rows"][0]["reached"] == entrants[-1]["entrants"] - entrants[-1]["late"]
    text = cli.run("report", "--org", "CDAS-REDON", *now).stdout
    assert "Chiffres clés" in text and "Centre départemental d'action sociale du Pays de Redon" in text
    out = tmp_path / "out"
    out.mkdir()
    assert "Rapport écrit" in cli.run("report", "--html", str(out / "r.html"), *now).stdout
    cli.run("report", "--xlsx", str(out / "r.xlsx"), *now)
    assert (out / "r.html").stat().st_mode & 0o777 == 0o600 and openpyxl.load_workbook(out / "r.xlsx").sheetnames
    assert cli.run("report", "--json", "--html", str(out / "x.html"), ok=False).returncode == 2
    assert "organisation inconnue" in cli.fails("report", "--org", "NOWHERE")
    assert "--from : date invalide" in cli.fails("report", "--from", "mars")

    target = out / "evaluation.csv"
    assert "--purpose" in cli.fails("export", "evaluation", str(target))
    assert "RELANCE_EVALUATION_KEY" in cli.fails("export", "evaluation", str(target), "--purpose", PURPOSE)
    env = {"RELANCE_EVALUATION_KEY": KEY}
    done = cli.run("export", "evaluation", str(target), "--purpose", PURPOSE, *now, env=env).stdout
    assert "Export d'évaluation écrit" in done and "inscrit au journal d'audit" in done
    assert target.stat().st_mode & 0o777 == 0o600
    rows = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8-sig"))))
    assert len(rows) - 1 == entrants[-1]["entrants"]
    assert "Journal d'audit intact" in cli.run("audit", "verify").stdout
    con = sqlite3.connect(cli.db)
    try:
        [(data,)] = con.execute("SELECT data FROM audit_log WHERE kind = 'export'").fetchall()
    finally:
        con.close()
    logged = json.loads(data)
    assert (logged["people"], logged["purpose"], logged["actor"].startswith("cli:")) == (len(rows) - 1, PURPOSE, True)
