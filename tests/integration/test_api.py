"""The HTTP API (worker.entrypoints.api) through FastAPI's TestClient, on SQLite and PostgreSQL.

The people come from samples/flux_2024-05_with_errors.csv, sent once with the
local channels on a working morning; Twilio's side is simulated by signing
status callbacks with twilio's own RequestValidator, over the *public* URL
(settings.public_base_url), never the TestClient's http://testserver.
"""
from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
import json
import secrets
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from twilio.request_validator import RequestValidator

from tests.fakes.smtp_server import free_port
from worker.entrypoints import jobs
from worker.services import cases, errors, ingest, sending, timeline
from worker.entrypoints.api import create_app
from worker.bootstrap import build_app, set_app
from worker.entrypoints.celery_app import configure
from worker.adapters.channels.base import Delivery
from worker.adapters.store import session as db_session
from worker.adapters.store.models import AuditEntry, Case, InboundEvent, Message, Person
from worker.adapters.store.session import session_scope
from worker.settings import PROJECT_ROOT, Settings

UTC = dt.timezone.utc
SAMPLE = PROJECT_ROOT / "samples" / "flux_2024-05_with_errors.csv"
NOW = dt.datetime(2024, 6, 3, 8, 0, tzinfo=UTC)  # Monday 3 June 2024, 10:00 in Paris
TOKEN = "test-auth-token-0123456789"
ACCOUNT = "AC" + "0" * 32
PUBLIC = "https://relance.example.org"
API_KEY = "cle-de-test-1"

CD_PERSON = "CAF35-0003000"  # CD path: invitation_1 by letter + SMS, no e-mail
FT_PERSON = "CAF35-0003001"  # FT path: convocation letter + SMS + e-mail, reminder SMS pending


def _settings(tmp_path: Path, db_url: str, **overrides) -> Settings:
    values = dict(data_dir=tmp_path / "var", database_url=db_url, broker_url="memory://",
                  twilio_auth_token=TOKEN, public_base_url=PUBLIC, api_keys=f"{API_KEY}, autre-cle")
    values.update(overrides)
    return Settings(**values)


class Clock:
    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def _small_flux(tmp_path: Path) -> Path:
    """The two people these tests use, as the sample file writes them."""
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    rows = [lines[0]] + [line for line in lines[1:] if line.split(",")[0] in (CD_PERSON, FT_PERSON)][:2]
    path = tmp_path / "flux_small.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@contextmanager
def api_env(db_url, tmp_path):
    """The sample flux ingested and its first messages sent (local channels);
    a TestClient on the API; the clock of the API at 3 June 2024, 10:05 Paris:
    (app, client, clock). Also the fixture of test_api_bounds and test_shortcuts."""
    settings = _settings(tmp_path, db_url)
    app = build_app(settings)
    configure(settings)
    db_session.upgrade(db_url)
    set_app(app)
    clock = Clock(NOW + dt.timedelta(minutes=5))
    try:
        ingest.ingest_file(app, _small_flux(tmp_path), NOW)
        jobs.cycle(app, NOW)
        with TestClient(create_app(app, clock=clock)) as client:
            yield app, client, clock
    finally:
        set_app(None)
        db_session.get_engine(db_url).dispose()
        db_session.dispose_all()


@pytest.fixture
def env(db_url, tmp_path):
    with api_env(db_url, tmp_path) as e:
        yield e


def _events(app) -> int:
    with session_scope(app.db_url) as s:
        return s.execute(select(func.count()).select_from(InboundEvent)).scalar_one()


def _messages(app, external_id: str, channel: str | None = None) -> list[Message]:
    with session_scope(app.db_url) as s:
        q = (select(Message).join(Case, Case.id == Message.case_id).join(Person, Person.id == Case.person_id)
             .where(Person.external_id == external_id).order_by(Message.id))
        if channel:
            q = q.where(Message.channel == channel)
        return list(s.execute(q).scalars())


def _message(app, message_id: int) -> Message:
    with session_scope(app.db_url) as s:
        return s.get(Message, message_id)


def _person(app, external_id: str) -> Person:
    with session_scope(app.db_url) as s:
        return s.execute(select(Person).where(Person.external_id == external_id)).scalar_one()


def _as_twilio(app, message_id: int) -> str:
    """Pretend the message went through Twilio: give it an SM... SID."""
    sid = "SM" + secrets.token_hex(16)
    with session_scope(app.db_url) as s:
        s.execute(update(Message).where(Message.id == message_id).values(provider_ref=sid))
    return sid


def _sent_sms(app, external_id: str) -> tuple[int, str]:
    msg = next(m for m in _messages(app, external_id, "sms") if m.status == "sent")
    return msg.id, _as_twilio(app, msg.id)


def _form(sid: str, status: str, error_code: int | None = None) -> dict:
    form = {"AccountSid": ACCOUNT, "ApiVersion": "2010-04-01", "From": "CDAS35", "MessageSid": sid,
            "MessageStatus": status, "SmsSid": sid, "SmsStatus": status, "To": "+33600000000"}
    if error_code is not None:
        form["ErrorCode"] = str(error_code)
    return form


def _callback(client, message_id, form: dict, *, token: str = TOKEN, url: str | None = None,
              signature: str | None = "compute"):
    path = f"/twilio/status/{message_id}"
    headers = {}
    if signature == "compute":
        signature = RequestValidator(token).compute_signature(url or PUBLIC + path, form)
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    return client.post(path, data=form, headers=headers)


def _status_audit_count(app, message_id: int) -> int:
    with session_scope(app.db_url) as s:
        return s.execute(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.kind == "message", AuditEntry.entity_id == message_id)).scalar_one()


# --- Twilio status callbacks ------------------------------------------------------------------------


def test_signed_callbacks_move_the_message_to_delivered(env):
    app, client, _ = env
    message_id, sid = _sent_sms(app, CD_PERSON)

    r = _callback(client, message_id, _form(sid, "sent"))
    assert r.status_code == 204 and r.content == b""
    assert _message(app, message_id).status == "sent"
    r = _callback(client, message_id, _form(sid, "delivered"))
    assert r.status_code == 204
    msg = _message(app, message_id)
    assert msg.status == "delivered"
    assert msg.status_at == NOW + dt.timedelta(minutes=5)  # the API's clock
    items = [i for i in timeline.timeline(app, CD_PERSON) if i["kind"] == "message" and i["channel"] == "sms"]
    assert [i["status"] for i in items] == ["delivered"]


def test_bad_or_missing_signature_is_refused_and_changes_nothing(env):
    app, client, _ = env
    message_id, sid = _sent_sms(app, CD_PERSON)
    form = _form(sid, "delivered")
    url = f"{PUBLIC}/twilio/status/{message_id}"
    attempts = {
        "missing": dict(signature=None),
        "empty": dict(signature=""),
        # Signed over the URL the server sees (behind a proxy: the internal one): refused,
        # the route rebuilds the public URL from RELANCE_PUBLIC_BASE_URL.
        "request_url": dict(url=f"http://testserver/twilio/status/{message_id}"),
        "wrong_token": dict(token="not-the-token"),
        "tampered": dict(signature=RequestValidator(TOKEN).compute_signature(url, _form(sid, "sent"))),
        # A valid signature for another message's URL, replayed on this one.
        "other_message": dict(signature=RequestValidator(TOKEN).compute_signature(
            f"{PUBLIC}/twilio/status/{message_id + 1}", form)),
    }
    for name, kwargs in attempts.items():
        r = _callback(client, message_id, form, **kwargs)
        assert r.status_code == 403, name
        assert "signature" in r.json()["detail"], name
    assert _message(app, message_id).status == "sent"
    assert _callback(client, message_id, form).status_code == 204  # the genuine one still goes through


def test_signature_covers_the_query_string(env):
    app, client, _ = env
    message_id, sid = _sent_sms(app, CD_PERSON)
    form = _form(sid, "delivered")
    path = f"/twilio/status/{message_id}?attempt=2"
    good = RequestValidator(TOKEN).compute_signature(PUBLIC + path, form)
    without_query = RequestValidator(TOKEN).compute_signature(f"{PUBLIC}/twilio/status/{message_id}", form)
    assert client.post(path, data=form, headers={"X-Twilio-Signature": without_query}).status_code == 403
    assert client.post(path, data=form, headers={"X-Twilio-Signature": good}).status_code == 204
    assert _message(app, message_id).status == "delivered"


def test_callbacks_never_move_backwards_and_are_idempotent(env):
    app, client, _ = env
    message_id, sid = _sent_sms(app, CD_PERSON)
    assert _callback(client, message_id, _form(sid, "delivered")).status_code == 204
    entries = _status_audit_count(app, message_id)
    status_at = _message(app, message_id).status_at

    for status, code in (("delivered", None), ("sent", None), ("queued", None), ("sending", None),
                         ("undelivered", 30006), ("failed", 21211), ("receiving", None)):
        r = _callback(client, message_id, _form(sid, status, code))
        assert r.status_code == 204, status  # answered, so that Twilio does not retry

    msg = _message(app, message_id)
    assert msg.status == "delivered" and msg.status_at == status_at and msg.error is None
    assert _status_audit_count(app, message_id) == entries  # nothing recorded twice
    assert _person(app, CD_PERSON).phone_status == "ok"  # a late failure after a delivery flags nothing
    with session_scope(app.db_url) as s:
        assert s.execute(select(func.count()).select_from(InboundEvent)).scalar_one() == 0


def test_same_failure_callback_twice_records_one_event(env):
    app, client, _ = env
    message_id, sid = _sent_sms(app, CD_PERSON)
    for _ in range(2):
        assert _callback(client, message_id, _form(sid, "undelivered", 30006)).status_code == 204
    with session_scope(app.db_url) as s:
        events = s.execute(select(InboundEvent.type, InboundEvent.source)).all()
    assert events == [("sms_failed", "provider")]


def test_callback_for_an_unknown_message_is_acknowledged(env):
    _, client, _ = env
    for message_id in ("999999", "abc"):
        r = _callback(client, message_id, _form("SM" + "f" * 32, "delivered"))
        assert r.status_code == 204, message_id


def test_callback_for_a_letter_changes_nothing(env):
    app, client, _ = env
    letter = _messages(app, CD_PERSON, "letter")[0]
    r = _callback(client, letter.id, _form("SM" + "e" * 32, "delivered"))
    assert r.status_code == 204
    assert _message(app, letter.id).status == letter.status


def test_message_sid_mismatch_is_a_conflict_and_changes_nothing(env):
    app, client, _ = env
    message_id, sid = _sent_sms(app, CD_PERSON)
    other = "SM" + "0" * 32
    r = _callback(client, message_id, _form(other, "undelivered", 30006))
    assert r.status_code == 409
    assert _message(app, message_id).status == "sent"
    assert _person(app, CD_PERSON).phone_status == "ok"
    assert _callback(client, message_id, _form(sid, "delivered")).status_code == 204
    assert _message(app, message_id).status == "delivered"


@pytest.mark.parametrize("status,code", [("undelivered", 30006), ("failed", 21211), ("failed", 21614)])
def test_permanent_failure_callback_flags_the_phone_and_letters_go_on(env, status, code):
    app, client, _ = env
    # The FT person has a convocation SMS sent and its reminder SMS pending.
    sms = _messages(app, FT_PERSON, "sms")
    sent = next(m for m in sms if m.status == "sent")
    pending = [m for m in sms if m.status == "pending"]
    assert pending, "the convocation reminder SMS should be planned"
    sid = _as_twilio(app, sent.id)

    r = _callback(client, sent.id, _form(sid, status, code))
    assert r.status_code == 204

    msg = _message(app, sent.id)
    assert msg.status == "failed" and str(code) in msg.error
    assert _person(app, FT_PERSON).phone_status == "failed"
    for m in pending:
        after = _message(app, m.id)
        assert after.status == "cancelled" and after.cancel_reason == "sms_failed"
    letters = _messages(app, FT_PERSON, "letter")
    assert letters and all(m.status == "sent" for m in letters)  # letters carry on
    with session_scope(app.db_url) as s:
        case = s.execute(select(Case).join(Person).where(Person.external_id == FT_PERSON)).scalar_one()
        assert case.status == "active" and case.phone_unusable
    events = [i for i in timeline.timeline(app, FT_PERSON) if i["kind"] == "event"]
    assert [(e["type"], e["status"]) for e in events] == [("sms_failed", "applied")]


@pytest.mark.parametrize("status,code,expected", [("delivered", None, "delivered"), ("undelivered", 30006, "failed")])
def test_callback_arriving_before_the_sender_records_the_answer(env, status, code, expected):
    """Twilio may call back before send_message has stored the SID and "sent":
    the receipt wins, the sender's "sent" never moves the message backwards."""
    app, client, _ = env
    [reminder] = [m for m in _messages(app, FT_PERSON, "sms") if m.status == "pending"]
    sid = "SM" + secrets.token_hex(16)

    class RacingChannel:
        name, is_local = "sms", False

        def send(self, message):
            r = _callback(client, message.message_id, _form(sid, status, code))
            assert r.status_code == 204
            assert _message(app, message.message_id).status == expected  # recorded before we answer
            return Delivery(status="sent", provider_ref=sid, segments=1)

    app._channels["sms"] = RacingChannel()
    result = sending.send_message(app, reminder.id, reminder.not_before)
    assert result.outcome == "sent"
    msg = _message(app, reminder.id)
    assert msg.status == expected and msg.provider_ref == sid and msg.sent_at == reminder.not_before
    assert _person(app, FT_PERSON).phone_status == ("failed" if expected == "failed" else "ok")


def test_opt_out_callback_records_the_opt_out(env):
    app, client, _ = env
    message_id, sid = _sent_sms(app, CD_PERSON)
    assert _callback(client, message_id, _form(sid, "failed", 21610)).status_code == 204
    assert _message(app, message_id).status == "failed"
    assert _person(app, CD_PERSON).phone_status == "opted_out"
    assert [i["type"] for i in timeline.timeline(app, CD_PERSON) if i["kind"] == "event"] == ["sms_opt_out"]


def test_transient_failure_callback_fails_the_message_but_keeps_the_phone(env):
    app, client, _ = env
    message_id, sid = _sent_sms(app, CD_PERSON)
    assert _callback(client, message_id, _form(sid, "undelivered", 30008)).status_code == 204
    assert _message(app, message_id).status == "failed"
    assert _person(app, CD_PERSON).phone_status == "ok"
    assert not [i for i in timeline.timeline(app, CD_PERSON) if i["kind"] == "event"]


def test_callbacks_are_refused_when_twilio_is_not_configured(db_url, tmp_path):
    settings = _settings(tmp_path, db_url, twilio_auth_token=None, public_base_url=None)
    app = build_app(settings)
    db_session.upgrade(db_url)
    try:
        client = TestClient(create_app(app))
        form = _form("SM" + "a" * 32, "delivered")
        r = _callback(client, 1, form, token="anything")
        assert r.status_code == 403
    finally:
        db_session.get_engine(db_url).dispose()
        db_session.dispose_all()


# --- POST /events -------------------------------------------------------------------------------------


def _post_event(client, body, key: str | None = API_KEY):
    headers = {"X-Api-Key": key} if key is not None else {}
    if isinstance(body, (dict, list)):
        return client.post("/events", json=body, headers=headers)
    return client.post("/events", content=body, headers={**headers, "Content-Type": "application/json"})


def test_events_need_an_api_key(env):
    _, client, _ = env
    body = {"type": "npai", "external_id": CD_PERSON}
    for key in (None, "", "mauvaise-cle", API_KEY + "x"):
        r = _post_event(client, body, key=key)
        assert r.status_code == 401, key
        assert "X-Api-Key" in r.json()["detail"]
    assert _post_event(client, body, key="autre-cle").status_code == 201


def test_events_api_is_disabled_without_keys(db_url, tmp_path):
    settings = _settings(tmp_path, db_url, api_keys=" , ")
    app = build_app(settings)
    db_session.upgrade(db_url)
    try:
        client = TestClient(create_app(app))
        r = _post_event(client, {"type": "npai", "external_id": CD_PERSON})
        assert r.status_code == 503
        assert r.json()["detail"].startswith("API des événements désactivée")
    finally:
        db_session.get_engine(db_url).dispose()
        db_session.dispose_all()


def test_event_is_applied_and_dated(env):
    app, client, clock = env
    r = _post_event(client, {"type": "rdv_booked", "external_id": CD_PERSON,
                             "appointment_at": "2024-06-12T14:30", "at": "2024-06-03T09:30:00+02:00"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"event_id", "status", "note", "case"}
    assert body["status"] == "applied" and isinstance(body["case"], int)
    with session_scope(app.db_url) as s:
        ev = s.get(InboundEvent, body["event_id"])
        assert ev.source == "api" and ev.type == "rdv_booked"
        assert ev.at == dt.datetime(2024, 6, 3, 7, 30, tzinfo=UTC)  # `at`, not the clock
        case = s.get(Case, body["case"])
        # A naive date-time is a Paris local time: 14:30 in June is 12:30 UTC.
        assert case.appointment_at == dt.datetime(2024, 6, 12, 12, 30, tzinfo=UTC)
        assert case.phase == "appointment"


def test_event_without_at_is_dated_by_the_clock(env):
    app, client, clock = env
    r = _post_event(client, {"type": "npai", "external_id": CD_PERSON})
    assert r.status_code == 201
    with session_scope(app.db_url) as s:
        assert s.get(InboundEvent, r.json()["event_id"]).at == clock.now
    assert _person(app, CD_PERSON).address_status == "npai"


def test_duplicate_idempotency_key(env):
    app, client, _ = env
    body = {"type": "legitimate_reason", "external_id": CD_PERSON, "until": "2024-07-01",
            "category": "hospitalisation", "reason": "hospitalisée à Pontchaillou depuis lundi",
            "idempotency_key": "agenda-42"}
    first = _post_event(client, body)
    assert first.status_code == 201 and first.json()["status"] == "applied"
    second = _post_event(client, body)
    assert second.status_code == 200
    assert second.json()["status"] == "duplicate"
    assert second.json()["event_id"] == first.json()["event_id"]
    assert second.json()["case"] == first.json()["case"]
    with session_scope(app.db_url) as s:
        assert s.execute(select(func.count()).select_from(InboundEvent)).scalar_one() == 1
        ev = s.get(InboundEvent, first.json()["event_id"])
        assert "Pontchaillou" not in json.dumps(ev.payload)  # the reason's text is not stored, its category is
        assert ev.payload["category"] == "hospitalisation"


def test_unknown_person_is_404(env):
    _, client, _ = env
    r = _post_event(client, {"type": "npai", "external_id": "CAF35-9999999"})
    assert r.status_code == 404
    assert r.json()["detail"] == "personne inconnue"


BAD_EVENTS = [
    ({"type": "vacances", "external_id": CD_PERSON}, None, "type d'événement inconnu"),
    ({"type": "npai"}, "external_id", "champ obligatoire"),
    ({"type": "npai", "external_id": ""}, "external_id", "ne doit pas être vide"),
    ({"external_id": CD_PERSON}, "type", "champ obligatoire"),
    ({"type": "npai", "external_id": CD_PERSON, "at": "31/02/2024"}, "at", "date-heure invalide"),
    ({"type": "npai", "external_id": CD_PERSON, "at": "2024-02-31T10:00"}, "at", "date-heure invalide"),
    ({"type": "npai", "external_id": CD_PERSON, "at": 1717400000}, "at", "ISO 8601"),
    ({"type": "ar_signed", "external_id": CD_PERSON, "receipt_on": "hier"}, "receipt_on", "date invalide"),
    ({"type": "npai", "external_id": CD_PERSON, "appointement_at": "2024-06-12"}, "appointement_at",
     "champ inconnu"),
    ({"type": "rdv_booked", "external_id": CD_PERSON}, None, "appointment_at"),
    ({"type": "legitimate_reason", "external_id": CD_PERSON}, None, "category"),
    ({"type": "review_decision", "external_id": CD_PERSON, "decision": "peut-être"}, None, "decision"),
    ({"type": "reoriented", "external_id": CD_PERSON}, None, "to"),
    ({"type": "npai", "external_id": CD_PERSON, "taux": 30}, "taux", "start_on"),  # the accepted fields, all
    ({"type": "review_decision", "external_id": CD_PERSON, "decision": "proceed", "rate": "beaucoup"}, "rate",
     "nombre entier"),
    ({"type": "review_decision", "external_id": CD_PERSON, "decision": "proceed", "rate": 150}, "rate",
     "au plus 100"),
    ({"type": "sanction_decided", "external_id": CD_PERSON, "rate": 30, "months": 1}, None, "start_on"),
    ("{pas du json", None, "JSON valide"),
    ("", None, "JSON valide"),
    ([1, 2], None, "objet JSON"),
]


def test_event_validation_errors_are_422_in_french(env):
    app, client, _ = env
    for body, field, words in BAD_EVENTS:
        r = _post_event(client, body)
        assert r.status_code == 422, (body, r.text)
        detail = r.json()
        assert detail["detail"].startswith("requête invalide — "), body
        assert any(e["field"] == field and words in e["message"] for e in detail["errors"]), (body, detail)
    with session_scope(app.db_url) as s:
        assert s.execute(select(func.count()).select_from(InboundEvent)).scalar_one() == 0


def test_event_at_in_the_future_is_refused(env):
    app, client, clock = env
    soon = (clock.now + dt.timedelta(minutes=4)).isoformat()
    later = (clock.now + dt.timedelta(minutes=6)).isoformat()
    r = _post_event(client, {"type": "npai", "external_id": CD_PERSON, "at": later})
    assert r.status_code == 422
    assert "futur" in r.json()["detail"]
    assert _post_event(client, {"type": "npai", "external_id": CD_PERSON, "at": soon}).status_code == 201


def test_service_error_is_422_with_its_message(env, monkeypatch):
    _, client, _ = env
    r = _post_event(client, {"type": "reoriented", "external_id": CD_PERSON, "to": "nulle-part"})
    assert r.status_code == 422
    assert "parcours inconnu" in r.json()["detail"]

    def refuse(*args, **kwargs):
        raise errors.ServiceError("rdv_booked : ce rendez-vous est déjà passé")

    monkeypatch.setattr(cases, "apply_event", refuse)
    r = _post_event(client, {"type": "npai", "external_id": CD_PERSON})
    assert r.status_code == 422
    assert r.json() == {"detail": "rdv_booked : ce rendez-vous est déjà passé"}


def test_a_receipt_date_in_the_future_is_refused(env):
    app, client, _ = env
    r = _post_event(client, {"type": "ar_signed", "external_id": CD_PERSON, "at": "2024-06-03T09:00",
                             "receipt_on": "2024-06-10"})
    assert r.status_code == 422
    assert "date de réception 10/06/2024 dans le futur" in r.json()["detail"]


def test_acknowledged_receipt_defaults_to_the_event_day(env):
    app, client, _ = env
    r = _post_event(client, {"type": "ar_signed", "external_id": CD_PERSON, "at": "2024-06-03T09:00"})
    assert r.status_code == 201
    with session_scope(app.db_url) as s:
        assert s.get(InboundEvent, r.json()["event_id"]).payload["receipt_on"] == "2024-06-03"


# --- health and readiness -------------------------------------------------------------------------------


def test_health_and_ready(env):
    _, client, _ = env
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200
    assert r.json()["checks"]["database"] == "ok"


def test_ready_is_503_when_the_database_is_down(tmp_path):
    url = f"postgresql+psycopg://relance:secret@127.0.0.1:{free_port()}/relance"
    app = build_app(_settings(tmp_path, url))
    try:
        client = TestClient(create_app(app))
        assert client.get("/health").status_code == 200  # the process is alive
        r = client.get("/ready")
        assert r.status_code == 503
        checks = r.json()["checks"]
        assert checks["database"].startswith("indisponible")
        assert "secret" not in r.text  # no credentials in the answer
    finally:
        db_session.dispose_all()


def test_ready_is_503_when_the_broker_is_down(tmp_path):
    url = f"sqlite:///{tmp_path / 'relance.db'}"
    app = build_app(_settings(tmp_path, url, broker_url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        client = TestClient(create_app(app))
        r = client.get("/ready")
        assert r.status_code == 503
        assert r.json()["checks"]["database"] == "ok"
        assert r.json()["checks"]["broker"].startswith("indisponible")
    finally:
        db_session.dispose_all()


def test_ready_with_a_live_broker(tmp_path, redis_url):
    url = f"sqlite:///{tmp_path / 'relance.db'}"
    app = build_app(_settings(tmp_path, url, broker_url=redis_url))
    try:
        r = TestClient(create_app(app)).get("/ready")
        assert r.status_code == 200, r.text
        assert r.json()["checks"] == {"database": "ok", "broker": "ok"}
    finally:
        db_session.dispose_all()


# --- GET /agenda --------------------------------------------------------------------------------------


def test_agenda_lists_what_waits_for_an_agent(env):
    _, client, _ = env
    assert client.get("/agenda").status_code == 401
    assert client.get("/agenda", headers={"X-Api-Key": "mauvaise-cle"}).status_code == 401
    headers = {"X-Api-Key": API_KEY}
    assert client.get("/agenda", headers=headers).json() == []
    # the FT convocation is cancelled by the person: the case is held for an agent
    assert _post_event(client, {"type": "rdv_cancelled", "external_id": FT_PERSON}).status_code == 201
    [item] = client.get("/agenda", headers=headers).json()
    assert (item["section"], item["external_id"], item["step"]) == ("held", FT_PERSON, "ft_convocation")
    assert "convocation annulée" in item["todo"] and item["since"] == "2024-06-03"
    assert client.get("/agenda", params={"org": item["organisation"]}, headers=headers).json() == [item]
    assert client.get("/agenda", params={"org": "CDAS-REDON"}, headers=headers).json() == []
    r = client.get("/agenda", params={"org": "NULLE-PART"}, headers=headers)
    assert r.status_code == 404 and r.json()["detail"] == "organisation inconnue : NULLE-PART"
