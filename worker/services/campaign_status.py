"""Where the stock campaign stands (``relance campaign status``): progress against the targets, per
segment and per organisation, as text, JSON or an HTML report with a chart.

Counts only (no name, no contact): the people of the stock per segment and organisation — not invited
(and why), waiting, already followed, invited, with an appointment, seen (a campaign case closed
``attended``), closed otherwise — and, against each target of ``RELANCE_CAMPAIGN_TARGETS``, the share
seen now and the share the plan expects by its date. The chart (weekly, in % of the people to see):
invited and seen so far, the plan's expected curve, the targets. "Seen" counts the people whose
appointment took place; "to see" (the population) the people the campaign invites, already or to come.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from fractions import Fraction
from pathlib import Path

from sqlalchemy import func, select

from worker.adapters import charts, files
from worker.adapters.store.models import Campaign, CampaignMember, Case, Person
from worker.adapters.store.session import session_scope
from worker.domain import campaign as plan_math
from worker.services import campaign as campaign_service
from worker.services.errors import ServiceError
from worker.services.stock import CAMPAIGN

COLUMNS = (("members", "personnes"), ("not_invited", "non invitées"), ("waiting", "en attente"),
           ("followed", "déjà suivies"), ("invited", "invitées"), ("appointment", "rendez-vous fixé"),
           ("seen", "vues"), ("closed", "sorties sans rendez-vous"))
SHORT = {"appointment": "rdv fixé", "closed": "autres sorties"}  # the text's narrow columns


@dataclasses.dataclass
class Row:
    key: str
    label: str
    counts: Counter

    def as_json(self) -> dict:
        return {"key": self.key, "label": self.label, **{k: self.counts[k] for k, _ in COLUMNS}}


@dataclasses.dataclass
class TargetProgress:
    share: Fraction
    on: dt.date
    needed: int
    seen: int  # now
    expected: Fraction  # by the date, as the plan stands
    met_on: dt.date | None  # the day the seen people reached it, if they did

    def as_json(self) -> dict:
        return {"share": float(self.share), "date": self.on.isoformat(), "needed": self.needed, "seen": self.seen,
                "expected": round(float(self.expected), 1), "met_on": self.met_on.isoformat() if self.met_on else None}


@dataclasses.dataclass
class CampaignStatus:
    today: dt.date
    status: str  # active | paused | absent
    paused_since: dt.date | None
    pause_note: str | None  # why, in ops' words
    population: int
    segments: list[Row]
    organisations: list[Row]
    targets: list[TargetProgress]
    plan: campaign_service.CampaignPlan
    invited_by_day: dict[dt.date, int]
    seen_by_day: dict[dt.date, int]

    @property
    def total(self) -> Counter:
        out = Counter()
        for row in self.segments:
            out.update(row.counts)
        return out

    def as_json(self) -> dict:
        return {"today": self.today.isoformat(), "status": self.status,
                "paused_since": self.paused_since.isoformat() if self.paused_since else None,
                "pause_note": self.pause_note,
                "population": self.population, "total": {k: self.total[k] for k, _ in COLUMNS},
                "targets": [t.as_json() for t in self.targets],
                "segments": [r.as_json() for r in self.segments],
                "organisations": [r.as_json() for r in self.organisations],
                "warnings": self.plan.warnings}

    def lines(self) -> list[str]:
        """The status as French text (``relance campaign status``)."""
        if self.status == "absent":
            return ["Aucune campagne : importez d'abord le stock (relance ingest --stock FICHIER)."]
        state = "active" if self.status == "active" else f"en pause depuis le {self.paused_since:%d/%m/%Y}" + (
            f" ({self.pause_note})" if self.pause_note else "")
        t = self.total
        out = [f"Campagne du stock au {self.today:%d/%m/%Y} : {state}.",
               f"{t['members']} personnes importées ; {self.population} à voir : {t['invited']} invitées, "
               f"{t['waiting']} en attente ; {t['seen']} vues ({_pct(t['seen'], self.population)}), "
               f"{t['appointment']} avec un rendez-vous fixé ; {t['followed']} déjà suivies par le flux, "
               f"{t['not_invited']} non invitées (MSA, contrat en cours, hors droits et devoirs)."]
        for target in self.targets:
            done = f"atteinte le {target.met_on:%d/%m/%Y}" if target.met_on else (
                f"{target.seen} vues sur {target.needed}, {float(target.expected):.0f} attendues à cette date")
            out.append(f"Cible {_share(target.share)} au {target.on:%d/%m/%Y} ({target.needed} personnes) : {done}.")
        for title, rows in (("Par segment", self.segments), ("Par organisation", self.organisations)):
            out.append(f"{title} :")
            out.append("  " + f"{'':40}" + " ".join(f"{SHORT.get(k, label):>14}" for k, label in COLUMNS))
            for row in rows:
                out.append(f"  {row.label[:40]:40}" + " ".join(f"{row.counts[k]:>14}" for k, _ in COLUMNS))
        out += [f"Attention : {w}" for w in self.plan.warnings]
        return out


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.0f} %" if total else "0 %"


def _share(share: Fraction) -> str:
    return f"{float(share * 100):.0f} %"


def status(app, now: dt.datetime) -> CampaignStatus:
    """The campaign's progress (see the module's docstring)."""
    if app.config.campaign is None:
        raise ServiceError("pas de campagne : config/campaign.yaml est absent")
    today = app.calendar.local_date(now)
    plan = campaign_service.plan(app, now)
    cfg = app.config.campaign
    segments: dict[str, Counter] = {}
    organisations: dict[str, Counter] = {}
    invited_by_day: Counter = Counter()
    seen_by_day: Counter = Counter()
    with session_scope(app.db_url) as s:
        campaign = s.execute(select(Campaign).where(Campaign.name == CAMPAIGN)).scalar()
        rows = [] if campaign is None else s.execute(
            select(CampaignMember, Person).join(Person, Person.id == CampaignMember.person_id)
            .where(CampaignMember.campaign_id == campaign.id)).all()
        # a campaign case may go on in another (a restart after a new address, a reorientation): the last one
        latest = select(func.max(Case.id)).where(Case.segment.is_not(None)).group_by(Case.person_id)
        last_case = {c.person_id: c for c in s.execute(select(Case).where(Case.id.in_(latest))).scalars()}
        active = set() if campaign is None else set(s.execute(
            select(Case.person_id).join(CampaignMember, CampaignMember.person_id == Case.person_id)
            .where(CampaignMember.campaign_id == campaign.id, Case.status == "active")).scalars())
        for member, person in rows:
            case = last_case.get(person.id)
            m, _why = campaign_service.eligible(app, member, person)
            book = member.organisation or (m.organisation if m else person.organisation)
            kinds = ["members"]
            if member.status == "invited":
                kinds.append("invited")
                invited_by_day[member.invited_on] += 1
                if case is not None and case.outcome == "attended":
                    kinds.append("seen")
                    seen_by_day[app.calendar.local_date(case.closed_at or case.updated_at)] += 1
                elif case is not None and case.status != "active":
                    kinds.append("closed")
                elif case is not None and case.appointment_at is not None:
                    kinds.append("appointment")
            elif member.status == "followed" or (m is not None and person.id in active):
                kinds.append("followed")
            else:
                kinds.append("waiting" if m is not None else "not_invited")
            for bucket in (segments.setdefault(member.segment, Counter()), organisations.setdefault(book, Counter())):
                bucket.update(kinds)
        status_value = campaign.status if campaign is not None else "absent"
        paused_since = (app.calendar.local_date(campaign.status_changed_at)
                        if campaign is not None and campaign.status == "paused" and campaign.status_changed_at else None)
        pause_note = campaign.status_note if paused_since else None
    order = list(cfg.segments)
    seg_rows = [Row(k, cfg.segments[k].label if k in cfg.segments else k, c)
                for k, c in sorted(segments.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)]
    org_rows = [Row(k, k, c) for k, c in sorted(organisations.items())]
    population = sum(c["invited"] + c["waiting"] for c in segments.values())
    curve = plan.projection.curve if plan.projection else {}
    targets = []
    for share, on in app.settings.campaign_target_list:
        needed = -(-share.numerator * population // share.denominator)
        seen_total, met_on = 0, None
        for day in sorted(seen_by_day):
            seen_total += seen_by_day[day]
            if met_on is None and seen_total >= needed:
                met_on = day
        targets.append(TargetProgress(share, on, needed, sum(seen_by_day.values()), plan_math.seen_by(curve, on),
                                      met_on if needed else None))
    return CampaignStatus(today, status_value, paused_since, pause_note, population, seg_rows, org_rows, targets, plan,
                          dict(invited_by_day), dict(seen_by_day))


def chart_svg(st: CampaignStatus) -> str:
    """Weekly, in % of the people to see: invited and seen so far, the plan's expected curve, the targets."""
    targets = {on: share for share, on in ((t.share, t.on) for t in st.targets)}
    days = list(st.invited_by_day) + list(st.seen_by_day) + list(targets) + [st.today] + list(
        st.plan.projection.curve if st.plan.projection else [])
    first = min(days)
    last = max(days)
    monday = first - dt.timedelta(days=first.weekday())
    weeks = []
    while monday <= last and len(weeks) < 104:
        weeks.append(monday)
        monday += dt.timedelta(days=7)
    pop = st.population or 1
    curve = st.plan.projection.curve if st.plan.projection else {}

    def cumulative(by_day: dict, until: dt.date) -> float:
        return sum(v for d, v in by_day.items() if d <= until) / pop

    ends = [w + dt.timedelta(days=6) for w in weeks]
    invited = [cumulative(st.invited_by_day, e) if w <= st.today else None for w, e in zip(weeks, ends)]
    seen = [cumulative(st.seen_by_day, e) if w <= st.today else None for w, e in zip(weeks, ends)]
    expected = [float(plan_math.seen_by(curve, e)) / pop for e in ends]
    target = [next((float(s) for d, s in targets.items() if w <= d <= e), None) for w, e in zip(weeks, ends)]
    step = 1 + len(weeks) // 16  # a readable axis: one label every `step` weeks
    labels = [f"{w:%d/%m}" if i % step == 0 else "" for i, w in enumerate(weeks)]
    return charts.lines(labels, [("Invitées", invited), ("Vues", seen), ("Vues attendues (plan)", expected),
                                 ("Cibles", target)], "Campagne du stock : avancement", "part des personnes à voir",
                        percent=True)


def write_html(app, now: dt.datetime, out: Path | None = None) -> tuple[Path, CampaignStatus]:
    """The HTML report (``templates/reports/campaign_status.html.j2``, the chart inside): written whole,
    private; default ``<outbox>/reports/campagne-stock-<date>.html``."""
    st = status(app, now)
    if st.status == "absent":
        raise ServiceError("aucune campagne : importez d'abord le stock (relance ingest --stock FICHIER)")
    html = app.renderer.render_report("campaign_status", {
        "st": st, "columns": COLUMNS, "chart": charts.data_uri(chart_svg(st)), "weeks": st.plan.weeks,
        "labels": st.plan.segment_labels, "generated": app.calendar.local(now)})
    path = Path(out) if out else Path(app.settings.outbox) / "reports" / f"campagne-stock-{st.today:%Y-%m-%d}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    files.replace_file(path, html.encode("utf-8"))
    return path, st


__all__ = ["status", "write_html", "chart_svg", "CampaignStatus", "COLUMNS"]
