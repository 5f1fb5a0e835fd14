"""The agents' workspace (worker/entrypoints/web) through FastAPI's TestClient over https://, on the
scenario of tests/web/scenario.py: sign-in by e-mail link and by OpenID Connect (oidc-provider-mock),
organisation scoping, CSRF, session cookie, idle expiry, sign-out, the forms recording the CLI's events
with the agent in the audit log, the digest's links and `relance crsa pack`.

The same flows run in a real browser in tests/web/test_workspace_browser.py.
"""
from __future__ import annotations

import datetime as dt
import re
import subprocess
import threading
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.web import scenario as sc
from worker.adapters.store.models import AuditEntry, InboundEvent, Person
from worker.adapters.store.session import session_scope
from worker.entrypoints.api import create_app
from worker.services import timeline

UTC = dt.timezone.utc
SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


class Clock:
    def __init__(self, now: dt.datetime):
        self.now = now.astimezone(UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture
def ws(relance_app, tmp_path):
    sc.build(relance_app, tmp_path)
    relance_app.settings.public_base_url = "https://relance.example.org"
    clock = Clock(sc.NOW)
    api = create_app(relance_app, clock=clock)
    return relance_app, api, clock


def client(api) -> TestClient:
    return TestClient(api, base_url="https://testserver")


def csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def ask_link(app, c: TestClient, email: str) -> str | None:
    before = set((app.settings.outbox / "connexion").glob("*.txt")) if (app.settings.outbox / "connexion").exists() \
        else set()
    page = c.get("/espace/connexion")
    r = c.post("/espace/connexion/lien", data={"csrf": csrf(page.text), "email": email})
    assert r.status_code == 200 and "Demande enregistrée" in r.text
    new = set((app.settings.outbox / "connexion").glob("*.txt")) - before if (app.settings.outbox / "connexion").exists() \
        else set()
    if not new:
        return None
    text = new.pop().read_text(encoding="utf-8")
    return re.search(r"https://\S+/espace/connexion/lien\?jeton=\S+", text).group(0)


def use_link(c: TestClient, link: str):
    path = link.split("relance.example.org", 1)[1]
    page = c.get(path)
    token = re.search(r'name="jeton" value="([^"]*)"', page.text).group(1)
    return c.post("/espace/connexion/lien/valider", data={"csrf": csrf(page.text), "jeton": token},
                  follow_redirects=False)


def signed_in(app, api, who=sc.AGENT) -> TestClient:
    c = client(api)
    r = use_link(c, ask_link(app, c, who[0]))
    assert r.status_code == 303 and r.headers["location"] == "/espace/a-traiter"
    return c


def post_form(c: TestClient, ref: str, action: str, data: dict):
    page = c.get(f"/espace/dossiers/{ref}")
    assert page.status_code == 200
    return c.post(f"/espace/dossiers/{ref}/actions/{action}", data={"csrf": csrf(page.text), **data},
                  follow_redirects=False)


def events(app, external_id: str) -> list[InboundEvent]:
    with session_scope(app.db_url) as s:
        pid = s.execute(select(Person.id).where(Person.external_id == external_id)).scalar()
        return list(s.execute(select(InboundEvent).where(InboundEvent.person_id == pid)
                              .order_by(InboundEvent.id)).scalars())


def test_pages_by_organisation_and_a_case_of_another_organisation_is_a_404(ws):
    app, api, _clock = ws
    c = client(api)
    r = c.get("/espace/a-traiter", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/espace/connexion?suite=/espace/a-traiter")
    c = signed_in(app, api)
    todo = c.get("/espace/a-traiter")
    assert todo.status_code == 200
    review, reason, referred, other = (sc.case_reference(app, x) for x in (sc.REVIEW, sc.REASON, sc.REFERRED,
                                                                           sc.OTHER))
    assert f"/espace/dossiers/{review}#action-review" in todo.text
    assert "Décisions à prendre" in todo.text and "examen avant sanction" in todo.text
    assert "relance event" not in todo.text and "sanction_review" not in todo.text
    assert other not in todo.text and sc.PHONE not in todo.text  # other organisations
    page = c.get(f"/espace/dossiers/{review}")
    assert page.status_code == 200 and "LE GALL Camille0" in page.text and 'id="action-review"' in page.text
    assert "Aperçu du courrier (PDF)" in page.text
    assert c.get(f"/espace/dossiers/{other}").status_code == 404
    assert c.get(f"/espace/dossiers/{other}").text.count("LE") < 50  # nothing of the case
    assert "Simon" not in c.get(f"/espace/dossiers/{other}").text
    assert c.get("/espace/dossiers/RL-999999").status_code == 404
    # search: name, matricule, case reference, letter reference; never another organisation's
    assert review in c.get("/espace/recherche", params={"q": "le gall"}).text
    assert review in c.get("/espace/recherche", params={"q": sc.REVIEW}).text
    letter = next(i for i in timeline.timeline(app, sc.REVIEW) if i["kind"] == "message" and i["channel"] == "letter")
    assert review in c.get("/espace/recherche", params={"q": letter["reference"]}).text
    assert "Aucun dossier" in c.get("/espace/recherche", params={"q": "Simon"}).text
    assert "Aucun dossier" in c.get("/espace/recherche", params={"q": sc.OTHER}).text
    # letter preview
    pdf = c.get(f"/espace/courriers/{letter['id']}.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF") and pdf.headers["content-type"] == "application/pdf"
    other_letter = next(i for i in timeline.timeline(app, sc.OTHER) if i["kind"] == "message"
                        and i["channel"] == "letter")
    assert c.get(f"/espace/courriers/{other_letter['id']}.pdf").status_code == 404
    # the commission: the session's agenda, the pack per case and for the session
    com = c.get("/espace/commission")
    assert com.status_code == 200 and referred in com.text and "19/09/2024" in com.text
    one = c.get(f"/espace/commission/2024-09-19/{referred}.pdf")
    assert one.status_code == 200 and one.content.startswith(b"%PDF")
    assert c.get("/espace/commission/2024-09-19.pdf").content.startswith(b"%PDF")
    assert c.get(f"/espace/commission/2024-09-19/{other}.pdf").status_code == 404
    # the department's team sees every organisation; France Travail its own
    dep = signed_in(app, api, sc.DEPARTMENT)
    assert dep.get(f"/espace/dossiers/{other}").status_code == 200
    ft = signed_in(app, api, sc.FT_AGENT)
    assert ft.get(f"/espace/dossiers/{review}").status_code == 404
    assert "appel de suivi" in ft.get("/espace/a-traiter").text


@SQLITE
def test_each_form_records_the_cli_event_with_the_agent_in_the_audit_log(ws):
    app, api, _clock = ws
    c = signed_in(app, api)
    review, reason = sc.case_reference(app, sc.REVIEW), sc.case_reference(app, sc.REASON)
    # a review decision needs its justification: refused without, nothing recorded
    r = post_form(c, review, "review", {"decision": "proceed", "rate": "30", "months": "1", "justification": ""})
    assert r.status_code == 422 and "Rien n'a été enregistré" in r.text and 'aria-invalid="true"' in r.text
    assert not [e for e in events(app, sc.REVIEW) if e.type == "review_decision"]
    r = post_form(c, review, "review", {"decision": "proceed", "rate": "40", "months": "2", "cle": "k1",
                                        "justification": "Aucun motif trouvé après appel et courrier."})
    assert r.status_code == 303 and r.headers["location"] == f"/espace/dossiers/{review}"
    page = c.get(r.headers["location"])
    assert "enregistré" in page.text and "Claire Martin" in page.text
    assert "Aucun motif trouvé après appel et courrier." in page.text
    [decision] = [e for e in events(app, sc.REVIEW) if e.type == "review_decision"]
    agent_id = decision.payload["actor"]
    assert decision.source == f"web:{agent_id}" and decision.status == "applied"
    assert decision.payload["rate"] == 40 and decision.payload["months"] == 2 and decision.payload["decision"] == "proceed"
    with session_scope(app.db_url) as s:
        audit = s.execute(select(AuditEntry).where(AuditEntry.kind == "event", AuditEntry.case_id == decision.case_id)
                          ).scalars().all()
    assert any(a.data.get("type") == "review_decision" and a.data.get("source") == f"web:{agent_id}" for a in audit)
    # the CLI timeline shows it, with the agent's number
    from typer.testing import CliRunner

    from worker.entrypoints import cli

    out = CliRunner().invoke(cli.app, ["timeline", sc.REVIEW]).output
    assert "review_decision" in out and f"agent n° {agent_id}" in out and "suspension de 40 % pendant 2 mois" in out
    # a legitimate reason
    r = post_form(c, reason, "legitimate_reason", {"category": "hospitalisation", "until": "2024-09-01"})
    assert r.status_code == 303
    [ev] = [e for e in events(app, sc.REASON) if e.type == "legitimate_reason"]
    assert ev.payload["category"] == "hospitalisation" and ev.source.startswith("web:")
    # France Travail: the phone follow-up (wrong number) and the attendance
    ft = signed_in(app, api, sc.FT_AGENT)
    phone, attend = sc.case_reference(app, sc.PHONE), sc.case_reference(app, sc.ATTEND)
    assert post_form(ft, phone, "phone_followup", {"outcome": "wrong_number"}).status_code == 303
    assert [e.type for e in events(app, sc.PHONE)] == ["sms_failed", "phone_followup_done"]
    assert events(app, sc.PHONE)[1].payload["outcome"] == "wrong_number"
    assert post_form(ft, attend, "attendance", {"outcome": "present"}).status_code == 303
    assert [e.type for e in events(app, sc.ATTEND)] == ["rdv_attended"]
    # the form is offered only where it applies, and an action that no longer applies is refused
    assert post_form(ft, attend, "attendance", {"outcome": "absent"}).status_code == 409
    # read-only ops: no form, a POST is refused
    ops = signed_in(app, api, sc.OPS)
    page = ops.get(f"/espace/dossiers/{reason}")
    assert page.status_code == 200 and 'class="action"' not in page.text
    assert post_form(ops, reason, "droit_closed", {"confirm": "oui"}).status_code == 403


@SQLITE
def test_a_form_without_its_csrf_token_is_refused(ws):
    app, api, _clock = ws
    c = signed_in(app, api)
    review = sc.case_reference(app, sc.REVIEW)
    data = {"decision": "close", "justification": "Classement."}
    assert c.post(f"/espace/dossiers/{review}/actions/review", data=data).status_code == 403
    assert c.post(f"/espace/dossiers/{review}/actions/review", data={**data, "csrf": "faux"}).status_code == 403
    assert c.post("/espace/deconnexion", data={}).status_code == 403
    assert not [e for e in events(app, sc.REVIEW) if e.type == "review_decision"]


@SQLITE
def test_an_email_link_serves_once_and_expires(ws):
    app, api, clock = ws
    c = client(api)
    link = ask_link(app, c, sc.AGENT[0].upper())  # any case
    assert use_link(c, link).status_code == 303
    again = use_link(client(api), link)
    assert again.status_code == 400 and "déjà utilisé" in again.text
    late = ask_link(app, c, sc.AGENT[0])
    clock.advance(minutes=16)
    refused = use_link(client(api), late)
    assert refused.status_code == 400 and "expiré" in refused.text
    assert ask_link(app, client(api), "inconnu@example.org") is None  # same answer, no e-mail
    forged = use_link(client(api), "https://relance.example.org/espace/connexion/lien?jeton=" + "x" * 43)
    assert forged.status_code == 400


@SQLITE
def test_session_cookie_idle_expiry_and_sign_out(ws):
    app, api, clock = ws
    c = client(api)
    r = use_link(c, ask_link(app, c, sc.AGENT[0]))
    cookie = r.headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie and "path=/espace" in cookie
    headers = c.get("/espace/a-traiter").headers
    assert "default-src 'none'" in headers["content-security-policy"] and headers["cache-control"] == "no-store"
    clock.advance(minutes=20)
    assert c.get("/espace/a-traiter").status_code == 200  # activity keeps it alive
    clock.advance(minutes=31)
    r = c.get("/espace/a-traiter", follow_redirects=False)
    assert r.status_code == 303 and "info=expire" in r.headers["location"]
    c = signed_in(app, api)
    saved = dict(c.cookies)
    page = c.get("/espace/a-traiter")
    out = c.post("/espace/deconnexion", data={"csrf": csrf(page.text)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"].endswith("/espace/connexion?info=deconnecte")
    replay = client(api)
    replay.cookies.update(saved)  # the old cookie, replayed after sign-out
    assert replay.get("/espace/a-traiter", follow_redirects=False).status_code == 303


OIDC_USERS = (("proconnect-0001", sc.AGENT[0]), ("proconnect-0002", "inconnu@example.org"))  # an agent; nobody


def _oidc_api(ws, issuer: str):
    """The workspace's API with ProConnect configured on ``issuer``."""
    app, _api, clock = ws
    app.settings.oidc_issuer, app.settings.oidc_client_id = issuer, "relance-test"
    app.settings.oidc_client_secret, app.settings.oidc_scopes = "secret", "openid email"
    return create_app(app, clock=clock)


@pytest.fixture
def oidc_provider():
    from oidc_provider_mock import User, run_server_in_thread

    users = [User(sub=sub, claims={"email": email}) for sub, email in OIDC_USERS]
    with run_server_in_thread(user_claims=users) as server:
        yield f"http://localhost:{server.server_port}"


@SQLITE
def test_sign_in_with_openid_connect(ws, oidc_provider):
    api = _oidc_api(ws, oidc_provider)
    for sub, expected in (("proconnect-0001", 303), ("proconnect-0002", 403)):
        c = client(api)
        assert "S'identifier avec ProConnect" in c.get("/espace/connexion").text
        go = c.get("/espace/connexion/proconnect", follow_redirects=False)
        assert go.status_code == 302 and go.headers["location"].startswith(oidc_provider)
        query = parse_qs(urlsplit(go.headers["location"]).query)
        assert query["redirect_uri"] == ["https://relance.example.org/espace/connexion/proconnect/retour"]
        assert "nonce" in query and "state" in query and query.get("code_challenge_method") == ["S256"]
        answer = httpx.post(go.headers["location"], data={"sub": sub}, follow_redirects=False)
        back = answer.headers["location"]
        assert back.startswith("https://relance.example.org/espace/connexion/proconnect/retour?")
        r = c.get(back.split("relance.example.org", 1)[1], follow_redirects=False)
        assert r.status_code == expected, r.text
    assert c.get("/espace/a-traiter", follow_redirects=False).status_code == 303  # the unknown one: not in


@pytest.fixture
def proconnect_like_provider(monkeypatch):
    """The OpenID Connect mock answering as ProConnect does: an id token carrying the ``sub`` alone, and
    the e-mail only from the userinfo endpoint, as a JWT signed with the provider's key
    (``Content-Type: application/jwt``). The real server runs in a thread, on loopback."""
    import json

    import flask
    import werkzeug.serving
    from authlib.oidc.core import UserInfo
    from joserfc import jwt
    from joserfc.jwk import RSAKey
    from oidc_provider_mock import User
    from oidc_provider_mock import _app as mock_app

    monkeypatch.setattr(mock_app.OpenIDCode, "generate_user_info",
                        lambda self, user, scope: UserInfo(sub=user.sub))
    provider = mock_app.app(user_claims=[User(sub=sub, claims={"email": email}) for sub, email in OIDC_USERS])
    signed = []

    @provider.after_request
    def userinfo_as_jwt(response):
        if flask.request.path.rstrip("/").endswith("/userinfo") and response.status_code == 200:
            claims = json.loads(response.get_data())
            key = RSAKey.import_key(mock_app.storage.jwk.as_dict(is_private=True))
            token = jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)
            signed.append(claims["sub"])
            response.set_data(token)
            response.headers["Content-Type"] = "application/jwt; charset=utf-8"
        return response

    server = werkzeug.serving.make_server("localhost", 0, provider, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_port}", signed
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


@SQLITE
def test_sign_in_with_proconnect_s_signed_userinfo(ws, proconnect_like_provider):
    """ProConnect puts the e-mail in the userinfo answer only, as a signed JWT: it is checked against the
    provider's keys and the agent found by it (a forged signature: the next test)."""
    issuer, signed = proconnect_like_provider
    api = _oidc_api(ws, issuer)
    for sub, expected in (("proconnect-0001", 303), ("proconnect-0002", 403)):
        c = client(api)
        go = c.get("/espace/connexion/proconnect", follow_redirects=False)
        answer = httpx.post(go.headers["location"], data={"sub": sub}, follow_redirects=False)
        r = c.get(answer.headers["location"].split("relance.example.org", 1)[1], follow_redirects=False)
        assert r.status_code == expected, r.text
        if expected == 303:
            assert c.get("/espace/a-traiter").status_code == 200
    assert signed == ["proconnect-0001", "proconnect-0002"]  # both identities came from the signed userinfo


def test_a_userinfo_jwt_signed_by_another_key_is_refused():
    """The userinfo JWT is decoded with the provider's published keys only."""
    import asyncio

    from joserfc import jwt
    from joserfc.errors import BadSignatureError
    from joserfc.jwk import RSAKey

    from worker.entrypoints.web import auth

    provider_key, forger_key = RSAKey.generate_key(2048, auto_kid=True), RSAKey.generate_key(2048)
    claims = {"sub": "s-1", "email": "x@example.org"}

    class Provider:  # what authlib's client answers, from a provider whose key is provider_key
        def __init__(self, signer):
            self.answer = jwt.encode({"alg": "RS256", "kid": provider_key.kid}, claims, signer)

        async def load_server_metadata(self):
            return {"userinfo_endpoint": "https://provider.example/userinfo"}

        async def get(self, url, token):
            return httpx.Response(200, text=self.answer, headers={"content-type": "application/jwt"},
                                  request=httpx.Request("GET", url))

        async def fetch_jwk_set(self):
            return {"keys": [provider_key.as_dict(private=False)]}

    assert asyncio.run(auth._claims(Provider(provider_key), {"userinfo": {"sub": "s-1"}}))["email"] == "x@example.org"
    with pytest.raises(BadSignatureError):
        asyncio.run(auth._claims(Provider(forger_key), {"userinfo": {"sub": "s-1"}}))


@SQLITE
def test_the_digest_links_each_case_once_to_the_workspace(ws):
    app, _api, _clock = ws
    from worker.services.agenda import agenda
    from worker.services.digests import render

    rendered = render(app, "CDAS-REDON", dt.date(2024, 8, 12), agenda(app, sc.NOW, "CDAS-REDON"))
    review = sc.case_reference(app, sc.REVIEW)
    assert f"https://relance.example.org/espace/dossiers/{review}#action-review" in rendered.text
    assert "relance event" not in rendered.text and "relance timeline" not in rendered.text
    assert "sanction_review" not in rendered.text and "examen avant sanction" in rendered.text
    assert "à traiter avant le 01/08/2024" in rendered.text
    assert f'href="https://relance.example.org/espace/dossiers/{review}#action-review"' in rendered.html
    for ref in {i.case_reference for i in agenda(app, sc.NOW, "CDAS-REDON")}:
        assert rendered.text.count(f"- {ref} ") == 1


@SQLITE
def test_crsa_pack_writes_the_session_and_each_case_as_pdf(ws, tmp_path):
    app, api, _clock = ws
    c = signed_in(app, api)
    review = sc.case_reference(app, sc.REVIEW)
    post_form(c, review, "review", {"decision": "close", "justification": "Motif trouvé par téléphone."})
    from typer.testing import CliRunner

    from worker.entrypoints import cli

    result = CliRunner().invoke(cli.app, ["crsa", "pack", "2024-09-19", "--out", str(tmp_path / "pack"),
                                          "--now", "2024-08-12T11:00"])
    assert result.exit_code == 0, result.output
    referred = sc.case_reference(app, sc.REFERRED)
    files = sorted(p.name for p in (tmp_path / "pack").iterdir())
    assert files == ["commission_2024-09-19.pdf", f"commission_2024-09-19_{referred}.pdf"]
    assert ((tmp_path / "pack" / files[0]).stat().st_mode & 0o777) == 0o600
    text = subprocess.run(["pdftotext", "-layout", str(tmp_path / "pack" / files[1]), "-"], capture_output=True,
                          text=True, check=True).stdout
    flat = "".join(text.split())
    for expected in ("ROBERT Camille4", "reçu le vendredi 26 juillet 2024", "Délai d'observations", "jusqu'au",
                     "préavis de sanction (LRAR)", "letters/pre_sanction_notice.html.j2",
                     "à Madame Camille4 ROBERT, 7 RUE DE LA GARE, 35600 REDON",  # as printed on the letter
                     "agent (ligne de commande)"):
        assert "".join(expected.split()) in flat, expected


def _rdvs_unknown(app, rdv_id: int, last_name: str) -> bytes:
    """An RDV-Solidarités notification (issue 16) whose participant nobody recognises."""
    import json

    return json.dumps({"data": {
        "id": rdv_id, "status": "unknown", "starts_at": "2024-08-20T10:00:00.000+02:00", "collectif": False,
        "motif": {"id": 1, "name": "Orientation RSA", "motif_category": {"short_name": "rsa_orientation"}},
        "organisation": {"id": 412, "name": "CDAS du Pays de Redon"}, "lieu": {"id": 1, "name": "CDAS de Redon"},
        "users": [{"id": rdv_id, "first_name": "Yann", "last_name": last_name, "birth_date": "1977-04-04",
                   "affiliation_number": "0000042", "phone_number": "06 00 00 00 00"}]},
        "meta": {"model": "Rdv", "event": "created", "timestamp": "2024-08-12T10:30:00+02:00"}}).encode()


def test_an_rdv_solidarites_appointment_to_link_or_discard(ws):
    """Issue 16: an appointment whose person nobody recognised is in "À traiter" (no name there); its page
    shows what RDV-Solidarités said; the agent links it to a person (the booking is applied, the agent in
    the audit log) or discards it; another organisation's agent gets a 404; a form without CSRF, 403."""
    from worker.services import rdv_solidarites

    app, api, clock = ws
    for rdv_id, name in ((4401, "Quéméner"), (4402, "Personne-Inconnue")):
        assert rdv_solidarites.receive(app, "CDAS-REDON", _rdvs_unknown(app, rdv_id, name), clock()).status == "pending"
    c = signed_in(app, api)
    todo = c.get("/espace/a-traiter")
    assert "Rendez-vous à rapprocher" in todo.text and "Quéméner" not in todo.text
    ids = [int(x) for x in re.findall(r'href="/espace/rendez-vous/(\d+)"', todo.text)]
    assert len(set(ids)) == 2
    first, second = sorted(set(ids))
    page = c.get(f"/espace/rendez-vous/{first}")
    assert page.status_code == 200 and "Quéméner" in page.text and "04/04/1977" in page.text
    assert "0000042" in page.text and "06 00 00 00 00" not in page.text
    other = signed_in(app, api, sc.VALLONS_AGENT)
    assert other.get(f"/espace/rendez-vous/{first}").status_code == 404
    refused = c.post(f"/espace/rendez-vous/{first}/rapprocher", data={"matricule": sc.REASON},
                     follow_redirects=False)
    assert refused.status_code == 403
    wrong = c.post(f"/espace/rendez-vous/{first}/rapprocher", data={"csrf": csrf(page.text), "matricule": "CAF35-X"},
                   follow_redirects=False)
    assert wrong.status_code == 422 and "personne inconnue" in wrong.text and 'aria-invalid="true"' in wrong.text
    done = c.post(f"/espace/rendez-vous/{first}/rapprocher", data={"csrf": csrf(page.text), "matricule": sc.REASON},
                  follow_redirects=False)
    assert done.status_code == 303
    booked = [e for e in events(app, sc.REASON) if e.source == "rdv-solidarites"]
    assert [e.type for e in booked] == ["rdv_booked"] and booked[0].payload["rdv_solidarites"]["rdv_id"] == 4401
    page2 = c.get(f"/espace/rendez-vous/{second}")
    gone = c.post(f"/espace/rendez-vous/{second}/ecarter", data={"csrf": csrf(page2.text)}, follow_redirects=False)
    assert gone.status_code == 303
    assert "Rendez-vous à rapprocher" not in c.get("/espace/a-traiter").text
    assert c.get(f"/espace/rendez-vous/{first}").status_code == 404  # done: nothing waits any more
    with session_scope(app.db_url) as s:
        decisions = s.execute(select(AuditEntry.data).where(AuditEntry.kind == "rdvs_link")).scalars().all()
    agent_id = re.search(r"web:(\d+)", decisions[0]["actor"]).group(1)
    assert {d["action"] for d in decisions} == {"linked", "discarded"}
    assert all(d["actor"] == f"web:{agent_id}" for d in decisions)
    assert "Quéméner" not in str(decisions)


@SQLITE
def test_a_letter_sent_before_an_address_change_does_not_show_the_new_address(ws):
    """The timeline tells where each letter went: after the address changed, an earlier letter is not
    shown as sent to the current address (its PDF preview shows the one it carried)."""
    app, api, clock = ws
    from worker.services import cases

    c = signed_in(app, api)
    review = sc.case_reference(app, sc.REVIEW)
    before = c.get(f"/espace/dossiers/{review}").text
    assert "modifiée depuis" not in before
    cases.apply_event(app, external_id=sc.REVIEW, type="address_updated", now=clock.now)
    after = c.get(f"/espace/dossiers/{review}").text
    assert "(adresse modifiée depuis) (voir l" in after


@SQLITE
def test_an_sms_or_e_mail_sent_before_a_change_shows_where_it_went(ws):
    """Each message records what its provider was given; after the person's number and e-mail changed,
    the case page and the commission's pack show the number and address each message went to, and
    that they changed since, not the current ones."""
    app, api, clock = ws
    from worker.adapters.store.models import Case, Message
    from worker.services import commission

    old = {}
    with session_scope(app.db_url) as s:
        for external_id in (sc.REVIEW, sc.REFERRED):
            person = s.execute(select(Person).where(Person.external_id == external_id)).scalar_one()
            sent = s.execute(select(Message).join(Case).where(Case.person_id == person.id,
                                                              Message.sent_at.is_not(None))).scalars().all()
            by_channel = {m.channel: m.recipient for m in sent}
            assert by_channel["sms"] == person.phone and by_channel["email"] == person.email
            assert by_channel["letter"].splitlines()[-1] == f"{person.postcode} REDON"
            old[external_id] = person.phone, person.email
            person.phone, person.email = "+33698765432", "nouvelle.adresse@example.org"  # as a new flux row would
    page = signed_in(app, api).get(f"/espace/dossiers/{sc.case_reference(app, sc.REVIEW)}").text
    history = page.split("Historique")[-1]
    phone, email = old[sc.REVIEW]
    assert f"à {phone} (numéro modifié depuis)" in history and f"à {email} (adresse modifiée depuis)" in history
    assert "+33698765432" not in history and "nouvelle.adresse" not in history  # nor as where a message went
    pack = commission.build_pack(app, clock.now, sc.SESSION, case_reference=sc.case_reference(app, sc.REFERRED))
    lines = [m for c in pack.cases for m in c.messages]
    phone, email = old[sc.REFERRED]
    assert any("SMS « " in m and f"à {phone} (numéro modifié depuis)" in m for m in lines)
    assert any(f"à {email} (adresse modifiée depuis)" in m for m in lines)
    assert not any("+33698765432" in m or "nouvelle.adresse" in m for m in lines)
