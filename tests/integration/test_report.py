"""The indicators (``relance report``, worker/services/report*.py) on a history with known answers
(tests/integration/report_history.py), on SQLite and PostgreSQL: every figure checked exactly, including
empty months, people with no appointment yet, a late droit and a re-orientation; the HTML file
(self-contained, with its charts), the workbook (one sheet per table, no formula) and the JSON; the
workspace's "Tableau de bord" for the department team and for an agent.

Worked out from the timeline (received 10 June for every droit; the report is made on 2 September):

* first invitation sent on 10 June: A 7 days, B 5, D 3, E 9, G 2, H 4, I 6, J 8 (on time: median
  (5+6)/2 = 5.5, nearest-rank 90th percentile: the 8th of 8 = 9); C 40 days (late, apart);
* first appointment attended: A 27 June (24 days), G 17 June (9 days), C 15 July (75 days, late): on time
  2 of 8, median 16.5, p90 24 (2nd of 2), within 15 days 1/8, within 30 days 2/8;
* first appointment (not cancelled): A booked at invitation_1, attended; C booked at invitation_1, missed;
  B convocation, unconfirmed; D and G France Travail convocations, scheduled (never confirmed) and
  attended; E, H (excused), I, J none: attendance 2 / 4 = 50 %;
* orientation: A, B, C, H (CD), E (ML), G (FT) at entry; D re-oriented to FT on 20 June (within the 6
  weeks); J never (deadline 22 July passed); I left before the deadline (droit closed): 7 / 8.
"""
from __future__ import annotations

import html
import re

import openpyxl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.integration import report_history as h
from worker.adapters.store.models import Message
from worker.adapters.store.session import session_scope
from worker.entrypoints.api import create_app
from worker.services import agents, report, report_output

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def rows(rep, key: str) -> list[list]:
    return rep.table(key).rows


def row(rep, key: str, label: str) -> list:
    return next(r[1:] for r in rows(rep, key) if r[0] == label)


def approx(values):
    return [pytest.approx(v) if isinstance(v, float) else v for v in values]


def check_all_organisations(app, rep) -> None:
    assert (rep.start, rep.end) == h.PERIOD and rep.organisation is None
    assert rows(rep, "synthese") == approx([
        ["Entrants (droits ouverts soumis aux droits et devoirs)", 9, None, None],
        ["dont droits reçus en retard (après l'objectif de 15 jours)", 1, None, 1 / 9],
        ["Délai médian de l'ouverture du droit à la 1re invitation (droits reçus à temps)", None, 5.5, None],
        ["Invités dans les 15 jours (droits reçus à temps)", 8, None, 1.0],
        ["Délai médian jusqu'au 1er rendez-vous honoré (droits reçus à temps)", None, 16.5, None],
        ["1er rendez-vous honoré dans les 30 jours (droits reçus à temps)", 2, None, 0.25],
        ["Présence au premier rendez-vous", 2, None, 0.5],
        ["Orientés dans les 6 semaines", 7, None, 7 / 8],
        ["Entrants dont un courrier est revenu (NPAI)", 1, None, 1 / 9],
        ["Renvois en commission RSA (dans la période)", 0, None, None],
        ["Décisions de suspension (dans la période)", 0, None, None]])
    # Months: May (C, late), June, and two empty months; F (no "droits et devoirs") apart.
    assert rows(rep, "entrants_mois") == [["mai 2024", 1, 1, 1, 0, 0, 0, 0], ["juin 2024", 8, 0, 6, 1, 0, 1, 1],
                                          ["juillet 2024", 0, 0, 0, 0, 0, 0, 0], ["août 2024", 0, 0, 0, 0, 0, 0, 0],
                                          ["Total", 9, 1, 7, 1, 0, 1, 1]]
    assert rows(rep, "entrants_organisation") == [["CDAS-REDON", 5, 1, 5, 0, 0, 0], ["CDAS-VALLONS", 2, 0, 2, 0, 0, 0],
                                                  ["FT-REDON", 1, 0, 0, 1, 0, 0], ["ML-REDON", 1, 0, 0, 0, 0, 1]]
    assert [r[1:] for r in rows(rep, "delais")] == approx([
        [8, 8, 0, 5.5, 9, 1.0, 1.0],  # invitation, on time
        [1, 1, 0, 40.0, 40, 0.0, 0.0],  # invitation, late droits counted apart
        [8, 2, 6, 16.5, 24, 1 / 8, 2 / 8],  # first appointment attended, on time
        [1, 1, 0, 75.0, 75, 0.0, 0.0]])
    assert rows(rep, "mois") == approx([
        ["mai 2024", 1, 1, None, None, None, None, None, 0.0],
        ["juin 2024", 8, 0, 5.5, 9, 1.0, 16.5, 0.25, 2 / 3],
        ["juillet 2024", 0, 0, None, None, None, None, None, None],
        ["août 2024", 0, 0, None, None, None, None, None, None]])
    assert rows(rep, "rendez_vous") == approx([
        ["Pris par la personne", 4, 2, 1, 0, 1, 0, 0, 2 / 3],
        ["Fixés par convocation", 3, 1, 0, 1, 0, 0, 1, 0.5],
        ["Total", 7, 3, 1, 1, 1, 0, 1, 0.6]])
    assert rows(rep, "premier_rdv") == approx([
        ["Pris par la personne à l'étape « 1re invitation »", 2, 0.4, 1, 1, 0, 0.5],
        ["Fixé par la convocation", 1, 0.2, 0, 1, 0, 0.0],
        ["Fixé par la convocation France Travail", 2, 0.4, 1, 0, 1, 1.0],
        ["Tous les premiers rendez-vous", 5, 1.0, 2, 2, 1, 0.5],
        ["Pas encore de rendez-vous", 4, 4 / 9, None, None, None, None]])
    assert dict(rows(rep, "procedure")) == {
        "Étape : 1re invitation": 8, "Étape : relance (2e invitation)": 3, "Étape : appel de suivi": 0,
        "Étape : convocation": 1, "Étape : convocation France Travail": 2, "Étape : dernier rappel France Travail": 0,
        "Étape : signalement de France Travail": 0, "Étape : examen avant sanction": 1,
        "Étape : préavis de sanction (LRAR)": 1, "Étape : examen des observations": 0,
        "Étape : renvoi en commission RSA": 0, "Événement : accusés de réception du préavis signés": 0,
        "Événement : préavis non réclamés (avis de passage)": 0, "Événement : observations reçues": 0,
        "Événement : demandes à être entendu(e)": 0, "Événement : décisions de suspension (après la commission)": 0,
        "Événement : levées de suspension": 0}
    assert row(rep, "examens", "poursuivre (préavis)") == [1, 1.0] and row(rep, "examens", "Total") == [1, 1.0]
    assert rows(rep, "sorties") == [["rendez-vous honoré", 3], ["droit clos", 1],
                                    ["réorienté (suite dans un nouveau dossier)", 1], ["Total", 5]]
    reasons = {r[0]: r[1:] for r in rows(rep, "motifs_legitimes")}
    assert reasons["hospitalisation"] == reasons["arrêt maladie"] == reasons["sans domicile stable"] == [1, 0, 1]
    assert reasons["incarcération"] == [0, 0, 0] and reasons["Total"] == [3, 0, 3]
    assert rows(rep, "orientation") == approx([
        ["Conseil départemental (CDAS / CCAS)", 4, 0, 0, 0, 0, 0, 1.0],
        ["France Travail", 1, 1, 0, 0, 0, 0, 1.0],
        ["Mission locale", 1, 0, 0, 0, 0, 0, 1.0],
        ["Sans orientation enregistrée", 0, 0, 0, 1, 0, 1, None],
        ["Ensemble", 6, 1, 0, 1, 0, 1, 7 / 8]])
    # Messages: the table agrees with a plain count of the store; the failures are the three made.
    with session_scope(app.db_url) as s:
        stored = dict(((c, st), n) for c, st, n in s.execute(
            select(Message.channel, Message.status, func.count()).group_by(Message.channel, Message.status)))
    statuses = [c.key for c in rep.table("messages").columns[1:-1]]
    for r, channel in zip(rows(rep, "messages"), ("letter", "sms", "email")):
        assert r[1:-1] == [stored.get((channel, st), 0) for st in statuses]
    assert row(rep, "messages", "courrier") == [0, 0, 12, 0, 0, 1, 0, 0, 0, 1, 14]
    assert row(rep, "messages", "SMS") == [0, 0, 15, 0, 0, 0, 1, 0, 0, 6, 22]
    assert row(rep, "messages", "e-mail") == [0, 0, 10, 0, 0, 0, 1, 0, 0, 1, 12]
    assert rows(rep, "echecs") == approx([["courrier", 13, 0, 0.0, 0, 0.0, 1, 1 / 13],
                                          ["SMS", 16, 1, 1 / 16, 0, 0.0, None, None],
                                          ["e-mail", 11, 1, 1 / 11, 0, 0.0, None, None]])
    assert rows(rep, "messages_mois") == [["mai 2024", 0, 0, 0, 0], ["juin 2024", 11, 14, 11, 36],
                                          ["juillet 2024", 2, 2, 0, 4], ["août 2024", 0, 0, 0, 0]]


def check_one_organisation(app) -> None:
    redon = report.build(app, h.REPORT_NOW, *h.PERIOD, organisation="CDAS-REDON")
    assert redon.organisation_label == "Centre départemental d'action sociale du Pays de Redon (CDAS-REDON)"
    assert rows(redon, "entrants_mois")[-1] == ["Total", 5, 1, 5, 0, 0, 0, 1]  # F: no "droits et devoirs"
    assert [r[1:4] for r in rows(redon, "delais")] == [[4, 4, 0], [1, 1, 0], [4, 1, 3], [1, 1, 0]]
    assert row(redon, "synthese", "Délai médian de l'ouverture du droit à la 1re invitation (droits reçus à temps)")[
        1] == pytest.approx(4.5)  # A 7, B 5, D 3, H 4
    # France Travail: its entrant G and G's case, and D's case after the re-orientation to France Travail
    # (config/territory.yaml path_organisations: the FT agency takes it; the activity follows the case's
    # organisation, the entrant stays counted where the droit came in).
    ft = report.build(app, h.REPORT_NOW, *h.PERIOD, organisation="FT-REDON")
    assert rows(ft, "entrants_mois")[-1] == ["Total", 1, 0, 0, 1, 0, 0, 0]
    assert row(ft, "rendez_vous", "Fixés par convocation") == approx([2, 1, 0, 0, 0, 0, 1, 1.0])  # G, D
    assert row(ft, "rendez_vous", "Pris par la personne")[0] == 0
    assert dict(rows(ft, "procedure"))["Étape : convocation France Travail"] == 2  # G, D
    assert row(ft, "echecs", "SMS")[:3] == approx([3, 1, 1 / 3])  # G's failed one, D's two (G's reminder: cancelled)
    assert row(redon, "rendez_vous", "Fixés par convocation") == approx([1, 0, 0, 1, 0, 0, 0, 0.0])  # B


def check_outputs(app, rep, tmp_path) -> None:
    html_path = report_output.write(app, rep, tmp_path / "rapport.html", "html")
    page = html_path.read_text(encoding="utf-8")
    assert (html_path.stat().st_mode & 0o777) == 0o600
    assert page.startswith("<!DOCTYPE html>") and "Tableau de bord Relance" in page
    # Self-contained: nothing to fetch (no URL, no external stylesheet, script or image), the charts inside.
    outside_images = re.sub(r"data:image/svg\+xml;base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(r"https?:|//[a-z]|url\(", outside_images, re.I)
    assert not re.search(r"<(script|link|iframe|object|embed)\b", page, re.I)
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == 4 and all(src.startswith("data:image/svg+xml;base64,") for src in sources)
    assert len(re.findall(r'<img [^>]*alt="[^"]{40,}"', page)) == 4
    assert page.count("<table>") == len(rep.tables) and "@media print" in page
    import base64

    svg = base64.b64decode(sources[0].split(",", 1)[1]).decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "<script" not in svg

    xlsx_path = report_output.write(app, rep, tmp_path / "rapport.xlsx", "xlsx")
    assert (xlsx_path.stat().st_mode & 0o777) == 0o600
    wb = openpyxl.load_workbook(xlsx_path)
    assert wb.sheetnames[0] == "À propos" and len(wb.sheetnames) == 1 + len(rep.tables)
    for sheet, table in zip(wb.worksheets[1:], rep.tables):
        values = [list(r) for r in sheet.iter_rows(values_only=True)]
        assert values[0] == [c.label for c in table.columns]
        assert values[1:] == [[None if v is None else v for v in r] for r in table.rows]
    for sheet in wb.worksheets:
        for r in sheet.iter_rows():
            for cell in r:
                assert cell.data_type != "f"
                assert not (isinstance(cell.value, str) and cell.value[:1] in "=+-@"), cell.value
    data = rep.as_json()
    assert data["tables"]["synthese"]["rows"][0] == {"indicator": rows(rep, "synthese")[0][0], "count": 9,
                                                     "days": None, "share": None}
    assert data["tables"]["delais"]["rows"][0]["median"] == 5.5 and data["from"] == "2024-05-01"


def test_indicators_on_a_known_history(relance_app, flux_writer, tmp_path):
    h.build(relance_app, flux_writer)
    rep = report.build(relance_app, h.REPORT_NOW, *h.PERIOD)
    check_all_organisations(relance_app, rep)
    check_one_organisation(relance_app)
    check_outputs(relance_app, rep, tmp_path)
    # Without a period: from the month of the first droit (May) to the report's day.
    default = report.build(relance_app, h.REPORT_NOW)
    assert (default.start, default.end) == (h.PERIOD[0], h.REPORT_NOW.date())
    assert [r[0] for r in rows(default, "entrants_mois")][-2:] == ["septembre 2024", "Total"]
    # A period before any droit: every count is zero, every median and rate is absent.
    empty = report.build(relance_app, h.REPORT_NOW, h.PERIOD[0].replace(year=2023), h.PERIOD[1].replace(year=2023))
    assert rows(empty, "synthese")[0][1] == 0 and row(empty, "delais", rows(empty, "delais")[0][0])[3] is None


# --- the workspace's dashboard ------------------------------------------------------------------------------


DEPARTMENT = ("equipe.rsa@departement.example.org", "Équipe RSA", "department", None)
AGENT = ("claire.martin@cdas-redon.example.org", "Claire Martin", "agent", "CDAS-REDON")


def _csrf(text: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', text).group(1)


def signed_in(app, api, who) -> TestClient:
    c = TestClient(api, base_url="https://testserver")
    page = c.get("/espace/connexion")
    before = set((app.settings.outbox / "connexion").glob("*.txt")) if (app.settings.outbox / "connexion").exists() \
        else set()
    c.post("/espace/connexion/lien", data={"csrf": _csrf(page.text), "email": who[0]})
    [mail] = set((app.settings.outbox / "connexion").glob("*.txt")) - before
    link = re.search(r"https://\S+/espace/connexion/lien\?jeton=\S+", mail.read_text(encoding="utf-8")).group(0)
    page = c.get(link.split("relance.example.org", 1)[1])
    token = re.search(r'name="jeton" value="([^"]*)"', page.text).group(1)
    r = c.post("/espace/connexion/lien/valider", data={"csrf": _csrf(page.text), "jeton": token},
               follow_redirects=False)
    assert r.status_code == 303
    return c


def _key_figure(html: str, label: str) -> str:
    return re.search(re.escape(label) + r'</th><td class="num">([^<]*)</td>', html).group(1)


@SQLITE
def test_the_dashboard_page_for_the_department_and_for_an_agent(relance_app, flux_writer):
    h.build(relance_app, flux_writer)
    relance_app.settings.public_base_url = "https://relance.example.org"
    for email, name, role, org in (DEPARTMENT, AGENT):
        agents.save_agent(relance_app, email=email, name=name, role=role, organisation=org, now=h.REPORT_NOW)
    api = create_app(relance_app, clock=lambda: h.REPORT_NOW.astimezone(h.UTC))
    anonymous = TestClient(api, base_url="https://testserver")
    r = anonymous.get("/espace/tableau-de-bord", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/espace/connexion")

    period = "du=2024-05-01&au=2024-08-31"
    dep = signed_in(relance_app, api, DEPARTMENT)
    page = dep.get(f"/espace/tableau-de-bord?{period}")
    assert page.status_code == 200
    text = page.text
    assert '<a href="/espace/tableau-de-bord" aria-current="page">Tableau de bord</a>' in text
    assert "Toutes les organisations : droits ouverts et activité du 01/05/2024 au 31/08/2024" in text
    assert '<select id="organisation" name="organisation">' in text
    assert _key_figure(text, "Entrants (droits ouverts soumis aux droits et devoirs)") == "9"
    assert text.count('src="data:image/svg+xml;base64,') == 4 and " style=" not in text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    page = dep.get(f"/espace/tableau-de-bord?{period}&organisation=FT-REDON")
    assert "France Travail" in page.text and _key_figure(page.text, "Entrants (droits ouverts soumis aux droits et "
                                                                    "devoirs)") == "1"
    assert '<option value="FT-REDON" selected>' in page.text

    agent = signed_in(relance_app, api, AGENT)
    # An agent sees their organisation's figures only, whatever the address asks.
    page = agent.get(f"/espace/tableau-de-bord?{period}&organisation=FT-REDON")
    assert page.status_code == 200 and "<select" not in page.text
    assert "Centre départemental d'action sociale du Pays de Redon (CDAS-REDON) : droits ouverts" in html.unescape(
        page.text)
    assert _key_figure(page.text, "Entrants (droits ouverts soumis aux droits et devoirs)") == "5"
    workbook = agent.get(f"/espace/tableau-de-bord.xlsx?{period}")
    assert workbook.status_code == 200 and workbook.headers["content-type"].startswith(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    assert "tableau_de_bord_CDAS-REDON_2024-05-01_2024-08-31.xlsx" in workbook.headers["content-disposition"]
    import io

    wb = openpyxl.load_workbook(io.BytesIO(workbook.content))
    assert wb["Chiffres clés"]["B2"].value == 5
    bad = agent.get("/espace/tableau-de-bord?du=2024-09-01&au=2024-08-01")
    assert bad.status_code == 422 and "période vide" in bad.text
