"""The real twilio client, through TwilioSmsChannel, against the fake Twilio server."""
from __future__ import annotations

import logging
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fakes.fake_twilio import FakeTwilio
from worker.adapters.channels.base import (
    Channel,
    OptOutError,
    OutgoingMessage,
    RecipientError,
    RetryableError,
    TechnicalError,
)
from worker.adapters.channels.twilio_sms import TwilioSettings, TwilioSmsChannel
from worker.adapters.channels.twilio_callbacks import (
    STATUS_MAP,
    STATUS_RANK,
    error_code_kind,
    is_permanent_recipient_failure,
    next_status,
    parse_status_callback,
    status_callback_url,
    verify_signature,
)

MOBILE = "+33612345678"
OTHER_MOBILE = "+33698765432"
LANDLINE = "+33299000000"
MESSAGING_SERVICE_SID = "MG" + "a" * 32


class CallbackReceiver:
    """A tiny status-callback endpoint that checks signatures like the real route will."""

    def __init__(self, auth_token: str, *, answer: int | None = None):
        self.auth_token = auth_token
        self.answer = answer  # force this HTTP status (e.g. 500) instead of checking
        self.received: list[tuple[str, dict, bool]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
                params = {k: v[-1] for k, v in form.items()}
                url = receiver.base_url + self.path
                ok = verify_signature(
                    receiver.auth_token, url, params, self.headers.get("X-Twilio-Signature")
                )
                with receiver._lock:
                    receiver.received.append((self.path, params, ok))
                status = receiver.answer or (204 if ok else 403)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def free_closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_settings(fake: FakeTwilio, callback_base: str = "https://relance.example.org", **over):
    values = dict(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        sender_id="DEPT35RSA",
        status_callback_base_url=callback_base,
        api_base_url=fake.url,
        validity_period=36000,
        request_timeout=5,
    )
    values.update(over)
    return TwilioSettings(**values)


def message(to: str = MOBILE, text: str = "Bonjour, votre rendez-vous", message_id: int = 42):
    return OutgoingMessage(
        message_id=message_id,
        reference="REL-2025-000042",
        channel="sms",
        step="invitation_1",
        organisation="CDAS-REDON",
        case_reference="CASE-42",
        to=to,
        subject=None,
        text=text,
    )


@pytest.fixture(scope="module")
def fake():
    with FakeTwilio() as server:
        yield server


@pytest.fixture(scope="module")
def receiver(fake):
    with CallbackReceiver(fake.auth_token) as server:
        yield server


@pytest.fixture
def base(receiver):
    """Public base URL for callbacks: a local receiver, so no callback leaves the host."""
    return receiver.base_url


@pytest.fixture
def channel(fake, base):
    fake.reset()
    return TwilioSmsChannel(make_settings(fake, base))


# ------------------------------------------------------------------ sending
def test_channel_protocol(channel):
    assert isinstance(channel, TwilioSmsChannel)
    ch: Channel = channel
    assert ch.name == "sms" and ch.is_local is False


def test_successful_send_records_gsm7_body_and_callback_url(fake, channel, base):
    text = "Bonjour, votre cœur… « l’été » à 10\u00a0h — ça ira."
    delivery = channel.send(message(text=text, message_id=1234))

    assert delivery.status == "sent"
    assert delivery.provider_ref.startswith("SM") and len(delivery.provider_ref) == 34
    assert delivery.segments == 1
    [sent] = fake.messages
    assert sent.sid == delivery.provider_ref
    assert sent.body == "Bonjour, votre coeur... \" l'été \" à 10 h - ca ira."
    assert sent.to == MOBILE
    assert sent.from_ == "DEPT35RSA"
    assert sent.messaging_service_sid is None
    assert sent.status_callback == f"{base}/twilio/status/1234"
    assert sent.validity_period == 36000
    assert sent.num_segments == 1


def test_long_message_segments(fake, channel):
    delivery = channel.send(message(text="é" * 200))
    assert delivery.segments == 2
    assert fake.messages[-1].num_segments == 2


def test_messaging_service_is_used_instead_of_sender(fake, base):
    fake.reset()
    channel = TwilioSmsChannel(
        make_settings(fake, base, sender_id=None, messaging_service_sid=MESSAGING_SERVICE_SID)
    )
    delivery = channel.send(message())
    [sent] = fake.messages
    assert sent.messaging_service_sid == MESSAGING_SERVICE_SID
    assert sent.from_ is None
    assert delivery.detail == "accepted"


def test_wrong_credentials_are_a_technical_error(fake, base):
    fake.reset()
    channel = TwilioSmsChannel(make_settings(fake, base, auth_token="not-the-token"))
    with pytest.raises(TechnicalError) as info:
        channel.send(message())
    assert info.value.code == 20003
    assert fake.messages == []


# ------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kind, error_class, code",
    [
        ("rate_limit", RetryableError, 20429),
        ("server_error", RetryableError, 20500),
        ("unavailable", RetryableError, 20503),
        ("invalid_number", RecipientError, 21211),
        ("not_mobile", RecipientError, 21614),
        ("landline", RecipientError, 21635),
        ("opt_out", OptOutError, 21610),
        ("unknown", TechnicalError, 99999),
        # the account's or the sender's problem, not the number's (issue 11): ops, and the phone is kept
        ("geo_permission", TechnicalError, 21408),
        ("bad_route", TechnicalError, 21612),
    ],
)
def test_errors_are_mapped(fake, channel, kind, error_class, code):
    fake.fail_next(kind)
    with pytest.raises(error_class) as info:
        channel.send(message())
    assert type(info.value) is error_class
    assert info.value.code == code
    assert fake.messages == []
    # the next request goes through: fail_next is one-shot
    assert channel.send(message()).status == "sent"


def test_rate_limit_carries_retry_after(fake, channel):
    fake.fail_next("rate_limit")
    with pytest.raises(RetryableError) as info:
        channel.send(message())
    assert info.value.retry_after == 1.0


def test_per_recipient_rule(fake, channel):
    fake.set_rule(OTHER_MOBILE, "opt_out")
    try:
        with pytest.raises(OptOutError):
            channel.send(message(to=OTHER_MOBILE))
        assert channel.send(message(to=MOBILE)).status == "sent"
        with pytest.raises(OptOutError):
            channel.send(message(to=OTHER_MOBILE))
    finally:
        fake.clear_rule(OTHER_MOBILE)


def test_connection_refused_is_retryable(fake, base):
    channel = TwilioSmsChannel(
        make_settings(fake, base, api_base_url=f"http://127.0.0.1:{free_closed_port()}")
    )
    with pytest.raises(RetryableError) as info:
        channel.send(message())
    assert info.value.code == "connection_error"


def test_non_mobile_number_is_refused_without_any_http_call(fake, channel):
    before = len(fake.requests)
    for to in (LANDLINE, "+4915112345678", "", "not a number"):
        with pytest.raises(RecipientError) as info:
            channel.send(message(to=to))
        assert info.value.code == "not_mobile"
    assert len(fake.requests) == before


def test_errors_and_logs_never_carry_the_phone_number_or_body(fake, channel, caplog):
    caplog.set_level(logging.DEBUG)
    fake.fail_next("invalid_number")  # Twilio's own message quotes the number
    with pytest.raises(RecipientError) as info:
        channel.send(message(text="Texte personnel", message_id=77))
    channel.send(message(text="Texte personnel", message_id=78))
    assert MOBILE not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert MOBILE not in caplog.text
    assert "Texte personnel" not in caplog.text
    assert "77" in caplog.text and "78" in caplog.text


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize("sender", ["DEPT35RSA", "A", "RSA35", "abcdefghijk", "35RSA"])
def test_good_sender_ids(fake, sender):
    assert make_settings(fake, sender_id=sender).sender_id == sender


@pytest.mark.parametrize("sender", ["", "TOOLONGSENDER1", "12345", "ab-cd", "DEPT 35", "DÉPT35"])
def test_bad_sender_ids(fake, sender):
    with pytest.raises(ValueError, match="sender"):
        make_settings(fake, sender_id=sender)


def test_exactly_one_sender(fake):
    with pytest.raises(ValueError, match="exactly one"):
        make_settings(fake, sender_id="DEPT35RSA", messaging_service_sid=MESSAGING_SERVICE_SID)
    with pytest.raises(ValueError, match="exactly one"):
        make_settings(fake, sender_id=None)
    with pytest.raises(ValueError, match="Messaging Service"):
        make_settings(fake, sender_id=None, messaging_service_sid="MG123")


@pytest.mark.parametrize("validity", [0, -1, 36001, 86400, 3.5, True, "3600"])
def test_bad_validity_period(fake, validity):
    with pytest.raises(ValueError, match="validity_period"):
        make_settings(fake, validity_period=validity)


@pytest.mark.parametrize("url", ["", "relance.example.org", "ftp://x.org", "https://my_host.org"])
def test_bad_callback_base(fake, url):
    with pytest.raises(ValueError, match="status_callback_base_url"):
        make_settings(fake, url)


def test_callback_base_trailing_slash_and_token_not_in_repr(fake):
    settings = make_settings(fake, "https://relance.example.org/")
    assert TwilioSmsChannel(settings).callback_url(5) == "https://relance.example.org/twilio/status/5"
    assert fake.auth_token not in repr(settings)


# --------------------------------------------------------------- callbacks
def test_callbacks_are_signed_and_verified(fake):
    fake.reset()
    with CallbackReceiver(fake.auth_token) as receiver:
        channel = TwilioSmsChannel(make_settings(fake, receiver.base_url))
        delivery = channel.send(message(message_id=901))
        callbacks = fake.wait_for_callbacks(2, timeout=5)

    assert [c.message_status for c in callbacks] == ["sent", "delivered"]
    assert all(c.status_code == 204 and c.attempts == 1 for c in callbacks)
    assert [path for path, _, _ in receiver.received] == ["/twilio/status/901"] * 2
    assert all(ok for _, _, ok in receiver.received)
    parsed = parse_status_callback(receiver.received[-1][1])
    assert parsed.message_sid == delivery.provider_ref
    assert parsed.status == "delivered" and parsed.error_code is None


def test_wrong_signature_is_rejected(fake):
    url = status_callback_url("https://relance.example.org", 12)
    params = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered", "AccountSid": fake.account_sid}
    from twilio.request_validator import RequestValidator

    good = RequestValidator(fake.auth_token).compute_signature(url, params)
    assert verify_signature(fake.auth_token, url, params, good)
    assert not verify_signature(fake.auth_token, url, params, None)
    assert not verify_signature(fake.auth_token, url, params, "")
    assert not verify_signature(fake.auth_token, url, params, "bm90LWEtc2lnbmF0dXJl")
    assert not verify_signature("another-token", url, params, good)
    assert not verify_signature(fake.auth_token, url, {**params, "MessageStatus": "failed"}, good)
    assert not verify_signature(fake.auth_token, url.replace("/12", "/13"), params, good)


def test_unsigned_callback_is_refused_by_receiver(fake):
    # A receiver holding another token answers 403: the fake records it and
    # does not retry a 4xx.
    fake.reset()
    with CallbackReceiver("another-token") as receiver:
        channel = TwilioSmsChannel(make_settings(fake, receiver.base_url))
        channel.send(message())
        callbacks = fake.wait_for_callbacks(2, timeout=5)
    assert [c.status_code for c in callbacks] == [403, 403]
    assert [c.attempts for c in callbacks] == [1, 1]


def test_undelivered_callback_flags_the_phone(fake):
    fake.reset()
    fake.set_rule(OTHER_MOBILE, "undelivered")
    try:
        with CallbackReceiver(fake.auth_token) as receiver:
            channel = TwilioSmsChannel(make_settings(fake, receiver.base_url))
            channel.send(message(to=OTHER_MOBILE))
            callbacks = fake.wait_for_callbacks(2, timeout=5)
    finally:
        fake.clear_rule(OTHER_MOBILE)
    last = parse_status_callback(callbacks[-1].params)
    assert last.twilio_status == "undelivered" and last.status == "failed"
    assert last.error_code == 30006
    assert is_permanent_recipient_failure(last.error_code) == "sms_failed"
    assert next_status("sent", last.twilio_status) == "failed"


def test_no_callback_kind(fake, channel):
    fake.fail_next("no_callback")
    channel.send(message())
    fake.wait_idle(timeout=5)
    assert fake.callbacks == []


def test_callback_delivery_is_bounded(fake):
    fake.reset()
    with CallbackReceiver(fake.auth_token, answer=500) as receiver:
        channel = TwilioSmsChannel(make_settings(fake, receiver.base_url))
        channel.send(message())
        callbacks = fake.wait_for_callbacks(2, timeout=10)
        fake.wait_idle(timeout=5)
    assert [c.attempts for c in callbacks] == [4, 4]  # 1 try + 3 retries
    assert [c.status_code for c in callbacks] == [500, 500]
    assert len(receiver.received) == 8


# ---------------------------------------------------------- status helpers
def test_status_map_targets_are_ranked():
    assert set(STATUS_MAP.values()) <= set(STATUS_RANK)
    assert STATUS_MAP["undelivered"] == "failed"
    assert STATUS_MAP["sending"] == "sent"


@pytest.mark.parametrize(
    "current, incoming, expected",
    [
        ("sending", "queued", "sent"),
        ("sending", "sent", "sent"),
        ("sent", "sent", None),
        ("sent", "delivered", "delivered"),
        ("delivered", "delivered", None),
        ("delivered", "sent", None),
        ("delivered", "failed", None),
        ("delivered", "undelivered", None),
        ("sent", "undelivered", "failed"),
        ("failed", "undelivered", None),
        ("failed", "delivered", "delivered"),  # a late delivery receipt wins
        ("sending", "read", "delivered"),
        ("sent", "receiving", None),  # unknown to us: ignored
        ("technical-failure", "failed", None),
    ],
)
def test_next_status(current, incoming, expected):
    assert next_status(current, incoming) == expected


@given(st.lists(st.sampled_from(sorted(STATUS_MAP)), max_size=20))
def test_next_status_never_moves_backwards(incoming):
    current = "sending"
    seen = [current]
    delivered_at = None
    for i, twilio_status in enumerate(incoming):
        new = next_status(current, twilio_status)
        seen.append(STATUS_MAP[twilio_status])
        if new is not None:
            assert new != current
            assert STATUS_RANK[new] > STATUS_RANK[current]
            assert current != "delivered"
            current = new
        if current == "delivered" and delivered_at is None:
            delivered_at = i
    assert current == max(seen, key=STATUS_RANK.__getitem__)
    if delivered_at is not None:
        assert current == "delivered"


@pytest.mark.parametrize(
    "code, expected",
    [
        ("30005", "sms_failed"), (30006, "sms_failed"),
        (21211, "sms_failed"), ("21614", "sms_failed"), (21635, "sms_failed"), (21610, "sms_opt_out"),
        # 30003 (unreachable handset) is usually temporary (https://www.twilio.com/docs/api/errors/30003):
        # the message is sent again, the phone is not flagged (it was "sms_failed" before issue 11)
        (30003, None),
        # the account's Geo Permissions / the sender (21408, 21612): never the person's phone
        (21408, None), ("21612", None),
        (30004, None), (30007, None), (30008, None), (None, None), ("", None), ("abc", None),
    ],
)
def test_is_permanent_recipient_failure(code, expected):
    assert is_permanent_recipient_failure(code) == expected


@pytest.mark.parametrize("code, kind", [
    (21408, "account"), ("21612", "account"), (21635, "not_mobile"), (30003, "temporary"),
    (21610, "opt_out"), (30006, "unusable"), (21211, "unusable"), (30008, None), (None, None), ("x", None),
])
def test_error_code_kind(code, kind):
    assert error_code_kind(code) == kind


def test_account_errors_are_logged_as_an_ops_alert_without_the_number(fake, channel, caplog):
    caplog.set_level(logging.INFO)
    fake.fail_next("geo_permission")
    with pytest.raises(TechnicalError) as info:
        channel.send(message(to="+262692123456"))
    assert info.value.code == 21408 and "+262692123456" not in str(info.value)
    alerts = [r for r in caplog.records if "OPS ALERT" in r.getMessage()]
    assert alerts and "+262692123456" not in caplog.text


def test_partially_delivered_is_a_status_and_unreachable_is_30003(fake):
    fake.reset()
    with CallbackReceiver(fake.auth_token) as receiver:
        channel = TwilioSmsChannel(make_settings(fake, receiver.base_url))
        fake.fail_next("partial")
        channel.send(message())
        fake.fail_next("unreachable")
        channel.send(message(message_id=43))
        callbacks = fake.wait_for_callbacks(4, timeout=5)
    statuses = {(c.message_status, c.params.get("ErrorCode")) for c in callbacks}
    assert ("partially_delivered", None) in statuses and ("undelivered", "30003") in statuses
    parsed = parse_status_callback(next(c.params for c in callbacks if c.message_status == "partially_delivered"))
    assert parsed.status == "sent"  # recorded on the message, not a delivery nor a failure
    assert next_status("delivered", "partially_delivered") is None
