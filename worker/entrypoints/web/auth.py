"""Signing in and out of the workspace.

* **ProConnect** (OpenID Connect, ``authlib``): ``/espace/connexion/proconnect`` sends the agent to
  the provider (state, nonce and PKCE kept in the signed session cookie); the way back checks them,
  the id token's signature, issuer, audience and nonce, then finds the active agent by e-mail
  (``relance agents add``). Settings: ``RELANCE_OIDC_ISSUER``, ``_CLIENT_ID``, ``_CLIENT_SECRET``,
  ``_SCOPES``. Sign-out also ends the provider's session (``end_session_endpoint``).
* **E-mail link**: the agent gives their address; an active agent gets a link (single use, expiring
  after ``RELANCE_WEB_LOGIN_LINK_MINUTES``); the page says the same for any address. Opening the link
  shows a button (a mail scanner opening links does not spend it); pressing it signs in.

A sign-in starts a new session (the cookie's content is replaced: no fixation) and a new CSRF token.
Logs carry agent ids only, never an e-mail address.
"""
from __future__ import annotations

import logging
import secrets

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse

from worker.entrypoints.api_guard import client_address
from worker.entrypoints.web.security import PREFIX, csrf_ok, csrf_token, safe_next
from worker.services import agents, workspace_actions
from worker.services.errors import ServiceError

log = logging.getLogger("relance.web")
SESSION_KEY = "sid"


def base_url(ctx, request: Request) -> str:
    """The public URL of the service (RELANCE_PUBLIC_BASE_URL, else the one the browser used)."""
    return (ctx.app.settings.public_base_url or f"{request.url.scheme}://{request.url.netloc}").rstrip("/")


def _oauth(settings):
    from authlib.integrations.starlette_client import OAuth

    oauth = OAuth()
    oauth.register("proconnect", client_id=settings.oidc_client_id, client_secret=settings.oidc_client_secret,
                   server_metadata_url=f"{settings.oidc_issuer}/.well-known/openid-configuration",
                   client_kwargs={"scope": settings.oidc_scopes, "code_challenge_method": "S256"})
    return oauth.create_client("proconnect")


async def _claims(client, token: dict) -> dict:
    """The identity's claims: the id token's, completed by the userinfo endpoint (JSON, or a signed JWT
    as ProConnect answers) when the e-mail is not in it."""
    claims = dict(token.get("userinfo") or {})
    if claims.get("email"):
        return claims
    metadata = await client.load_server_metadata()
    endpoint = metadata.get("userinfo_endpoint")
    if not endpoint:
        return claims
    resp = await client.get(endpoint, token=token)
    resp.raise_for_status()
    if resp.headers.get("content-type", "").startswith("application/jwt"):
        from joserfc import jwt
        from joserfc.jwk import KeySet

        keys = KeySet.import_key_set(await client.fetch_jwk_set())
        info = dict(jwt.decode(resp.text.strip(), keys).claims)
    else:
        info = resp.json()
    if info.get("sub") != claims.get("sub"):
        return claims
    return {**claims, **info}


def add_routes(web, ctx) -> None:
    app_ctx, pages, now = ctx.app, ctx.pages, ctx.now
    settings = app_ctx.settings
    client = _oauth(settings) if settings.oidc_enabled else None
    throttle = ctx.throttle

    def sign_in_page(request: Request, status: int = 200, **extra):
        return pages.render("connexion", status_code=status, request=request, agent=None,
                            csrf=csrf_token(request), oidc=client is not None,
                            suite=safe_next(request.query_params.get("suite")), info=extra.pop("info", ""),
                            error=extra.pop("error", ""), sent=extra.pop("sent", False), **extra)

    async def open_session(request: Request, agent, method: str, id_token: str | None = None):
        token = await run_in_threadpool(agents.start_session, app_ctx, agent.id, method, now(), id_token)
        target = safe_next(request.session.get("suite"))
        request.session.clear()
        request.session[SESSION_KEY] = token
        csrf_token(request)
        log.info("agent %s signed in (%s)", agent.id, method)
        return RedirectResponse(target, status_code=303)

    @web.get("/connexion")
    async def connexion(request: Request):
        info = {"deconnecte": "Vous êtes déconnecté(e).",
                "expire": "Votre session a expiré : connectez-vous à nouveau."}.get(
                    request.query_params.get("info", ""), "")
        return sign_in_page(request, info=info)

    @web.post("/connexion/lien")
    async def ask_link(request: Request):
        form = await request.form()
        if not csrf_ok(request, form):
            return ctx.csrf_refused(request)
        address = client_address(request)
        if throttle.blocked(address) or ctx.link_throttle.blocked(address):
            return sign_in_page(request, 429, error="Trop de demandes depuis cette adresse : réessayez dans une minute.")
        email = str(form.get("email") or "").strip()[:254]
        if "@" not in email:
            return sign_in_page(request, 422, error="Saisissez votre adresse e-mail professionnelle.",
                                email=email)
        ctx.link_throttle.failed(address, "sign-in link asked", "/espace/connexion/lien")  # counts every request
        request.session["suite"] = safe_next(str(form.get("suite") or ""))
        try:
            await run_in_threadpool(workspace_actions.send_login_link, app_ctx, email, base_url(ctx, request), now())
        except Exception as exc:  # noqa: BLE001 - the mail server: the agent is told, ops read the log
            log.warning("sign-in link not sent (%s)", type(exc).__name__)
            return sign_in_page(request, 503, error="Le lien n'a pas pu être envoyé (serveur de messagerie "
                                                    "indisponible) : réessayez plus tard.")
        return sign_in_page(request, sent=True)

    @web.get("/connexion/lien")
    async def show_link(request: Request):
        token = request.query_params.get("jeton", "")[:100]
        return pages.render("lien", request=request, agent=None, csrf=csrf_token(request), jeton=token,
                            headers={"Referrer-Policy": "no-referrer"})

    @web.post("/connexion/lien/valider")
    async def use_link(request: Request):
        form = await request.form()
        if not csrf_ok(request, form):
            return ctx.csrf_refused(request)
        try:
            agent = await run_in_threadpool(agents.use_login_link, app_ctx, str(form.get("jeton") or ""), now())
        except agents.LoginLinkRefused as exc:
            throttle.failed(client_address(request), f"sign-in link {exc.reason}", "/espace/connexion/lien")
            return sign_in_page(request, 400, error=f"Connexion refusée : {exc}.")
        return await open_session(request, agent, "email")

    @web.get("/connexion/proconnect")
    async def proconnect(request: Request):
        if client is None:
            return sign_in_page(request, 404, error="La connexion par ProConnect n'est pas configurée ici.")
        request.session["suite"] = safe_next(request.query_params.get("suite"))
        try:
            return await client.authorize_redirect(request, f"{base_url(ctx, request)}{PREFIX}/connexion/proconnect/retour")
        except Exception as exc:  # noqa: BLE001 - the provider is unreachable or its metadata unusable
            log.warning("OpenID Connect provider unavailable (%s)", type(exc).__name__)
            return sign_in_page(request, 503, error="ProConnect ne répond pas : réessayez, ou recevez un lien par e-mail.")

    @web.get("/connexion/proconnect/retour")
    async def proconnect_back(request: Request):
        if client is None:
            return sign_in_page(request, 404, error="La connexion par ProConnect n'est pas configurée ici.")
        try:
            token = await client.authorize_access_token(request)
            claims = await _claims(client, token)
        except Exception as exc:  # noqa: BLE001 - OAuthError, a bad token, the provider down
            log.warning("OpenID Connect sign-in refused (%s)", type(exc).__name__)
            throttle.failed(client_address(request), "OpenID Connect", "/espace/connexion/proconnect/retour")
            return sign_in_page(request, 400, error="La connexion par ProConnect a échoué : recommencez.")
        agent = await run_in_threadpool(lambda: agents.oidc_agent(app_ctx, email=claims.get("email"),
                                                                  subject=str(claims.get("sub") or ""), now=now()))
        if agent is None:
            log.info("OpenID Connect identity with no active agent: refused")
            return sign_in_page(request, 403, error="Votre compte ProConnect n'est pas celui d'un agent inscrit "
                                                    "dans Relance : demandez à l'équipe RSA du Département de vous "
                                                    "ajouter.")
        return await open_session(request, agent, "proconnect", token.get("id_token"))

    @web.post("/deconnexion")
    async def sign_out(request: Request):
        form = await request.form()
        if not csrf_ok(request, form):
            return ctx.csrf_refused(request)
        id_token = await run_in_threadpool(agents.end_session, app_ctx, request.session.get(SESSION_KEY), now())
        request.session.clear()
        back = f"{base_url(ctx, request)}{PREFIX}/connexion?info=deconnecte"
        if id_token and client is not None:
            try:
                metadata = await client.load_server_metadata()
            except Exception:  # noqa: BLE001 - signed out here all the same
                metadata = {}
            end = metadata.get("end_session_endpoint")
            if end:
                from urllib.parse import urlencode

                query = urlencode({"id_token_hint": id_token, "post_logout_redirect_uri": back,
                                   "state": secrets.token_urlsafe(16)})
                return RedirectResponse(f"{end}?{query}", status_code=303)
        return RedirectResponse(back, status_code=303)

    ctx.sign_in_page = sign_in_page


__all__ = ["add_routes", "base_url", "SESSION_KEY", "ServiceError"]
