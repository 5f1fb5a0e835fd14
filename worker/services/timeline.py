"""A person's timeline: messages, events, steps and case entries in the order they happened."""
from __future__ import annotations

import re

from sqlalchemy import select

from worker.adapters.store.models import AuditEntry, Case, InboundEvent, Message, Person
from worker.adapters.store.session import session_scope
from worker.domain.describe import event_detail
from worker.domain.model import PENDING
from worker.services.errors import ServiceError


def reason_labels(app) -> dict[str, str]:
    """The legitimate reasons' categories and their French labels (config/paths.yaml)."""
    return {k: c.label for k, c in app.policy.legitimate_reasons.categories.items()}


CASE_REFERENCE_RE = re.compile(r"RL-(\d{1,12})")


def find_person(s, identifier: str) -> Person:
    """The person an agent names by their matricule (external id), a case reference (``RL-000123``)
    or a letter's reference (``RL-000123-0000008``), as printed on every letter."""
    text = (identifier or "").strip()
    person = s.execute(select(Person).where(Person.external_id == text)).scalar()
    if person is not None:
        return person
    ref = Message.parse_reference(text)
    match = CASE_REFERENCE_RE.fullmatch(text.upper())
    case_id = ref[0] if ref else int(match.group(1)) if match else None
    if case_id is not None and case_id < 2**63:
        case = s.get(Case, case_id)
        msg = s.get(Message, ref[1]) if ref and ref[1] < 2**63 else None
        if case is not None and (ref is None or (msg is not None and msg.case_id == case_id)):
            return s.get(Person, case.person_id)
    raise ServiceError(f"personne inconnue : {text} (matricule, référence de dossier RL-… ou de courrier)")


def timeline(app, external_id: str) -> list[dict]:
    with session_scope(app.db_url) as s:
        person = find_person(s, external_id)
        case_ids = [c.id for c in person.cases]
        items: list[dict] = []
        for msg in s.execute(select(Message).where(Message.case_id.in_(case_ids))).scalars():
            at = msg.sent_at if msg.sent_at is not None else (msg.not_before if msg.status == PENDING else msg.status_at)
            items.append({"at": at, "kind": "message", "id": msg.id, "case": msg.case_id, "step": msg.step,
                          "channel": msg.channel, "status": msg.status, "reference": msg.reference,
                          "detail": msg.error or msg.cancel_reason})
        for ev in s.execute(select(InboundEvent).where(InboundEvent.person_id == person.id)).scalars():
            items.append({"at": ev.at, "kind": "event", "id": ev.id, "case": ev.case_id, "type": ev.type,
                          "status": ev.status, "detail": ev.note, "source": ev.source,
                          "said": event_detail(ev.type, ev.payload, reason_labels(app))})
        for entry in s.execute(select(AuditEntry).where(AuditEntry.case_id.in_(case_ids),
                                                        AuditEntry.kind.in_(("step", "case")))).scalars():
            if entry.kind == "step":
                items.append({"at": entry.at, "kind": "step", "id": entry.id, "case": entry.case_id,
                              "step": entry.data.get("to_step"), "from": entry.data.get("from_step"),
                              "reason": entry.data.get("reason")})
            elif entry.data.get("action") in ("opened", "closed") or "appointment" in entry.data \
                    or "appointment_outcome" in entry.data or "flag" in entry.data \
                    or "handed_over_to" in entry.data or "organisation_to" in entry.data:
                items.append({"at": entry.at, "kind": "case", "id": entry.id, "case": entry.case_id,
                              "detail": {k: v for k, v in entry.data.items()}})
        # Case and step entries are both audit entries: at one instant, their ids give the true order.
        order = {"event": 0, "case": 1, "step": 1, "message": 2}
        items.sort(key=lambda i: (i["at"], order[i["kind"]], i["id"]))
        for i in items:
            i["at"] = i["at"].isoformat()
        return items
