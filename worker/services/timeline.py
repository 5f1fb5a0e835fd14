"""A person's timeline: messages, events, steps and case entries in the order they happened."""
from __future__ import annotations

from sqlalchemy import select

from worker.adapters.store.models import AuditEntry, InboundEvent, Message, Person
from worker.adapters.store.session import session_scope
from worker.domain.model import PENDING
from worker.services.errors import ServiceError


def timeline(app, external_id: str) -> list[dict]:
    with session_scope(app.db_url) as s:
        person = s.execute(select(Person).where(Person.external_id == external_id)).scalar()
        if person is None:
            raise ServiceError(f"personne inconnue : {external_id}")
        case_ids = [c.id for c in person.cases]
        items: list[dict] = []
        for msg in s.execute(select(Message).where(Message.case_id.in_(case_ids))).scalars():
            at = msg.sent_at if msg.sent_at is not None else (msg.not_before if msg.status == PENDING else msg.status_at)
            items.append({"at": at, "kind": "message", "id": msg.id, "case": msg.case_id, "step": msg.step,
                          "channel": msg.channel, "status": msg.status, "reference": msg.reference,
                          "detail": msg.error or msg.cancel_reason})
        for ev in s.execute(select(InboundEvent).where(InboundEvent.person_id == person.id)).scalars():
            items.append({"at": ev.at, "kind": "event", "id": ev.id, "case": ev.case_id, "type": ev.type,
                          "status": ev.status, "detail": ev.note})
        for entry in s.execute(select(AuditEntry).where(AuditEntry.case_id.in_(case_ids),
                                                        AuditEntry.kind.in_(("step", "case")))).scalars():
            if entry.kind == "step":
                items.append({"at": entry.at, "kind": "step", "id": entry.id, "case": entry.case_id,
                              "step": entry.data.get("to_step"), "from": entry.data.get("from_step"),
                              "reason": entry.data.get("reason")})
            elif entry.data.get("action") in ("opened", "closed") or "appointment" in entry.data \
                    or "appointment_outcome" in entry.data or "flag" in entry.data:
                items.append({"at": entry.at, "kind": "case", "id": entry.id, "case": entry.case_id,
                              "detail": {k: v for k, v in entry.data.items()}})
        # Case and step entries are both audit entries: at one instant, their ids give the true order.
        order = {"event": 0, "case": 1, "step": 1, "message": 2}
        items.sort(key=lambda i: (i["at"], order[i["kind"]], i["id"]))
        for i in items:
            i["at"] = i["at"].isoformat()
        return items
