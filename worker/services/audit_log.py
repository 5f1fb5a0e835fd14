"""The audit log, read back: is the keyed hash chain intact, and does it still hold what was
anchored outside the database? (``relance audit verify [--anchor FILE]``, ``relance audit anchor``)

An anchor is one JSON line ``{"at", "count", "head_id", "head_hash"}``: the
chain's head at that moment (``count`` = its position from the genesis). Ops
append one a day (``relance audit anchor FILE``) to a place the database's
users cannot rewrite (another machine, write-once storage, a log collector, the
agents' digest); ``verify --anchor FILE`` then checks every line of it: a
chain rewritten, even with the key, or truncated since, no longer holds those
heads.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from worker.adapters.files import SHARED_MODE, append_line
from worker.adapters.store import audit
from worker.adapters.store.session import session_scope
from worker.services.errors import ServiceError


class AuditError(ServiceError):
    """The anchor file cannot be read, or the chain is broken (French message)."""


def read_anchors(path: Path) -> list[audit.Anchor]:
    """Every anchor of ``path`` (one JSON line each; blank lines skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AuditError(f"fichier d'ancres introuvable : {path}") from None
    except (OSError, UnicodeError) as exc:
        raise AuditError(f"fichier d'ancres illisible : {path} ({type(exc).__name__})") from None
    anchors = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            anchors.append(audit.Anchor.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditError(f"{path}, ligne {number} : ancre invalide ({exc})") from None
    return anchors


def verify_chain(app, anchor_file: Path | None = None) -> audit.VerifyResult:
    anchors = read_anchors(anchor_file) if anchor_file is not None else []
    with session_scope(app.db_url) as s:
        return audit.verify(s, anchors=anchors)


def anchor_chain(app, now: dt.datetime, anchor_file: Path | None = None,
                 accept_unsigned: bool = False) -> audit.Anchor:
    """Verify the chain (against the anchors already in ``anchor_file``), then append its head there.

    A broken chain is never anchored (AuditError). Without a file, the anchor is only returned
    (the CLI prints it, for a log collector). ``accept_unsigned``: once, right after upgrading a
    database whose chain began before it was keyed, seal that unsigned beginning with this anchor."""
    existing = read_anchors(anchor_file) if anchor_file is not None and Path(anchor_file).exists() else []
    with session_scope(app.db_url) as s:
        result = audit.verify(s, anchors=existing, accept_legacy=accept_unsigned)
    if not result.ok:
        where = f"n° {result.broken_id}" if result.broken_id is not None else "sa fin"
        raise AuditError(f"journal d'audit rompu à l'entrée {where} : {result.reason} ; rien n'est ancré")
    anchor = result.anchor(now)
    if anchor_file is not None:
        append_line(Path(anchor_file), json.dumps(anchor.as_json(), ensure_ascii=False), SHARED_MODE)
    return anchor
