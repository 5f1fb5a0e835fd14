"""Policy and territory loading: the real config, and broken copies that must fail clearly."""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
import yaml

from worker.adapters.config_files import load_config
from worker.domain.policy import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"


# --- the real configuration ----------------------------------------------------------------------------


def test_real_config_loads():
    cfg = load_config(CONFIG)
    policy = cfg.policy
    assert set(policy.paths) == {"cd", "ft", "ft_unregistered", "ml"}
    assert cfg.files == {"paths": str(CONFIG / "paths.yaml"), "territory": str(CONFIG / "territory.yaml"),
                         "campaign": str(CONFIG / "campaign.yaml")}
    assert policy.delays.first_invitation_target_days == 15
    assert policy.delays.reminder_days_before == 2 and policy.delays.reminder_time == dt.time(10, 0)
    assert policy.delays.missed_grace_working_days == 1
    assert policy.reminder.step == "rdv_reminder" and policy.reminder.channels == ("sms",)
    assert "suspension" in policy.sanction_text


def test_real_paths_match_the_design():
    policy = load_config(CONFIG).policy
    ids = {pid: [s.id for s in p.steps] for pid, p in policy.paths.items()}
    assert ids["cd"] == ["invitation_1", "invitation_2", "convocation", "sanction_review", "pre_sanction_notice",
                         "observations_review",
                         "crsa_referral"]
    assert ids["ft"] == ["ft_convocation", "ft_warning", "ft_report", "sanction_review", "pre_sanction_notice",
                         "observations_review",
                         "crsa_referral"]
    assert ids["ft_unregistered"][:3] == ["invitation_1", "phone_followup", "invitation_2"]
    cd = policy.path("cd")
    assert cd.first.id == "invitation_1" and cd.step("invitation_1").respond_days == 15
    assert cd.step("convocation").min_days == 7
    assert cd.review_step().id == "sanction_review" and cd.review_step().relies_on == ("convocation",)
    assert policy.path("ft").review_step().relies_on == ("ft_convocation", "ft_warning")
    notice = cd.step("pre_sanction_notice")
    assert notice.postage == "lrar" and notice.observation_days == 10 and "letter" in notice.channels
    assert policy.path("ft_unregistered").first.channels == ("letter",)
    assert policy.path("ml").first.channels[0] == "email"
    for path in policy.paths.values():
        for step in path.steps:
            if step.kind in ("review", "notice", "referral"):
                assert step.kind != "referral" or step.next is None
            if step.kind == "review":
                # every step the review relies on sends a letter
                assert all("letter" in path.step(r).channels for r in step.relies_on)


@pytest.mark.parametrize("orientation,registered,path", [
    ("cd", False, "cd"), (None, False, "cd"), ("", True, "cd"), ("ml", False, "ml"),
    ("ft", True, "ft"), ("ft", False, "ft_unregistered"),
    ("msa", False, None),  # the MSA follows its own people: no case on the department's paths (issue 14)
])
def test_routing(orientation, registered, path):
    assert load_config(CONFIG).policy.route(orientation, registered) == path


def test_real_territory_loads():
    territory = load_config(CONFIG).territory
    assert territory.timezone == "Europe/Paris"
    assert {"CDAS-REDON", "FT-REDON", "ML-REDON"} <= set(territory.organisations)
    slots = territory.organisations["CDAS-REDON"].convocation
    assert slots.weekdays == ("mon", "tue", "thu") and dt.time(9, 30) in slots.times and slots.capacity == 2
    commission = territory.commission
    assert commission.next_session(dt.date(2024, 5, 1)) == dt.date(2024, 5, 16)
    assert commission.next_session(dt.date(2024, 5, 16)) == dt.date(2024, 6, 20)  # strictly after
    assert commission.next_session(dt.date(2030, 1, 1)) is None


def test_real_department_loads():
    territory = load_config(CONFIG).territory
    dep = territory.department
    assert dep.name and dep.observations_service.name and dep.observations_service.address
    assert dep.signature == ("Pour le Président du Conseil départemental et par délégation, "
                             f"{dep.signatory_name}, {dep.signatory_title}")
    assert dep.email.endswith("@example.org") and dep.phone.startswith("02 61 91 ")
    codes = [dep.review_organisations.default, *dep.review_organisations.by_postcode.values()]
    assert all(territory.organisations[c].kind == "cd" for c in codes)


def test_review_organisation_takes_the_longest_prefix_else_the_default(cfg_dir):
    edit(cfg_dir, "territory.yaml", lambda d: d["department"].update(review_organisations={
        "default": "CDAS-REDON", "by_postcode": {"35": "CCAS-REDON", "355": "CDAS-VALLONS", "35580": "CDAS-REDON"}}))
    dep = load_config(cfg_dir).territory.department
    assert dep.review_organisation("35580") == "CDAS-REDON"      # the 5-digit prefix beats "355" and "35"
    assert dep.review_organisation("35550") == "CDAS-VALLONS"    # "355" beats "35"
    assert dep.review_organisation("35600") == "CCAS-REDON"
    assert dep.review_organisation("56350") == "CDAS-REDON"      # no prefix: the default
    assert dep.review_organisation(None) == "CDAS-REDON"
    assert dep.review_organisation("") == "CDAS-REDON"


def test_unquoted_postcode_prefixes_are_read_as_text(cfg_dir):
    edit(cfg_dir, "territory.yaml",
         lambda d: d["department"]["review_organisations"].update(by_postcode={35580: "CDAS-VALLONS"}))
    assert load_config(cfg_dir).territory.department.review_organisation("35580") == "CDAS-VALLONS"


# --- broken copies ----------------------------------------------------------------------------------------


@pytest.fixture
def cfg_dir(tmp_path) -> Path:
    shutil.copy(CONFIG / "paths.yaml", tmp_path / "paths.yaml")
    shutil.copy(CONFIG / "territory.yaml", tmp_path / "territory.yaml")
    return tmp_path


def edit(cfg_dir: Path, name: str, change) -> None:
    f = cfg_dir / name
    data = yaml.safe_load(f.read_text(encoding="utf-8"))
    change(data)
    f.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def fails(cfg_dir: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(cfg_dir)
    err = info.value
    assert str(err) == f"{err.file}: {err.key}: {err.problem}"
    return err


def step(data, path="cd", i=0) -> dict:
    return data["paths"][path]["steps"][i]


def test_edit_without_change_still_loads(cfg_dir):
    edit(cfg_dir, "paths.yaml", lambda d: None)
    edit(cfg_dir, "territory.yaml", lambda d: None)
    assert load_config(cfg_dir).policy == load_config(CONFIG).policy


BROKEN_PATHS = [
    # (what, change, key, words in the problem)
    ("unknown next step", lambda d: step(d).update(next="invitation_9"), "paths.cd.steps[0].next",
     ["inconnue", "invitation_9"]),
    ("unknown channel", lambda d: step(d).update(channels=["letter", "pigeon"]), "paths.cd.steps[0].channels",
     ["canal inconnu", "pigeon"]),
    ("duplicated channel", lambda d: step(d).update(channels=["letter", "letter"]), "paths.cd.steps[0].channels",
     ["double"]),
    ("missing respond_days", lambda d: step(d).pop("respond_days"), "paths.cd.steps[0]", ["respond_days"]),
    ("missing min_days", lambda d: step(d, "cd", 2).pop("min_days"), "paths.cd.steps[2]", ["min_days"]),
    ("missing observation_days", lambda d: step(d, "cd", 4).pop("observation_days"), "paths.cd.steps[4]",
     ["observation_days"]),
    ("missing next", lambda d: step(d, "ml", 1).pop("next"), "paths.ml.steps[1]", ["next"]),
    ("negative delay", lambda d: step(d).update(respond_days=-1), "paths.cd.steps[0]", ["négatif"]),
    ("unknown step kind", lambda d: step(d).update(kind="party"), "paths.cd.steps[0].kind", ["party"]),
    ("unknown postage", lambda d: step(d, "cd", 4).update(postage="pigeon"), "paths.cd.steps[4].postage",
     ["lrar"]),
    ("unknown relies_on", lambda d: step(d, "ft", 3).update(relies_on=["ft_convocaton"]),
     "paths.ft.steps[3].relies_on", ["ft_convocaton"]),
    ("duplicated step id", lambda d: step(d, "cd", 1).update(id="invitation_1"), "paths.cd", ["double"]),
    ("reminder step id used by a path", lambda d: step(d).update(id="rdv_reminder", next="invitation_2"),
     "paths.cd", ["rdv_reminder"]),
    ("unknown routing target", lambda d: d["routing"].update(cd="cdx"), "routing.cd", ["parcours inconnu", "cdx"]),
    ("unknown routing target for the empty orientation", lambda d: d["routing"].update({"": "nowhere"}),
     "routing.(vide)", ["nowhere"]),
    ("misspelt key", lambda d: step(d).update(respnd_days=15), "paths.cd.steps[0].respnd_days", []),
    ("bad reminder time", lambda d: d["delays"].update(reminder_time="25:00"), "delays.reminder_time", []),
]


@pytest.mark.parametrize("what,change,key,words", BROKEN_PATHS, ids=[b[0] for b in BROKEN_PATHS])
def test_broken_paths_yaml_names_file_and_key(cfg_dir, what, change, key, words):
    edit(cfg_dir, "paths.yaml", change)
    err = fails(cfg_dir)
    assert err.file == str(cfg_dir / "paths.yaml")
    assert err.key == key
    for w in words:
        assert w in err.problem


BROKEN_TERRITORY = [
    ("bad weekday", lambda d: d["organisations"]["CDAS-REDON"]["convocation"].update(weekdays=["mon", "tuesday"]),
     "organisations.CDAS-REDON.convocation.weekdays", ["jour inconnu", "tuesday"]),
    ("no weekday", lambda d: d["organisations"]["CDAS-REDON"]["convocation"].update(weekdays=[]),
     "organisations.CDAS-REDON.convocation.weekdays", ["au moins un jour"]),
    ("zero capacity", lambda d: d["organisations"]["FT-REDON"]["convocation"].update(capacity=0),
     "organisations.FT-REDON.convocation.capacity", ["au moins 1"]),
    ("unknown organisation kind", lambda d: d["organisations"]["ML-REDON"].update(kind="caf"),
     "organisations.ML-REDON.kind", ["cd, ft, ml"]),
    ("missing commission", lambda d: d.pop("commission"), "commission", []),
    ("bad session date", lambda d: d["commission"].update(sessions=["2024-13-01"]), "commission.sessions[0]", []),
    ("missing department", lambda d: d.pop("department"), "department", []),
    ("department without signatory", lambda d: d["department"].pop("signatory_name"),
     "department.signatory_name", []),
    ("unknown review organisation by default",
     lambda d: d["department"]["review_organisations"].update(default="CDAS-NULLE-PART"),
     "department.review_organisations.default", ["organisation inconnue", "CDAS-NULLE-PART"]),
    ("review organisation by default not of kind cd",
     lambda d: d["department"]["review_organisations"].update(default="FT-REDON"),
     "department.review_organisations.default", ["FT-REDON", "type ft", "type cd"]),
    ("unknown review organisation for a postcode",
     lambda d: d["department"]["review_organisations"]["by_postcode"].update({"35390": "CDAS-GRAND-FOUGERAY"}),
     "department.review_organisations.by_postcode", ["35390", "organisation inconnue", "CDAS-GRAND-FOUGERAY"]),
    ("review organisation for a postcode not of kind cd",
     lambda d: d["department"]["review_organisations"]["by_postcode"].update({"356": "ML-REDON"}),
     "department.review_organisations.by_postcode", ["356", "ML-REDON", "type ml"]),
    ("bad postcode prefix",
     lambda d: d["department"]["review_organisations"]["by_postcode"].update({"35A": "CDAS-REDON"}),
     "department.review_organisations.by_postcode", ["35A", "chiffres"]),
    ("re-orientation rule for an unknown path",
     lambda d: d["path_organisations"].update({"caf": {"default": "CDAS-REDON"}}),
     "path_organisations.caf", ["parcours inconnu", "caf"]),
    ("re-orientation to France Travail given to a CDAS",
     lambda d: d["path_organisations"]["ft"].update(default="CDAS-REDON"),
     "path_organisations.ft.default", ["CDAS-REDON", "type cd", "type ft"]),
    ("re-orientation rule naming an unknown organisation",
     lambda d: d["path_organisations"]["cd"]["by_postcode"].update({"35390": "CDAS-GRAND-FOUGERAY"}),
     "path_organisations.cd.by_postcode", ["35390", "organisation inconnue"]),
]


def test_a_re_oriented_person_goes_to_the_organisation_running_the_path():
    territory = load_config(CONFIG).territory
    assert territory.organisation_for_path("ft", "35600", "CDAS-REDON") == "FT-REDON"
    assert territory.organisation_for_path("ft_unregistered", "35600", "CCAS-REDON") == "FT-REDON"
    assert territory.organisation_for_path("cd", "35580", "FT-REDON") == "CDAS-VALLONS"  # by postcode
    assert territory.organisation_for_path("cd", "56350", "ML-REDON") == "CDAS-REDON"    # the default
    assert territory.organisation_for_path("cd", "35580", "CCAS-REDON") == "CCAS-REDON"  # already a cd
    assert territory.organisation_for_path("ml", None, "CDAS-VALLONS") == "ML-REDON"


def test_without_a_rule_the_only_organisation_of_the_kind_takes_it(cfg_dir):
    edit(cfg_dir, "territory.yaml", lambda d: d.pop("path_organisations"))
    territory = load_config(cfg_dir).territory
    assert territory.organisation_for_path("ml", "35600", "CDAS-REDON") == "ML-REDON"  # the only ml
    assert territory.organisation_for_path("cd", "35600", "FT-REDON") == "FT-REDON"  # three cd: unchanged


@pytest.mark.parametrize("what,change,key,words", BROKEN_TERRITORY, ids=[b[0] for b in BROKEN_TERRITORY])
def test_broken_territory_yaml_names_file_and_key(cfg_dir, what, change, key, words):
    edit(cfg_dir, "territory.yaml", change)
    err = fails(cfg_dir)
    assert err.file == str(cfg_dir / "territory.yaml")
    assert err.key == key
    for w in words:
        assert w in err.problem


@pytest.mark.parametrize("name", ["paths.yaml", "territory.yaml"])
def test_bad_yaml_names_the_file_and_the_line(cfg_dir, name):
    (cfg_dir / name).write_text("paths:\n  cd: [\n    - a: b\n  c\n", encoding="utf-8")
    err = fails(cfg_dir)
    assert err.file == str(cfg_dir / name)
    assert err.key.startswith("ligne ") and "YAML invalide" in err.problem


@pytest.mark.parametrize("name", ["paths.yaml", "territory.yaml"])
def test_missing_file(cfg_dir, name):
    (cfg_dir / name).unlink()
    err = fails(cfg_dir)
    assert err.file == str(cfg_dir / name) and err.key == "(fichier)" and "introuvable" in err.problem


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_file_that_is_not_a_mapping(cfg_dir, text):
    (cfg_dir / "paths.yaml").write_text(text, encoding="utf-8")
    err = fails(cfg_dir)
    assert err.key == "(racine)" and "dictionnaire" in err.problem


def test_the_first_broken_file_is_reported(cfg_dir):
    """paths.yaml is read first: with both broken, its error is the one reported."""
    edit(cfg_dir, "paths.yaml", lambda d: d["routing"].update(cd="cdx"))
    (cfg_dir / "territory.yaml").unlink()
    assert fails(cfg_dir).file == str(cfg_dir / "paths.yaml")


def test_a_longer_respond_days_is_data_not_code(cfg_dir):
    edit(cfg_dir, "paths.yaml", lambda d: step(d).update(respond_days=21))
    assert load_config(cfg_dir).policy.path("cd").step("invitation_1").respond_days == 21
