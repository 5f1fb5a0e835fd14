"""RDV-Solidarités' webhooks (issue 16) against the real API process: ``relance api`` started as a
subprocess (uvicorn, the real clock), on SQLite and PostgreSQL.

The payloads follow RDV-Solidarités' documented shape (rdv-solidarites/rdvs-tech-doc
api-interconnexions-sortantes/format-des-donnees.md; betagouv/rdv-service-public app/blueprints,
app/models/concerns/webhook_deliverable.rb, app/jobs/webhook_job.rb): ``{"data": {...}, "meta":
{"model": "Rdv", "event", "timestamp"}}``, signed with ``X-Lapin-Signature`` (hex HMAC-SHA256 of the
raw body). Both forms: the old one (``users`` and the appointment's ``status``) and ``participations``
(each with its own status: collective appointments). Each test checks the person's timeline and the
agenda through the services, on the database the API process writes.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import json
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import FLUX_COLUMNS, make_nir
from tests.infra import env_without, free_port, spawn, wait_for
from worker.adapters.store.models import AuditEntry, InboundEvent, Person, RdvsParticipation
from worker.adapters.store.session import session_scope

UTC = dt.timezone.utc
ROOT = Path(__file__).resolve().parents[2]
SECRET = "rdvs-test-secret-0123456789abcdef"
ORG = "CDAS-REDON"
RSA = {"id": 1, "name": "Orientation RSA", "motif_category": {"id": 7, "name": "RSA orientation",
                                                              "short_name": "rsa_orientation"}}
NOT_RSA = {"id": 2, "name": "Consultation PMI", "motif_category": {"id": 9, "name": "PMI", "short_name": "pmi"}}
KEYS = {"RELANCE_NIR_HASH_KEY": "tests-only-nir-hash-key-0123456789abcdef",
        "RELANCE_AUDIT_KEY": "tests-only-audit-chain-key-0123456789abcdef"}

# (external id, last name, birth date): the flux's people, CD path at CDAS-REDON
PEOPLE = [
    ("CAF35-0700001", "Morvan", "1985-02-11"),  # the old single-status form
    ("CAF35-0700002", "Le Gall", "1990-07-01"),  # collective: by affiliation number
    ("CAF35-0700003", "Kerbrat-Le Goff", "1979-12-24"),  # collective: by last name and birth date only
    ("CAF35-0700004", "Jaouen", "1992-03-15"),  # out of order
    ("CAF35-0700005", "Riou", "1988-05-05"),  # linked by an agent
    ("CAF35-0700006", "Tanguy", "1970-01-01"),  # two people of the same name and birth date...
    ("CAF35-0700007", "Tanguy", "1970-01-01"),  # ...: ambiguous
    ("CAF35-0700008", "Prigent", "1983-09-09"),  # signatures, sizes, other categories
]


class Api:
    """``relance api`` in its own process; ``app`` the same settings in the test process."""

    def __init__(self, url: str, app, log: Path):
        self.url, self.app, self.log = url, app, log
        self.rdv_ids = iter(range(880001, 890000))

    def post(self, body: bytes, *, secret: str | None = SECRET, signature: str | None = None, org: str = ORG,
             headers: dict | None = None) -> tuple[int, dict]:
        head = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        if signature is None and secret is not None:
            signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if signature is not None:
            head["X-Lapin-Signature"] = signature
        request = urllib.request.Request(f"{self.url}/webhooks/rdv-solidarites/{org}", data=body, headers=head,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=20) as answer:
                return answer.status, json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def events(self, external_id: str) -> list[InboundEvent]:
        with session_scope(self.app.db_url) as s:
            person = s.execute(select(Person).where(Person.external_id == external_id)).scalar_one()
            rows = s.execute(select(InboundEvent).where(InboundEvent.person_id == person.id)
                             .order_by(InboundEvent.id)).scalars().all()
            s.expunge_all()
            return list(rows)

    def timeline(self, external_id: str) -> list[tuple[str, str, str]]:
        from worker.services import timeline

        return [(i["type"], i["status"], i["source"]) for i in timeline.timeline(self.app, external_id)
                if i["kind"] == "event"]

    def case(self, external_id: str):
        from worker.adapters.store.models import Case

        with session_scope(self.app.db_url) as s:
            case = s.execute(select(Case).join(Person).where(Person.external_id == external_id)
                             .order_by(Case.id.desc()).limit(1)).scalar_one()
            s.expunge(case)
            return case

    def agenda(self) -> list:
        from worker.services.agenda import agenda

        return agenda(self.app, dt.datetime.now(UTC), ORG)


def _flux(path: Path, today: dt.date) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=FLUX_COLUMNS)
        out.writeheader()
        for i, (ext, last, born) in enumerate(PEOPLE):
            out.writerow({"external_id": ext, "nir": make_nir(700 + i), "last_name": last, "first_name": f"Alix{i}",
                          "birth_date": born, "sex": "F", "address_line1": f"{i + 1} rue des Tests",
                          "address_line2": "", "postcode": "35600", "city": "REDON", "phone": "",
                          "email": "", "droit_opened_on": (today - dt.timedelta(days=3)).isoformat(),
                          "orientation": "cd", "ft_registered": "false", "organisation": ORG,
                          "droits_devoirs": "true"})
    return path


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def api(request, tmp_path_factory):
    from worker.adapters.store import session as db_session
    from worker.bootstrap import build_app, set_app
    from worker.entrypoints import jobs
    from worker.entrypoints.celery_app import configure
    from worker.services import ingest
    from worker.settings import Settings

    tmp = tmp_path_factory.mktemp(f"rdvs-{request.param}")
    pg, dbname = None, None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'relance.db'}"
    else:
        pg = request.getfixturevalue("pg_server")
        pg.start()
        url = pg.create_database()
        dbname = url.rsplit("/", 1)[1]
    port = free_port()
    env_settings = {"RELANCE_DATABASE_URL": url, "RELANCE_DATA_DIR": str(tmp / "var"),
                    "RELANCE_BROKER_URL": "memory://", "RELANCE_RDV_SOLIDARITES_SECRETS": f"{ORG}={SECRET}",
                    "RELANCE_RDV_SOLIDARITES_MAX_BODY_BYTES": "200000", "RELANCE_API_MAX_BODY_BYTES": "4096",
                    **KEYS}
    settings = Settings(**{k.removeprefix("RELANCE_").lower(): v for k, v in env_settings.items()})
    app = build_app(settings)
    configure(settings)
    db_session.upgrade(url)
    set_app(app)
    now = dt.datetime.now(UTC)
    ingest.ingest_file(app, _flux(tmp / "flux.csv", app.calendar.local_date(now)), now)
    jobs.cycle(app, now)  # the cases open at invitation_1, waiting for a booking
    env = env_without(("RELANCE_", "CELERY_"))
    env.update(env_settings, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    log = tmp / "api.log"
    proc = spawn([sys.executable, "-m", "worker.entrypoints.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
                 log_path=log, cwd=tmp, env=env, death_signal=signal.SIGKILL)

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        if not wait_for(healthy, timeout=60):
            raise RuntimeError(f"relance api did not start: {log.read_text(errors='replace')[-2000:]}")
        yield Api(f"http://127.0.0.1:{port}", app, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except Exception:  # noqa: BLE001
            proc.kill()
        set_app(None)
        db_session.get_engine(url).dispose()
        db_session.dispose_all()
        if pg is not None and pg.running:
            pg.drop_database(dbname)


def _when(days: float) -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(days=days)


def _stamp(moment: dt.datetime, style: str = "iso") -> str:
    """meta.timestamp / starts_at as RDV-Solidarités writes them: Rails' ISO 8601 with milliseconds,
    or the documentation sample's "2020-08-07 10:00:00 +0200"."""
    local = moment.astimezone(dt.timezone(dt.timedelta(hours=2)))
    if style == "doc":
        return local.strftime("%Y-%m-%d %H:%M:%S %z")
    return local.isoformat(timespec="milliseconds")


def _user(uid: int, ext: str | None, last: str, born: str, **extra) -> dict:
    return {"id": uid, "first_name": "Prénom", "last_name": last, "birth_name": None, "birth_date": born,
            "affiliation_number": ext, "caisse_affiliation": "caf", "email": "usager@example.org",
            "phone_number": "06 00 00 00 00", "address": "1 rue X 35600 Redon", "notes": None, **extra}


def _rdv(rdv_id: int, *, starts_at: dt.datetime, status: str = "unknown", users=(), participations=None,
         motif=RSA, event: str = "created", timestamp: dt.datetime | None = None, style: str = "iso",
         collective: bool = False) -> bytes:
    data = {"id": rdv_id, "uuid": f"uuid-{rdv_id}", "address": "", "status": status,
            "starts_at": _stamp(starts_at, style), "ends_at": _stamp(starts_at + dt.timedelta(hours=1), style),
            "duration_in_min": 60, "collectif": collective, "context": None, "cancelled_at": None,
            "motif": motif, "organisation": {"id": 412, "departement": "35", "name": "CDAS du Pays de Redon"},
            "lieu": {"id": 3, "name": "CDAS de Redon", "address": "12 rue des Douves 35600 Redon"},
            "agents": [{"id": 1, "email": "agent@example.org", "first_name": "Martine", "last_name": "Validay"}],
            "users": list(users)}
    if participations is not None:
        data["participations"] = participations
    meta = {"model": "Rdv", "event": event, "timestamp": _stamp(timestamp or _when(0), style), "webhook_reason": None}
    return json.dumps({"data": data, "meta": meta}, ensure_ascii=False).encode("utf-8")


def _audits(api: Api, rdv_id: int) -> list[dict]:
    with session_scope(api.app.db_url) as s:
        return list(s.execute(select(AuditEntry.data).where(AuditEntry.kind == "rdvs_webhook",
                                                            AuditEntry.entity_id == rdv_id)).scalars())


def test_old_single_status_form_booking_replay_absence_and_an_older_update(api):
    ext, last, born = PEOPLE[0]
    rdv = next(api.rdv_ids)
    at = _when(5)
    created = _rdv(rdv, starts_at=at, users=[_user(101, ext, last, born)], timestamp=_when(-0.01), style="doc")
    code, body = api.post(created)
    assert code == 200 and body["status"] == "applied", body
    assert api.timeline(ext) == [("rdv_booked", "applied", "rdv-solidarites")]
    case = api.case(ext)
    assert case.phase == "appointment" and case.appointment_at == at
    # the same delivery again (RDV-Solidarités retries): nothing changes
    assert api.post(created) == (200, {"status": "duplicate", "note": "notification déjà reçue : sans effet",
                                       "participants": []})
    assert len(api.events(ext)) == 1
    # moved, then marked absent (noshow): a move, then a confirmed absence
    moved = _rdv(rdv, starts_at=at + dt.timedelta(hours=3), users=[_user(101, ext, last, born)], event="updated",
                 timestamp=_when(-0.005), style="doc")
    assert api.post(moved)[1]["status"] == "applied"
    noshow = _rdv(rdv, starts_at=at + dt.timedelta(hours=3), status="noshow", users=[_user(101, ext, last, born)],
                  event="updated", timestamp=_when(0))
    assert api.post(noshow)[1]["status"] == "applied"
    # an update older than the last one applied (a late retry of the creation's update): ignored
    late = _rdv(rdv, starts_at=at, users=[_user(101, ext, last, born)], event="updated", timestamp=_when(-0.008))
    assert api.post(late)[1]["status"] == "older"
    assert api.timeline(ext) == [("rdv_booked", "applied", "rdv-solidarites"),
                                 ("rdv_booked", "applied", "rdv-solidarites"),
                                 ("rdv_missed", "applied", "rdv-solidarites")]
    events = api.events(ext)
    assert events[1].payload["appointment_at"] == str(at + dt.timedelta(hours=3))  # as `relance event` stores it
    assert all(e.payload["rdv_solidarites"] == {"rdv_id": rdv, "participant": "u101"} for e in events)
    assert api.case(ext).step == "invitation_2"  # the booked appointment was missed: the reminder follows
    # every delivery is in the audit log, without personal data
    outcomes = [a["outcome"] for a in _audits(api, rdv)]
    assert outcomes == ["applied", "duplicate", "applied", "applied", "older"]
    text = json.dumps(_audits(api, rdv))
    assert last not in text and ext not in text and born not in text
    assert last not in api.log.read_text(errors="replace") and ext not in api.log.read_text(errors="replace")


def test_collective_appointment_with_participations(api):
    (a_ext, a_last, a_born), (b_ext, _b_last, b_born) = PEOPLE[1], PEOPLE[2]
    rdv = next(api.rdv_ids)
    at = _when(7)

    def parts(a: str, b: str, c: str) -> list[dict]:
        return [{"id": 9001, "status": a, "user": _user(201, a_ext, a_last, a_born)},
                # no affiliation number, a last name written otherwise: recognised by name and birth date
                {"id": 9002, "status": b, "user": _user(202, None, "KERBRAT LE GOFF", b_born)},
                {"id": 9003, "status": c, "user": _user(203, "0999999", "Inconnu", "2001-01-01")}]

    users = [p["user"] for p in parts("unknown", "unknown", "unknown")]
    code, body = api.post(_rdv(rdv, starts_at=at, users=users, participations=parts("unknown", "unknown", "unknown"),
                               collective=True, timestamp=_when(-0.01)))
    assert code == 200 and body["status"] == "pending", body
    outcome = {p["participant"]: p["outcome"] for p in body["participants"]}
    assert outcome == {"u201": "applied", "u202": "applied", "u203": "pending"}
    assert api.timeline(a_ext) == api.timeline(b_ext) == [("rdv_booked", "applied", "rdv-solidarites")]
    waiting = [i for i in api.agenda() if i.section == "rdvs"]
    assert any(f"n° {rdv}" in i.todo for i in waiting)
    item = next(i for i in waiting if f"n° {rdv}" in i.todo)
    assert item.match_id and "Inconnu" not in item.todo and "0999999" not in item.todo  # no personal data
    # each participation its own status: seen, excused (an excuse: never a failure), unknown
    code, body = api.post(_rdv(rdv, starts_at=at, users=users, participations=parts("seen", "excused", "unknown"),
                               collective=True, event="updated", timestamp=_when(0)))
    assert code == 200
    assert api.timeline(a_ext)[-1] == ("rdv_attended", "applied", "rdv-solidarites")
    assert api.case(a_ext).outcome == "attended"
    assert api.timeline(b_ext)[-1] == ("rdv_cancelled", "applied", "rdv-solidarites")
    cancelled = api.events(b_ext)[-1]
    assert cancelled.payload["excused"] is True and cancelled.payload["cancelled_by"] == "person"
    case = api.case(b_ext)
    assert case.status == "active" and case.step == "invitation_1" and case.phase == "waiting"  # no failure
    from worker.services import timeline

    said = [i["said"] for i in timeline.timeline(api.app, b_ext) if i["kind"] == "event"]
    assert "pas un manquement" in said[-1]
    # the unknown participant still waits, with what RDV-Solidarités said (until linked or discarded)
    with session_scope(api.app.db_url) as s:
        row = s.execute(select(RdvsParticipation).where(RdvsParticipation.rdv_id == rdv,
                                                        RdvsParticipation.participant == "u203")).scalar_one()
        assert row.match == "pending" and row.payload["data"]["participant"]["user"]["last_name"] == "Inconnu"
        assert "phone_number" not in row.payload["data"]["participant"]["user"]


def test_out_of_order_updates_and_a_person_linked_by_an_agent(api):
    ext, last, born = PEOPLE[3]
    rdv = next(api.rdv_ids)
    at = _when(2)
    # the update (noshow) arrives before the creation: booked then missed, once; the creation is older
    noshow = _rdv(rdv, starts_at=at, status="noshow", users=[_user(301, ext, last, born)], event="updated",
                  timestamp=_when(0))
    created = _rdv(rdv, starts_at=at, users=[_user(301, ext, last, born)], timestamp=_when(-0.02))
    assert api.post(noshow)[1]["status"] == "applied"
    assert api.post(created)[1]["status"] == "older"
    assert api.timeline(ext) == [("rdv_booked", "applied", "rdv-solidarites"),
                                 ("rdv_missed", "applied", "rdv-solidarites")]

    # someone RDV-Solidarités knows by another number and birth date: an agent links them
    l_ext, l_last, l_born = PEOPLE[4]
    rdv2 = next(api.rdv_ids)
    stranger = _user(302, "12345", "Riou-Bodin", "1988-05-06")
    code, body = api.post(_rdv(rdv2, starts_at=_when(4), users=[stranger], timestamp=_when(-0.01)))
    assert body["status"] == "pending" and api.timeline(l_ext) == []
    item = next(i for i in api.agenda() if i.section == "rdvs" and f"n° {rdv2}" in i.todo)
    from worker.services import rdv_matches

    linked = rdv_matches.link(api.app, item.match_id, l_ext, dt.datetime.now(UTC), "cli")
    assert linked.events == ["rdv_booked"] and linked.case_reference
    assert api.timeline(l_ext) == [("rdv_booked", "applied", "rdv-solidarites")]
    assert not any(i.match_id == item.match_id for i in api.agenda())
    with session_scope(api.app.db_url) as s:
        row = s.get(RdvsParticipation, item.match_id)
        assert row.match == "linked" and row.payload is None  # what was kept of the person is erased
    # the next notification about that RDV-Solidarités user is recognised by the agent's link
    code, body = api.post(_rdv(rdv2, starts_at=_when(4), status="revoked", users=[stranger], event="updated",
                               timestamp=_when(0)))
    assert body["status"] == "applied"
    assert api.timeline(l_ext)[-1] == ("rdv_cancelled", "applied", "rdv-solidarites")
    assert api.events(l_ext)[-1].payload["cancelled_by"] == "service"


def test_ambiguous_person_waits_and_can_be_discarded(api):
    ext1, last, born = PEOPLE[5]
    rdv = next(api.rdv_ids)
    code, body = api.post(_rdv(rdv, starts_at=_when(3), users=[_user(401, None, last.upper(), born)]))
    assert body["status"] == "pending"
    assert "plusieurs personnes" in body["participants"][0]["note"]
    assert api.timeline(ext1) == api.timeline(PEOPLE[6][0]) == []
    item = next(i for i in api.agenda() if i.section == "rdvs" and f"n° {rdv}" in i.todo)
    from worker.services import rdv_matches

    rdv_matches.discard(api.app, item.match_id, dt.datetime.now(UTC), "cli")
    assert not any(i.match_id == item.match_id for i in api.agenda())
    # later notifications of a discarded appointment change nothing
    code, body = api.post(_rdv(rdv, starts_at=_when(3), status="seen", users=[_user(401, None, last, born)],
                               event="updated", timestamp=_when(0.001)))
    assert code == 200 and body["status"] == "ignored"
    assert api.timeline(ext1) == []


def test_signatures_size_categories_and_deletion(api):
    ext, last, born = PEOPLE[7]
    rdv = next(api.rdv_ids)
    created = _rdv(rdv, starts_at=_when(6), users=[_user(501, ext, last, born)], timestamp=_when(-0.01))
    # unsigned, wrongly signed, signed with another secret, for an organisation without a secret
    assert api.post(created, secret=None)[0] == 401
    assert api.post(created, signature="0" * 64)[0] == 401
    assert api.post(created, secret="another-secret-0123456789")[0] == 401
    assert api.post(created, org="FT-REDON")[0] == 404
    assert api.timeline(ext) == [] and _audits(api, rdv) == []
    # the body is checked as received: a signature of the same JSON written otherwise does not match
    reformatted = json.dumps(json.loads(created), indent=2).encode()
    assert api.post(reformatted, signature=hmac.new(SECRET.encode(), created, hashlib.sha256).hexdigest())[0] == 401
    # too large (its own cap, larger than the API's 4096 bytes): 413 before anything is read
    many = [_user(600 + i, None, f"Nom{i}", "1990-01-01", notes="x" * 400) for i in range(500)]
    assert api.post(_rdv(rdv, starts_at=_when(6), users=many))[0] == 413
    # larger than the API's cap, within the webhook's: accepted (a collective appointment)
    some = [_user(501, ext, last, born)] + [_user(700 + i, None, f"Nom{i}", "1991-01-01") for i in range(20)]
    code, body = api.post(_rdv(rdv, starts_at=_when(6), users=some, collective=True, timestamp=_when(-0.009)))
    assert code == 200 and body["status"] == "pending"  # the 20 strangers wait for an agent
    assert api.timeline(ext) == [("rdv_booked", "applied", "rdv-solidarites")]
    # another motif category (not RSA), another model: acknowledged, nothing changes
    other = _rdv(next(api.rdv_ids), starts_at=_when(6), users=[_user(501, ext, last, born)], motif=NOT_RSA)
    assert api.post(other)[1]["status"] == "ignored"
    plage = json.dumps({"data": {"id": 5, "title": "Permanence"}, "meta": {
        "model": "PlageOuverture", "event": "created", "timestamp": _stamp(_when(0))}}).encode()
    assert api.post(plage)[1]["status"] == "ignored"
    # a signed body that is not a notification: 422, nothing changes
    assert api.post(b'{"data": {"id": "x"}, "meta": {"model": "Rdv", "event": "created"}}')[0] == 422
    # the appointment deleted: cancelled (by the service)
    gone = _rdv(rdv, starts_at=_when(6), users=some, event="destroyed", timestamp=_when(0))
    assert api.post(gone)[1]["status"] in ("applied", "pending")
    assert api.timeline(ext)[-1] == ("rdv_cancelled", "applied", "rdv-solidarites")
    assert api.case(ext).phase == "waiting"


def test_a_person_unknown_at_first_is_recognised_once_the_flux_brings_them(api, tmp_path):
    """The person books before the CAF's flux reaches Relance: the appointment waits, keeps what
    RDV-Solidarités says, and the next notification after the flux is applied in full (seen)."""
    from worker.services import ingest

    ext, last, born = "CAF35-0700099", "Le Floch", "1995-10-10"
    rdv = next(api.rdv_ids)
    at = _when(-0.1)
    first = _rdv(rdv, starts_at=at, status="seen", users=[_user(901, ext, last, born)], event="updated",
                 timestamp=_when(-0.01))
    assert api.post(first)[1]["status"] == "pending"
    flux = tmp_path / "late.csv"
    with open(flux, "w", encoding="utf-8", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=FLUX_COLUMNS)
        out.writeheader()
        out.writerow({"external_id": ext, "nir": make_nir(799), "last_name": last, "first_name": "Nolwenn",
                      "birth_date": born, "sex": "F", "address_line1": "9 rue des Tests", "address_line2": "",
                      "postcode": "35600", "city": "REDON", "phone": "", "email": "",
                      "droit_opened_on": (dt.date.today() - dt.timedelta(days=2)).isoformat(), "orientation": "cd",
                      "ft_registered": "false", "organisation": ORG, "droits_devoirs": "true"})
    ingest.ingest_file(api.app, flux, dt.datetime.now(UTC))
    again = _rdv(rdv, starts_at=at, status="seen", users=[_user(901, ext, last, born)], event="updated",
                 timestamp=_when(0))
    code, body = api.post(again)
    assert body["status"] == "applied", body
    assert api.timeline(ext) == [("rdv_attended", "applied", "rdv-solidarites")]
    assert not any(f"n° {rdv}" in i.todo for i in api.agenda() if i.section == "rdvs")
