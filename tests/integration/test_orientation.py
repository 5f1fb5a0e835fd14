"""The 6-week orientation deadline (CASF D262-65-2): worker/services/orientation.py on
SQLite and PostgreSQL, through the scheduler cycle and the CLI's report."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from tests.conftest import make_nir
from worker.entrypoints import jobs
from worker.services import cases, ingest, timeline
from worker.services.orientation import report, watch

PARIS = ZoneInfo("Europe/Paris")
RECEIVED = dt.datetime(2024, 6, 3, 8, 0, tzinfo=PARIS)  # the flux arrives: deadline 15 July 2024
NOT_ORIENTED, ORIENTED, REORIENTED, ATTENDED = "CAF35-0009601", "CAF35-0009602", "CAF35-0009603", "CAF35-0009604"


def _day(n: int, hour: int = 10) -> dt.datetime:
    return (RECEIVED + dt.timedelta(days=n)).replace(hour=hour)


def _flux(flux_writer):
    rows = [{"external_id": eid, "nir": make_nir(9601 + i), "orientation": "" if eid != ORIENTED else "cd"}
            for i, eid in enumerate((NOT_ORIENTED, ORIENTED, REORIENTED, ATTENDED))]
    return flux_writer(rows)


def test_unoriented_cases_are_flagged_once_a_week_before_the_deadline(relance_app, flux_writer):
    app = relance_app
    ingest.ingest_file(app, _flux(flux_writer), RECEIVED)
    jobs.cycle(app, _day(0))  # invitations
    cases.apply_event(app, external_id=REORIENTED, type="reoriented", to="ft", now=_day(10))
    cases.apply_event(app, external_id=ATTENDED, type="rdv_booked", now=_day(5),
                         appointment_at=_day(12, 14))
    cases.apply_event(app, external_id=ATTENDED, type="rdv_attended", now=_day(12, 15))

    waiting = report(app, _day(20))
    assert [(w.external_id, w.deadline, w.days_left, w.flagged) for w in waiting] == [
        (NOT_ORIENTED, dt.date(2024, 7, 15), 22, False)]
    assert watch(app, _day(34)) == []  # 8 days left: not yet

    result = jobs.cycle(app, _day(35))  # 7 days left: the scheduler's cycle flags it
    assert result["orientation"] == 1
    [item] = [i for i in timeline.timeline(app, NOT_ORIENTED)
              if i["kind"] == "case" and i["detail"].get("flag") == "orientation_deadline"]
    assert item["detail"]["deadline"] == "2024-07-15" and item["detail"]["days_left"] == 7
    assert watch(app, _day(36)) == [] and jobs.cycle(app, _day(50))["orientation"] == 0  # once
    [late] = report(app, _day(50))
    assert (late.external_id, late.days_left, late.flagged) == (NOT_ORIENTED, -8, True)
    for eid in (ORIENTED, REORIENTED, ATTENDED):
        assert not [i for i in timeline.timeline(app, eid)
                    if i["kind"] == "case" and i["detail"].get("flag") == "orientation_deadline"]

    # once oriented, the person leaves the report
    cases.apply_event(app, external_id=NOT_ORIENTED, type="reoriented", to="cd", now=_day(51))
    assert report(app, _day(52)) == []


def test_a_re_oriented_case_goes_to_the_organisation_that_runs_its_new_path(relance_app, flux_writer):
    """config/territory.yaml `path_organisations`: re-oriented to France Travail, the person's case opens
    at the FT agency (their letters come from it); re-oriented to the CD path from France Travail, at the
    CDAS of their postcode. A re-orientation within the same kind keeps the organisation."""
    from sqlalchemy import select

    from worker.adapters.store.models import Case, Person
    from worker.adapters.store.session import session_scope

    app = relance_app
    to_ft, to_cd, to_cd_redon = "CAF35-0009701", "CAF35-0009702", "CAF35-0009703"
    ingest.ingest_file(app, flux_writer([
        {"external_id": to_ft, "nir": make_nir(9701)},
        {"external_id": to_cd, "nir": make_nir(9702), "orientation": "ft", "ft_registered": "true",
         "organisation": "FT-REDON", "postcode": "35580", "city": "GUICHEN"},
        {"external_id": to_cd_redon, "nir": make_nir(9703), "orientation": "cd", "organisation": "CCAS-REDON"},
    ]), RECEIVED)
    jobs.cycle(app, _day(0))
    cases.apply_event(app, external_id=to_ft, type="reoriented", to="ft", now=_day(3))
    cases.apply_event(app, external_id=to_cd, type="reoriented", to="cd", now=_day(3))
    cases.apply_event(app, external_id=to_cd_redon, type="reoriented", to="cd", now=_day(3))

    def last_case(external_id):
        with session_scope(app.db_url) as s:
            person = s.execute(select(Person).where(Person.external_id == external_id)).scalar_one()
            case = s.execute(select(Case).where(Case.person_id == person.id).order_by(Case.id.desc())).scalars().first()
            return person.organisation, case.path, case.organisation, case.status

    assert last_case(to_ft) == ("FT-REDON", "ft", "FT-REDON", "active")
    assert last_case(to_cd) == ("CDAS-VALLONS", "cd", "CDAS-VALLONS", "active")  # postcode 35580
    assert last_case(to_cd_redon) == ("CCAS-REDON", "cd", "CCAS-REDON", "active")  # a CCAS runs the CD path
    moved = [i["detail"] for i in timeline.timeline(app, to_ft)
             if i["kind"] == "case" and "organisation_to" in i["detail"]]
    assert moved == [{"organisation_from": "CDAS-REDON", "organisation_to": "FT-REDON", "path": "ft"}]
    jobs.cycle(app, _day(4))  # the new case's first message comes from the FT agency
    with session_scope(app.db_url) as s:
        from worker.adapters.store.models import Message

        person = s.execute(select(Person).where(Person.external_id == to_ft)).scalar_one()
        case = s.execute(select(Case).where(Case.person_id == person.id).order_by(Case.id.desc())).scalars().first()
        assert s.execute(select(Message).where(Message.case_id == case.id)).scalars().first() is not None
