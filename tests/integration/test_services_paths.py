"""The escalation paths end to end, through time.

Everything goes through the service layer and ``jobs.cycle`` (Celery eager,
the tasks read the process-wide app set by the ``relance_app`` fixture). The
clock is frozen with freezegun and ``jobs.cycle(app, None)`` is called, so the
real-clock path (``now=None`` -> ``datetime.now`` in the task) is the one
exercised; events get an explicit ``now``. Runs on SQLite and PostgreSQL.
"""
from __future__ import annotations

import collections
import html
import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select

from worker.entrypoints import jobs

from worker.adapters.store import repository

from worker.services import cases, ingest, sending, timeline
from worker.services.agenda import agenda
from worker.services.errors import ServiceError
from worker.adapters.store.models import Appointment, Case, InboundEvent, Message, Person
from worker.adapters.store.session import session_scope

PARIS = ZoneInfo("Europe/Paris")
UTC = dt.timezone.utc


def local(y, m, d, hh=10, mm=0) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=PARIS)


# --- helpers --------------------------------------------------------------------------------------


def cycle_at(app, clock, moment: dt.datetime) -> dict:
    """Move the frozen clock to ``moment`` and run one scheduler tick on the real clock."""
    clock.move_to(moment)
    assert dt.datetime.now(UTC) == moment.astimezone(UTC)
    return jobs.cycle(app, None)


@pytest.fixture
def app(relance_app):
    return relance_app


def case_of(app, external_id: str, active_only: bool = False) -> Case:
    with session_scope(app.db_url) as s:
        person = s.execute(select(Person).where(Person.external_id == external_id)).scalar_one()
        q = select(Case).where(Case.person_id == person.id).order_by(Case.id.desc())
        if active_only:
            q = q.where(Case.status == "active")
        return s.execute(q.limit(1)).scalar_one()


def cases_of(app, external_id: str) -> list[Case]:
    with session_scope(app.db_url) as s:
        person = s.execute(select(Person).where(Person.external_id == external_id)).scalar_one()
        return list(s.execute(select(Case).where(Case.person_id == person.id).order_by(Case.id)).scalars())


def messages_of(app, case_id: int) -> list[Message]:
    with session_scope(app.db_url) as s:
        return list(s.execute(select(Message).where(Message.case_id == case_id).order_by(Message.id)).scalars())


def sent(app, case_id: int) -> list[tuple[str, str]]:
    return [(m.step, m.channel) for m in messages_of(app, case_id) if m.status == "sent"]


def appointments_of(app, case_id: int) -> list[Appointment]:
    with session_scope(app.db_url) as s:
        return list(s.execute(select(Appointment).where(Appointment.case_id == case_id)
                              .order_by(Appointment.id)).scalars())


def outbox_sms(app) -> list[dict]:
    path = app.settings.outbox / "sms.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def outbox_emails(app) -> list[dict]:
    path = app.settings.outbox / "email.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def outbox_letters(app) -> dict[str, str]:
    """``{"<day>/<file name>": html}`` of every letter written."""
    root = app.settings.outbox / "letters"
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.html"))}


def assert_outbox_matches_db(app) -> None:
    """Every message sent is in the outbox exactly once; nothing else is."""
    with session_scope(app.db_url) as s:
        msgs = list(s.execute(select(Message)).scalars())
    sent_msgs = [m for m in msgs if m.sent_at is not None]  # sent, or sent then returned (NPAI)
    sms_refs = collections.Counter(r["reference"] for r in outbox_sms(app))
    assert all(n == 1 for n in sms_refs.values()), sms_refs
    assert set(sms_refs) == {m.reference for m in sent_msgs if m.channel == "sms"}
    email_refs = collections.Counter(r["reference"] for r in outbox_emails(app))
    assert all(n == 1 for n in email_refs.values()), email_refs
    assert set(email_refs) == {m.reference for m in sent_msgs if m.channel == "email"}
    letters = outbox_letters(app)
    letter_refs = collections.Counter(name.split("/", 1)[1].split("_", 1)[0] for name in letters)
    assert all(n == 1 for n in letter_refs.values()), letter_refs
    assert set(letter_refs) == {m.reference for m in sent_msgs if m.channel == "letter"}
    for m in sent_msgs:
        if m.channel == "letter":
            day = app.calendar.local_date(m.sent_at).isoformat()
            assert f"{day}/{m.reference}_{m.step}_{m.postage or 'simple'}.html" in letters


def letter_for(app, msg: Message) -> str:
    letters = outbox_letters(app)
    [html] = [v for k, v in letters.items() if f"/{msg.reference}_" in k]
    return html


def sms_for(app, msg: Message) -> dict:
    [rec] = [r for r in outbox_sms(app) if r["reference"] == msg.reference]
    return rec


def the(msgs, step, channel) -> Message:
    [m] = [m for m in msgs if m.step == step and m.channel == channel]
    return m


def step_history(app, external_id: str) -> list[str]:
    return [i["step"] for i in timeline.timeline(app, external_id) if i["kind"] == "step"]


# --- the CD path, a person who never answers -------------------------------------------------------


def test_cd_path_never_answers(app, flux_writer):
    path = flux_writer([{"external_id": "CAF35-0009001", "first_name": "Awa", "last_name": "Kermarrec",
                         "phone": "06 12 34 90 01", "email": "awa.kermarrec@example.org"}])
    rep = ingest.ingest_file(app, path, local(2024, 6, 10, 8))
    assert (rep.accepted, rep.cases_opened, rep.rejected) == (1, 1, [])
    eid = "CAF35-0009001"
    org = app.territory.organisations["CDAS-REDON"]

    with freeze_time(local(2024, 6, 10, 10)) as clock:
        # Day 0: invitation_1 on letter, SMS and e-mail.
        cycle_at(app, clock, local(2024, 6, 10, 10))
        case = case_of(app, eid)
        assert case.step == "invitation_1" and case.phase == "waiting"
        assert sorted(sent(app, case.id)) == [("invitation_1", "email"), ("invitation_1", "letter"),
                                              ("invitation_1", "sms")]
        assert case.respond_by == dt.date(2024, 6, 25)
        msgs = messages_of(app, case.id)
        sms = sms_for(app, the(msgs, "invitation_1", "sms"))
        assert sms["to"] == "+33612349001" and "Awa" in sms["body"] and "25/06/2024" in sms["body"]
        html = letter_for(app, the(msgs, "invitation_1", "letter"))
        assert "KERMARREC" in html.upper() and "1 RUE DES TESTS" in html.upper()
        [mail] = outbox_emails(app)
        assert mail["to"] == "awa.kermarrec@example.org" and mail["from"] == org.name

        # Nothing until the 15 days have run.
        cycle_at(app, clock, local(2024, 6, 17, 10))
        cycle_at(app, clock, local(2024, 6, 25, 9, 59))
        assert case_of(app, eid).step == "invitation_1"
        assert len(messages_of(app, case.id)) == 3

        # Day 15: invitation_2 (the relance) on the same channels.
        cycle_at(app, clock, local(2024, 6, 25, 10))
        case = case_of(app, eid)
        assert case.step == "invitation_2"
        assert sorted(s for s in sent(app, case.id) if s[0] == "invitation_2") == [
            ("invitation_2", "email"), ("invitation_2", "letter"), ("invitation_2", "sms")]

        cycle_at(app, clock, local(2024, 7, 10, 9, 59))
        assert case_of(app, eid).step == "invitation_2"

        # Day 30: convocation, a slot >= 7 days later on a configured weekday and time.
        cycle_at(app, clock, local(2024, 7, 10, 10))
        case = case_of(app, eid)
        assert (case.step, case.phase, case.appointment_kind) == ("convocation", "appointment", "convocation")
        slot = app.calendar.local(case.appointment_at)
        assert case.appointment_at >= local(2024, 7, 17, 10)
        assert ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[slot.weekday()] in org.convocation.weekdays
        assert slot.time() in org.convocation.times
        assert slot == local(2024, 7, 18, 9, 30)  # Wed 17 is not a CDAS-REDON day: Thursday, first time
        [appt] = appointments_of(app, case.id)
        assert (appt.kind, appt.status, appt.at) == ("convocation", "scheduled", case.appointment_at)
        msgs = messages_of(app, case.id)
        assert the(msgs, "convocation", "letter").status == "sent"
        assert the(msgs, "convocation", "sms").status == "sent"
        assert "jeudi 18 juillet 2024 à 9 h 30" in letter_for(app, the(msgs, "convocation", "letter"))
        reminder = the(msgs, "rdv_reminder", "sms")
        assert reminder.status == "pending"
        assert reminder.not_before == local(2024, 7, 16, 10).astimezone(UTC)  # 2 days before, 10:00

        # The reminder goes at 10:00 two days before, not a minute earlier.
        cycle_at(app, clock, local(2024, 7, 16, 9, 59))
        assert the(messages_of(app, case.id), "rdv_reminder", "sms").status == "pending"
        cycle_at(app, clock, local(2024, 7, 16, 10))
        reminder = the(messages_of(app, case.id), "rdv_reminder", "sms")
        assert reminder.status == "sent" and reminder.sent_at == local(2024, 7, 16, 10).astimezone(UTC)
        assert "18/07/2024 à 9 h 30" in sms_for(app, reminder)["body"]

        # Absent: missed at the end of the next working day -> sanction_review (a human gate).
        cycle_at(app, clock, local(2024, 7, 19, 23, 59))
        assert case_of(app, eid).step == "convocation"
        cycle_at(app, clock, local(2024, 7, 20, 0, 0))
        case = case_of(app, eid)
        assert (case.step, case.phase) == ("sanction_review", "review")
        # nobody recorded the absence: the reviewing agent sees it was never confirmed
        assert [a.status for a in appointments_of(app, case.id)] == ["unconfirmed"]
        [item] = [i for i in agenda(app, local(2024, 7, 22)) if i.external_id == eid]
        assert "absence non confirmée" in item.todo
        n_messages = len(messages_of(app, case.id))

        # ... and nothing more happens on its own, however long we wait.
        for day in (local(2024, 7, 22), local(2024, 8, 5), local(2024, 8, 20)):
            cycle_at(app, clock, day)
        case = case_of(app, eid)
        assert (case.step, case.phase) == ("sanction_review", "review")
        assert len(messages_of(app, case.id)) == n_messages

        # A human decides to proceed: the pre-sanction notice, by LRAR.
        res = cases.apply_event(app, external_id=eid, type="review_decision", decision="proceed",
                                   now=local(2024, 8, 20, 11))
        assert res.status == "applied" and res.case_id == case.id
        case = case_of(app, eid)
        assert (case.step, case.phase) == ("pre_sanction_notice", "awaiting_receipt")
        cycle_at(app, clock, local(2024, 8, 20, 11, 5))
        msgs = messages_of(app, case.id)
        notice = the(msgs, "pre_sanction_notice", "letter")
        assert (notice.status, notice.postage) == ("sent", "lrar")
        assert the(msgs, "pre_sanction_notice", "sms").status == "sent"
        assert any(k.endswith(f"{notice.reference}_pre_sanction_notice_lrar.html") for k in outbox_letters(app))
        assert "10 jours" in letter_for(app, notice)
        n_messages = len(msgs)

        # Nothing until the receipt is known.
        for day in (local(2024, 8, 27), local(2024, 9, 5)):
            cycle_at(app, clock, day)
        case = case_of(app, eid)
        assert (case.step, case.phase, case.status) == ("pre_sanction_notice", "awaiting_receipt", "active")
        assert len(messages_of(app, case.id)) == n_messages

        # Signed on 5 September: 10 days of observations (6 to 15 Sept.); the 15th is a Sunday, so the
        # period ends on Monday 16 (a deadline given to a person ends on a working day): referral on the 17th.
        res = cases.apply_event(app, external_id=eid, type="ar_signed", receipt_on=dt.date(2024, 9, 5),
                                   now=local(2024, 9, 6, 15))
        assert res.status == "applied"
        case = case_of(app, eid)
        assert (case.phase, case.receipt_on) == ("observation", dt.date(2024, 9, 5))
        cycle_at(app, clock, local(2024, 9, 16, 23, 59))  # the last (working) day, until its last minute
        case = case_of(app, eid)
        assert (case.step, case.phase, case.status) == ("pre_sanction_notice", "observation", "active")
        cycle_at(app, clock, local(2024, 9, 17, 10))  # the day after
        case = case_of(app, eid)
        assert (case.step, case.status, case.outcome) == ("crsa_referral", "closed", "crsa_referral")
        next_session = app.territory.commission.next_session(dt.date(2024, 9, 17))
        assert case.commission_date == next_session == dt.date(2024, 9, 19)
        referral = the(messages_of(app, case.id), "crsa_referral", "letter")
        assert referral.status == "sent"
        assert "jeudi 19 septembre 2024" in letter_for(app, referral)

        # Closed: nothing more, ever.
        n_messages = len(messages_of(app, case.id))
        cycle_at(app, clock, local(2024, 10, 16, 10))
        assert len(messages_of(app, case.id)) == n_messages

    assert step_history(app, eid) == ["invitation_1", "invitation_2", "convocation", "sanction_review",
                                      "pre_sanction_notice", "crsa_referral"]
    items = timeline.timeline(app, eid)

    def pos(kind, **match):
        return next(n for n, i in enumerate(items) if i["kind"] == kind
                    and all((i.get("detail") or {}).get(k, i.get(k)) == v for k, v in match.items()))

    # The step comes first, then what it did (its appointment, the case closing).
    assert pos("step", step="convocation") < pos("case", appointment="convocation")
    assert pos("step", step="crsa_referral") < pos("case", action="closed") < pos("message", step="crsa_referral")
    assert_outbox_matches_db(app)
    assert [r["step"] for r in outbox_sms(app)] == ["invitation_1", "invitation_2", "convocation", "rdv_reminder",
                                               "pre_sanction_notice"]  # the referral goes by letter only
    with session_scope(app.db_url) as s:
        assert s.execute(select(func.count()).select_from(Case)).scalar_one() == 1


# --- the other paths ---------------------------------------------------------------------------------


def test_ft_registered_path(app, flux_writer):
    path = flux_writer([{"external_id": "CAF35-0009101", "orientation": "ft", "ft_registered": "true",
                         "organisation": "FT-REDON"}])
    ingest.ingest_file(app, path, local(2024, 6, 10, 8))
    eid = "CAF35-0009101"
    org = app.territory.organisations["FT-REDON"]
    with freeze_time(local(2024, 6, 10, 10)) as clock:
        cycle_at(app, clock, local(2024, 6, 10, 10))
        case = case_of(app, eid)
        assert case.path == "ft"
        assert (case.step, case.phase, case.appointment_kind) == ("ft_convocation", "appointment", "convocation")
        slot = app.calendar.local(case.appointment_at)
        assert slot == local(2024, 6, 17, 10)  # 7 days later, first FT time at or after 10:00
        assert slot.time() in org.convocation.times
        assert sorted(s for s in sent(app, case.id)) == [("ft_convocation", "email"),
                                                         ("ft_convocation", "letter"), ("ft_convocation", "sms")]
        # (its reminder: see test_reminder_of_a_monday_convocation_goes_before_the_weekend)
        cycle_at(app, clock, local(2024, 6, 14, 10))
        cycle_at(app, clock, local(2024, 6, 17, 9))
        # Nothing recorded by the end of the next working day: no absence is assumed, an agent confirms.
        cycle_at(app, clock, local(2024, 6, 18, 23, 59))
        assert case_of(app, eid).step == "ft_convocation"
        cycle_at(app, clock, local(2024, 6, 19, 0, 0))
        case = case_of(app, eid)
        assert (case.step, case.phase, case.due_at) == ("ft_convocation", "appointment", None)
        [todo] = [i for i in agenda(app, local(2024, 6, 19, 8), "FT-REDON") if i.external_id == eid]
        assert todo.section == "task" and "présence à confirmer au rendez-vous du 17/06/2024 10:00" in todo.todo
        cycle_at(app, clock, local(2024, 6, 25, 10))
        assert case_of(app, eid).step == "ft_convocation" and not [s for s in sent(app, case.id)
                                                                   if s[0] == "ft_warning"]
        # France Travail confirms the absence: the last reminder goes (the letter at once).
        cases.apply_event(app, external_id=eid, type="rdv_missed", now=local(2024, 6, 25, 10, 30))
        case = case_of(app, eid)
        assert (case.step, case.phase) == ("ft_warning", "waiting")
        cycle_at(app, clock, local(2024, 6, 25, 10, 35))
        assert sorted(s for s in sent(app, case.id) if s[0] == "ft_warning") == [
            ("ft_warning", "email"), ("ft_warning", "letter"), ("ft_warning", "sms")]
        warning = " ".join(html.unescape(letter_for(app, the(messages_of(app, case.id), "ft_warning",
                                                              "letter"))).split())
        assert "le <strong>lundi 17 juin 2024 à 10 h" in warning and " ".join(org.convocation.place.split()) in warning
        assert "avertissement" not in warning.lower()
        # Silent 15 days -> ft_report -> the department's sanction_review.
        cycle_at(app, clock, local(2024, 7, 10, 10))
        assert case_of(app, eid).step == "ft_warning"
        cycle_at(app, clock, local(2024, 7, 10, 10, 31))
        case = case_of(app, eid)
        assert (case.step, case.phase) == ("sanction_review", "review")
        # The department's organisation for the person's postcode (35600: the default) reviews it.
        assert (case.organisation, case.reported_by) == ("CDAS-REDON", "FT-REDON")
        [todo] = [i for i in agenda(app, local(2024, 7, 11), "CDAS-REDON") if i.external_id == eid]
        assert "manquement signalé par FT-REDON" in todo.todo
        assert not [i for i in agenda(app, local(2024, 7, 11), "FT-REDON") if i.external_id == eid]
        cycle_at(app, clock, local(2024, 8, 4, 10))
        assert case_of(app, eid).phase == "review"
        # The agent proceeds: the Département's notice states the measure and the dated facts.
        cases.apply_event(app, external_id=eid, type="review_decision", decision="proceed", rate=40, months=2,
                          now=local(2024, 8, 5, 11))
        cycle_at(app, clock, local(2024, 8, 5, 11, 5))
        case = case_of(app, eid)
        letter = letter_for(app, the(messages_of(app, case.id), "pre_sanction_notice", "letter"))
        text = " ".join(html.unescape(letter).split())
        assert app.territory.department.name in text
        assert "Pour le Président du Conseil départemental et par délégation" in text
        assert "40 % du montant, pendant 2 mois" in text
        assert "convocation envoyée par courrier, SMS et e-mail" in text
        assert "dernier rappel envoyé par courrier, SMS et e-mail" in text
        assert "rendez-vous" in text and "lundi 17 juin 2024" in text
        # the referent to call is now the department's reviewing organisation
        assert app.territory.organisations["CDAS-REDON"].short_name in text
    assert step_history(app, eid) == ["ft_convocation", "ft_warning", "ft_report", "sanction_review",
                                      "pre_sanction_notice"]
    assert_outbox_matches_db(app)


def test_ft_unregistered_path_phone_followup(app, flux_writer):
    path = flux_writer([{"external_id": "CAF35-0009201", "orientation": "ft", "ft_registered": "false",
                         "organisation": "FT-REDON"}])
    ingest.ingest_file(app, path, local(2024, 6, 10, 8))
    eid = "CAF35-0009201"
    with freeze_time(local(2024, 6, 10, 10)) as clock:
        cycle_at(app, clock, local(2024, 6, 10, 10))
        case = case_of(app, eid)
        assert (case.path, case.step) == ("ft_unregistered", "invitation_1")
        assert sent(app, case.id) == [("invitation_1", "letter")]  # by letter only
        cycle_at(app, clock, local(2024, 6, 25, 10))
        case = case_of(app, eid)
        assert (case.step, case.phase, case.due_at) == ("phone_followup", "task", None)
        n = len(messages_of(app, case.id))
        # A task for an agent: nothing is sent, nothing moves on its own.
        for day in (local(2024, 7, 10), local(2024, 8, 10)):
            cycle_at(app, clock, day)
        case = case_of(app, eid)
        assert (case.step, case.phase) == ("phone_followup", "task")
        assert len(messages_of(app, case.id)) == n
        res = cases.apply_event(app, external_id=eid, type="phone_followup_done", now=local(2024, 8, 12, 14))
        assert res.status == "applied"
        assert case_of(app, eid).step == "invitation_2"
        cycle_at(app, clock, local(2024, 8, 12, 14, 1))
        assert sorted(s for s in sent(app, case.id) if s[0] == "invitation_2") == [
            ("invitation_2", "email"), ("invitation_2", "letter"), ("invitation_2", "sms")]
    assert step_history(app, eid) == ["invitation_1", "phone_followup", "invitation_2"]
    assert_outbox_matches_db(app)


def test_ml_path(app, flux_writer):
    path = flux_writer([{"external_id": "CAF35-0009301", "orientation": "ml", "organisation": "ML-REDON",
                         "birth_date": "2003-04-13", "email": "jeune@example.org"}])
    ingest.ingest_file(app, path, local(2024, 6, 10, 8))
    eid = "CAF35-0009301"
    org = app.territory.organisations["ML-REDON"]
    with freeze_time(local(2024, 6, 10, 10)) as clock:
        cycle_at(app, clock, local(2024, 6, 10, 10))
        case = case_of(app, eid)
        assert (case.path, case.step) == ("ml", "invitation_1")
        assert sorted(sent(app, case.id)) == [("invitation_1", "email"), ("invitation_1", "letter"),
                                              ("invitation_1", "sms")]
        [mail] = outbox_emails(app)
        assert mail["to"] == "jeune@example.org" and mail["from"] == org.name
        assert org.short_name in sms_for(app, the(messages_of(app, case.id), "invitation_1", "sms"))["body"]
        cycle_at(app, clock, local(2024, 6, 25, 10))
        cycle_at(app, clock, local(2024, 7, 10, 10))
        case = case_of(app, eid)
        assert case.step == "convocation"
        slot = app.calendar.local(case.appointment_at)
        assert ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[slot.weekday()] in org.convocation.weekdays
        assert slot.time() in org.convocation.times and case.appointment_at >= local(2024, 7, 17, 10)
        assert sorted(s for s in sent(app, case.id) if s[0] == "convocation") == [
            ("convocation", "email"), ("convocation", "letter"), ("convocation", "sms")]
    assert step_history(app, eid) == ["invitation_1", "invitation_2", "convocation"]
    assert_outbox_matches_db(app)


# --- events ------------------------------------------------------------------------------------------


def test_rdv_booked_then_attended_closes_the_case(app, flux_writer):
    path = flux_writer([{"external_id": "CAF35-0009401"}])
    ingest.ingest_file(app, path, local(2024, 6, 10, 8))
    eid = "CAF35-0009401"
    with freeze_time(local(2024, 6, 10, 10)) as clock:
        cycle_at(app, clock, local(2024, 6, 10, 10))
        case = case_of(app, eid)
        res = cases.apply_event(app, external_id=eid, type="rdv_booked", now=local(2024, 6, 12, 15),
                                   appointment_at=local(2024, 6, 27, 14))
        assert res.status == "applied"
        case = case_of(app, eid)
        assert (case.phase, case.appointment_kind) == ("appointment", "booked")
        reminder = the(messages_of(app, case.id), "rdv_reminder", "sms")
        assert reminder.not_before == local(2024, 6, 25, 10).astimezone(UTC)
        # The relance of day 15 is not sent: the person booked.
        cycle_at(app, clock, local(2024, 6, 25, 10))
        assert case_of(app, eid).step == "invitation_1"
        assert the(messages_of(app, case.id), "rdv_reminder", "sms").status == "sent"
        assert not [m for m in messages_of(app, case.id) if m.step == "invitation_2"]
        res = cases.apply_event(app, external_id=eid, type="rdv_attended", now=local(2024, 6, 27, 15))
        assert res.status == "applied"
        case = case_of(app, eid)
        assert (case.status, case.outcome) == ("closed", "attended")
        assert [a.status for a in appointments_of(app, case.id)] == ["attended"]
        n = len(messages_of(app, case.id))
        for day in (local(2024, 7, 12), local(2024, 9, 1)):
            cycle_at(app, clock, day)
        assert len(messages_of(app, case.id)) == n
        assert len(cases_of(app, eid)) == 1
    assert_outbox_matches_db(app)


def test_a_reminder_cancelled_by_a_short_pause_is_sent_after_it(app, flux_writer):
    """Booked for 27 June; a legitimate reason from 14 to 20 June cancels the planned reminder;
    the pause ends before the appointment: the same reminder message is pending again and goes
    on 25 June at 10:00, once."""
    eid = "CAF35-0009411"
    path = flux_writer([{"external_id": eid}])
    ingest.ingest_file(app, path, local(2024, 6, 10, 8))
    with freeze_time(local(2024, 6, 10, 10)) as clock:
        cycle_at(app, clock, local(2024, 6, 10, 10))
        cases.apply_event(app, external_id=eid, type="rdv_booked", now=local(2024, 6, 12, 15),
                             appointment_at=local(2024, 6, 27, 14))
        cases.apply_event(app, external_id=eid, type="legitimate_reason", now=local(2024, 6, 14, 9),
                             until=local(2024, 6, 20, 9), category="hospitalisation")
        case = case_of(app, eid)
        reminder = the(messages_of(app, case.id), "rdv_reminder", "sms")
        assert (case.phase, reminder.status) == ("paused", "cancelled")
        cycle_at(app, clock, local(2024, 6, 20, 9, 5))
        case = case_of(app, eid)
        assert case.phase == "appointment"
        assert case.due_at > local(2024, 6, 27, 14).astimezone(UTC)  # the absence check, after the appointment
        again = the(messages_of(app, case.id), "rdv_reminder", "sms")
        assert (again.id, again.status) == (reminder.id, "pending")
        assert again.not_before == local(2024, 6, 25, 10).astimezone(UTC)
        cycle_at(app, clock, local(2024, 6, 25, 10))
        assert the(messages_of(app, case.id), "rdv_reminder", "sms").status == "sent"
        assert [m["reference"] for m in outbox_sms(app)].count(reminder.reference) == 1
    assert_outbox_matches_db(app)


def test_npai_on_convocation_holds_then_address_update_restarts(app, flux_writer):
    path = flux_writer([{"external_id": "CAF35-0009501"}])
    ingest.ingest_file(app, path, local(2024, 6, 10, 8))
    eid = "CAF35-0009501"
    with freeze_time(local(2024, 6, 10, 10)) as clock:
        cycle_at(app, clock, local(2024, 6, 10, 10))
        cycle_at(app, clock, local(2024, 6, 25, 10))
        cycle_at(app, clock, local(2024, 7, 10, 10))
        case = case_of(app, eid)
        assert case.step == "convocation"
        letter = the(messages_of(app, case.id), "convocation", "letter")
        assert letter.status == "sent"
        # The convocation letter comes back.
        res = cases.apply_event(app, external_id=eid, type="npai", message_id=letter.id,
                                   now=local(2024, 7, 15, 11))
        assert res.status == "applied"
        assert the(messages_of(app, case.id), "convocation", "letter").status == "returned"
        with session_scope(app.db_url) as s:
            assert s.execute(select(Person).where(Person.external_id == eid)).scalar_one().address_status == "npai"
        # Absent at the convocation, but it never reached them: no sanction_review.
        cycle_at(app, clock, local(2024, 7, 20, 0, 0))
        case = case_of(app, eid)
        assert case.step == "convocation" and (case.phase, case.hold_reason) == ("held", "npai")
        cycle_at(app, clock, local(2024, 8, 20, 10))
        case = case_of(app, eid)
        assert (case.phase, case.hold_reason) == ("held", "npai")
        assert "sanction_review" not in step_history(app, eid)
        # A new address: a new case, from invitation_1.
        res = cases.apply_event(app, external_id=eid, type="address_updated", now=local(2024, 8, 21, 11))
        assert res.status == "applied"
        old, new = cases_of(app, eid)
        assert (old.status, old.outcome) == ("closed", "restarted_after_address_update")
        assert (new.status, new.step, new.path) == ("active", "invitation_1", "cd")
        cycle_at(app, clock, local(2024, 8, 21, 11, 1))
        assert sorted(sent(app, new.id)) == [("invitation_1", "email"), ("invitation_1", "letter"),
                                             ("invitation_1", "sms")]
    assert_outbox_matches_db(app)


def test_same_event_twice_with_one_key_is_applied_once(app, flux_writer):
    path = flux_writer([{"external_id": "CAF35-0009601"}])
    ingest.ingest_file(app, path, local(2024, 6, 10, 8))
    eid = "CAF35-0009601"
    jobs.cycle(app, local(2024, 6, 10, 10))
    kw = dict(external_id=eid, type="rdv_booked", appointment_at=local(2024, 6, 20, 14), idempotency_key="agenda:42")
    first = cases.apply_event(app, now=local(2024, 6, 11, 9), **kw)
    second = cases.apply_event(app, now=local(2024, 6, 11, 9, 5), **kw)
    assert first.status == "applied"
    assert second.status == "duplicate" and second.event_id == first.event_id
    case = case_of(app, eid)
    assert case.appointment_count == 1
    assert len(appointments_of(app, case.id)) == 1
    assert len([m for m in messages_of(app, case.id) if m.step == "rdv_reminder"]) == 1
    with session_scope(app.db_url) as s:
        assert s.execute(select(func.count()).select_from(InboundEvent)).scalar_one() == 1


def test_a_message_is_sent_once_whatever_the_redeliveries(app, flux_writer):
    from worker.entrypoints.tasks import letters as letter_tasks
    from worker.entrypoints.tasks import sms as sms_tasks

    path = flux_writer([{"external_id": "CAF35-0009701"}])
    now = local(2024, 6, 10, 10)
    ingest.ingest_file(app, path, local(2024, 6, 10, 8))
    assert cases.due_case_ids(app, now, 10)
    [case_id] = [c.id for c in cases_of(app, "CAF35-0009701")]
    cases.advance_case(app, case_id, now)
    msgs = {m.channel: m for m in messages_of(app, case_id)}
    sms, letter = msgs["sms"], msgs["letter"]

    # Claimed twice: the first sends, the second finds it taken.
    assert sending.send_message(app, sms.id, now).outcome == "sent"
    assert sending.send_message(app, sms.id, now).outcome == "skipped"
    # Redelivery of the task after a successful send (acks_late): a no-op.
    assert sms_tasks.send.apply(args=[sms.id, now.isoformat()]).get() == "skipped"
    assert sms_tasks.send.apply(args=[sms.id, None]).get() == "skipped"

    # Two workers race for the same pending message: only one claim wins.
    with session_scope(app.db_url) as s1:
        won_1 = repository.claim_message(s1, letter.id, now)
    with session_scope(app.db_url) as s2:
        won_2 = repository.claim_message(s2, letter.id, now)
    assert (won_1, won_2) == (True, False)
    # The loser's task then does nothing: the letter is never written.
    assert letter_tasks.send.apply(args=[letter.id, now.isoformat()]).get() == "skipped"
    assert not outbox_letters(app)

    assert [r["reference"] for r in outbox_sms(app)] == [sms.reference]
    # The relay does not pick sent or claimed messages up again.
    jobs.cycle(app, now + dt.timedelta(minutes=10))
    assert [r["reference"] for r in outbox_sms(app)] == [sms.reference]
    assert not outbox_letters(app)
    # A message left in "sending" is surfaced to ops, never resent.
    jobs.cycle(app, now + dt.timedelta(minutes=app.settings.sending_timeout_minutes + 1))
    assert {m.id: m.status for m in messages_of(app, case_id)}[letter.id] == "technical-failure"
    assert not outbox_letters(app)


def test_sms_deferred_outside_the_window(app, flux_writer):
    path = flux_writer([{"external_id": "CAF35-0009801"}])
    ingest.ingest_file(app, path, local(2024, 6, 14, 8))  # a Friday
    eid = "CAF35-0009801"
    with freeze_time(local(2024, 6, 14, 21)) as clock:
        cycle_at(app, clock, local(2024, 6, 14, 21))  # 21:00 local: letters yes, SMS no
        case = case_of(app, eid)
        msgs = messages_of(app, case.id)
        assert the(msgs, "invitation_1", "letter").status == "sent"
        sms = the(msgs, "invitation_1", "sms")
        assert sms.status == "pending" and sms.not_before == local(2024, 6, 17, 9).astimezone(UTC)
        assert the(msgs, "invitation_1", "email").status == "pending"
        assert outbox_sms(app) == []
        cycle_at(app, clock, local(2024, 6, 15, 10))  # Saturday
        cycle_at(app, clock, local(2024, 6, 17, 8, 59))  # Monday, before the window
        assert the(messages_of(app, case.id), "invitation_1", "sms").status == "pending"
        assert outbox_sms(app) == []
        cycle_at(app, clock, local(2024, 6, 17, 9, 0))
        sms = the(messages_of(app, case.id), "invitation_1", "sms")
        assert sms.status == "sent" and sms.sent_at == local(2024, 6, 17, 9).astimezone(UTC)
        assert len(outbox_sms(app)) == 1
    assert_outbox_matches_db(app)


def test_send_outside_the_window_is_deferred_not_dropped(app, flux_writer):
    """A due SMS whose send task runs late (19:30) is put back to 09:00 next working day."""
    path = flux_writer([{"external_id": "CAF35-0009802"}])
    ingest.ingest_file(app, path, local(2024, 6, 13, 8))  # a Thursday
    [case] = cases_of(app, "CAF35-0009802")
    cases.advance_case(app, case.id, local(2024, 6, 13, 18, 50))
    sms = the(messages_of(app, case.id), "invitation_1", "sms")
    assert sms.not_before == local(2024, 6, 13, 18, 50).astimezone(UTC)
    res = sending.send_message(app, sms.id, local(2024, 6, 13, 19, 30))
    assert res.outcome == "deferred"
    sms = the(messages_of(app, case.id), "invitation_1", "sms")
    assert (sms.status, sms.not_before) == ("pending", local(2024, 6, 14, 9).astimezone(UTC))
    assert outbox_sms(app) == []
    assert sending.send_message(app, sms.id, local(2024, 6, 14, 8)).outcome == "skipped"
    assert sending.send_message(app, sms.id, local(2024, 6, 14, 9)).outcome == "sent"
    assert len(outbox_sms(app)) == 1


def test_timeline_lists_everything_in_order(app, flux_writer):
    path = flux_writer([{"external_id": "CAF35-0009901"}])
    ingest.ingest_file(app, path, local(2024, 6, 10, 8))
    eid = "CAF35-0009901"
    with freeze_time(local(2024, 6, 10, 10)) as clock:
        cycle_at(app, clock, local(2024, 6, 10, 10))
        cases.apply_event(app, external_id=eid, type="legitimate_reason", now=local(2024, 6, 12, 9),
                             until=local(2024, 6, 20, 0, 0), category="medical_appointment")
        cycle_at(app, clock, local(2024, 6, 20, 10))
        cycle_at(app, clock, local(2024, 7, 3, 10))
    items = timeline.timeline(app, eid)
    assert items, items
    ats = [dt.datetime.fromisoformat(i["at"]) for i in items]
    assert ats == sorted(ats)
    assert all(set(i) >= {"at", "kind"} for i in items)
    kinds = {i["kind"] for i in items}
    assert {"message", "event", "step", "case"} <= kinds
    for i in items:
        if i["kind"] == "message":
            assert {"id", "step", "channel", "status"} <= set(i)
        elif i["kind"] == "event":
            assert {"id", "type", "status"} <= set(i)
        elif i["kind"] == "step":
            assert "step" in i
    json.dumps(items)  # the CLI prints it as is
    assert items[0]["kind"] == "case" and items[0]["detail"]["action"] == "opened"
    [ev] = [i for i in items if i["kind"] == "event"]
    assert (ev["type"], ev["status"], ev["at"]) == ("legitimate_reason", "applied",
                                                    local(2024, 6, 12, 9).astimezone(UTC).isoformat())
    steps = [(i["step"], i["at"]) for i in items if i["kind"] == "step"]
    assert [s for s, _ in steps] == ["invitation_1", "invitation_2"]
    assert steps[0][1] == local(2024, 6, 10, 10).astimezone(UTC).isoformat()
    # 15 days of waiting, 2 of them spent before the pause: 13 left from the 20th.
    assert dt.datetime.fromisoformat(steps[1][1]) == local(2024, 7, 3, 10).astimezone(UTC)
    inv1 = [i for i in items if i["kind"] == "message" and i["step"] == "invitation_1"]
    assert sorted(i["channel"] for i in inv1) == ["email", "letter", "sms"]
    assert all(i["status"] == "sent" and i["at"] == steps[0][1] for i in inv1)
    # In order: the step comes before its messages, the event after them.
    idx = {id(i): n for n, i in enumerate(items)}
    first_step = next(i for i in items if i["kind"] == "step")
    assert all(idx[id(first_step)] < idx[id(m)] < idx[id(ev)] for m in inv1)


def test_reminder_of_a_monday_convocation_goes_before_the_weekend(app, flux_writer):
    """2 days before a Monday is a Saturday: the reminder goes on the Friday at 10:00 — not pushed
    forward into the sending window of Monday morning, an hour before the appointment (or after it)."""
    path = flux_writer([{"external_id": "CAF35-0009111", "orientation": "ft", "ft_registered": "true",
                         "organisation": "FT-REDON"}])
    ingest.ingest_file(app, path, local(2024, 6, 10, 8))
    jobs.cycle(app, local(2024, 6, 10, 10))  # ft_convocation on Monday 17 June at 10:00
    case = case_of(app, "CAF35-0009111")
    assert case.appointment_at == local(2024, 6, 17, 10).astimezone(UTC)
    reminder = the(messages_of(app, case.id), "rdv_reminder", "sms")
    assert app.calendar.in_window(reminder.not_before)
    assert reminder.not_before <= case.appointment_at - dt.timedelta(days=2)
    assert reminder.not_before == local(2024, 6, 14, 10).astimezone(UTC)


def test_the_household_cap_applies_when_the_flux_gives_the_household_size(app, flux_writer):
    """A flux column `household_size` (whitelisted in config/flux_columns.yaml): for a household of
    more than one person the suspension envisaged cannot exceed the cap (décret n° 2025-478)."""
    path = flux_writer([{"external_id": "CAF35-0009801"}, {"external_id": "CAF35-0009802"}])
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[0] += ",household_size"
    lines[1] += ",3"
    lines[2] += ",1"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ingest.ingest_file(app, path, local(2024, 6, 3, 8))
    cap = app.policy.measure.household_cap_rate
    with freeze_time(local(2024, 6, 3, 10)) as clock:
        cycle_at(app, clock, local(2024, 6, 3, 10))
        for day in range(1, 50):  # silent: both reach sanction_review
            cycle_at(app, clock, local(2024, 6, 3, 10) + dt.timedelta(days=day))
        for eid in ("CAF35-0009801", "CAF35-0009802"):
            assert case_of(app, eid).step == "sanction_review"
        with pytest.raises(ServiceError, match=f"plafond de {cap} %"):
            cases.apply_event(app, external_id="CAF35-0009801", type="review_decision", decision="proceed",
                              rate=cap + 10, months=1, now=local(2024, 7, 23, 10))
        cases.apply_event(app, external_id="CAF35-0009801", type="review_decision", decision="proceed",
                          rate=cap, months=1, now=local(2024, 7, 23, 10))
        # a person alone: no cap
        cases.apply_event(app, external_id="CAF35-0009802", type="review_decision", decision="proceed",
                          rate=cap + 10, months=1, now=local(2024, 7, 23, 10))
    assert case_of(app, "CAF35-0009801").measure_rate == cap
    assert case_of(app, "CAF35-0009802").measure_rate == cap + 10


def test_large_print_and_language_from_the_flux_or_an_event(app, flux_writer):
    """`large_print` / `language` (optional flux columns, or `preferences_updated`): the next letters are
    in 16 pt, the SMS in the person's language (issue 10)."""
    path = flux_writer([{"external_id": "CAF35-0009901"}, {"external_id": "CAF35-0009902"}])
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[0] += ",large_print,language"
    lines[1] += ",true,en"
    lines[2] += ",,"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ingest.ingest_file(app, path, local(2024, 6, 3, 8))
    cases.apply_event(app, external_id="CAF35-0009902", type="preferences_updated", large_print=True,
                      language="ar", now=local(2024, 6, 3, 8, 30))
    with pytest.raises(ServiceError, match="langue inconnue"):
        cases.apply_event(app, external_id="CAF35-0009902", type="preferences_updated", language="xx",
                          now=local(2024, 6, 3, 8, 31))
    with freeze_time(local(2024, 6, 3, 10)) as clock:
        cycle_at(app, clock, local(2024, 6, 3, 10))
    for eid, lang in (("CAF35-0009901", "en"), ("CAF35-0009902", "ar")):
        case = case_of(app, eid)
        letter = letter_for(app, the(messages_of(app, case.id), "invitation_1", "letter"))
        assert "large-print" in letter
        sms = sms_for(app, the(messages_of(app, case.id), "invitation_1", "sms"))["body"]
        if lang == "ar":
            assert any("\u0600" <= ch <= "\u06ff" for ch in sms) and "??" not in sms  # never transliterated
        else:
            assert "appointment" in sms.lower() or "hello" in sms.lower()
