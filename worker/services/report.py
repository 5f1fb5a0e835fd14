"""The indicators' report (``relance report``, the workspace's "Tableau de bord"): tables built from
what happened, for a period and an organisation (or all of them).

:func:`build` reads the store (:mod:`worker.services.report_data`) and returns a :class:`Report`: a
list of :class:`Table` (French titles and column labels, raw values typed by their column's kind),
which :mod:`worker.services.report_output` writes as JSON, a self-contained HTML page with its charts,
or an XLSX workbook (one sheet per table). The definitions are in ``docs/indicators.md``; the
arithmetic in :mod:`worker.domain.indicators`. Only counts and delays: no name, no reference.
"""
from __future__ import annotations

import datetime as dt

from worker.adapters.store.session import session_scope
from worker.domain.indicators import month_of, month_starts, next_month
from worker.services import report_data, report_tables
from worker.services.report_model import Report
from worker.services.errors import ServiceError


def scope_for(app, now: dt.datetime, start: dt.date | None, end: dt.date | None,
              organisation: str | None) -> report_data.Scope:
    cal = app.calendar
    today = cal.local_date(now)
    if organisation is not None and organisation not in app.territory.organisations:
        raise ServiceError(f"organisation inconnue {organisation!r} (voir config/territory.yaml)")
    end = end or today
    if start is None:
        with session_scope(app.db_url) as s:
            first = report_data.first_droit_on(s, organisation)
        start = month_of(first) if first is not None and first <= end else month_of(end)
    if start > end:
        raise ServiceError(f"période vide : le début ({start:%d/%m/%Y}) est après la fin ({end:%d/%m/%Y})")
    months = tuple((m, cal.start_of_day(m), cal.start_of_day(next_month(m))) for m in month_starts(start, end))
    return report_data.Scope(start, end, organisation, today,
                             (cal.start_of_day(start), cal.start_of_day(end + dt.timedelta(days=1))), months)


def build(app, now: dt.datetime, start: dt.date | None = None, end: dt.date | None = None,
          organisation: str | None = None) -> Report:
    """The report of droits opened and of what happened from ``start`` to ``end`` (local dates, both
    included; default: from the first droit's month to today), for ``organisation`` or all."""
    scope = scope_for(app, now, start, end, organisation)
    with session_scope(app.db_url) as s:
        droits = list(report_data.droits(s, app.policy, scope).values())
        no_duties = report_data.without_duties(s, scope)
        act = report_data.activity(s, scope)
    cohort = report_tables.Cohort(app, scope, droits)
    tables = [
        report_tables.summary(cohort, act),
        report_tables.entrants_by_month(cohort, no_duties),
        report_tables.entrants_by_organisation(cohort),
        report_tables.delays(cohort),
        report_tables.monthly(cohort),
        report_tables.appointments(act),
        report_tables.first_appointments(cohort),
        report_tables.procedure(act),
        report_tables.reviews(act),
        report_tables.outcomes(act),
        report_tables.reasons(act, app.policy),
        report_tables.orientation(cohort),
        report_tables.messages(act),
        report_tables.failures(act),
        report_tables.messages_by_month(act, scope),
    ]
    org = app.territory.organisations.get(organisation) if organisation else None
    notes = [
        "Entrants, délais, premiers rendez-vous et orientation : les droits ouverts dans la période, suivis "
        "jusqu'à aujourd'hui. Le reste (messages, étapes, rendez-vous, décisions) : ce qui s'est passé dans "
        "la période.",
        *_campaign_notes(app, now),
    ]
    return Report(generated_at=app.calendar.local(now), start=scope.start, end=scope.end, organisation=organisation,
                  organisation_label=f"{org.name} ({organisation})" if org else "toutes les organisations",
                  months=[m for m, _lo, _hi in scope.months], tables=tables, notes=notes,
                  target_days=app.policy.delays.first_invitation_target_days)


def _campaign_notes(app, now: dt.datetime) -> list[str]:
    """The stock campaign's progress against its targets (``relance campaign status``), in short."""
    from worker.services import campaign_status

    st = campaign_status.status(app, now)
    if st.status == "absent":
        return ["Campagne du stock : aucune (stock non importé)."]
    lines = st.lines()
    targets = [line for line in lines if line.startswith("Cible ")]
    return ["Campagne du stock : " + " ".join(lines[:2] + targets)]


__all__ = ["Report", "build", "scope_for"]
