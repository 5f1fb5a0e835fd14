"""The sweep's due queue: tables ``case_due`` (unclaimed due moments) and ``case_claim`` (what the
sweep handed out, until when). Migrations 0010 and 0011.

- Triggers on ``cases`` keep ``case_due``: a case that becomes active with a due moment gets a
  row; a new due moment deletes the case's row (and its claim) and inserts a new one; a case no
  longer active, or without a due moment, leaves the queue.
- :func:`claim` *moves* due rows from ``case_due`` to ``case_claim`` (one statement), after
  claiming again the claims that expired (their worker died before advancing the case).
- :func:`release`, at the end of an ``advance``, moves back the claims of the cases whose due
  moment did not change (the trigger already removed the others' claims).

Why move rows rather than set a claim column on them: rows of ``case_due`` are only inserted and
deleted, never updated in place, so its pages never fill past their fillfactor. PostgreSQL prunes
a heap page when a reader meets it full of dead rows; with updates in place, the claim after a
batch was advanced met ~1 000 such pages through the index entries the batch left dead, and
pruned them all before claiming (bench/RESULTS.md section 2).
"""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import bindparam, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from worker.adapters.store.models import CaseClaim, CaseDue, UTCDateTime
from worker.adapters.store.session import get_engine, session_scope

DUE = CaseDue.__table__
CLAIMS = CaseClaim.__table__
log = logging.getLogger("relance.sweep")

# PostgreSQL: the whole claim in one statement, atomic by itself: the expired claims (re-checked under
# their row lock: two sweepers never both take one), then the due rows, found through
# ix_case_due_due_at and deleted by their ctid (no second index lookup); a sweeper that meets a row
# another one is moving waits for it, then finds it gone and skips it. A case is in case_due or in
# case_claim, never both (the trigger deletes its row and claim before inserting a new row): so the
# plain INSERT. Should it ever find a claim of the case there, the statement fails as a whole, the
# stale claims are deleted (the queue row is the newer) and the claim runs again.
_PG_CLAIM = text("""
WITH expired AS (
    UPDATE case_claim SET claimed_until = :until
    WHERE claimed_until < :now
      AND case_id = ANY(ARRAY(SELECT case_id FROM case_claim WHERE claimed_until < :now
                              ORDER BY claimed_until LIMIT :n))
    RETURNING case_id
), picked AS (
    DELETE FROM case_due
    WHERE ctid = ANY(ARRAY(SELECT ctid FROM case_due WHERE due_at <= :now ORDER BY due_at
                           LIMIT GREATEST(:n - (SELECT count(*) FROM expired), 0)))
      AND due_at <= :now
    RETURNING case_id, due_at
), moved AS (
    INSERT INTO case_claim (case_id, due_at, claimed_until) SELECT case_id, due_at, :until FROM picked
    RETURNING case_id
)
SELECT ARRAY(SELECT case_id FROM expired UNION ALL SELECT case_id FROM moved)  -- one value: parsed at once
""").bindparams(bindparam("now", type_=UTCDateTime()), bindparam("until", type_=UTCDateTime()))
_PG_STALE = text("DELETE FROM case_claim c USING case_due d WHERE c.case_id = d.case_id RETURNING c.case_id")


def _claim_expired(conn, now: dt.datetime, limit: int, until: dt.datetime) -> list[int]:
    """Claims whose time ran out, the oldest first, claimed again (SQLite; PostgreSQL: _PG_CLAIM)."""
    expired = select(CLAIMS.c.case_id).where(CLAIMS.c.claimed_until < now).order_by(
        CLAIMS.c.claimed_until).limit(limit)
    stmt = (update(CLAIMS).where(CLAIMS.c.claimed_until < now, CLAIMS.c.case_id.in_(expired.scalar_subquery()))
            .values(claimed_until=until).returning(CLAIMS.c.case_id))
    return list(conn.execute(stmt).scalars())


def _insert(session_or_conn):
    return postgresql.insert if session_or_conn.bind.dialect.name == "postgresql" else sqlite.insert


def claim(db_url: str, now: dt.datetime, limit: int, until: dt.datetime) -> list[int]:
    """Claim up to ``limit`` cases until ``until``: expired claims first, then the due cases, the
    longest due first. Their ids, in no particular order. Concurrent sweepers never get the same case
    (one may get fewer: what the other took)."""
    engine = get_engine(db_url)
    if engine.dialect.name != "postgresql":
        with session_scope(db_url) as s:  # SQLite: one writer at a time, the whole claim at once
            ids = _claim_expired(s, now, limit, until)
            if len(ids) < limit:
                due = select(DUE.c.case_id).where(DUE.c.due_at <= now).order_by(DUE.c.due_at).limit(limit - len(ids))
                rows = s.execute(delete(DUE).where(DUE.c.case_id.in_(due.scalar_subquery()))
                                 .returning(DUE.c.case_id, DUE.c.due_at)).all()
                if rows:
                    s.execute(insert(CLAIMS).values(
                        [{"case_id": r.case_id, "due_at": r.due_at, "claimed_until": until} for r in rows]))
                ids += [r.case_id for r in rows]
            return ids
    params = {"now": now, "n": limit, "until": until}
    with engine.connect() as conn:  # autocommit: no BEGIN / COMMIT round trips
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            return conn.execute(_PG_CLAIM, params).scalar_one()
        except IntegrityError:
            stale = list(conn.execute(_PG_STALE).scalars())
            log.warning("due queue: %d stale claims of cases back in the queue deleted", len(stale))
            return conn.execute(_PG_CLAIM, params).scalar_one()


def release(s: Session, case_ids: list[int]) -> None:
    """End the claims of these cases (after their ``advance``): those still claimed kept their due
    moment, so they go back to the queue as they were (a case still due is swept again)."""
    s.flush()  # the cases' changes first: their triggers remove the claims of the cases that moved
    rows = s.execute(delete(CLAIMS).where(CLAIMS.c.case_id.in_(case_ids))
                     .returning(CLAIMS.c.case_id, CLAIMS.c.due_at)).all()
    if rows:
        back = _insert(s)(DUE).values([{"case_id": r.case_id, "due_at": r.due_at} for r in rows])
        s.execute(back.on_conflict_do_nothing(index_elements=[DUE.c.case_id]))
