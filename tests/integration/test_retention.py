"""Retention: people with no active case and no activity for 24 months are purged;
everyone else is kept; the audit chain stays intact."""
import datetime as dt

from sqlalchemy import func, select

from worker.adapters.store import audit

from worker.entrypoints import jobs

from worker.services import cases, ingest
from worker.adapters.store.models import Case, Message, Person
from worker.adapters.store.session import session_scope
from worker.services.retention import cutoff, purge_expired

UTC = dt.timezone.utc


def _count(app, model):
    with session_scope(app.db_url) as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def test_cutoff_months():
    assert cutoff(dt.datetime(2026, 3, 31, tzinfo=UTC), 24) == dt.datetime(2024, 3, 28, tzinfo=UTC)
    assert cutoff(dt.datetime(2026, 1, 15, tzinfo=UTC), 3) == dt.datetime(2025, 10, 15, tzinfo=UTC)


def test_purge_after_retention_period(relance_app, flux_writer):
    app = relance_app
    t0 = dt.datetime(2024, 6, 3, 8, 0, tzinfo=UTC)
    path = flux_writer([{"external_id": "RET-0001", "droit_opened_on": "2024-06-01", "nir": ""},
                        {"external_id": "RET-0002", "droit_opened_on": "2024-06-01", "nir": ""}])
    ingest.ingest_file(app, path, t0)
    jobs.cycle(app, t0)
    assert _count(app, Message) > 0
    # One person's droit closes; the other stays active (its case is still running).
    cases.apply_event(app, external_id="RET-0001", type="droit_closed", now=t0 + dt.timedelta(days=1))

    # Before the retention period: nothing is purged.
    assert purge_expired(app, t0 + dt.timedelta(days=365)) == 0
    assert _count(app, Person) == 2

    # 25 months later: the closed one is purged with its case, messages and events.
    later = t0 + dt.timedelta(days=31 * 25)
    assert purge_expired(app, later) == 1
    with session_scope(app.db_url) as s:
        remaining = s.execute(select(Person.external_id)).scalars().all()
        assert remaining == ["RET-0002"]
        assert s.execute(select(func.count()).select_from(Case)).scalar_one() == 1
        assert audit.verify(s).ok
    # Idempotent.
    assert purge_expired(app, later) == 0


def _jsonl_refs(path) -> list[str]:
    import json

    if not path.exists():
        return []
    return [json.loads(line)["reference"] for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_purge_deletes_the_files_holding_the_same_personal_data(relance_app, flux_writer):
    """Before: letters, outbox lines, print batches and digests stayed on disk for ever."""
    app = relance_app
    t0 = dt.datetime(2024, 6, 3, 8, 0, tzinfo=UTC)
    path = flux_writer([{"external_id": "RET-0003", "droit_opened_on": "2024-06-01", "nir": ""},
                        {"external_id": "RET-0004", "droit_opened_on": "2024-06-01", "nir": ""}])
    ingest.ingest_file(app, path, t0)
    jobs.cycle(app, t0)
    with session_scope(app.db_url) as s:
        sent = s.execute(select(Message, Person.external_id).join(Case, Case.id == Message.case_id)
                         .join(Person, Person.id == Case.person_id).where(Message.status == "sent")).all()
        refs = {(ext, m.channel): (m.reference, m.provider_ref) for m, ext in sent}
    assert {ch for _, ch in refs} == {"sms", "email", "letter"}
    letters = {ext: app.settings.letters / refs[(ext, "letter")][1] for ext in ("RET-0003", "RET-0004")}
    assert all(p.exists() for p in letters.values())
    outbox = app.settings.outbox
    for ch in ("sms", "email"):
        assert sorted(_jsonl_refs(outbox / f"{ch}.jsonl")) == sorted(refs[(e, ch)][0] for e in ("RET-0003", "RET-0004"))
    for root in (app.settings.print_dir, app.settings.digests):
        for day in ("2024-06-03", "2026-07-01"):
            (root / day).mkdir(parents=True, exist_ok=True)
            (root / day / "CDAS-REDON.txt").write_text("Alix Testeur", encoding="utf-8")
    cases.apply_event(app, external_id="RET-0003", type="droit_closed", now=t0 + dt.timedelta(days=1))

    later = t0 + dt.timedelta(days=31 * 25)
    assert purge_expired(app, later) == 1
    assert not letters["RET-0003"].exists() and letters["RET-0004"].exists()
    for ch in ("sms", "email"):
        assert _jsonl_refs(outbox / f"{ch}.jsonl") == [refs[("RET-0004", ch)][0]]
        assert (outbox / f"{ch}.jsonl").stat().st_mode & 0o777 == 0o600
    for root in (app.settings.print_dir, app.settings.digests):
        assert sorted(p.name for p in root.iterdir()) == ["2026-07-01"]  # older than 24 months: gone
    with session_scope(app.db_url) as s:
        assert audit.verify(s).ok
