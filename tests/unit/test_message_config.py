"""What config/territory.yaml says for the messages (issue 10): the appointment (access, length, what
to bring, who the person meets) and the information notice's data controllers (`privacy`)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from worker.adapters.config_files import load_config
from worker.domain.policy import DEFAULT_BRING, DEFAULT_MEET, ConfigError

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"


@pytest.fixture
def cfg_dir(tmp_path) -> Path:
    shutil.copy(CONFIG / "paths.yaml", tmp_path / "paths.yaml")
    shutil.copy(CONFIG / "territory.yaml", tmp_path / "territory.yaml")
    return tmp_path


def edit(cfg_dir: Path, change) -> None:
    f = cfg_dir / "territory.yaml"
    data = yaml.safe_load(f.read_text(encoding="utf-8"))
    change(data)
    f.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def fails(cfg_dir: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(cfg_dir)
    assert info.value.file == str(cfg_dir / "territory.yaml")
    return info.value


def test_the_real_territory_says_where_how_long_with_whom_and_who_controls_the_data():
    territory = load_config(CONFIG).territory
    for code, org in territory.organisations.items():
        c = org.convocation
        assert c.access and 15 <= c.duration_minutes <= 240 and c.bring, code
        assert org.meet
        name, controller = territory.controller(code)
        assert controller.dpo_email and controller.dpo_address and controller.notice_url.startswith("https://")
        expected = {"cd": territory.department.name, "ft": "France Travail",
                    "ml": "Mission locale du Pays de Redon", "msa": "MSA Portes de Bretagne"}[org.kind]
        assert name == expected, code
        assert "rsa" not in org.booking_url.lower()
    # the co-diagnostic on the CD path: a Département referent and a France Travail adviser together
    assert "France Travail" in territory.organisations["CDAS-REDON"].meet
    assert "ensemble" in territory.organisations["CDAS-REDON"].meet
    assert territory.controller(None)[0] == territory.department.name  # the sanction letters


def test_defaults_when_the_territory_says_nothing(cfg_dir):
    def strip(d):
        for org in d["organisations"].values():
            for key in ("access", "duration_minutes", "bring", "meet"):
                org["convocation"].pop(key, None)
    edit(cfg_dir, strip)
    territory = load_config(cfg_dir).territory
    org = territory.organisations["FT-REDON"]
    assert org.convocation.access is None and org.convocation.duration_minutes == 60
    assert org.convocation.bring == DEFAULT_BRING and org.meet == DEFAULT_MEET["ft"]
    assert territory.organisations["CDAS-REDON"].meet == DEFAULT_MEET["cd"]


def test_an_organisation_may_name_its_controller(cfg_dir):
    edit(cfg_dir, lambda d: d["organisations"]["MSA-PORTES-BRETAGNE"].update(controller="departement"))
    territory = load_config(cfg_dir).territory
    assert territory.controller("MSA-PORTES-BRETAGNE")[0] == territory.department.name


BROKEN = [
    ("duration too short", lambda d: d["organisations"]["CDAS-REDON"]["convocation"].update(duration_minutes=5),
     "organisations.CDAS-REDON.convocation.duration_minutes", ["15 à 240"]),
    ("blank access", lambda d: d["organisations"]["FT-REDON"]["convocation"].update(access="  "),
     "organisations.FT-REDON.convocation.access", ["vide"]),
    ("blank item to bring", lambda d: d["organisations"]["FT-REDON"]["convocation"].update(bring=["CV", ""]),
     "organisations.FT-REDON.convocation.bring", ["vide"]),
    ("booking link naming the RSA",
     lambda d: d["organisations"]["ML-REDON"].update(booking_url="https://rdv.example.org/rsa/ml"),
     "organisations.ML-REDON.booking_url", ["RSA", "SMS"]),
    ("unknown controller", lambda d: d["organisations"]["ML-REDON"].update(controller="ml-inconnue"),
     "organisations", ["ML-REDON", "ml-inconnue", "privacy.controllers"]),
    ("no controller for a kind", lambda d: d["privacy"]["controllers"].pop("france_travail"),
     "organisations", ["FT-REDON", "france_travail"]),
    ("missing privacy block", lambda d: d.pop("privacy"), "privacy", []),
    ("no Département controller", lambda d: d["privacy"].update(department="conseil"),
     "privacy", ["conseil"]),
    ("a controller without a name", lambda d: d["privacy"]["controllers"]["msa"].pop("name"),
     "privacy", ["controllers.msa.name"]),
    ("bad DPO e-mail", lambda d: d["privacy"]["controllers"]["departement"].update(dpo_email="dpo"),
     "privacy.controllers.departement.dpo_email", ["e-mail"]),
    ("notice not at an https address",
     lambda d: d["privacy"]["controllers"]["departement"].update(notice_url="http://example.org/x"),
     "privacy.controllers.departement.notice_url", ["https://"]),
    ("no DPO address", lambda d: d["privacy"]["controllers"]["msa"].update(dpo_address=[]),
     "privacy.controllers.msa.dpo_address", ["adresse"]),
]


@pytest.mark.parametrize("what,change,key,words", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_message_config_names_the_key(cfg_dir, what, change, key, words):
    edit(cfg_dir, change)
    err = fails(cfg_dir)
    assert err.key == key, (err.key, err.problem)
    for w in words:
        assert w in err.problem, err.problem
