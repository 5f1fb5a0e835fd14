"""The stock campaign (issue 14): its plan, the day's invitations, pause and resume.

The store says who waits (``campaign_members``, filled by ``relance ingest --stock``), who was invited
and when; :mod:`worker.domain.campaign` does the arithmetic. This module feeds it and acts:

* :func:`plan` — the schedule from today (or ``RELANCE_CAMPAIGN_START``) to the last invitation, week
  by week, the dates the targets (``RELANCE_CAMPAIGN_TARGETS``) are reached, and a warning for each
  one the capacity cannot meet (``relance campaign plan``);
* :func:`invite_due` — the scheduler's job, after the flux: on a working day, from
  ``RELANCE_CAMPAIGN_TIME`` (after the morning's flux files), while the campaign is active, it opens the
  cases of the people the plan invites today (each on their path, with their segment's channels and
  appointment type), the rest waiting for the next days;
* :func:`set_status` — pause and resume (``relance campaign pause|resume``): paused, nobody new is
  invited; the cases already opened go on.

Who is invited: the members of a segment the department invites (``config/campaign.yaml``), subject
to droits et devoirs, on a department's path (not the MSA's), and not already followed (a person with
an active case when their turn comes is marked ``followed``, never invited twice). A segment not
invited whose row gives ``contract_end`` joins as its ``renews_as`` segment ``renewal_days`` before it.
Logs and audit entries carry counts only.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections import Counter
from fractions import Fraction

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.adapters.store import audit, campaign_books, repository
from worker.adapters.store.models import Campaign, CampaignMember, Case, Person
from worker.adapters.store.session import session_scope
from worker.domain import campaign as plan_math
from worker.services.errors import ServiceError
from worker.services.stock import campaign_row

log = logging.getLogger("relance.campaign")

HORIZON_DAYS = 3 * 366  # the plan stops when everyone is invited, or after this
EXCLUSIONS = {  # why a member of the stock is not invited by the department, for agents
    "not_invited": "segment non invité (config/campaign.yaml)",
    "no_duties": "hors droits et devoirs",
    "msa": "suivi par la MSA (orientation msa)",
    "unknown_segment": "segment absent de config/campaign.yaml",
}


def profiles(app) -> dict[str, tuple[plan_math.Load, ...]]:
    rate = Fraction(str(app.settings.campaign_response_rate))
    return {path: plan_math.load_profile(app.policy, path, rate) for path in app.policy.paths}


def eligible(app, member: CampaignMember, person: Person) -> tuple[plan_math.Member | None, str | None]:
    """The member as the planner sees them, or (None, why they are not invited)."""
    cfg = app.config.campaign
    seg = cfg.segment(member.segment)
    if seg is None:
        return None, "unknown_segment"
    key, priority, available_on = member.segment, member.priority, None
    if not seg.invited:
        if seg.renews_as is None or member.contract_end is None:
            return None, "not_invited"
        key, available_on = seg.renews_as, member.contract_end - dt.timedelta(days=seg.renewal_days)
        seg = cfg.segments[key]
        priority = seg.priority
    if not person.droits_devoirs:
        return None, "no_duties"
    path = seg.path or app.policy.route(person.orientation, person.ft_registered)
    if path is None:
        return None, "msa"
    book = (person.organisation if seg.book == "person"
            else app.territory.department.review_organisation(person.postcode))
    return plan_math.Member(id=member.id, organisation=book, segment=key, priority=priority, path=path,
                            droit_opened_on=person.droit_opened_on, available_on=available_on,
                            order=cfg.order(key)), None


@dataclasses.dataclass
class Snapshot:
    """The campaign as the store holds it."""
    campaign: Campaign | None
    members: list[plan_math.Member]  # waiting, to invite
    past: list[plan_math.Invitation]  # invited (every day so far)
    followed: int
    excluded: Counter  # (segment, reason) -> people
    newly_followed: list[tuple[int, int]]  # (member id, active case id): their turn came while followed
    rows: dict[int, tuple[CampaignMember, Person]]


def snapshot(s: Session, app, now: dt.datetime) -> Snapshot:
    campaign = campaign_row(s, now)
    snap = Snapshot(campaign, [], [], 0, Counter(), [], {})
    if campaign is None or app.config.campaign is None:
        return snap
    rows = s.execute(select(CampaignMember, Person).join(Person, Person.id == CampaignMember.person_id)
                     .where(CampaignMember.campaign_id == campaign.id).order_by(CampaignMember.id)).all()
    active = dict(s.execute(select(Case.person_id, Case.id).join(
        CampaignMember, CampaignMember.person_id == Case.person_id)
        .where(CampaignMember.campaign_id == campaign.id, Case.status == "active")).all())
    for member, person in rows:
        snap.rows[member.id] = (member, person)
        if member.status == "invited":
            snap.past.append(plan_math.Invitation(member.invited_on, member.id, member.organisation, member.path,
                                                  member.segment, member.priority))
        elif member.status == "followed":
            snap.followed += 1
        else:
            m, why = eligible(app, member, person)
            if m is None:
                snap.excluded[(member.segment, why)] += 1
            elif person.id in active:
                snap.newly_followed.append((member.id, active[person.id]))
                snap.followed += 1
            else:
                snap.members.append(m)
    snap.past.sort(key=lambda inv: (inv.day, inv.member))
    return snap


@dataclasses.dataclass
class CampaignPlan:
    status: str  # active | paused | absent (no stock imported)
    start: dt.date
    projection: plan_math.Projection | None
    weeks: list[plan_math.Week]
    waiting: int
    invited: int
    followed: int
    excluded: dict[str, int]  # reason -> people
    segment_labels: dict[str, str]

    @property
    def warnings(self) -> list[str]:
        """A French sentence for each target the capacity cannot meet: by how much, and the fix."""
        out = []
        for t in self.projection.targets if self.projection else ():
            if t.met:
                continue
            short = t.needed - int(t.expected)
            head = (f"Cible {_pct(t.share)} au {t.on:%d/%m/%Y} non atteinte : {_num(t.expected)} personnes vues "
                    f"attendues sur {t.needed} (il en manque {short}).")
            if t.on < self.start:
                out.append(head.replace(" non atteinte :", " passée sans être atteinte :"))
            elif not t.reachable:
                out.append(head + " Aucune capacité ne suffirait : les rendez-vous des premières invitations "
                                  "arrivent trop tard. Avancez le début de la campagne ou repoussez la cible.")
            else:
                out.append(head + f" {t.extra_per_week} places de plus par semaine dans chaque organisation "
                                  f"concernée ({', '.join(t.organisations)}) suffiraient.")
        return out

    def lines(self) -> list[str]:
        """The plan as French text (``relance campaign plan``)."""
        p = self.projection
        if p is None:
            return ["Aucune campagne : importez d'abord le stock (relance ingest --stock FICHIER)."]
        state = "active" if self.status == "active" else "en pause (le plan suppose une reprise aujourd'hui)"
        out = [f"Campagne du stock : {state} ; invitations à partir du {self.start:%d/%m/%Y}.",
               f"{p.population} personnes à voir : {self.invited} déjà invitées, {self.waiting} en attente ; "
               f"{self.followed} déjà suivies par le flux ; non invitées : "
               + (", ".join(f"{n} {why}" for why, n in sorted(self.excluded.items())) or "aucune") + "."]
        if p.plan.invitations:
            out.append(f"Dernière invitation prévue le {p.plan.invitations[-1].day:%d/%m/%Y}"
                       + (f" ; {len(p.plan.waiting)} personnes restent sans date (places insuffisantes)."
                          if p.plan.waiting else "."))
        for t in p.targets:
            when = f"atteinte le {t.reached_on:%d/%m/%Y}" if t.met and t.reached_on else "NON atteinte"
            out.append(f"Cible {_pct(t.share)} au {t.on:%d/%m/%Y} : {t.needed} personnes à voir ; "
                       f"{_num(t.expected)} vues attendues à cette date : {when}.")
        if self.weeks:
            out.append("Semaine du   invitations  cumul   vues attendues   par segment")
            for w in self.weeks:
                detail = ", ".join(f"{self.segment_labels.get(k, k)} {n}" for k, n in sorted(w.invited.items()))
                share = f"{100 * float(w.seen) / p.population:.0f} %" if p.population else "-"
                out.append(f"{w.monday:%d/%m/%Y} {w.total:>12} {w.cumulative:>6} {_num(w.seen):>9} ({share:>5})   "
                           f"{detail}")
        out += [f"Attention : {w}" for w in self.warnings]
        return out

    def as_json(self) -> dict:
        p = self.projection
        return {
            "status": self.status, "start": self.start.isoformat(), "population": p.population if p else 0,
            "waiting": self.waiting, "invited": self.invited, "followed": self.followed, "excluded": self.excluded,
            "targets": [{"share": float(t.share), "date": t.on.isoformat(), "needed": t.needed,
                         "expected": round(float(t.expected), 1), "met": t.met,
                         "reached_on": t.reached_on.isoformat() if t.reached_on else None,
                         "extra_per_week": t.extra_per_week, "organisations": list(t.organisations),
                         "reachable": t.reachable} for t in (p.targets if p else [])],
            "last_invitation": p.plan.invitations[-1].day.isoformat() if p and p.plan.invitations else None,
            "not_planned": len(p.plan.waiting) if p else 0,
            "weeks": [{"monday": w.monday.isoformat(), "invited": w.invited, "total": w.total,
                       "cumulative": w.cumulative, "seen": round(float(w.seen), 1)} for w in self.weeks],
            "warnings": self.warnings,
        }


def _pct(share: Fraction) -> str:
    value = float(share * 100)
    return f"{value:.0f} %" if value == int(value) else f"{value:.1f} %".replace(".", ",")


def _num(value: Fraction) -> str:
    """People expected: whole people, rounded down (never more than the plan promises)."""
    return str(int(value))


def _project(s: Session, app, now: dt.datetime, snap: Snapshot, start: dt.date,
             end: dt.date) -> plan_math.Projection:
    profs = profiles(app)
    first = min([start] + [inv.day for inv in snap.past])
    book_end = end + dt.timedelta(days=plan_math.max_lag(profs) + 14)
    return plan_math.project(
        snap.members, start=start, end=end, territory=app.territory, cal=app.calendar,
        reserve_per_week=campaign_books.reserve_per_week(s, app, now), profiles=profs, past=snap.past,
        targets=app.settings.campaign_target_list, population=len(snap.past) + len(snap.members),
        book_end=book_end, known_flux=campaign_books.known_flux(s, app, first, book_end))


def first_day(app, now: dt.datetime) -> dt.date:
    """The first day the campaign may invite from now: today, or RELANCE_CAMPAIGN_START if later."""
    return max(app.calendar.local_date(now), app.settings.campaign_start)


def plan(app, now: dt.datetime) -> CampaignPlan:
    """The schedule from today to the last invitation, and the targets checked (``relance campaign plan``)."""
    _require_config(app)
    start = first_day(app, now)
    with session_scope(app.db_url) as s:
        snap = snapshot(s, app, now)
        labels = {k: seg.label for k, seg in app.config.campaign.segments.items()}
        excluded = Counter()
        for (_segment, why), n in snap.excluded.items():
            excluded[EXCLUSIONS[why]] += n
        if snap.campaign is None:
            return CampaignPlan("absent", start, None, [], 0, 0, 0, {}, labels)
        proj = _project(s, app, now, snap, start, start + dt.timedelta(days=HORIZON_DAYS))
    return CampaignPlan(snap.campaign.status, start, proj, plan_math.weeks(proj), len(snap.members), len(snap.past),
                        snap.followed, dict(excluded), labels)


def invite_due(app, now: dt.datetime) -> int:
    """The day's invitations (the scheduler's job, after the flux): the number of cases opened."""
    if app.config.campaign is None:
        return 0
    today = app.calendar.local_date(now)
    if today < app.settings.campaign_start or not app.calendar.is_working_day(today):
        return 0
    if app.calendar.local(now).time() < dt.time.fromisoformat(app.settings.campaign_time):
        return 0  # the morning's flux first
    with session_scope(app.db_url) as s:
        campaign = campaign_row(s, now)
        if campaign is None or campaign.status != "active":
            return 0
        snap = snapshot(s, app, now)
        for member_id, case_id in snap.newly_followed:
            member = snap.rows[member_id][0]
            member.status, member.case_id, member.updated_at = "followed", case_id, now
        if not snap.members:
            return 0
        profs = profiles(app)
        first = min([today] + [inv.day for inv in snap.past])
        book_end = today + dt.timedelta(days=plan_math.max_lag(profs) + 14)
        books = campaign_books.books(s, app, now, first, book_end)
        day = plan_math.plan(snap.members, start=today, end=today, books=books, profiles=profs, cal=app.calendar,
                             past=snap.past)
        cfg = app.config.campaign
        for inv in day.invitations:
            member, person = snap.rows[inv.member]
            seg = cfg.segments[inv.segment]
            case = repository.create_case(s, app, person, inv.path, now, reason="campaign", segment=inv.segment,
                                          first_channels=" ".join(seg.channels) or None, organisation=inv.organisation)
            member.status, member.case_id, member.updated_at = "invited", case.id, now
            member.invited_on, member.invited_at, member.organisation, member.path = today, now, inv.organisation, inv.path
        if day.invitations:
            by_segment = Counter(inv.segment for inv in day.invitations)
            audit.append(s, at=now, kind="campaign", data={"campaign": campaign.name, "day": today.isoformat(),
                                                           "invited": len(day.invitations),
                                                           "segments": dict(sorted(by_segment.items()))})
    if day.invitations:
        log.info("campaign: %d people invited today (%d waiting)", len(day.invitations),
                 len(snap.members) - len(day.invitations))
    return len(day.invitations)


def set_status(app, now: dt.datetime, status: str, note: str | None = None) -> str:
    """Pause (``paused``) or resume (``active``) the campaign: a French sentence saying what changed."""
    if status not in ("active", "paused"):
        raise ServiceError(f"statut inconnu {status!r} (active ou paused)")
    with session_scope(app.db_url) as s:
        campaign = campaign_row(s, now)
        if campaign is None:
            raise ServiceError("aucune campagne : importez d'abord le stock (relance ingest --stock FICHIER)")
        if campaign.status == status:
            return "La campagne est déjà en pause." if status == "paused" else "La campagne est déjà active."
        campaign.status, campaign.status_changed_at, campaign.updated_at = status, now, now
        campaign.status_note = (note or "").strip()[:200] or None
        audit.append(s, at=now, kind="campaign", data={"campaign": campaign.name, "status": status})
    log.info("campaign %s", status)
    if status == "paused":
        return ("Campagne en pause : plus aucune nouvelle invitation. Les dossiers déjà ouverts continuent "
                "(relances, convocations).")
    return "Campagne reprise : les invitations du jour partent au prochain cycle, dans la limite des places."


def _require_config(app) -> None:
    if app.config.campaign is None:
        raise ServiceError("pas de campagne : config/campaign.yaml est absent")


__all__ = ["plan", "invite_due", "set_status", "snapshot", "eligible", "profiles", "first_day", "CampaignPlan",
           "Snapshot", "EXCLUSIONS"]
