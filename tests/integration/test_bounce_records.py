"""bounces.record_email_bounce on SQLite and PostgreSQL: which message, which
status, and a crash between marking the message and flagging the address."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import select, update

from worker.entrypoints import jobs

from worker.services import bounces, ingest
from worker.adapters.store.models import Case, Message, Person
from worker.adapters.store.session import session_scope

PARIS = ZoneInfo("Europe/Paris")
NOW = dt.datetime(2024, 6, 3, 10, 0, tzinfo=PARIS)
EID = "CAF35-0009501"


def _invited(app, flux_writer) -> Message:
    path = flux_writer([{"external_id": EID, "droit_opened_on": "2024-05-27", "email": "ines.roux@example.net"}])
    ingest.ingest_file(app, path, NOW - dt.timedelta(hours=2))
    jobs.cycle(app, NOW)
    with session_scope(app.db_url) as s:
        return s.execute(select(Message).where(Message.channel == "email")).scalar_one()


def _state(app, message_id: int) -> tuple[str, str, bool]:
    with session_scope(app.db_url) as s:
        msg = s.get(Message, message_id)
        case = s.get(Case, msg.case_id)
        return msg.status, s.get(Person, case.person_id).email_status, case.email_unusable


def test_a_bounce_finds_the_message_by_reference_or_by_message_id(relance_app, flux_writer):
    email = _invited(relance_app, flux_writer)
    later = NOW + dt.timedelta(hours=1)
    assert bounces.record_email_bounce(relance_app, reference="RL-999999-9999999", message_id=None,
                                        status="5.1.1", now=later) == "unknown"
    # a reference whose case does not match its message is not trusted
    wrong_case = f"RL-{email.case_id + 1:06d}-{email.id:07d}"
    assert bounces.record_email_bounce(relance_app, reference=wrong_case, message_id=None,
                                        status="5.1.1", now=later) == "unknown"
    assert bounces.record_email_bounce(relance_app, reference=None, message_id=email.provider_ref,
                                        status="5.1.1", now=later) == "applied"
    assert _state(relance_app, email.id) == ("failed", "failed", True)


def test_a_bounce_for_a_technical_failure_proves_it_left(relance_app, flux_writer):
    email = _invited(relance_app, flux_writer)
    with session_scope(relance_app.db_url) as s:  # as a read timeout after the request left would leave it
        s.execute(update(Message).where(Message.id == email.id).values(status="technical-failure"))
    assert bounces.record_email_bounce(relance_app, reference=email.reference, message_id=None,
                                        status="5.2.1", now=NOW + dt.timedelta(hours=1)) == "applied"
    assert _state(relance_app, email.id) == ("failed", "failed", True)


def test_a_crash_between_the_message_and_the_address_is_finished_by_the_next_scan(relance_app, flux_writer):
    email = _invited(relance_app, flux_writer)
    with session_scope(relance_app.db_url) as s:  # the message was marked, then the worker died
        s.execute(update(Message).where(Message.id == email.id).values(status="failed"))
    assert _state(relance_app, email.id) == ("failed", "ok", False)
    assert bounces.record_email_bounce(relance_app, reference=email.reference, message_id=None,
                                        status="5.1.1", now=NOW + dt.timedelta(hours=1)) == "duplicate"
    assert _state(relance_app, email.id) == ("failed", "failed", True)
    # and once done, again changes nothing
    assert bounces.record_email_bounce(relance_app, reference=email.reference, message_id=None,
                                        status="5.1.1", now=NOW + dt.timedelta(hours=2)) == "duplicate"


# --- forged notices (issue 11): only a notice that gives back the e-mail's token is applied -----------------


def _notice(app, msg: Message, *, token: str | None = "good", headers: bool = True,
            envelope_sender: str | None = None) -> bytes:
    from email.message import EmailMessage

    from tests.fakes.dsn import postfix_dsn
    from worker.adapters.dsn import bounce_token

    original = EmailMessage()
    original["From"] = "relance@example.org"
    original["To"] = "ines.roux@example.net"
    original["Subject"] = "Votre RSA"
    original["Message-ID"] = "<forged-or-not@example.org>"
    if headers:
        original["X-Relance-Reference"] = msg.reference
        if token == "good":
            original["X-Relance-Token"] = bounce_token(app.settings.bounce_token_key, msg.reference)
        elif token is not None:
            original["X-Relance-Token"] = token
    original.set_content("Bonjour")
    return postfix_dsn(original.as_bytes(), "ines.roux@example.net", envelope_sender=envelope_sender)


def test_a_forged_notice_with_a_guessable_reference_changes_nothing(relance_app, flux_writer):
    from worker.adapters.dsn import bounce_token

    email = _invited(relance_app, flux_writer)
    with session_scope(relance_app.db_url) as s:  # the Message-ID alone is not enough either
        s.execute(update(Message).where(Message.id == email.id).values(provider_ref="<forged-or-not@example.org>"))
    forged = [
        _notice(relance_app, email, token=None),  # the reference alone (RL-000001-0000003 is guessable)
        _notice(relance_app, email, token="0" * 32),
        _notice(relance_app, email, token=bounce_token(relance_app.settings.bounce_token_key, "RL-999999-9999999")),
        _notice(relance_app, email, token=bounce_token(b"not the key" * 3, email.reference)),
        _notice(relance_app, email, headers=False),  # the Message-ID alone
    ]
    for raw in forged:
        outcome, reason = bounces.record_file(relance_app, raw, NOW + dt.timedelta(hours=1))
        assert outcome == "rejected" and "jeton" in reason
    assert _state(relance_app, email.id) == ("sent", "ok", False)

    genuine = _notice(relance_app, email)
    assert bounces.record_file(relance_app, genuine, NOW + dt.timedelta(hours=1))[0] == "applied"
    assert _state(relance_app, email.id) == ("failed", "failed", True)


def test_a_notice_sent_back_to_the_verp_address_carries_the_token(relance_app, flux_writer):
    from worker.adapters.dsn import bounce_token, verp_address

    email = _invited(relance_app, flux_writer)
    token = bounce_token(relance_app.settings.bounce_token_key, email.reference)
    verp = verp_address("relance@example.org", email.reference, token)
    # the relay returned the headers without our own (some strip X- headers): the envelope is enough
    raw = _notice(relance_app, email, headers=False, envelope_sender=verp)
    assert bounces.record_file(relance_app, raw, NOW + dt.timedelta(hours=1))[0] == "applied"
    assert _state(relance_app, email.id) == ("failed", "failed", True)
    # a VERP address with a wrong token is a forgery
    bad = _notice(relance_app, email, headers=False, envelope_sender=verp.replace(token, "f" * 32))
    assert bounces.record_file(relance_app, bad, NOW + dt.timedelta(hours=2))[0] == "rejected"
