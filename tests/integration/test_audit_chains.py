"""Issue 15: the audit log in parallel chains (PostgreSQL). Concurrent writers no longer wait for one
another: each transaction extends a chain of its own; ``verify`` checks every chain, an anchor records
every chain's head, the purge cuts every chain after a checkpoint in each. A lone writer still writes
one chain (chain 0), as before."""
from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from sqlalchemy import select, text

from worker.adapters.store import audit
from worker.adapters.store.models import AuditEntry
from worker.adapters.store.session import get_engine, session_scope

pytestmark = pytest.mark.postgres

UTC = dt.timezone.utc
AT = dt.datetime(2024, 6, 5, 8, 0, tzinfo=UTC)


@pytest.fixture
def url(pg_url):
    from worker.adapters.store import session as db_session

    db_session.upgrade(pg_url)
    audit.register_key(pg_url, "une-cle-d-audit-pour-les-tests-des-chaines-0123456789")
    audit.register_chains(pg_url, 4)
    try:
        yield pg_url
    finally:
        audit.register_chains(pg_url, 1)
        db_session.get_engine(pg_url).dispose()
        db_session.dispose_all()


def _append(url: str, n: int, tag: str) -> None:
    with session_scope(url) as s:
        for i in range(n):
            audit.append(s, at=AT + dt.timedelta(seconds=i), kind="case", case_id=i, entity_id=i,
                         data={"tag": tag, "n": i})


def _concurrently(url: str, rounds: int = 3) -> None:
    """Two writers whose transactions overlap, ``rounds`` times (and a buffered batch in between)."""
    for r in range(rounds):
        with session_scope(url) as s:
            audit.append(s, at=AT, kind="case", data={"round": r, "writer": "a"})
            other = threading.Thread(target=_append, args=(url, 3, f"b{r}"))
            other.start()
            other.join(30)  # it could not wait for chain 0: it took another
            assert not other.is_alive()
            audit.append(s, at=AT, kind="case", data={"round": r, "writer": "a", "again": True})
        with session_scope(url) as s, audit.buffered(s):
            for i in range(4):
                audit.append(s, at=AT, kind="message", entity_id=i, data={"round": r, "batch": i})


def _chains(url: str) -> dict[int, int]:
    with get_engine(url).connect() as conn:
        return dict(conn.execute(text("SELECT chain, count(*) FROM audit_log GROUP BY chain")).all())


def _verify(url: str, anchors=()) -> audit.VerifyResult:
    with session_scope(url) as s:
        return audit.verify(s, batch=4, anchors=anchors)


def _disable_triggers(url: str) -> None:
    with get_engine(url).begin() as conn:
        conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))


def test_a_lone_writer_writes_one_chain(url):
    _append(url, 5, "seul")
    _append(url, 5, "seul encore")
    assert _chains(url) == {0: 10}
    res = _verify(url)
    assert res.ok and res.checked == 10 and set(res.heads) == {0}
    assert set(res.anchor().as_json()) == {"at", "count", "head_id", "head_hash"}  # the anchor as before


def test_concurrent_writers_take_different_chains_and_verify_as_one(url):
    _concurrently(url)
    chains = _chains(url)
    assert len(chains) >= 2 and sum(chains.values()) == 3 * (2 + 3 + 4)
    res = _verify(url)
    assert res.ok and res.checked == sum(chains.values()) and res.count == res.checked
    anchor = res.anchor(AT)
    line = anchor.as_json()
    assert set(line["chains"]) == {str(c) for c in chains}
    assert audit.Anchor.from_json(json.loads(json.dumps(line))) == anchor
    _append(url, 2, "après")
    later = _verify(url, [anchor])
    assert later.ok and later.anchors_checked == 1


def _entries_of(url: str, chain: int) -> list[int]:
    with session_scope(url) as s:
        return list(s.execute(select(AuditEntry.id).where(AuditEntry.chain == chain).order_by(AuditEntry.id))
                    .scalars())


def test_a_change_in_any_chain_is_detected(url):
    _concurrently(url)
    other = max(_chains(url))
    target = _entries_of(url, other)[1]
    _disable_triggers(url)
    with get_engine(url).begin() as conn:
        conn.execute(text("UPDATE audit_log SET data = :d WHERE id = :id"),
                     {"d": json.dumps({"tampered": True}), "id": target})
    res = _verify(url)
    assert (res.ok, res.broken_id) == (False, target)


def test_an_entry_moved_to_another_chain_is_detected(url):
    _concurrently(url)
    other = max(_chains(url))
    target = _entries_of(url, 0)[2]
    _disable_triggers(url)
    with get_engine(url).begin() as conn:
        conn.execute(text("UPDATE audit_log SET chain = :c WHERE id = :id"), {"c": other, "id": target})
    assert not _verify(url).ok


def test_a_truncated_chain_is_detected_by_the_anchor(url):
    _concurrently(url)
    anchor = _verify(url).anchor(AT)
    other = max(_chains(url))
    last = _entries_of(url, other)[-1]
    _disable_triggers(url)
    with get_engine(url).begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": last})
    assert _verify(url).ok  # a shorter chain is still a valid chain...
    res = _verify(url, [anchor])  # ...but not the one anchored
    assert not res.ok and "tronqué" in res.reason and f"chaîne {other}" in res.reason


def test_a_chain_rewritten_with_the_key_is_detected_by_the_anchor(url):
    _concurrently(url)
    anchor = _verify(url).anchor(AT)
    other = max(_chains(url))
    ids = _entries_of(url, other)
    _disable_triggers(url)
    with session_scope(url) as s:
        key = audit.key_for(s)
        rows = s.execute(select(AuditEntry).where(AuditEntry.chain == other).order_by(AuditEntry.id)).scalars().all()
        prev = rows[0].prev_hash
        rows[0].data = {**rows[0].data, "tampered": True}
        for e in rows:
            e.prev_hash = prev
            e.hash = audit.entry_hash(prev, e.at, e.kind, e.case_id, e.entity_id, e.data, key)
            prev = e.hash
    assert _verify(url).ok
    res = _verify(url, [anchor])
    assert (res.ok, res.broken_id) == (False, ids[-1]) and "ancre" in res.reason


def test_the_purge_cuts_every_chain_after_a_checkpoint_in_each(url):
    _concurrently(url, rounds=4)
    before = _verify(url)
    anchor = before.anchor(AT)
    with session_scope(url) as s:
        ids = list(s.execute(select(AuditEntry.id).order_by(AuditEntry.id)).scalars())
    through = ids[len(ids) // 2]
    cut = {c for c, n in _chains(url).items()}
    with session_scope(url) as s:
        removed = audit.purge_prefix(s, through, AT + dt.timedelta(days=1))
    assert removed == len([i for i in ids if i <= through])
    with session_scope(url) as s:
        checkpoints = s.execute(select(AuditEntry.chain, AuditEntry.data).where(AuditEntry.kind == "checkpoint")).all()
    assert {c for c, _ in checkpoints} <= cut and len(checkpoints) >= 2
    res = _verify(url, [anchor])
    assert res.ok and res.purged == removed and res.count == before.count + len(checkpoints)
    assert res.anchors_checked == 1
    _append(url, 2, "après la purge")
    assert _verify(url, [anchor]).ok
