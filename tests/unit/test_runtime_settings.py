"""Settings checked at start-up (one French line naming the variable), Celery's timing, the tasks'
argument checks, Flower read-only, the scheduler's heartbeat (issue 11, "Runtime and operations")."""
from __future__ import annotations

import datetime as dt
import logging
import re

import pytest

from worker.settings import Settings, SettingsError, load_settings, redact_url

UTC = dt.timezone.utc


# --- settings ----------------------------------------------------------------------------------------------

BAD = [
    ({"database_url": "postgres://relance:secret@db/relance"}, "RELANCE_DATABASE_URL", "postgresql+psycopg"),
    ({"database_url": "mysql://relance@db/relance"}, "RELANCE_DATABASE_URL", "non prise en charge"),
    ({"database_url": "not a url at all"}, "RELANCE_DATABASE_URL", "illisible"),
    ({"broker_url": "amqp://guest@rabbit//"}, "RELANCE_BROKER_URL", "redis://"),
    ({"timezone": "Europe/Pariss"}, "RELANCE_TIMEZONE", "fuseau horaire inconnu"),
    ({"sms_window_start": "9h"}, "RELANCE_SMS_WINDOW_START", "HH:MM"),
    ({"sms_window_end": "25:00"}, "RELANCE_SMS_WINDOW_END", "HH:MM"),
    ({"sms_window_start": "19:00", "sms_window_end": "09:00"}, "RELANCE_SMS_WINDOW_START", "précéder"),
    ({"digest_time": "8h"}, "RELANCE_DIGEST_TIME", "HH:MM"),
    ({"print_batch_time": "seize heures"}, "RELANCE_PRINT_BATCH_TIME", "HH:MM"),
    ({"sms_backend": "ovh"}, "RELANCE_SMS_BACKEND", "'local' ou 'twilio'"),
    ({"email_backend": "sendmail"}, "RELANCE_EMAIL_BACKEND", "'local' ou 'smtp'"),
    ({"letter_backend": "fax"}, "RELANCE_LETTER_BACKEND", "'local' ou 'pdf'"),
    ({"smtp_security": "tls"}, "RELANCE_SMTP_SECURITY", "starttls"),
    ({"api_port": "http"}, "RELANCE_API_PORT", "nombre entier"),
    ({"smtp_port": "70000"}, "RELANCE_SMTP_PORT", "65535"),
    ({"relay_batch_size": "0"}, "RELANCE_RELAY_BATCH_SIZE", "positif"),
    ({"log_level": "verbose"}, "RELANCE_LOG_LEVEL", "DEBUG"),
    ({"task_time_limit": "4000"}, "RELANCE_BROKER_VISIBILITY_TIMEOUT", "dépasser"),
    ({"public_base_url": "relance.example.org"}, "RELANCE_PUBLIC_BASE_URL", "http"),
]


@pytest.mark.parametrize("env,variable,words", BAD, ids=[b[1] + ":" + str(list(b[0].values())[0]) for b in BAD])
def test_a_bad_setting_is_one_french_line_naming_the_variable(monkeypatch, env, variable, words):
    for key, value in env.items():
        monkeypatch.setenv(f"RELANCE_{key.upper()}", value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith(f"{variable} : "), message
    assert words in message and "\n" not in message
    assert "secret" not in message  # a URL's password is never repeated


def test_good_settings_load(monkeypatch):
    monkeypatch.setenv("RELANCE_DATABASE_URL", "postgresql+psycopg://relance:pw@db:5432/relance")
    monkeypatch.setenv("RELANCE_SMS_WINDOW_START", "9:00")
    settings = load_settings()
    assert settings.sms_window_start == "09:00" and settings.log_level == "INFO"


def test_urls_are_redacted_for_logs():
    assert redact_url("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact_url("postgresql+psycopg://relance:pw@db:5432/relance") == "postgresql+psycopg://relance:***@db:5432/relance"
    assert redact_url("sqlite:////var/lib/relance/relance.db") == "sqlite:////var/lib/relance/relance.db"


# --- Celery: a time limit on every task, the visibility timeout above the longest one, no countdown ----------


def test_every_task_has_time_limits_below_the_visibility_timeout():
    from worker.entrypoints.celery_app import celery, configure

    configure(Settings(broker_url="memory://"))
    celery.loader.import_default_modules()
    tasks = {name: task for name, task in celery.tasks.items() if name.startswith("relance.")}
    assert len(tasks) >= 10
    conf = celery.conf
    visibility = conf.broker_transport_options["visibility_timeout"]
    for name, task in tasks.items():
        hard = task.time_limit or conf.task_time_limit
        soft = task.soft_time_limit or conf.task_soft_time_limit
        assert hard and soft and soft < hard < visibility, (name, soft, hard, visibility)


def test_no_task_is_published_with_a_countdown_or_an_eta():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "worker"
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\b(countdown|eta)\s*=", text), f"{path}: the database holds time, not the broker"


# --- the tasks check their arguments ---------------------------------------------------------------------------


def test_task_ids_and_simulated_time_are_checked():
    from worker.entrypoints.tasks._common import parse_now
    from worker.entrypoints.validation import InputError, parse_id

    for bad in ("1" * 30, 2 ** 63, 0, -3, "abc", True, None, 1.5):
        with pytest.raises(InputError):
            parse_id(bad, "message_id")
    assert parse_id("42") == 42 and parse_id(2 ** 63 - 1) == 2 ** 63 - 1
    real = Settings(broker_url="redis://redis:6379/0", sms_backend="twilio", twilio_account_sid="AC" + "0" * 32,
                    twilio_auth_token="x", public_base_url="https://x.example", twilio_sender_id="CD35")
    with pytest.raises(InputError, match="--now"):
        parse_now("2024-06-03T10:00:00+00:00", real)  # a real provider would act on a simulated day
    fake = Settings(broker_url="redis://redis:6379/0", sms_backend="twilio", twilio_api_base_url="http://127.0.0.1:9")
    assert parse_now("2024-06-03T10:00:00+00:00", fake).year == 2024  # tests: a fake Twilio
    for bad in ("0001-01-01T00:00:00", "9999-12-31T00:00:00", "demain", 12):
        with pytest.raises(InputError):
            parse_now(bad, fake)
    assert parse_now(None, real).tzinfo is not None


def test_apply_event_task_refuses_what_the_api_refuses(relance_app):
    from worker.entrypoints.tasks import cases as case_tasks
    from worker.entrypoints.validation import InputError

    bad = [
        {"until": "9999-12-31", "category": "health"},  # legitimate_reason for ever
        {"until": "0001-01-01", "category": "health"},
        {"bogus": 1, "category": "health", "until": "2024-07-01"},  # a field the API does not know
        {"source": "flower", "category": "health", "until": "2024-07-01"},
    ]
    for fields in bad:
        with pytest.raises(InputError):
            case_tasks.apply_event.run("CAF35-0000001", "legitimate_reason", **fields)
    with pytest.raises(InputError):
        case_tasks.apply_event.run("CAF35\x00", "npai")
    with pytest.raises(InputError):
        case_tasks.advance.run("1" * 30)


def test_ingest_task_reads_only_the_inbox(relance_app, tmp_path):
    from worker.entrypoints.tasks.ingest import ingest_file
    from worker.entrypoints.validation import InputError

    outside = tmp_path / "elsewhere.csv"
    outside.write_text("external_id\n", encoding="utf-8")
    for path in (str(outside), "/etc/passwd", "../elsewhere.csv", ""):
        with pytest.raises(InputError, match="boîte de dépôt|chemin"):
            ingest_file.run(path)


# --- Flower launches nothing -------------------------------------------------------------------------------------


def test_flower_has_no_write_route_left():
    from flower import urls

    from worker.entrypoints.flower_readonly import WRITE_ROUTES, make_read_only

    make_read_only()
    patterns = [getattr(h, "regex", None).pattern if hasattr(h, "regex") else h[0] for h in urls.handlers]
    assert not [p for p in patterns if p.startswith(WRITE_ROUTES)]
    assert "/api/task/async-apply/(.+)" not in patterns and "/api/workers" in patterns and "/healthcheck" in patterns


# --- the scheduler: one line per cycle, a heartbeat, `relance scheduler --check` ---------------------------------


def test_scheduler_cycle_line_and_heartbeat(relance_app, caplog):
    from worker.entrypoints.scheduler import LeaderScheduler, check_heartbeat, heartbeat_path, write_heartbeat

    caplog.set_level(logging.INFO, logger="relance")
    with pytest.raises(ValueError, match="aucun battement"):
        check_heartbeat(relance_app)
    sched = LeaderScheduler(relance_app, interval_seconds=60)
    counts = sched.cycle()
    assert set(counts) == {"inbox", "bounces", "swept", "relayed"}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cycle: ")]
    assert lines and re.match(r"cycle: inbox 0, bounces 0, swept 0, relayed 0 in [0-9.]+ s", lines[0]), lines
    assert "actif" in check_heartbeat(relance_app)
    assert heartbeat_path(relance_app).exists()
    stale = dt.datetime.now(UTC) - dt.timedelta(minutes=10)
    write_heartbeat(relance_app, sched.owner, leader=True, interval=60, now=stale)
    with pytest.raises(ValueError, match="figé"):
        check_heartbeat(relance_app)


def test_the_twilio_token_is_needed_only_where_sms_are_sent(tmp_path):
    from worker.bootstrap import build_app, require_channel_secrets
    from worker.domain.policy import ConfigError

    settings = Settings(data_dir=tmp_path, sms_backend="twilio", twilio_account_sid="AC" + "0" * 32,
                        twilio_sender_id="CDREDON", public_base_url="https://relance.example.org")
    app = build_app(settings)  # a cases worker, the scheduler, Flower: no token given, none needed
    require_channel_secrets(app, "cases")
    with pytest.raises(ConfigError, match="RELANCE_TWILIO_AUTH_TOKEN"):
        require_channel_secrets(app, "sms,letters,email")
    with pytest.raises(ConfigError, match="RELANCE_TWILIO_SENDER_ID|sender"):
        build_app(Settings(data_dir=tmp_path, sms_backend="twilio", twilio_account_sid="AC" + "0" * 32,
                           twilio_sender_id="not valid!", public_base_url="https://relance.example.org"))
