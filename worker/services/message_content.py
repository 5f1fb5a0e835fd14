"""What a message says: the template context built from a case, its person and organisation."""
from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.adapters.rendering import date_fr
from worker.adapters.store.models import Appointment, Case, Message, Person
from worker.domain.postal import address_block


def _civility(sex: str | None) -> str:
    return {"F": "Madame", "M": "Monsieur"}.get(sex or "", "Madame, Monsieur")


def _address_lines(person: Person) -> list[str]:
    civ = {"F": "Madame", "M": "Monsieur"}.get(person.sex or "")
    return address_block(civility=civ, first_name=person.first_name, last_name=person.last_name,
                         line1=person.address_line1 or "", line2=person.address_line2,
                         postcode=person.postcode or "", city=person.city or "")


def _notice_context(s: Session, app, case: Case) -> SimpleNamespace:
    spec = app.policy.path(case.path)
    notice = next((st for st in spec.steps if st.kind == "notice"), None)
    missed = s.execute(select(Appointment).where(Appointment.case_id == case.id, Appointment.status == "missed")
                       .order_by(Appointment.at.desc()).limit(1)).scalar()
    cal = app.calendar
    if missed is not None:
        facts = (f"Vous avez été convoqué(e) à un rendez-vous le {_fr_date(cal.local_date(missed.at))} "
                 "auquel vous ne vous êtes pas présenté(e), sans nous avoir fait connaître de motif légitime.")
    else:
        facts = ("Vous n'avez pas répondu aux invitations et à la convocation qui vous ont été adressées, "
                 "sans nous avoir fait connaître de motif légitime.")
    return SimpleNamespace(facts=facts, sanction=app.policy.sanction_text,
                           observation_days=notice.observation_days if notice else 10)


def _fr_date(d: dt.date) -> str:
    return date_fr(d)


def build_context(s: Session, app, msg: Message, case: Case, person: Person, now: dt.datetime) -> dict:
    org = app.territory.organisations[case.organisation]
    cal = app.calendar
    appointment = None
    if case.appointment_at is not None:
        appointment = SimpleNamespace(at=cal.local(case.appointment_at), place=org.convocation.place)
    commission = None
    if case.commission_date is not None or msg.step == "crsa_referral":
        c = app.territory.commission
        commission = SimpleNamespace(name=c.name, place=c.place, session_date=case.commission_date)
    notice = _notice_context(s, app, case) if msg.step == "pre_sanction_notice" else None
    address_lines = _address_lines(person) if msg.channel == "letter" else [
        f"{_civility(person.sex)} {person.first_name} {person.last_name}"]
    return {
        "person": SimpleNamespace(civility=_civility(person.sex), first_name=person.first_name,
                                  last_name=person.last_name, address_lines=address_lines, sex=person.sex),
        "org": SimpleNamespace(code=case.organisation, kind=org.kind, name=org.name, short_name=org.short_name,
                               signatory=org.signatory, address=list(org.address), phone=org.phone,
                               email=org.email, booking_url=org.booking_url),
        "case": SimpleNamespace(reference=case.reference, path=case.path, droit_opened_on=case.droit_opened_on),
        "message": SimpleNamespace(reference=msg.reference),
        "step": msg.step,
        "today": cal.local_date(now),
        "respond_by": case.respond_by,
        "appointment": appointment,
        "notice": notice,
        "commission": commission,
    }


