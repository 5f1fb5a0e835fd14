"""The store on both backends: migration, schema drift, NIR hashing, constraints,
optimistic concurrency."""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from worker.entrypoints import jobs

from worker.services import cases, ingest
from worker.bootstrap import build_app
from worker.adapters.store.models import AuditEntry, Base, Case, Message, Person
from worker.adapters.store.session import get_engine, session_scope
from worker.settings import Settings

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
PARIS = ZoneInfo("Europe/Paris")
UTC = dt.timezone.utc
NOW = dt.datetime(2024, 4, 2, 10, 0, tzinfo=PARIS)


def test_migration_creates_every_table(relance_app):
    tables = set(inspect(get_engine(relance_app.db_url)).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert {"persons", "cases", "appointments", "messages", "events", "audit_log", "locks",
            "alembic_version"} <= tables


def test_models_and_migration_do_not_drift(relance_app):
    """Alembic autogenerate finds nothing to add, drop or alter on the migrated database."""
    with get_engine(relance_app.db_url).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent(relance_app):
    from worker.adapters.store.session import upgrade

    upgrade(relance_app.db_url)  # already at head: nothing to do, no error
    with session_scope(relance_app.db_url) as s:
        from alembic.script import ScriptDirectory

        from worker.adapters.store.session import alembic_config

        head = ScriptDirectory.from_config(alembic_config(relance_app.db_url)).get_current_head()
        assert s.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head


# --- the NIR is stored only as a keyed hash ----------------------------------------------------------


def _sample_nirs(name: str) -> list[str]:
    with open(SAMPLES / name, encoding="utf-8", newline="") as fh:
        return [row["nir"] for row in csv.DictReader(fh) if row["nir"]]


def _every_text_value(db_url: str):
    """(table, column, text) of every non-null value of every column of every table."""
    engine = get_engine(db_url)
    insp = inspect(engine)
    with engine.connect() as conn:
        for table in insp.get_table_names():
            cols = [c["name"] for c in insp.get_columns(table)]
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                for col, value in zip(cols, row):
                    if value is None:
                        continue
                    yield table, col, value if isinstance(value, str) else json.dumps(value, default=str)


def test_nir_is_stored_only_as_a_keyed_hash(relance_app, monkeypatch):
    app = relance_app
    ingest.ingest_file(app, SAMPLES / "flux_2024-03.csv", NOW)
    jobs.cycle(app, NOW)  # letters, SMS, e-mails, audit entries: the whole store is populated
    nirs = _sample_nirs("flux_2024-03.csv")
    assert len(nirs) == 30
    found = [(t, c) for t, c, v in _every_text_value(app.db_url) for nir in nirs if nir in v]
    assert found == []
    # Nor in what was sent (the outbox) ... nor in the audit log's JSON.
    for path in app.settings.outbox.rglob("*"):
        if path.is_file():
            content = path.read_text(encoding="utf-8")
            assert not [n for n in nirs if n in content], path
    with session_scope(app.db_url) as s:
        audit_json = [json.dumps(e.data) for e in s.execute(select(AuditEntry)).scalars()]
        hashes = {p.external_id: p.nir_hash for p in s.execute(select(Person)).scalars()}
    assert audit_json and not [n for n in nirs for j in audit_json if n in j]
    if app.db_url.startswith("sqlite"):
        raw = Path(app.db_url.split("///", 1)[1]).read_bytes()
        assert not [n for n in nirs if n.encode() in raw]

    # The hash is keyed: HMAC with RELANCE_NIR_HASH_KEY, not a plain digest.
    with open(SAMPLES / "flux_2024-03.csv", encoding="utf-8", newline="") as fh:
        by_id = {row["external_id"]: row["nir"] for row in csv.DictReader(fh)}
    for external_id, nir in by_id.items():
        assert hashes[external_id] == app.nir_hash(nir)
        assert hashes[external_id] != hashlib.sha256(nir.encode()).hexdigest()
    monkeypatch.setenv("RELANCE_NIR_HASH_KEY", "une-autre-cle-du-departement")
    other = build_app(Settings(data_dir=app.settings.data_dir, database_url=app.db_url))
    assert other.settings.nir_hash_key == "une-autre-cle-du-departement"
    for external_id, nir in by_id.items():
        assert other.nir_hash(nir) != hashes[external_id]
        assert len(other.nir_hash(nir)) == 64


# --- constraints ---------------------------------------------------------------------------------------


def _one_case(app) -> int:
    ingest.ingest_file(app, SAMPLES / "flux_2024-03.csv", NOW)
    with session_scope(app.db_url) as s:
        return s.execute(select(Case.id).order_by(Case.id).limit(1)).scalar_one()


def test_one_message_per_case_step_channel_seq(relance_app):
    app = relance_app
    case_id = _one_case(app)
    now = NOW.astimezone(UTC)

    def msg(seq=0, channel="sms"):
        return Message(case_id=case_id, step="invitation_1", channel=channel, seq=seq, status="pending",
                       not_before=now, created_at=now, status_at=now)

    with session_scope(app.db_url) as s:
        s.add(msg())
    with pytest.raises(IntegrityError):
        with session_scope(app.db_url) as s:
            s.add(msg())
    # Another seq or another channel is another message.
    with session_scope(app.db_url) as s:
        s.add(msg(seq=1))
        s.add(msg(channel="letter"))
    with session_scope(app.db_url) as s:
        assert len(s.execute(select(Message).where(Message.case_id == case_id)).scalars().all()) == 3


def test_concurrent_writer_of_a_case_fails_instead_of_overwriting(relance_app):
    app = relance_app
    case_id = _one_case(app)
    engine = get_engine(app.db_url)
    first, second = Session(engine), Session(engine)
    try:
        a = first.get(Case, case_id)
        b = second.get(Case, case_id)
        assert a.version == b.version
        version = a.version
        a.hold_reason = "written by the first"
        first.commit()
        b.hold_reason = "written by the second"
        with pytest.raises(StaleDataError):
            second.commit()
        second.rollback()
    finally:
        first.close()
        second.close()
    with session_scope(app.db_url) as s:
        case = s.get(Case, case_id)
        assert case.hold_reason == "written by the first"
        assert case.version == version + 1


def test_advance_case_survives_a_concurrent_writer(relance_app, monkeypatch):
    """The service layer turns the optimistic-lock failure into "try again at the next sweep"."""
    from worker.adapters.store import repository

    app = relance_app
    if app.db_url.startswith("postgresql"):
        # advance_case locks the row FOR UPDATE there: the other writer would wait for it.
        pytest.skip("on PostgreSQL, writers of a case are serialised by SELECT ... FOR UPDATE")
    case_id = _one_case(app)
    real_persist = repository.persist

    def persist_after_someone_else(session, app_, case, decision, now, cause):
        with session_scope(app.db_url) as other:  # another worker writes the case meanwhile
            other.get(Case, case_id).hold_reason = "other worker"
        return real_persist(session, app_, case, decision, now, cause)

    monkeypatch.setattr(repository, "persist", persist_after_someone_else)
    assert cases.advance_case(app, case_id, NOW) == []
    with session_scope(app.db_url) as s:
        case = s.get(Case, case_id)
        assert case.hold_reason == "other worker" and case.step_entered_at is None
        assert s.execute(select(Message).where(Message.case_id == case_id)).scalars().all() == []
