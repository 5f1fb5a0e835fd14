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

from worker.adapters.store.models import AuditEntry

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


# One encoder each, reused (json.dumps with options builds a new JSONEncoder per call):
# the same options as append's normalisation (default=str) and as _canonical.
_DATA_ENCODER = json.JSONEncoder(default=str)
_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
# _canonical's object with sort_keys: its keys in sorted order, ","/":" separators.
_CANONICAL_FORMAT = '{"at":%s,"case_id":%s,"data":%s,"entity_id":%s,"kind":%s}'


def _json_id(value, encode) -> str:
    if value is None:
        return "null"
    if type(value) is int:
        return int.__repr__(value)
    return encode(value)


def append_many(session: Session, entries) -> list[str]:
    """Append several entries at once, in order; returns their hashes.

    ``entries``: mappings with the keyword arguments of :func:`append` (``at``,
    ``kind``, ``data``, optional ``case_id`` and ``entity_id``). The entries,
    hashes and chain are the same as that many :func:`append` calls would write,
    but with one lock, one read of the chain's end and one bulk insert (COPY on
    PostgreSQL): the hashes are chained in memory, and a ``data`` object shared
    by several entries is checked and serialised once. The lock (PostgreSQL) is
    held until the caller's transaction ends.
    """
    entries = list(entries)
    if not entries:
        return []
    encode_data, encode = _DATA_ENCODER.encode, _CANONICAL_ENCODER.encode
    datas: dict[int, tuple[dict, str]] = {}  # id(data given) -> (data stored, its canonical JSON)
    for e in entries:
        if id(e["data"]) not in datas:
            check_no_pii(e["data"])
            stored = json.loads(encode_data(e["data"]))  # what is hashed is what is stored
            datas[id(e["data"])] = (stored, encode(stored))
    if session.bind.dialect.name == "postgresql":
        # One writer at a time extends the chain (released at commit).
        session.execute(text("SELECT pg_advisory_xact_lock(727274)"))
    session.flush()
    prev = session.execute(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).scalar() or GENESIS
    sha256, utc = hashlib.sha256, dt.timezone.utc
    stamps: dict[dt.datetime, str] = {}
    rows = []
    for e in entries:
        at, kind = e["at"], e["kind"]
        case_id, entity_id = e.get("case_id"), e.get("entity_id")
        stored, data_json = datas[id(e["data"])]
        stamp = stamps.get(at)
        if stamp is None:
            stamp = stamps[at] = encode(at.astimezone(utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        canonical = _CANONICAL_FORMAT % (stamp, _json_id(case_id, encode), data_json, _json_id(entity_id, encode),
                                         encode(kind))
        digest = sha256((prev + canonical).encode()).hexdigest()
        rows.append((at, kind, case_id, entity_id, stored, prev, digest))
        prev = digest
    # Ids follow the list's order (and so the chain's): they are taken under the lock.
    if session.bind.dialect.name == "postgresql":
        _pg_copy(session, rows)
    else:
        session.execute(AuditEntry.__table__.insert(), [
            {"at": r[0], "kind": r[1], "case_id": r[2], "entity_id": r[3], "data": r[4], "prev_hash": r[5],
             "hash": r[6]} for r in rows])
    return [r[6] for r in rows]


_COPY_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _pg_copy(session: Session, rows: list[tuple]) -> None:
    """PostgreSQL: ids from the sequence (ascending), rows sent with COPY (text format)."""
    ids = session.execute(text("SELECT array_agg(nextval(pg_get_serial_sequence('audit_log', 'id'))) "
                               "FROM generate_series(1, :n)"), {"n": len(rows)}).scalar_one()
    ids.sort()
    to_json = session.bind.dialect._json_serializer or json.dumps
    utc = dt.timezone.utc
    stamps: dict[dt.datetime, str] = {}
    texts: dict[int, str] = {}
    lines = []
    for id_, (at, kind, case_id, entity_id, data, prev, digest) in zip(ids, rows):
        stamp = stamps.get(at)
        if stamp is None:
            stamp = stamps[at] = at.astimezone(utc).replace(tzinfo=None).isoformat(sep=" ")
        data_text = texts.get(id(data))
        if data_text is None:
            data_text = texts[id(data)] = to_json(data).translate(_COPY_ESCAPES)
        case_text = _COPY_NULL if case_id is None else int(case_id)
        entity_text = _COPY_NULL if entity_id is None else int(entity_id)
        lines.append(f"{id_}\t{stamp}\t{kind.translate(_COPY_ESCAPES)}\t{case_text}\t{entity_text}\t"
                     f"{data_text}\t{prev}\t{digest}\n")
    cursor = session.connection().connection.driver_connection.cursor()
    try:
        with cursor.copy("COPY audit_log (id, at, kind, case_id, entity_id, data, prev_hash, hash) FROM STDIN") as cp:
            cp.write("".join(lines))
    finally:
        cursor.close()


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
