"""Standing check (issue 11): the API fuzzed from its own OpenAPI schema (GET /openapi.json, behind
the key) with schemathesis — never a 500. Bounded: 100 examples per operation (derandomized), SQLite,
well under a minute."""
from __future__ import annotations

import datetime as dt

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from twilio.request_validator import RequestValidator

from tests.integration.test_api import API_KEY, NOW, PUBLIC, TOKEN, Clock, _settings, _small_flux
from worker.adapters.store import session as db_session
from worker.bootstrap import build_app, set_app
from worker.entrypoints import jobs
from worker.entrypoints.api import create_app
from worker.entrypoints.celery_app import configure
from worker.services import ingest


@pytest.fixture
def api_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'relance.db'}"
    conf = _settings(tmp_path, url, api_auth_failures_per_minute=1_000_000)
    app = build_app(conf)
    configure(conf)
    db_session.upgrade(url)
    set_app(app)
    try:
        ingest.ingest_file(app, _small_flux(tmp_path), NOW)
        jobs.cycle(app, NOW)
        api = create_app(app, clock=Clock(NOW + dt.timedelta(minutes=5)))
        yield schemathesis.openapi.from_asgi("/openapi.json", api, headers={"X-Api-Key": API_KEY})
    finally:
        set_app(None)
        db_session.get_engine(url).dispose()
        db_session.dispose_all()


def test_the_api_never_answers_500(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /events", "POST /twilio/status/{message_id}", "GET /agenda", "GET /health", "GET /ready"}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=100, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        def fuzz(case):
            headers = {"X-Api-Key": API_KEY}
            if case.path.startswith("/twilio/") and isinstance(case.body, dict):
                # Signed like Twilio would: the fuzzed callbacks get past the signature check.
                form = {str(k): str(v) for k, v in case.body.items()}
                headers["X-Twilio-Signature"] = RequestValidator(TOKEN).compute_signature(
                    PUBLIC + case.formatted_path, form)
            response = case.call(headers=headers)
            assert response.status_code < 500, (case.method, case.path, case.path_parameters, case.body,
                                                response.status_code, response.text[:300])

        fuzz()
