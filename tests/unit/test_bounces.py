"""Parsing delivery status notifications (worker.services.bounces.parse_bounce)."""
from __future__ import annotations

from email.message import EmailMessage

import pytest

from tests.fakes.dsn import postfix_dsn
from worker.services.bounces import NotABounce, parse_bounce


def _original(reference: str = "RL-000042-0000137", message_id: str = "<171740.1@cd35.example.org>") -> bytes:
    msg = EmailMessage()
    msg["From"] = "CDAS du Pays de Redon <relance@cd35.example.org>"
    msg["To"] = "personne@example.net"
    msg["Subject"] = "Votre RSA : prenez rendez-vous"
    msg["Message-ID"] = message_id
    msg["X-Relance-Reference"] = reference
    msg.set_content("Bonjour,\nprenez rendez-vous.\n")
    msg.add_alternative("<p>Bonjour, prenez rendez-vous.</p>", subtype="html")
    return msg.as_bytes()


@pytest.mark.parametrize("headers_only", [False, True])
def test_a_permanent_failure_names_the_returned_message(headers_only):
    bounce = parse_bounce(postfix_dsn(_original(), "personne@example.net", headers_only=headers_only))
    assert bounce.reference == "RL-000042-0000137"
    assert bounce.message_id == "<171740.1@cd35.example.org>"
    assert (bounce.action, bounce.status) == ("failed", "5.1.1")
    assert bounce.permanent


def test_a_delay_is_not_a_bounce():
    bounce = parse_bounce(postfix_dsn(_original(), "personne@example.net", action="delayed", status="4.4.7",
                                      diagnostic="X-Postfix; delivery temporarily suspended"))
    assert (bounce.action, bounce.status) == ("delayed", "4.4.7")
    assert not bounce.permanent


def test_a_failed_action_with_a_temporary_status_is_not_permanent():
    assert not parse_bounce(postfix_dsn(_original(), "p@example.net", status="4.2.2")).permanent


def test_without_the_reference_header_the_message_id_is_enough():
    raw = postfix_dsn(_original(), "p@example.net").replace(b"X-Relance-Reference: RL-000042-0000137\r\n", b"")
    bounce = parse_bounce(raw)
    assert bounce.reference is None and bounce.message_id == "<171740.1@cd35.example.org>"


def test_an_ordinary_message_is_not_a_bounce():
    with pytest.raises(NotABounce, match="pas un avis de non-remise"):
        parse_bounce(_original())


def test_a_report_without_the_returned_headers_is_refused():
    # some servers return the message as plain text: nothing says which message it was
    raw = postfix_dsn(_original(), "p@example.net").replace(b"Content-Type: message/rfc822", b"Content-Type: text/plain")
    with pytest.raises(NotABounce, match="en-têtes du message d'origine"):
        parse_bounce(raw)


def test_a_report_without_delivery_status_is_refused():
    raw = postfix_dsn(_original(), "p@example.net").replace(b"message/delivery-status", b"text/plain")
    with pytest.raises(NotABounce, match="delivery-status"):
        parse_bounce(raw)


def test_the_address_that_bounced_is_read_from_the_report():
    assert parse_bounce(postfix_dsn(_original(), "personne@example.net")).recipient == "personne@example.net"


# --- the token (issue 11: forged notices) ---------------------------------------------------------------------

KEY = b"k" * 32


def test_the_token_is_read_from_the_returned_headers():
    from worker.adapters.dsn import bounce_token

    original = _original().replace(b"X-Relance-Reference:", b"X-Relance-Token: " + bounce_token(KEY, "RL-000042-0000137")
                                   .encode() + b"\r\nX-Relance-Reference:", 1)
    for headers_only in (False, True):
        bounce = parse_bounce(postfix_dsn(original, "p@example.net", headers_only=headers_only))
        assert bounce.token == bounce_token(KEY, "RL-000042-0000137")


def test_the_reference_and_token_are_read_from_the_verp_address():
    from worker.adapters.dsn import bounce_token, verp_address

    token = bounce_token(KEY, "RL-000042-0000137")
    verp = verp_address("relance@cd35.example.org", "RL-000042-0000137", token)
    assert verp == f"relance+RL-000042-0000137.{token}@cd35.example.org"
    raw = postfix_dsn(_original(), "p@example.net", envelope_sender=verp).replace(
        b"X-Relance-Reference: RL-000042-0000137\r\n", b"")
    bounce = parse_bounce(raw)
    assert (bounce.reference, bounce.token) == ("RL-000042-0000137", token)
    # too long a local part: no VERP (the header carries the token)
    assert verp_address("x" * 40 + "@example.org", "RL-000042-0000137", token) is None


def test_without_a_token_a_notice_is_parsed_but_has_none():
    assert parse_bounce(postfix_dsn(_original(), "p@example.net")).token is None


def test_a_forged_notice_is_rejected_before_any_lookup():
    """record_file checks the token before touching the store (the app here has no database)."""
    from types import SimpleNamespace

    from worker.services.bounces import record_file
    from worker.settings import Settings

    app = SimpleNamespace(settings=Settings(_env_file=None, bounce_key="k" * 32))
    outcome, reason = record_file(app, postfix_dsn(_original(), "p@example.net"), None)
    assert outcome == "rejected" and "jeton" in reason
