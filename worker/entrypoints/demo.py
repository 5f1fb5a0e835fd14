"""``relance demo``: a fresh SQLite database, the bundled flux samples and N
simulated days (fixed seed) in which people book, attend, miss, never answer,
have mail returned, report a legitimate reason, and agents take review
decisions — all through the production code paths (inbox scan, scheduler
cycle, Celery tasks run eagerly, services, engine, local channels).
"""
from __future__ import annotations

import datetime as dt
import random
import shutil
import statistics
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from worker.adapters.store import audit

from worker.entrypoints import jobs

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


class World:
    """The people and agents of the simulation; every action goes through the services."""

    def __init__(self, app, rng: random.Random):
        self.app = app
        self.rng = rng
        self.cal = app.calendar
        self.events = Counter()
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
                   Case.hold_reason, Case.step_entered_at, Case.due_at)
            .join(Case, Case.person_id == Person.id).where(Case.status == "active"))
        for ext, case_id, phase, step, appt_at, updated_at, hold, entered, due_at in rows:
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
            if phase == "waiting" and r < (0.09 if persona == "responsive" else 0.04):
                self.event(ext, "rdv_booked", now, appointment_at=self.next_slot(now, rng.randint(2, 12)))
            elif phase == "waiting" and r < 0.06:
                self.event(ext, "legitimate_reason", now, **self.reason(now))
            elif phase == "appointment" and appt_at is not None and appt_at <= now:
                # The appointment took place (or not) yesterday or today.
                if r < (0.85 if persona == "responsive" else 0.3):
                    self.event(ext, "rdv_attended", now)
                elif r < 0.85:
                    self.event(ext, "rdv_missed", now)
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
             samples_dir: Path | None = None) -> str:
    from worker import bootstrap as app_module
    from worker.bootstrap import build_app
    from worker.entrypoints.celery_app import configure

    started = time.monotonic()
    out = Path(out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    settings = Settings(data_dir=out, database_url=f"sqlite:///{out / 'relance.db'}", broker_url="memory://",
                        sms_backend="local", email_backend="local", letter_backend="local",
                        **{k.removeprefix("RELANCE_").lower(): v for k, v in DEMO_SECRETS.items()})
    app = build_app(settings)
    configure(settings)
    previous = app_module._APP
    app_module.set_app(app)
    dispose_all()
    try:
        upgrade(app.db_url)
        samples = samples_dir or PROJECT_ROOT / "samples"
        world = World(app, random.Random(seed))
        inbox = settings.inbox
        inbox.mkdir(parents=True, exist_ok=True)
        cal = app.calendar
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
        return _summary(app, world, days, out, time.monotonic() - started)
    finally:
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
        delays = s.execute(select(Case.droit_opened_on, Case.first_invitation_at, Case.late)
                           .where(Case.first_invitation_at.is_not(None), Case.id.in_(first_cases))).all()
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
