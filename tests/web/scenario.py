"""A territory with a case waiting at each of the workspace's actions, built through the services with
simulated time (as tests/integration/test_agenda.py does), and its agents.

At NOW (Monday 12 August 2024, 11:00 in Paris):

* REVIEW (CDAS-REDON): silent after the convocation: ``sanction_review``;
* REASON (CDAS-REDON): the same, for the legitimate reason form;
* PHONE (FT-REDON, not registered with France Travail): the phone follow-up task;
* ATTEND (FT-REDON, registered): a France Travail convocation passed with nothing recorded;
* REFERRED (CDAS-REDON): proceed → notice → receipt → observation period over: ``crsa_referral``, on the
  agenda of the commission of 19 September 2024;
* OTHER (CDAS-VALLONS): another organisation's case (a 404 for CDAS-REDON's agents).
"""
from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

from freezegun import freeze_time

from tests.conftest import FLUX_COLUMNS, make_nir

PARIS = ZoneInfo("Europe/Paris")
UTC = dt.timezone.utc
REVIEW, REASON, PHONE, ATTEND, REFERRED, OTHER = ("CAF35-0009801", "CAF35-0009802", "CAF35-0009803",
                                                  "CAF35-0009804", "CAF35-0009805", "CAF35-0009806")
NOW = dt.datetime(2024, 8, 12, 11, 0, tzinfo=PARIS)
SESSION = dt.date(2024, 9, 19)
AGENT = ("claire.martin@cdas-redon.example.org", "Claire Martin", "agent", "CDAS-REDON")
FT_AGENT = ("paul.durand@ft-redon.example.org", "Paul Durand", "agent", "FT-REDON")
VALLONS_AGENT = ("lea.bernard@cdas-vallons.example.org", "Léa Bernard", "agent", "CDAS-VALLONS")
DEPARTMENT = ("equipe.rsa@departement.example.org", "Équipe RSA", "department", None)
OPS = ("exploitation@departement.example.org", "Exploitation", "ops", None)


def local(y, m, d, hh=10, mm=0) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=PARIS)


def _flux(path: Path) -> Path:
    rows = [
        {"external_id": REVIEW}, {"external_id": REASON},
        {"external_id": PHONE, "orientation": "ft", "ft_registered": "false", "organisation": "FT-REDON"},
        {"external_id": ATTEND, "orientation": "ft", "ft_registered": "true", "organisation": "FT-REDON"},
        {"external_id": REFERRED}, {"external_id": OTHER, "organisation": "CDAS-VALLONS", "postcode": "35580",
                                    "city": "GUICHEN"},
    ]
    names = ["Le Gall", "Moreau", "Nguyen", "Petit", "Robert", "Simon"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=FLUX_COLUMNS)
        out.writeheader()
        for i, row in enumerate(rows):
            full = {"nir": make_nir(9800 + i), "last_name": names[i], "first_name": f"Camille{i}",
                    "birth_date": "1988-03-14", "sex": "F", "address_line1": f"{i + 3} rue de la Gare",
                    "address_line2": "", "postcode": "35600", "city": "REDON",
                    "phone": f"06 12 98 00 {i:02d}", "email": f"camille{i}@example.org",
                    "droit_opened_on": "2024-06-03", "orientation": "cd", "ft_registered": "false",
                    "organisation": "CDAS-REDON", "droits_devoirs": "true"}
            full.update(row)
            out.writerow(full)
    return path


def build(app, tmp: Path) -> None:
    """The cases at NOW, and the agents (all active)."""
    from worker.entrypoints import jobs
    from worker.services import agents, cases, ingest

    ingest.ingest_file(app, _flux(tmp / "flux" / "workspace.csv"), local(2024, 6, 10, 8))
    with freeze_time(local(2024, 6, 10)) as clock:
        for moment in (local(2024, 6, 10), local(2024, 6, 25), local(2024, 7, 10), local(2024, 7, 22)):
            clock.move_to(moment)
            jobs.cycle(app, None)
        cases.apply_event(app, external_id=REFERRED, type="review_decision", decision="proceed",
                          now=local(2024, 7, 23, 9))
        clock.move_to(local(2024, 7, 23))
        jobs.cycle(app, None)
        cases.apply_event(app, external_id=REFERRED, type="ar_signed", receipt_on=dt.date(2024, 7, 26),
                          now=local(2024, 7, 29, 9))
        clock.move_to(local(2024, 8, 12, 10))
        jobs.cycle(app, None)
    for email, name, role, org in (AGENT, FT_AGENT, VALLONS_AGENT, DEPARTMENT, OPS):
        agents.save_agent(app, email=email, name=name, role=role, organisation=org, now=local(2024, 8, 1))


def case_reference(app, external_id: str) -> str:
    from worker.services import timeline

    items = timeline.timeline(app, external_id)
    return f"RL-{max(i['case'] for i in items):06d}"
