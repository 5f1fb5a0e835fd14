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
