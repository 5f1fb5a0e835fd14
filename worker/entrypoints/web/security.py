"""The workspace's protections: CSRF tokens, safe redirects, security headers.

* **CSRF**: every form carries the session's token (a random value kept in the signed, HttpOnly,
  SameSite=Lax session cookie); a POST without it, or with another, is refused (403) before anything
  is read or recorded. The token changes at sign-in.
* **Redirects** after sign-in go only to a path of the workspace (``/espace/…``): never to another site.
* **Headers** on every page: a strict Content-Security-Policy (no inline script or style, nothing from
  elsewhere), no framing, no MIME sniffing, no referrer outside the site, no cache (personal data).
"""
from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

PREFIX = "/espace"
CSRF_FIELD = "csrf"


def csrf_token(request) -> str:
    token = request.session.get(CSRF_FIELD)
    if not token:
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


def csrf_ok(request, form) -> bool:
    expected = request.session.get(CSRF_FIELD)
    given = form.get(CSRF_FIELD) if form is not None else None
    return bool(expected and isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode()))


def safe_next(value: str | None) -> str:
    """A path of the workspace to go to after sign-in (anything else: the À traiter page)."""
    default = f"{PREFIX}/a-traiter"
    if not value or len(value) > 300 or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith(PREFIX + "/") or ".." in parts.path:
        return default
    return value


def security_headers(form_targets: str = "") -> dict[str, str]:
    csp = ("default-src 'none'; style-src 'self'; img-src 'self' data:; "
           f"form-action 'self'{(' ' + form_targets) if form_targets else ''}; base-uri 'none'; "
           "frame-ancestors 'self'")
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "SAMEORIGIN",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    }


class SecurityHeaders:
    """ASGI middleware: :func:`security_headers` on every response of the workspace."""

    def __init__(self, app, form_targets: str = ""):
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in security_headers(form_targets).items()]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [h for h in self.headers if h[0] not in present]
            await send(message)

        await self.app(scope, receive, with_headers)
