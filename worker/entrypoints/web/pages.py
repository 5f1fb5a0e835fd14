"""The workspace's pages: À traiter, Dossier (and its forms), Recherche, Commission, the PDFs.

Each route finds the signed-in agent (or sends to the sign-in page), calls one service, renders a
template. A case outside the agent's scope is a 404 (:class:`worker.services.workspace.NotVisible`).
"""
from __future__ import annotations

import datetime as dt
import logging
import secrets

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from worker.entrypoints.web import forms
from worker.entrypoints.web.auth import SESSION_KEY
from worker.entrypoints.web.security import PREFIX, csrf_ok, csrf_token
from worker.services import agents, commission, rdv_matches, replies, workspace, workspace_actions
from worker.services.errors import ServiceError

log = logging.getLogger("relance.web")

def add_routes(web, ctx) -> None:
    app_ctx, pages, now = ctx.app, ctx.pages, ctx.now

    async def current(request: Request):
        token = request.session.get(SESSION_KEY)
        if not token:
            return None
        agent = await run_in_threadpool(agents.resume_session, app_ctx, token, now())
        if agent is None:
            request.session.clear()
        return agent

    def to_sign_in(request: Request, expired: bool = False):
        suite = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        info = "&info=expire" if expired else ""
        from urllib.parse import quote

        return RedirectResponse(f"{PREFIX}/connexion?suite={quote(suite, safe='/')}{info}", status_code=303)

    def page(request: Request, name: str, agent, status: int = 200, **context):
        return pages.render(name, status_code=status, request=request, agent=agent, csrf=csrf_token(request),
                            prefix=PREFIX, **context)

    def not_found(request: Request, agent):
        return page(request, "erreur", agent, 404, title="Page introuvable",
                    message="Ce dossier n'existe pas, ou il n'est pas suivi par votre organisation.")

    ctx.not_found = not_found
    ctx.current, ctx.page, ctx.to_sign_in = current, page, to_sign_in  # for the dashboard's routes (dashboard.py)

    @web.get("/")
    async def home():
        return RedirectResponse(f"{PREFIX}/a-traiter", status_code=303)

    @web.get("/a-traiter")
    async def todo(request: Request):
        agent = await current(request)
        if agent is None:
            return to_sign_in(request, bool(request.cookies))
        groups = await run_in_threadpool(workspace.todo, app_ctx, now(), agent)
        total = len({t.item.case_reference for _k, _t, items in groups for t in items})
        return page(request, "a_traiter", agent, groups=groups, total=total,
                    today=app_ctx.calendar.local_date(now()), title="À traiter")

    @web.get("/recherche")
    async def search(request: Request):
        agent = await current(request)
        if agent is None:
            return to_sign_in(request)
        query = (request.query_params.get("q") or "")[:100]
        results = await run_in_threadpool(workspace.search, app_ctx, query, agent) if query else []
        return page(request, "recherche", agent, query=query, results=results, title="Recherche")

    async def case_page(request: Request, agent, reference: str, status: int = 200, errors=None, values=None,
                        failed_action: str = "", notice: str = ""):
        try:
            data = await run_in_threadpool(workspace.case_page, app_ctx, reference, agent, now())
        except workspace.NotVisible:
            return not_found(request, agent)
        today = app_ctx.calendar.local_date(now())
        form_ctx = forms.FormCtx(app_ctx, agent, data["case"]["reference"], data["person"]["external_id"], now(),
                                 data["case"], data["person"])
        available = [a for a in forms.ACTIONS.values() if agent.can_act and a.applies(data["case"], data["person"], today)]
        return page(request, "dossier", agent, status, data=data, actions=available, form_ctx=form_ctx,
                    choices_of=forms.choices_of, errors=errors or {}, values=values or {},
                    failed_action=failed_action, notice=notice, form_key=secrets.token_urlsafe(12),
                    title=f"Dossier {data['case']['reference']}")

    @web.get("/dossiers/{reference}")
    async def case(request: Request, reference: str):
        agent = await current(request)
        if agent is None:
            return to_sign_in(request)
        return await case_page(request, agent, reference[:30], notice=str(request.session.pop("flash", ""))[:300])

    async def posted(request: Request):
        """A form posted by a signed-in agent: (form, agent, None); else (form, None, the answer): the
        CSRF token checked first, then the session."""
        form = await request.form()
        if not csrf_ok(request, form):
            return form, None, ctx.csrf_refused(request)
        agent = await current(request)
        if agent is None:
            return form, None, to_sign_in(request, True)
        return form, agent, None

    @web.post("/dossiers/{reference}/actions/{key}")
    async def act(request: Request, reference: str, key: str):
        form, agent, refused = await posted(request)
        if refused is not None:
            return refused
        action = forms.ACTIONS.get(key)
        if action is None:
            return not_found(request, agent)
        if not agent.can_act:
            return page(request, "erreur", agent, 403, title="Action non permise",
                        message="Votre rôle permet de consulter les dossiers, pas d'y enregistrer des événements.")
        try:
            data = await run_in_threadpool(workspace.case_page, app_ctx, reference[:30], agent, now())
        except workspace.NotVisible:
            return not_found(request, agent)
        today = app_ctx.calendar.local_date(now())
        if not action.applies(data["case"], data["person"], today):
            return await case_page(request, agent, reference, 409, {"_form": "cette action ne s'applique plus à "
                                                                            "ce dossier (il a changé)"},
                                   failed_action=key)
        key_value = str(form.get("cle") or "")[:40]
        form_ctx = forms.FormCtx(app_ctx, agent, data["case"]["reference"], data["person"]["external_id"], now(),
                                 data["case"], data["person"], key=key_value)
        values, errors = forms.parse(action, form, form_ctx)
        if not errors:
            try:
                message = await run_in_threadpool(action.run, form_ctx, values)
            except forms.FieldError as exc:
                errors = {exc.field: str(exc)}
            except workspace.NotVisible:
                return not_found(request, agent)
            except ServiceError as exc:
                errors = {"_form": str(exc)}
        if errors:
            raw = {f.name: str(form.get(f.name) or "") for f in action.fields}
            return await case_page(request, agent, reference, 422, errors, raw, key)
        log.info("agent %s recorded %s on case %s", agent.id, key, data["case"]["reference"])
        request.session["flash"] = message
        return RedirectResponse(f"{PREFIX}/dossiers/{data['case']['reference']}", status_code=303)

    @web.post("/reponses/{reply_id}/lue")
    async def reply_read(request: Request, reply_id: int):
        form, agent, refused = await posted(request)
        if refused is not None:
            return refused
        pending = await run_in_threadpool(replies.pending, app_ctx, agent.scope)
        reply = next((r for r in pending if r.id == reply_id), None)
        if reply is None or not agent.can_act:
            return not_found(request, agent)
        await run_in_threadpool(replies.mark_read, app_ctx, reply_id, now())
        target = f"{PREFIX}/dossiers/{reply.case_reference}" if reply.case_reference else f"{PREFIX}/a-traiter"
        return RedirectResponse(target, status_code=303)

    # --- RDV-Solidarités: an appointment whose person nobody recognised (issue 16) ---------------------

    async def match_page(request: Request, agent, match_id: int, status: int = 200, error: str = "",
                         matricule: str = ""):
        try:
            d = await run_in_threadpool(rdv_matches.detail, app_ctx, match_id, agent.scope)
        except ServiceError:
            return page(request, "erreur", agent, 404, title="Rendez-vous introuvable",
                        message="Ce rendez-vous n'attend plus d'être rapproché, ou il n'est pas de votre organisation.")
        cal = app_ctx.calendar
        d["starts_at"] = cal.local(d["pending"].starts_at) if d["pending"].starts_at else None
        d["received_at"] = cal.local(d["pending"].received_at)
        return page(request, "rendez_vous", agent, status, d=d, error=error, matricule=matricule,
                    title="Rendez-vous à rapprocher")

    @web.get("/rendez-vous/{match_id}")
    async def match(request: Request, match_id: int):
        agent = await current(request)
        if agent is None:
            return to_sign_in(request)
        return await match_page(request, agent, match_id)

    @web.post("/rendez-vous/{match_id}/{decision}")
    async def match_decision(request: Request, match_id: int, decision: str):
        form, agent, refused = await posted(request)
        if refused is not None:
            return refused
        if decision not in ("rapprocher", "ecarter") or not agent.can_act:
            return not_found(request, agent)
        matricule = str(form.get("matricule") or "").strip()[:64]
        try:
            if decision == "ecarter":
                await run_in_threadpool(rdv_matches.discard, app_ctx, match_id, now(), f"web:{agent.id}", agent.scope)
                request.session["flash"] = "Rendez-vous écarté."
                log.info("agent %s discarded rdv-solidarites match %s", agent.id, match_id)
                return RedirectResponse(f"{PREFIX}/a-traiter", status_code=303)
            if not matricule:
                return await match_page(request, agent, match_id, 422, "indiquez le matricule de la personne.")
            linked = await run_in_threadpool(rdv_matches.link, app_ctx, match_id, matricule, now(),
                                             f"web:{agent.id}", agent.scope)
        except ServiceError as exc:
            return await match_page(request, agent, match_id, 422, str(exc), matricule)
        log.info("agent %s linked rdv-solidarites match %s", agent.id, match_id)
        request.session["flash"] = ("Rendez-vous rapproché : ce que dit RDV-Solidarités est appliqué au dossier."
                                    if linked.events else "Rendez-vous rapproché : rien ne change au dossier.")
        visible = linked.case_reference and agent.scope in (None, linked.organisation)
        return RedirectResponse(f"{PREFIX}/dossiers/{linked.case_reference}" if visible else f"{PREFIX}/a-traiter",
                                status_code=303)

    @web.get("/courriers/{message_id}.pdf")
    async def letter(request: Request, message_id: int):
        agent = await current(request)
        if agent is None:
            return to_sign_in(request)
        try:
            name, pdf = await run_in_threadpool(workspace_actions.letter_pdf, app_ctx, message_id, agent)
        except workspace.NotVisible:
            return not_found(request, agent)
        except ServiceError as exc:
            return page(request, "erreur", agent, 410, title="Courrier indisponible", message=str(exc))
        return _pdf(pdf, name)

    def _session_date(value: str | None):
        if not value:
            return None
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            return None

    @web.get("/commission")
    async def commission_page(request: Request):
        agent = await current(request)
        if agent is None:
            return to_sign_in(request)
        day = _session_date(request.query_params.get("seance"))
        try:
            pack = await run_in_threadpool(lambda: commission.build_pack(app_ctx, now(), day,
                                                                         organisation=agent.scope))
        except ServiceError as exc:
            return page(request, "erreur", agent, 404, title="Commission", message=str(exc))
        today = app_ctx.calendar.local_date(now())
        sessions = sorted(app_ctx.territory.commission.sessions)
        around = [d for d in sessions if d >= today - dt.timedelta(days=120)][:6]
        return page(request, "commission", agent, pack=pack, sessions=around, title="Commission RSA")

    @web.get("/commission/{day}.pdf")
    async def commission_pdf(request: Request, day: str):
        return await _pack(request, day, None)

    @web.get("/commission/{day}/{reference}.pdf")
    async def commission_case_pdf(request: Request, day: str, reference: str):
        return await _pack(request, day, reference)

    async def _pack(request: Request, day: str, reference: str | None):
        agent = await current(request)
        if agent is None:
            return to_sign_in(request)
        session = _session_date(day)
        if session is None or (reference is not None and workspace.parse_case_reference(reference) is None):
            return not_found(request, agent)
        pack, pdf = await run_in_threadpool(lambda: commission.pack_pdf(
            app_ctx, now(), session, organisation=agent.scope,
            case_reference=reference and f"RL-{workspace.parse_case_reference(reference)}"))
        if reference is not None and not pack.cases:
            return not_found(request, agent)
        name = f"commission_{session.isoformat()}" + (f"_{reference.upper()}" if reference else "") + ".pdf"
        return _pdf(pdf, name)


def _pdf(data: bytes, name: str) -> Response:
    return Response(data, media_type="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{name}"'})
