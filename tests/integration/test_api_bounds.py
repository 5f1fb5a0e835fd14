"""The API's bounds (issue 11, "API dates", "Unbounded bodies"): every date and id bounded
(422 in French, never 500, never a case blocked for ever), request bodies capped (413),
failed authentications throttled per client address (429) and logged without secrets,
the OpenAPI schema behind the key, an access log and a start-up line.

Runs on SQLite and PostgreSQL (``env`` from test_api: the sample people, the API's clock
at 3 June 2024, 10:05 Paris)."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging

import pytest
from fastapi.testclient import TestClient

from tests.integration.test_api import (_events, api_env, API_KEY, CD_PERSON, _callback, _form, _post_event, _sent_sms,
                                        _settings)
from worker.adapters.store import session as db_session
from worker.bootstrap import build_app
from worker.entrypoints.api import create_app
from worker.entrypoints.api_guard import AuthThrottle, BodyLimit

FAR_DATES = ("0001-01-01", "0001-01-01T00:00:00", "1899-12-31", "9999-12-31", "9999-12-31T23:59:59",
             "9999-12-31T23:59:59+14:00", "2200-01-01")


@pytest.fixture
def env(db_url, tmp_path):
    """As in test_api: the two sample people ingested and invited; the API's clock at 10:05 Paris."""
    with api_env(db_url, tmp_path) as e:
        yield e


@pytest.mark.parametrize("value", FAR_DATES)
def test_far_dates_are_422_in_french_on_every_date_field(env, value):
    app, client, _ = env
    bodies = [
        ("at", {"type": "npai", "external_id": CD_PERSON, "at": value}),
        ("until", {"type": "legitimate_reason", "external_id": CD_PERSON, "until": value,
                   "category": "health", "reason": "x"}),
        ("appointment_at", {"type": "rdv_booked", "external_id": CD_PERSON, "appointment_at": value}),
        ("receipt_on", {"type": "ar_signed", "external_id": CD_PERSON, "receipt_on": value[:10]}),
        ("start_on", {"type": "sanction_decided", "external_id": CD_PERSON, "rate": 30, "months": 1,
                      "start_on": value[:10]}),
    ]
    for field, body in bodies:
        r = _post_event(client, body)
        assert r.status_code == 422, (field, value, r.status_code, r.text)
        payload = r.json()
        assert payload["detail"].startswith("requête invalide — "), payload
        assert any(e["field"] == field and ("date" in e["message"] or "futur" in e["message"])
                   for e in payload["errors"]), (field, payload)
    assert _events(app) == 0


def test_dates_inside_the_bounds_are_accepted(env):
    app, client, clock = env
    in_a_year = (clock.now + dt.timedelta(days=365)).date().isoformat()
    r = _post_event(client, {"type": "rdv_booked", "external_id": CD_PERSON, "appointment_at": f"{in_a_year}T10:00"})
    assert r.status_code == 201, r.text
    too_far = (clock.now + dt.timedelta(days=800)).date().isoformat()
    r = _post_event(client, {"type": "rdv_booked", "external_id": CD_PERSON, "appointment_at": f"{too_far}T10:00"})
    assert r.status_code == 422 and "trop lointaine" in r.text


def test_control_characters_are_refused(env):
    app, client, _ = env
    for body in ({"type": "npai", "external_id": "CAF35\x00-1"},
                 {"type": "npai", "external_id": CD_PERSON, "idempotency_key": "k\x00"},
                 {"type": "npai", "external_id": "CAF35\u202e-1"}):
        r = _post_event(client, body)
        assert r.status_code == 422, r.text
        assert "contrôle" in r.text
    assert _events(app) == 0


@pytest.mark.parametrize("message_id", ["1" * 30, "9223372036854775808", "0"])
def test_signed_callback_with_an_id_out_of_bounds_is_422(env, message_id):
    app, client, _ = env
    r = _callback(client, message_id, _form("SM" + "f" * 32, "delivered"))
    assert r.status_code == 422, r.text
    assert "identifiant" in r.json()["detail"]


def test_signed_callback_with_the_largest_bigint_is_acknowledged(env):
    _, client, _ = env
    r = _callback(client, str(2 ** 63 - 1), _form("SM" + "f" * 32, "delivered"))
    assert r.status_code == 204


# --- bodies ------------------------------------------------------------------------------------------


def test_a_large_body_is_refused_before_the_signature_check(env, caplog):
    app, client, _ = env
    limit = app.settings.api_max_body_bytes
    caplog.set_level(logging.WARNING, logger="relance.api")
    r = client.post("/twilio/status/1", content=b"a=" + b"x" * (limit + 10),
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413
    assert r.json()["detail"] == "corps de requête trop volumineux"
    r = _post_event(client, b'{"type": "npai", "external_id": "' + b"x" * (limit + 10) + b'"}')
    assert r.status_code == 413
    assert any("request body refused" in rec.getMessage() for rec in caplog.records)


def test_a_chunked_body_is_cut_at_the_limit():
    """Without Content-Length, reading stops at the limit: the app never holds more."""
    chunks_read = 0
    chunk = b"x" * 1000

    async def app(scope, receive, send):
        while True:
            message = await receive()
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        nonlocal chunks_read
        chunks_read += 1
        return {"type": "http.request", "body": chunk, "more_body": chunks_read < 300_000}  # ~300 MB

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/twilio/status/1", "headers": []}
    asyncio.run(BodyLimit(app, max_bytes=65536)(scope, receive, send))
    assert sent[0]["status"] == 413
    assert chunks_read <= 66  # 64 KiB and one chunk, not 300 MB


# --- failed authentications ----------------------------------------------------------------------------


def test_failed_api_keys_are_throttled_and_logged_without_the_key(env, caplog):
    app, client, _ = env
    caplog.set_level(logging.WARNING, logger="relance.api")
    limit = app.settings.api_auth_failures_per_minute
    body = {"type": "npai", "external_id": CD_PERSON}
    for i in range(limit):
        assert _post_event(client, body, key=f"essai-{i}-secret").status_code == 401
    r = _post_event(client, body)  # even the right key: the address is throttled for a minute
    assert r.status_code == 429 and r.headers["Retry-After"] == "60"
    assert "réessayez" in r.json()["detail"]
    assert client.get("/agenda", headers={"X-Api-Key": API_KEY}).status_code == 429
    lines = [rec.getMessage() for rec in caplog.records if "authentication failed" in rec.getMessage()]
    assert len(lines) == limit
    assert all("testclient" in line and "secret" not in line and CD_PERSON not in line for line in lines)


def test_bad_twilio_signatures_count_as_failed_authentications(env):
    app, client, _ = env
    message_id, sid = _sent_sms(app, CD_PERSON)
    for _ in range(app.settings.api_auth_failures_per_minute):
        assert _callback(client, message_id, _form(sid, "delivered"), signature="bad").status_code == 403
    assert _callback(client, message_id, _form(sid, "delivered")).status_code == 429


def test_the_throttle_forgets_after_a_minute():
    now = [1000.0]
    throttle = AuthThrottle(3, clock=lambda: now[0])
    for _ in range(3):
        assert not throttle.blocked("10.0.0.1")
        throttle.failed("10.0.0.1", "wrong API key", "/events")
    assert throttle.blocked("10.0.0.1") and not throttle.blocked("10.0.0.2")
    now[0] += 61
    assert not throttle.blocked("10.0.0.1")
    for i in range(AuthThrottle.MAX_ADDRESSES + 5):  # memory stays bounded
        throttle.failed(f"addr-{i}", "wrong API key", "/events")
    assert len(throttle._failures) <= AuthThrottle.MAX_ADDRESSES


# --- the schema, the access log, the start-up line -------------------------------------------------------


def test_openapi_is_behind_the_key_and_there_are_no_docs(env):
    _, client, _ = env
    assert client.get("/openapi.json").status_code == 401
    r = client.get("/openapi.json", headers={"X-Api-Key": API_KEY})
    assert r.status_code == 200
    schema = r.json()
    assert "/events" in schema["paths"] and "/openapi.json" not in schema["paths"]
    assert "requestBody" in schema["paths"]["/events"]["post"]
    for path in ("/docs", "/redoc"):
        assert client.get(path).status_code == 404


def test_access_log_and_start_up_line(db_url, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    settings = _settings(tmp_path, db_url.replace("postgres@", "postgres:motdepasse@") if "postgres@" in db_url
                         else db_url)
    app = build_app(settings)
    db_session.upgrade(db_url)
    try:
        with TestClient(create_app(app)) as client:
            assert client.get("/health?x=CAF35-0003000").status_code == 200
    finally:
        db_session.get_engine(db_url).dispose()
        db_session.dispose_all()
    messages = [rec.getMessage() for rec in caplog.records]
    start = [m for m in messages if "api started" in m]
    assert start and "database " in start[0] and "time zone Europe/Paris (UTC+" in start[0]
    assert "motdepasse" not in " ".join(messages)
    access = [m for m in messages if m.startswith("GET /health 200")]
    assert access and "CAF35" not in access[0]
