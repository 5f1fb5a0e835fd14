"""The agents' workspace: server-rendered French pages under ``/espace``, served by ``relance api``.

:func:`create_web_app` builds the sub-application that :func:`worker.entrypoints.api.create_app`
mounts at ``/espace``: the session cookie (signed, HttpOnly, SameSite=Lax, Secure unless
``RELANCE_WEB_COOKIE_SECURE=false``, path ``/espace``), the security headers, the sign-in routes
(:mod:`.auth`) and the pages (:mod:`.pages`). Pages work without JavaScript (there is none).
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from worker.entrypoints.api_guard import AuthThrottle
from worker.entrypoints.web import auth, dashboard, pages
from worker.entrypoints.web.render import Pages
from worker.entrypoints.web.security import PREFIX, SecurityHeaders, csrf_token

COOKIE = "relance_espace"


class _RequestCount(AuthThrottle):
    """Requests per client address and minute (e-mail sign-in links asked): counted, not logged as failures."""

    def failed(self, address: str, what: str, route: str) -> None:
        q = self._recent(address)
        self._failures[address] = q
        q.append(self.clock())
        self._failures.move_to_end(address)
        while len(self._failures) > self.MAX_ADDRESSES:
            self._failures.popitem(last=False)


class _Ctx:
    def __init__(self, app_ctx, now: Callable[[], dt.datetime]):
        self.app = app_ctx
        self.now = now
        self.pages = Pages(app_ctx.settings.templates_dir)
        self.throttle = AuthThrottle(app_ctx.settings.api_auth_failures_per_minute)
        self.link_throttle = _RequestCount(5)  # e-mail sign-in links asked per client address and minute

    def csrf_refused(self, request: Request):
        return self.pages.render("erreur", status_code=403, request=request, agent=None, csrf=csrf_token(request),
                                 prefix=PREFIX, title="Formulaire refusé",
                                 message="Ce formulaire a expiré ou ne vient pas de cette page (protection CSRF). "
                                         "Revenez en arrière, rechargez la page et recommencez.")


def create_web_app(app_ctx, now: Callable[[], dt.datetime]) -> FastAPI:
    settings = app_ctx.settings
    ctx = _Ctx(app_ctx, now)
    web = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    issuer = urlsplit(settings.oidc_issuer) if settings.oidc_issuer else None
    web.add_middleware(SessionMiddleware, secret_key=settings.web_key.hex(), session_cookie=COOKIE,
                       max_age=settings.web_session_hours * 3600, path=PREFIX, same_site="lax",
                       https_only=settings.web_cookie_secure)
    web.add_middleware(SecurityHeaders, form_targets=f"{issuer.scheme}://{issuer.netloc}" if issuer else "")

    @web.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        titles = {404: "Page introuvable", 405: "Méthode non permise", 422: "Requête invalide"}
        return ctx.pages.render("erreur", status_code=exc.status_code, request=request, agent=None,
                                csrf=csrf_token(request), prefix=PREFIX,
                                title=titles.get(exc.status_code, "Erreur"),
                                message="L'adresse demandée n'existe pas dans l'espace agents.")

    @web.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        return ctx.pages.render("erreur", status_code=404, request=request, agent=None, csrf=csrf_token(request),
                                prefix=PREFIX, title="Page introuvable",
                                message="L'adresse demandée n'existe pas dans l'espace agents.")

    css = Path(settings.templates_dir) / "web" / "espace.css"

    @web.get("/static/espace.css")
    async def stylesheet():
        return Response(css.read_bytes(), media_type="text/css",
                        headers={"Cache-Control": "public, max-age=3600"})

    auth.add_routes(web, ctx)
    pages.add_routes(web, ctx)
    dashboard.add_routes(web, ctx)
    return web
