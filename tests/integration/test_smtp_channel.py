"""The e-mail channel against a real local SMTP server (aiosmtpd)."""
from __future__ import annotations

import logging
import socket
import threading

import pytest

from tests.fakes.smtp_server import FakeSmtpServer, free_port
from worker.adapters.channels.base import (
    Delivery,
    OutgoingMessage,
    RecipientError,
    RetryableError,
    TechnicalError,
)
from worker.adapters.channels.smtp_email import SmtpEmailChannel, SmtpSettings, send_email

TO = "camille.lefevre@example.net"
SUBJECT = "Votre rendez-vous d'accompagnement RSA – étape à réaliser"
TEXT = (
    "Bonjour Madame Lefèvre,\n\n"
    "Vous êtes désormais bénéficiaire du RSA. Prenez rendez-vous avec le CDAS de Redon "
    "avant le 15 décembre. Référence à rappeler : R-2024-000123.\n\n"
    "Ça ne prend que quelques minutes : élève, façade, œuvre, Noël.\n"
)
HTML = (
    "<html><body><p>Bonjour Madame Lefèvre,</p>"
    "<p>Vous êtes désormais bénéficiaire du <strong>RSA</strong>. " + "Très long paragraphe. " * 40 + "</p>"
    "<p>Ça ne prend que quelques minutes : élève, façade, œuvre, Noël.</p></body></html>"
)


def make_message(to: str = TO, *, html: str | None = HTML, sender_name: str | None = "CDAS du Pays de Redon") -> OutgoingMessage:
    return OutgoingMessage(
        message_id=42,
        reference="R-2024-000123",
        channel="email",
        step="invitation_1",
        organisation="CDAS-REDON",
        case_reference="C-2024-000777",
        to=to,
        subject=SUBJECT,
        text=TEXT,
        html=html,
        sender_name=sender_name,
    )


@pytest.fixture
def plain_server():
    with FakeSmtpServer(mode="plain") as server:
        yield server


def test_multipart_email_arrives_intact(plain_server):
    channel = SmtpEmailChannel(plain_server.settings(from_address="relance@cd35.example.fr"))
    assert channel.name == "email" and channel.is_local is False

    delivery = channel.send(make_message())

    assert isinstance(delivery, Delivery)
    assert delivery.status == "sent"
    assert len(plain_server.messages) == 1
    received = plain_server.messages[0]
    assert received.mail_from == "relance@cd35.example.fr"
    assert received.rcpt_tos == [TO]
    msg = received.message
    assert msg["Subject"] == SUBJECT
    assert msg["To"] == TO
    assert msg["From"].addresses[0].display_name == "CDAS du Pays de Redon"
    assert msg["From"].addresses[0].addr_spec == "relance@cd35.example.fr"
    assert msg["X-Relance-Reference"] == "R-2024-000123"
    assert msg["Date"]
    assert msg["Message-ID"] == delivery.provider_ref
    assert delivery.provider_ref.startswith("<") and delivery.provider_ref.endswith("@cd35.example.fr>")
    assert msg.get_content_type() == "multipart/alternative"
    text_part = msg.get_body(preferencelist=("plain",))
    html_part = msg.get_body(preferencelist=("html",))
    assert text_part.get_content() .replace("\r\n", "\n") == TEXT
    assert html_part.get_content().replace("\r\n", "\n").rstrip("\n") == HTML
    # 7-bit on the wire (no 8BITMIME needed), accents survive the round trip.
    received.raw.decode("ascii")
    # No personal data in the headers we add beyond To itself.
    assert "Lefèvre" not in msg["X-Relance-Reference"]


def test_text_only_email_and_settings_from_name(plain_server):
    channel = SmtpEmailChannel(plain_server.settings(from_name="Département d'Ille-et-Vilaine"))
    channel.send(make_message(html=None, sender_name=None))
    msg = plain_server.messages[0].message
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content().replace("\r\n", "\n") == TEXT
    assert msg["From"].addresses[0].display_name == "Département d'Ille-et-Vilaine"
    assert msg["From"].addresses[0].addr_spec == "relance@example.org"


def test_send_email_function_for_digests(plain_server):
    message_id = send_email(
        plain_server.settings(),
        to="agent.cdas@cd35.example.fr",
        subject="Relance – synthèse du jour",
        text="3 dossiers à revoir.",
        reference="digest-2024-11-28-CDAS-REDON",
    )
    msg = plain_server.messages[0].message
    assert msg["Message-ID"] == message_id
    assert msg["X-Relance-Reference"] == "digest-2024-11-28-CDAS-REDON"
    assert msg["Subject"] == "Relance – synthèse du jour"


def test_starttls_and_auth():
    with FakeSmtpServer(mode="starttls", username="relance", password="s3cr3t-é") as server:
        SmtpEmailChannel(server.settings()).send(make_message())
        assert len(server.messages) == 1
        received = server.messages[0]
        assert received.tls is True
        assert received.authenticated_as == "relance"
        assert received.message["Subject"] == SUBJECT


def test_starttls_without_auth():
    with FakeSmtpServer(mode="starttls", require_starttls=True) as server:
        SmtpEmailChannel(server.settings()).send(make_message())
        assert server.messages[0].tls is True


def test_implicit_tls_with_auth():
    with FakeSmtpServer(mode="ssl", username="relance", password="s3cr3t") as server:
        SmtpEmailChannel(server.settings()).send(make_message())
        assert len(server.messages) == 1
        assert server.messages[0].tls is True
        assert server.messages[0].authenticated_as == "relance"


def test_self_signed_certificate_rejected_when_verifying():
    with FakeSmtpServer(mode="starttls") as server:
        with pytest.raises(TechnicalError) as excinfo:
            SmtpEmailChannel(server.settings(verify_tls=True)).send(make_message())
        assert excinfo.value.code == "tls"
        assert server.messages == []


def test_starttls_not_offered_is_technical(plain_server):
    with pytest.raises(TechnicalError):
        SmtpEmailChannel(plain_server.settings(security="starttls")).send(make_message())


def test_wrong_password_is_technical_error():
    with FakeSmtpServer(mode="starttls", username="relance", password="s3cr3t") as server:
        with pytest.raises(TechnicalError) as excinfo:
            SmtpEmailChannel(server.settings(password="wrong")).send(make_message())
        assert excinfo.value.code == "auth"
        assert server.auth_attempts and not any(ok for _, ok in server.auth_attempts)
        assert server.messages == []


def test_auth_required_but_not_configured_is_not_retried():
    with FakeSmtpServer(mode="starttls", username="relance", password="s3cr3t") as server:
        with pytest.raises(TechnicalError):
            SmtpEmailChannel(server.settings(username=None, password=None)).send(make_message())


def test_550_is_recipient_error(plain_server, caplog):
    plain_server.refuse(TO)
    with caplog.at_level(logging.DEBUG, logger="worker.adapters.channels.smtp_email"):
        with pytest.raises(RecipientError) as excinfo:
            SmtpEmailChannel(plain_server.settings()).send(make_message())
    assert excinfo.value.code == 550
    assert plain_server.messages == []
    # Neither the address nor the body leak into logs or the error.
    assert TO not in caplog.text and "Lefèvre" not in caplog.text
    assert TO not in str(excinfo.value)
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__


@pytest.mark.parametrize("code", [551, 553])
def test_other_recipient_5xx_are_recipient_errors(plain_server, code):
    plain_server.refuse(TO, code=code, text="5.1.0 nope")
    with pytest.raises(RecipientError) as excinfo:
        SmtpEmailChannel(plain_server.settings()).send(make_message())
    assert excinfo.value.code == code


def test_451_is_retryable(plain_server):
    plain_server.defer(TO)
    with pytest.raises(RetryableError) as excinfo:
        SmtpEmailChannel(plain_server.settings()).send(make_message())
    assert excinfo.value.code == 451
    assert plain_server.messages == []


@pytest.mark.parametrize("code", [450, 452, 421])
def test_other_4xx_are_retryable(plain_server, code):
    plain_server.defer(TO, code=code, text="4.0.0 later")
    with pytest.raises(RetryableError):
        SmtpEmailChannel(plain_server.settings()).send(make_message())


@pytest.mark.parametrize("point", ["MAIL", "RCPT", "DATA"])
def test_dropped_connection_is_retryable(plain_server, point):
    plain_server.drop_on = point
    with pytest.raises(RetryableError):
        SmtpEmailChannel(plain_server.settings()).send(make_message())
    assert plain_server.dropped == 1
    assert plain_server.messages == []
    # The server keeps serving once the fault is cleared.
    plain_server.drop_on = None
    SmtpEmailChannel(plain_server.settings()).send(make_message())
    assert len(plain_server.messages) == 1


def test_server_down_is_retryable():
    settings = SmtpSettings(port=free_port(), timeout=2.0)
    with pytest.raises(RetryableError) as excinfo:
        SmtpEmailChannel(settings).send(make_message())
    assert excinfo.value.code == "network"


def test_silent_server_times_out_as_retryable():
    # Accepts TCP connections but never sends the greeting.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True)
    thread.start()
    try:
        settings = SmtpSettings(port=listener.getsockname()[1], timeout=0.5)
        with pytest.raises(RetryableError):
            SmtpEmailChannel(settings).send(make_message())
    finally:
        for conn, _ in accepted:
            conn.close()
        listener.close()


def test_tls_to_plain_port_is_technical(plain_server):
    with pytest.raises(TechnicalError) as excinfo:
        SmtpEmailChannel(plain_server.settings(security="ssl")).send(make_message())
    assert excinfo.value.code == "tls"


def test_invalid_recipient_address_is_recipient_error(plain_server):
    with pytest.raises(RecipientError):
        SmtpEmailChannel(plain_server.settings()).send(make_message(to="pas une adresse"))
    with pytest.raises(RecipientError):
        SmtpEmailChannel(plain_server.settings()).send(make_message(to="a@b.fr\nBcc: x@y.fr"))
    assert plain_server.messages == []


def test_header_injection_in_subject_is_refused(plain_server):
    message = make_message()
    bad = OutgoingMessage(**{**message.__dict__, "subject": "Bonjour\nBcc: x@example.org"})
    with pytest.raises(TechnicalError):
        SmtpEmailChannel(plain_server.settings()).send(bad)
    assert plain_server.messages == []


@pytest.mark.parametrize("security", ["tls", "STARTTLS", "", "plain"])
def test_invalid_security_setting(security):
    with pytest.raises(ValueError, match="security"):
        SmtpSettings(security=security)


# --- the bounce token (issue 11: forged bounce notices) ---------------------------------------------------

BOUNCE_KEY = b"k" * 32


def test_each_email_carries_the_token_of_its_reference(plain_server):
    from worker.adapters.dsn import bounce_token, verify_bounce_token

    SmtpEmailChannel(plain_server.settings(bounce_key=BOUNCE_KEY)).send(make_message())
    received = plain_server.messages[0]
    token = received.message["X-Relance-Token"]
    assert token == bounce_token(BOUNCE_KEY, "R-2024-000123") and len(token) == 32
    assert verify_bounce_token(BOUNCE_KEY, "R-2024-000123", token)
    assert not verify_bounce_token(b"another key" * 3, "R-2024-000123", token)
    assert not verify_bounce_token(BOUNCE_KEY, "R-2024-000124", token)
    assert received.mail_from == "relance@example.org"  # no VERP unless asked
    assert "bounce_key" not in repr(plain_server.settings(bounce_key=BOUNCE_KEY))  # a secret


def test_with_verp_the_envelope_sender_carries_the_reference_and_the_token(plain_server):
    from worker.adapters.dsn import bounce_token

    channel = SmtpEmailChannel(plain_server.settings(from_address="relance@cd35.example.fr", bounce_key=BOUNCE_KEY,
                                                     verp=True))
    channel.send(OutgoingMessage(**{**make_message().__dict__, "reference": "RL-000042-0000137"}))
    received = plain_server.messages[0]
    token = bounce_token(BOUNCE_KEY, "RL-000042-0000137")
    assert received.mail_from == f"relance+RL-000042-0000137.{token}@cd35.example.fr"
    assert received.message["From"].addresses[0].addr_spec == "relance@cd35.example.fr"  # what people see


def test_without_a_key_no_token(plain_server):
    SmtpEmailChannel(plain_server.settings()).send(make_message())
    assert plain_server.messages[0].message["X-Relance-Token"] is None
