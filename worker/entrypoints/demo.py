"""``relance demo``: a fresh SQLite database, the bundled flux samples and N
simulated days (fixed seed) in which people book, attend, miss, never answer,
have mail returned, report a legitimate reason, and agents take review
decisions — all through the production code paths (inbox scan, scheduler
cycle, Celery tasks run eagerly, services, engine, local channels).

The people of the organisations that book in RDV-Solidarités (``rdv_solidarites`` in
``config/territory.yaml``) book there: RDV-Solidarités then notifies Relance by signed webhooks,
posted to the API's route (:class:`RdvSolidarites`), for the booking, the attendance or absence and
an excused cancellation; a few of them are not recognised and wait for an agent.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import random
import shutil
import statistics
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from worker.adapters.store import audit

from worker.entrypoints import demo_campaign, jobs

from worker.services import cases, errors
from worker.adapters.store.models import Appointment, AuditEntry, Case, Message, Person
from worker.adapters.store.session import dispose_all, session_scope, upgrade
from worker.settings import PROJECT_ROOT, Settings

UTC = dt.timezone.utc
START = dt.date(2024, 4, 1)
# (day offset, sample file): the monthly flux files arrive at the start of each month.
FLUX_SCHEDULE = [(0, "flux_2024-03.csv"), (31, "flux_2024-04_excel.csv"), (63, "flux_2024-05_with_errors.csv")]
TICK_TIMES = (dt.time(8, 30), dt.time(11, 0), dt.time(15, 0), dt.time(19, 30))
# The demo's own keys (its people are fictional; published here, so never for real data): the
# commands refuse the development keys, so the demo's data is read again with these.
DEMO_SECRETS = {"RELANCE_NIR_HASH_KEY": "demo-only-fictional-people-nir-key-2024-not-secret",
                "RELANCE_AUDIT_KEY": "demo-only-fictional-people-audit-key-2024-not-secret"}


# RDV-Solidarités' webhook secret of the demo (published: fictional people only).
DEMO_WEBHOOK_SECRET = "demo-only-rdv-solidarites-webhook-secret-2024"


class RdvSolidarites:
    """RDV-Solidarités' side of the demo: people book there and it notifies Relance as in production,
    by signed POSTs to ``/webhooks/rdv-solidarites/ORG`` on the API (FastAPI's test client, the API's
    clock set to the simulated time). Its own random generator: the rest of the demo draws the same."""

    def __init__(self, app, seed: int):
        from worker.entrypoints.api import create_app

        self.app = app
        self.rng = random.Random(seed + 16)
        self.now = dt.datetime.now(UTC)
        self.api = create_app(app, clock=lambda: self.now)
        self.loop = asyncio.new_event_loop()
        self.orgs = {code: org.rdv_solidarites for code, org in app.territory.organisations.items()
                     if org.rdv_solidarites and app.settings.rdv_solidarites_secret_list(code)}
        self.booked: dict[str, dict] = {}  # external id -> the appointment (its data) as RDV-Solidarités has it
        self.owners: dict[int, str] = {}  # appointment id -> external id (what the agent finds out)
        self.next_id = 70000
        self.counts = Counter()
        self.events = Counter()  # the events the notifications applied (the World's counter)

    def handles(self, organisation: str) -> bool:
        return organisation in self.orgs

    def _user(self, ext: str, last_name: str, birth_date: dt.date) -> dict:
        """Most users carry their CAF number; some only their name and birth date; a few a wrong number and
        another birth date (nobody recognises them: "rendez-vous à rapprocher")."""
        r = self.rng.random()
        user = {"id": 500000 + int("".join(c for c in ext if c.isdigit()) or 0) % 100000, "first_name": "Usager",
                "last_name": last_name, "birth_name": None, "birth_date": birth_date.isoformat(),
                "affiliation_number": ext, "email": None, "phone_number": None, "address": None}
        if r < 0.2:
            user["affiliation_number"] = None
        elif r < 0.26:
            user.update(affiliation_number="99" + ext[-5:], birth_date=(birth_date - dt.timedelta(days=400)).isoformat())
        return user

    def post(self, organisation: str, data: dict, event: str, now: dt.datetime) -> None:
        self.now = now
        body = json.dumps({"data": data, "meta": {"model": "Rdv", "event": event, "timestamp": now.isoformat(),
                                                  "webhook_reason": None}}, ensure_ascii=False).encode("utf-8")
        signature = hmac.new(DEMO_WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        answer = self.loop.run_until_complete(self._post(f"/webhooks/rdv-solidarites/{organisation}", body, {
            "Content-Type": "application/json; charset=utf-8", "X-Lapin-Signature": signature}))
        self.counts["notifications"] += 1
        if answer.status_code != 200:
            self.counts[f"refusées ({answer.status_code})"] += 1
            return
        result = answer.json()
        self.counts[result["status"]] += 1
        for participant in result["participants"]:
            for e in participant.get("events", []):
                if e["status"] == "applied":
                    self.events[e["type"]] += 1

    async def _post(self, path: str, body: bytes, headers: dict):
        """One HTTP request to the API application itself (httpx's ASGI transport: no socket)."""
        import httpx

        transport = httpx.ASGITransport(app=self.api, client=("127.0.0.1", 443))
        async with httpx.AsyncClient(transport=transport, base_url="https://rdv-solidarites.demo") as client:
            return await client.post(path, content=body, headers=headers)

    def close(self) -> None:
        self.loop.close()

    def book(self, ext: str, organisation: str, last_name: str, birth_date: dt.date, at: dt.datetime,
             now: dt.datetime) -> None:
        self.next_id += 1
        config = self.orgs[organisation]
        data = {"id": self.next_id, "uuid": f"demo-{self.next_id}", "status": "unknown",
                "starts_at": self.app.calendar.local(at).isoformat(), "duration_in_min": 60, "collectif": False,
                "motif": {"id": 1, "name": "Premier rendez-vous RSA", "motif_category": {
                    "id": 1, "name": "RSA orientation", "short_name": "rsa_orientation"}},
                "organisation": {"id": config.organisation_id, "name": organisation},
                "lieu": {"id": 1, "name": organisation}, "agents": [],
                "users": [self._user(ext, last_name, birth_date)]}
        data["participations"] = [{"id": self.next_id * 10, "status": "unknown", "user": data["users"][0]}]
        self.booked[ext] = {"organisation": organisation, "data": data}
        self.owners[self.next_id] = ext
        self.post(organisation, data, "created", now)

    def agents_link(self, now: dt.datetime) -> None:
        """Agents link the appointments nobody recognised, two days later (``relance rdvs link``)."""
        from worker.services import errors, rdv_matches

        for m in rdv_matches.pending(self.app):
            if now - m.received_at >= dt.timedelta(days=2) and m.rdv_id in self.owners:
                try:
                    rdv_matches.link(self.app, m.id, self.owners[m.rdv_id], now, "demo")
                    self.counts["rapprochés par un agent"] += 1
                except errors.ServiceError:
                    pass

    def status(self, ext: str, status: str, now: dt.datetime) -> None:
        """The agent marks the appointment in RDV-Solidarités: seen, noshow, excused."""
        rdv = self.booked.pop(ext) if status != "unknown" else self.booked[ext]
        data = dict(rdv["data"], status=status)
        data["participations"] = [dict(p, status=status) for p in data["participations"]]
        self.post(rdv["organisation"], data, "updated", now)

    def summary(self) -> str:
        labels = {"applied": "appliquées", "pending": "personne non reconnue", "unchanged": "sans changement",
                  "duplicate": "déjà reçues", "older": "plus anciennes", "ignored": "ignorées"}
        parts = [f"{labels.get(k, k)} {v}" for k, v in sorted(self.counts.items())
                 if k not in ("notifications", "rapprochés par un agent")]
        return (f"{self.counts['notifications']} notifications ({', '.join(parts)}), "
                f"{self.counts['rapprochés par un agent']} rapprochées par un agent")


class World:
    """The people and agents of the simulation; every action goes through the services."""

    def __init__(self, app, rng: random.Random, rdvs: RdvSolidarites | None = None):
        self.app = app
        self.rng = rng
        self.rdvs = rdvs
        self.cal = app.calendar
        self.events = Counter()
        if rdvs is not None:
            rdvs.events = self.events
        self.categories = Counter()
        self.in_observation = Counter()  # what people did during the observation period
        self.personas: dict[str, str] = {}

    def persona(self, external_id: str) -> str:
        """Silent people never answer; responsive ones book and come; erratic ones miss."""
        if external_id not in self.personas:
            self.personas[external_id] = self.rng.choices(("silent", "responsive", "erratic"), (30, 50, 20))[0]
        return self.personas[external_id]

    def event(self, external_id: str, type_: str, now: dt.datetime, **kw) -> None:
        try:
            res = cases.apply_event(self.app, external_id=external_id, type=type_, now=now, source="demo", **kw)
        except errors.ServiceError:
            return
        if res.status == "applied":
            self.events[type_] += 1
            if kw.get("category"):
                self.categories[kw["category"]] += 1

    def _rows(self, q):
        with session_scope(self.app.db_url) as s:
            return [tuple(r) for r in s.execute(q)]

    def next_slot(self, now: dt.datetime, days: int) -> dt.datetime:
        day = self.cal.local_date(now) + dt.timedelta(days=days)
        while not self.cal.is_working_day(day):
            day += dt.timedelta(days=1)
        return self.cal.at(day, dt.time(self.rng.choice((9, 10, 11, 14, 15, 16)), self.rng.choice((0, 30))))

    def reason(self, now: dt.datetime) -> dict:
        """A legitimate reason as an agent records it: a category, and its end or its review date."""
        categories = self.app.policy.legitimate_reasons.categories
        category = self.rng.choice(sorted(categories))
        if categories[category].natural_end:
            return {"category": category, "until": now + dt.timedelta(days=self.rng.randint(10, 30))}
        return {"category": category,
                "review_on": self.cal.local_date(now) + dt.timedelta(days=self.rng.randint(15, 30))}

    def commission(self, now: dt.datetime) -> None:
        """After each commission session, the Président decides; some suspensions are later lifted."""
        today = self.cal.local_date(now)
        rows = self._rows(
            select(Person.external_id, Case.commission_date, Case.measure_rate, Case.measure_months,
                   Case.decision_rate, Case.decision_from, Case.lifted_on)
            .join(Case, Case.person_id == Person.id)
            .where(Case.outcome == "crsa_referral", Case.commission_date.is_not(None),
                   Case.commission_date < today))
        for ext, _session, rate, months, decided, start, lifted in rows:
            r = self.rng.random()
            if decided is None and (r < 0.5 or not self.events["sanction_decided"]):
                # the decision takes effect a week later, after its letter
                self.event(ext, "sanction_decided", now, rate=rate or 30, months=months or 1,
                           start_on=today + dt.timedelta(days=3))
            elif decided is not None and lifted is None and start is not None and start <= today and (
                    r < 0.3 or not self.events["sanction_lifted"]):
                # the person took part again: the suspension ends
                self.event(ext, "sanction_lifted", now)

    def live(self, now: dt.datetime) -> None:
        """One morning of the world: people and agents act."""
        rng = self.rng
        rows = self._rows(
            select(Person.external_id, Case.id, Case.phase, Case.step, Case.appointment_at, Case.updated_at,
                   Case.hold_reason, Case.step_entered_at, Case.due_at, Case.organisation, Person.last_name,
                   Person.birth_date)
            .join(Case, Case.person_id == Person.id).where(Case.status == "active"))
        desk = self.rdvs
        for ext, case_id, phase, step, appt_at, updated_at, hold, entered, due_at, org, last_name, born in rows:
            age = (now - (updated_at or now)).days
            r = rng.random()
            persona = self.persona(ext)
            if r < 0.0015:
                self.event(ext, "droit_closed", now)
                continue
            if phase == "appointment" and due_at is None and appt_at is not None and appt_at <= now:
                # France Travail's path: nothing was recorded, an agent asks for the attendance to be
                # confirmed; within a few days France Travail says what happened.
                if r < 0.6:
                    self.event(ext, "rdv_attended" if persona == "responsive" else "rdv_missed", now)
                continue
            if persona == "silent" and phase in ("waiting", "appointment"):
                continue  # never answers, never comes: the path runs to its end
            if desk and ext in desk.booked and phase == "appointment" and appt_at is not None and appt_at > now \
                    and desk.rng.random() < 0.03:
                desk.status(ext, "excused", now)  # the person cancels in RDV-Solidarités, with an excuse
                continue
            if phase == "waiting" and r < (0.09 if persona == "responsive" else 0.04):
                at = self.next_slot(now, rng.randint(2, 12))
                if desk and desk.handles(org):  # booked in RDV-Solidarités: its webhook tells Relance
                    desk.book(ext, org, last_name, born, at, now)
                else:
                    self.event(ext, "rdv_booked", now, appointment_at=at)
            elif phase == "waiting" and r < 0.06:
                self.event(ext, "legitimate_reason", now, **self.reason(now))
            elif phase == "appointment" and appt_at is not None and appt_at <= now:
                # The appointment took place (or not) yesterday or today.
                via_rdvs = desk is not None and ext in desk.booked
                if r < (0.85 if persona == "responsive" else 0.3):
                    desk.status(ext, "seen", now) if via_rdvs else self.event(ext, "rdv_attended", now)
                elif r < 0.85:
                    desk.status(ext, "noshow", now) if via_rdvs else self.event(ext, "rdv_missed", now)
                # otherwise nobody records it: on the CD path an unconfirmed absence after a working day
            elif phase == "review" and step == "observations_review" and age >= 2:
                # The person answered the notice (or had a legitimate reason): an agent weighs it.
                if r < 0.5:
                    self.event(ext, "review_decision", now, decision="refer")
                elif r < 0.75:
                    self.event(ext, "review_decision", now, decision="legitimate_reason", **self.reason(now))
                else:
                    self.event(ext, "review_decision", now, decision="close")
            elif phase == "review" and age >= 2:
                if r < 0.6:
                    self.event(ext, "review_decision", now, decision="proceed", rate=rng.choice((30, 50)),
                               months=rng.choice((1, 2)))
                elif r < 0.8:
                    self.event(ext, "review_decision", now, decision="legitimate_reason", **self.reason(now))
                else:
                    self.event(ext, "review_decision", now, decision="close")
            elif phase == "awaiting_receipt" and age >= 3:
                if r < 0.6:
                    self.event(ext, "ar_signed", now, receipt_on=self.cal.local_date(now) - dt.timedelta(days=1))
                elif r < 0.9:
                    self.event(ext, "ar_unclaimed", now, receipt_on=self.cal.local_date(now) - dt.timedelta(days=2))
            elif phase == "observation":
                # During the 10 days: some write, some ask to be heard, some fall ill (the first three
                # cases there do one each, so that every run shows them; then at random).
                first = next((t for t in ("observations_received", "hearing_requested", "legitimate_reason")
                              if not self.in_observation[t]), None)
                if first is not None or r < 0.12:
                    kind = first or ("observations_received" if r < 0.05 else
                                     "hearing_requested" if r < 0.08 else "legitimate_reason")
                    self.in_observation[kind] += 1
                    extra = self.reason(now) if kind == "legitimate_reason" else {}
                    self.event(ext, kind, now, **extra)
            elif phase == "paused" and due_at is None and r < 0.5:
                # A reason without a natural end reached its review date: the agent finds it over.
                self.event(ext, "legitimate_reason_ended", now)
            elif phase == "task" and age >= 2 and r < 0.7:
                self.event(ext, "phone_followup_done", now)
            elif phase == "held" and hold == "npai" and age >= 5 and r < 0.3:
                self.event(ext, "address_updated", now)
        if desk is not None:
            desk.agents_link(now)
        self.commission(now)
        # The mail room: a few letters sent 3 to 6 days ago come back NPAI.
        since = now - dt.timedelta(days=6)
        until = now - dt.timedelta(days=3)
        letters = self._rows(
            select(Person.external_id, Message.id).join(Case, Case.id == Message.case_id)
            .join(Person, Person.id == Case.person_id)
            .where(Message.channel == "letter", Message.status == "sent", Message.sent_at >= since,
                   Message.sent_at < until, Case.status == "active"))
        for ext, message_id in letters:
            if rng.random() < 0.012:
                self.event(ext, "npai", now)


def run_demo(days: int = 90, out: Path = Path("demo-out"), seed: int = 2024, progress=None,
             samples_dir: Path | None = None, campaign: bool = False) -> str:
    """``campaign``: the stock campaign alongside the flux (:mod:`worker.entrypoints.demo_campaign`)."""
    from worker import bootstrap as app_module
    from worker.bootstrap import build_app
    from worker.entrypoints.celery_app import configure

    started = time.monotonic()
    out = Path(out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    from worker.adapters.config_files import load_config

    settings = Settings(data_dir=out, database_url=f"sqlite:///{out / 'relance.db'}", broker_url="memory://",
                        sms_backend="local", email_backend="local", letter_backend="local",
                        **{k.removeprefix("RELANCE_").lower(): v for k, v in DEMO_SECRETS.items()})
    # the organisations that book in RDV-Solidarités get the demo's webhook secret
    organisations = load_config(settings.config_dir).territory.organisations
    settings = settings.model_copy(update={"rdv_solidarites_secrets": ",".join(
        f"{code}={DEMO_WEBHOOK_SECRET}" for code, org in organisations.items() if org.rdv_solidarites)})
    if campaign:
        settings = demo_campaign.settings_for(settings, START)
    app = build_app(settings)
    configure(settings)
    previous = app_module._APP
    app_module.set_app(app)
    dispose_all()
    desk = None
    try:
        upgrade(app.db_url)
        samples = samples_dir or PROJECT_ROOT / "samples"
        desk = RdvSolidarites(app, seed)
        world = World(app, random.Random(seed), desk)
        inbox = settings.inbox
        inbox.mkdir(parents=True, exist_ok=True)
        cal = app.calendar
        imported = demo_campaign.import_stock(app, samples, START) if campaign else None
        for offset in range(days):
            day = START + dt.timedelta(days=offset)
            for when, name in FLUX_SCHEDULE:
                if when == offset:
                    shutil.copy(samples / name, inbox / name)
            for i, t in enumerate(TICK_TIMES):
                now = cal.at(day, t)
                if i == 1:
                    world.live(now)
                jobs.cycle(app, now)
            if progress:
                progress(offset + 1, days)
        text = _summary(app, world, days, out, time.monotonic() - started)
        if campaign:
            end = cal.at(START + dt.timedelta(days=days - 1), TICK_TIMES[-1])
            text += "\n" + "\n".join(demo_campaign.summary(app, end, out, imported))
        return text
    finally:
        if desk is not None:
            desk.close()
        app_module.set_app(previous)
        configure()
        dispose_all()


def _summary(app, world: World, days: int, out: Path, elapsed: float) -> str:
    lines = []
    with session_scope(app.db_url) as s:
        persons = s.execute(select(func.count()).select_from(Person)).scalar_one()
        no_case = s.execute(select(func.count()).select_from(Person).where(Person.droits_devoirs.is_(False))).scalar_one()
        cases = s.execute(select(func.count()).select_from(Case)).scalar_one()
        by = s.execute(select(Message.step, Message.channel, Message.status, func.count())
                       .group_by(Message.step, Message.channel, Message.status)).all()
        outcomes = s.execute(select(Case.outcome, func.count()).where(Case.status != "active")
                             .group_by(Case.outcome)).all()
        active = s.execute(select(Case.phase, Case.step, func.count()).where(Case.status == "active")
                           .group_by(Case.phase, Case.step)).all()
        first_cases = select(func.min(Case.id)).group_by(Case.person_id)
        delays = s.execute(select(Case.droit_opened_on, Case.first_invitation_at, Case.late)  # the flux's
                           .where(Case.first_invitation_at.is_not(None), Case.id.in_(first_cases),
                                  Case.segment.is_(None))).all()
        appts = s.execute(select(Appointment.kind, Appointment.status, func.count())
                          .group_by(Appointment.kind, Appointment.status)).all()
        unoriented = s.execute(select(func.count()).select_from(Person)
                               .where(Person.orientation.is_(None), Person.droits_devoirs.is_(True))).scalar_one()
        flagged = s.execute(select(func.count()).select_from(Person)
                            .where(Person.orientation_flagged_for.is_not(None))).scalar_one()
        digests = s.execute(select(func.count()).select_from(AuditEntry)
                            .where(AuditEntry.kind == "digest")).scalar_one()
        result = audit.verify(s)
    lines.append(f"Démonstration : {days} jours simulés à partir du {START:%d/%m/%Y} "
                 f"({elapsed:.1f} s), graine fixe.")
    lines.append(f"Personnes : {persons} (dont {no_case} hors droits et devoirs, sans dossier) ; dossiers : {cases}.")
    lines.append("")
    lines.append("Messages par étape et canal (envoyés / annulés / autres) :")
    table: dict = {}
    for step, channel, status, n in by:
        row = table.setdefault((step, channel), Counter())
        key = "envoyés" if status in ("sent", "dispatched", "delivered", "returned") else (
            "annulés" if status == "cancelled" else status)
        row[key] += n
    for (step, channel), counter in sorted(table.items()):
        others = ", ".join(f"{k} {v}" for k, v in counter.items() if k not in ("envoyés", "annulés"))
        lines.append(f"  {step:<20} {channel:<6} envoyés {counter['envoyés']:>4}  annulés {counter['annulés']:>4}"
                     f"{'  ' + others if others else ''}")
    lines.append("")
    if delays:
        waits = [(cal_date(app, fi) - d).days for d, fi, _ in delays]
        late = sum(1 for _, _, lt in delays if lt)
        lines.append(f"Délai entre l'ouverture du droit et la première invitation : médiane "
                     f"{statistics.median(waits):.0f} j, maximum {max(waits)} j ; {late} dossiers sur {len(delays)} "
                     f"reçus après l'objectif de {app.policy.delays.first_invitation_target_days} jours "
                     "(invités dès réception).")
    lines.append(f"Orientation : {unoriented} personnes encore sans orientation ; {flagged} signalées à "
                 f"{app.policy.delays.orientation_warning_days} jours ou moins de l'échéance des "
                 f"{app.policy.delays.orientation_deadline_days} jours sans avoir été orientées "
                 "(relance orientation).")
    lines.append(f"Bulletins quotidiens des agents : {digests} (un par organisation et jour ouvré où un dossier "
                 f"les attend) : {app.settings.digests}")
    lines.append("Rendez-vous : " + ", ".join(f"{k}/{st} {n}" for k, st, n in sorted(appts)))
    lines.append("Dossiers clos : " + ", ".join(f"{o} {n}" for o, n in sorted(outcomes, key=lambda x: -x[1])))
    lines.append("Dossiers en cours : " + ", ".join(f"{st}/{ph} {n}" for ph, st, n in sorted(active, key=lambda x: -x[2])))
    lines.append("Événements simulés : " + ", ".join(f"{k} {v}" for k, v in sorted(world.events.items())))
    labels = {k: c.label for k, c in app.policy.legitimate_reasons.categories.items()}
    lines.append("Motifs légitimes par catégorie : " + (", ".join(
        f"{labels.get(k, k)} {v}" for k, v in world.categories.most_common()) or "aucun"))
    if world.rdvs is not None:
        from worker.services import rdv_matches

        waiting = len(rdv_matches.pending(app))
        lines.append(f"RDV-Solidarités (webhooks signés) : {world.rdvs.summary()} ; {waiting} rendez-vous à "
                     "rapprocher par un agent (relance rdvs list).")
    lines.append(f"Procédure : {world.events['observations_received']} observations et "
                 f"{world.events['hearing_requested']} demandes d'audition après un préavis ; "
                 f"{world.events['sanction_decided']} suspensions décidées après la commission, "
                 f"{world.events['sanction_lifted']} levées.")
    lines.append(f"Journal d'audit : {'intact' if result.ok else 'ROMPU à ' + str(result.broken_id)} "
                 f"({result.checked} entrées).")
    lines.append(f"Courriers, SMS et e-mails : {app.settings.outbox} ; base : {out / 'relance.db'}")
    keys = " ".join(f"{k}={v}" for k, v in DEMO_SECRETS.items())
    lines.append(f"Pour suivre une personne : RELANCE_DATA_DIR={out} {keys} relance timeline <matricule>")
    return "\n".join(lines)


def cal_date(app, moment: dt.datetime) -> dt.date:
    return app.calendar.local_date(moment)
