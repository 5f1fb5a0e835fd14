"""Issue 11, "procedure shortcuts": idempotency keys scoped by person and type,
receipts for messages not sent, Twilio error codes, phones that cannot take an SMS.

Forged bounce notices: tests/integration/test_bounce_records.py; the Twilio
codes through the real client: tests/integration/test_real_channels.py.
"""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update

from tests.integration.test_api import (_events, api_env, 
    API_KEY,
    CD_PERSON,
    FT_PERSON,
    NOW,
    _as_twilio,
    _callback,
    _form,
    _message,
    _messages,
    _person,
    _post_event,
)
from worker.adapters.store.models import Case, InboundEvent, Message, Person
from worker.adapters.store.session import session_scope
from worker.entrypoints import jobs
from worker.services import cases, errors, ingest, sending, timeline


@pytest.fixture
def api(db_url, tmp_path):
    """As tests/integration/test_api.py's ``env``: the two sample people ingested and invited
    (local channels), a TestClient, the API's clock at 3 June 2024, 10:05 Paris."""
    with api_env(db_url, tmp_path) as e:
        yield e


# --- idempotency keys: scoped by (person, type); a reused key with other content is refused ---------------------


def test_the_same_key_for_another_person_or_type_is_another_event(api):
    app, client, _ = api
    first = _post_event(client, {"type": "npai", "external_id": CD_PERSON, "idempotency_key": "agenda-7"})
    assert first.status_code == 201 and first.json()["status"] == "applied"
    # another person, same key: recorded and applied (it was "duplicate", and dropped)
    other = _post_event(client, {"type": "npai", "external_id": FT_PERSON, "idempotency_key": "agenda-7"})
    assert other.status_code == 201, other.json()
    assert other.json()["event_id"] != first.json()["event_id"]
    assert _person(app, FT_PERSON).address_status == "npai"
    # the same person, another type, same key: another event too
    third = _post_event(client, {"type": "address_updated", "external_id": CD_PERSON, "idempotency_key": "agenda-7"})
    assert third.status_code == 201 and third.json()["event_id"] not in (first.json()["event_id"],
                                                                        other.json()["event_id"])
    # the very same event again: a duplicate of the first
    again = _post_event(client, {"type": "npai", "external_id": CD_PERSON, "idempotency_key": "agenda-7"})
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert again.json()["event_id"] == first.json()["event_id"]
    assert _events(app) == 3


def test_a_reused_key_with_other_content_is_a_409_in_french(api):
    app, client, _ = api
    body = {"type": "legitimate_reason", "external_id": CD_PERSON, "until": "2024-07-01", "category": "sick_leave",
            "reason": "hospitalisation", "idempotency_key": "agenda-42"}
    first = _post_event(client, body)
    assert first.status_code == 201, first.json()
    for change in ({"until": "2024-08-01"}, {"reason": "autre motif"}, {"category": "hospitalisation"}):
        r = _post_event(client, {**body, **change})
        assert r.status_code == 409, change
        assert "clé d'idempotence déjà utilisée" in r.json()["detail"]
        assert "hospitalisation" not in r.json()["detail"] and "autre motif" not in r.json()["detail"]
    assert _events(app) == 1
    # the same content later (another recording time) is still the same event
    assert _post_event(client, body).json()["status"] == "duplicate"
    with session_scope(app.db_url) as s:
        ev = s.get(InboundEvent, first.json()["event_id"])
        assert "hospitalisation" not in str(ev.payload)  # the reason's text is still not stored


def test_the_service_raises_a_specific_error(api):
    app, _, _ = api
    kw = dict(external_id=CD_PERSON, type="rdv_booked", idempotency_key="agenda:99",
              appointment_at=NOW + dt.timedelta(days=7))
    first = cases.apply_event(app, now=NOW + dt.timedelta(hours=1), **kw)
    # the same instant written in another time zone is the same content
    paris = dt.timezone(dt.timedelta(hours=2))
    same = cases.apply_event(app, now=NOW + dt.timedelta(hours=2),
                             **{**kw, "appointment_at": (NOW + dt.timedelta(days=7)).astimezone(paris)})
    assert same.status == "duplicate" and same.event_id == first.event_id
    with pytest.raises(errors.IdempotencyConflict) as info:
        cases.apply_event(app, now=NOW + dt.timedelta(hours=2), **{**kw, "appointment_at": NOW + dt.timedelta(days=8)})
    assert isinstance(info.value, errors.ServiceError)  # the CLI prints it as any refusal: one French line
    # a key longer than the column once scoped is kept as its digest
    long_key = "k" * 200
    a = cases.apply_event(app, now=NOW, external_id=CD_PERSON, type="npai", idempotency_key=long_key)
    b = cases.apply_event(app, now=NOW, external_id=FT_PERSON, type="npai", idempotency_key=long_key)
    assert a.event_id != b.event_id
    assert cases.apply_event(app, now=NOW, external_id=FT_PERSON, type="npai",
                             idempotency_key=long_key).status == "duplicate"


def test_a_key_recorded_before_scoping_is_still_a_duplicate(api):
    app, _, _ = api
    first = cases.apply_event(app, now=NOW, external_id=CD_PERSON, type="npai", idempotency_key="old-key")
    with session_scope(app.db_url) as s:  # as stored before this change: the bare key, no content digest
        s.execute(update(InboundEvent).where(InboundEvent.id == first.event_id)
                  .values(idempotency_key="old-key", payload={}))
    again = cases.apply_event(app, now=NOW, external_id=CD_PERSON, type="npai", idempotency_key="old-key")
    assert again.status == "duplicate" and again.event_id == first.event_id
    other = cases.apply_event(app, now=NOW, external_id=FT_PERSON, type="npai", idempotency_key="old-key")
    assert other.status == "applied"


def test_the_cli_prints_the_conflict_in_french(tmp_path, flux_writer):
    from tests.integration.test_cli import Cli, _one_invited

    cli = Cli(tmp_path)
    _one_invited(cli, flux_writer, "CAF35-0006201", "lea.morel@example.net")
    cli.run("event", "rdv_booked", "CAF35-0006201", "--appointment-at", "2024-06-12T14:00", "--key", "k-1",
            "--at", "2024-06-04T09:00")
    line = cli.fails("event", "rdv_booked", "CAF35-0006201", "--appointment-at", "2024-06-13T14:00", "--key", "k-1",
                     "--at", "2024-06-04T09:00")
    assert "clé d'idempotence déjà utilisée" in line


# --- a receipt for a message not sent ----------------------------------------------------------------------------


def test_a_signed_receipt_for_a_message_not_yet_sent_changes_nothing(api):
    app, client, _ = api
    [pending] = [m for m in _messages(app, FT_PERSON, "sms") if m.status == "pending"]
    sid = "SM" + "a" * 32
    for status, code in (("undelivered", 30006), ("failed", 21211), ("delivered", None), ("sent", None)):
        r = _callback(client, pending.id, _form(sid, status, code))
        assert r.status_code == 204, status  # answered (Twilio must not retry), not applied
    msg = _message(app, pending.id)
    assert (msg.status, msg.error, msg.provider_ref) == ("pending", None, None)
    assert _person(app, FT_PERSON).phone_status == "ok"
    assert _events(app) == 0

    # cancelled, or refused before Twilio took it: the same
    with session_scope(app.db_url) as s:
        s.execute(update(Message).where(Message.id == pending.id).values(status="cancelled"))
    assert _callback(client, pending.id, _form(sid, "undelivered", 30006)).status_code == 204
    assert _message(app, pending.id).status == "cancelled"
    with session_scope(app.db_url) as s:
        s.execute(update(Message).where(Message.id == pending.id).values(status="failed", error="recipient (21211)"))
    assert _callback(client, pending.id, _form(sid, "delivered")).status_code == 204
    assert _message(app, pending.id).status == "failed"


# --- Twilio error codes in receipts --------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [21408, 21612])
def test_an_account_error_alerts_ops_and_keeps_the_phone(api, code, caplog):
    app, client, _ = api
    sms = _messages(app, FT_PERSON, "sms")
    sent = next(m for m in sms if m.status == "sent")
    pending = [m for m in sms if m.status == "pending"]
    sid = _as_twilio(app, sent.id)
    phone = _person(app, FT_PERSON).phone
    assert _callback(client, sent.id, _form(sid, "failed", code)).status_code == 204
    msg = _message(app, sent.id)
    assert msg.status == "technical-failure"  # what `relance messages list --status technical-failure` shows ops
    assert f"Twilio {code}" in msg.error and "alerte exploitation" in msg.error
    assert "n'est pas en cause" in msg.error
    assert _person(app, FT_PERSON).phone_status == "ok"
    assert all(_message(app, m.id).status == "pending" for m in pending)  # later SMS still planned
    assert _events(app) == 0
    alerts = [r for r in caplog.records if "OPS ALERT" in r.getMessage()]
    assert alerts and all(phone not in r.getMessage() for r in caplog.records)


def test_an_unreachable_handset_is_sent_again_while_the_message_is_valid(api):
    app, client, clock = api
    message_id, sid = next((m.id, _as_twilio(app, m.id)) for m in _messages(app, CD_PERSON, "sms")
                           if m.status == "sent")
    sent_at = _message(app, message_id).sent_at
    assert _callback(client, message_id, _form(sid, "undelivered", 30003)).status_code == 204
    msg = _message(app, message_id)
    assert msg.status == "pending" and msg.not_before == clock.now + dt.timedelta(minutes=30)
    assert msg.provider_ref is None and "injoignable" in msg.error
    assert _person(app, CD_PERSON).phone_status == "ok" and _events(app) == 0
    # the old attempt's receipts no longer apply
    assert _callback(client, message_id, _form(sid, "undelivered", 30003)).status_code == 204
    assert _message(app, message_id).status == "pending"

    # sent again when due, through the relay: a new hand-over, the first one's date kept
    jobs.cycle(app, msg.not_before)
    msg = _message(app, message_id)
    assert msg.status == "sent" and msg.attempts == 2 and msg.sent_at == sent_at
    sid2 = _as_twilio(app, message_id)

    # unreachable again, once its validity (RELANCE_TWILIO_VALIDITY_PERIOD after the first hand-over) is over
    clock.now = sent_at + dt.timedelta(seconds=app.settings.twilio_validity_period)
    assert _callback(client, message_id, _form(sid2, "undelivered", 30003)).status_code == 204
    msg = _message(app, message_id)
    assert msg.status == "failed" and "30003" in msg.error and "validité" in msg.error
    assert _person(app, CD_PERSON).phone_status == "ok"  # unreachable for a while, not a bad number
    assert _events(app) == 0


def test_a_landline_reported_by_twilio_flags_the_phone_as_not_mobile(api):
    app, client, _ = api
    sms = _messages(app, FT_PERSON, "sms")
    sent = next(m for m in sms if m.status == "sent")
    pending = [m for m in sms if m.status == "pending"]
    sid = _as_twilio(app, sent.id)
    assert _callback(client, sent.id, _form(sid, "failed", 21635)).status_code == 204
    assert _message(app, sent.id).status == "failed"
    assert _person(app, FT_PERSON).phone_status == "not_mobile"
    assert all(_message(app, m.id).status == "cancelled" for m in pending)
    with session_scope(app.db_url) as s:
        case = s.execute(select(Case).join(Person).where(Person.external_id == FT_PERSON)).scalar_one()
        assert case.phone_unusable and case.status == "active"


def test_partially_delivered_is_recorded(api):
    app, client, _ = api
    message_id, sid = next((m.id, _as_twilio(app, m.id)) for m in _messages(app, CD_PERSON, "sms")
                           if m.status == "sent")
    assert _callback(client, message_id, _form(sid, "partially_delivered")).status_code == 204
    msg = _message(app, message_id)
    assert msg.status == "sent" and "remise partielle" in msg.error
    [item] = [i for i in timeline.timeline(app, CD_PERSON) if i["kind"] == "message" and i["channel"] == "sms"]
    assert "remise partielle" in item["detail"]
    # a later full delivery wins
    assert _callback(client, message_id, _form(sid, "delivered")).status_code == 204
    assert _message(app, message_id).status == "delivered"


# --- phones that cannot take an SMS: warned at ingest, no SMS planned -----------------------------------------------


def test_landlines_and_foreign_numbers_are_warned_about_and_get_no_sms(relance_app, flux_writer):
    path = flux_writer([
        {"external_id": "CAF35-0007001", "phone": "0596 60 12 34"},  # Martinique landline
        {"external_id": "CAF35-0007002", "phone": "0269 61 12 34"},  # Mayotte landline
        {"external_id": "CAF35-0007003", "phone": "02 99 71 00 00"},  # Brittany landline
        {"external_id": "CAF35-0007004", "phone": "+44 7911 123456"},  # foreign mobile
        {"external_id": "CAF35-0007005", "phone": "0696 12 34 56"},  # Martinique mobile
        {"external_id": "CAF35-0007006", "phone": "06 12 34 56 78"},
    ])
    now = dt.datetime(2024, 6, 3, 8, 0, tzinfo=dt.timezone.utc)
    report = ingest.ingest_file(relance_app, path, now)
    warned = {w["external_id"]: w["reason"] for w in report.warnings if w["field"] == "phone"}
    assert set(warned) == {"CAF35-0007001", "CAF35-0007002", "CAF35-0007003", "CAF35-0007004"}
    assert "fixe" in warned["CAF35-0007001"] and "étranger" in warned["CAF35-0007004"]
    with session_scope(relance_app.db_url) as s:
        phones = dict(s.execute(select(Person.external_id, Person.phone)).all())
    assert phones["CAF35-0007001"] == "+596596601234" and phones["CAF35-0007002"] == "+262269611234"
    assert phones["CAF35-0007005"] == "+596696123456"

    jobs.cycle(relance_app, now + dt.timedelta(hours=2))
    with session_scope(relance_app.db_url) as s:
        sms = dict(s.execute(select(Person.external_id, func.count(Message.id)).join(Case, Case.person_id == Person.id)
                             .join(Message, (Message.case_id == Case.id) & (Message.channel == "sms"), isouter=True)
                             .group_by(Person.external_id)).all())
    assert sms == {"CAF35-0007001": 0, "CAF35-0007002": 0, "CAF35-0007003": 0, "CAF35-0007004": 0,
                   "CAF35-0007005": 1, "CAF35-0007006": 1}
    lines = (relance_app.settings.outbox / "sms.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "+596596601234" not in "".join(lines)


def test_a_phone_changed_to_a_landline_stops_the_sms(relance_app, flux_writer):
    now = dt.datetime(2024, 6, 3, 8, 0, tzinfo=dt.timezone.utc)
    ingest.ingest_file(relance_app, flux_writer([{"external_id": "CAF35-0007101"}]), now)
    jobs.cycle(relance_app, now + dt.timedelta(hours=2))
    report = ingest.ingest_file(relance_app, flux_writer([{"external_id": "CAF35-0007101",
                                                           "phone": "05 96 60 12 34"}], name="next.csv"),
                                now + dt.timedelta(days=1))
    assert [w["field"] for w in report.warnings] == ["phone"]
    with session_scope(relance_app.db_url) as s:
        person = s.execute(select(Person).where(Person.external_id == "CAF35-0007101")).scalar_one()
        assert (person.phone, person.phone_status) == ("+596596601234", "not_mobile")
        case = s.execute(select(Case).where(Case.person_id == person.id)).scalar_one()
        assert case.phone_unusable
    # the next step: letters (and e-mail), no SMS
    jobs.cycle(relance_app, now + dt.timedelta(days=30))
    with session_scope(relance_app.db_url) as s:
        later = s.execute(select(Message.step, Message.channel, Message.status)
                          .where(Message.case_id == case.id, Message.step != "invitation_1")).all()
    assert later and not [m for m in later if m.channel == "sms" and m.status != "cancelled"]


def test_the_local_sms_channel_refuses_a_landline(tmp_path):
    from worker.adapters.channels.base import OutgoingMessage, RecipientError
    from worker.adapters.channels.local import LocalSmsChannel

    channel = LocalSmsChannel(tmp_path)
    msg = OutgoingMessage(message_id=1, reference="RL-000001-0000001", channel="sms", step="invitation_1",
                          organisation="CDAS-REDON", case_reference="C", to="+596596601234", subject=None,
                          text="Bonjour")
    with pytest.raises(RecipientError) as info:
        channel.send(msg)
    assert info.value.code == "not_mobile"
    assert not (tmp_path / "sms.jsonl").exists()
    assert channel.send(OutgoingMessage(**{**msg.__dict__, "to": "+596696123456"})).status == "sent"


def test_a_landline_refused_at_sending_flags_the_phone_not_mobile(relance_app, flux_writer):
    """A case planned an SMS before this change (has_phone from any number): the channel refuses it."""
    now = dt.datetime(2024, 6, 3, 8, 0, tzinfo=dt.timezone.utc)
    ingest.ingest_file(relance_app, flux_writer([{"external_id": "CAF35-0007201"}]), now)
    with session_scope(relance_app.db_url) as s:
        s.execute(update(Person).values(phone="+33299710000"))
    jobs.cycle(relance_app, now + dt.timedelta(hours=2))
    with session_scope(relance_app.db_url) as s:
        [sms] = s.execute(select(Message).where(Message.channel == "sms")).scalars().all()
        person = s.execute(select(Person)).scalar_one()
        assert sms.status == "failed" and person.phone_status == "not_mobile"
    assert sending.NOT_MOBILE == "not_mobile"


def test_api_key_is_still_required(api):  # the 409 path does not bypass authentication
    _, client, _ = api
    r = _post_event(client, {"type": "npai", "external_id": CD_PERSON, "idempotency_key": "x"}, key="faux")
    assert r.status_code == 401
    assert _post_event(client, {"type": "npai", "external_id": CD_PERSON, "idempotency_key": "x"},
                       key=API_KEY).status_code == 201
