"""The audit log, read back: is the hash chain intact? (``relance audit verify``)"""
from __future__ import annotations

from worker.adapters.store import audit
from worker.adapters.store.session import session_scope


def verify_chain(app) -> audit.VerifyResult:
    with session_scope(app.db_url) as s:
        return audit.verify(s)
