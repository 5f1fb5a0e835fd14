"""The agents' daily digest (worker.services.digests) through the real SMTP channel, to a
local aiosmtpd server, on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from tests.conftest import make_nir
from tests.fakes.smtp_server import FakeSmtpServer
from worker.entrypoints import jobs
from worker.services import ingest
from worker.bootstrap import build_app
from worker.adapters.store.models import AuditEntry
from worker.adapters.store.session import session_scope
from worker.services.digests import send_due

PARIS = ZoneInfo("Europe/Paris")
EID = "CAF35-0009801"
RECIPIENT = "conseillers-rsa.ft-redon@example.org"  # FT-REDON's digest_recipients (config/territory.yaml)


def local(y, m, d, hh=10, mm=0) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=PARIS)


@pytest.fixture
def smtp():
    server = FakeSmtpServer(mode="plain").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def waiting(relance_app, flux_writer):
    """A person not registered with France Travail, whose phone follow-up (a task) is due since 18 June."""
    path = flux_writer([{"external_id": EID, "nir": make_nir(9801), "orientation": "ft",
                         "ft_registered": "false", "organisation": "FT-REDON"}])
    ingest.ingest_file(relance_app, path, local(2024, 6, 3, 8))
    jobs.cycle(relance_app, local(2024, 6, 3, 10))
    jobs.cycle(relance_app, local(2024, 6, 18, 10))
    return relance_app


def _smtp_app(app, smtp):
    return build_app(app.settings.model_copy(update={
        "email_backend": "smtp", "smtp_host": smtp.host, "smtp_port": smtp.port, "smtp_security": "none",
        "smtp_from_address": "relance@cd35.example.org", "smtp_timeout": 5.0}))


def test_one_digest_per_organisation_and_working_day_by_smtp(waiting, smtp):
    app = _smtp_app(waiting, smtp)
    assert send_due(app, local(2024, 6, 19, 7, 59)) == []  # before RELANCE_DIGEST_TIME
    [result] = send_due(app, local(2024, 6, 19, 8, 0))
    assert (result.organisation, result.cases, result.status) == ("FT-REDON", 1, "sent")
    # the others had nothing waiting: a marker only, so that later runs compute nothing for them today
    day_dir = result.path.parent
    assert (day_dir / "CDAS-REDON.done").exists() and not (day_dir / "CDAS-REDON.txt").exists()
    [mail] = smtp.messages
    assert mail.rcpt_tos == [RECIPIENT]
    assert mail.message["Subject"] == "Relance RSA - France Travail Redon : 1 dossier à traiter le mercredi 19/06/2024"
    text = mail.message.get_body(("plain",)).get_content()
    html = mail.message.get_body(("html",)).get_content()
    for body in (text, html):
        assert EID in body and "Tâches (1)" in body and "relance event" not in body and "appel de suivi" in body
        assert "Testeur" not in body and "Alix" not in body  # no name
    assert result.path.read_text(encoding="utf-8").strip() == text.strip().replace("\r\n", "\n")
    assert result.path.with_suffix(".sent").read_text(encoding="utf-8").split() == [RECIPIENT]

    # later that day, or from another scheduler: nothing more
    assert [r.status for r in send_due(app, local(2024, 6, 19, 16))] == ["already"]
    assert len(smtp.messages) == 1
    with session_scope(app.db_url) as s:
        entries = [e.data for e in s.execute(select(AuditEntry).where(AuditEntry.kind == "digest")).scalars()]
    # the fixture's scheduler cycle of 18 June wrote that day's digest (local backend); today's was e-mailed
    assert entries == [{"organisation": "FT-REDON", "day": "2024-06-18", "cases": 1, "status": "written"},
                       {"organisation": "FT-REDON", "day": "2024-06-19", "cases": 1, "status": "sent"}]


def test_a_temporary_smtp_failure_is_retried_at_the_next_run(waiting, smtp):
    app = _smtp_app(waiting, smtp)
    smtp.defer(RECIPIENT)
    [first] = send_due(app, local(2024, 6, 19, 8, 5))
    assert first.status == "retry" and not first.path.exists()  # the claim is released
    smtp.reset()
    [second] = send_due(app, local(2024, 6, 19, 8, 10))
    assert second.status == "sent" and len(smtp.messages) == 1


def test_a_refused_recipient_is_recorded_for_ops(waiting, smtp):
    app = _smtp_app(waiting, smtp)
    smtp.refuse(RECIPIENT)
    [result] = send_due(app, local(2024, 6, 19, 8, 5))
    assert result.status == "failed"
    assert "550" in result.path.with_suffix(".error").read_text(encoding="utf-8")
    assert [r.status for r in send_due(app, local(2024, 6, 19, 9))] == ["already"]  # not resent blindly


def test_no_digest_on_a_day_off_nor_for_an_organisation_with_nothing_waiting(waiting):
    assert send_due(waiting, local(2024, 6, 22, 9)) == []  # Saturday
    assert send_due(waiting, local(2024, 6, 22, 9), force=True)[0].organisation == "FT-REDON"
    results = send_due(waiting, local(2024, 6, 20, 9))  # local backend: written, not e-mailed
    assert [(r.organisation, r.status) for r in results] == [("FT-REDON", "written")]
    assert (results[0].path.parent.name, results[0].path.name) == ("2024-06-20", "FT-REDON.txt")
    assert results[0].path.with_suffix(".html").exists()


def test_a_digest_claimed_by_a_process_that_died_is_sent_by_the_next_run(waiting, smtp):
    import os

    app = _smtp_app(waiting, smtp)
    path = app.settings.digests / "2024-06-19" / "FT-REDON.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("Bonjour,\nle bulletin écrit avant l'arrêt.\n", encoding="utf-8")  # claimed, never sent
    assert [r.status for r in send_due(app, local(2024, 6, 19, 8, 5))] == ["already"]  # maybe still sending
    old = path.stat().st_mtime - 11 * 60
    os.utime(path, (old, old))  # 11 minutes later, still no .done: the sender died
    [result] = send_due(app, local(2024, 6, 19, 8, 16))
    assert result.status == "sent" and path.with_suffix(".done").exists()
    [mail] = smtp.messages
    assert "le bulletin écrit avant l'arrêt." in mail.message.get_body(("plain",)).get_content()
    assert [r.status for r in send_due(app, local(2024, 6, 19, 9))] == ["already"]
    assert len(smtp.messages) == 1
