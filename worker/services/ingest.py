"""Flux ingestion, in chunks: parse, upsert people, open cases, audit.

:func:`ingest_file`: the same report and rows as the former per-row ORM code (bench/check_ingest.py
compares both, row by row). Per chunk of :data:`CHUNK_ROWS` rows, in one transaction:

1. two queries find the people already known (``external_id`` and ``nir_hash``
   ``= ANY(array)`` on PostgreSQL, ``IN (...)`` elsewhere), reading only the
   columns the decision needs;
2. each row is decided in file order, in memory, as before: matched by
   external_id, then by NIR; new; unchanged (same fingerprint, same
   external_id); or changed;
3. new people are written in bulk, their cases too (the engine's initial state,
   ``engine.new_case``, computed as ``repository.create_case`` does), and the
   "case opened" audit entries through :func:`worker.adapters.store.audit.append_many` (one
   lock, one read of the chain's end, hashes chained in memory, one bulk
   write). On PostgreSQL ids come from the sequences and rows go with COPY;
   elsewhere (SQLite) as multi-row INSERT ... RETURNING;
4. a changed person takes the per-row ORM path (:func:`update_person`, shared with the stock import;
   a case opened if needed), after whatever the rows before it left pending: every row sees the
   rows before it and the audit chain keeps the file's order.

The pure per-row work of the next chunk (fingerprint, NIR hash, COPY text) is
done by a helper thread while this one waits for the database. The cyclic
garbage collector is paused for the duration of a file (it would otherwise walk
the 100 000 parsed rows again and again; nothing made here is cyclic garbage
worth collecting early).

Nothing here reads the clock: ``now`` dates everything.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gc
import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from operator import attrgetter
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.adapters.store import audit, repository
from worker.adapters.store.bulk import (COPY_ESCAPES, COPY_NULL, copy_rows, copy_text, database_errors_as, in_values,
                                        insert_returning_ids, take_ids)
from worker.adapters.store.models import Case, Person
from worker.adapters.store.session import get_engine, session_scope
from worker.domain import engine
from worker.domain.model import Event
from worker.services.cases import apply_to_active_case
from worker.services.errors import IngestError
from worker.adapters.flux import FluxRow
from worker.domain.contact import can_receive_sms, phone_warning

log = logging.getLogger("relance.services")

CHUNK_ROWS = 2000
REFUSED = ("refusé par la base de données ({kind}) : corriger le fichier et le déposer à nouveau (les lignes "
           "déjà intégrées ne seront pas doublées)")

PERSON_FIELDS = ("last_name", "first_name", "birth_date", "sex", "address_line1", "address_line2", "postcode",
                 "city", "phone", "email", "orientation", "ft_registered", "organisation", "droits_devoirs",
                 "droit_opened_on")
ADDRESS_FIELDS = ("address_line1", "address_line2", "postcode", "city")


@dataclass
class IngestReport:
    file: str
    accepted: int = 0
    updated: int = 0
    unchanged: int = 0
    cases_opened: int = 0
    rejected: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"accepted": self.accepted, "updated": self.updated, "unchanged": self.unchanged,
                "rejected": self.rejected, "warnings": self.warnings}


# --- the row fingerprint ------------------------------------------------------------------------
#
# The same value as worker.adapters.flux.row_fingerprint: sha256 of
# json.dumps([[field, value], ...], ensure_ascii=False, separators=(",", ":")) over every
# FluxRow field but ``line`` (dates in ISO form, ``extra`` as sorted pairs), written here
# the way the JSON encoder writes it (each value encoded on its own, in a fixed frame),
# for a third less of the cost. Equality with row_fingerprint is checked by
# bench/check_ingest.py (on the benchmark's 100 000 rows and the samples).

_FP_FIELDS = tuple(f.name for f in dataclasses.fields(FluxRow) if f.name != "line")
_fp_values = attrgetter(*_FP_FIELDS)
_FP_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_FP_FRAME = "[" + ",".join("[" + encode_basestring(name).replace("%", "%%") + ",%s]" for name in _FP_FIELDS) + "]"


def _fp_json(value) -> str:
    if type(value) is str:
        return encode_basestring(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dt.date):
        return encode_basestring(value.isoformat())
    if isinstance(value, dict):
        return _FP_ENCODER.encode(sorted((str(k), str(v)) for k, v in value.items()))
    return _FP_ENCODER.encode(value)


def fingerprint(row: FluxRow) -> str:
    """``worker.adapters.flux.row_fingerprint(row)``, computed faster."""
    return hashlib.sha256((_FP_FRAME % tuple(map(_fp_json, _fp_values(row)))).encode("utf-8")).hexdigest()


# --- ingestion -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _gc_paused():
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def ingest_file(app, path: Path, now: dt.datetime, progress=None) -> IngestReport:
    """Read a flux file; reject bad rows with a reason; upsert people; open cases."""
    from worker.adapters.config_files import load_flux_columns
    from worker.adapters.files import read_nofollow
    from worker.adapters.flux import parse_flux
    path = Path(path)
    data = read_nofollow(path)  # never through a link, even one planted after the inbox's check
    orgs, kept = frozenset(app.territory.organisations), load_flux_columns(app.settings.config_dir)
    with _gc_paused(), database_errors_as(IngestError, REFUSED):
        parsed = parse_flux(data, organisations=orgs, today=app.calendar.local_date(now), filename=path.name,
                            extra_columns=kept)
        report = IngestReport(file=path.name)
        report.rejected = [{"line": r.line, "external_id": r.external_id, "field": r.field, "reason": r.reason}
                           for r in parsed.rejected]
        report.warnings = [{"line": w.line, "external_id": w.external_id, "field": w.field, "reason": w.reason}
                           for w in parsed.warnings]
        # a kept number that cannot take an SMS (landline, foreign): said, and no SMS is planned
        report.warnings += [{"line": r.line, "external_id": r.external_id, "field": "phone", "reason": why}
                            for r in parsed.rows if r.phone and (why := phone_warning(r.phone))]
        rows = parsed.rows
        del parsed
        copy = get_engine(app.db_url).dialect.name == "postgresql"
        new_cases = _NewCases(app, now)
        chunks = [rows[i:i + CHUNK_ROWS] for i in range(0, len(rows), CHUNK_ROWS)]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-prepare") as helper:
            ahead = helper.submit(_prepare, app, now, chunks[0], copy) if chunks else None
            for k, chunk in enumerate(chunks):
                prepared = ahead.result()
                if k + 1 < len(chunks):
                    ahead = helper.submit(_prepare, app, now, chunks[k + 1], copy)
                with session_scope(app.db_url) as s:
                    _ingest_chunk(s, app, prepared, now, report, new_cases)
                if progress:
                    progress(min((k + 1) * CHUNK_ROWS, len(rows)), len(rows))
    with database_errors_as(IngestError, REFUSED), session_scope(app.db_url) as s:
        audit.append(s, at=now, kind="ingest", data={
            "file_sha256": hashlib.sha256(data).hexdigest(), "file": path.name, "rows": len(rows),
            "accepted": report.accepted, "updated": report.updated, "unchanged": report.unchanged,
            "rejected": len(report.rejected), "cases_opened": report.cases_opened})
    log.info("ingest %s: %d accepted, %d updated, %d unchanged, %d rejected", path.name, report.accepted,
             report.updated, report.unchanged, len(report.rejected))
    return report


def _prepare(app, now: dt.datetime, rows: list[FluxRow], copy: bool) -> list[tuple]:
    """(row, fingerprint, NIR hash, COPY text of the person's columns after the id, or None)."""
    if not copy:
        return [(row, fingerprint(row), app.nir_hash(row.nir), None) for row in rows]
    stamp = copy_text(now)
    fixed = f"{stamp}\t{stamp}\tok\tok\tok\t"  # created_at, updated_at, address/phone/email_status
    to_json = get_engine(app.db_url).dialect._json_serializer or json.dumps
    esc = COPY_ESCAPES
    out = []
    for row in rows:
        fp = fingerprint(row)
        nh = app.nir_hash(row.nir)
        extra = to_json(row.extra).translate(esc) if row.extra else "{}"
        tail = (f"{row.external_id.translate(esc)}\t{nh or COPY_NULL}\t{fp}\t{extra}\t{fixed}"
                + "\t".join([v.translate(esc) if type(v) is str else copy_text(v) for v in _person_values(row)])
                + "\n")
        out.append((row, fp, nh, tail))
    return out


class _Known:
    """What a chunk knows of one person (stored, or new in an earlier row of the chunk)."""

    __slots__ = ("id", "external_id", "nir_hash", "fingerprint")

    def __init__(self, id, external_id, nir_hash, fingerprint):
        self.id = id
        self.external_id = external_id
        self.nir_hash = nir_hash
        self.fingerprint = fingerprint


class _NewCases:
    """The first state of a new person's case, as ``repository.create_case`` computes it.

    ``engine.new_case`` is pure and a new person's contact statuses are all "ok",
    so the state depends only on the key below: it is computed once per key and
    shared (CaseState is frozen), with its column values and its audit data.
    """

    def __init__(self, app, now: dt.datetime):
        self.app = app
        self.now = now
        self._memo: dict[tuple, tuple[dict, str, dict]] = {}

    def get(self, row: FluxRow) -> tuple[dict, str, dict]:
        """(column values, the same in COPY text for CASE_COPY_COLUMNS[2:], audit data)."""
        has_address = bool(row.address_line1 and row.postcode and row.city)
        key = (row.orientation, row.ft_registered, row.organisation, row.droit_opened_on, has_address,
               can_receive_sms(row.phone), bool(row.email))
        hit = self._memo.get(key)
        if hit is None:
            app, now = self.app, self.now
            path = app.policy.route(row.orientation, row.ft_registered)
            state = engine.new_case(path=path, organisation=row.organisation, droit_opened_on=row.droit_opened_on,
                                    now=now, policy=app.policy, cal=app.calendar, has_address=has_address,
                                    has_phone=can_receive_sms(row.phone), has_email=bool(row.email))
            # create_case's contact flags, for a person whose statuses are all "ok"
            state = dataclasses.replace(state, npai=False, phone_unusable=False, sms_opt_out=False,
                                        email_unusable=False)
            columns = {name: getattr(state, name) for name in repository.STATE_FIELDS}
            # Case(version=0) flushed by the ORM is stored with version 1 (version_id_col).
            columns.update(created_at=now, updated_at=now, version=1)
            copy = "\t".join(copy_text(columns[c]) for c in CASE_COPY_COLUMNS[2:])
            data = {"action": "opened", "path": path, "start_step": state.step, "reason": "flux",
                    "late": state.late, "due_at": state.due_at}
            hit = self._memo[key] = (columns, copy, data)
        return hit


def _ingest_chunk(s: Session, app, prepared: list[tuple], now: dt.datetime, report: IngestReport,
                  new_cases: _NewCases) -> None:
    by_ext: dict[str, _Known] = {}
    by_nir: dict[str, _Known] = {}
    by_id: dict[int, _Known] = {}
    cols = (Person.id, Person.external_id, Person.nir_hash, Person.fingerprint)
    queries = [select(*cols).where(in_values(s, Person.external_id, [p[0].external_id for p in prepared]))]
    nirs = [p[2] for p in prepared if p[2]]
    if nirs:
        queries.append(select(*cols).where(in_values(s, Person.nir_hash, nirs)))
    for q in queries:
        for pid, ext, nh, fp in s.execute(q):
            if pid not in by_id:
                by_id[pid] = known = _Known(pid, ext, nh, fp)
                by_ext[ext] = known
                if nh:
                    by_nir[nh] = known

    pending: list[tuple[_Known, tuple]] = []
    for item in prepared:
        row, fp, nh, _tail = item
        known = by_ext.get(row.external_id)
        if known is None and nh:
            known = by_nir.get(nh)
        if known is None:
            known = _Known(None, row.external_id, nh, fp)
            by_ext[row.external_id] = known
            if nh:
                by_nir[nh] = known
            pending.append((known, item))
            report.accepted += 1
            continue
        owner = by_nir.get(nh) if nh else None
        if owner is not None and owner is not known:
            # The file gives this person a NIR that is another stored person's: reject the row alone.
            report.rejected.append(_nir_conflict(row))
            continue
        if known.fingerprint == fp and known.external_id == row.external_id:
            report.unchanged += 1
            continue
        # A changed person: the per-row path, after whatever the rows before it left pending.
        _insert_new(s, now, pending, report, new_cases)
        pending = []
        _update_person(s, app, s.get(Person, known.id), row, fp, nh, now, report)
        if by_ext.get(known.external_id) is known:
            del by_ext[known.external_id]
        known.external_id = row.external_id
        by_ext[row.external_id] = known
        if nh:
            if known.nir_hash and by_nir.get(known.nir_hash) is known:
                del by_nir[known.nir_hash]
            known.nir_hash = nh
            by_nir[nh] = known
        known.fingerprint = fp
    _insert_new(s, now, pending, report, new_cases)


# --- bulk writes ---------------------------------------------------------------------------------------

PERSON_COPY_COLUMNS = ("id", "external_id", "nir_hash", "fingerprint", "extra", "created_at", "updated_at",
                       "address_status", "phone_status", "email_status", *PERSON_FIELDS)
CASE_COPY_COLUMNS = ("id", "person_id", *repository.STATE_FIELDS, "created_at", "updated_at", "version")
_person_values = attrgetter(*PERSON_FIELDS)
def _insert_new(s: Session, now: dt.datetime, pending: list[tuple[_Known, tuple]], report: IngestReport,
                new_cases: _NewCases) -> None:
    """New people, their cases and the cases' audit entries, in bulk."""
    if not pending:
        return
    s.flush()  # the earlier rows' ORM changes first (a freed external_id, a moved NIR)
    route = new_cases.app.policy.route  # None: followed by its own body (the MSA), no case
    with_case = [(k, r) for k, (r, *_) in pending if r.droits_devoirs and route(r.orientation, r.ft_registered)]
    if s.bind.dialect.name == "postgresql":
        ids = take_ids(s, "persons", len(pending))
        for (known, _item), pid in zip(pending, ids):
            known.id = pid
        copy_rows(s, "persons", PERSON_COPY_COLUMNS, [f"{known.id}\t{item[3]}" for known, item in pending])
        case_ids = take_ids(s, "cases", len(with_case))
        copy_rows(s, "cases", CASE_COPY_COLUMNS, [f"{cid}\t{known.id}\t{new_cases.get(row)[1]}\n"
                                              for cid, (known, row) in zip(case_ids, with_case)])
    else:
        person_rows = []
        for _known, (row, fp, nh, _tail) in pending:
            values = {f: getattr(row, f) for f in PERSON_FIELDS}
            values.update(external_id=row.external_id, nir_hash=nh, fingerprint=fp, extra=dict(row.extra),
                          created_at=now, updated_at=now, last_contact_at=None, address_status="ok",
                          phone_status="ok", email_status="ok")
            person_rows.append(values)
        ids = insert_returning_ids(s, Person.__table__, person_rows)
        for (known, _item), pid in zip(pending, ids):
            known.id = pid
        case_ids = insert_returning_ids(s, Case.__table__, [{**new_cases.get(row)[0], "person_id": known.id}
                                                             for known, row in with_case])
    audit.append_many(s, [{"at": now, "kind": "case", "case_id": cid, "entity_id": cid,
                           "data": new_cases.get(row)[2]} for cid, (_known, row) in zip(case_ids, with_case)])
    report.cases_opened += len(case_ids)


# --- the per-row path ----------------------------------------------------------------------------------


def _update_person(s: Session, app, person: Person, row: FluxRow, fingerprint: str, nir_hash: str | None,
                   now: dt.datetime, report: IngestReport) -> None:
    """A known person whose row changed: ORM update, events on the active case, a case if needed."""
    update_person(s, app, person, row, fingerprint, nir_hash, now, source="ingest")
    report.updated += 1
    open_case_if_needed(s, app, person, now, report)


def update_person(s: Session, app, person: Person, row, fingerprint: str, nir_hash: str | None,
                  now: dt.datetime, source: str) -> None:
    """A known person takes a changed row (flux or stock), and the active case hears of the change:
    ``address_updated``; ``phone_updated``, or ``sms_failed`` for a number that cannot take an SMS."""
    values = {f: getattr(row, f) for f in PERSON_FIELDS}
    address_changed = any(getattr(person, f) != values[f] for f in ADDRESS_FIELDS)
    phone_changed = person.phone != values["phone"] and values["phone"] is not None
    for f, v in values.items():
        setattr(person, f, v)
    person.external_id = row.external_id
    person.nir_hash = nir_hash or person.nir_hash
    person.fingerprint, person.extra, person.updated_at = fingerprint, dict(row.extra), now
    if address_changed:
        person.address_status = "ok"
        apply_to_active_case(s, app, person, Event("address_updated", now), now, source=source)
    if phone_changed:
        textable = can_receive_sms(person.phone)
        person.phone_status = "ok" if textable else "not_mobile"
        apply_to_active_case(s, app, person, Event("phone_updated" if textable else "sms_failed", now), now,
                             source=source)


def open_case_if_needed(s: Session, app, person: Person, now: dt.datetime, report: IngestReport) -> None:
    if not person.droits_devoirs or app.policy.route(person.orientation, person.ft_registered) is None:
        return
    cases = s.execute(select(Case).where(Case.person_id == person.id)).scalars().all()
    if any(c.status == "active" for c in cases):
        return
    if any(c.droit_opened_on == person.droit_opened_on for c in cases):
        return  # this droit was already followed (and closed)
    path = app.policy.route(person.orientation, person.ft_registered)
    repository.create_case(s, app, person, path, now)
    report.cases_opened += 1


def _nir_conflict(row: FluxRow) -> dict:
    return {"line": row.line, "external_id": row.external_id, "field": "nir",
            "reason": "NIR déjà attribué à une autre personne connue (autre matricule) : ligne ignorée, "
                      "à vérifier avec la CAF"}


__all__ = ["IngestReport", "ingest_file", "fingerprint", "open_case_if_needed", "update_person", "CHUNK_ROWS", "PERSON_FIELDS", "ADDRESS_FIELDS"]
