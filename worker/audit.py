"""Append-only, hash-chained audit log.

Each entry carries the previous entry's hash and its own hash over
``prev_hash`` and a canonical JSON of its content. No names, phone numbers,
addresses or NIRs go in: only ids, step/channel/status names, template
versions and content hashes. :func:`check_no_pii` guards the keys.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from .db.models import AuditEntry

GENESIS = "0" * 64
FORBIDDEN_KEYS = frozenset({"name", "first_name", "last_name", "phone", "email", "address", "address_line1",
                            "address_line2", "nir", "to", "body", "text", "html", "city", "postcode"})


def _canonical(at: dt.datetime, kind: str, case_id, entity_id, data: dict) -> str:
    return json.dumps({"at": at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "kind": kind,
                       "case_id": case_id, "entity_id": entity_id, "data": data},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(prev_hash: str, at: dt.datetime, kind: str, case_id, entity_id, data: dict) -> str:
    return hashlib.sha256((prev_hash + _canonical(at, kind, case_id, entity_id, data)).encode()).hexdigest()


def check_no_pii(data: dict) -> None:
    bad = FORBIDDEN_KEYS.intersection(data)
    if bad:
        raise ValueError(f"audit entries carry no personal data (keys {sorted(bad)})")


def append(session: Session, *, at: dt.datetime, kind: str, data: dict, case_id: int | None = None,
           entity_id: int | None = None) -> AuditEntry:
    check_no_pii(data)
    if session.bind.dialect.name == "postgresql":
        # One writer at a time extends the chain (released at commit).
        session.execute(text("SELECT pg_advisory_xact_lock(727274)"))
    session.flush()
    prev = session.execute(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).scalar()
    prev = prev or GENESIS
    data = json.loads(json.dumps(data, default=str))  # what is hashed is what is stored
    entry = AuditEntry(at=at, kind=kind, case_id=case_id, entity_id=entity_id, data=data, prev_hash=prev,
                       hash=entry_hash(prev, at, kind, case_id, entity_id, data))
    session.add(entry)
    session.flush()
    return entry


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    broken_id: int | None = None
    reason: str | None = None


def verify(session: Session, batch: int = 5000) -> VerifyResult:
    prev = GENESIS
    checked = 0
    last_id = 0
    while True:
        rows = session.execute(
            select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id).limit(batch)
        ).scalars().all()
        if not rows:
            return VerifyResult(True, checked)
        for e in rows:
            if e.prev_hash != prev:
                return VerifyResult(False, checked, e.id, "le maillon précédent ne correspond pas")
            expected = entry_hash(prev, e.at, e.kind, e.case_id, e.entity_id, e.data)
            if expected != e.hash:
                return VerifyResult(False, checked, e.id, "contenu modifié (empreinte différente)")
            prev = e.hash
            checked += 1
            last_id = e.id
        session.expunge_all()
