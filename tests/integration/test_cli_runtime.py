"""The command line's start-up checks and exit codes (issue 11, "Settings"): a bad setting is one
French line naming the variable; ordinary commands never create the schema; an unknown status is
said to be unknown; rejected rows exit 3, distinct from a refusal (1), a usage error (2) and a
crash (70); `relance scheduler --check`; `relance db upgrade --wait`."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.test_cli import SAMPLES, Cli


@pytest.fixture
def cli(tmp_path) -> Cli:
    return Cli(tmp_path)


def test_ordinary_commands_do_not_create_the_schema(cli):
    line = cli.fails("tick", "--now", "2024-06-03T10:00")
    assert "relance db upgrade" in line
    line = cli.fails("ingest", str(SAMPLES / "flux_2024-03.csv"))
    assert "relance db upgrade" in line
    assert not cli.db.exists()
    assert cli.run("db", "upgrade").stdout.strip() == "Base à jour."
    cli.run("tick", "--now", "2024-06-03T10:00")


@pytest.mark.parametrize("variable,value,words", [
    ("RELANCE_DATABASE_URL", "postgres://relance:motdepasse@db/relance", "postgresql+psycopg"),
    ("RELANCE_TIMEZONE", "Europe/Pariss", "fuseau horaire inconnu"),
    ("RELANCE_SMS_WINDOW_START", "25:00", "HH:MM"),
    ("RELANCE_SMS_BACKEND", "sms", "'local' ou 'twilio'"),
    ("RELANCE_BROKER_URL", "redis//oops", "redis://"),
])
def test_a_bad_setting_is_one_line_naming_it(cli, variable, value, words):
    proc = cli.run("messages", "list", env={variable: value}, ok=False)
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("Erreur : paramètres invalides — " + variable + " : ") and words in line, line
    assert "motdepasse" not in line


def test_unknown_status_is_said_to_be_unknown(cli):
    cli.run("db", "upgrade")
    line = cli.fails("messages", "list", "--status", "bogus")
    assert "statut inconnu 'bogus'" in line and "technical-failure" in line


def test_rejected_rows_exit_3(cli):
    cli.run("db", "upgrade")
    proc = cli.run("ingest", str(SAMPLES / "flux_2024-05_with_errors.csv"), ok=False)
    assert proc.returncode == 3, proc.stderr
    assert "lignes rejetées" in proc.stdout and "code de sortie 3" in proc.stderr
    again = cli.run("ingest", str(SAMPLES / "flux_2024-03.csv"))  # a clean file: 0
    assert again.returncode == 0
    proc = cli.run("ingest", str(SAMPLES / "flux_2024-05_with_errors.csv"), "--json", ok=False)
    assert proc.returncode == 3 and '"rejected"' in proc.stdout


def test_usage_error_is_2_and_a_crash_is_70(cli, monkeypatch, capsys):
    assert cli.run("messages", "list", "--no-such-option", ok=False).returncode == 2
    from worker.entrypoints import cli as cli_module

    def crash(**_):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli_module, "app", crash)
    with pytest.raises(SystemExit) as exit_:
        cli_module.main()
    assert exit_.value.code == cli_module.EXIT_INTERNAL == 70
    assert capsys.readouterr().err.startswith("Erreur inattendue : RuntimeError")


def test_scheduler_check(cli):
    cli.run("db", "upgrade")
    line = cli.fails("scheduler", "--check")
    assert "aucun battement du planificateur" in line


def test_db_upgrade_waits_then_says_the_database_is_unreachable(cli):
    url = "postgresql+psycopg://relance:motdepasse@127.0.0.1:9/relance"
    proc = subprocess.run([sys.executable, "-m", "worker.entrypoints.cli", "db", "upgrade", "--wait", "1"],
                          cwd=cli.cwd, env={**cli.env, "RELANCE_DATABASE_URL": url}, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert "injoignable après 1 s" in line and "relance:***@127.0.0.1:9" in line and "motdepasse" not in line
