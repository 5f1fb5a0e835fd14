"""The stock campaign (issue 14) through the store: the stock import, the day's invitations, the letters
that say what the appointment is for, pause and resume, and — on the sample stock and the sample
territory — a simulation of the plan day by day: no day above capacity, priorities in order, the
projection met exactly, and the flux never delayed by the campaign."""
from __future__ import annotations

import csv
import datetime as dt
from collections import Counter, defaultdict
from fractions import Fraction
from html import unescape
from pathlib import Path

import pytest
from sqlalchemy import func, select

from worker.adapters.flux import FluxFormatError
from worker.adapters.store import campaign_books, repository
from worker.adapters.store.models import Appointment, AuditEntry, CampaignMember, Case, Message, Person
from worker.adapters.store.session import session_scope
from worker.domain import campaign as cp
from worker.domain import engine
from worker.domain.model import PlanMessage
from worker.services import campaign, campaign_status, cases, ingest, stock
from worker.services.errors import ServiceError

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
STOCK = SAMPLES / "stock_2023-03.csv"
START = dt.date(2023, 6, 1)  # RELANCE_CAMPAIGN_START's default (a Thursday)


def _stock_rows() -> list[dict]:
    with open(STOCK, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def at(app, day: dt.date, hh: int = 15, mm: int = 0) -> dt.datetime:
    return app.calendar.at(day, dt.time(hh, mm))


def _import(app, path: Path = STOCK, day: dt.date = dt.date(2023, 5, 15)):
    return stock.import_stock(app, path, at(app, day, 9))


def _count(app, model, *where) -> int:
    with session_scope(app.db_url) as s:
        return s.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


# --------------------------------------------------------------------------- the stock import


def test_the_stock_is_imported_with_its_segments_and_nobody_is_invited(relance_app):
    app = relance_app
    report = _import(app)
    expected = Counter(r["segment"] for r in _stock_rows())
    assert (report.accepted, report.updated, report.unchanged, report.rejected) == (1396, 0, 0, [])
    assert report.segments == dict(expected)
    assert _count(app, CampaignMember) == 1396 and _count(app, Person) == 1396
    assert _count(app, Case) == 0 and _count(app, Message) == 0  # nobody invited at import
    with session_scope(app.db_url) as s:
        members = s.execute(select(CampaignMember.segment, CampaignMember.priority, func.count())
                            .group_by(CampaignMember.segment, CampaignMember.priority)).all()
        entry = s.execute(select(AuditEntry.data).where(AuditEntry.kind == "ingest")).scalar_one()
    assert {(seg, p): n for seg, p, n in members} == dict(Counter((r["segment"], int(r["priority"]))
                                                                 for r in _stock_rows()))
    assert entry["kind"] == "stock" and entry["rows"] == 1396 and entry["segments"]["msa"] == 39
    assert all("segment" not in (p or {}) for p in _extras(app))  # the segment lives in the campaign
    # again: nothing changes
    again = _import(app)
    assert (again.accepted, again.updated, again.unchanged) == (0, 0, 1396)
    assert _count(app, CampaignMember) == 1396


def _extras(app) -> list[dict]:
    with session_scope(app.db_url) as s:
        return list(s.execute(select(Person.extra)).scalars())


def test_the_stock_given_as_a_flux_is_refused_and_names_the_stock_import(relance_app):
    with pytest.raises(FluxFormatError, match=r"relance ingest --stock"):
        ingest.ingest_file(relance_app, STOCK, at(relance_app, dt.date(2023, 5, 15)))
    assert _count(relance_app, Person) == 0


def test_bad_stock_rows_are_rejected_alone_with_their_line_and_field(relance_app, tmp_path):
    rows = _stock_rows()[:6]
    rows[1]["segment"] = "inconnu"
    rows[2]["priority"] = "urgent"
    rows[3]["segment"] = ""
    path = tmp_path / "stock.csv"
    header = list(rows[0]) + ["contract_end"]
    with open(path, "w", encoding="utf-8", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=header)
        out.writeheader()
        for i, row in enumerate(rows):
            out.writerow({**row, "contract_end": "2023-31-12" if i == 4 else ("2023-09-30" if i == 5 else "")})
    report = _import(relance_app, path)
    assert [(r["line"], r["field"]) for r in report.rejected] == [
        (3, "segment"), (4, "priority"), (5, "segment"), (6, "contract_end")]
    assert "inconnu de config/campaign.yaml" in report.rejected[0]["reason"]
    assert report.accepted == 2
    with session_scope(relance_app.db_url) as s:
        ends = s.execute(select(CampaignMember.contract_end)).scalars().all()
    assert dt.date(2023, 9, 30) in ends


def test_an_msa_orientation_in_the_flux_is_accepted_and_never_invited(relance_app, flux_writer):
    path = flux_writer([{"external_id": "CAF35-0900001", "orientation": "msa", "organisation": "MSA-PORTES-BRETAGNE"},
                        {"external_id": "CAF35-0900002", "orientation": "MSA"},
                        {"external_id": "CAF35-0900003"}])
    report = ingest.ingest_file(relance_app, path, at(relance_app, dt.date(2024, 6, 3), 10))
    assert (report.accepted, report.rejected, report.cases_opened) == (3, [], 1)
    with session_scope(relance_app.db_url) as s:
        orientations = dict(s.execute(select(Person.external_id, Person.orientation)).all())
        with_case = set(s.execute(select(Person.external_id).join(Case, Case.person_id == Person.id)).scalars())
    assert orientations["CAF35-0900001"] == orientations["CAF35-0900002"] == "msa"
    assert with_case == {"CAF35-0900003"}


# --------------------------------------------------------------------------- the day's invitations


def test_the_campaign_invites_from_its_start_after_the_flux_on_working_days_and_pauses(relance_app):
    app = relance_app
    _import(app)
    assert campaign.invite_due(app, at(app, dt.date(2023, 5, 31))) == 0  # before RELANCE_CAMPAIGN_START
    assert campaign.invite_due(app, at(app, START, 11)) == 0  # before RELANCE_CAMPAIGN_TIME: the flux first
    assert campaign.invite_due(app, at(app, dt.date(2023, 6, 3))) == 0  # a Saturday
    planned = [i for i in campaign.plan(app, at(app, START, 11)).projection.plan.invitations if i.day == START]
    first = campaign.invite_due(app, at(app, START))
    assert first == len(planned) > 0
    assert campaign.invite_due(app, at(app, START, 16)) == 0  # the day's quota is spent
    with session_scope(app.db_url) as s:
        opened = s.execute(select(Case).where(Case.segment.is_not(None))).scalars().all()
        assert len(opened) == first and not any(c.late for c in opened)
        reasons = {e.data.get("reason") for e in s.execute(select(AuditEntry).where(
            AuditEntry.kind == "case")).scalars()}
        invited = {m.case_id for m in s.execute(select(CampaignMember).where(
            CampaignMember.status == "invited")).scalars()}
    assert reasons == {"campaign"} and invited == {c.id for c in opened}
    assert {(c.segment, c.first_channels) for c in opened} >= {("non_oriented", "letter sms")}
    assert campaign.set_status(app, at(app, START, 17), "paused", "comité de pilotage").startswith("Campagne en pause")
    assert campaign.invite_due(app, at(app, dt.date(2023, 6, 2))) == 0
    assert "déjà en pause" in campaign.set_status(app, at(app, START, 17), "paused")
    st = campaign_status.status(app, at(app, dt.date(2023, 6, 2)))
    assert st.status == "paused" and st.paused_since == START
    campaign.set_status(app, at(app, dt.date(2023, 6, 5), 9), "active")
    assert campaign.invite_due(app, at(app, dt.date(2023, 6, 5))) > 0


def test_nothing_to_pause_without_a_stock(relance_app):
    with pytest.raises(ServiceError, match="ingest --stock"):
        campaign.set_status(relance_app, at(relance_app, START), "paused")
    assert campaign.plan(relance_app, at(relance_app, START)).status == "absent"


def test_the_campaigns_letters_say_what_the_appointment_is_for(relance_app):
    """Each segment's first letter names its appointment (co-diagnostic, milestone interview, contract
    renewal...), never "premier entretien"; the rest of the path is the flux's."""
    from worker.entrypoints import jobs

    app = relance_app
    _import(app)
    jobs.cycle(app, at(app, START))
    with session_scope(app.db_url) as s:
        letters = s.execute(select(Case.segment, Message.step, Message.template_name, Message.provider_ref)
                            .join(Message, Message.case_id == Case.id)
                            .where(Message.channel == "letter", Case.segment.is_not(None))).all()
        sms = s.execute(select(Case.segment, Message.template_name).join(Message, Message.case_id == Case.id)
                        .where(Message.channel == "sms", Message.template_name.is_not(None))).all()
    assert letters and sms
    words = {"non_oriented": "co-diagnostic", "ft_registered": "entretien d'étape", "ml_no_contract": "diagnostic",
             "cd_contract_to_renew": "renouvellement de votre contrat", "bimbamjob_to_reorient": "diagnostic"}
    seen = set()
    for segment, step, template, ref in letters:
        assert template == ("letters/campaign_convocation.html.j2" if step == "ft_convocation"
                            else "letters/campaign_invitation.html.j2")
        html = unescape((Path(app.settings.letters) / ref).read_text(encoding="utf-8"))
        assert "premier entretien" not in html
        if segment in words:
            assert words[segment] in html, (segment, step)
            seen.add(segment)
    assert {"non_oriented", "ft_registered"} <= seen
    assert {t for _seg, t in sms} <= {"sms/invitation_1.txt.j2", "sms/ft_convocation.txt.j2"}


def test_sms_or_email_takes_the_sms_when_the_person_has_a_mobile(relance_app):
    """cd_contract_to_renew: "sms|email, letter"."""
    app = relance_app
    _import(app)
    for day in (START, dt.date(2023, 6, 2), dt.date(2023, 6, 5), dt.date(2023, 6, 6)):
        campaign.invite_due(app, at(app, day))
    with session_scope(app.db_url) as s:
        opened = s.execute(select(Case).where(Case.segment == "cd_contract_to_renew")).scalars().all()
        assert opened
        for case in opened:
            decision = engine.decide(repository.to_state(case), at(app, dt.date(2023, 6, 6)), app.policy,
                                     app.calendar)
            channels = {a.channel for a in decision.actions if isinstance(a, PlanMessage)}
            person = s.get(Person, case.person_id)
            assert "letter" in channels
            assert ("sms" in channels) == bool(person.phone) and ("email" in channels) == (
                not person.phone and bool(person.email)), (person.phone, person.email, channels)


# --------------------------------------------------------------------------- the flux's places


def test_a_campaign_convocation_leaves_each_days_last_places_to_the_flux(relance_app):
    app = relance_app
    _import(app)
    with session_scope(app.db_url) as s:
        person = s.execute(select(Person).where(Person.organisation == "CDAS-REDON")).scalars().first()
        flux_case = repository.create_case(s, app, person, "cd", at(app, START))
        camp = repository.create_case(s, app, person, "cd", at(app, START), segment="non_oriented")
        now = at(app, dt.date(2023, 6, 5), 15)  # a Monday: earliest Monday 12, taken from Tuesday 13
        day = dt.date(2023, 6, 13)
        limit = campaign_books.campaign_limits(s, app, "CDAS-REDON", now, day, day)[day]
        assert limit == 8 - 1  # 4 times x 2 places, one kept for the flux (3 a week over 3 days)
        slots = []
        for _ in range(limit + 1):
            slot = repository.find_slot(s, app, "CDAS-REDON", now + dt.timedelta(days=7), campaign_now=now)
            s.add(Appointment(case_id=camp.id, step="convocation", kind="convocation", at=slot,
                              organisation="CDAS-REDON", status="scheduled", created_at=now, updated_at=now))
            s.flush()
            slots.append(slot)
        days = Counter(app.calendar.local_date(x) for x in slots)
        assert days[day] == limit and days[dt.date(2023, 6, 15)] == 1  # then Thursday
        # the flux still finds the day's last place, at 15:00
        flux_slot = repository.find_slot(s, app, "CDAS-REDON", at(app, day, 8))
        assert app.calendar.local(flux_slot).date() == day and app.calendar.local(flux_slot).hour == 15
        assert flux_case.id != camp.id


def test_the_purge_takes_the_stock_people_with_their_membership(relance_app):
    from worker.services.retention import purge_expired

    app = relance_app
    _import(app)  # 15 May 2023; nobody invited, nothing happened since: 24 months later, purged
    assert purge_expired(app, at(app, dt.date(2025, 6, 1), 3)) == 1396
    assert _count(app, CampaignMember) == 0 and _count(app, Person) == 0


# --------------------------------------------------------------------------- the sample stock, simulated


@pytest.fixture
def sqlite_app(tmp_path):
    """The sample territory on SQLite (the long simulations run on one backend)."""
    from worker.adapters.store import session as db_session
    from worker.bootstrap import build_app, set_app
    from worker.entrypoints.celery_app import celery, configure
    from worker.settings import Settings

    def make(name: str = "sim", **overrides):
        url = f"sqlite:///{tmp_path / (name + '.db')}"
        settings = Settings(data_dir=tmp_path / name, database_url=url, broker_url="memory://", **overrides)
        app = build_app(settings)
        configure(settings)
        db_session.upgrade(url)
        return app

    saved = {k: celery.conf[k] for k in ("broker_url", "task_always_eager")}
    try:
        yield make
    finally:
        set_app(None)
        celery.conf.update(saved)
        db_session.dispose_all()


def _simulate_campaign(app, until: dt.date) -> dict[int, dt.date]:
    """The scheduler's job, every day at 15:00 from the campaign's start: {member id: invited on}."""
    day = START
    while day <= until:
        campaign.invite_due(app, at(app, day))
        day += dt.timedelta(days=1)
    with session_scope(app.db_url) as s:
        return dict(s.execute(select(CampaignMember.id, CampaignMember.invited_on)
                              .where(CampaignMember.status == "invited")).all())


def test_the_sample_stock_simulated_day_by_day_matches_the_projection(sqlite_app):
    """On the sample stock and territory: the plan made before the campaign begins, and the campaign
    run day by day by its job, invite the same people on the same days; the targets are reached on
    the projected dates; no book's day is ever filled beyond the campaign's share; each book serves
    its people in priority order; the MSA's people, valid contracts and people without duties are
    never invited."""
    app = sqlite_app()
    _import(app)
    before = campaign.plan(app, at(app, dt.date(2023, 5, 31), 9))
    proj = before.projection
    planned = {inv.member: inv.day for inv in proj.plan.invitations}
    assert not proj.plan.waiting and len(planned) == proj.population == 906
    assert all(t.met for t in proj.targets) and not before.warnings
    invited = _simulate_campaign(app, max(planned.values()) + dt.timedelta(days=7))
    assert invited == planned  # the same people, the same days

    # the targets: reached on the projected dates, by the invitations actually made
    profs = campaign.profiles(app)
    with session_scope(app.db_url) as s:
        rows = s.execute(select(CampaignMember, Person).join(Person, Person.id == CampaignMember.person_id)).all()
        reserve = campaign_books.reserve_per_week(s, app, at(app, START))
    actual = [cp.Invitation(m.invited_on, m.id, m.organisation, m.path, m.segment, m.priority)
              for m, _p in rows if m.status == "invited"]
    books = cp.build_books(app.territory, app.calendar, START, START + dt.timedelta(days=400), reserve)
    curve = cp.seen_curve(actual, books, profs)
    for t in proj.targets:
        assert cp.reached_on(curve, Fraction(t.needed)) == t.reached_on

    # no day beyond the campaign's share of its book
    filled: dict[tuple[str, dt.date], Fraction] = defaultdict(Fraction)
    for inv in actual:
        for load in profs[inv.path]:
            day = min(d for d in books[inv.organisation] if d >= inv.day + dt.timedelta(days=load.days))
            filled[(inv.organisation, day)] += load.share
    assert filled and all(v <= books[o][d].free for (o, d), v in filled.items())
    busiest = max(filled.values())
    assert busiest > 0

    # priorities in order, book by book: nobody invited while someone before them in line waited
    for code in {inv.organisation for inv in actual}:
        by_day = defaultdict(list)
        for inv in actual:
            if inv.organisation == code:
                by_day[inv.day].append(inv.priority)
        last = 0
        for day in sorted(by_day):
            assert min(by_day[day]) >= last, (code, day, by_day[day], last)
            last = max(by_day[day])

    # never invited: the MSA's people, valid contracts, people without duties
    never = {m.id for m, p in rows if m.segment in ("msa", "cd_valid_contract") or not p.droits_devoirs}
    assert never and not never & set(invited)


def test_the_flux_is_never_delayed_by_the_campaign(sqlite_app):
    """The same flux, alone and alongside the stock campaign, everybody silent (the longest path: every
    invitation goes unanswered, every case reaches its convocation): each new entrant is invited,
    reminded and convoked at the same moments, on the same slots."""
    overrides = dict(campaign_start=dt.date(2024, 4, 1), campaign_targets="20%:2024-05-15,80%:2024-12-31")
    flux_only, with_stock = sqlite_app("flux", **overrides), sqlite_app("both", **overrides)
    _import(with_stock, day=dt.date(2024, 3, 25))
    days = 78  # the April flux's silent people are convoked in the second week of June
    schedule = {0: "flux_2024-03.csv", 31: "flux_2024-04_excel.csv"}
    for app in (flux_only, with_stock):
        for offset in range(days):
            day = dt.date(2024, 4, 1) + dt.timedelta(days=offset)
            if offset in schedule:
                ingest.ingest_file(app, SAMPLES / schedule[offset], at(app, day, 8, 30))
            for hh in (8, 15, 19):
                now = at(app, day, hh, 30)
                if hh == 15:
                    campaign.invite_due(app, now)
                for case_id in cases.due_case_ids(app, now, 10_000):
                    cases.advance_case(app, case_id, now)
    assert _count(with_stock, Case, Case.segment.is_not(None)) > 500

    def flux_facts(app):
        with session_scope(app.db_url) as s:
            steps = s.execute(select(Person.external_id, Message.step, Message.channel, Message.not_before)
                              .join(Case, Case.person_id == Person.id).join(Message, Message.case_id == Case.id)
                              .where(Case.segment.is_(None))).all()
            slots = s.execute(select(Person.external_id, Appointment.at).join(Case, Case.person_id == Person.id)
                              .join(Appointment, Appointment.case_id == Case.id)
                              .where(Case.segment.is_(None))).all()
        return sorted(steps), sorted(slots)

    alone_steps, alone_slots = flux_facts(flux_only)
    both_steps, both_slots = flux_facts(with_stock)
    assert len(alone_slots) > 20  # the flux's people were convoked...
    day = flux_only.calendar.local_date
    # ... on the same days (the campaign's convocations take each day's first places, up to its share:
    # a new entrant may be seen an hour later that day, never a day later)
    assert [(ext, day(slot)) for ext, slot in both_slots] == [(ext, day(slot)) for ext, slot in alone_slots]
    assert both_steps == alone_steps  # every message of theirs planned at the same moment
    moved = sum(1 for a, b in zip(alone_slots, both_slots) if a != b)
    assert moved < len(alone_slots) // 2
    # and no slot of any book holds more people than its capacity
    with session_scope(with_stock.db_url) as s:
        held = s.execute(select(Appointment.organisation, Appointment.at, func.count())
                         .where(Appointment.status == "scheduled")
                         .group_by(Appointment.organisation, Appointment.at)).all()
    assert held and all(n <= with_stock.territory.organisations[o].convocation.capacity for o, _at, n in held)


# --------------------------------------------------------------------------- the command line and the demo


def test_the_campaign_commands(tmp_path):
    """`relance ingest --stock`, `relance campaign plan|status|pause|resume`, as agents run them."""
    import json

    from tests.integration.test_cli import Cli

    cli = Cli(tmp_path)
    cli.run("db", "upgrade")
    refused = cli.fails("ingest", str(STOCK))
    assert "relance ingest --stock" in refused
    out = cli.run("ingest", "--stock", str(STOCK), "--now", "2023-05-15T10:00").stdout
    assert "1396 nouvelles personnes" in out and "Suivis par la MSA (msa) : 39" in out
    again = json.loads(cli.run("ingest", "--stock", str(STOCK), "--json", "--now", "2023-05-15T10:00").stdout)
    assert again["unchanged"] == 1396 and again["segments"]["non_oriented"] == 257
    plan = cli.json("campaign", "plan", "--json", "--now", "2023-05-31T10:00")
    assert plan["population"] == 906 and plan["weeks"] and not plan["warnings"]
    assert plan["targets"][0]["met"] and plan["targets"][0]["reached_on"] <= "2023-07-15"
    text = cli.run("campaign", "plan", "--now", "2023-05-31T10:00").stdout
    assert "Semaine du" in text and "Cible 20 % au 15/07/2023" in text
    # a target the places cannot meet: by how much, and the places a week that would meet it
    short = cli.run("campaign", "plan", "--now", "2023-05-31T10:00",
                    env={"RELANCE_CAMPAIGN_TARGETS": "5%:2023-06-06,90%:2023-07-31"}).stdout
    assert "Cible 90 % au 31/07/2023 non atteinte" in short and "places de plus par semaine" in short
    # 5 % by 6 June: the first appointments come later, whatever the places
    assert "Cible 5 % au 06/06/2023 non atteinte" in short and "Aucune capacité ne suffirait" in short
    cli.run("tick", "--now", "2023-06-01T15:00")
    status = cli.json("campaign", "status", "--json", "--now", "2023-06-02T09:00")
    assert status["total"]["invited"] > 0 and status["total"]["members"] == 1396
    html = tmp_path / "campagne.html"
    cli.run("campaign", "status", "--html", "--out", str(html), "--now", "2023-06-02T09:00")
    page = html.read_text(encoding="utf-8")
    assert "data:image/svg+xml;base64," in page and "Par segment" in page and "Non orientés" in page
    assert "Campagne en pause" in cli.run("campaign", "pause", "--reason", "comité", "--now", "2023-06-02T09:00").stdout
    assert cli.json("campaign", "status", "--json", "--now", "2023-06-02T09:10")["status"] == "paused"
    assert "reprise" in cli.run("campaign", "resume", "--now", "2023-06-05T09:00").stdout


def test_the_demo_runs_the_campaign_alongside_the_flux(tmp_path):
    from worker.entrypoints.demo import run_demo

    summary = run_demo(days=10, out=tmp_path / "demo", campaign=True)
    assert "Campagne du stock, à côté du flux" in summary and "Stock importé" in summary
    assert "Par segment" in summary and "invitées" in summary
    assert (tmp_path / "demo" / "campagne-stock.html").exists()
    assert "Journal d'audit : intact" in summary


@pytest.mark.skipif(__import__("shutil").which("pdftotext") is None, reason="poppler-utils not installed")
def test_the_campaigns_letters_fit_one_sheet_for_every_appointment_type():
    """One A4 sheet with ordinary values (tests/integration/test_letters_pdf.py's rule for the flux's
    letters), two at most with long ones."""
    import weasyprint

    from tests.template_samples import sample_context
    from worker.adapters.config_files import load_config
    from worker.adapters.rendering import TemplateRenderer

    root = Path(__file__).resolve().parents[2]
    renderer = TemplateRenderer(root / "templates")
    types = load_config(root / "config").campaign.appointment_types
    for step in ("campaign_invitation", "campaign_convocation"):
        for key, t in types.items():
            for kind in ("cd", "ft", "ml", "msa"):
                ctx = sample_context(step, kind=kind)
                ctx["campaign"] = {"segment": None, "appointment": key, "label": t.label, "name": t.name,
                                   "purpose": t.purpose, "meet": t.meet}
                if t.meet:
                    ctx["venue"]["meet"] = t.meet
                html = renderer.render(step, "letter", ctx).html
                assert len(weasyprint.HTML(string=html).render().pages) == 1, (step, key, kind)
        html = renderer.render(step, "letter", sample_context(step, long=True)).html
        assert len(weasyprint.HTML(string=html).render().pages) <= 2, step


def test_the_report_shows_the_campaigns_progress_against_its_targets(relance_app):
    """Issue 13's report, once the stock is imported: the campaign's state and each target."""
    from worker.services import report

    app = relance_app
    before = report.build(app, at(app, dt.date(2023, 5, 15)))
    assert any(n == "Campagne du stock : aucune (stock non importé)." for n in before.notes)
    _import(app)
    notes = [n for n in report.build(app, at(app, dt.date(2023, 6, 1))).notes if n.startswith("Campagne du stock")]
    assert len(notes) == 1 and "Campagne du stock au 01/06/2023" in notes[0]
    assert "Cible 20 % au 15/07/2023" in notes[0] and "Cible 80 % au 31/12/2023" in notes[0]
