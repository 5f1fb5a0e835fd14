"""A history with known answers for the indicators (tests/integration/test_report.py) and the evaluation's
export (test_evaluation_export.py), built through the real services: a flux ingested, scheduler cycles on a
frozen clock (``jobs.cycle`` with the real clock path), events applied by ``cases.apply_event``, a provider's
receipt and an e-mail bounce.

Nine droits are followed (one late, one re-oriented, people with and without appointments, an excused
appointment, a returned letter, a failed SMS, a bounced e-mail, a review decision and a pre-sanction notice),
one droit is outside "droits et devoirs". The expected figures are worked out in the comments of
``test_report.py``, from this timeline (Europe/Paris times):

* 10 June 08:00: the flux (received for every droit); 10:00 cycle: every first step (letters, SMS, e-mails);
* A 0001 (CD, CDAS-REDON, droit 3 June): books on 12 June for 27 June, attends;
* B 0002 (CD, 5 June): e-mail bounced 11 June, relance 25 June, convocation 10 July (18 July 9:30),
  no record: absence unconfirmed on 20 July, review 22 July: proceed, notice by LRAR;
* C 0003 (CD, droit 1 May: late): books 20 June for 1 July, missed (2 July), books again 5 July for
  15 July, attends;
* D 0004 (not oriented, 7 June): re-oriented to France Travail on 20 June (a new case at FT-REDON,
  convocation 27 June 14:00, attendance never recorded);
* E 0005 (Mission locale, 1 June): letter returned (NPAI) 15 June, relance 25 June, hospitalisation 26 June
  to 20 July;
* G 0007 (France Travail, registered, 8 June): convocation 17 June 10:00 (its SMS undelivered: unknown
  handset), attends;
* H 0008 (CD, 6 June): books 14 June for 28 June, sick leave 21 June to 5 July: the appointment is excused;
* I 0009 (not oriented, CDAS-VALLONS, 4 June): droit closed 12 June;
* J 0010 (not oriented, CDAS-VALLONS, 2 June): homelessness from 11 June (review on 1 October);
* F 0006 (4 June): not subject to "droits et devoirs": no case.
"""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from freezegun import freeze_time
from sqlalchemy import select

from worker.adapters.store.models import Case, Message, Person
from worker.adapters.store.session import session_scope
from worker.entrypoints import jobs
from worker.services import bounces, cases, ingest, sending

PARIS = ZoneInfo("Europe/Paris")
UTC = dt.timezone.utc
REPORT_NOW = dt.datetime(2024, 9, 2, 12, 0, tzinfo=PARIS)
PERIOD = (dt.date(2024, 5, 1), dt.date(2024, 8, 31))

A, B, C, D, E, F, G, H, I, J = (f"CAF35-00{n:02d}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10))
ROWS = [
    {"external_id": A, "droit_opened_on": "2024-06-03"},
    {"external_id": B, "droit_opened_on": "2024-06-05"},
    {"external_id": C, "droit_opened_on": "2024-05-01"},
    {"external_id": D, "droit_opened_on": "2024-06-07", "orientation": ""},
    {"external_id": E, "droit_opened_on": "2024-06-01", "orientation": "ml", "organisation": "ML-REDON",
     "birth_date": "2001-09-10"},
    {"external_id": F, "droit_opened_on": "2024-06-04", "droits_devoirs": "false"},
    {"external_id": G, "droit_opened_on": "2024-06-08", "orientation": "ft", "ft_registered": "true",
     "organisation": "FT-REDON"},
    {"external_id": H, "droit_opened_on": "2024-06-06"},
    {"external_id": I, "droit_opened_on": "2024-06-04", "orientation": "", "organisation": "CDAS-VALLONS"},
    {"external_id": J, "droit_opened_on": "2024-06-02", "orientation": "", "organisation": "CDAS-VALLONS"},
]


def local(y, m, d, hh=10, mm=0) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=PARIS)


def message(app, external_id: str, step: str, channel: str) -> Message:
    with session_scope(app.db_url) as s:
        return s.execute(select(Message).join(Case, Case.id == Message.case_id).join(Person, Person.id == Case.person_id)
                         .where(Person.external_id == external_id, Message.step == step, Message.channel == channel)
                         .order_by(Message.id).limit(1)).scalar_one()


def person_ids(app) -> dict[str, int]:
    with session_scope(app.db_url) as s:
        return dict(s.execute(select(Person.external_id, Person.id)).all())


def build(app, flux_writer) -> None:
    def event(external_id, type_, at, **kw):
        result = cases.apply_event(app, external_id=external_id, type=type_, now=at, **kw)
        assert result.status == "applied", (external_id, type_, result.note)

    report = ingest.ingest_file(app, flux_writer(ROWS), local(2024, 6, 10, 8))
    assert (report.accepted, report.cases_opened, report.rejected) == (10, 9, [])
    with freeze_time(local(2024, 6, 10, 10)) as clock:
        def cycle(moment):
            clock.move_to(moment)
            jobs.cycle(app, None)

        cycle(local(2024, 6, 10, 10))
        sms = message(app, G, "ft_convocation", "sms")
        assert sending.record_provider_status(app, sms.id, "undelivered", local(2024, 6, 10, 11), "30005") == "failed"
        mail = message(app, B, "invitation_1", "email")
        bounces.record_email_bounce(app, reference=mail.reference, message_id=None, status="5.1.1",
                                    now=local(2024, 6, 11, 9))
        event(J, "legitimate_reason", local(2024, 6, 11, 10), category="homelessness", review_on=dt.date(2024, 10, 1))
        event(A, "rdv_booked", local(2024, 6, 12, 15), appointment_at=local(2024, 6, 27, 14))
        event(I, "droit_closed", local(2024, 6, 12, 16))
        event(H, "rdv_booked", local(2024, 6, 14, 10), appointment_at=local(2024, 6, 28, 10))
        event(E, "npai", local(2024, 6, 15, 11))
        event(G, "rdv_attended", local(2024, 6, 17, 11))
        event(C, "rdv_booked", local(2024, 6, 20, 11), appointment_at=local(2024, 7, 1, 10))
        event(D, "reoriented", local(2024, 6, 20, 11), to="ft")
        cycle(local(2024, 6, 20, 11, 5))
        event(H, "legitimate_reason", local(2024, 6, 21, 11), category="sick_leave", until=local(2024, 7, 5, 0))
        cycle(local(2024, 6, 25, 10))
        event(E, "legitimate_reason", local(2024, 6, 26, 11), category="hospitalisation", until=local(2024, 7, 20, 0))
        event(A, "rdv_attended", local(2024, 6, 27, 15))
        event(C, "rdv_missed", local(2024, 7, 2, 10))
        event(C, "rdv_booked", local(2024, 7, 5, 10), appointment_at=local(2024, 7, 15, 10))
        cycle(local(2024, 7, 10, 10))
        event(C, "rdv_attended", local(2024, 7, 15, 11))
        cycle(local(2024, 7, 20, 0, 0))
        event(B, "review_decision", local(2024, 7, 22, 11), decision="proceed")
        cycle(local(2024, 7, 22, 11, 5))
