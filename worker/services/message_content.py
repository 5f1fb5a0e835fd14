"""What a message says: the template context built from a case, its person and organisation."""
from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.adapters.rendering import date_fr, date_plain
from worker.adapters.store.models import Appointment, Case, Message, Person
from worker.domain.model import REACHED
from worker.domain.postal import address_block

# The steps whose letters the Département issues: only the Président du Conseil
# départemental envisages and decides an RSA suspension (CASF L262-37).
DEPARTMENT_STEPS = frozenset(
    {"pre_sanction_notice", "crsa_referral", "sanction_decision", "sanction_lifting", "procedure_closed"})

# The steps before the review whose messages are the facts of the pre-sanction notice, and how
# the notice names them ("envoyée" agrees with the word).
FACT_STEPS = {
    "invitation_1": "invitation",
    "invitation_2": "relance",
    "convocation": "convocation",
    "ft_convocation": "convocation",
    "ft_warning": "dernier rappel",
}
_MASCULINE = frozenset({"dernier rappel"})
CHANNEL_LABELS = {"letter": "courrier", "sms": "SMS", "email": "e-mail"}
_CHANNEL_ORDER = ("letter", "sms", "email")

# The ground of CASF L262-37 for each path's failure: short plain sentences.
GROUNDS = {
    "cd": ("Vous n'êtes pas venu{e} à la convocation. Vous ne participez donc pas à votre accompagnement "
           "(article L262-37 du code de l'action sociale et des familles)."),
    "ft": ("Vous n'êtes pas venu{e} au rendez-vous de France Travail. Vous ne participez donc pas à votre "
           "accompagnement (article L262-37 du code de l'action sociale et des familles)."),
}


def _civility(sex: str | None) -> str:
    return {"F": "Madame", "M": "Monsieur"}.get(sex or "", "Madame, Monsieur")


def _address_lines(person: Person) -> list[str]:
    civ = {"F": "Madame", "M": "Monsieur"}.get(person.sex or "")
    return address_block(civility=civ, first_name=person.first_name, last_name=person.last_name,
                         line1=person.address_line1 or "", line2=person.address_line2,
                         postcode=person.postcode or "", city=person.city or "")


def _e(sex: str | None) -> str:
    return {"F": "e", "M": ""}.get(sex or "", "(e)")


def _ground(path: str, sex: str | None) -> str:
    return (GROUNDS["ft"] if path == "ft" else GROUNDS["cd"]).format(e=_e(sex))


def notice_facts(s: Session, app, case: Case, person: Person) -> list[SimpleNamespace]:
    """The dated facts of the notice: what was sent before the review (only what left:
    sent, dispatched or delivered), one fact per step and day, then the missed appointment."""
    cal = app.calendar
    rows = s.execute(select(Message).where(Message.case_id == case.id, Message.step.in_(tuple(FACT_STEPS)),
                                           Message.sent_at.is_not(None))
                     .order_by(Message.sent_at, Message.id)).scalars().all()
    grouped: dict[tuple[dt.date, str], list[str]] = {}
    for m in rows:
        if m.status not in REACHED:
            continue
        channels = grouped.setdefault((cal.local_date(m.sent_at), m.step), [])
        if m.channel not in channels:
            channels.append(m.channel)
    town = " ".join(p for p in (person.postcode, person.city) if p) or None
    facts = []
    for (day, step), channels in sorted(grouped.items(), key=lambda kv: kv[0][0]):
        channels = sorted(channels, key=lambda c: _CHANNEL_ORDER.index(c) if c in _CHANNEL_ORDER else 9)
        labels = [CHANNEL_LABELS.get(c, c) for c in channels]
        where = town if "letter" in channels else None
        sent = "envoyé" if FACT_STEPS[step] in _MASCULINE else "envoyée"
        text = f"Le {date_plain(day)} : {FACT_STEPS[step]} {sent} par {_join_fr(labels)}"  # no weekday
        text += f", à {where}." if where else "."
        facts.append(SimpleNamespace(kind="message", date=day, step=step, label=FACT_STEPS[step],
                                     channels=labels, town=where, place=None, text=text))
    # An absence nobody recorded ("unconfirmed", CD path) is a fact once the reviewing agent, who saw it
    # was not confirmed, decided to proceed: the notice states it and the person can contest it.
    missed = s.execute(select(Appointment).where(Appointment.case_id == case.id,
                                                 Appointment.status.in_(("missed", "unconfirmed")))
                       .order_by(Appointment.at.desc()).limit(1)).scalar()
    if missed is not None:
        day = cal.local_date(missed.at)
        place = missed.place or app.territory.organisations[case.organisation].convocation.place
        text = f"Le {date_fr(day)} : vous n'êtes pas venu{_e(person.sex)} au rendez-vous, {place}."
        facts.append(SimpleNamespace(kind="missed", date=day, step=missed.step, label="rendez-vous manqué",
                                     channels=[], town=None, place=place, text=text))
    return facts


def _join_fr(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " et " + items[-1]


def _notice_context(s: Session, app, case: Case, person: Person) -> SimpleNamespace:
    spec = app.policy.path(case.path)
    notice = next((st for st in spec.steps if st.kind == "notice"), None)
    return SimpleNamespace(facts=notice_facts(s, app, case, person), ground=_ground(case.path, person.sex),
                           sanction=app.policy.sanction_text,
                           observation_days=notice.observation_days if notice else 10)


def _issuer(app, step: str, org) -> SimpleNamespace:
    """Who speaks in the letter: the Département for the sanction steps, else the organisation."""
    if step in DEPARTMENT_STEPS:
        dep = app.territory.department
        return SimpleNamespace(
            name=dep.name, short_name=dep.short_name, address=list(dep.address), phone=dep.phone, email=dep.email,
            observations_service=SimpleNamespace(name=dep.observations_service.name,
                                                 address=list(dep.observations_service.address)),
            signature=dep.signature)
    return SimpleNamespace(name=org.name, short_name=org.short_name, address=list(org.address), phone=org.phone,
                           email=org.email,
                           observations_service=SimpleNamespace(name=org.name, address=list(org.address)),
                           signature=org.signatory)


def _venue(org, meet: str | None = None) -> SimpleNamespace:
    """Where and how the appointment takes place: the invitations and convocations say it."""
    c = org.convocation
    return SimpleNamespace(place=c.place, access=c.access, duration=c.duration_minutes, bring=list(c.bring),
                           meet=meet or org.meet)


# The templates of a stock campaign case's first message (issue 14), by the kind of its path's first
# step: they say what the appointment is for (co-diagnostic, milestone interview, contract renewal...).
CAMPAIGN_TEMPLATES = {"invite": "campaign_invitation", "appointment": "campaign_convocation"}


def _campaign(app, case: Case) -> SimpleNamespace | None:
    """A campaign case's appointment type (config/campaign.yaml): label, name, purpose, meet; else None."""
    cfg = app.config.campaign
    seg = cfg.segment(case.segment) if cfg is not None and case.segment else None
    kind = cfg.appointment_types.get(seg.appointment) if seg is not None and seg.appointment else None
    if kind is None:
        return None
    return SimpleNamespace(segment=case.segment, appointment=seg.appointment, label=kind.label, name=kind.name,
                           purpose=kind.purpose, meet=kind.meet)


def template_step(app, msg: Message, case: Case) -> str:
    """The template of a message: its step's, or for the first letter or e-mail of a stock campaign case,
    the campaign's (its SMS stays the path's: short, it names no appointment type)."""
    if not case.segment or msg.channel not in ("letter", "email") or case.path not in app.policy.paths:
        return msg.step
    first = app.policy.path(case.path).first
    name = CAMPAIGN_TEMPLATES.get(first.kind) if msg.step == first.id else None
    if name is None or _campaign(app, case) is None or not app.renderer.has(name, msg.channel):
        return msg.step
    return name


def _privacy(app, step: str, code: str) -> SimpleNamespace:
    """The information notice's values (RGPD art. 13/14): the Département is the controller of its
    sanction letters; otherwise the organisation's controller (by kind unless it names one)."""
    territory = app.territory
    name, controller = territory.controller(None if step in DEPARTMENT_STEPS else code)
    return SimpleNamespace(controller=name, dpo_email=controller.dpo_email,
                           dpo_address=list(controller.dpo_address), notice_url=controller.notice_url,
                           recipients=controller.recipients, source=territory.privacy.source,
                           retention_months=app.settings.retention_months)


def _preference(person: Person, key: str) -> str:
    """A preference kept in ``person.extra`` (flux column or ``preferences_updated`` event)."""
    return str((person.extra or {}).get(key) or "").strip().lower()


def letter_day(app, now: dt.datetime) -> dt.date:
    """The working day a letter written ``now`` goes out: today if it is a working day and the day's
    print batch (RELANCE_PRINT_BATCH_TIME) has not run yet, else the next working day."""
    cal = app.calendar
    today = cal.local_date(now)
    batch_at = dt.time.fromisoformat(app.settings.print_batch_time)
    if cal.is_working_day(today) and cal.local(now).time() < batch_at:
        return today
    return cal.next_working_day(today)


_LOOK_UP = object()


def missed_appointments(s: Session, case_ids) -> dict[int, Appointment]:
    """The last missed appointment of each case that has one (build_context's ``last_missed``, for a batch)."""
    out: dict[int, Appointment] = {}
    for appt in s.execute(select(Appointment).where(Appointment.case_id.in_(list(case_ids)),
                                                    Appointment.status == "missed")
                          .order_by(Appointment.at.desc())).scalars():
        out.setdefault(appt.case_id, appt)
    return out


def build_context(s: Session, app, msg: Message, case: Case, person: Person, now: dt.datetime,
                  last_missed=_LOOK_UP) -> dict:
    """``last_missed``: the case's last missed appointment (or None) when the caller looked it up already
    (:func:`missed_appointments`, a batch); otherwise looked up here."""
    org = app.territory.organisations[case.organisation]
    cal = app.calendar
    appointment = None
    if case.appointment_at is not None:
        appointment = SimpleNamespace(at=cal.local(case.appointment_at), place=org.convocation.place)
    # the appointment the person missed (confirmed: rdv_missed), for the last reminder
    if last_missed is _LOOK_UP:
        last_missed = s.execute(select(Appointment).where(Appointment.case_id == case.id,
                                                          Appointment.status == "missed")
                                .order_by(Appointment.at.desc()).limit(1)).scalar()
    missed = SimpleNamespace(at=cal.local(last_missed.at), place=last_missed.place) if last_missed else None
    commission = None
    if case.commission_date is not None or msg.step == "crsa_referral":
        c = app.territory.commission
        commission = SimpleNamespace(name=c.name, place=c.place, session_date=case.commission_date)
    # the notice's facts and ground: in the notice, and as the grounds of the decision
    notice = (_notice_context(s, app, case, person) if msg.step in ("pre_sanction_notice", "sanction_decision")
              else None)
    # the booking link for the case's motif category (RDV-Solidarités, issue 16), else the organisation's
    booking = app.territory.booking(case.organisation, case.path)
    address_lines = _address_lines(person) if msg.channel == "letter" else [
        f"{_civility(person.sex)} {person.first_name} {person.last_name}"]
    campaign = _campaign(app, case)  # a stock campaign case: what its appointment is for
    return {
        "person": SimpleNamespace(civility=_civility(person.sex), first_name=person.first_name,
                                  last_name=person.last_name, address_lines=address_lines, sex=person.sex,
                                  matricule=person.external_id,  # the CAF/MSA matricule of the flux
                                  # large print (16 pt letters) and the language of the SMS and of the
                                  # summary attached to the invitation letters, when the flux gives them
                                  large_print=_preference(person, "large_print") in ("true", "1", "oui", "yes"),
                                  language=_preference(person, "language") or "fr"),
        "org": SimpleNamespace(code=case.organisation, kind=org.kind, name=org.name, short_name=org.short_name,
                               signatory=org.signatory, address=list(org.address), phone=org.phone,
                               email=org.email, booking_url=booking.short),
        "booking": SimpleNamespace(url=booking.url, short=booking.short, display=booking.display,
                                   category=booking.category),
        "case": SimpleNamespace(reference=case.reference, path=case.path, droit_opened_on=case.droit_opened_on),
        "message": SimpleNamespace(reference=msg.reference),
        "step": msg.step,
        # a letter bears the day its print batch goes out; other messages, the day they are sent
        "today": letter_day(app, now) if msg.channel == "letter" else cal.local_date(now),
        "respond_by": case.respond_by,
        "appointment": appointment,
        "missed": missed,
        "notice": notice,
        "commission": commission,
        "issuer": _issuer(app, msg.step, org),
        "venue": _venue(org, campaign.meet if campaign else None),
        "campaign": campaign,
        "privacy": _privacy(app, msg.step, case.organisation),
        # the measure envisaged (notice) and decided (decision letter)
        "measure": SimpleNamespace(rate=case.measure_rate, months=case.measure_months, repeat=case.measure_repeat),
        "decision": SimpleNamespace(rate=case.decision_rate, months=case.decision_months, start=case.decision_from),
        "lifted_on": case.lifted_on,
    }


