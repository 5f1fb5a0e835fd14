"""The API's guards: a cap on request bodies, a throttle on failed authentications, an access log.

* :class:`BodyLimit` (ASGI middleware): a body larger than ``RELANCE_API_MAX_BODY_BYTES``
  gets ``413`` — at once when ``Content-Length`` says so, otherwise as soon as that many
  bytes have been read (chunked uploads): a request never costs more memory than the cap,
  and nothing is read before it (the Twilio signature is checked on the whole body).
* :class:`AuthThrottle`: after ``RELANCE_API_AUTH_FAILURES_PER_MINUTE`` failed
  authentications (API key, Twilio signature) from one client address within a minute,
  that address gets ``429`` for every authenticated route until the minute has passed.
  Each failure is logged with the address, the route and the kind of failure — never the
  key or the signature that was tried.
* :class:`AccessLog` (ASGI middleware): one line per request: method, path (without the
  query string), status, duration, client address.

The client address is the one uvicorn gives: behind the TLS reverse proxy, let uvicorn
read ``X-Forwarded-For`` from it (``FORWARDED_ALLOW_IPS=<proxy address>``), otherwise
every client is the proxy and one of them failing would throttle the others.
"""
from __future__ import annotations

import collections
import json
import logging
import time
from typing import Callable

log = logging.getLogger("relance.api")
access_log = logging.getLogger("relance.api.access")

TOO_LARGE = {"detail": "corps de requête trop volumineux"}
THROTTLED = {"detail": "trop d'échecs d'authentification depuis cette adresse : réessayez dans une minute"}


class _BodyTooLarge(Exception):
    pass


async def _send_json(send, status: int, payload: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: ``413`` for a request body over ``max_bytes`` (or over the limit of the first
    path prefix of ``limits`` the path starts with: RDV-Solidarités' webhooks list every participant)."""

    def __init__(self, app, max_bytes: int, limits: dict[str, int] | None = None):
        self.app = app
        self.default = max_bytes
        self.limits = dict(limits or {})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        max_bytes = next((n for prefix, n in self.limits.items() if path.startswith(prefix)), self.default)
        declared = None
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                declared = value
                break
        if declared is not None:
            if not declared.strip().isdigit():
                return await _send_json(send, 400, {"detail": "en-tête Content-Length invalide"})
            if int(declared) > max_bytes:
                log.warning("request body refused: %s bytes declared on %s %s (limit %s)", int(declared),
                            scope.get("method"), scope.get("path", "")[:80], max_bytes)
                return await _send_json(send, 413, TOO_LARGE)
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            log.warning("request body refused: more than %s bytes on %s %s", max_bytes,
                        scope.get("method"), scope.get("path", "")[:80])
            if not started:
                await _send_json(send, 413, TOO_LARGE)


class AuthThrottle:
    """Failed authentications per client address over the last minute (in memory, per process)."""

    WINDOW = 60.0
    MAX_ADDRESSES = 10_000  # memory bound: the oldest addresses are forgotten first

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.clock = clock
        self._failures: collections.OrderedDict[str, collections.deque] = collections.OrderedDict()

    def _recent(self, address: str) -> collections.deque:
        q = self._failures.get(address)
        if q is None:
            return collections.deque()
        horizon = self.clock() - self.WINDOW
        while q and q[0] < horizon:
            q.popleft()
        if not q:
            self._failures.pop(address, None)
        return q

    def blocked(self, address: str) -> bool:
        return len(self._recent(address)) >= self.limit

    def failed(self, address: str, what: str, route: str) -> None:
        q = self._recent(address)
        if address not in self._failures:
            self._failures[address] = q
            while len(self._failures) > self.MAX_ADDRESSES:
                self._failures.popitem(last=False)
        q.append(self.clock())
        self._failures.move_to_end(address)
        log.warning("authentication failed (%s) from %s on %s: %d in the last minute%s", what, address, route,
                    len(q), " — address throttled for a minute" if len(q) == self.limit else "")


class AccessLog:
    """ASGI middleware: one log line per HTTP request (no query string, no body, no header)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = 500

        async def tracking_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            client = (scope.get("client") or ("-",))[0]
            access_log.info("%s %s %s %.0f ms from %s", scope.get("method"), scope.get("path", "")[:120], status,
                            (time.perf_counter() - t0) * 1000, client)


def client_address(request) -> str:
    return request.client.host if request.client else "-"


TWILIO_FORM = {
    "type": "object",
    "properties": {
        "MessageSid": {"type": "string"}, "MessageStatus": {"type": "string"}, "ErrorCode": {"type": "string"},
        "AccountSid": {"type": "string"}, "SmsSid": {"type": "string"}, "SmsStatus": {"type": "string"},
        "To": {"type": "string"}, "From": {"type": "string"}, "ApiVersion": {"type": "string"},
    },
}


# RDV-Solidarités' notification (docs/rdv-solidarites.md): what the webhook route reads of it.
RDVS_NOTIFICATION = {
    "type": "object",
    "properties": {
        "meta": {"type": "object", "properties": {
            "model": {"type": "string"}, "event": {"type": "string", "enum": ["created", "updated", "destroyed"]},
            "timestamp": {"type": "string"}}},
        "data": {"type": "object", "properties": {
            "id": {"type": "integer"}, "starts_at": {"type": "string"},
            "status": {"type": "string", "enum": ["unknown", "seen", "noshow", "excused", "revoked"]},
            "motif": {"type": "object"}, "organisation": {"type": "object"},
            "users": {"type": "array", "items": {"type": "object"}},
            "participations": {"type": "array", "items": {"type": "object"}}}},
    },
}


def openapi_extras(event_schema: dict) -> dict[str, dict]:
    """``openapi_extra`` of the routes that read their body themselves (to check a signature,
    or to answer in French): their request bodies, as the OpenAPI schema documents them."""
    return {
        "events": {"requestBody": {"required": True, "content": {"application/json": {"schema": event_schema}}}},
        "rdvs": {"requestBody": {"required": True, "content": {"application/json": {"schema": RDVS_NOTIFICATION}}},
                 "parameters": [{"name": "X-Lapin-Signature", "in": "header", "required": False,
                                 "schema": {"type": "string"}}]},
        "twilio": {"requestBody": {"required": True,
                                   "content": {"application/x-www-form-urlencoded": {"schema": TWILIO_FORM}}},
                   "parameters": [{"name": "X-Twilio-Signature", "in": "header", "required": False,
                                   "schema": {"type": "string"}}]},
    }
