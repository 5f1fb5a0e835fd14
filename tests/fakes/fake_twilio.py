"""A fake Twilio REST API for tests: a real HTTP server on 127.0.0.1.

It speaks enough of the Messages API for the official ``twilio`` client:

* ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form-encoded,
  HTTP basic auth with the account SID and auth token; 401 code 20003 on
  wrong credentials) answers 201 with a Twilio-like JSON message (``SM`` +
  32 hex SID, status "queued" / "accepted" with a Messaging Service);
* ``GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json`` fetches it.

Every accepted message is recorded (:attr:`FakeTwilio.messages`). A worker
thread then POSTs **signed** status callbacks (X-Twilio-Signature computed
with ``twilio.request_validator.RequestValidator`` over the exact callback URL
and form fields) to the message's ``StatusCallback``: "sent" then "delivered"
by default. Each callback is tried at most 1 + ``callback_retries`` times
(retried on network errors and 5xx), then given up; every outcome is recorded
in :attr:`FakeTwilio.callbacks`.

Errors are injected with :meth:`FakeTwilio.fail_next` (the next N requests,
whoever they are for) or :meth:`FakeTwilio.set_rule` (every message to one
number); ``fail_next`` wins over rules. Kinds:

==================  ===========================================================
``rate_limit``      HTTP 429, code 20429, ``Retry-After: <retry_after>``
``server_error``    HTTP 500, code 20500
``unavailable``     HTTP 503, code 20503
``invalid_number``  HTTP 400, code 21211 (message quotes the number, like Twilio)
``not_mobile``      HTTP 400, code 21614
``landline``        HTTP 400, code 21635 ('To' number cannot be a landline)
``geo_permission``  HTTP 400, code 21408 (destination disabled in Geo Permissions)
``bad_route``       HTTP 400, code 21612 (this To/From combination cannot be routed)
``opt_out``         HTTP 400, code 21610
``unknown``         HTTP 400, code 99999
``undelivered``     201, then callbacks sent -> undelivered (ErrorCode 30006)
``unreachable``     201, then callbacks sent -> undelivered (ErrorCode 30003, handset off)
``partial``         201, then callbacks sent -> partially_delivered
``failed``          201, then one callback failed (ErrorCode 30008)
``out_of_order``    201, then callbacks delivered -> sent (a late "sent")
``no_callback``     201, no callback at all
==================  ===========================================================

``error_code=`` overrides the code of any kind (e.g. undelivered with 30003).

``response_delay=`` seconds before each POST is answered (the real API takes 100-300 ms);
``keep_alive=True`` speaks HTTP/1.1 with kept-alive connections (the real API does), so that
a client's connection pool is used (benchmarks).

Usage::

    with FakeTwilio() as fake:
        settings = TwilioSettings(account_sid=fake.account_sid,
                                  auth_token=fake.auth_token,
                                  api_base_url=fake.url, ...)
        ...
        fake.wait_for_callbacks(2, timeout=5)
"""
from __future__ import annotations

import base64
import json
import logging
import math
import re
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twilio.request_validator import RequestValidator

from worker.domain.gsm7 import is_gsm7, segments

DEFAULT_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
DEFAULT_AUTH_TOKEN = "fake-twilio-auth-token"
API_VERSION = "2010-04-01"

# kind -> (HTTP status, Twilio code, message)
ERROR_KINDS: dict[str, tuple[int, int, str]] = {
    "rate_limit": (429, 20429, "Too Many Requests"),
    "server_error": (500, 20500, "Internal Server Error"),
    "unavailable": (503, 20503, "Service Unavailable"),
    "invalid_number": (400, 21211, "The 'To' number {to} is not a valid phone number."),
    "not_mobile": (400, 21614, "'To' number {to} is not a valid mobile number"),
    "landline": (400, 21635, "'To' number {to} cannot be a landline"),
    "geo_permission": (400, 21408, "Permission to send an SMS has not been enabled for the region "
                                   "indicated by the 'To' number: {to}"),
    "bad_route": (400, 21612, "Message cannot be sent with the current combination of 'To' ({to}) "
                              "and/or 'From' parameters"),
    "opt_out": (400, 21610, "Attempt to send to unsubscribed recipient"),
    "unknown": (400, 99999, "Something unexpected happened"),
}
# kind -> callback sequence of (MessageStatus, default ErrorCode)
CALLBACK_KINDS: dict[str, tuple[tuple[str, int | None], ...]] = {
    "deliver": (("sent", None), ("delivered", None)),
    "undelivered": (("sent", None), ("undelivered", 30006)),
    "unreachable": (("sent", None), ("undelivered", 30003)),
    "partial": (("sent", None), ("partially_delivered", None)),
    "failed": (("failed", 30008),),
    "out_of_order": (("delivered", None), ("sent", None)),
    "no_callback": (),
}
KINDS = frozenset(ERROR_KINDS) | frozenset(CALLBACK_KINDS)

_MESSAGES_RE = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json$")
_MESSAGE_RE = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)\.json$")


@dataclass
class FakeMessage:
    sid: str
    account_sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    status_callback: str | None
    validity_period: int | None
    num_segments: int
    params: dict[str, str]  # every form field the client sent
    kind: str = "deliver"
    status: str = "queued"
    generation: int = 0  # reset() bumps the fake's generation: older callbacks are dropped
    error_code: int | None = None
    date_created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass
class FakeCallback:
    message_sid: str
    url: str
    params: dict[str, str]
    signature: str
    status_code: int | None  # what the receiver answered (last attempt); None: unreachable
    attempts: int
    error: str | None = None

    @property
    def message_status(self) -> str:
        return self.params["MessageStatus"]


@dataclass
class FakeRequest:
    method: str
    path: str
    status: int
    to: str | None = None


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _rfc2822(when: datetime) -> str:
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    return (
        f"{days[when.weekday()]}, {when.day:02d} {months[when.month - 1]} {when.year} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} +0000"
    )


def _num_segments(body: str) -> int:
    if is_gsm7(body):
        return segments(body)
    units = len(body.encode("utf-16-le")) // 2  # UCS-2 / UTF-16 code units
    return 1 if units <= 70 else math.ceil(units / 67)


class FakeTwilio:
    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        retry_after: str | None = "1",
        callback_delay: float = 0.0,
        callback_retries: int = 3,
        callback_retry_delay: float = 0.05,
        callback_timeout: float = 5.0,
        response_delay: float = 0.0,
        keep_alive: bool = False,
    ):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.host = host
        self._port = port  # 0: any free port
        self.retry_after = retry_after
        self.callback_delay = callback_delay
        self.callback_retries = callback_retries
        self.callback_retry_delay = callback_retry_delay
        self.callback_timeout = callback_timeout
        # Seconds before each message request is answered (the real API takes 100-300 ms), and
        # HTTP/1.1 kept-alive connections (the real API's), so that clients can pool them.
        self.response_delay = response_delay
        self.keep_alive = keep_alive

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._messages: list[FakeMessage] = []
        self._callbacks: list[FakeCallback] = []
        self._requests: list[FakeRequest] = []
        self._fail_queue: deque[tuple[str, int | None]] = deque()
        self._rules: dict[str, tuple[str, int | None]] = {}
        self._pending: deque[FakeMessage] = deque()
        self._inflight = 0  # messages whose callbacks are not all done
        self._generation = 0
        self._stopping = False
        self._server: ThreadingHTTPServer | None = None
        self._server_thread: threading.Thread | None = None
        self._callback_thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "FakeTwilio":
        if self._server is not None:
            return self
        # Kept-alive connections want TCP_NODELAY: headers and body go in two writes, and Nagle's
        # algorithm would hold the body until the client's delayed ACK (40 ms).
        handler = type("FakeTwilioHandler", (_Handler,), {
            "fake": self, "protocol_version": "HTTP/1.1" if self.keep_alive else "HTTP/1.0",
            "disable_nagle_algorithm": self.keep_alive})
        server_class = type("FakeTwilioServer", (ThreadingHTTPServer,), {"request_queue_size": 128})
        self._server = server_class((self.host, self._port), handler)  # many clients connecting at once
        self._server.daemon_threads = True
        self._stopping = False
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="fake-twilio-http", daemon=True,
        )
        self._server_thread.start()
        self._callback_thread = threading.Thread(
            target=self._callback_loop, name="fake-twilio-callbacks", daemon=True
        )
        self._callback_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._callback_thread is not None:
            self._callback_thread.join(timeout)
            self._callback_thread = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._server_thread is not None:
            self._server_thread.join(timeout)
            self._server_thread = None

    def __enter__(self) -> "FakeTwilio":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeTwilio is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL to give the client instead of https://api.twilio.com."""
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------ error injection
    def fail_next(self, kind: str, count: int = 1, *, error_code: int | None = None) -> None:
        """Apply ``kind`` to the next ``count`` message requests, whatever their recipient."""
        self._check_kind(kind)
        with self._lock:
            self._fail_queue.extend([(kind, error_code)] * count)

    def set_rule(self, to_number: str, kind: str, *, error_code: int | None = None) -> None:
        """Apply ``kind`` to every message sent to ``to_number`` (E.164)."""
        self._check_kind(kind)
        with self._lock:
            self._rules[to_number] = (kind, error_code)

    def clear_rule(self, to_number: str) -> None:
        with self._lock:
            self._rules.pop(to_number, None)

    def reset(self) -> None:
        """Forget rules, queued failures, pending callbacks and everything recorded.

        A callback being posted at the time of the reset is finished but not recorded.
        """
        with self._changed:
            self._generation += 1
            self._inflight -= len(self._pending)
            self._pending.clear()
            self._changed.notify_all()
            self._fail_queue.clear()
            self._rules.clear()
            self._messages.clear()
            self._callbacks.clear()
            self._requests.clear()

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown fake Twilio kind {kind!r}; expected one of {sorted(KINDS)}")

    # ------------------------------------------------------------- records
    @property
    def messages(self) -> list[FakeMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def callbacks(self) -> list[FakeCallback]:
        with self._lock:
            return list(self._callbacks)

    @property
    def requests(self) -> list[FakeRequest]:
        """Every HTTP request the fake answered (accepted or not)."""
        with self._lock:
            return list(self._requests)

    def wait_for_callbacks(self, n: int, timeout: float = 5.0) -> list[FakeCallback]:
        """Block until at least ``n`` callbacks were attempted; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._callbacks) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"fake Twilio: {len(self._callbacks)} callback(s) after {timeout}s, "
                        f"expected {n}"
                    )
                self._changed.wait(remaining)
            return list(self._callbacks)

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Block until every accepted message's callbacks are done (or given up)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"fake Twilio: callbacks still pending after {timeout}s")
                self._changed.wait(remaining)

    # ------------------------------------------------------------ internals
    def _record_request(self, method: str, path: str, status: int, to: str | None = None) -> None:
        with self._lock:
            self._requests.append(FakeRequest(method, path, status, to))

    def _kind_for(self, to: str) -> tuple[str, int | None]:
        with self._lock:
            if self._fail_queue:
                return self._fail_queue.popleft()
            return self._rules.get(to, ("deliver", None))

    def _accept(self, params: dict[str, str], kind: str, error_code: int | None) -> FakeMessage:
        body = params.get("Body", "")
        validity = params.get("ValidityPeriod")
        message = FakeMessage(
            sid=_new_sid("SM"),
            account_sid=self.account_sid,
            to=params["To"],
            from_=params.get("From"),
            messaging_service_sid=params.get("MessagingServiceSid"),
            body=body,
            status_callback=params.get("StatusCallback"),
            validity_period=int(validity) if validity else None,
            num_segments=_num_segments(body),
            params=dict(params),
            kind=kind,
            status="accepted" if params.get("MessagingServiceSid") else "queued",
            error_code=error_code,
        )
        with self._changed:
            message.generation = self._generation
            self._messages.append(message)
            if message.status_callback and CALLBACK_KINDS[kind]:
                self._pending.append(message)
                self._inflight += 1
                self._changed.notify_all()
        return message

    def message_json(self, m: FakeMessage) -> dict:
        uri = f"/{API_VERSION}/Accounts/{m.account_sid}/Messages/{m.sid}.json"
        created = _rfc2822(m.date_created)
        return {
            "account_sid": m.account_sid,
            "api_version": API_VERSION,
            "body": m.body,
            "date_created": created,
            "date_sent": None,
            "date_updated": created,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": m.from_,
            "messaging_service_sid": m.messaging_service_sid,
            "num_media": "0",
            "num_segments": str(m.num_segments),
            "price": None,
            "price_unit": "USD",
            "sid": m.sid,
            "status": m.status,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": m.to,
            "uri": uri,
        }

    def _callback_loop(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._stopping:
                    self._changed.wait()
                if self._stopping:
                    return
                message = self._pending.popleft()
            try:
                for status, default_code in CALLBACK_KINDS[message.kind]:
                    if self._stopping or message.generation != self._generation:
                        break
                    code = message.error_code if message.error_code is not None else default_code
                    self._post_callback(message, status, code)
            except Exception:  # never let one bad callback kill the worker thread
                logging.getLogger(__name__).exception("fake Twilio: callback worker error")
            finally:
                with self._changed:
                    self._inflight -= 1
                    self._changed.notify_all()

    def _post_callback(self, message: FakeMessage, status: str, error_code: int | None) -> None:
        if self.callback_delay:
            time.sleep(self.callback_delay)
        url = message.status_callback
        params = {
            "AccountSid": message.account_sid,
            "ApiVersion": API_VERSION,
            "From": message.from_ or "RELANCE",
            "MessageSid": message.sid,
            "MessageStatus": status,
            "SmsSid": message.sid,
            "SmsStatus": status,
            "To": message.to,
        }
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        if status in ("failed", "undelivered") and error_code is not None:
            params["ErrorCode"] = str(error_code)
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        data = urllib.parse.urlencode(params).encode()
        status_code: int | None = None
        error: str | None = None
        attempts = 0
        while True:
            attempts += 1
            request = urllib.request.Request(
                url, data=data, method="POST",
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": signature,
                    "User-Agent": "TwilioProxy/1.1",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=self.callback_timeout) as response:
                    status_code, error = response.status, None
            except urllib.error.HTTPError as exc:
                status_code, error = exc.code, None
                exc.close()
            except (OSError, ValueError) as exc:  # refused, timeout, bad URL
                status_code, error = None, f"{type(exc).__name__}: {exc}"
            retryable = status_code is None or status_code >= 500
            stale = self._stopping or message.generation != self._generation
            if not retryable or attempts > self.callback_retries or stale:
                break
            time.sleep(self.callback_retry_delay * attempts)
        with self._changed:
            if message.generation != self._generation:
                return  # reset() happened meanwhile: not part of the current test
            message.status = status
            self._callbacks.append(
                FakeCallback(message.sid, url, params, signature, status_code, attempts, error)
            )
            self._changed.notify_all()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeTwilio  # set on the per-server subclass
    server_version = "FakeTwilio/1.0"

    def log_message(self, format, *args):  # keep test output quiet
        pass

    # ------------------------------------------------------------- helpers
    def _send_json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: int, message: str, headers=None, to=None) -> None:
        self.fake._record_request(self.command, self.path, status, to)
        self._send_json(
            status,
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            headers,
        )

    def _authorized(self, account: str) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except Exception:
            return False
        fake = self.fake
        return (
            secrets.compare_digest(user, fake.account_sid)
            and secrets.compare_digest(password, fake.auth_token)
            and account == fake.account_sid
        )

    def _read_form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        return {k: v[-1] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}

    # ------------------------------------------------------------- routes
    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        match = _MESSAGES_RE.match(path)
        params = self._read_form()
        if self.fake.response_delay:
            time.sleep(self.fake.response_delay)
        if not self._authorized(match.group("account") if match else self.fake.account_sid):
            self._error(401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'})
            return
        if not match:
            self._error(404, 20404, f"The requested resource {path} was not found")
            return
        to = params.get("To")
        if not to:
            self._error(400, 21604, "A 'To' phone number is required.")
            return
        if not params.get("Body"):
            self._error(400, 21602, "Message body is required.", to=to)
            return
        if not params.get("From") and not params.get("MessagingServiceSid"):
            self._error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required", to=to)
            return
        validity = params.get("ValidityPeriod")
        if validity is not None and (not validity.isdigit() or not 1 <= int(validity) <= 36000):
            self._error(400, 21624, "Invalid validity period value", to=to)
            return
        kind, error_code = self.fake._kind_for(to)
        if kind in ERROR_KINDS:
            status, code, text = ERROR_KINDS[kind]
            headers = {}
            if kind == "rate_limit" and self.fake.retry_after is not None:
                headers["Retry-After"] = self.fake.retry_after
            self._error(status, error_code or code, text.format(to=to), headers, to=to)
            return
        message = self.fake._accept(params, kind, error_code)
        self.fake._record_request(self.command, self.path, 201, to)
        self._send_json(201, self.fake.message_json(message))

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        match = _MESSAGE_RE.match(path)
        if not self._authorized(match.group("account") if match else self.fake.account_sid):
            self._error(401, 20003, "Authenticate")
            return
        found = None
        if match:
            found = next((m for m in self.fake.messages if m.sid == match.group("sid")), None)
        if found is None:
            self._error(404, 20404, f"The requested resource {path} was not found")
            return
        self.fake._record_request(self.command, self.path, 200)
        self._send_json(200, self.fake.message_json(found))


try:  # a fixture for test modules that want one: `from tests.fakes.fake_twilio import fake_twilio`
    import pytest

    @pytest.fixture
    def fake_twilio():
        with FakeTwilio() as fake:
            yield fake
except ImportError:  # pragma: no cover
    pass
