"""``relance audit anchor [FILE]``, ``relance audit verify --anchor FILE`` and ``relance audit purge``,
as ops run them (a real subprocess, SQLite)."""
from __future__ import annotations

import json
import sqlite3

import pytest

from tests.integration.test_cli import Cli, REPO


@pytest.fixture
def cli(tmp_path, flux_writer) -> Cli:
    assert not str(tmp_path).startswith(str(REPO))
    cli = Cli(tmp_path)
    cli.run("db", "upgrade")
    path = flux_writer([{"external_id": "CAF35-0006201"}, {"external_id": "CAF35-0006202"}])
    cli.run("ingest", str(path), "--now", "2024-06-03T08:00")
    cli.run("tick", "--now", "2024-06-03T10:00")
    return cli


def _count(cli: Cli) -> int:
    con = sqlite3.connect(cli.db)
    try:
        return con.execute("SELECT count(*) FROM audit_log").fetchone()[0]
    finally:
        con.close()


def test_anchor_then_verify_detects_a_truncated_chain(cli):
    anchors = cli.cwd / "ancres" / "audit.jsonl"
    anchors.parent.mkdir()
    printed = json.loads(cli.run("audit", "anchor").stdout)  # no file: the line, for a log collector
    n = _count(cli)
    assert printed["count"] == n and len(printed["head_hash"]) == 64
    out = cli.run("audit", "anchor", str(anchors)).stdout
    assert f"{n} entrées" in out
    cli.run("event", "npai", "CAF35-0006201", "--at", "2024-06-04T09:00")
    cli.run("audit", "anchor", str(anchors))
    assert len(anchors.read_text(encoding="utf-8").splitlines()) == 2
    out = cli.run("audit", "verify", "--anchor", str(anchors)).stdout
    assert out.startswith(f"Journal d'audit intact : {_count(cli)} entrées vérifiées.")
    assert "2 ancres concordantes" in out

    # Someone holding the database file removes the last entries (triggers dropped first).
    con = sqlite3.connect(cli.db)
    with con:
        con.execute("DROP TRIGGER audit_log_delete_prefix")
        con.execute("DELETE FROM audit_log WHERE id > (SELECT max(id) - 2 FROM audit_log)")
    con.close()
    cli.run("audit", "verify")  # still a valid (shorter) chain...
    line = cli.fails("audit", "verify", "--anchor", str(anchors))  # ...but not the anchored one
    assert "tronqué" in line
    line = cli.fails("audit", "anchor", str(anchors))
    assert "rien n'est ancré" in line
    assert len(anchors.read_text(encoding="utf-8").splitlines()) == 2


def test_verify_with_a_missing_or_bad_anchor_file(cli):
    line = cli.fails("audit", "verify", "--anchor", str(cli.cwd / "absent.jsonl"))
    assert "introuvable" in line
    bad = cli.cwd / "bad.jsonl"
    bad.write_text('{"count": "beaucoup"}\n', encoding="utf-8")
    line = cli.fails("audit", "verify", "--anchor", str(bad))
    assert "ligne 1" in line


def test_audit_purge_keeps_the_chain_verifiable(cli):
    anchors = cli.cwd / "audit.jsonl"
    cli.run("audit", "anchor", str(anchors))
    before = _count(cli)
    out = cli.run("audit", "purge", "--before", "2024-06-03T09:00").stdout
    removed = int(out.split()[0])
    assert 0 < removed < before
    assert _count(cli) == before - removed + 1  # the checkpoint
    out = cli.run("audit", "verify", "--anchor", str(anchors)).stdout
    assert "1 ancres concordantes" in out
