"""The inbox's files (issue 11): clear NIRs are kept private and not for ever; links are never read.

Before: ingested flux files stayed in inbox/done/ for ever, mode 0644, and a symbolic
link dropped in the shared inbox was followed (the file it points to was ingested).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import stat

from sqlalchemy import func, select

from worker.adapters.store.models import Person
from worker.adapters.store.session import session_scope
from worker.services.inbox import scan_inbox
from worker.services.retention import purge_expired

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 6, 3, 8, 0, tzinfo=UTC)


def _persons(app) -> int:
    with session_scope(app.db_url) as s:
        return s.execute(select(func.count()).select_from(Person)).scalar_one()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path, follow_symlinks=False).st_mode)


def test_a_link_in_the_inbox_is_never_read(relance_app, flux_writer):
    app = relance_app
    outside = flux_writer([{"external_id": "CAF35-0007101"}], name="ailleurs.csv")
    inbox = app.settings.inbox
    inbox.mkdir(parents=True)
    (inbox / "flux_2024-06.csv").symlink_to(outside)
    (inbox / "dangling.csv").symlink_to(inbox / "absent.csv")
    results = scan_inbox(app, NOW)
    assert sorted(r["status"] for r in results) == ["failed", "failed"]
    assert all("lien symbolique" in r["error"] for r in results)
    assert _persons(app) == 0
    assert outside.exists() and "CAF35-0007101" in outside.read_text(encoding="utf-8")
    assert sorted(p.name for p in inbox.iterdir()) == ["failed"]
    failed = sorted((inbox / "failed").iterdir())
    assert [p.is_symlink() for p in failed if not p.name.endswith(".report.json")] == [True, True]


def test_flux_files_are_private_and_deleted_after_the_delay(relance_app, flux_writer):
    app = relance_app
    assert app.settings.inbox_done_days == 7
    inbox = app.settings.inbox
    inbox.mkdir(parents=True)
    source = flux_writer([{"external_id": "CAF35-0007102"}])
    os.chmod(source, 0o644)  # as dropped by the CAF transfer
    os.replace(source, inbox / "flux_2024-06.csv")
    (inbox / "broken.jsonl").write_text('{"external_id": \n', encoding="utf-8")
    results = scan_inbox(app, NOW)
    assert sorted(r["status"] for r in results) == ["done", "failed"]
    kept = [p for d in ("done", "failed") for p in (inbox / d).iterdir()]
    assert len(kept) == 4  # two flux files and their reports
    for p in kept:
        assert _mode(p) == 0o600, p
        assert p.stat().st_mtime == NOW.timestamp()  # their retention runs from the ingestion
    report = json.loads(next(p for p in kept if p.name.endswith("flux_2024-06.csv.report.json"))
                        .read_text(encoding="utf-8"))
    assert report["status"] == "done"

    purge_expired(app, NOW + dt.timedelta(days=6))
    assert len([p for d in ("done", "failed") for p in (inbox / d).iterdir()]) == 4
    purge_expired(app, NOW + dt.timedelta(days=7, minutes=1))
    assert [p for d in ("done", "failed") for p in (inbox / d).iterdir()] == []
    assert _persons(app) == 1  # the rows are kept: only the clear NIRs are gone
