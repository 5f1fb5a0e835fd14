"""The agents' workspace in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium), ``relance api`` served by uvicorn, a local OpenID Connect
provider (oidc-provider-mock) standing for ProConnect, the e-mail sign-in link read from the local SMTP
server (tests/fakes/smtp_server.py), and axe-core (npm, tests/web/node_modules) run on every page:
no serious or critical violation.

Screenshots of each page are written to ``docs/workspace/`` when ``RELANCE_SCREENSHOTS=1`` (else
under the test's temporary folder).

Without Chromium, chromedriver or axe-core this module is skipped with the reason; under CI=true it
fails (.ci/run installs them).
"""
from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import _missing
from tests.fakes.smtp_server import FakeSmtpServer
from tests.web import scenario as sc

ROOT = Path(__file__).resolve().parents[2]
AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
DOCS = ROOT / "docs" / "workspace"
UTC = dt.timezone.utc


def _find(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser_bins():
    chromium = _find("chromium", "chromium-browser")
    driver = _find("chromedriver")
    if not chromium or not driver:
        _missing("Chromium and chromedriver (Debian packages chromium, chromium-driver)")
    if not AXE.exists():
        _missing("axe-core (npm install --prefix tests/web)")
    try:
        import selenium  # noqa: F401
        import oidc_provider_mock  # noqa: F401
    except ImportError:
        _missing("selenium and oidc-provider-mock (pip install -e '.[test]')")
    return chromium, driver


class Clock:
    def __init__(self, now: dt.datetime):
        self.now = now.astimezone(UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Site:
    """uvicorn serving create_app() in a thread of this process, on 127.0.0.1."""

    def __init__(self, app, clock):
        import uvicorn

        from worker.entrypoints.api import create_app

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app.settings.public_base_url = self.url
        self.server = uvicorn.Server(uvicorn.Config(create_app(app, clock=clock), host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


# The browser tests run on SQLite (the pages' queries run on both backends in
# tests/integration/test_workspace.py).
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def world(relance_app, tmp_path, browser_bins):
    from oidc_provider_mock import User, run_server_in_thread
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    app = relance_app
    sc.build(app, tmp_path)
    clock = Clock(sc.NOW)
    users = [User(sub="proconnect-ft-0001", claims={"email": sc.FT_AGENT[0]})]
    with FakeSmtpServer() as smtp, run_server_in_thread(user_claims=users) as oidc:
        s = app.settings
        s.email_backend, s.smtp_host, s.smtp_port, s.smtp_security = "smtp", smtp.host, smtp.port, "none"
        s.oidc_issuer, s.oidc_client_id = f"http://localhost:{oidc.server_port}", "relance-espace"
        s.oidc_client_secret, s.oidc_scopes = "secret-de-test", "openid email"
        s.web_cookie_secure = False  # plain http on 127.0.0.1 here; the Secure flag is checked over https in
        # tests/integration/test_workspace.py
        options = webdriver.ChromeOptions()
        options.binary_location = browser_bins[0]
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1280,900", "--lang=fr-FR", "--force-device-scale-factor=1"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(browser_bins[1]), options=options)
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(60)
        shots = DOCS if os.environ.get("RELANCE_SCREENSHOTS") == "1" else tmp_path / "shots"
        shots.mkdir(parents=True, exist_ok=True)
        try:
            with Site(app, clock) as site:
                yield World(app, site, driver, smtp, clock, shots)
        finally:
            driver.quit()


class World:
    def __init__(self, app, site, driver, smtp, clock, shots):
        self.app, self.site, self.driver, self.smtp, self.clock, self.shots = app, site, driver, smtp, clock, shots
        self.checked: list[str] = []

    # --- navigation -------------------------------------------------------------------------------
    def go(self, path: str):
        self.driver.get(self.site.url + path)

    def by(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self) -> str:
        return self.by("body").text

    def h1(self) -> str:
        return self.by("h1").text

    def click_text(self, text: str):
        """Follow a link or press a button, and wait for the next page."""
        from selenium.webdriver.common.by import By

        self.navigate(self.driver.find_element(
            By.XPATH, f"//*[self::a or self::button][contains(normalize-space(.), \"{text}\")]").click)

    def click(self, css: str):
        """Click what leads to another page, and wait for it."""
        self.navigate(self.by(css).click)

    def navigate(self, action):
        from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        old = self.by("html")
        action()

        def gone(_driver) -> bool:
            try:
                old.is_enabled()
            except StaleElementReferenceException:
                return True
            except WebDriverException as exc:  # Chromium's way of saying "stale" during a navigation
                if "does not belong to the document" in str(exc) or "No node with given id" in str(exc):
                    return True
                raise
            return False

        WebDriverWait(self.driver, 30).until(gone)
        WebDriverWait(self.driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")

    def set_value(self, css: str, value: str):
        """A date field's value (the browser's date picker depends on its locale)."""
        self.driver.execute_script("arguments[0].value = arguments[1];", self.by(css), value)

    # --- checks -----------------------------------------------------------------------------------
    def axe(self, label: str) -> None:
        """axe-core on the current page (WCAG 2.0/2.1 A and AA rules): no serious or critical violation."""
        self.driver.execute_script(AXE.read_text(encoding="utf-8"))
        violations = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa',"
            " 'best-practice']}, resultTypes: ['violations']})"
            ".then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
            " nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))))"
            ".catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));")
        bad = [v for v in violations if v["impact"] in ("serious", "critical")]
        assert not bad, f"{label}: {bad}"
        self.checked.append(label)

    def shot(self, name: str) -> Path:
        height = self.driver.execute_script("return Math.max(document.body.scrollHeight, 900);")
        self.driver.set_window_size(1280, min(int(height) + 40, 6000))
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(1280, 900)
        return path

    def page(self, name: str, label: str) -> None:
        self.axe(label)
        self.shot(name)

    def mail_link(self) -> str:
        deadline = time.monotonic() + 10
        while not self.smtp.messages:
            assert time.monotonic() < deadline, "no sign-in e-mail received"
            time.sleep(0.05)
        message = self.smtp.messages.pop().message
        body = message.get_body(("plain",)).get_content()
        return re.search(r"http://127\.0\.0\.1:\d+/espace/connexion/lien\?jeton=\S+", body).group(0)

    def ask_link(self, email: str) -> str:
        self.go("/espace/connexion")
        self.by("#email").send_keys(email)
        self.click_text("Recevoir un lien de connexion")
        assert "Demande enregistrée" in self.text()
        return self.mail_link()

    def sign_out(self, provider: bool = False):
        self.click_text("Se déconnecter")
        if provider:  # the provider's own sign-out page (id_token_hint), then back here
            assert "End Session" in self.text()
            self.click_text("End session")
        assert "Vous êtes déconnecté(e)" in self.text()


def test_an_agent_signs_in_with_proconnect_and_records_a_phone_outcome_and_an_attendance(world):
    w = world
    w.go("/espace/a-traiter")
    assert w.h1() == "Connexion à l'espace agents"
    w.page("connexion", "connexion")
    w.click_text("S'identifier avec ProConnect")
    # the provider's page (oidc-provider-mock): the identity ProConnect would give
    w.by("input[name=sub]").send_keys("proconnect-ft-0001")
    w.click("form button[type=submit]")
    assert w.h1() == "À traiter", w.text()
    assert "Paul Durand" in w.text() and "Tâches" in w.text()
    w.page("a-traiter-france-travail", "à traiter (France Travail)")
    phone, attend = sc.case_reference(w.app, sc.PHONE), sc.case_reference(w.app, sc.ATTEND)
    w.click(f"a[href='/espace/dossiers/{phone}#action-phone_followup']")
    w.by("#action-phone_followup-outcome-wrong_number").click()
    w.click_text("Enregistrer l'appel")
    assert "Appel de suivi (mauvais numéro) : enregistré." in w.text()
    assert "Événement : appel de suivi fait" in w.text() and "par Paul Durand" in w.text()
    w.go(f"/espace/dossiers/{attend}")
    w.page("dossier-presence", "dossier (présence à confirmer)")
    w.by("#action-attendance-outcome-present").click()
    w.click_text("Enregistrer la présence")
    assert "Présence : enregistré." in w.text()
    from worker.services import timeline

    assert [i["type"] for i in timeline.timeline(w.app, sc.ATTEND) if i["kind"] == "event"] == ["rdv_attended"]
    assert [i["type"] for i in timeline.timeline(w.app, sc.PHONE) if i["kind"] == "event"] == [
        "sms_failed", "phone_followup_done"]
    w.sign_out(provider=True)
    w.go("/espace/a-traiter")
    assert w.h1() == "Connexion à l'espace agents"


def test_an_agent_signs_in_by_email_link_takes_a_review_decision_and_sets_a_legitimate_reason(world):
    w = world
    link = w.ask_link(sc.AGENT[0])
    w.page("connexion-lien-envoye", "connexion (lien envoyé)")
    w.driver.get(link)
    w.page("lien", "lien de connexion")
    w.click_text("Me connecter")
    assert w.h1() == "À traiter"
    w.page("a-traiter", "à traiter")
    assert "relance event" not in w.text()
    review, reason, other = (sc.case_reference(w.app, x) for x in (sc.REVIEW, sc.REASON, sc.OTHER))

    # the review decision: refused without its justification, then recorded
    w.click(f"a[href='/espace/dossiers/{review}#action-review']")
    assert w.h1().startswith(f"Dossier {review}")
    w.page("dossier", "dossier (décision d'examen)")
    w.by("#action-review-decision-proceed").click()
    w.by("#action-review-rate").send_keys("30")
    w.by("#action-review-months").send_keys("1")
    w.click_text("Enregistrer la décision")
    assert "Rien n'a été enregistré" in w.text() and "champ obligatoire" in w.text()
    w.page("dossier-erreur", "dossier (erreur de saisie)")
    w.by("#action-review-justification").send_keys("Appel et courrier sans réponse ; aucun motif légitime connu.")
    w.click_text("Enregistrer la décision")
    assert "Décision « poursuivre (préavis) » : enregistré." in w.text()
    assert "par Claire Martin" in w.text() and "aucun motif légitime connu" in w.text()

    # a legitimate reason, from "Autres actions"
    w.go(f"/espace/dossiers/{reason}")
    w.by("#titre-autres ~ details summary").click()  # the first of them: the legitimate reason
    from selenium.webdriver.support.ui import Select

    Select(w.by("#action-legitimate_reason-category")).select_by_value("hospitalisation")
    w.set_value("#action-legitimate_reason-until", "2024-09-02")
    w.click_text("Enregistrer le motif")
    assert "Motif légitime : enregistré." in w.text() and "motif : hospitalisation" in w.text()

    # the CLI timeline shows what was done in the browser
    from typer.testing import CliRunner

    from worker.entrypoints import cli

    out = CliRunner().invoke(cli.app, ["timeline", sc.REVIEW]).output
    assert "review_decision" in out and "espace agents, agent n°" in out
    out = CliRunner().invoke(cli.app, ["timeline", sc.REASON]).output
    assert "legitimate_reason" in out and "hospitalisation" in out

    # search, commission, a case of another organisation (404)
    from worker.services import timeline

    letter = next(i for i in timeline.timeline(w.app, sc.REVIEW) if i["kind"] == "message" and i["channel"] == "letter")
    w.go("/espace/recherche")
    w.by("#q").send_keys(letter["reference"])
    w.click_text("Rechercher")
    assert review in w.text()
    w.page("recherche", "recherche")
    w.go("/espace/commission")
    assert "Commission RSA — séance du 19/09/2024" in w.h1()
    w.page("commission", "commission")
    w.go("/espace/tableau-de-bord")  # the convention's indicators, for the agent's organisation
    assert w.h1() == "Tableau de bord", w.text()
    assert "Télécharger le classeur" in w.text() and "droits ouverts et activité" in w.text()
    w.page("tableau-de-bord", "tableau de bord")
    w.go(f"/espace/dossiers/{other}")
    assert w.h1() == "Page introuvable" and "Simon" not in w.text()
    w.page("introuvable", "dossier d'une autre organisation (404)")

    # a form posted without its CSRF token is refused, and nothing changes
    w.go(f"/espace/dossiers/{review}")
    w.driver.execute_script("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove());")
    w.by("#titre-autres ~ details:last-of-type summary").click()
    w.by("#action-droit_closed-confirm").click()
    w.click_text("Clore le dossier")
    assert w.h1() == "Formulaire refusé"
    w.page("formulaire-refuse", "formulaire refusé (CSRF)")
    assert "droit_closed" not in [i["type"] for i in timeline.timeline(w.app, sc.REVIEW) if i["kind"] == "event"]

    # sign-out; the link again: refused (single use); a new link after its expiry: refused
    w.go("/espace/a-traiter")
    w.sign_out()
    w.driver.get(link)
    w.click_text("Me connecter")
    assert "déjà utilisé" in w.text()
    late = w.ask_link(sc.AGENT[0])
    w.clock.now += dt.timedelta(minutes=16)
    w.driver.get(late)
    w.click_text("Me connecter")
    assert "expiré" in w.text() and w.h1() == "Connexion à l'espace agents"
    assert len(w.checked) >= 10
