"""The real channels, end to end: Twilio (the official client against the fake
Twilio server) and SMTP (a local aiosmtpd server), with the status callbacks
signed by the fake and received by a REAL uvicorn server running
``worker.entrypoints.api.create_app`` in a background thread.

    flux file -> ingest -> jobs.cycle(app, now) -> Celery tasks (eager) -> Twilio / SMTP / letters
                                                   fake Twilio -> signed callbacks -> uvicorn -> services

Simulated time: ``now`` is passed to the service layer explicitly (the
``tick --now`` CLI flag is refused with real channels); the API's clock is
set to the same ``now`` so the callbacks it records are dated consistently.

The "done when" test runs on SQLite and PostgreSQL; the error classes on
SQLite only.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import select

from tests.fakes.fake_twilio import FakeTwilio
from tests.fakes.dsn import postfix_dsn
from tests.fakes.smtp_server import FakeSmtpServer
from worker.adapters.store import audit
from worker.entrypoints import jobs
from worker.services import bounces, cases, ingest, sending, timeline
from worker.entrypoints.api import create_app
from worker.bootstrap import build_app, set_app
from worker.entrypoints.celery_app import configure
from worker.adapters.store import session as db_session
from worker.adapters.store.models import AuditEntry, Case, Message, Person
from worker.adapters.store.session import session_scope
from worker.settings import PROJECT_ROOT, Settings

UTC = dt.timezone.utc
SAMPLE = PROJECT_ROOT / "samples" / "flux_2024-05_with_errors.csv"
NOW = dt.datetime(2024, 6, 3, 8, 0, tzinfo=UTC)  # Monday 3 June 2024, 10:00 in Paris: a working morning
SENDER_ID = "RSA35"

CD_PERSON = "CAF35-0003000"  # CD path, letter + SMS (no e-mail)
CD_WITH_EMAIL = "CAF35-0003003"  # CD path, letter + SMS + e-mail


class Clock:
    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class ApiServer:
    """uvicorn serving an ASGI app on a socket bound beforehand (so its URL is
    known before the app, whose settings need it, is built)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def start(self, asgi_app) -> None:
        config = uvicorn.Config(asgi_app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="relance-api", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
        self.sock.close()


@dataclass
class World:
    app: object
    fake: FakeTwilio
    smtp: FakeSmtpServer
    clock: Clock
    api_url: str

    def cycle(self, now: dt.datetime) -> dict:
        """One scheduler tick at ``now``, then wait until every callback was answered."""
        self.clock.now = now
        result = jobs.cycle(self.app, now)
        self.fake.wait_idle(timeout=30)
        return result

    def person(self, external_id: str) -> Person:
        with session_scope(self.app.db_url) as s:
            return s.execute(select(Person).where(Person.external_id == external_id)).scalar_one()

    def case(self, external_id: str) -> Case:
        with session_scope(self.app.db_url) as s:
            return s.execute(select(Case).join(Person).where(Person.external_id == external_id)
                             .order_by(Case.id.desc()).limit(1)).scalar_one()

    def messages(self, external_id: str | None = None, channel: str | None = None,
                 step: str | None = None) -> list[Message]:
        with session_scope(self.app.db_url) as s:
            q = select(Message).join(Case, Case.id == Message.case_id).order_by(Message.id)
            if external_id:
                q = q.join(Person, Person.id == Case.person_id).where(Person.external_id == external_id)
            if channel:
                q = q.where(Message.channel == channel)
            if step:
                q = q.where(Message.step == step)
            return list(s.execute(q).scalars())

    def message(self, message_id: int) -> Message:
        with session_scope(self.app.db_url) as s:
            return s.get(Message, message_id)

    def requests_to(self, phone: str) -> list:
        return [r for r in self.fake.requests if r.method == "POST" and r.to == phone]

    def sms_events(self, external_id: str) -> list[tuple[str, str]]:
        return [(i["type"], i["status"]) for i in timeline.timeline(self.app, external_id) if i["kind"] == "event"]

    def assert_each_sms_sent_once(self) -> None:
        """The fake accepted exactly one request per SMS message id (never twice), and
        every SMS recorded as handed over is one the fake accepted, under its SID."""
        accepted = Counter(int(m.status_callback.rsplit("/", 1)[1]) for m in self.fake.messages)
        assert accepted and max(accepted.values()) == 1, accepted
        assert all(m.status_callback.startswith(self.api_url + "/twilio/status/") for m in self.fake.messages)
        sids = {int(m.status_callback.rsplit("/", 1)[1]): m.sid for m in self.fake.messages}
        handed_over = {m.id: m.provider_ref for m in self.messages(channel="sms") if m.provider_ref}
        assert handed_over == sids
        accepted_requests = [r for r in self.fake.requests if r.method == "POST" and r.status == 201]
        assert len(accepted_requests) == len(self.fake.messages)


@contextlib.contextmanager
def running_world(db_url: str, tmp_path: Path):
    api = ApiServer()
    fake = FakeTwilio().start()
    smtp = FakeSmtpServer(mode="plain").start()
    settings = Settings(
        data_dir=tmp_path / "var", database_url=db_url, broker_url="memory://",
        sms_backend="twilio", twilio_account_sid=fake.account_sid, twilio_auth_token=fake.auth_token,
        twilio_sender_id=SENDER_ID, twilio_api_base_url=fake.url, public_base_url=api.url,
        email_backend="smtp", smtp_host=smtp.host, smtp_port=smtp.port, smtp_security="none",
        smtp_from_address="relance@cd35.example.org", smtp_timeout=5.0,
        bounce_maildir=tmp_path / "bounces",
    )
    app = build_app(settings)
    configure(settings)  # eager Celery: the tasks run inline, through the real channels
    db_session.upgrade(db_url)
    set_app(app)
    clock = Clock(NOW)
    try:
        api.start(create_app(app, clock=clock))
        yield World(app=app, fake=fake, smtp=smtp, clock=clock, api_url=api.url)
    finally:
        try:
            fake.wait_idle(timeout=10)
        except TimeoutError:
            pass
        fake.stop()
        api.stop()
        smtp.stop()
        set_app(None)
        db_session.get_engine(db_url).dispose()
        db_session.dispose_all()


@pytest.fixture
def world(db_url, tmp_path):
    with running_world(db_url, tmp_path) as w:
        yield w


@pytest.fixture
def sqlite_world(tmp_path):
    with running_world(f"sqlite:///{tmp_path / 'relance.db'}", tmp_path) as w:
        yield w


def _ingest(world: World) -> None:
    report = ingest.ingest_file(world.app, SAMPLE, NOW)
    assert report.cases_opened > 10


def _next_step_time(world: World, external_id: str) -> dt.datetime:
    """When the case is next due, moved to a working day at 10:00 Paris if needed."""
    due = world.case(external_id).due_at
    cal = world.app.calendar
    day = cal.local_date(due)
    slot = cal.at(day, dt.time(10, 0))
    if slot < due or not cal.is_working_day(day):
        slot = cal.at(cal.next_working_day(day), dt.time(10, 0))
    return slot


def _first_sms_answered(w: World, kind: str) -> tuple[str, Message]:
    """Ingest, make the fake Twilio answer ``kind`` (see FakeTwilio) to CD_PERSON's
    number, run a cycle: (that number, CD_PERSON's SMS)."""
    _ingest(w)
    phone = w.person(CD_PERSON).phone
    w.fake.set_rule(phone, kind)
    w.cycle(NOW)
    [msg] = w.messages(CD_PERSON, "sms")
    return phone, msg


# --- done when -----------------------------------------------------------------------------------------


def test_flux_to_delivered_sms_and_received_emails(world):
    _ingest(world)
    result = world.cycle(NOW)
    assert result["relayed"] > 0

    # SMS: accepted by the fake, signed callbacks received and accepted by the real endpoint.
    sms = [m for m in world.messages(channel="sms") if m.status != "pending"]
    assert len(sms) >= 10
    assert len(world.fake.messages) == len(sms)
    for m in world.fake.messages:
        assert m.from_ == SENDER_ID and m.validity_period == 36000
        assert m.to.startswith("+336")
    callbacks = world.fake.callbacks
    assert len(callbacks) == 2 * len(sms)
    assert {c.status_code for c in callbacks} == {204}, [(c.message_status, c.status_code) for c in callbacks]
    assert Counter(c.message_status for c in callbacks) == {"sent": len(sms), "delivered": len(sms)}
    assert all(m.status == "delivered" and m.provider_ref.startswith("SM") and m.segments >= 1 for m in sms)

    # timeline.timeline shows `delivered` for each SMS of each person.
    people = {w.external_id for w in _people(world)}
    with_sms = 0
    for external_id in people:
        items = [i for i in timeline.timeline(world.app, external_id)
                 if i["kind"] == "message" and i["channel"] == "sms" and i["status"] != "pending"]
        if items:
            with_sms += 1
            assert {i["status"] for i in items} == {"delivered"}, (external_id, items)
    assert with_sms == len({m.case_id for m in sms})

    # E-mails: at the SMTP server, multipart (text + HTML), one per e-mail message.
    emails = world.messages(channel="email")
    assert emails and all(m.status == "sent" for m in emails)
    received = world.smtp.messages
    assert len(received) == len(emails)
    by_reference = {r.message["X-Relance-Reference"]: r for r in received}
    assert set(by_reference) == {m.reference for m in emails}
    for m in emails:
        r = by_reference[m.reference]
        person = _person_of(world, m)
        assert r.rcpt_tos == [person.email]
        assert r.message.get_content_type() == "multipart/alternative"
        types = [p.get_content_type() for p in r.message.iter_parts()]
        assert types == ["text/plain", "text/html"]
        assert r.message["Subject"]

    # Letters carry on through their own (local) channel.
    letters = world.messages(channel="letter")
    assert letters and all(m.status == "sent" for m in letters)

    # Later cycles send nothing twice.
    world.cycle(NOW + dt.timedelta(hours=2))
    world.cycle(NOW + dt.timedelta(days=1))
    assert len(world.fake.messages) == len(sms)
    assert len(world.smtp.messages) == len(emails)
    world.assert_each_sms_sent_once()
    with session_scope(world.app.db_url) as s:
        assert audit.verify(s).ok


def _people(world: World) -> list[Person]:
    with session_scope(world.app.db_url) as s:
        return list(s.execute(select(Person)).scalars())


def _person_of(world: World, msg: Message) -> Person:
    with session_scope(world.app.db_url) as s:
        return s.get(Person, s.get(Case, msg.case_id).person_id)


# --- error classes (SQLite) ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,code", [("rate_limit", 20429), ("server_error", 20500), ("unavailable", 20503)])
def test_rate_limit_and_server_errors_back_off_then_send_once(sqlite_world, kind, code):
    w = sqlite_world
    phone, msg = _first_sms_answered(w, kind)
    assert (msg.status, msg.attempts) == ("pending", 1)
    assert msg.not_before == NOW + dt.timedelta(seconds=30)  # first backoff: 30 s (Retry-After: 1 is shorter)
    assert msg.error == f"retry: retry ({code})"
    assert len(w.requests_to(phone)) == 1
    others = [m for m in w.messages(channel="sms") if m.case_id != msg.case_id and m.status != "pending"]
    assert others and all(m.status == "delivered" for m in others)  # one refusal holds nobody else up

    w.cycle(NOW + dt.timedelta(seconds=10))  # not due yet: nothing sent
    assert len(w.requests_to(phone)) == 1

    second = msg.not_before
    w.cycle(second)  # still failing: the wait doubles
    msg = w.message(msg.id)
    assert (msg.status, msg.attempts) == ("pending", 2)
    assert msg.not_before == second + dt.timedelta(seconds=60)

    w.fake.clear_rule(phone)
    w.cycle(msg.not_before)
    msg = w.message(msg.id)
    assert msg.status == "delivered" and msg.attempts == 3
    assert [r.status for r in w.requests_to(phone)] == [ERR_STATUS[kind], ERR_STATUS[kind], 201]

    w.cycle(NOW + dt.timedelta(days=1))
    assert len(w.requests_to(phone)) == 3
    w.assert_each_sms_sent_once()


ERR_STATUS = {"rate_limit": 429, "server_error": 500, "unavailable": 503}


def test_retry_after_is_respected_backoff_is_capped_and_retries_give_up(sqlite_world):
    w = sqlite_world
    _ingest(w)
    phone = w.person(CD_PERSON).phone
    w.fake.retry_after = "600"  # Twilio asks for 10 minutes: longer than the 30 s backoff
    w.fake.set_rule(phone, "rate_limit")
    w.cycle(NOW)
    [msg] = w.messages(CD_PERSON, "sms")
    assert msg.status == "pending" and msg.not_before == NOW + dt.timedelta(seconds=600)

    w.fake.retry_after = None
    w.fake.set_rule(phone, "server_error")
    waits = []
    now = msg.not_before
    while True:
        w.cycle(now)
        msg = w.message(msg.id)
        if msg.status != "pending":
            break
        waits.append((msg.not_before - now).total_seconds())
        now = msg.not_before
    # Exponential backoff: 30 s, 60 s, 120 s, ... never above the cap.
    assert waits == [60, 120, 240, 480]
    assert sending._backoff(50) == dt.timedelta(seconds=sending.BACKOFF_CAP_SECONDS)
    assert all(sending._backoff(n).total_seconds() <= sending.BACKOFF_CAP_SECONDS for n in range(1, 60))
    # Too many attempts: a visible technical failure, never retried again.
    assert msg.status == "technical-failure" and msg.attempts == sending.MAX_SEND_ATTEMPTS
    assert msg.error == "gave up: retry (20500)"
    assert len(w.requests_to(phone)) == sending.MAX_SEND_ATTEMPTS
    w.cycle(NOW + dt.timedelta(days=1))
    assert len(w.requests_to(phone)) == sending.MAX_SEND_ATTEMPTS
    assert w.person(CD_PERSON).phone_status == "ok"


@pytest.mark.parametrize("kind,code", [("invalid_number", 21211), ("not_mobile", 21614), ("undelivered", 30006)])
def test_unusable_number_flags_the_phone_and_letters_carry_on(sqlite_world, kind, code):
    w = sqlite_world
    phone, msg = _first_sms_answered(w, kind)
    assert msg.status == "failed" and str(code) in msg.error
    assert w.person(CD_PERSON).phone_status == "failed"
    assert w.case(CD_PERSON).phone_unusable
    assert w.sms_events(CD_PERSON) == [("sms_failed", "applied")]
    [letter] = w.messages(CD_PERSON, "letter")
    assert letter.status == "sent"
    if kind == "undelivered":  # accepted, then the signed callbacks said so
        callbacks = [c for c in w.fake.callbacks if c.message_sid == msg.provider_ref]
        assert [(c.message_status, c.status_code) for c in callbacks] == [("sent", 204), ("undelivered", 204)]

    # The next step: a letter again, no SMS for this person.
    later = _next_step_time(w, CD_PERSON)
    w.cycle(later)
    assert w.case(CD_PERSON).step == "invitation_2"
    letters = w.messages(CD_PERSON, "letter", step="invitation_2")
    assert [m.status for m in letters] == ["sent"]
    assert all(m.status != "sent" for m in w.messages(CD_PERSON, "sms", step="invitation_2"))
    assert len(w.requests_to(phone)) == 1  # never tried again
    # Everyone else got their invitation_2 SMS.
    assert any(m.status == "delivered" for m in w.messages(channel="sms", step="invitation_2"))
    w.assert_each_sms_sent_once()


def test_opt_out_is_recorded(sqlite_world):
    w = sqlite_world
    phone, msg = _first_sms_answered(w, "opt_out")
    assert msg.status == "failed" and "21610" in msg.error
    assert w.person(CD_PERSON).phone_status == "opted_out"
    assert w.case(CD_PERSON).sms_opt_out
    assert w.sms_events(CD_PERSON) == [("sms_opt_out", "applied")]
    w.cycle(_next_step_time(w, CD_PERSON))
    assert [m.status for m in w.messages(CD_PERSON, "letter", step="invitation_2")] == ["sent"]
    assert len(w.requests_to(phone)) == 1
    w.assert_each_sms_sent_once()


def test_unknown_twilio_error_is_a_visible_technical_failure_not_retried(sqlite_world):
    w = sqlite_world
    phone, msg = _first_sms_answered(w, "unknown")
    assert msg.status == "technical-failure"
    assert "99999" in msg.error and "Twilio error" in msg.error
    assert phone not in msg.error  # Twilio's text is never kept
    [item] = [i for i in timeline.timeline(w.app, CD_PERSON) if i["kind"] == "message" and i["channel"] == "sms"]
    assert item["status"] == "technical-failure" and "99999" in item["detail"]
    assert w.person(CD_PERSON).phone_status == "ok"  # not the number's fault
    assert w.sms_events(CD_PERSON) == []
    for later in (NOW + dt.timedelta(minutes=30), NOW + dt.timedelta(days=1)):
        w.cycle(later)
    assert w.message(msg.id).status == "technical-failure"
    assert len(w.requests_to(phone)) == 1
    w.assert_each_sms_sent_once()


def test_accepted_without_callback_stays_sent_and_is_never_resent(sqlite_world):
    w = sqlite_world
    phone, msg = _first_sms_answered(w, "no_callback")
    assert msg.status == "sent" and msg.provider_ref.startswith("SM")
    for later in (NOW + dt.timedelta(minutes=20), NOW + dt.timedelta(hours=3), NOW + dt.timedelta(days=1)):
        w.cycle(later)  # includes the reconcile of stuck messages
    assert w.message(msg.id).status == "sent"
    assert len(w.requests_to(phone)) == 1
    assert not [c for c in w.fake.callbacks if c.message_sid == msg.provider_ref]
    w.assert_each_sms_sent_once()


def test_refused_email_address_flags_the_email_and_letters_carry_on(sqlite_world):
    w = sqlite_world
    _ingest(w)
    person = w.person(CD_WITH_EMAIL)
    w.smtp.refuse(person.email)
    w.cycle(NOW)

    [email] = w.messages(CD_WITH_EMAIL, "email")
    assert email.status == "failed" and "550" in email.error
    assert w.person(CD_WITH_EMAIL).email_status == "failed"
    assert w.case(CD_WITH_EMAIL).email_unusable
    assert not [r for r in w.smtp.messages if person.email in r.rcpt_tos]
    assert [m.status for m in w.messages(CD_WITH_EMAIL, "sms")] == ["delivered"]  # the SMS is not affected
    assert [m.status for m in w.messages(CD_WITH_EMAIL, "letter")] == ["sent"]
    others = [m for m in w.messages(channel="email") if m.id != email.id]
    assert others and all(m.status == "sent" for m in others)

    w.cycle(_next_step_time(w, CD_WITH_EMAIL))
    assert w.case(CD_WITH_EMAIL).step == "invitation_2"
    assert all(m.status != "sent" for m in w.messages(CD_WITH_EMAIL, "email", step="invitation_2"))
    assert [m.status for m in w.messages(CD_WITH_EMAIL, "letter", step="invitation_2")] == ["sent"]
    assert [m.status for m in w.messages(CD_WITH_EMAIL, "sms", step="invitation_2")] == ["delivered"]
    assert not [r for r in w.smtp.messages if person.email in r.rcpt_tos]
    w.assert_each_sms_sent_once()


def _drop_bounce(w: World, name: str, raw: bytes) -> Path:
    new = w.app.settings.bounce_maildir / "new"
    new.mkdir(parents=True, exist_ok=True)
    (new / name).write_bytes(raw)
    return new / name


def test_a_bounce_after_acceptance_flags_the_email_and_letters_carry_on(sqlite_world):
    """The SMTP server accepted the e-mail (sent); the destination refused it later
    and the relay's delivery status notification lands in the bounce Maildir."""
    w = sqlite_world
    _ingest(w)
    w.cycle(NOW)
    person = w.person(CD_WITH_EMAIL)
    [email] = w.messages(CD_WITH_EMAIL, "email")
    assert email.status == "sent"
    [received] = [r for r in w.smtp.messages if person.email in r.rcpt_tos]
    maildir = w.app.settings.bounce_maildir

    _drop_bounce(w, "1717405200.M1P1.mx", postfix_dsn(received.raw, person.email))
    _drop_bounce(w, "1717405201.M2P1.mx", postfix_dsn(received.raw, person.email, action="delayed",
                                                         status="4.4.7", diagnostic="X-Postfix; timeout"))
    other = next(r for r in w.smtp.messages if person.email not in r.rcpt_tos)
    unknown = other.raw.replace(other.message["X-Relance-Reference"].encode(), b"RL-999999-9999999")
    unknown = unknown.replace(other.message["Message-ID"].encode(), b"<nobody@elsewhere.example>")
    _drop_bounce(w, "1717405202.M3P1.mx", postfix_dsn(unknown, "x@example.net"))
    # not a report: a person's reply, forwarded to agents (issue 10), never a bounce
    (maildir / "new" / "1717405203.M4P1.mx").write_bytes(b"Subject: hello\r\n\r\nnot a report\r\n")

    w.cycle(NOW + dt.timedelta(hours=1))  # the scheduler's cycle scans the Maildir

    email = w.message(email.id)
    assert email.status == "failed" and "5.1.1" in email.error
    assert w.person(CD_WITH_EMAIL).email_status == "failed"
    assert w.case(CD_WITH_EMAIL).email_unusable
    others = [m for m in w.messages(channel="email") if m.id != email.id]
    assert others and all(m.status == "sent" for m in others)  # one bounce, one message
    assert not list((maildir / "new").iterdir())
    assert sorted(p.name for p in (maildir / "cur").iterdir()) == [
        "1717405200.M1P1.mx:2,S", "1717405201.M2P1.mx:2,S", "1717405202.M3P1.mx:2,F", "1717405203.M4P1.mx:2,S"]
    statuses = [(i["channel"], i["status"]) for i in timeline.timeline(w.app, CD_WITH_EMAIL)
                if i["kind"] == "message" and i.get("channel") == "email"]
    assert ("email", "failed") in statuses

    # the same notice again changes nothing
    _drop_bounce(w, "1717405300.M5P1.mx", postfix_dsn(received.raw, person.email))
    assert bounces.scan_bounces(w.app, NOW + dt.timedelta(hours=2)) == {
        "applied": 0, "duplicates": 1, "replies": 0, "ignored": [], "rejected": []}

    # next step: letters and SMS, no e-mail to the bounced address
    w.cycle(_next_step_time(w, CD_WITH_EMAIL))
    assert w.case(CD_WITH_EMAIL).step == "invitation_2"
    assert [m.status for m in w.messages(CD_WITH_EMAIL, "letter", step="invitation_2")] == ["sent"]
    assert [m.status for m in w.messages(CD_WITH_EMAIL, "sms", step="invitation_2")] == ["delivered"]
    assert all(m.status != "sent" for m in w.messages(CD_WITH_EMAIL, "email", step="invitation_2"))
    assert len([r for r in w.smtp.messages if person.email in r.rcpt_tos]) == 1


def test_ops_put_a_technical_failure_back_in_the_outbox_once_checked(sqlite_world):
    """An SMS Twilio refused with an unknown error is listed for ops; once they
    have checked it did not go out, `requeue` sends it again, through the claim."""
    from worker.services.message_ops import MessageOpsError, list_messages, requeue_message

    w = sqlite_world
    phone, msg = _first_sms_answered(w, "unknown")
    listed = list_messages(w.app, status="technical-failure")
    assert [r["id"] for r in listed] == [msg.id]
    assert listed[0]["reference"] == msg.reference and "99999" in listed[0]["error"]
    assert phone not in str(listed)

    with pytest.raises(MessageOpsError, match="motif"):
        requeue_message(w.app, msg.id, reason=" ", now=NOW)
    [delivered] = [m for m in w.messages(channel="sms") if m.status == "delivered"][:1]
    with pytest.raises(MessageOpsError, match="statut delivered"):
        requeue_message(w.app, delivered.id, reason="vérifié", now=NOW)
    with pytest.raises(MessageOpsError, match="inconnu"):
        requeue_message(w.app, 987654, reason="vérifié", now=NOW)

    w.fake.clear_rule(phone)
    later = NOW + dt.timedelta(hours=1)
    done = requeue_message(w.app, msg.id, reason="absent des journaux Twilio", now=later)
    assert done["status"] == "pending"
    w.cycle(later)
    assert w.message(msg.id).status == "delivered"
    assert len(w.requests_to(phone)) == 2  # refused once (not accepted), then accepted once
    w.assert_each_sms_sent_once()
    with session_scope(w.app.db_url) as s:
        notes = [e.data for e in s.execute(select(AuditEntry).where(AuditEntry.entity_id == msg.id,
                                                                    AuditEntry.kind == "message")).scalars()]
    assert any(n.get("reason") == "requeued_by_ops" and n.get("note") == "absent des journaux Twilio" for n in notes)


def test_a_technical_failure_of_a_step_the_case_has_left_is_not_requeued(sqlite_world):
    from worker.services.message_ops import MessageOpsError, requeue_message

    w = sqlite_world
    phone, msg = _first_sms_answered(w, "unknown")
    w.cycle(_next_step_time(w, CD_PERSON))
    assert w.case(CD_PERSON).step == "invitation_2"
    with pytest.raises(MessageOpsError, match="étape invitation_2"):
        requeue_message(w.app, msg.id, reason="vérifié", now=NOW + dt.timedelta(days=20))
    assert w.message(msg.id).status == "technical-failure"


def test_a_technical_failure_is_not_requeued_during_a_legitimate_reason(sqlite_world):
    """The requeue asks the engine's own re-check before sending: a pause refuses it too."""
    from worker.services.message_ops import MessageOpsError, requeue_message

    w = sqlite_world
    _phone, msg = _first_sms_answered(w, "unknown")
    later = NOW + dt.timedelta(hours=1)
    cases.apply_event(w.app, external_id=CD_PERSON, type="legitimate_reason", now=later,
                         until=NOW + dt.timedelta(days=10), category="sick_leave")
    with pytest.raises(MessageOpsError, match="motif légitime en cours"):
        requeue_message(w.app, msg.id, reason="vérifié", now=later)
    assert w.message(msg.id).status == "technical-failure"


# --- Twilio codes through the real client (issue 11) ------------------------------------------------------------


@pytest.mark.parametrize("kind,code", [("geo_permission", 21408), ("bad_route", 21612)])
def test_an_account_refusal_alerts_ops_and_keeps_the_phone(sqlite_world, kind, code):
    """21408 (Geo Permissions: e.g. +262/+590/+594/+596 not enabled) and 21612 (sender/route): the
    account's problem. Before issue 11 they flagged the person's phone unusable for good."""
    w = sqlite_world
    phone, msg = _first_sms_answered(w, kind)
    assert msg.status == "technical-failure" and f"Twilio {code}" in msg.error and "alerte" in msg.error
    assert phone not in msg.error
    assert w.person(CD_PERSON).phone_status == "ok"
    assert not w.case(CD_PERSON).phone_unusable
    assert w.sms_events(CD_PERSON) == []
    assert [m.status for m in w.messages(CD_PERSON, "letter")] == ["sent"]
    # ops fix the account, put the message back: it goes, to the same phone
    w.fake.clear_rule(phone)
    from worker.services import message_ops

    message_ops.requeue_message(w.app, msg.id, reason="Geo Permissions activées", now=NOW + dt.timedelta(hours=1))
    w.cycle(NOW + dt.timedelta(hours=1))
    assert w.message(msg.id).status == "delivered"
    assert len(w.requests_to(phone)) == 2


def test_a_landline_refused_by_twilio_flags_the_phone_as_not_mobile(sqlite_world):
    w = sqlite_world
    phone, msg = _first_sms_answered(w, "landline")
    assert msg.status == "failed" and "21635" in msg.error
    assert w.person(CD_PERSON).phone_status == "not_mobile"
    assert w.case(CD_PERSON).phone_unusable
    assert w.sms_events(CD_PERSON) == [("sms_failed", "applied")]
    w.cycle(_next_step_time(w, CD_PERSON))
    assert [m.status for m in w.messages(CD_PERSON, "letter", step="invitation_2")] == ["sent"]
    assert all(m.status != "sent" for m in w.messages(CD_PERSON, "sms", step="invitation_2"))
    assert len(w.requests_to(phone)) == 1


def test_an_unreachable_handset_gets_the_sms_again_later(sqlite_world):
    w = sqlite_world
    phone, msg = _first_sms_answered(w, "unreachable")  # accepted, then undelivered 30003
    assert msg.status == "pending" and "injoignable" in msg.error
    assert msg.not_before == NOW + dt.timedelta(minutes=30)
    assert w.person(CD_PERSON).phone_status == "ok" and w.sms_events(CD_PERSON) == []
    w.fake.clear_rule(phone)  # the handset is back
    w.cycle(msg.not_before)
    msg = w.message(msg.id)
    assert msg.status == "delivered" and msg.attempts == 2
    assert len([r for r in w.requests_to(phone) if r.status == 201]) == 2


@pytest.mark.parametrize("first_receipt", [True, False], ids=["sent-then-undelivered", "undelivered-only"])
def test_unreachable_receipts_that_beat_the_sender_s_record_are_kept(sqlite_world, first_receipt):
    """Twilio may call back before the batch's outcome transaction: the handset is unreachable, the
    message is rescheduled, and the sender's own record of the 201 must not move it back to ``sent``
    (CI caught that race once)."""
    from worker.adapters.channels.base import Delivery
    from worker.adapters.store.session import session_scope
    from worker.services.send_outcome import record_outcome

    w = sqlite_world
    _phone, msg = _first_sms_answered(w, "no_callback")
    assert msg.status == "sent"
    with session_scope(w.app.db_url) as s:  # back to the moment Twilio took it, before the record
        m = s.get(Message, msg.id)
        m.status, ref, m.provider_ref, m.error = "sending", m.provider_ref, None, None
    if first_receipt:
        assert sending.record_provider_status(w.app, msg.id, "sent", NOW) == "sent"
    assert sending.record_provider_status(w.app, msg.id, "undelivered", NOW, error_code="30003") == "pending"
    with session_scope(w.app.db_url) as s:
        m = s.get(Message, msg.id)
        result, follow, _ = record_outcome(s, m, Delivery("sent", ref, 1), None,
                                           (m.template_name, m.template_version, m.content_hash), NOW)
    assert result.outcome == "sent" and follow is None
    msg = w.message(msg.id)
    assert msg.status == "pending" and "injoignable" in msg.error and msg.provider_ref is None
    assert msg.not_before == NOW + dt.timedelta(minutes=30) and msg.sent_at == NOW


def test_a_late_sender_s_201_for_a_message_put_back_in_the_outbox_marks_it_sent(sqlite_world):
    """The other way round: a message put back in the outbox by ops (its sender had stalled), whose
    sender then records Twilio's 201 after all, is ``sent``: never sent a second time."""
    from worker.adapters.channels.base import Delivery
    from worker.adapters.store.session import session_scope
    from worker.services.send_outcome import record_outcome

    w = sqlite_world
    _phone, msg = _first_sms_answered(w, "no_callback")
    with session_scope(w.app.db_url) as s:  # as message_ops.requeue_message leaves it
        m = s.get(Message, msg.id)
        m.status, ref, m.provider_ref, m.error, m.enqueued_at, m.claimed_at = "pending", m.provider_ref, None, None, None, None
    with session_scope(w.app.db_url) as s:
        m = s.get(Message, msg.id)
        result, _follow, _ = record_outcome(s, m, Delivery("sent", ref, 1), None,
                                            (m.template_name, m.template_version, m.content_hash), NOW)
    assert result.outcome == "sent"
    msg = w.message(msg.id)
    assert msg.status == "sent" and msg.provider_ref == ref
    requests = len(w.requests_to(_phone))
    w.cycle(NOW + dt.timedelta(hours=1))
    assert len(w.requests_to(_phone)) == requests


def test_a_partial_delivery_is_recorded_on_the_message(sqlite_world):
    w = sqlite_world
    _phone, msg = _first_sms_answered(w, "partial")
    assert msg.status == "sent" and "remise partielle" in msg.error
    callbacks = [c for c in w.fake.callbacks if c.message_sid == msg.provider_ref]
    assert [(c.message_status, c.status_code) for c in callbacks] == [("sent", 204), ("partially_delivered", 204)]
