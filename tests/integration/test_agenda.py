"""What waits for an agent (worker.services.agenda, relance agenda) on SQLite and PostgreSQL:
cases brought to each human gate through the services, as in production."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from freezegun import freeze_time

from tests.conftest import make_nir
from worker.entrypoints import jobs
from worker.services import cases, ingest
from worker.services.agenda import agenda

PARIS = ZoneInfo("Europe/Paris")
SILENT, CANCELS, FT_UNREG, UNORIENTED = "CAF35-0009701", "CAF35-0009702", "CAF35-0009703", "CAF35-0009704"


def local(y, m, d, hh=10, mm=0) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=PARIS)


def _cycle(app, clock, moment):
    clock.move_to(moment)
    return jobs.cycle(app, None)


def test_each_human_gate_is_on_the_agenda(relance_app, flux_writer):
    app = relance_app
    path = flux_writer([
        {"external_id": SILENT, "nir": make_nir(9701)},
        {"external_id": CANCELS, "nir": make_nir(9702)},
        {"external_id": FT_UNREG, "nir": make_nir(9703), "orientation": "ft", "ft_registered": "false",
         "organisation": "FT-REDON"},
        {"external_id": UNORIENTED, "nir": make_nir(9704), "orientation": ""},
    ])
    ingest.ingest_file(app, path, local(2024, 6, 10, 8))
    with freeze_time(local(2024, 6, 10, 10)) as clock:
        _cycle(app, clock, local(2024, 6, 10, 10))
        assert agenda(app, local(2024, 6, 10, 10)) == []
        _cycle(app, clock, local(2024, 6, 25, 10))  # day 15: relances, and the FT phone follow-up
        items = agenda(app, local(2024, 6, 25, 10))
        assert [(i.section, i.external_id, i.organisation) for i in items] == [("task", FT_UNREG, "FT-REDON")]
        assert f"relance event phone_followup_done {FT_UNREG}" in items[0].todo
        cases.apply_event(app, external_id=FT_UNREG, type="phone_followup_done", now=local(2024, 6, 26, 9))

        _cycle(app, clock, local(2024, 7, 10, 10))  # day 30: convocations
        cases.apply_event(app, external_id=CANCELS, type="rdv_cancelled", now=local(2024, 7, 12, 9))
        _cycle(app, clock, local(2024, 7, 22, 10))  # after the convocation, absent: review
        now = local(2024, 7, 22, 10)
        items = agenda(app, now)
        by_person = {(i.external_id, i.section): i for i in items}
        review = by_person[(SILENT, "review")]
        assert review.step == "sanction_review" and review.since == dt.date(2024, 7, 22)
        assert f"relance event review_decision {SILENT} --decision proceed|legitimate_reason|close" in review.todo
        assert "--rate" in review.todo and "--months" in review.todo
        assert "convocation annulée" in by_person[(CANCELS, "held")].todo
        orientation = by_person[(UNORIENTED, "orientation")]  # 42 days from 10 June: 22 July
        assert orientation.todo == "orienter avant le 22/07/2024 (J-0)"
        assert (UNORIENTED, "review") in by_person  # silent too
        assert not [i for i in items if i.external_id == FT_UNREG and i.section == "task"]  # done
        # by organisation, then section
        assert [i.organisation for i in items] == sorted(i.organisation for i in items)
        assert agenda(app, now, organisation="FT-REDON") == [
            i for i in items if i.organisation == "FT-REDON"]
        assert all(i.organisation == "CDAS-REDON" for i in agenda(app, now, organisation="CDAS-REDON"))

        # the decision is taken: the case leaves the agenda
        cases.apply_event(app, external_id=SILENT, type="review_decision", decision="close",
                             now=local(2024, 7, 23, 9))
        assert (SILENT, "review") not in {(i.external_id, i.section) for i in agenda(app, local(2024, 7, 23, 10))}

        # after the notice, the person writes: the agent is asked to read, then refer or close
        cases.apply_event(app, external_id=UNORIENTED, type="review_decision", decision="proceed",
                          now=local(2024, 7, 23, 9))
        _cycle(app, clock, local(2024, 7, 23, 10))
        cases.apply_event(app, external_id=UNORIENTED, type="observations_received", now=local(2024, 7, 25, 9))
        item = {(i.external_id, i.section): i for i in agenda(app, local(2024, 7, 25, 10))}[(UNORIENTED, "review")]
        assert item.step == "observations_review"
        assert f"relance event review_decision {UNORIENTED} --decision refer|legitimate_reason|close" in item.todo
