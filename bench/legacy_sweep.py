"""``services.due_case_ids`` as it was before this work (commit 516ba5a), for the
baseline of bench_sweep.py (--legacy): a SELECT ... FOR UPDATE SKIP LOCKED of the
due ids, then an UPDATE ... WHERE id IN (<those 1 000 ids>). Not used by the
application."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, select, update

from worker.adapters.store.models import Case
from worker.adapters.store.session import session_scope


def due_case_ids(app, now: dt.datetime, limit: int) -> list[int]:
    with session_scope(app.db_url) as s:
        q = (select(Case.id).where(Case.status == "active", Case.due_at <= now,
                                   or_(Case.claimed_until.is_(None), Case.claimed_until < now))
             .order_by(Case.due_at).limit(limit))
        if s.bind.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        ids = list(s.execute(q).scalars())
        if ids:
            s.execute(update(Case).where(Case.id.in_(ids))
                      .values(claimed_until=now + dt.timedelta(minutes=5))
                      .execution_options(synchronize_session=False))
        return ids
