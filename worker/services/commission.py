"""The commission pack: what the RSA commission (équipe pluridisciplinaire) reads before it gives
its opinion on each case referred to a session (CASF L262-37, R262-68 : the Président du Conseil
départemental decides after its opinion).

``relance commission pack [--session DATE] [--out FILE]`` writes one self-contained HTML page per
session: for every case referred to it, who the person is, which organisation reported the failure
and which reviewed it, the dated facts (every invitation and convocation that reached the person, the
appointment missed or not confirmed), the notice with its receipt and the measure envisaged, the
observations and hearing requests, the legitimate reasons (category and dates, never the person's
words) and every agent's decision with its date and source. It holds personal data: it is written
0600 under ``<data_dir>/commission/`` and is purged with the rest by the retention job.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from pathlib import Path

from sqlalchemy import select

from worker.adapters.pdf import render_pdf
from worker.adapters.store.models import Appointment, Case, InboundEvent, Message, Person
from worker.adapters.store.session import session_scope
from worker.domain import engine
from worker.domain.describe import (APPOINTMENT_OUTCOMES, CANCEL_REASONS, CHANNELS, MESSAGE_STATUSES, event_detail,
                                    message_destination, step_label)
from worker.services.agents import author_of, authors
from worker.services.errors import ServiceError
from worker.services.message_content import notice_facts

# The events the commission reads, in French.
_EVENT_LABELS = {
    "observations_received": "observations reçues",
    "hearing_requested": "demande à être entendu(e)",
    "legitimate_reason": "motif légitime",
    "legitimate_reason_ended": "fin du motif légitime",
    "review_decision": "décision d'examen",
    "ar_signed": "accusé de réception signé",
    "ar_unclaimed": "pli non réclamé",
    "rdv_missed": "absence signalée",
    "rdv_booked": "rendez-vous pris",
    "rdv_cancelled": "rendez-vous annulé",
}
_SOURCES = {"cli": "agent (ligne de commande)", "api": "agent (outil)", "returns": "service courrier",
            "demo": "démonstration", "mailroom": "service courrier"}


@dataclass
class PackCase:
    reference: str
    external_id: str
    name: str
    path: str
    organisation: str
    reported_by: str | None
    droit_opened_on: dt.date
    notice_on: dt.date | None
    receipt_on: dt.date | None
    measure: str
    observation_until: dt.date | None = None  # the last day of the observation period
    facts: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # every message: date, channel, template, address, outcome
    appointments: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


@dataclass
class Pack:
    session: dt.date
    commission: str
    place: str
    cases: list[PackCase]


def _session(app, session: dt.date | None, today: dt.date) -> dt.date:
    if session is not None:
        return session
    upcoming = app.territory.commission.next_session(today - dt.timedelta(days=1))
    if upcoming is None:
        raise ServiceError("aucune séance de commission à venir dans config/territory.yaml : préciser --session")
    return upcoming


def _messages(s, cal, case_ids: list[int], person: Person) -> list[str]:
    out = []
    versions = dict(s.execute(select(Case.id, Case.address_version).where(Case.id.in_(case_ids))).all())
    for m in s.execute(select(Message).where(Message.case_id.in_(case_ids))
                       .order_by(Message.created_at, Message.id)).scalars():
        when = m.sent_at or m.status_at or m.not_before
        postage = " (LRAR)" if m.postage == "lrar" else ""
        template = f"modèle {m.template_name}" + (f" v. {m.template_version[:8]}" if m.template_version else "") \
            if m.template_name else "modèle non rendu"
        why = m.error or CANCEL_REASONS.get(m.cancel_reason or "", m.cancel_reason)
        outcome = MESSAGE_STATUSES.get(m.status, m.status) + (f" ({why})" if why else "")
        # where it went, as recorded when sent (and whether the person's contact changed since)
        moved = m.address_version != versions.get(m.case_id, m.address_version) if m.channel == "letter" else None
        where = message_destination(m, person, moved)
        out.append(f"{cal.local(when):%d/%m/%Y} — {CHANNELS.get(m.channel, m.channel)}{postage} "
                   f"« {step_label(m.step)} » ({m.reference}), {template}{where and ', ' + where} : {outcome}")
    return out


def build_pack(app, now: dt.datetime, session: dt.date | None = None, *, organisation: str | None = None,
               case_reference: str | None = None) -> Pack:
    """The session's pack: every case referred to it (``organisation``: that organisation's only;
    ``case_reference``: that case only)."""
    cal = app.calendar
    day = _session(app, session, cal.local_date(now))
    labels = {k: c.label for k, c in app.policy.legitimate_reasons.categories.items()}
    out: list[PackCase] = []
    with session_scope(app.db_url) as s:
        q = (select(Case, Person).join(Person, Person.id == Case.person_id)
             .where(Case.outcome == "crsa_referral", Case.commission_date == day)
             .order_by(Case.organisation, Case.id))
        if organisation:
            q = q.where(Case.organisation == organisation)
        if case_reference:
            q = q.where(Case.id == int(case_reference.upper().removeprefix("RL-") or 0))
        rows = s.execute(q).all()
        for case, person in rows:
            measure = ("non précisée" if case.measure_rate is None else
                       f"suspension de {case.measure_rate} % pendant {case.measure_months} mois"
                       + (" (manquement répété)" if case.measure_repeat else ""))
            item = PackCase(reference=case.reference, external_id=person.external_id,
                            name=f"{person.last_name.upper()} {person.first_name}", path=case.path,
                            organisation=case.organisation, reported_by=case.reported_by,
                            droit_opened_on=case.droit_opened_on, notice_on=case.notice_on,
                            receipt_on=case.receipt_on, measure=measure)
            notice = next((st for st in app.policy.path(case.path).steps if st.kind == "notice"), None)
            if case.receipt_on and notice is not None and notice.observation_days:
                end = engine.observation_end(case.receipt_on, notice.observation_days, cal)
                item.observation_until = cal.local_date(end) - dt.timedelta(days=1)
            item.facts = [f.text for f in notice_facts(s, app, case, person)]
            item.messages = _messages(s, cal, [c.id for c in person.cases], person)
            for appt in s.execute(select(Appointment).where(Appointment.case_id == case.id)
                                  .order_by(Appointment.at)).scalars():
                status = APPOINTMENT_OUTCOMES.get(appt.status, appt.status)
                kind = {"booked": "pris par la personne", "convocation": "convocation"}.get(appt.kind, appt.kind)
                item.appointments.append(f"{cal.local(appt.at):%d/%m/%Y %H:%M} ({kind}) : {status}")
            case_ids = [c.id for c in person.cases]
            events = list(s.execute(select(InboundEvent).where(InboundEvent.case_id.in_(case_ids),
                                                                InboundEvent.type.in_(tuple(_EVENT_LABELS)),
                                                                InboundEvent.status == "applied")
                                    .order_by(InboundEvent.at, InboundEvent.id)).scalars())
            names = authors(app, [ev.source for ev in events])
            for ev in events:
                said = event_detail(ev.type, ev.payload, labels)
                source = _SOURCES.get(ev.source) or author_of(ev.source, names)
                why = (ev.payload or {}).get("justification")
                item.events.append(f"{cal.local(ev.at):%d/%m/%Y} : {_EVENT_LABELS[ev.type]}"
                                   + (f" ({said})" if said else "") + f" — {source}"
                                   + (f" — justification : « {why} »" if why else ""))
            out.append(item)
    c = app.territory.commission
    return Pack(session=day, commission=c.name, place=c.place, cases=out)


def pack_html(app, now: dt.datetime, pack: Pack) -> str:
    return app.renderer.render_report("commission_pack", {"pack": pack, "today": app.calendar.local_date(now)})


def pack_pdf(app, now: dt.datetime, session: dt.date | None = None, *, organisation: str | None = None,
             case_reference: str | None = None) -> tuple[Pack, bytes]:
    """The pack as a PDF: the whole session, or one case (``case_reference``)."""
    pack = build_pack(app, now, session, organisation=organisation, case_reference=case_reference)
    return pack, render_pdf([pack_html(app, now, pack)], assets=app.settings.templates_dir)


def write_pdfs(app, now: dt.datetime, session: dt.date | None = None,
               out_dir: Path | None = None) -> tuple[Path, Pack, list[Path]]:
    """``relance crsa pack DATE``: the session's PDF and one PDF per case, 0600, under
    ``<data_dir>/commission/<date>/`` (or ``out_dir``); (folder, pack, files)."""
    pack, whole = pack_pdf(app, now, session)
    folder = out_dir or app.settings.data_dir / "commission" / pack.session.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    files = [_write_private(folder / f"commission_{pack.session.isoformat()}.pdf", whole)]
    for c in pack.cases:
        one = dataclass_replace(pack, cases=[c])
        pdf = render_pdf([pack_html(app, now, one)], assets=app.settings.templates_dir)
        files.append(_write_private(folder / f"commission_{pack.session.isoformat()}_{c.reference}.pdf", pdf))
    return folder, pack, files


def _write_private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)
    return path


def write_pack(app, now: dt.datetime, session: dt.date | None = None, out: Path | None = None) -> tuple[Path, Pack]:
    """Write the session's pack (HTML, 0600); returns its path and content."""
    pack = build_pack(app, now, session)
    html = app.renderer.render_report("commission_pack", {"pack": pack, "today": app.calendar.local_date(now)})
    path = out or app.settings.data_dir / "commission" / f"commission_{pack.session.isoformat()}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(html)
    os.chmod(path, 0o600)
    return path, pack
