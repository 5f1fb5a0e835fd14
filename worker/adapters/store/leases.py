"""Named leases in the database (table ``locks``): the single active scheduler,
one inbox scan at a time. A lease expires by itself if its holder dies."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError

from worker.adapters.store.models import Lock
from worker.adapters.store.session import session_scope

UTC = dt.timezone.utc


def acquire_lease(app, name: str, owner: str, now: dt.datetime, seconds: float) -> bool:
    """Take or renew a named lease; True if ``owner`` holds it now."""
    expires = now + dt.timedelta(seconds=seconds)
    with session_scope(app.db_url) as s:
        res = s.execute(update(Lock).where(Lock.name == name, (Lock.owner == owner) | (Lock.expires_at < now))
                        .values(owner=owner, expires_at=expires).execution_options(synchronize_session=False))
        if res.rowcount == 1:
            return True
    try:
        with session_scope(app.db_url) as s:
            s.execute(insert(Lock).values(name=name, owner=owner, expires_at=expires))
        return True
    except IntegrityError:
        return False


def release_lease(app, name: str, owner: str) -> None:
    with session_scope(app.db_url) as s:
        s.execute(update(Lock).where(Lock.name == name, Lock.owner == owner)
                  .values(expires_at=dt.datetime(1970, 1, 1, tzinfo=UTC)))
