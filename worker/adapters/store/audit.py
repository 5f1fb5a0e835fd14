"""Append-only, keyed, hash-chained audit log.

Each entry carries the previous entry's hash and its own hash: HMAC-SHA256,
keyed with ``RELANCE_AUDIT_KEY`` (held outside the database), over
``prev_hash`` and a canonical JSON of its content. Someone who can write to the
database but does not hold the key cannot rewrite an entry and recompute the
chain. No names, phone numbers, addresses or NIRs go in: only ids,
step/channel/status names, template versions and content hashes.
:func:`check_no_pii` guards the keys.

The database refuses UPDATE and DELETE on the table (migration 0005); the only
deletion is :func:`purge_prefix`, the retention purge of the *beginning* of the
chain, which first appends a ``checkpoint`` entry naming the last entry removed
(its id, hash and position in the chain), so that :func:`verify` still checks
the rest from there. A truncated tail leaves a valid shorter chain: the anchors
(:class:`Anchor`, ``relance audit anchor``: the head's hash and position,
written outside the database) detect it, and a rewritten chain too.

Entries written before the chain was keyed (plain SHA-256: a database from
before this version) are accepted only as the chain's beginning, before the
first keyed entry, and only if an anchor covers them (or ``accept_legacy``:
``relance audit anchor --accept-unsigned``, once, to seal them at the upgrade);
otherwise anyone could rewrite the whole chain unkeyed.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass, field

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from worker.adapters.store.models import AuditEntry

GENESIS = "0" * 64
CHECKPOINT = "checkpoint"  # the entry appended by purge_prefix before it deletes
# The key of processes that registered none (benchmarks, scripts): never accepted
# for real data (worker.settings refuses it at start-up).
DEV_KEY = "relance-dev-only-audit-key-change-me"
_KEYS: dict[str, bytes] = {}
FORBIDDEN_KEYS = frozenset({"name", "first_name", "last_name", "phone", "email", "address", "address_line1",
                            "address_line2", "nir", "to", "body", "text", "html", "city", "postcode"})


def _canonical(at: dt.datetime, kind: str, case_id, entity_id, data: dict) -> str:
    return json.dumps({"at": at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "kind": kind,
                       "case_id": case_id, "entity_id": entity_id, "data": data},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _url_key(url) -> str:
    return make_url(url).render_as_string(hide_password=False)


def register_key(db_url: str, key: str | bytes) -> None:
    """The chain's key for the database at ``db_url`` (``RELANCE_AUDIT_KEY``; done by ``build_app``)."""
    _KEYS[_url_key(db_url)] = key.encode() if isinstance(key, str) else bytes(key)


def key_for(session: Session) -> bytes:
    """The key registered for the session's database (the development key if none was)."""
    bind = session.get_bind()
    return _KEYS.get(_url_key(getattr(bind, "engine", bind).url), DEV_KEY.encode())


def entry_hash(prev_hash: str, at: dt.datetime, kind: str, case_id, entity_id, data: dict,
               key: bytes | None = None) -> str:
    """HMAC-SHA256 with ``key`` of ``prev_hash`` + the canonical content; plain SHA-256 without a key
    (the entries written before the chain was keyed)."""
    message = (prev_hash + _canonical(at, kind, case_id, entity_id, data)).encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


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
                       hash=entry_hash(prev, at, kind, case_id, entity_id, data, key_for(session)))
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
    keyed, utc = hmac.new(key_for(session), digestmod=hashlib.sha256), dt.timezone.utc
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
        mac = keyed.copy()
        mac.update((prev + canonical).encode())
        digest = mac.hexdigest()
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


@dataclass(frozen=True)
class Anchor:
    """The chain's head at one moment, kept outside the database (``relance audit anchor``).

    ``count`` is the head's position in the chain (entries since the genesis,
    purged ones included), ``head_id`` and ``head_hash`` its id and hash.
    """

    count: int
    head_id: int | None
    head_hash: str
    at: str | None = None

    def as_json(self) -> dict:
        return {"at": self.at, "count": self.count, "head_id": self.head_id, "head_hash": self.head_hash}

    @classmethod
    def from_json(cls, data: dict) -> "Anchor":
        count, head_id, head_hash = data["count"], data.get("head_id"), data["head_hash"]
        if type(count) is not int or count < 0 or not isinstance(head_hash, str) or len(head_hash) != 64 \
                or (head_id is not None and type(head_id) is not int):
            raise ValueError("champs count, head_id ou head_hash invalides")
        return cls(count=count, head_id=head_id, head_hash=head_hash, at=data.get("at"))


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    broken_id: int | None = None
    reason: str | None = None
    legacy: int = 0  # entries of the beginning hashed before the chain was keyed (plain SHA-256)
    purged: int = 0  # entries removed from the beginning by the retention purge (checkpoint)
    head_id: int | None = None
    head_hash: str = GENESIS
    anchors_checked: int = 0  # anchors found in the chain
    anchors_purged: int = 0  # anchors older than the purged beginning (cannot be checked any more)
    notes: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """The head's position in the chain (what an anchor records)."""
        return self.purged + self.checked

    def anchor(self, at: dt.datetime | None = None) -> Anchor:
        return Anchor(count=self.count, head_id=self.head_id, head_hash=self.head_hash,
                      at=at.astimezone(dt.timezone.utc).isoformat() if at else None)


_WRONG_KEY = " — ou RELANCE_AUDIT_KEY n'est pas la clé qui a signé ce journal"


def _start(session: Session) -> tuple[str, int, VerifyResult | None]:
    """(hash before the first entry, its position, a failure): GENESIS and 0, or the checkpoint's."""
    first = session.execute(select(AuditEntry.id, AuditEntry.prev_hash).order_by(AuditEntry.id).limit(1)).first()
    if first is None or first.prev_hash == GENESIS:
        return GENESIS, 0, None
    for data in session.execute(select(AuditEntry.data).where(AuditEntry.kind == CHECKPOINT,
                                                              AuditEntry.id >= first.id)).scalars():
        if isinstance(data, dict) and data.get("through_hash") == first.prev_hash \
                and type(data.get("through_id")) is int and data["through_id"] < first.id \
                and type(data.get("through_position")) is int:
            return first.prev_hash, data["through_position"], None
    return GENESIS, 0, VerifyResult(False, 0, first.id, "début de la chaîne supprimé : aucun point de contrôle "
                                                       "de purge ne le couvre")


def verify(session: Session, batch: int = 5000, anchors: list[Anchor] | tuple = (),
           accept_legacy: bool = False) -> VerifyResult:
    """Walk the chain from its beginning (or the purge checkpoint); check each ``anchors`` on the way.

    An anchor fails when the entry at its position has another hash (the chain
    was rewritten) or when the chain is shorter (truncated). Unkeyed entries at
    the beginning pass only if a matching anchor covers them, or with ``accept_legacy``.
    """
    key = key_for(session)
    prev, purged, failure = _start(session)
    if failure is not None:
        return failure
    expected: dict[int, list[Anchor]] = {}
    result = VerifyResult(True, 0, purged=purged)
    for a in anchors:
        if a.count > purged:
            expected.setdefault(a.count, []).append(a)
        elif a.count == purged and a.head_hash == prev:
            result.anchors_checked += 1
        else:
            result.anchors_purged += 1
    keyed_seen = False
    first_legacy: int | None = None
    anchored = result.count if result.anchors_checked else -1  # position covered by a matching anchor
    last_id = 0
    while True:
        rows = session.execute(
            select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id).limit(batch)
        ).scalars().all()
        if not rows:
            break
        for e in rows:
            if e.prev_hash != prev:
                return _broken(result, e.id, "le maillon précédent ne correspond pas")
            if entry_hash(prev, e.at, e.kind, e.case_id, e.entity_id, e.data, key) == e.hash:
                keyed_seen = True
            elif not keyed_seen and entry_hash(prev, e.at, e.kind, e.case_id, e.entity_id, e.data) == e.hash:
                result.legacy += 1
                first_legacy = e.id if first_legacy is None else first_legacy
            else:
                reason = "contenu modifié (empreinte différente)"
                return _broken(result, e.id, reason + (_WRONG_KEY if not keyed_seen else ""))
            prev = e.hash
            result.checked += 1
            result.head_id, result.head_hash = e.id, e.hash
            last_id = e.id
            for a in expected.pop(result.count, ()):
                if a.head_hash != e.hash or (a.head_id is not None and a.head_id != e.id):
                    return _broken(result, e.id, f"ne correspond pas à l'ancre du {a.at or '?'} "
                                                 f"(entrée n° {a.count} de la chaîne) : journal réécrit")
                result.anchors_checked += 1
                anchored = result.count
        session.expunge_all()
    if expected:
        longest = max(expected)
        a = expected[longest][0]
        return _broken(result, None, f"journal tronqué : l'ancre du {a.at or '?'} compte {a.count} entrées, "
                                     f"la chaîne n'en a plus que {result.count}")
    if result.legacy:
        if not accept_legacy and anchored < result.purged + result.legacy:
            result.checked = 0
            return _broken(result, first_legacy, "entrées non signées par RELANCE_AUDIT_KEY (écrites avant la clé, "
                                                 "ou réécrites) et qu'aucune ancre ne couvre")
        result.notes.append(f"dont {result.legacy} entrées du début écrites avant la clé (non signées, "
                            "couvertes par une ancre)")
    return result


def _broken(result: VerifyResult, entry_id: int | None, reason: str) -> VerifyResult:
    result.ok, result.broken_id, result.reason = False, entry_id, reason
    return result


def purge_prefix(session: Session, through_id: int, at: dt.datetime) -> int:
    """Remove the chain's entries up to ``through_id`` (included); returns how many.

    A ``checkpoint`` entry is appended first (id, hash and position of the last
    entry removed) so that :func:`verify` goes on from it. The database accepts
    this deletion only of the chain's beginning, covered by a checkpoint, and on
    PostgreSQL only from a role allowed to delete (the owner: the application's
    role has INSERT and SELECT only) with ``relance.audit_purge`` set for the
    transaction (migration 0005).
    """
    if session.bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(727274)"))
    session.flush()
    prev, purged, failure = _start(session)
    if failure is not None:
        raise ValueError(f"purge refusée : {failure.reason}")
    last = session.execute(select(AuditEntry.id, AuditEntry.hash).where(AuditEntry.id <= through_id)
                           .order_by(AuditEntry.id.desc()).limit(1)).first()
    if last is None:
        return 0
    removed = session.execute(select(func.count()).select_from(AuditEntry)
                              .where(AuditEntry.id <= last.id)).scalar_one()
    append(session, at=at, kind=CHECKPOINT, data={"through_id": last.id, "through_hash": last.hash,
                                                  "through_position": purged + removed, "removed": removed})
    if session.bind.dialect.name == "postgresql":
        session.execute(text("SET LOCAL relance.audit_purge = 'on'"))
    session.execute(AuditEntry.__table__.delete().where(AuditEntry.id <= last.id))
    if session.bind.dialect.name == "postgresql":
        session.execute(text("SET LOCAL relance.audit_purge = 'off'"))
    return removed
