"""The workspace's "Tableau de bord" (``/espace/tableau-de-bord``): the report of ``relance report``
(:mod:`worker.services.report`) for the agent's organisation; the department team and ops see every
organisation together or pick one. The same tables and monthly charts as the HTML file, and the same
workbook to download (``/espace/tableau-de-bord.xlsx``). Registered by :mod:`worker.entrypoints.web`
after :mod:`.pages` (whose sign-in helpers it uses: ``ctx.current``, ``ctx.page``, ``ctx.to_sign_in``).
"""
from __future__ import annotations

import datetime as dt

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from worker.services import report, report_output
from worker.services.errors import ServiceError

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _date(value: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value[:10]) if value else None
    except ValueError:
        return None


def add_routes(web, ctx) -> None:
    app_ctx, now = ctx.app, ctx.now
    organisations = app_ctx.territory.organisations

    def choice(request: Request, agent) -> dict:
        """What the page shows: the period and the organisation (an agent: always their own)."""
        q = request.query_params
        wanted = (q.get("organisation") or "")[:64]
        org = agent.scope if agent.scope is not None else (wanted if wanted in organisations else None)
        return {"start": _date(q.get("du")), "end": _date(q.get("au")), "organisation": org,
                "bad_dates": any(q.get(k) and _date(q.get(k)) is None for k in ("du", "au"))}

    async def built(chosen: dict):
        return await run_in_threadpool(report.build, app_ctx, now(), chosen["start"], chosen["end"],
                                       chosen["organisation"])

    @web.get("/tableau-de-bord")
    async def dashboard(request: Request):
        agent = await ctx.current(request)
        if agent is None:
            return ctx.to_sign_in(request)
        chosen = choice(request, agent)
        error = "Date invalide : utilisez le format JJ/MM/AAAA du calendrier." if chosen["bad_dates"] else ""
        try:
            rep = await built(chosen)
            body = await run_in_threadpool(report_output.page_context, rep)
        except ServiceError as exc:
            rep, body, error = None, {"tables": [], "charts": []}, str(exc)
        query = "&".join(f"{k}={v}" for k, v in (("du", chosen["start"]), ("au", chosen["end"]),
                                                  ("organisation", chosen["organisation"])) if v)
        return ctx.page(request, "tableau_de_bord", agent, 422 if error and rep is None else 200,
                        title="Tableau de bord", rep=rep, chosen=chosen, error=error,
                        organisations=sorted((code, o.name) for code, o in organisations.items()),
                        xlsx_link=f"/espace/tableau-de-bord.xlsx{'?' + query if query else ''}", **body)

    @web.get("/tableau-de-bord.xlsx")
    async def dashboard_xlsx(request: Request):
        agent = await ctx.current(request)
        if agent is None:
            return ctx.to_sign_in(request)
        chosen = choice(request, agent)
        try:
            rep = await built(chosen)
        except ServiceError as exc:
            return ctx.page(request, "erreur", agent, 422, title="Tableau de bord", message=str(exc))
        data = await run_in_threadpool(report_output.to_xlsx, rep)
        name = f"tableau_de_bord_{rep.organisation or 'toutes'}_{rep.start.isoformat()}_{rep.end.isoformat()}.xlsx"
        return Response(data, media_type=XLSX, headers={"Content-Disposition": f'attachment; filename="{name}"'})
