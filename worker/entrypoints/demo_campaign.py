"""``relance demo --campaign``: the stock campaign (issue 14) alongside the flux in the demo.

The sample stock (``samples/stock_2023-03.csv``, 1 396 people) is imported the working day before the
demo begins, and the campaign starts with it (its targets moved by as much as its start:
``RELANCE_CAMPAIGN_*`` are the demo's own). Every simulated day the scheduler's cycle invites the day's
people after the flux; the demo's world answers, books, misses for them as for the flux's people. The
summary then adds the campaign's progress per segment and organisation against its targets, the rest of
its plan, and writes its HTML report (with the chart) beside the outbox.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from worker.services import campaign, campaign_status, stock

STOCK_FILE = "stock_2023-03.csv"
PLAN_WEEKS_SHOWN = 8


def settings_for(settings, start: dt.date):
    """The demo's campaign: from its first day, 20 % seen 6 weeks later, 80 % 7 months later."""
    return settings.model_copy(update={
        "campaign_start": start,
        "campaign_targets": f"20%:{start + dt.timedelta(weeks=6)},80%:{start + dt.timedelta(days=213)}"})


def import_stock(app, samples: Path, start: dt.date) -> str:
    day = start - dt.timedelta(days=1)
    while not app.calendar.is_working_day(day):
        day -= dt.timedelta(days=1)
    report = stock.import_stock(app, samples / STOCK_FILE, app.calendar.at(day, dt.time(10, 0)))
    return (f"Stock importé le {day:%d/%m/%Y} (relance ingest --stock) : {report.accepted} personnes, "
            f"{len(report.rejected)} lignes rejetées ; personne n'est invité à l'import.")


def summary(app, now: dt.datetime, out: Path, imported: str) -> list[str]:
    lines = ["", "Campagne du stock, à côté du flux :", "  " + imported]
    path, st = campaign_status.write_html(app, now, out / "campagne-stock.html")
    lines += ["  " + line for line in st.lines()]
    plan = campaign.plan(app, now)
    rest = plan.lines()
    weeks = [i for i, line in enumerate(rest) if line.startswith("Semaine du")]
    if weeks:
        start = weeks[0]
        lines.append("  Suite du plan (relance campaign plan) :")
        lines += ["    " + line for line in rest[start:start + 1 + PLAN_WEEKS_SHOWN]]
        if len(rest) > start + 1 + PLAN_WEEKS_SHOWN:
            lines.append("    …")
    lines.append(f"  Rapport HTML de la campagne (avec son graphique) : {path}")
    lines.append("  Le flux passe d'abord : ses invitations partent dès réception et ses convocations gardent leur "
                 "jour (tests/integration/test_campaign.py : le même flux, seul ou avec tout le stock, est invité, "
                 "relancé et convoqué aux mêmes dates).")
    return lines


__all__ = ["settings_for", "import_stock", "summary"]
