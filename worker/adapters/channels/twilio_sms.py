"""SMS through Twilio's Programmable Messaging API (the official twilio client).

One ``messages.create`` per :class:`OutgoingMessage`; no retry here (the send
task retries :class:`RetryableError` with backoff). Thread-safe: a worker sends a
batch's messages concurrently over one pool of kept-alive connections. Bodies are transliterated
to GSM-7 first so a stray "œ" or "’" never turns a 1-part SMS into a 3-part
UCS-2 one. Logs carry the message id, Twilio SID and error code only: never
the phone number, the body, or Twilio's error text (which quotes the number).
"""
from __future__ import annotations

import email.utils
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry
from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from worker.adapters.channels.base import (
    ChannelError,
    Delivery,
    OptOutError,
    OutgoingMessage,
    RecipientError,
    RetryableError,
    TechnicalError,
)
from worker.domain.contact import is_textable_mobile
from worker.domain.gsm7 import sms_body, sms_segments
from worker.adapters.channels.twilio_callbacks import ACCOUNT_ERROR_CODES, status_callback_url

log = logging.getLogger(__name__)

# Twilio accepts ValidityPeriod from 1 to 36000 seconds (10 hours); 36000 is
# also its default (errors 21624 / 90007 / warning 30045).
MAX_VALIDITY_PERIOD = 36000
MAX_BODY_CHARS = 1600  # Twilio rejects longer bodies (error 21617)

_SENDER_ID_RE = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9]{1,11}$", re.ASCII)
_MESSAGING_SERVICE_RE = re.compile(r"^MG[0-9a-fA-F]{32}$", re.ASCII)

RATE_LIMIT_CODES = frozenset({20429})
OPT_OUT_CODES = frozenset({21610})
RECIPIENT_CODES = frozenset({
    21211,  # invalid 'To' number
    21614,  # 'To' is not a mobile number
    21635,  # 'To' number cannot be a landline (the phone is flagged "not_mobile")
    30006,  # landline or unreachable carrier
    21217,  # phone number does not appear valid
    21401,  # invalid phone number
    21407,  # this number is not supported
})
# 21408 (Messaging Geo Permissions: the destination's country code is disabled for
# the account) and 21612 (this To/From combination cannot be routed: sender ID
# restrictions, unregistered alphanumeric sender) are the account's or the
# sender's problem, not the number's: TechnicalError, an alert for ops, and the
# person's phone is kept. Sources: twilio_callbacks.ACCOUNT_ERROR_CODES.


def _check_http_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http(s) URL with a host name, got {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"{what} must not carry a query string or fragment, got {value!r}")
    if "_" in parts.hostname:
        raise ValueError(f"{what}: Twilio rejects host names with underscores, got {value!r}")
    return value.rstrip("/")


@dataclass(frozen=True, kw_only=True)
class TwilioSettings:
    """How to reach Twilio. Exactly one of ``messaging_service_sid`` / ``sender_id``."""

    account_sid: str
    auth_token: str = field(repr=False)
    status_callback_base_url: str  # public base URL, e.g. https://relance.example.org
    messaging_service_sid: str | None = None
    sender_id: str | None = None  # alphanumeric sender: 1-11 ASCII letters/digits, >= 1 letter
    validity_period: int = MAX_VALIDITY_PERIOD  # seconds, 1..36000
    api_base_url: str | None = None  # e.g. http://127.0.0.1:PORT (fake server); None = Twilio
    request_timeout: float = 15.0  # seconds, per HTTP request to the API
    pool_size: int = 32  # connections kept open to the API (RELANCE_SEND_CONCURRENCY requests at once)

    def __post_init__(self) -> None:
        if not self.account_sid or not self.account_sid.strip():
            raise ValueError("TwilioSettings.account_sid is required")
        if not self.auth_token:
            raise ValueError("TwilioSettings.auth_token is required")
        if (self.messaging_service_sid is None) == (self.sender_id is None):
            raise ValueError(
                "TwilioSettings: set exactly one of messaging_service_sid or sender_id"
            )
        if self.sender_id is not None and not _SENDER_ID_RE.fullmatch(self.sender_id):
            raise ValueError(
                f"TwilioSettings.sender_id {self.sender_id!r} is not a valid alphanumeric "
                "sender ID: 1 to 11 characters, ASCII letters and digits only, "
                "with at least one letter"
            )
        if self.messaging_service_sid is not None and not _MESSAGING_SERVICE_RE.fullmatch(
            self.messaging_service_sid
        ):
            raise ValueError(
                f"TwilioSettings.messaging_service_sid {self.messaging_service_sid!r} is not "
                "a Messaging Service SID ('MG' followed by 32 hexadecimal digits)"
            )
        if (
            isinstance(self.validity_period, bool)
            or not isinstance(self.validity_period, int)
            or not 1 <= self.validity_period <= MAX_VALIDITY_PERIOD
        ):
            raise ValueError(
                f"TwilioSettings.validity_period must be an integer number of seconds "
                f"from 1 to {MAX_VALIDITY_PERIOD} (Twilio's maximum, 10 hours), "
                f"got {self.validity_period!r}"
            )
        if not self.request_timeout or self.request_timeout <= 0:
            raise ValueError("TwilioSettings.request_timeout must be > 0 seconds")
        object.__setattr__(
            self,
            "status_callback_base_url",
            _check_http_url(self.status_callback_base_url or "", "status_callback_base_url"),
        )
        if self.api_base_url is not None:
            object.__setattr__(
                self, "api_base_url", _check_http_url(self.api_base_url, "api_base_url")
            )


class RelanceTwilioHttpClient(TwilioHttpClient):
    """The stock requests-based client, plus two things.

    * ``api_base_url``: every request to ``https://*.twilio.com`` is sent to
      that base instead (scheme and host replaced, path and query kept), which
      is how tests point the real client at a fake server. The twilio library
      itself only offers region/edge (still ``*.twilio.com``) for hosts.
    * the last response of the *current thread* is kept, because
      ``TwilioRestException`` does not carry the response headers and we want
      ``Retry-After``.
    """

    def __init__(self, api_base_url: str | None = None, pool_size: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.api_base_url = api_base_url.rstrip("/") if api_base_url else None
        self._local = threading.local()
        # One pool of kept-alive connections (TLS set up once each), as many as the requests a worker
        # makes at once: the stock client keeps min(32, CPUs + 4) for https and 10 for http.
        # A connection that could not be opened is opened again (twice at most): nothing was sent on it.
        # Nothing else is retried here: a request that may have reached Twilio is the send service's.
        retry = Retry(total=2, connect=2, read=0, redirect=0, status=0, other=0, raise_on_status=False)
        for prefix in ("https://", "http://") if self.session is not None else ():
            self.session.mount(prefix, HTTPAdapter(pool_connections=2, pool_maxsize=max(1, pool_size),
                                                   max_retries=retry))

    def _rewrite(self, url: str) -> str:
        if not self.api_base_url:
            return url
        parts = urlsplit(url)
        if not (parts.hostname or "").endswith("twilio.com"):
            return url
        base = urlsplit(self.api_base_url)
        path = base.path.rstrip("/") + parts.path
        return urlunsplit((base.scheme, base.netloc, path, parts.query, parts.fragment))

    @property
    def thread_last_response(self) -> Response | None:
        return getattr(self._local, "response", None)

    def request(self, method, url, *args, **kwargs) -> Response:
        self._local.response = None
        response = super().request(method, self._rewrite(url), *args, **kwargs)
        self._local.response = response
        return response


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class TwilioSmsChannel:
    """The ``sms`` channel backed by Twilio."""

    name = "sms"
    is_local = False

    def __init__(self, settings: TwilioSettings, *, client: Client | None = None):
        self.settings = settings
        self.http_client = RelanceTwilioHttpClient(
            api_base_url=settings.api_base_url, timeout=settings.request_timeout, pool_size=settings.pool_size
        )
        self.client = client or Client(
            settings.account_sid, settings.auth_token, http_client=self.http_client
        )

    def callback_url(self, message_id: int | str) -> str:
        return status_callback_url(self.settings.status_callback_base_url, message_id)

    def send(self, message: OutgoingMessage) -> Delivery:
        if not is_textable_mobile(message.to):
            log.info("sms %s not sent: recipient is not a textable mobile", message.message_id)
            raise RecipientError("recipient is not a French mobile number", code="not_mobile")
        body = sms_body(message.text or "")  # GSM-7 when it can, UCS-2 for Arabic
        if not body.strip():
            raise TechnicalError("SMS body is empty", code="empty_body")
        if len(body) > MAX_BODY_CHARS:
            raise TechnicalError(
                f"SMS body is {len(body)} characters, Twilio accepts {MAX_BODY_CHARS}",
                code="body_too_long",
            )
        kwargs = {
            "to": message.to,
            "body": body,
            "status_callback": self.callback_url(message.message_id),
            "validity_period": self.settings.validity_period,
        }
        if self.settings.messaging_service_sid:
            kwargs["messaging_service_sid"] = self.settings.messaging_service_sid
        else:
            kwargs["from_"] = self.settings.sender_id
        try:
            created = self.client.messages.create(**kwargs)
        except TwilioException as exc:  # TwilioRestException, TwilioServiceException
            error = self._map_twilio_error(exc)
            log.warning(
                "sms %s: Twilio refused it (HTTP %s, code %s) -> %s",
                message.message_id, getattr(exc, "status", None), error.code, error.kind,
            )
            if error.code in ACCOUNT_ERROR_CODES:
                log.error("OPS ALERT: Twilio code %s for sms %s: the account or the sender cannot reach this "
                          "destination (geo permissions, sender ID); the phone is kept", error.code,
                          message.message_id)
            raise error from None  # the original's text quotes the phone number
        except requests.exceptions.RequestException as exc:
            error = self._map_network_error(exc)
            log.warning(
                "sms %s: network error talking to Twilio (%s) -> %s",
                message.message_id, type(exc).__name__, error.kind,
            )
            raise error from None
        parts = sms_segments(body)
        log.info("sms %s handed to Twilio as %s (%d segment(s))", message.message_id, created.sid, parts)
        return Delivery(
            status="sent", provider_ref=created.sid, segments=parts, detail=created.status
        )

    def _map_twilio_error(self, exc: Exception) -> ChannelError:
        status = getattr(exc, "status", None)
        code = getattr(exc, "code", None)
        try:
            status = int(status) if status is not None else None
        except (TypeError, ValueError):
            status = None
        try:
            code = int(code) if code is not None else None
        except (TypeError, ValueError):
            pass
        label = f"Twilio error {code} (HTTP {status})"
        if status == 429 or code in RATE_LIMIT_CODES:
            response = self.http_client.thread_last_response
            retry_after = None
            if response is not None and response.headers is not None:
                retry_after = _parse_retry_after(response.headers.get("Retry-After"))
            return RetryableError(f"{label}: rate limited", code=code or 20429, retry_after=retry_after)
        if code in OPT_OUT_CODES:
            return OptOutError(f"{label}: the recipient opted out (STOP)", code=code)
        if code in ACCOUNT_ERROR_CODES:
            return TechnicalError(f"{label}: account or sender problem, not the recipient's number", code=code)
        if code in RECIPIENT_CODES:
            return RecipientError(f"{label}: the recipient number cannot receive this SMS", code=code)
        if status is not None and status >= 500:
            return RetryableError(f"{label}: Twilio server error", code=code or status)
        return TechnicalError(label, code=code if code is not None else status)

    @staticmethod
    def _map_network_error(exc: requests.exceptions.RequestException) -> ChannelError:
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return RetryableError("timed out connecting to Twilio", code="connect_timeout")
        if isinstance(exc, requests.exceptions.Timeout):
            # The request went out: Twilio may have accepted the message.
            return RetryableError("timed out waiting for Twilio's answer", code="read_timeout")
        if isinstance(exc, requests.exceptions.ConnectionError):
            return RetryableError("could not connect to Twilio", code="connection_error")
        return TechnicalError(f"HTTP client error: {type(exc).__name__}", code="http_client_error")
