"""Secrets (issue 11): no command touches real data with the development keys or short ones.

Before: the default RELANCE_NIR_HASH_KEY was accepted outside Docker, and with it a
person's birth date and sex give back their NIR in about a second. Every command
now refuses it (and a key under 32 bytes), naming the variable and saying how to
generate one; the same rule holds for RELANCE_AUDIT_KEY. The demo and the tests
bring their own keys.
"""
from __future__ import annotations

import os
import stat

import pytest

from tests.integration.test_cli import Cli, REPO
from worker.settings import DEV_AUDIT_KEY, DEV_NIR_HASH_KEY, Settings

GOOD = {"RELANCE_NIR_HASH_KEY": "5e" * 32, "RELANCE_AUDIT_KEY": "a7" * 32}


@pytest.fixture
def cli(tmp_path) -> Cli:
    assert not str(tmp_path).startswith(str(REPO))
    return Cli(tmp_path)


def _without_keys(cli: Cli) -> None:
    for name in GOOD:
        cli.env.pop(name, None)


@pytest.mark.parametrize("env, variable, words", [
    ({}, "RELANCE_NIR_HASH_KEY", "développement"),  # nothing set: the defaults
    ({"RELANCE_NIR_HASH_KEY": DEV_NIR_HASH_KEY, "RELANCE_AUDIT_KEY": GOOD["RELANCE_AUDIT_KEY"]},
     "RELANCE_NIR_HASH_KEY", "développement"),
    ({"RELANCE_NIR_HASH_KEY": "cle-du-departement-35", "RELANCE_AUDIT_KEY": GOOD["RELANCE_AUDIT_KEY"]},
     "RELANCE_NIR_HASH_KEY", "trop courte"),
    ({"RELANCE_NIR_HASH_KEY": GOOD["RELANCE_NIR_HASH_KEY"]}, "RELANCE_AUDIT_KEY", "développement"),
    ({"RELANCE_NIR_HASH_KEY": GOOD["RELANCE_NIR_HASH_KEY"], "RELANCE_AUDIT_KEY": DEV_AUDIT_KEY},
     "RELANCE_AUDIT_KEY", "développement"),
    ({"RELANCE_NIR_HASH_KEY": GOOD["RELANCE_NIR_HASH_KEY"], "RELANCE_AUDIT_KEY": "x" * 31},
     "RELANCE_AUDIT_KEY", "trop courte"),
    ({"RELANCE_NIR_HASH_KEY": GOOD["RELANCE_NIR_HASH_KEY"], "RELANCE_AUDIT_KEY": GOOD["RELANCE_NIR_HASH_KEY"]},
     "RELANCE_AUDIT_KEY", "différer"),
])
def test_commands_refuse_weak_keys(cli, env, variable, words):
    _without_keys(cli)
    line = cli.fails("db", "upgrade", env=env)
    assert variable in line and words in line, line
    assert "secrets.token_hex(32)" in line, line
    assert not cli.db.exists()  # refused before touching anything


def test_every_command_that_touches_data_is_refused(cli, flux_writer):
    _without_keys(cli)
    path = flux_writer([{"external_id": "CAF35-0009101"}])
    lines = cli.fails_all(("ingest", str(path)), ("tick",), ("timeline", "CAF35-0009101"), ("audit", "verify"),
                          ("agenda",), ("letters", "batch"), ("messages", "list"), ("orientation",))
    assert all("RELANCE_NIR_HASH_KEY" in line for line in lines), lines
    assert not cli.db.exists()


def test_a_good_key_is_accepted_and_the_files_are_private(cli, flux_writer):
    path = flux_writer([{"external_id": "CAF35-0009102"}])
    cli.run("db", "upgrade", env=GOOD)
    cli.run("ingest", str(path), "--now", "2024-06-03T08:00", env=GOOD)
    cli.run("tick", "--now", "2024-06-03T10:00", env=GOOD)
    # the process's umask and the explicit modes: nothing holding personal data is world-readable
    written = [cli.db, *[p for p in cli.data_dir.rglob("*") if p.is_file()]]
    assert cli.db.stat().st_mode & 0o777 == 0o600
    assert {p.name for p in written} >= {"relance.db", "sms.jsonl", "email.jsonl"}
    for p in written:
        assert not p.stat().st_mode & stat.S_IRWXO, (p, oct(p.stat().st_mode))


def test_settings_name_each_weak_key():
    assert [n for n, _ in Settings().weak_secrets()] == ["RELANCE_NIR_HASH_KEY", "RELANCE_AUDIT_KEY"]
    assert Settings(nir_hash_key="5e" * 32, audit_key="a7" * 32).weak_secrets() == []
    assert Settings(nir_hash_key="é" * 16, audit_key="a7" * 32).weak_secrets() == []  # 32 bytes in UTF-8


def test_get_app_checks_the_keys_and_restricts_the_umask(monkeypatch, tmp_path):
    from worker.bootstrap import get_app, set_app
    from worker.domain.policy import ConfigError
    from worker.settings import reset_settings

    monkeypatch.setenv("RELANCE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("RELANCE_NIR_HASH_KEY", raising=False)
    monkeypatch.delenv("RELANCE_AUDIT_KEY", raising=False)
    old = os.umask(0o022)
    try:
        reset_settings()
        set_app(None)
        with pytest.raises(ConfigError, match="RELANCE_NIR_HASH_KEY"):
            get_app()
        for name, value in GOOD.items():
            monkeypatch.setenv(name, value)
        reset_settings()
        app = get_app()
        assert app.settings.nir_hash_key == GOOD["RELANCE_NIR_HASH_KEY"]
        current = os.umask(0o022)
        assert current & 0o027 == 0o027
    finally:
        set_app(None)
        reset_settings()
        os.umask(old)


def test_the_demo_brings_its_own_keys(tmp_path):
    """`make demo` runs without any key in the environment; its data is read again with its keys."""
    from worker.entrypoints.demo import DEMO_SECRETS, run_demo

    for name in DEMO_SECRETS:
        assert not os.environ.get(name) or os.environ[name] != DEMO_SECRETS[name]
    summary = run_demo(days=2, out=tmp_path / "demo")
    assert "Journal d'audit : intact" in summary
    assert all(f"{k}={v}" in summary for k, v in DEMO_SECRETS.items())
    assert Settings(**{k.removeprefix("RELANCE_").lower(): v for k, v in DEMO_SECRETS.items()}).weak_secrets() == []
