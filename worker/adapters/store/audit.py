"""Append-only, keyed, hash-chained audit log, written in parallel chains.

Each entry carries the previous entry's hash *of its chain* and its own hash:
HMAC-SHA256, keyed with ``RELANCE_AUDIT_KEY`` (held outside the database), over
``prev_hash`` and a canonical JSON of its content. Someone who can write to the
database but does not hold the key cannot rewrite an entry and recompute the
chain. No names, phone numbers, addresses or NIRs go in: only ids,
step/channel/status names, template versions and content hashes.
:func:`check_no_pii` guards the keys.

Chains (``audit_log.chain``, migration 0010): a transaction extends one chain,
locked until it ends (a PostgreSQL advisory lock per chain). It takes chain 0
when it is free, else the first free one of ``RELANCE_AUDIT_CHAINS``, so that
concurrent workers no longer wait for one another; a single writer (SQLite, a
CLI command, a test) only ever writes chain 0 -- one chain, as before. Within a
chain, ids follow the chain's order (taken under its lock) and the committed
entries are always a prefix of it; :func:`verify` walks each chain in id order
and an :class:`Anchor` records the head of every chain at once (the merge:
one line that a rewritten, truncated or reordered chain no longer matches).

The database refuses UPDATE and DELETE on the table (migration 0005); the only
deletion is :func:`purge_prefix`, the retention purge of the *beginning* of the
log, which first appends to each chain it cuts a ``checkpoint`` entry naming
that chain's last entry removed (its hash and position in the chain), so that
:func:`verify` still checks the rest from there. A truncated tail leaves a
valid shorter chain: the anchors (``relance audit anchor``: the heads' hashes
and positions, written outside the database) detect it, and a rewritten chain
too.

Entries written before the chain was keyed (plain SHA-256: a database from
before this version) are accepted only as chain 0's beginning, before the
first keyed entry, and only if an anchor covers them (or ``accept_legacy``:
``relance audit anchor --accept-unsigned``, once, to seal them at the upgrade);
otherwise anyone could rewrite the whole chain unkeyed.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
from contextlib import contextmanager
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
_CHAINS: dict[str, int] = {}  # database URL -> RELANCE_AUDIT_CHAINS
MAX_CHAINS = 64
# Advisory lock of chain 0: the single lock of the versions before the chains (bigint form); chain
# k > 0 takes (LOCK_KEY, k), the two-int form (PostgreSQL keeps the two key spaces apart).
LOCK_KEY = 727274
_HELD = "relance_audit_chain"  # session.info: (transaction, chain) held by the current transaction
_BUFFER = "relance_audit_buffer"  # session.info: entries collected by buffered()
FORBIDDEN_KEYS = frozenset({"name", "first_name", "last_name", "phone", "email", "address", "address_line1",
                            "address_line2", "nir", "to", "body", "text", "html", "city", "postcode"})


def _canonical(at: dt.datetime, kind: str, case_id, entity_id, data: dict) -> str:
    return json.dumps({"at": at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "kind": kind,
                       "case_id": case_id, "entity_id": entity_id, "data": data},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _url_key(url) -> str:
    return make_url(url).render_as_string(hide_password=False)


def _session_url(session: Session) -> str:
    bind = session.get_bind()
    return _url_key(getattr(bind, "engine", bind).url)


def register_key(db_url: str, key: str | bytes) -> None:
    """The chain's key for the database at ``db_url`` (``RELANCE_AUDIT_KEY``; done by ``build_app``)."""
    _KEYS[_url_key(db_url)] = key.encode() if isinstance(key, str) else bytes(key)


def register_chains(db_url: str, count: int) -> None:
    """How many chains writers may spread over on this database (``RELANCE_AUDIT_CHAINS``; ``build_app``)."""
    _CHAINS[_url_key(db_url)] = max(1, min(MAX_CHAINS, int(count)))


def key_for(session: Session) -> bytes:
    """The key registered for the session's database (the development key if none was)."""
    return _KEYS.get(_session_url(session), DEV_KEY.encode())


def chain_count(session: Session) -> int:
    """Chains a writer may take: RELANCE_AUDIT_CHAINS on PostgreSQL, 1 elsewhere (SQLite has one writer)."""
    if session.bind.dialect.name != "postgresql":
        return 1
    return _CHAINS.get(_session_url(session), 1)


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


# --- which chain a transaction extends ---------------------------------------------------------------


def _lock_sql(chain: int) -> str:
    return f"pg_advisory_xact_lock({LOCK_KEY})" if chain == 0 else f"pg_advisory_xact_lock({LOCK_KEY}, {chain})"


def _try_sql(chain: int) -> str:
    return f"pg_try_advisory_xact_lock({LOCK_KEY})" if chain == 0 else f"pg_try_advisory_xact_lock({LOCK_KEY}, {chain})"


def _held(session: Session) -> int | None:
    held = session.info.get(_HELD)
    return held[1] if held is not None and held[0] is session.get_transaction() else None


def _take_chain(session: Session, chain: int | None = None) -> int:
    """The chain this transaction appends to, locked until it ends: the one it already holds, else
    ``chain`` (waiting for it), else the first free one (chain 0 first), else the process's own.
    SQLite: chain 0, no lock (one writer at a time)."""
    if session.bind.dialect.name != "postgresql":
        return 0
    session.connection()  # begins the transaction, so that it is the one remembered
    held = _held(session)
    if held is not None:
        return held
    n = chain_count(session)
    if chain is None and n > 1:
        # One round trip: CASE tries the locks in order and stops at the first one obtained.
        probe = " ".join(f"WHEN {_try_sql(k)} THEN {k}" for k in range(n))
        chain = session.execute(text(f"SELECT CASE {probe} ELSE -1 END")).scalar_one()
        if chain < 0:  # every chain busy: wait for this process's own
            chain = os.getpid() % n
            session.execute(text(f"SELECT {_lock_sql(chain)}"))
    else:
        chain = chain or 0
        session.execute(text(f"SELECT {_lock_sql(chain)}"))
    session.info[_HELD] = (session.get_transaction(), chain)
    return chain


def _head(session: Session, chain: int) -> str:
    return session.execute(select(AuditEntry.hash).where(AuditEntry.chain == chain)
                           .order_by(AuditEntry.id.desc()).limit(1)).scalar() or GENESIS


# --- writing -------------------------------------------------------------------------------------------


def append(session: Session, *, at: dt.datetime, kind: str, data: dict, case_id: int | None = None,
           entity_id: int | None = None) -> AuditEntry | None:
    """Append one entry (in :func:`buffered`: collected, written by one :func:`append_many` at its end).

    ``entity_id`` may be a function giving it once the session is flushed (a row just added)."""
    check_no_pii(data)
    buffer = session.info.get(_BUFFER)
    if buffer is not None:
        buffer.append({"at": at, "kind": kind, "data": data, "case_id": case_id, "entity_id": entity_id})
        return None
    chain = _take_chain(session)
    session.flush()
    if callable(entity_id):
        entity_id = entity_id()
    prev = _head(session, chain)
    data = json.loads(json.dumps(data, default=str))  # what is hashed is what is stored
    entry = AuditEntry(at=at, kind=kind, case_id=case_id, entity_id=entity_id, data=data, prev_hash=prev,
                       hash=entry_hash(prev, at, kind, case_id, entity_id, data, key_for(session)), chain=chain)
    session.add(entry)
    session.flush()
    return entry


@contextmanager
def buffered(session: Session):
    """Within the block, :func:`append` collects its entries; at the end of the block they are written
    in their order by one :func:`append_many` (one lock, one read of the chain's head, one COPY),
    just before the caller commits: the chain's lock is held for the end of the transaction only.
    Nothing is written if the block raises."""
    if session.info.get(_BUFFER) is not None:  # already buffering: the outer block writes
        yield
        return
    session.info[_BUFFER] = []
    try:
        yield
    except BaseException:
        session.info.pop(_BUFFER, None)
        raise
    entries = session.info.pop(_BUFFER)
    append_many(session, entries)


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
    but with one lock, one read of the chain's head and one bulk insert (COPY on
    PostgreSQL): the hashes are chained in memory, and a ``data`` object shared
    by several entries is checked and serialised once. The chain's lock
    (PostgreSQL) is held until the caller's transaction ends.
    """
    entries = list(entries)
    if not entries:
        return []
    return _write(session, _take_chain(session), entries)


def _write(session: Session, chain: int, entries: list) -> list[str]:
    """Chain ``entries`` onto ``chain`` (whose lock the transaction holds) and insert them."""
    encode_data, encode = _DATA_ENCODER.encode, _CANONICAL_ENCODER.encode
    datas: dict[int, tuple[dict, str]] = {}  # id(data given) -> (data stored, its canonical JSON)
    session.flush()
    entries = [{**e, "entity_id": e["entity_id"]()} if callable(e.get("entity_id")) else e
               for e in entries]  # the id of a row added since (append's entity_id)
    for e in entries:
        if id(e["data"]) not in datas:
            check_no_pii(e["data"])
            stored = json.loads(encode_data(e["data"]))  # what is hashed is what is stored
            datas[id(e["data"])] = (stored, encode(stored))
    prev = _head(session, chain)
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
    # Ids follow the list's order (and so the chain's): they are taken under the chain's lock.
    if session.bind.dialect.name == "postgresql":
        _pg_copy(session, rows, chain)
    else:
        session.execute(AuditEntry.__table__.insert(), [
            {"at": r[0], "kind": r[1], "case_id": r[2], "entity_id": r[3], "data": r[4], "prev_hash": r[5],
             "hash": r[6], "chain": chain} for r in rows])
    return [r[6] for r in rows]


_COPY_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _pg_copy(session: Session, rows: list[tuple], chain: int) -> None:
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
                     f"{data_text}\t{prev}\t{digest}\t{chain}\n")
    cursor = session.connection().connection.driver_connection.cursor()
    try:
        with cursor.copy("COPY audit_log (id, at, kind, case_id, entity_id, data, prev_hash, hash, chain) "
                         "FROM STDIN") as cp:
            cp.write("".join(lines))
    finally:
        cursor.close()


@dataclass(frozen=True)
class Anchor:
    """The log's head at one moment, kept outside the database (``relance audit anchor``).

    ``count`` is the number of entries since the genesis (purged ones included),
    ``head_id`` and ``head_hash`` the last entry's id and hash. With more than one
    chain, ``chains`` holds each chain's head, ``(chain, count, head_id, head_hash)``:
    those are what :func:`verify` checks (``count``/``head_*`` then only describe it).
    """

    count: int
    head_id: int | None
    head_hash: str
    at: str | None = None
    chains: tuple[tuple[int, int, int | None, str], ...] = ()

    def heads(self) -> dict[int, tuple[int, int | None, str]]:
        """chain -> (count, head id, head hash): what must still be found in each chain."""
        if self.chains:
            return {c: (n, i, h) for c, n, i, h in self.chains}
        return {0: (self.count, self.head_id, self.head_hash)}

    def as_json(self) -> dict:
        out = {"at": self.at, "count": self.count, "head_id": self.head_id, "head_hash": self.head_hash}
        if self.chains:
            out["chains"] = {str(c): [n, i, h] for c, n, i, h in self.chains}
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Anchor":
        count, head_id, head_hash = data["count"], data.get("head_id"), data["head_hash"]
        if not _head_ok(count, head_id, head_hash):
            raise ValueError("champs count, head_id ou head_hash invalides")
        chains = []
        raw = data.get("chains")
        if raw is not None:
            if not isinstance(raw, dict) or not raw:
                raise ValueError("champ chains invalide")
            for name, head in raw.items():
                if not str(name).isdigit() or not isinstance(head, list) or len(head) != 3 \
                        or not _head_ok(*head):
                    raise ValueError(f"chaîne {str(name)[:8]!r} invalide")
                chains.append((int(name), head[0], head[1], head[2]))
        return cls(count=count, head_id=head_id, head_hash=head_hash, at=data.get("at"), chains=tuple(sorted(chains)))


def _head_ok(count, head_id, head_hash) -> bool:
    return (type(count) is int and count >= 0 and isinstance(head_hash, str) and len(head_hash) == 64
            and (head_id is None or type(head_id) is int))


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
    anchors_checked: int = 0  # anchors found in the log
    anchors_purged: int = 0  # anchors older than the purged beginning (cannot be checked any more)
    notes: list[str] = field(default_factory=list)
    heads: dict[int, tuple[int, int | None, str]] = field(default_factory=dict)  # chain -> (count, id, hash)

    @property
    def count(self) -> int:
        """Entries since the genesis, in every chain (what an anchor records)."""
        return self.purged + self.checked

    def anchor(self, at: dt.datetime | None = None) -> Anchor:
        chains = ()
        if any(c != 0 and n for c, (n, _, _) in self.heads.items()):
            chains = tuple(sorted((c, n, i, h) for c, (n, i, h) in self.heads.items() if n))
        return Anchor(count=self.count, head_id=self.head_id, head_hash=self.head_hash,
                      at=at.astimezone(dt.timezone.utc).isoformat() if at else None, chains=chains)


_WRONG_KEY = " — ou RELANCE_AUDIT_KEY n'est pas la clé qui a signé ce journal"


def _chains_in(session: Session) -> list[int]:
    """The chains that hold entries (a few index probes: the next chain after the last one found)."""
    out, last = [], -1
    while True:
        nxt = session.execute(select(AuditEntry.chain).where(AuditEntry.chain > last)
                              .order_by(AuditEntry.chain).limit(1)).scalar()
        if nxt is None:
            return out
        out.append(nxt)
        last = nxt


def _chain_start(session: Session, chain: int) -> tuple[str, int, VerifyResult | None]:
    """(hash before the chain's first entry, its position, a failure): GENESIS and 0, or its checkpoint's."""
    first = session.execute(select(AuditEntry.id, AuditEntry.prev_hash).where(AuditEntry.chain == chain)
                            .order_by(AuditEntry.id).limit(1)).first()
    if first is None or first.prev_hash == GENESIS:
        return GENESIS, 0, None
    for data in session.execute(select(AuditEntry.data).where(AuditEntry.kind == CHECKPOINT,
                                                              AuditEntry.chain == chain,
                                                              AuditEntry.id >= first.id)).scalars():
        if isinstance(data, dict) and data.get("through_hash") == first.prev_hash \
                and type(data.get("through_id")) is int and data["through_id"] < first.id \
                and type(data.get("through_position")) is int:
            return first.prev_hash, data["through_position"], None
    return GENESIS, 0, VerifyResult(False, 0, first.id, "début de la chaîne supprimé : aucun point de contrôle "
                                                       "de purge ne le couvre")


def verify(session: Session, batch: int = 5000, anchors: list[Anchor] | tuple = (),
           accept_legacy: bool = False) -> VerifyResult:
    """Walk each chain from its beginning (or its purge checkpoint); check each of ``anchors`` on the way.

    An anchor fails when the entry at one of its positions has another hash (a chain
    was rewritten) or when a chain is shorter (truncated). Unkeyed entries at the
    beginning of chain 0 pass only if a matching anchor covers them, or with ``accept_legacy``.
    Each chain is read in id order, and its committed entries are a prefix of it: the walk
    needs no lock and writers go on meanwhile (what they add after it is not counted).
    """
    key = key_for(session)
    chains = _chains_in(session)
    starts: dict[int, tuple[str, int]] = {}
    for c in chains:
        prev, position, failure = _chain_start(session, c)
        if failure is not None:
            return failure
        starts[c] = (prev, position)
    result = VerifyResult(True, 0, purged=sum(p for _, p in starts.values()))
    expected: dict[tuple[int, int], list[tuple[int, int | None, str, Anchor]]] = {}
    waiting: dict[int, int] = {}  # anchor index -> its chain heads not reached yet
    stale: set[int] = set()  # anchors older than a purged beginning
    anchored = -1  # chain 0's position covered by a matching anchor
    for i, a in enumerate(anchors):
        waiting[i] = 0
        for c, (n, head_id, head_hash) in a.heads().items():
            prev, position = starts.get(c, (GENESIS, 0))
            if n > position:
                expected.setdefault((c, n), []).append((i, head_id, head_hash, a))
                waiting[i] += 1
            elif n == position and head_hash == prev:
                anchored = max(anchored, n) if c == 0 else anchored
            else:
                stale.add(i)
    legacy, first_legacy = 0, None
    heads: dict[int, tuple[int, int | None, str]] = {}
    for c in chains:
        prev, position = starts[c]
        head_id, keyed_seen, last_id = None, False, 0
        while True:
            rows = session.execute(select(AuditEntry).where(AuditEntry.chain == c, AuditEntry.id > last_id)
                                   .order_by(AuditEntry.id).limit(batch)).scalars().all()
            if not rows:
                break
            for e in rows:
                if e.prev_hash != prev:
                    return _broken(result, e.id, "le maillon précédent ne correspond pas")
                if entry_hash(prev, e.at, e.kind, e.case_id, e.entity_id, e.data, key) == e.hash:
                    keyed_seen = True
                elif c == 0 and not keyed_seen and entry_hash(prev, e.at, e.kind, e.case_id, e.entity_id,
                                                              e.data) == e.hash:
                    legacy += 1
                    first_legacy = e.id if first_legacy is None else first_legacy
                else:
                    reason = "contenu modifié (empreinte différente)"
                    return _broken(result, e.id, reason + (_WRONG_KEY if not keyed_seen else ""))
                prev, position, head_id, last_id = e.hash, position + 1, e.id, e.id
                result.checked += 1
                for i, a_id, a_hash, a in expected.pop((c, position), ()):
                    if a_hash != e.hash or (a_id is not None and a_id != e.id):
                        where = f"entrée n° {position} de la chaîne" + (f" {c}" if c else "")
                        return _broken(result, e.id, f"ne correspond pas à l'ancre du {a.at or '?'} ({where}) : "
                                                     "journal réécrit")
                    waiting[i] -= 1
                    if c == 0:
                        anchored = max(anchored, position)
            session.expunge_all()
        heads[c] = (position, head_id, prev)
    result.heads = heads
    if heads:
        last = 0 if set(heads) == {0} else max(heads, key=lambda c: heads[c][1] or 0)
        result.head_id, result.head_hash = heads[last][1], heads[last][2]
    result.anchors_purged = len(stale)
    result.anchors_checked = sum(1 for i, n in waiting.items() if n == 0 and i not in stale)
    if expected:
        (c, n) = max(expected, key=lambda k: k[1])
        a = expected[(c, n)][0][3]
        found = heads.get(c, (0, None, GENESIS))[0]
        if c == 0 and not a.chains:
            return _broken(result, None, f"journal tronqué : l'ancre du {a.at or '?'} compte {n} entrées, "
                                         f"la chaîne n'en a plus que {found}")
        return _broken(result, None, f"journal tronqué : l'ancre du {a.at or '?'} compte {n} entrées dans la "
                                     f"chaîne {c}, elle n'en a plus que {found}")
    if legacy:
        result.legacy = legacy
        if not accept_legacy and anchored < starts.get(0, (GENESIS, 0))[1] + legacy:
            result.checked = 0
            return _broken(result, first_legacy, "entrées non signées par RELANCE_AUDIT_KEY (écrites avant la clé, "
                                                 "ou réécrites) et qu'aucune ancre ne couvre")
        result.notes.append(f"dont {legacy} entrées du début écrites avant la clé (non signées, "
                            "couvertes par une ancre)")
    return result


def _broken(result: VerifyResult, entry_id: int | None, reason: str) -> VerifyResult:
    result.ok, result.broken_id, result.reason = False, entry_id, reason
    return result


def purge_prefix(session: Session, through_id: int, at: dt.datetime) -> int:
    """Remove the log's entries up to ``through_id`` (included), in every chain; returns how many.

    Every chain is locked first (nobody appends meanwhile). Each chain that loses entries
    gets a ``checkpoint`` entry first (its last entry removed: id, hash and position in the
    chain), so that :func:`verify` goes on from it. The database accepts this deletion only
    of the log's beginning, covered by a checkpoint, and on PostgreSQL only from a role allowed
    to delete (the owner: the application's role has INSERT and SELECT only) with
    ``relance.audit_purge`` set for the transaction (migration 0005).
    """
    postgres = session.bind.dialect.name == "postgresql"
    if postgres:
        top = session.execute(select(func.max(AuditEntry.chain))).scalar()
        for c in range(max(chain_count(session), (top or 0) + 1)):  # in order: writers hold one each
            session.execute(text(f"SELECT {_lock_sql(c)}"))
        session.info[_HELD] = (session.get_transaction(), 0)
    session.flush()
    starts = {}
    for c in _chains_in(session):
        _, position, failure = _chain_start(session, c)
        if failure is not None:
            raise ValueError(f"purge refusée : {failure.reason}")
        starts[c] = position
    last = session.execute(select(func.max(AuditEntry.id)).where(AuditEntry.id <= through_id)).scalar()
    if last is None:
        return 0
    cut = session.execute(select(AuditEntry.chain, func.count(), func.max(AuditEntry.id))
                          .where(AuditEntry.id <= last).group_by(AuditEntry.chain)).all()
    hashes = dict(session.execute(select(AuditEntry.id, AuditEntry.hash)
                                  .where(AuditEntry.id.in_([r[2] for r in cut]))).all())
    removed = 0
    for chain, count, last_of_chain in sorted(cut):
        _write(session, chain, [{"at": at, "kind": CHECKPOINT, "data": {
            "through_id": last, "through_hash": hashes[last_of_chain],
            "through_position": starts.get(chain, 0) + count, "removed": count}}])
        removed += count
    if postgres:
        session.execute(text("SET LOCAL relance.audit_purge = 'on'"))
    session.execute(AuditEntry.__table__.delete().where(AuditEntry.id <= last))
    if postgres:
        session.execute(text("SET LOCAL relance.audit_purge = 'off'"))
    return removed
