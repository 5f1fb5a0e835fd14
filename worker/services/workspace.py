"""What the agents' workspace shows (worker/entrypoints/web): the things to do, one case, a search.

Every function takes the signed-in agent (:class:`worker.services.agents.AgentView`) and shows only
what their role lets them see: an agent their organisation's cases, the department team and ops every
case. A case outside that scope is :class:`NotVisible` — the page answers 404, as for a case that does
not exist (nobody learns that it does).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re

from sqlalchemy import func, or_, select

from worker.adapters.store.models import Case, InboundEvent, Message, Person
from worker.adapters.store.session import session_scope
from worker.domain import describe, engine
from worker.domain.model import OPEN
from worker.services import agents, replies, timeline as timeline_service
from worker.services.agenda import ACTIONS, SECTIONS, Item, agenda, plain_todo
from worker.services.errors import ServiceError

GROUPS = {**SECTIONS, "contacts": "Coordonnées à vérifier : numéros inutilisables, messages en échec"}
FAILED = ("failed", "technical-failure")
MAX_RESULTS = 50


class NotVisible(ServiceError):
    """No such case for this agent (unknown, or another organisation's): a 404."""

    def __init__(self):
        super().__init__("dossier introuvable")


def _visible(agent, organisation: str | None) -> bool:
    return agent.scope is None or organisation == agent.scope


def parse_case_reference(text: str) -> int | None:
    match = timeline_service.CASE_REFERENCE_RE.fullmatch((text or "").strip().upper())
    return int(match.group(1)) if match and int(match.group(1)) < 2**63 else None


# --- À traiter --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Todo:
    item: Item
    step_label: str
    action_label: str
    overdue: bool
    note: str  # what to do, in French, without command lines


def _contact_items(app, now: dt.datetime, organisation: str | None) -> list[Item]:
    """Active cases whose phone is unusable or with a message in failure: find other contact details."""
    with session_scope(app.db_url) as s:
        q = (select(Case, Person.external_id, Person.phone_status, func.max(Message.status_at))
             .join(Person, Person.id == Case.person_id)
             .outerjoin(Message, (Message.case_id == Case.id) & Message.status.in_(FAILED))
             .where(Case.status == "active", or_(Person.phone_status == "failed", Message.id.is_not(None)))
             .group_by(Case.id, Person.external_id, Person.phone_status))
        if organisation:
            q = q.where(Case.organisation == organisation)
        out = []
        for case, external_id, phone_status, failed_at in s.execute(q):
            since = app.calendar.local_date(failed_at or case.updated_at)
            what = ["numéro de téléphone inutilisable"] if phone_status == "failed" else []
            if failed_at is not None:
                what.append("message en échec")
            out.append(Item("contacts", case.organisation, case.reference, external_id, case.step, since,
                            " ; ".join(what) + " : chercher d'autres coordonnées", "contact",
                            since + dt.timedelta(days=5)))
        return out


def todo(app, now: dt.datetime, agent) -> list[tuple[str, str, list[Todo]]]:
    """(group key, French title, items sorted by deadline) for each group with something in it."""
    today = app.calendar.local_date(now)
    items = agenda(app, now, agent.scope) + _contact_items(app, now, agent.scope)
    groups = []
    for key, title in GROUPS.items():
        rows = [i for i in items if i.section == key]
        rows.sort(key=lambda i: (i.deadline or dt.date.max, i.since or dt.date.min, i.case_reference))
        if rows:
            groups.append((key, title, [Todo(i, describe.step_label(i.step), ACTIONS.get(i.action, "voir le dossier"),
                                             bool(i.deadline and i.deadline < today), plain_todo(i.todo))
                                        for i in rows]))
    return groups


# --- Recherche --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Found:
    case_reference: str
    external_id: str
    name: str
    organisation: str
    step: str
    status: str


def search(app, query: str, agent) -> list[Found]:
    """Cases by letter or case reference, matricule (external id) or name (part of it), in scope."""
    text = " ".join((query or "").split())[:100]
    if len(text) < 2:
        return []
    with session_scope(app.db_url) as s:
        persons: list[Person] = []
        try:
            persons = [timeline_service.find_person(s, text)]
        except ServiceError:
            words = [w for w in text.lower().split() if len(w) >= 2][:3]
            q = select(Person)
            for w in words:
                pattern = f"%{w.replace('%', '').replace('_', '')}%"
                q = q.where(or_(func.lower(Person.last_name).like(pattern), func.lower(Person.first_name).like(pattern),
                                func.lower(Person.external_id).like(pattern)))
            persons = list(s.execute(q.order_by(Person.last_name, Person.first_name).limit(MAX_RESULTS)).scalars())
        out = []
        for person in persons:
            for case in sorted(person.cases, key=lambda c: c.id, reverse=True):
                if _visible(agent, case.organisation):
                    out.append(Found(case.reference, person.external_id,
                                     f"{person.last_name.upper()} {person.first_name}", case.organisation,
                                     describe.step_label(case.step),
                                     "en cours" if case.status == "active" else "clos"))
        return out[:MAX_RESULTS]


# --- Dossier ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Entry:
    at: dt.datetime
    kind: str  # message | event | step | case
    text: str
    detail: str = ""
    author: str = ""
    message_id: int | None = None  # a letter with a PDF preview
    status: str = ""


def case_page(app, reference: str, agent, now: dt.datetime) -> dict:
    """Everything the case page shows; NotVisible when the agent may not see this case."""
    case_id = parse_case_reference(reference)
    if case_id is None:
        raise NotVisible()
    cal, tz = app.calendar, app.calendar.tz
    labels = timeline_service.reason_labels(app)
    with session_scope(app.db_url) as s:
        case = s.get(Case, case_id)
        if case is None or not _visible(agent, case.organisation):
            raise NotVisible()
        person = case.person
        visible = {c.id for c in person.cases if _visible(agent, c.organisation)}
        versions = {c.id: c.address_version for c in person.cases}
        messages = {m.id: m for m in s.execute(select(Message).where(Message.case_id.in_(visible))).scalars()}
        events = {e.id: e for e in s.execute(select(InboundEvent).where(InboundEvent.person_id == person.id))
                  .scalars()}
        names = agents.agent_names(app, [int(e.source[4:]) for e in events.values()
                                         if (e.source or "").startswith("web:") and e.source[4:].isdigit()])
        entries: list[Entry] = []
        for i in timeline_service.timeline(app, person.external_id):
            if i["case"] not in visible:
                continue
            at = dt.datetime.fromisoformat(i["at"])
            if i["kind"] == "message":
                m = messages[i["id"]]
                channel = describe.CHANNELS.get(m.channel, m.channel)
                status = describe.MESSAGE_STATUSES.get(m.status, m.status)
                postage = " recommandé avec accusé de réception" if m.postage == "lrar" else ""
                text = f"{channel}{postage} « {describe.step_label(m.step)} » ({m.reference})"
                preview = m.id if m.channel == "letter" and m.provider_ref else None
                # where it went (and whether the person's contact changed since), not the current contact
                moved = m.address_version != versions.get(m.case_id, m.address_version) if m.channel == "letter" \
                    else None
                where = describe.message_destination(m, person, moved)
                if moved and preview:
                    where += " (voir l'aperçu du courrier)"
                why = m.error or (m.cancel_reason and describe.CANCEL_REASONS.get(m.cancel_reason, m.cancel_reason))
                detail = " — ".join(x for x in (where, m.template_name and f"modèle {m.template_name}", why) if x)
                entries.append(Entry(at, "message", text, detail, "Relance", preview, status))
            elif i["kind"] == "event":
                ev = events[i["id"]]
                said = i.get("said") or ""
                justification = (ev.payload or {}).get("justification")
                outcome = (ev.payload or {}).get("outcome_label")
                detail = " ; ".join(x for x in (said, outcome and f"résultat : {outcome}",
                                                justification and f"justification : « {justification} »") if x)
                text = EVENT_LABELS.get(ev.type, ev.type)
                entries.append(Entry(at, "event", text, detail, agents.author_of(ev.source, names),
                                     status=describe.EVENT_STATUSES.get(ev.status, ev.status or "")))
            elif i["kind"] == "step":
                entries.append(Entry(at, "step", f"étape « {describe.step_label(i['step'])} »",
                                     describe.reason(i.get("reason"))))
            else:
                entries.append(Entry(at, "case", _steps_named(describe.case_entry(i["detail"], tz))))
        for e in entries:
            e.at = cal.local(e.at)
        spec = next((st for st in app.policy.path(case.path).steps if st.kind == "notice"), None)
        observation_until = None
        if case.receipt_on and spec is not None and spec.observation_days:
            observation_until = cal.local_date(engine.observation_end(case.receipt_on, spec.observation_days, cal)) \
                - dt.timedelta(days=1)
        org = app.territory.organisations.get(case.organisation)
        others = [(c.reference, describe.step_label(c.step), c.status) for c in person.cases
                  if c.id != case.id and c.id in visible]
        pending = [r for r in replies.pending(app, None) if r.case_id == case.id]
        return {
            "case": case_facts(app, case, now),
            "organisation": org.name if org else case.organisation,
            "reported_by": case.reported_by,
            "person": {
                "external_id": person.external_id, "name": f"{person.last_name.upper()} {person.first_name}",
                "birth_date": person.birth_date, "address": [x for x in (
                    person.address_line1, person.address_line2,
                    f"{person.postcode or ''} {person.city or ''}".strip()) if x],
                "address_status": person.address_status, "phone": person.phone, "phone_status": person.phone_status,
                "email": person.email, "email_status": person.email_status, "orientation": person.orientation,
            },
            "entries": entries[::-1],  # the most recent first
            "observation_until": observation_until,
            "others": others,
            "replies": pending,
            "has_open_messages": any(m.status in OPEN for m in messages.values() if m.case_id == case.id),
            "reason_labels": labels,
        }


def _steps_named(text: str) -> str:
    return re.sub(r"\(([a-z0-9_]+)\)", lambda m: f"({describe.STEPS.get(m.group(1), m.group(1))})", text)


EVENT_LABELS = {
    "rdv_booked": "rendez-vous pris", "rdv_attended": "présent(e) au rendez-vous",
    "rdv_missed": "absent(e) au rendez-vous", "rdv_cancelled": "rendez-vous annulé",
    "legitimate_reason": "motif légitime", "legitimate_reason_ended": "fin du motif légitime",
    "npai": "courrier revenu (NPAI)", "address_updated": "nouvelle adresse", "phone_updated": "nouveau numéro",
    "sms_failed": "numéro inutilisable", "sms_opt_out": "opposition aux SMS", "droit_closed": "droit clos",
    "reoriented": "réorientation", "review_decision": "décision d'examen",
    "phone_followup_done": "appel de suivi fait", "ar_signed": "accusé de réception signé",
    "ar_unclaimed": "pli non réclamé", "observations_received": "observations reçues",
    "hearing_requested": "demande à être entendu(e)", "sanction_decided": "suspension décidée",
    "sanction_lifted": "suspension levée", "reply_received": "réponse reçue par e-mail",
}


def case_facts(app, case: Case, now: dt.datetime) -> dict:
    """The case's state as the page and its forms need it."""
    cal = app.calendar
    return {
        "id": case.id, "reference": case.reference, "path": case.path,
        "path_label": app.policy.path(case.path).label if case.path in app.policy.paths else case.path,
        "organisation": case.organisation, "status": case.status, "phase": case.phase, "step": case.step,
        "step_label": describe.step_label(case.step),
        "since": cal.local_date(case.step_entered_at) if case.step_entered_at else None,
        "respond_by": case.respond_by, "hold_reason": case.hold_reason,
        "appointment_at": cal.local(case.appointment_at) if case.appointment_at else None,
        "appointment_past": bool(case.appointment_at and case.appointment_at <= now),
        "paused_until": cal.local_date(case.paused_until) if case.paused_until else None,
        "pause_category": case.pause_category, "notice_on": case.notice_on, "receipt_on": case.receipt_on,
        "measure": (case.measure_rate, case.measure_months, case.measure_repeat),
        "commission_date": case.commission_date, "outcome": case.outcome,
        "outcome_label": describe.OUTCOMES.get(case.outcome or "", case.outcome),
        "decision": (case.decision_rate, case.decision_months, case.decision_from),
        "observations_at": case.observations_at,
    }


def person_of_case(app, reference: str, agent) -> str:
    """The external id of a visible case's person (what apply_event takes); NotVisible otherwise."""
    case_id = parse_case_reference(reference)
    with session_scope(app.db_url) as s:
        case = s.get(Case, case_id) if case_id is not None else None
        if case is None or not _visible(agent, case.organisation):
            raise NotVisible()
        return case.person.external_id


def is_active_case(app, reference: str) -> bool:
    """Whether this case is the person's current one (events apply to the active case)."""
    case_id = parse_case_reference(reference)
    with session_scope(app.db_url) as s:
        case = s.get(Case, case_id) if case_id is not None else None
        return case is not None and case.status == "active"
