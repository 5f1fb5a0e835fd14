"""The hash-chained audit log after a real run, on both backends: it verifies,
tampering is detected at the first broken entry, and it holds no personal data.

The database refuses UPDATE and DELETE on the table (migration 0005): the
tampering tests play someone who holds the database anyway (its owner, the
SQLite file) and drops or disables the triggers first (:func:`_disable_triggers`)."""
from __future__ import annotations

import csv
import datetime as dt
import json
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from worker.adapters.store import audit

from worker.entrypoints import jobs

from worker.services import cases, ingest
from worker.adapters.store.models import AuditEntry, Message, Person
from worker.adapters.store.session import get_engine, session_scope

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
PARIS = ZoneInfo("Europe/Paris")


def local(y, m, d, hh=10, mm=0) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=PARIS)


def _run(app, path: Path = SAMPLES / "flux_2024-03.csv") -> None:
    """Ingest a month of flux, let time pass, record a few events."""
    ingest.ingest_file(app, path, local(2024, 4, 2, 8))
    jobs.cycle(app, local(2024, 4, 2))
    cases.apply_event(app, external_id="CAF35-0001001", type="rdv_booked", now=local(2024, 4, 3),
                         appointment_at=local(2024, 4, 12, 14), idempotency_key="k1")
    cases.apply_event(app, external_id="CAF35-0001002", type="npai", now=local(2024, 4, 4))
    cases.apply_event(app, external_id="CAF35-0001003", type="legitimate_reason", now=local(2024, 4, 4),
                         until=local(2024, 5, 1), reason="hospitalisation de Madame Fontaine",
                         category="hospitalisation")
    cases.apply_event(app, external_id="CAF35-0001002", type="address_updated", now=local(2024, 4, 5))
    jobs.cycle(app, local(2024, 4, 17))


def _verify(app) -> audit.VerifyResult:
    with session_scope(app.db_url) as s:
        return audit.verify(s, batch=7)  # several batches


def _disable_triggers(app) -> None:
    """What the database's owner (or whoever holds the SQLite file) can still do."""
    with get_engine(app.db_url).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        else:
            for name in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                          "AND tbl_name = 'audit_log'")).scalars().all():
                conn.execute(text(f"DROP TRIGGER {name}"))


def _ids(app) -> list[int]:
    with session_scope(app.db_url) as s:
        return list(s.execute(select(AuditEntry.id).order_by(AuditEntry.id)).scalars())


@pytest.fixture
def ran(relance_app, flux_writer):
    """A short run (4 people of the CD path): enough entries of every kind to tamper with."""
    path = flux_writer([{"external_id": f"CAF35-000100{i}", "droit_opened_on": "2024-03-20"}
                        for i in range(1, 5)])
    _run(relance_app, path)
    res = _verify(relance_app)
    assert res.ok and res.checked == len(_ids(relance_app)) > 40
    return relance_app


def test_tampered_data_is_detected(ran):
    _disable_triggers(ran)
    ids = _ids(ran)
    target = ids[len(ids) // 2]
    with session_scope(ran.db_url) as s:
        entry = s.get(AuditEntry, target)
        data = dict(entry.data)
    data["tampered"] = True
    with get_engine(ran.db_url).begin() as conn:
        conn.execute(text("UPDATE audit_log SET data = :d WHERE id = :id"), {"d": json.dumps(data), "id": target})
    res = _verify(ran)
    assert (res.ok, res.broken_id) == (False, target)
    assert res.checked == ids.index(target)


def test_tampered_date_is_detected(ran):
    _disable_triggers(ran)
    ids = _ids(ran)
    target = ids[7]
    with session_scope(ran.db_url) as s:
        entry = s.get(AuditEntry, target)
        entry.at = entry.at - dt.timedelta(days=1)  # through the ORM: a "legitimate-looking" write
    res = _verify(ran)
    assert (res.ok, res.broken_id) == (False, target)


def test_deleted_entry_is_detected(ran):
    _disable_triggers(ran)
    ids = _ids(ran)
    target = ids[len(ids) // 3]
    with get_engine(ran.db_url).begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": target})
    res = _verify(ran)
    assert (res.ok, res.broken_id) == (False, ids[ids.index(target) + 1])


def test_deleted_last_entries_are_not_detectable_but_the_rest_still_verifies(ran):
    """Truncating the tail leaves a valid (shorter) chain: documented limit of a plain hash chain
    (the anchors detect it: test_anchor_detects_a_truncated_chain)."""
    _disable_triggers(ran)
    ids = _ids(ran)
    with get_engine(ran.db_url).begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": ids[-1]})
    res = _verify(ran)
    assert res.ok and res.checked == len(ids) - 1


def test_reordered_entries_are_detected(ran):
    _disable_triggers(ran)
    ids = _ids(ran)
    a, b = ids[10], ids[11]
    cols = ("at", "kind", "case_id", "entity_id", "data", "prev_hash", "hash")
    with get_engine(ran.db_url).begin() as conn:
        rows = {r[0]: r[1:] for r in conn.execute(
            text(f"SELECT id, {', '.join(cols)} FROM audit_log WHERE id IN (:a, :b)"), {"a": a, "b": b})}
        sets = ", ".join(f"{c} = :{c}" for c in cols)
        conn.execute(text("UPDATE audit_log SET hash = 'swap' WHERE id = :id"), {"id": a})
        for dest, src in ((b, a), (a, b)):
            values = dict(zip(cols, rows[src]))
            if not isinstance(values["data"], str):
                values["data"] = json.dumps(values["data"])
            conn.execute(text(f"UPDATE audit_log SET {sets} WHERE id = :id"), {**values, "id": dest})
    res = _verify(ran)
    assert (res.ok, res.broken_id) == (False, a)


def test_append_refuses_personal_data_keys(relance_app):
    with session_scope(relance_app.db_url) as s:
        for key in ("phone", "email", "last_name", "nir", "address_line1", "to", "body"):
            with pytest.raises(ValueError):
                audit.append(s, at=local(2024, 4, 2), kind="case", data={key: "x"})


# --- append-only in the database, keyed, anchored (issue 11) ---------------------------------------------


def _rows(app) -> list[tuple]:
    with get_engine(app.db_url).connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT id, kind, prev_hash, hash FROM audit_log ORDER BY id"))]


def test_the_database_refuses_to_change_or_delete_entries(ran):
    """Before: UPDATE and DELETE on audit_log succeeded (on PostgreSQL too)."""
    ids = _ids(ran)
    before = _rows(ran)
    postgres = ran.db_url.startswith("postgresql")
    statements = [
        ("UPDATE audit_log SET data = :d WHERE id = :id", {"d": json.dumps({"tampered": True}), "id": ids[5]}),
        ("UPDATE audit_log SET hash = hash", {}),
        ("DELETE FROM audit_log WHERE id = :id", {"id": ids[len(ids) // 2]}),
        ("DELETE FROM audit_log WHERE id = :id", {"id": ids[-1]}),
        ("DELETE FROM audit_log WHERE id = :id", {"id": ids[0]}),  # even the beginning: no checkpoint covers it
        ("DELETE FROM audit_log", {}),
    ] + ([("TRUNCATE audit_log", {})] if postgres else [])
    for sql, params in statements:
        for purge_flag in ((False, True) if postgres else (False,)):
            with pytest.raises(DBAPIError, match="audit_log"):
                with get_engine(ran.db_url).begin() as conn:
                    if purge_flag:  # the purge's session flag alone does not allow it either
                        conn.execute(text("SET LOCAL relance.audit_purge = 'on'"))
                    conn.execute(text(sql), params)
    with pytest.raises(DBAPIError, match="audit_log"):
        with session_scope(ran.db_url) as s:  # through the ORM, as the application would
            s.get(AuditEntry, ids[3]).kind = "event"
    assert _rows(ran) == before
    assert _verify(ran).ok


def _rewrite_from(app, index: int, key: bytes | None, change: bool = True) -> int:
    """Someone with write access changes entry ``index`` and recomputes every hash from there on
    (plain SHA-256 if ``key`` is None); returns the id of the changed entry."""
    _disable_triggers(app)
    with session_scope(app.db_url) as s:
        rows = s.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars().all()
        prev = rows[index - 1].hash if index else audit.GENESIS
        if change:
            rows[index].data = {**rows[index].data, "tampered": True}
        for e in rows[index:]:
            e.prev_hash = prev
            e.hash = audit.entry_hash(prev, e.at, e.kind, e.case_id, e.entity_id, e.data, key)
            prev = e.hash
        return rows[index].id


def test_a_chain_rewritten_without_the_key_is_detected(ran):
    """Before: the hash was a plain SHA-256 that anyone can recompute; verify said intact."""
    target = _rewrite_from(ran, len(_ids(ran)) // 2, key=None)
    res = _verify(ran)
    assert (res.ok, res.broken_id) == (False, target)


def test_a_chain_rewritten_from_its_first_entry_without_the_key_is_detected(ran):
    first = _rewrite_from(ran, 0, key=None)
    res = _verify(ran)
    assert (res.ok, res.broken_id) == (False, first)
    assert "RELANCE_AUDIT_KEY" in res.reason


def test_a_chain_rewritten_with_another_key_is_detected(ran):
    target = _rewrite_from(ran, 10, key=b"une-autre-cle-que-celle-du-departement-0123456789")
    res = _verify(ran)
    assert (res.ok, res.broken_id) == (False, target)


def test_verifying_with_the_wrong_key_says_so(ran):
    audit.register_key(ran.db_url, "une-autre-cle-que-celle-du-departement-0123456789")
    try:
        res = _verify(ran)
    finally:
        audit.register_key(ran.db_url, ran.settings.audit_key)
    assert (res.ok, res.broken_id) == (False, _ids(ran)[0])
    assert "RELANCE_AUDIT_KEY" in res.reason


def _anchor(app) -> audit.Anchor:
    res = _verify(app)
    assert res.ok
    return res.anchor(dt.datetime(2024, 4, 20, tzinfo=dt.timezone.utc))


def test_anchor_detects_a_truncated_chain(ran):
    anchor = _anchor(ran)
    assert anchor.count == len(_ids(ran)) and anchor.head_id == _ids(ran)[-1]
    _disable_triggers(ran)
    ids = _ids(ran)
    with get_engine(ran.db_url).begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id >= :id"), {"id": ids[-3]})
    assert _verify(ran).ok  # a shorter chain is still a valid chain...
    with session_scope(ran.db_url) as s:
        res = audit.verify(s, batch=7, anchors=[anchor])
    assert not res.ok and res.broken_id is None  # ...but not the one that was anchored
    assert "tronqué" in res.reason and str(anchor.count) in res.reason


def test_anchor_detects_a_chain_rewritten_with_the_key(ran):
    anchor = _anchor(ran)
    with session_scope(ran.db_url) as s:
        key = audit.key_for(s)
    _rewrite_from(ran, 12, key=key)  # an insider holding the key
    assert _verify(ran).ok
    with session_scope(ran.db_url) as s:
        res = audit.verify(s, batch=7, anchors=[anchor])
    assert (res.ok, res.broken_id) == (False, anchor.head_id)
    assert "ancre" in res.reason


def test_anchor_file_through_the_service(ran, tmp_path):
    from worker.services.audit_log import AuditError, anchor_chain, verify_chain

    path = tmp_path / "ancres" / "audit.jsonl"
    path.parent.mkdir()
    first = anchor_chain(ran, local(2024, 4, 20), path)
    cases.apply_event(ran, external_id="CAF35-0001004", type="npai", now=local(2024, 4, 21))
    second = anchor_chain(ran, local(2024, 4, 21), path)
    assert second.count > first.count
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [line["count"] for line in lines] == [first.count, second.count]
    assert set(lines[0]) == {"at", "count", "head_id", "head_hash"}
    assert path.stat().st_mode & 0o777 == 0o640
    res = verify_chain(ran, path)
    assert res.ok and res.anchors_checked == 2

    _disable_triggers(ran)
    with get_engine(ran.db_url).begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": second.head_id})
    assert verify_chain(ran).ok
    assert not verify_chain(ran, path).ok
    with pytest.raises(AuditError, match="rompu"):
        anchor_chain(ran, local(2024, 4, 22), path)  # a broken chain is never anchored
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2
    path.write_text("pas du json\n", encoding="utf-8")
    with pytest.raises(AuditError, match="ligne 1"):
        verify_chain(ran, path)


def test_purging_the_beginning_keeps_the_chain_verifiable(ran):
    from worker.services.retention import purge_audit_log

    before_purge = _anchor(ran)
    ids = _ids(ran)
    with session_scope(ran.db_url) as s:
        early = s.execute(select(func.count()).select_from(AuditEntry)
                          .where(AuditEntry.at < local(2024, 4, 4))).scalar_one()
    assert 0 < early < len(ids)
    removed = purge_audit_log(ran, local(2024, 4, 4), local(2024, 4, 30))
    assert removed == early
    left = _ids(ran)
    assert left[0] == ids[early] and len(left) == len(ids) - early + 1  # + the checkpoint
    with session_scope(ran.db_url) as s:
        checkpoint = s.get(AuditEntry, left[-1])
        assert checkpoint.kind == "checkpoint"
        assert checkpoint.data["through_id"] == ids[early - 1] and checkpoint.data["through_position"] == early
        res = audit.verify(s, batch=7, anchors=[before_purge])
    assert res.ok and res.purged == early and res.count == len(ids) + 1
    assert res.anchors_checked == 1  # the anchor taken before the purge still holds
    assert purge_audit_log(ran, local(2024, 4, 4), local(2024, 4, 30)) == 0

    # Removing the beginning without a checkpoint (the owner, triggers disabled) is detected.
    _disable_triggers(ran)
    with get_engine(ran.db_url).begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": left[0]})
    res = _verify(ran)
    assert (res.ok, res.broken_id) == (False, left[1])
    assert "début de la chaîne" in res.reason


def test_unsigned_entries_from_before_the_key_pass_only_when_anchored(relance_app, tmp_path):
    """A database upgraded from before the keyed chain: its beginning is accepted once sealed by an anchor."""
    from worker.services.audit_log import anchor_chain, verify_chain

    app = relance_app
    at = local(2024, 4, 2)
    with session_scope(app.db_url) as s:
        prev = audit.GENESIS
        for i in range(3):  # what the previous version wrote: plain SHA-256
            digest = audit.entry_hash(prev, at, "ingest", None, None, {"rows": i})
            s.add(AuditEntry(at=at, kind="ingest", case_id=None, entity_id=None, data={"rows": i},
                             prev_hash=prev, hash=digest))
            prev = digest
    with session_scope(app.db_url) as s:
        audit.append(s, at=at, kind="ingest", data={"rows": 3})
    res = verify_chain(app)
    assert not res.ok and res.broken_id == _ids(app)[0] and "non signées" in res.reason
    path = tmp_path / "ancres.jsonl"
    anchor_chain(app, at, path, accept_unsigned=True)  # once, at the upgrade
    with session_scope(app.db_url) as s:
        audit.append(s, at=at, kind="ingest", data={"rows": 4})
    res = verify_chain(app, path)
    assert res.ok and res.legacy == 3 and res.checked == 5 and res.notes
    assert not verify_chain(app).ok


@pytest.mark.postgres
def test_the_application_role_may_only_insert_and_read_the_audit_log(pg_url, tmp_path, flux_writer):
    """The compose set-up: scripts/postgres-init/10-app-role.sh, then the migrations as the owner."""
    import os
    import subprocess
    import uuid

    from sqlalchemy.engine import make_url

    from tests.infra.postgres import find_pg_bin
    from worker.adapters.store.session import dispose_all, upgrade
    from worker.bootstrap import build_app, set_app
    from worker.entrypoints.celery_app import celery, configure
    from worker.services.retention import AuditPurgeError, purge_audit_log
    from worker.settings import Settings

    owner = make_url(pg_url)
    role = f"relance_app_{uuid.uuid4().hex[:8]}"
    script = Path(__file__).resolve().parents[2] / "scripts" / "postgres-init" / "10-app-role.sh"
    env = {**os.environ, "PATH": f"{find_pg_bin()}:{os.environ['PATH']}", "PGHOST": owner.host,
           "PGPORT": str(owner.port), "POSTGRES_USER": owner.username, "POSTGRES_DB": owner.database,
           "POSTGRES_APP_USER": role, "POSTGRES_APP_PASSWORD": "not-checked-here"}
    subprocess.run(["sh", str(script)], env=env, check=True, capture_output=True, timeout=60)
    app_url = owner.set(username=role).render_as_string(hide_password=False)
    saved = {k: celery.conf[k] for k in ("broker_url", "task_always_eager")}
    try:
        upgrade(pg_url)  # the owner migrates
        settings = Settings(data_dir=tmp_path / "var", database_url=app_url, database_owner_url=pg_url)
        app = build_app(settings)
        configure(settings)
        set_app(app)
        ingest.ingest_file(app, flux_writer([{"external_id": "CAF35-0008001"}, {"external_id": "CAF35-0008002"}]),
                           local(2024, 6, 3, 8))
        jobs.cycle(app, local(2024, 6, 3, 10))  # the application works as its role...
        with session_scope(app.db_url) as s:
            assert audit.verify(s).ok and s.execute(select(func.count()).select_from(AuditEntry)).scalar_one() > 5
        for sql in ("UPDATE audit_log SET kind = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
            with pytest.raises(DBAPIError, match="permission denied"):  # ...but never rewrites its audit log
                with get_engine(app_url).begin() as conn:
                    conn.execute(text("SET LOCAL relance.audit_purge = 'on'"))
                    conn.execute(text(sql))
        with pytest.raises(AuditPurgeError, match="propriétaire"):
            purge_audit_log(build_app(Settings(data_dir=tmp_path / "var", database_url=app_url)),
                            local(2024, 6, 4), local(2024, 6, 5))
        assert purge_audit_log(app, local(2024, 6, 4), local(2024, 6, 5)) > 0  # the owner may purge
        with session_scope(app.db_url) as s:
            assert audit.verify(s).ok
    finally:
        set_app(None)
        celery.conf.update(saved)
        get_engine(app_url).dispose()
        dispose_all()
        with get_engine(pg_url).begin() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))


# --- no personal data ------------------------------------------------------------------------------------


def _personal_values(app, sample: str) -> dict[str, set[str]]:
    """Every name, phone number (as written and as stored), e-mail, address and NIR of a sample."""
    with open(SAMPLES / sample, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with session_scope(app.db_url) as s:
        phones = {p.phone for p in s.execute(select(Person)).scalars() if p.phone}
    values: dict[str, set[str]] = {"name": set(), "phone": set(phones), "email": set(), "address": set(),
                                   "nir": set()}
    for r in rows:
        values["name"] |= {r["last_name"], r["first_name"], f"{r['first_name']} {r['last_name']}",
                           r["last_name"].upper()}
        if r["phone"]:
            values["phone"] |= {r["phone"], re.sub(r"\D", "", r["phone"])}
        if r["email"]:
            values["email"].add(r["email"])
        values["address"] |= {v for v in (r["address_line1"], r["address_line2"]) if v}
        values["nir"].add(r["nir"])
    return {k: {v for v in vs if len(v) >= 4} for k, vs in values.items()}


def _leaks(app, values) -> list[tuple[int, str, str]]:
    with session_scope(app.db_url) as s:
        entries = [(e.id, json.dumps({"kind": e.kind, "data": e.data}, ensure_ascii=False))
                   for e in s.execute(select(AuditEntry)).scalars()]
    assert entries
    return [(i, kind, v) for i, blob in entries for kind, vs in values.items() for v in vs if v in blob]


def test_a_run_verifies_and_its_audit_log_holds_no_personal_data(relance_app):
    app = relance_app
    _run(app)
    res = _verify(app)
    assert res.ok and res.broken_id is None
    assert res.checked == len(_ids(app)) > 100
    assert _leaks(app, _personal_values(app, "flux_2024-03.csv")) == []


def test_no_personal_data_in_the_audit_log_when_an_address_is_refused(relance_app, flux_writer):
    """A letter that cannot be addressed is flagged in the audit log without the address itself."""
    app = relance_app
    street = "12 impasse du Clos de la Grande Pièce Longue des Vignes Hautes"
    name = "Kerouredan-Lestrohan-Bellec-Guillermic-Le Goff"
    path = flux_writer([{"external_id": "CAF35-0007001", "address_line1": street},
                        {"external_id": "CAF35-0007002", "last_name": name, "first_name": "Marie-Christine"}])
    rep = ingest.ingest_file(app, path, local(2024, 6, 10, 8))
    assert (rep.accepted, rep.rejected) == (2, [])
    jobs.cycle(app, local(2024, 6, 10))
    with session_scope(app.db_url) as s:
        letters = list(s.execute(select(Message).where(Message.channel == "letter")).scalars())
        entries = [json.dumps(e.data, ensure_ascii=False) for e in s.execute(select(AuditEntry)).scalars()]
    assert [m.status for m in letters] == ["failed", "failed"]  # refused, not sent with a mangled address
    flags = [e for e in entries if "address_invalid" in e]
    assert len(flags) == 2
    leaks = [e for e in entries for v in (street, name, name.upper(), "Pièce Longue", "KEROUREDAN") if v in e]
    assert leaks == []
