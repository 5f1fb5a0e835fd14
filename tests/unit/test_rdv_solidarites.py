"""RDV-Solidarités (issue 16) without a database: the webhook's signature and payload
(worker/adapters/rdv_solidarites.py), the booking links of config/territory.yaml, the setting of the
webhook secrets, and the links in the rendered invitations."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from worker.adapters import rdv_solidarites as rdvs
from worker.adapters.config_files import load_config
from worker.adapters.rendering import qr_png
from worker.domain.policy import ConfigError
from worker.services.rdv_solidarites import name_key
from worker.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
PARIS = ZoneInfo("Europe/Paris")
UTC = dt.timezone.utc

# The documentation's sample (rdvs-tech-doc, api-interconnexions-sortantes/format-des-donnees.md), with the
# motif category newer versions add (MotifBlueprint / MotifCategoryBlueprint).
DOC_SAMPLE = {
    "data": {
        "id": 1, "address": "",
        "agents": [{"id": 1, "email": "martine@demo.rdv-solidarites.fr", "first_name": "Martine",
                    "last_name": "VALIDAY"}],
        "duration_in_min": 30,
        "motif": {"id": 1, "location_type": "phone", "name": "Être rappelé par la PMI",
                  "motif_category": {"id": 2, "name": "RSA orientation", "short_name": "rsa_orientation"}},
        "organisation": {"id": 1, "departement": "75", "name": "MDS Paris Nord"},
        "starts_at": "2020-08-07 10:00:00 +0200",
        "status": "noshow",
        "users": [{"id": 1, "address": None, "birth_date": "1975-06-20",
                   "email": "patricia_duroy@demo.rdv-solidarites.fr", "first_name": "Patricia",
                   "last_name": "DUROY", "phone_number": "01 23 45 67 89", "responsible": None}],
        "uuid": "966f9fb3-3d9d-4548-b1b8-feaf08548d9e",
    },
    "meta": {"model": "Rdv", "event": "updated", "timestamp": "2020-08-04 10:46:03 +0200"},
}


def _body(doc: dict) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


# --- the signature -------------------------------------------------------------------------------------


def test_the_signature_is_the_hex_hmac_sha256_of_the_raw_body():
    body = _body(DOC_SAMPLE)
    expected = hmac.new(b"secret", body, hashlib.sha256).hexdigest()  # generation-de-signature.md, in Python
    assert rdvs.sign("secret", body) == expected
    assert rdvs.verify(["secret"], body, expected)
    assert rdvs.verify(["old-one", "secret"], body, expected.upper())  # hex in either case; any secret
    assert not rdvs.verify(["secret"], body + b" ", expected)
    assert not rdvs.verify(["secret"], body, None) and not rdvs.verify(["secret"], body, "")
    assert not rdvs.verify([], body, expected)
    assert not rdvs.verify(["secret"], body, "é" * 64)  # not even ASCII: refused, no error


# --- the payload ---------------------------------------------------------------------------------------


def test_the_documented_sample_the_old_single_status_form():
    d = rdvs.parse(_body(DOC_SAMPLE), PARIS)
    assert (d.model, d.event, d.rdv_id, d.status, d.form) == ("Rdv", "updated", 1, "noshow", "users")
    assert d.starts_at == dt.datetime(2020, 8, 7, 8, 0, tzinfo=UTC)
    assert d.timestamp == dt.datetime(2020, 8, 4, 8, 46, 3, tzinfo=UTC)
    assert d.motif_category == "rsa_orientation" and d.organisation_id == 1
    (p,) = d.participants
    assert (p.key, p.user_id, p.status, p.last_name, p.birth_date) == ("u1", 1, "noshow", "DUROY",
                                                                       dt.date(1975, 6, 20))
    # what is kept of an unrecognised person: never the phone, e-mail, address, nor the agents
    state = json.dumps(d.state(p))
    assert "DUROY" in state and "01 23 45 67 89" not in state and "patricia_duroy" not in state
    assert "VALIDAY" not in state


def test_participations_carry_their_own_status_and_rails_iso_dates():
    doc = json.loads(json.dumps(DOC_SAMPLE))
    doc["data"].update(status="unknown", collectif=True, starts_at="2024-06-12T14:30:00.000+02:00")
    doc["data"]["participations"] = [
        {"id": 11, "status": "seen", "user": {"id": 1, "last_name": "DUROY", "affiliation_number": " 0001001 "}},
        {"id": 12, "status": "excused", "user": {"id": 2, "last_name": "MARTIN"}},
        {"id": 13, "status": "unknown", "user": {}},  # a user without id: the participation's id
    ]
    doc["meta"]["timestamp"] = "2024-06-12T16:02:11.123Z"
    d = rdvs.parse(_body(doc), PARIS)
    assert d.form == "participations" and d.collective
    assert [(p.key, p.status) for p in d.participants] == [("u1", "seen"), ("u2", "excused"), ("p13", "unknown")]
    assert d.participants[0].affiliation_number == "0001001"
    assert d.starts_at == dt.datetime(2024, 6, 12, 12, 30, tzinfo=UTC)
    assert d.timestamp == dt.datetime(2024, 6, 12, 16, 2, 11, 123000, tzinfo=UTC)


@pytest.mark.parametrize("value,expected", [
    ("2024-06-12 14:30:00 +0200", dt.datetime(2024, 6, 12, 12, 30, tzinfo=UTC)),
    ("2024-06-12T14:30:00+02:00", dt.datetime(2024, 6, 12, 12, 30, tzinfo=UTC)),
    ("2024-06-12T12:30:00Z", dt.datetime(2024, 6, 12, 12, 30, tzinfo=UTC)),
    ("2024-12-12 14:30", dt.datetime(2024, 12, 12, 13, 30, tzinfo=UTC)),  # no offset: Paris time
])
def test_dates_in_both_forms(value, expected):
    assert rdvs.parse_datetime(value, PARIS, "x") == expected


@pytest.mark.parametrize("change,words", [
    (lambda d: d["data"].update(status="lost"), "data.status"),
    (lambda d: d["data"].update(id="abc"), "data.id"),
    (lambda d: d["data"].pop("id"), "data.id"),
    (lambda d: d["data"].update(id=2 ** 63), "hors bornes"),
    (lambda d: d["data"].update(starts_at="tomorrow"), "data.starts_at"),
    (lambda d: d["meta"].update(event="moved"), "meta"),
    (lambda d: d["data"].update(users={"id": 1}), "data.users"),
    (lambda d: d["data"]["users"].append(dict(d["data"]["users"][0])), "deux fois"),
    (lambda d: d["data"]["users"][0].pop("id"), "ni usager"),
])
def test_what_is_not_a_notification_is_refused_without_quoting_it(change, words):
    doc = json.loads(json.dumps(DOC_SAMPLE))
    change(doc)
    with pytest.raises(rdvs.PayloadError) as info:
        rdvs.parse(_body(doc), PARIS)
    assert words in str(info.value)
    assert "DUROY" not in str(info.value)


def test_other_models_and_garbage():
    plage = {"data": {"id": 568, "title": "test vt"}, "meta": {"model": "PlageOuverture", "event": "created",
                                                              "timestamp": "2020-07-17 10:55:43 +0200"}}
    d = rdvs.parse(_body(plage), PARIS)
    assert d.model == "PlageOuverture" and d.rdv_id is None and d.participants == ()
    for body in (b"", b"not json", b"[]", b'{"data": 1, "meta": {}}', "é".encode("latin-1")):
        with pytest.raises(rdvs.PayloadError):
            rdvs.parse(body, PARIS)


def test_names_compare_without_accents_case_hyphens_or_spaces():
    assert name_key("Kerbrat-Le Goff") == name_key("KERBRAT LE GOFF") == name_key("kerbrat le-goff")
    assert name_key("Hervé") == name_key("HERVE") and name_key("L'Hôtellier") == name_key("LHOTELLIER")
    assert name_key("Riou") != name_key("Riou-Bodin")


# --- the booking links (config/territory.yaml) -------------------------------------------------------------


@pytest.fixture
def cfg_dir(tmp_path) -> Path:
    shutil.copy(ROOT / "config" / "paths.yaml", tmp_path / "paths.yaml")
    shutil.copy(ROOT / "config" / "territory.yaml", tmp_path / "territory.yaml")
    return tmp_path


def _edit(cfg_dir: Path, change) -> None:
    f = cfg_dir / "territory.yaml"
    data = yaml.safe_load(f.read_text(encoding="utf-8"))
    change(data)
    f.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def test_the_territory_gives_each_cd_organisation_its_rdv_solidarites_link():
    territory = load_config(ROOT / "config").territory
    link = territory.booking("CDAS-REDON", "cd")
    assert link.category == "rsa_orientation" and "organisation_ids[]=412" in link.url
    assert link.short == "https://rdv-solidarites.example.org/org/412"
    assert link.display == "rdv-solidarites.example.org/org/412"
    assert "rsa" not in link.short.lower()
    # an organisation without an RDV-Solidarités link: its booking_url everywhere
    ft = territory.booking("FT-REDON", "ft")
    assert ft.url == ft.short == territory.organisations["FT-REDON"].booking_url and ft.category is None
    assert set(territory.rdv_solidarites.path_categories) == {"cd", "ft", "ft_unregistered", "ml"}


def _org(d):
    return d["organisations"]["CDAS-REDON"]["rdv_solidarites"]


BROKEN = [
    ("a link naming the RSA without a short one",
     lambda d: _org(d)["booking"]["rsa_orientation"].pop("short"), ["RSA", "short"]),
    ("a short link naming the RSA",
     lambda d: _org(d)["booking"]["rsa_orientation"].update(short="https://rdv.example.org/rsa"), ["RSA", "SMS"]),
    ("a link too long to type",
     lambda d: _org(d)["booking"]["rsa_orientation"].update(short="https://rdv.example.org/" + "x" * 60),
     ["trop long"]),
    ("not https", lambda d: _org(d)["booking"]["rsa_orientation"].update(short="http://rdv.example.org/a"),
     ["https://"]),
    ("another placeholder",
     lambda d: _org(d)["booking"]["rsa_orientation"].update(short="https://rdv.example.org/{departement}"),
     ["{organisation_id}"]),
    ("a placeholder without the id", lambda d: _org(d).pop("organisation_id"), ["organisation_id"]),
    ("an unknown category",
     lambda d: _org(d)["booking"].update(pmi={"url": "https://rdv.example.org/pmi"}), ["pmi", "motif_categories"]),
    ("a path's category not an RSA one",
     lambda d: d["rdv_solidarites"]["path_categories"].update(cd="pmi"), ["pmi"]),
]


@pytest.mark.parametrize("what,change,words", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_booking_link_is_refused_naming_it(cfg_dir, what, change, words):
    _edit(cfg_dir, change)
    with pytest.raises(ConfigError) as info:
        load_config(cfg_dir)
    for w in words:
        assert w in str(info.value), str(info.value)


# --- the invitations carry the link ---------------------------------------------------------------------


def test_the_invitations_carry_the_short_link_and_the_letter_its_qr_code():
    from tests.template_samples import sample_context
    from worker.adapters.rendering import TemplateRenderer

    renderer = TemplateRenderer(ROOT / "templates")
    ctx = sample_context("invitation_1", kind="cd")
    ctx["booking"] = {"url": "https://rdv-solidarites.example.org/prendre_rdv?motif_category_short_name="
                             "rsa_orientation&organisation_ids[]=412",
                      "short": "https://rdv-solidarites.example.org/org/412",
                      "display": "rdv-solidarites.example.org/org/412", "category": "rsa_orientation"}
    ctx["org"] = dict(ctx["org"], booking_url=ctx["booking"]["short"])
    letter = renderer.render("invitation_1", "letter", ctx)
    assert "en ligne sur rdv-solidarites.example.org/org/412 ou au" in letter.text
    assert f'src="{qr_png(ctx["booking"]["url"])}"' in letter.html  # the QR code opens the category's page
    assert qr_png(ctx["booking"]["url"]).startswith("data:image/png;base64,")
    sms = renderer.render("invitation_1", "sms", ctx).text
    assert "https://rdv-solidarites.example.org/org/412" in sms and "rsa" not in sms.lower()
    email = renderer.render("invitation_1", "email", ctx)
    assert "https://rdv-solidarites.example.org/org/412" in email.text
    assert 'href="https://rdv-solidarites.example.org/prendre_rdv?' in email.html


# --- the webhook secrets --------------------------------------------------------------------------------


def test_the_webhook_secrets_setting():
    s = Settings(rdv_solidarites_secrets="CDAS-REDON=aaaaaaaaaaaaaaaa1, CDAS-VALLONS=bbbbbbbbbbbbbbbb2,"
                                         "CDAS-REDON=cccccccccccccccc3")
    assert s.rdv_solidarites_secret_list("CDAS-REDON") == ["aaaaaaaaaaaaaaaa1", "cccccccccccccccc3"]
    assert s.rdv_solidarites_secret_list("FT-REDON") == []
    assert Settings().rdv_solidarites_secret_list("CDAS-REDON") == []
    for bad, words in (("CDAS-REDON=court", "trop court"), ("sans-egal", "ORG=secret")):
        with pytest.raises(SettingsError) as info:
            load_settings(rdv_solidarites_secrets=bad)
        assert "RELANCE_RDV_SOLIDARITES_SECRETS" in str(info.value) and words in str(info.value)
        assert "court'" not in str(info.value) and "reçu" not in str(info.value)  # never the value


def test_the_letters_qr_code_is_the_link_s_symbol_at_print_resolution():
    """The PNG of the letters' QR code (issue 15: a raster, embedded once per print batch) is exactly
    segno's symbol for the link, whole pixels per module, at least 300 dpi at its printed size."""
    import base64
    import io

    import segno
    from PIL import Image

    from worker.adapters.rendering import QR_DPI, QR_SIZE_MM

    url = "https://rdv-solidarites.example.org/prendre_rdv?motif_category_short_name=rsa_orientation"
    uri = qr_png(url)
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("L")
    matrix = segno.make(url, error="m", micro=False).matrix
    modules = len(matrix)
    assert image.width == image.height and image.width % modules == 0
    scale = image.width // modules
    assert image.width / (QR_SIZE_MM / 25.4) >= QR_DPI
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            pixels = {image.getpixel((x * scale + dx, y * scale + dy)) for dx in range(scale) for dy in range(scale)}
            assert pixels == ({0} if dark else {255}), (x, y)
