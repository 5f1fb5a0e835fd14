"""The ``relance`` command line, as agents and ops run it: a real subprocess,
started from a directory that is not the repository (it must find config/ and
templates/ by itself), on the embedded default (SQLite under RELANCE_DATA_DIR,
eager tasks, local channels)."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"


class Cli:
    def __init__(self, workdir: Path):
        self.cwd = workdir / "elsewhere"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RELANCE_")}
        self.env["RELANCE_DATA_DIR"] = str(self.data_dir)
        # The commands refuse the development keys (real data): the tests bring their own.
        self.env["RELANCE_NIR_HASH_KEY"] = "tests-only-nir-hash-key-0123456789abcdef"
        self.env["RELANCE_AUDIT_KEY"] = "tests-only-audit-chain-key-0123456789abcdef"
        self.env.pop("PYTHONPATH", None)

    @property
    def db(self) -> Path:
        return self.data_dir / "relance.db"

    @property
    def outbox(self) -> Path:
        return self.data_dir / "outbox"

    def run(self, *args: str, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "worker.entrypoints.cli", *args], cwd=self.cwd, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=120)
        assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
        if ok:
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    def fails(self, *args: str, env: dict | None = None) -> str:
        """Runs a command that must fail: non-zero, one line on stderr, no traceback; returns that line."""
        proc = self.run(*args, env=env, ok=False)
        assert proc.returncode != 0, (args, proc.stdout)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("Erreur"), lines[0]
        return lines[0]

    def json(self, *args: str):
        return json.loads(self.run(*args).stdout)

    def fails_all(self, *commands) -> list[str]:
        """:meth:`fails` for several commands that change nothing, run side by side (faster)."""
        procs = [subprocess.Popen([sys.executable, "-m", "worker.entrypoints.cli", *args], cwd=self.cwd, env=self.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in commands]
        lines = []
        for args, proc in zip(commands, procs):
            out, err = proc.communicate(timeout=120)
            assert proc.returncode != 0, (args, out)
            assert "Traceback" not in out + err, err
            got = err.strip().splitlines()
            assert len(got) == 1 and got[0].startswith("Erreur"), (args, err)
            lines.append(got[0])
        return lines


@pytest.fixture
def cli(tmp_path) -> Cli:
    assert not str(tmp_path).startswith(str(REPO))
    return Cli(tmp_path)


def _sql(cli: Cli, query: str, *params):
    con = sqlite3.connect(cli.db)
    try:
        return con.execute(query, params).fetchall()
    finally:
        con.close()


def _one_invited(cli: Cli, flux_writer, eid: str, email: str) -> None:
    """One person with an e-mail, ingested and invited (letter, SMS, e-mail) on 3 June 2024."""
    path = flux_writer([{"external_id": eid, "droit_opened_on": "2024-05-27", "email": email}])
    cli.run("db", "upgrade")
    cli.run("ingest", str(path), "--now", "2024-06-03T08:00")
    cli.run("tick", "--now", "2024-06-03T10:00")


def _sql_write(cli: Cli, query: str, *params) -> None:
    con = sqlite3.connect(cli.db)
    try:
        con.execute(query, params)
        con.commit()
    finally:
        con.close()


def test_db_upgrade_then_ingest_json(cli):
    assert cli.run("db", "upgrade").stdout.strip() == "Base à jour."
    assert cli.db.exists()
    assert ("alembic_version",) in _sql(cli, "SELECT name FROM sqlite_master WHERE type='table'")
    proc = cli.run("ingest", str(SAMPLES / "flux_2024-05_with_errors.csv"), "--json", ok=False)
    assert proc.returncode == 3  # done, with rejected rows (README, exit codes)
    out = json.loads(proc.stdout)
    assert set(out) == {"accepted", "updated", "unchanged", "rejected", "warnings"}
    assert (out["accepted"], out["updated"], out["unchanged"]) == (22, 0, 0)
    assert [(r["line"], r["external_id"]) for r in out["rejected"]] == [
        (12, None), (13, "CAF35-0003101"), (14, "CAF35-0003102"), (15, "CAF35-0003103"), (16, "CAF35-0003104"),
        (17, "CAF35-0003105"), (19, "CAF35-0003107"), (20, "CAF35-0003000"), (21, "CAF35-0003109"),
        (22, "CAF35-0003110")]
    assert all(set(r) == {"line", "external_id", "field", "reason"} for r in out["rejected"])
    assert all(r["field"] and r["reason"] for r in out["rejected"])
    assert [(w["line"], w["external_id"], w["field"]) for w in out["warnings"]] == [
        (18, "CAF35-0003106", "phone"), (23, "CAF35-0003111", "email")]
    proc = cli.run("ingest", str(SAMPLES / "flux_2024-05_with_errors.csv"), "--json", ok=False)
    assert proc.returncode == 3
    again = json.loads(proc.stdout)
    assert (again["accepted"], again["updated"], again["unchanged"]) == (0, 0, 22)
    # The human-readable form.
    text = cli.run("ingest", str(SAMPLES / "flux_2024-06.jsonl")).stdout
    assert text.startswith("flux_2024-06.jsonl : 20 nouvelles personnes")


def test_ingest_errors_are_one_line(cli):
    line = cli.fails("ingest", "missing.csv")
    assert "missing.csv" in line
    cli.run("db", "upgrade")  # commands never create the schema themselves
    pdf = cli.cwd / "flux.csv"
    pdf.write_bytes(b"%PDF-1.4\n1 0 obj\n<< >>\nendobj\n")
    assert "PDF" in cli.fails("ingest", str(pdf))
    cli.fails("ingest")  # usage error: one line too


def test_tick_event_timeline_are_dated_by_simulated_time(cli, flux_writer):
    eid = "CAF35-0006001"
    path = flux_writer([{"external_id": eid, "droit_opened_on": "2024-05-27"}])
    cli.run("db", "upgrade")
    cli.run("ingest", str(path), "--now", "2024-06-03T08:00")
    out = cli.run("tick", "--now", "2024-06-03T10:00").stdout
    assert out.startswith("Cycle terminé : 1 dossiers traités, 3 messages")
    # Letters found their templates from another working directory.
    letters = list((cli.outbox / "letters" / "2024-06-03").glob("*_invitation_1_simple.html"))
    assert len(letters) == 1 and "rendez-vous" in letters[0].read_text(encoding="utf-8")
    assert len((cli.outbox / "sms.jsonl").read_text(encoding="utf-8").splitlines()) == 1

    out = cli.run("event", "rdv_booked", eid, "--appointment-at", "2024-06-12T14:00", "--at", "2024-06-05T09:30",
                  "--key", "rdv-1")
    assert out.stdout.startswith("Événement rdv_booked appliqué")
    again = cli.json("event", "rdv_booked", eid, "--appointment-at", "2024-06-12T14:00", "--at",
                     "2024-06-05T09:31", "--key", "rdv-1", "--json")
    assert again["status"] == "duplicate"

    items = cli.json("timeline", eid, "--json")
    assert isinstance(items, list) and items
    for i in items:
        assert {"at", "kind"} <= set(i)
        if i["kind"] == "message":
            assert {"id", "step", "channel", "status"} <= set(i)
        elif i["kind"] == "event":
            assert "type" in i
        elif i["kind"] == "step":
            assert "step" in i
    ats = [i["at"] for i in items]
    assert ats == sorted(ats)
    ingest_t, tick_t, event_t = "2024-06-03T06:00:00+00:00", "2024-06-03T08:00:00+00:00", "2024-06-05T07:30:00+00:00"
    assert [(i["step"], i["at"]) for i in items if i["kind"] == "step"] == [("invitation_1", tick_t)]
    sent = [(i["step"], i["channel"], i["at"]) for i in items if i["kind"] == "message" and i["status"] == "sent"]
    assert sorted(sent) == [("invitation_1", c, tick_t) for c in ("email", "letter", "sms")]
    assert [(i["type"], i["at"], i["id"]) for i in items if i["kind"] == "event"] == [
        ("rdv_booked", event_t, again["event_id"])]
    # Everything recorded by those commands is dated by --now / --at, nothing by the real clock.
    stamps = set()
    for table, cols in (("audit_log", ("at",)), ("messages", ("created_at", "status_at", "sent_at")),
                        ("events", ("at", "recorded_at")), ("cases", ("created_at", "updated_at")),
                        ("persons", ("created_at", "updated_at")), ("appointments", ("created_at",))):
        for col in cols:
            stamps |= {r[0] for r in _sql(cli, f"SELECT DISTINCT {col} FROM {table} WHERE {col} IS NOT NULL")}
    # (the duplicate at 07:31 recorded nothing)
    assert {s[:19] for s in stamps} == {t[:19].replace("T", " ") for t in (ingest_t, tick_t, event_t)}

    # The text form of the timeline.
    text = cli.run("timeline", eid).stdout
    assert "invitation_1" in text and "rdv_booked" in text
    # for agents: French, and the territory's time (10:00 in Paris, 08:00 UTC)
    assert "03/06/2024 10:00  message  invitation_1         courrier envoyé" in text
    assert "05/06/2024 09:30  événement rdv_booked          appliqué" in text
    assert "dossier  ouvert : parcours cd, étape invitation_1" in text
    assert "rendez-vous pris par la personne pour le 12/06/2024 14:00" in text

    # Agents' mistakes: one clear line each.
    lines = cli.fails_all(("event", "legitimate_reason", eid), ("event", "foo", eid),
                          ("event", "npai", "CAF35-9999999"),
                          ("event", "review_decision", eid, "--decision", "peut-etre"),
                          ("event", "npai", eid, "--at", "demain"), ("timeline", "CAF35-9999999"))
    for line, expected in zip(lines, ("--category", "foo", "CAF35-9999999", "--decision", "--at", "CAF35-9999999")):
        assert expected in line, line
    assert _sql(cli, "SELECT count(*) FROM events") == [(1,)]


def test_tick_through_the_inbox(cli):
    cli.run("db", "upgrade")  # commands never create the schema themselves
    inbox = cli.data_dir / "inbox"
    inbox.mkdir(parents=True)
    shutil.copy(SAMPLES / "flux_2024-06.jsonl", inbox / "flux_2024-06.jsonl")
    out = cli.run("tick", "--now", "2024-07-01T10:00").stdout
    assert out.startswith("Cycle terminé : 19 dossiers traités")
    done = sorted(p.name for p in (inbox / "done").iterdir())
    assert done == ["20240701T080000_flux_2024-06.jsonl", "20240701T080000_flux_2024-06.jsonl.report.json"]
    assert {r[0][:16] for r in [*_sql(cli, "SELECT DISTINCT at FROM audit_log")]} == {"2024-07-01 08:00"}


def test_tick_now_is_refused_with_a_real_provider(cli):
    cli.run("db", "upgrade")
    twilio = {"RELANCE_SMS_BACKEND": "twilio", "RELANCE_TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
              "RELANCE_TWILIO_AUTH_TOKEN": "not-a-secret", "RELANCE_TWILIO_SENDER_ID": "CD35RSA",
              "RELANCE_PUBLIC_BASE_URL": "https://relance.example.org"}
    line = cli.fails("tick", "--now", "2024-06-03T10:00", env=twilio)
    assert "--now" in line
    assert not (cli.outbox / "sms.jsonl").exists()
    cli.fails("ingest", str(SAMPLES / "flux_2024-03.csv"), "--now", "2024-04-02T10:00", env=twilio)
    assert _sql(cli, "SELECT count(*) FROM persons") == [(0,)]


def test_bad_config_names_the_file_and_the_key(cli, tmp_path):
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config)
    paths = config / "paths.yaml"
    paths.write_text(paths.read_text(encoding="utf-8").replace("respond_days: 15", "respond_days: quinze", 1),
                     encoding="utf-8")
    line = cli.fails("tick", "--now", "2024-06-03T10:00", env={"RELANCE_CONFIG_DIR": str(config)})
    assert str(paths) in line and "respond_days" in line and "paths.cd.steps[0]" in line
    # A file that is not even YAML.
    paths.write_text("paths: [cd\n  routing: {\n", encoding="utf-8")
    line = cli.fails("db", "upgrade", env={"RELANCE_CONFIG_DIR": str(config)})
    assert str(paths) in line
    # A missing file.
    (config / "territory.yaml").unlink()
    shutil.copy(REPO / "config" / "paths.yaml", paths)
    line = cli.fails("db", "upgrade", env={"RELANCE_CONFIG_DIR": str(config)})
    assert "territory.yaml" in line


def test_audit_verify_detects_tampering(cli, flux_writer):
    path = flux_writer([{"external_id": "CAF35-0006101"}, {"external_id": "CAF35-0006102"}])
    cli.run("db", "upgrade")  # commands never create the schema themselves
    cli.run("ingest", str(path), "--now", "2024-06-03T08:00")
    cli.run("tick", "--now", "2024-06-03T10:00")
    out = cli.run("audit", "verify").stdout
    n = _sql(cli, "SELECT count(*) FROM audit_log")[0][0]
    assert out.strip() == f"Journal d'audit intact : {n} entrées vérifiées."
    # Change one data field of one entry, as someone with the database file could.
    [(target, data)] = _sql(cli, "SELECT id, data FROM audit_log WHERE kind = 'message' ORDER BY id LIMIT 1")
    data = json.loads(data)
    data["channel"] = "email" if data["channel"] != "email" else "sms"
    con = sqlite3.connect(cli.db)
    with con:
        # The database refuses it (migration 0005)...
        with pytest.raises(sqlite3.IntegrityError, match="ajout seul"):
            con.execute("UPDATE audit_log SET data = ? WHERE id = ?", (json.dumps(data), target))
    with con:
        # ...but whoever holds the file can drop the triggers first.
        con.execute("DROP TRIGGER audit_log_append_only")
        con.execute("UPDATE audit_log SET data = ? WHERE id = ?", (json.dumps(data), target))
    con.close()
    line = cli.fails("audit", "verify")
    assert f"n° {target}" in line


def test_email_bounces_by_hand(cli, flux_writer):
    from email.message import EmailMessage

    from tests.fakes.dsn import postfix_dsn

    _one_invited(cli, flux_writer, "CAF35-0006101", "lea.morel@example.net")
    [(message_id, case_id, status)] = _sql(cli, "SELECT id, case_id, status FROM messages WHERE channel = 'email'")
    assert status == "sent"
    original = EmailMessage()
    original["From"] = "relance@example.org"
    original["To"] = "lea.morel@example.net"
    original["Subject"] = "Votre RSA"
    original["Message-ID"] = "<local@example.org>"
    original["X-Relance-Reference"] = f"RL-{case_id:06d}-{message_id:07d}"
    # the token relance puts in each e-mail: without it a notice is not applied (issue 11, forged bounces)
    from worker.adapters.dsn import bounce_token
    from worker.settings import Settings

    key = Settings(_env_file=None, nir_hash_key=cli.env["RELANCE_NIR_HASH_KEY"]).bounce_token_key
    original["X-Relance-Token"] = bounce_token(key, original["X-Relance-Reference"])
    original.set_content("Bonjour")
    notice = cli.cwd / "bounce.eml"
    notice.write_bytes(postfix_dsn(original.as_bytes(), "lea.morel@example.net"))
    junk = cli.cwd / "junk.eml"  # a report without its delivery-status part: unusable
    junk.write_bytes(b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; boundary=b\r\n\r\n"
                     b"--b\r\nContent-Type: text/plain\r\n\r\nnot a report\r\n--b--\r\n")
    reply = cli.cwd / "reply.eml"  # not a report at all: a person's answer, forwarded to agents
    reply.write_bytes(b"Subject: hello\r\n\r\nnot a report\r\n")

    result = cli.run("email", "bounces", str(notice), str(junk), str(reply), ok=False)
    out = result.stdout
    assert result.returncode == 3  # a file rejected: the distinct exit code of rejected input
    assert out.splitlines()[0] == ("1 non-remises enregistrées, 0 déjà connues, 1 réponses de bénéficiaires "
                                   "transmises aux agents, 0 sans effet, 1 fichiers rejetés.")
    assert "rejeté : junk.eml : avis sans partie delivery-status" in out
    assert _sql(cli, "SELECT status FROM messages WHERE id = ?", message_id) == [("failed",)]
    assert _sql(cli, "SELECT email_status FROM persons") == [("failed",)]
    assert "lea.morel" not in out
    assert cli.json("email", "bounces", str(notice), "--json") == {
        "applied": 0, "duplicates": 1, "replies": 0, "ignored": [], "rejected": []}
    assert notice.exists()  # a file given by hand stays where it is

    # a bounce for an address the person no longer has marks the message, not the new address
    _sql_write(cli, "UPDATE persons SET email = 'lea.morel@nouveau.example', email_status = 'ok'")
    _sql_write(cli, "UPDATE messages SET status = 'sent' WHERE id = ?", message_id)
    assert cli.json("email", "bounces", str(notice), "--json")["applied"] == 1
    assert _sql(cli, "SELECT status FROM messages WHERE id = ?", message_id) == [("failed",)]
    assert _sql(cli, "SELECT email_status FROM persons") == [("ok",)]

    assert "RELANCE_BOUNCE_MAILDIR" in cli.fails("email", "bounces")
    assert "nowhere.eml" in cli.fails("email", "bounces", str(cli.cwd / "nowhere.eml"))


def test_messages_list_and_retry(cli, flux_writer):
    _one_invited(cli, flux_writer, "CAF35-0006201", "noe.caron@example.net")
    rows = cli.json("messages", "list", "--status", "sent", "--json")
    assert sorted(r["channel"] for r in rows) == ["email", "letter", "sms"]
    assert all(r["reference"].startswith("RL-") and r["step"] == "invitation_1" for r in rows)
    text = cli.run("messages", "list").stdout
    [(phone,)] = _sql(cli, "SELECT phone FROM persons")
    assert "invitation_1" in text and "noe.caron" not in text and phone and phone not in text
    assert cli.run("messages", "list", "--status", "technical-failure").stdout.strip() == "Aucun message."
    sms = next(r for r in rows if r["channel"] == "sms")
    line = cli.fails("messages", "retry", str(sms["id"]), "--reason", "vérifié")
    assert "statut sent" in line and "technical-failure" in line
    assert "canal inconnu" in cli.fails("messages", "list", "--channel", "fax")
    assert _sql(cli, "SELECT count(*) FROM messages WHERE status = 'pending'") == [(0,)]


def test_orientation_report(cli, flux_writer):
    path = flux_writer([{"external_id": "CAF35-0006301", "orientation": ""},
                        {"external_id": "CAF35-0006302", "orientation": "cd"}])
    cli.run("db", "upgrade")
    assert cli.run("orientation").stdout.strip() == "Aucun dossier en attente d'orientation."
    cli.run("ingest", str(path), "--now", "2024-06-03T08:00")
    out = cli.run("tick", "--now", "2024-07-08T10:00").stdout
    assert "1 dossiers non orientés signalés" in out
    [row] = cli.json("orientation", "--json", "--now", "2024-07-08T10:00")
    assert (row["external_id"], row["deadline"], row["days_left"], row["flagged"]) == (
        "CAF35-0006301", "2024-07-15", 7, True)
    text = cli.run("orientation", "--now", "2024-07-20T10:00").stdout
    assert "échéance le 15/07/2024 (dépassée de 5 j)  [signalé]" in text and "CAF35-0006302" not in text
    assert "Testeur" not in text
    assert "--now" in cli.fails("orientation", "--now", "demain")


def test_agenda(cli, flux_writer):
    path = flux_writer([{"external_id": "CAF35-0006401", "orientation": "ft", "ft_registered": "false",
                         "organisation": "FT-REDON"}])
    cli.run("db", "upgrade")
    assert cli.run("agenda").stdout.strip() == "Rien n'attend un agent."
    cli.run("ingest", str(path), "--now", "2024-06-03T08:00")
    cli.run("tick", "--now", "2024-06-03T10:00")
    out = cli.run("tick", "--now", "2024-06-18T10:00").stdout  # 15 days: the phone follow-up
    assert "1 bulletins d'agents produits." in out  # a working day, after 08:00: the digest is written
    digest = (cli.outbox / "digests" / "2024-06-18" / "FT-REDON.txt").read_text(encoding="utf-8")
    assert "CAF35-0006401" in digest and "Tâches (1)" in digest and "Testeur" not in digest
    again = cli.run("digests", "send", "--now", "2024-06-18T11:00").stdout
    assert again.strip().startswith("FT-REDON : déjà fait")
    text = cli.run("agenda", "--now", "2024-06-18T10:00").stdout
    assert text.splitlines()[:2] == ["FT-REDON", "  Tâches :"]
    assert "CAF35-0006401  phone_followup  depuis le 18/06/2024" in text
    assert "→ appel de suivi (phone_followup), puis relance event phone_followup_done CAF35-0006401" in text
    assert "Testeur" not in text
    [item] = cli.json("agenda", "--json", "--org", "FT-REDON", "--now", "2024-06-18T10:00")
    assert (item["section"], item["since"]) == ("task", "2024-06-18")
    assert cli.json("agenda", "--json", "--org", "CDAS-REDON") == []
    assert "CDAS-NULLEPART" in cli.fails("agenda", "--org", "CDAS-NULLEPART")
    assert "RELANCE_DIGEST_TIME" in cli.fails("agenda", env={"RELANCE_DIGEST_TIME": "8h"})
    # simulated time never sends real e-mails
    assert "canaux locaux" in cli.fails("digests", "send", "--now", "2024-06-18T11:00",
                                        env={"RELANCE_EMAIL_BACKEND": "smtp"})
