"""Templates and the renderer (worker/adapters/rendering.py) against templates/README.md."""
from __future__ import annotations

import copy
import re
import shutil
from datetime import date, datetime, time, timezone
from pathlib import Path

import pytest

from tests.template_samples import DEPARTMENT_STEPS, STEP_CHANNELS, sample_context
from worker.adapters.rendering import (
    Rendered,
    TemplateError,
    TemplateRenderer,
    city_fr,
    date_fr,
    date_lang,
    date_num,
    date_plain,
    date_short,
    datetime_fr,
    datetime_lang,
    duration_fr,
    duration_lang,
    letter_date,
    redate_letter,
    sms_fit,
    time_fr,
    town,
    ucs2_length,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
KINDS = ("cd", "ft", "ml", "msa")
INTERNAL_STEPS = ("sanction_review", "ft_report", "phone_followup")

CASES = [(step, channel) for step, channels in STEP_CHANNELS.items() for channel in channels]

# GSM 03.38 basic character set (1 unit each) and its extension table (2 units).
GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXT = set("^{}\\[~]|€\f")


def gsm7_units(text: str) -> int:
    """GSM-7 length; a character outside GSM-7 is counted 2 (it will be transliterated)."""
    return sum(1 if c in GSM7_BASIC else 2 for c in text)


@pytest.fixture(scope="module")
def renderer() -> TemplateRenderer:
    return TemplateRenderer(TEMPLATES)


@pytest.fixture
def tmp_templates(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(TEMPLATES, target)
    return target


# --------------------------------------------------------------------------- #
# Coverage: every step/channel of the contract renders
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("long", [False, True], ids=["normal", "long"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("step,channel", CASES)
def test_every_template_renders(renderer, step, channel, kind, long):
    ctx = sample_context(step, long=long, kind=kind)
    assert renderer.has(step, channel)
    out = renderer.render(step, channel, ctx)
    assert isinstance(out, Rendered)
    assert out.text.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", out.content_hash)
    assert out.template_version == renderer.template_version(step, channel)
    assert "{{" not in out.text and "{%" not in out.text
    assert ctx["org"]["phone"] in out.text or ctx["org"]["booking_url"] in out.text
    if channel == "letter":
        assert out.template_name == f"letters/{step}.html.j2"
        assert out.html and out.html.lstrip().startswith("<!DOCTYPE html>")
        assert ctx["case"]["reference"] in out.text
        assert ctx["message"]["reference"] in out.text
        assert ctx["issuer"]["signature"] in out.text
        assert ctx["issuer"]["name"] in out.text
        assert "<" not in out.text  # tags stripped
    elif channel == "sms":
        assert out.template_name == f"sms/{step}.txt.j2"
        assert out.html is None and out.subject is None
        assert ctx["org"]["short_name"] in out.text
        assert "  " not in out.text and "\n\n" not in out.text
        assert out.text == out.text.strip()
    else:
        assert out.template_name == f"email/{step}.txt.j2"
        assert out.html and "<html" in out.html
        assert ctx["org"]["name"] in out.text


def test_has(renderer):
    assert renderer.has("invitation_1", "letter")
    assert not renderer.has("rdv_reminder", "letter")
    assert not renderer.has("pre_sanction_notice", "email")
    for step in INTERNAL_STEPS:
        for channel in ("letter", "sms", "email"):
            assert not renderer.has(step, channel)
    assert not renderer.has("invitation_1", "fax")
    assert not renderer.has("../letters/_base", "letter")
    assert not renderer.has("_base", "letter")


def test_missing_template_raises(renderer):
    with pytest.raises(TemplateError, match="letters/sanction_review.html.j2"):
        renderer.render("sanction_review", "letter", sample_context("convocation"))
    with pytest.raises(TemplateError, match="sms/ft_report.txt.j2"):
        renderer.template_version("ft_report", "sms")
    with pytest.raises(TemplateError):
        renderer.render("invitation_1", "fax", sample_context("invitation_1"))


# --------------------------------------------------------------------------- #
# Missing variables are errors naming the template
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("step,channel", CASES)
def test_missing_variable_raises_naming_template(renderer, step, channel):
    ctx = sample_context(step)
    del ctx["org"]["phone"]
    main = {"letter": f"letters/{step}.html.j2", "sms": f"sms/{step}.txt.j2", "email": f"email/{step}.txt.j2"}[channel]
    with pytest.raises(TemplateError) as exc:
        renderer.render(step, channel, ctx)
    assert main in str(exc.value)
    assert exc.value.template_name == main
    assert "phone" in str(exc.value)


def test_missing_variable_used_only_in_base(renderer):
    ctx = sample_context("invitation_1")
    del ctx["message"]["reference"]
    with pytest.raises(TemplateError, match=r"letters/invitation_1\.html\.j2.*reference"):
        renderer.render("invitation_1", "letter", ctx)


def test_missing_top_level_name(renderer):
    ctx = sample_context("convocation")
    del ctx["appointment"]
    with pytest.raises(TemplateError, match="sms/convocation.txt.j2"):
        renderer.render("convocation", "sms", ctx)


def test_none_where_an_object_is_needed_is_a_template_error(renderer):
    ctx = sample_context("convocation")
    ctx["appointment"] = None
    with pytest.raises(TemplateError, match="letters/convocation.html.j2"):
        renderer.render("convocation", "letter", ctx)


def test_optional_values_may_be_none(renderer):
    # ft_warning: the missed appointment is optional; invitations without a deadline.
    ctx = sample_context("ft_warning")
    ctx["appointment"] = None
    for channel in ("letter", "sms", "email"):
        renderer.render("ft_warning", channel, ctx)
    ctx = sample_context("invitation_1")
    ctx["respond_by"] = None
    for channel in ("letter", "sms", "email"):
        out = renderer.render("invitation_1", channel, ctx)
        assert "None" not in out.text


# --------------------------------------------------------------------------- #
# Versions and hashes
# --------------------------------------------------------------------------- #

def test_template_version_is_stable(renderer):
    assert renderer.template_version("convocation", "letter") == renderer.template_version("convocation", "letter")
    versions = {renderer.template_version(s, c) for s, c in CASES}
    assert len(versions) == len(CASES)


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


def test_template_version_changes_with_own_source(tmp_templates):
    r = TemplateRenderer(tmp_templates)
    before = {(s, c): r.template_version(s, c) for s, c in CASES}
    _append(tmp_templates / "letters" / "invitation_1.html.j2", "{# edited #}\n")
    after = {(s, c): r.template_version(s, c) for s, c in CASES}
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {("invitation_1", "letter")}
    # and what is rendered carries the new version
    out = r.render("invitation_1", "letter", sample_context("invitation_1"))
    assert out.template_version == after[("invitation_1", "letter")]


def test_template_version_changes_with_base_and_includes(tmp_templates):
    r = TemplateRenderer(tmp_templates)
    letters = [(s, "letter") for s, c in CASES if c == "letter"]
    before = {k: r.template_version(*k) for k in CASES}

    _append(tmp_templates / "letters" / "_base.html.j2", "{# base edited #}\n")
    mid = {k: r.template_version(*k) for k in CASES}
    assert all(mid[k] != before[k] for k in letters)
    assert all(mid[k] == before[k] for k in CASES if k not in letters)

    # the print CSS is included by the base: it is part of every letter's version
    _append(tmp_templates / "letters" / "letter.css", "\n/* css edited */\n")
    after = {k: r.template_version(*k) for k in CASES}
    assert all(after[k] != mid[k] for k in letters)
    assert all(after[k] == mid[k] for k in CASES if k not in letters)


def test_email_version_covers_both_parts_and_partials(tmp_templates):
    r = TemplateRenderer(tmp_templates)
    v0 = r.template_version("invitation_1", "email")
    _append(tmp_templates / "email" / "invitation_1.html.j2", "{# html edited #}\n")
    v1 = r.template_version("invitation_1", "email")
    assert v1 != v0
    _append(tmp_templates / "email" / "_footer.txt.j2", "{# footer edited #}")
    v2 = r.template_version("invitation_1", "email")
    assert v2 != v1
    _append(tmp_templates / "email" / "_base.html.j2", "{# base edited #}\n")
    assert r.template_version("invitation_1", "email") != v2


def test_content_changes_are_picked_up_without_restart(tmp_templates):
    r = TemplateRenderer(tmp_templates)
    ctx = sample_context("invitation_1")
    first = r.render("invitation_1", "sms", ctx)
    path = tmp_templates / "sms" / "invitation_1.txt.j2"
    path.write_text(path.read_text(encoding="utf-8").replace("Bonjour", "Salut"), encoding="utf-8")
    second = r.render("invitation_1", "sms", ctx)
    assert "Salut" in second.text
    assert second.template_version != first.template_version
    assert second.content_hash != first.content_hash


@pytest.mark.parametrize("step,channel", CASES)
def test_content_hash_depends_on_context(renderer, step, channel):
    ctx = sample_context(step)
    a = renderer.render(step, channel, ctx)
    assert renderer.render(step, channel, copy.deepcopy(ctx)).content_hash == a.content_hash
    other = copy.deepcopy(ctx)
    other["org"]["phone"] = "02 99 00 00 00"
    b = renderer.render(step, channel, other)
    assert b.content_hash != a.content_hash
    assert b.template_version == a.template_version


# --------------------------------------------------------------------------- #
# Subjects
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("step,channel", [c for c in CASES if c[1] != "sms"])
def test_letters_and_emails_have_a_subject(renderer, step, channel):
    out = renderer.render(step, channel, sample_context(step, long=True))
    assert out.subject and out.subject == out.subject.strip()
    assert "\n" not in out.subject
    assert "&#" not in out.subject and "&amp;" not in out.subject
    if channel == "letter":
        assert f"Objet : {out.subject}" in out.text


def test_subject_is_read_through_extends(tmp_templates):
    (tmp_templates / "letters" / "nosubject.html.j2").write_text(
        '{% extends "letters/_base.html.j2" %}{% block body %}<p>x</p>{% endblock %}', encoding="utf-8"
    )
    r = TemplateRenderer(tmp_templates)
    with pytest.raises(TemplateError, match="letters/nosubject.html.j2"):
        r.render("nosubject", "letter", sample_context("invitation_1"))


def test_subject_escaping_is_undone(renderer):
    ctx = sample_context("crsa_referral")
    out = renderer.render("crsa_referral", "letter", ctx)
    # the session is a meeting the person may attend: its date keeps its weekday
    assert out.subject == "RSA : votre dossier en commission le jeudi 20 juin 2024"


# --------------------------------------------------------------------------- #
# Content that must be there
# --------------------------------------------------------------------------- #

def test_letter_structure(renderer):
    ctx = sample_context("invitation_1")
    html = renderer.render("invitation_1", "letter", ctx).html
    assert '<meta charset="utf-8">' in html
    assert "<style>" in html
    # the first page's footer is the information notice (a footnote: issue 10)
    for cls in ("letter", "letterhead", "recipient", "place-date", "reference", "subject", "signature",
                "footnote privacy"):
        assert f'class="{cls}' in html, cls
    body = html.split("</head>", 1)[1]  # the print CSS may mention the section in comments
    assert body.count('<section class="letter"') == 1
    assert 'data-reference="RL-000123-INV1-L"' in body
    assert "Redon, le <time class=\"letter-date\" datetime=\"2024-05-20\">20 mai 2024</time>" in html  # no weekday
    assert "Réf. : RL-000123-INV1-L — Dossier RL-000123" in html
    assert "Objet : " in html
    for line in ctx["person"]["address_lines"]:
        assert f"<div>{line}</div>" in html
    # the booking link (issue 16): the short link printed, the page linked, and its QR code (PNG, data: URL)
    assert f'<a href="{ctx["booking"]["url"]}">{ctx["booking"]["display"]}</a>'.replace("&", "&amp;") in html
    assert html.count('<img src="data:image/png;base64,') == 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("step", ["invitation_1", "invitation_2", "convocation"])
def test_invitations_and_convocation_explain_the_why_and_how(renderer, step, kind):
    ctx = sample_context(step, kind=kind)
    text = renderer.render(step, "letter", ctx).text
    assert "13 mai 2024" in text and "lundi 13 mai" not in text  # droit_opened_on: not an appointment, no weekday
    assert "droits et de devoirs" in text
    assert "motif légitime" in text
    assert ctx["org"]["phone"] in text and ctx["booking"]["display"] in text
    assert "RGPD" in text and ctx["org"]["email"] in text
    if step != "convocation":
        assert "4 juin 2024" in text and "mardi 4 juin" not in text  # respond_by
    if step == "invitation_1":
        assert "relance" in text and "convoqué" in text
    if step == "invitation_2":
        assert "convocation" in text and "obligatoire" in text


@pytest.mark.parametrize("step", ["convocation", "ft_convocation"])
def test_convocation_is_mandatory(renderer, step):
    ctx = sample_context(step)
    letter = renderer.render(step, "letter", ctx).text
    assert "Votre présence est obligatoire" in letter
    assert "lundi 3 juin 2024 à 14 h 30" in letter
    assert ctx["appointment"]["place"] in letter
    assert "pièce d'identité" in letter  # what to bring
    assert "suspension" in letter and "réduction" not in letter.lower()
    assert "L262-37" in letter
    # an SMS may be read on a lock screen: it names no obligation (issue 10, "Private SMS")
    assert "obligatoire" not in renderer.render(step, "sms", ctx).text.lower()
    email = renderer.render(step, "email", ctx)
    assert "obligatoire" in email.text.lower() and "obligatoire" in email.html


def test_ft_templates_speak_for_france_travail(renderer):
    for step in ("ft_convocation", "ft_warning"):
        ctx = sample_context(step)
        assert ctx["org"]["kind"] == "ft"
        for channel in ("letter", "email"):
            out = renderer.render(step, channel, ctx)
            assert "France Travail" in out.text
            assert ctx["org"]["name"] in out.text


def test_ft_warning(renderer):
    """A last reminder, not an "avertissement" (a sanction of its own for jobseekers): it names the
    missed appointment's date and place."""
    ctx = sample_context("ft_warning")
    for channel in ("letter", "email"):
        out = renderer.render("ft_warning", channel, ctx)
        text = " ".join(out.text.split())
        assert "avertissement" not in (text + (out.subject or "")).lower()
        assert (out.subject or text).find("Dernier rappel") >= 0 and "pas une sanction" in text
        assert "4 juin 2024" in text and "mardi 4 juin" not in text  # the deadline: no weekday
        assert "lundi 3 juin 2024 à 14 h 30" in text  # the missed appointment keeps its weekday
        assert " ".join(ctx["missed"]["place"].split()) in text  # and where it was
        assert "Département" in text
    sms = renderer.render("ft_warning", "sms", ctx).text
    assert "03/06" in sms and "RSA" not in sms and "avertissement" not in sms.lower()


def test_ft_warning_without_a_known_appointment_reads_well(renderer):
    ctx = dict(sample_context("ft_warning"), missed=None)
    text = " ".join(renderer.render("ft_warning", "letter", ctx).text.split())
    assert "Vous étiez convoquée à un rendez-vous. Vous n'êtes pas venue." in text


def test_pre_sanction_notice(renderer):
    ctx = sample_context("pre_sanction_notice", long=True)
    out = renderer.render("pre_sanction_notice", "letter", ctx)
    text = out.text
    for fact in ctx["notice"]["facts"]:
        assert fact["text"] in text
    assert ctx["notice"]["ground"] in text
    assert "100 % du montant, pendant 2 mois" in text  # the measure envisaged
    assert "suspension" in text and "réduction" not in text.lower()
    assert "s'arrête dès que vous reprenez votre accompagnement" in text
    assert "10 jours à partir de la réception" in text
    service = ctx["issuer"]["observations_service"]
    assert service["name"] in text and ", ".join(service["address"]) in text
    assert ctx["issuer"]["email"] in text and ctx["issuer"]["phone"] in text
    assert "assistée ou représentée par la personne de votre choix" not in text  # long sample: sex unknown
    assert "assisté(e) ou représenté(e) par la personne de votre choix" in text
    assert "consulter votre dossier" in text
    assert "L262-37" in text and "R262-68" in text
    assert "Lettre recommandée avec accusé de réception" in text
    assert "Aucune décision ne sera prise avant la fin de ce délai" in text
    assert "jour ouvrable suivant" in text  # the period ends on a working day, as the engine counts it
    assert "entendu" in text and "équipe pluridisciplinaire" in text
    assert "Président du Conseil départemental" in text
    other = copy.deepcopy(ctx)
    other["notice"]["observation_days"] = 15
    assert "15 jours" in renderer.render("pre_sanction_notice", "letter", other).text


def test_pre_sanction_notice_without_a_measure_states_the_policy_text(renderer):
    ctx = sample_context("pre_sanction_notice")
    ctx["measure"] = {"rate": None, "months": None, "repeat": None}
    text = renderer.render("pre_sanction_notice", "letter", ctx).text
    assert ctx["notice"]["sanction"] in text and "None" not in text


def test_pre_sanction_notice_escapes_facts(renderer):
    ctx = sample_context("pre_sanction_notice")
    ctx["notice"]["facts"][0]["text"] = "Absence <b>injustifiée</b> & silence."
    html = renderer.render("pre_sanction_notice", "letter", ctx).html
    assert "&lt;b&gt;injustifiée&lt;/b&gt; &amp; silence." in html


@pytest.mark.parametrize("step", DEPARTMENT_STEPS)
def test_the_departement_issues_the_sanction_letters(renderer, step):
    for kind in KINDS:
        ctx = sample_context(step, kind=kind)
        out = renderer.render(step, "letter", ctx)
        letterhead = out.text.split("Tél. :", 1)[0]
        assert letterhead.startswith(ctx["issuer"]["name"])
        assert ctx["org"]["name"] not in letterhead  # the letterhead is the Département's
        assert out.text.rstrip().endswith(ctx["issuer"]["signature"])
        assert ctx["issuer"]["signature"].startswith(
            "Pour le Président du Conseil départemental et par délégation, ")
        # the referent organisation stays the one to call
        assert ctx["org"]["short_name"] in out.text and ctx["org"]["phone"] in out.text
        assert "réduction" not in out.text.lower()
        assert f"Responsable du traitement : {ctx['issuer']['name']}" in out.text


@pytest.mark.parametrize("step", [s for s, c in CASES if c == "letter" and s not in DEPARTMENT_STEPS])
def test_other_letters_are_issued_by_their_organisation(renderer, step):
    ctx = sample_context(step)
    assert ctx["issuer"]["name"] == ctx["org"]["name"] and ctx["issuer"]["signature"] == ctx["org"]["signatory"]
    text = renderer.render(step, "letter", ctx).text
    assert text.startswith(ctx["org"]["name"]) and text.rstrip().endswith(ctx["org"]["signatory"])


def test_sanction_decision(renderer):
    ctx = sample_context("sanction_decision")
    text = renderer.render("sanction_decision", "letter", ctx).text
    assert "30 % du montant" in text and "1 mois, à partir du 1er juillet 2024" in text
    assert ctx["notice"]["ground"] in text
    assert "s'arrête dès que vous reprenez votre accompagnement" in text
    assert "recours administratif préalable" in text and "L262-47" in text
    assert "deux mois" in text and "tribunal administratif" in text
    assert ", ".join(ctx["issuer"]["address"]) in text


def test_sanction_lifting_and_procedure_closed(renderer):
    ctx = sample_context("sanction_lifting")
    text = renderer.render("sanction_lifting", "letter", ctx).text
    assert "fin à la suspension" in text and "15 juillet 2024" in text and "lundi 15" not in text
    text = renderer.render("procedure_closed", "letter", sample_context("procedure_closed")).text
    assert "procédure est close" in text and "ne sera pas suspendu" in text


@pytest.mark.parametrize("step", ["pre_sanction_notice", "crsa_referral"])
def test_sanction_sms_never_name_the_rsa_or_a_sanction(renderer, step):
    for kind in KINDS:
        for long in (False, True):
            text = renderer.render(step, "sms", sample_context(step, kind=kind, long=long)).text.lower()
            for word in ("rsa", "sanction", "suspen", "réduction", "commission", "manquement"):
                assert word not in text, (word, text)


def test_crsa_referral(renderer):
    ctx = sample_context("crsa_referral")
    text = renderer.render("crsa_referral", "letter", ctx).text
    assert "jeudi 20 juin 2024" in text
    assert ctx["commission"]["place"] in text
    assert ctx["commission"]["name"] in text
    assert "assister" in text and "assisté" in text


def test_pre_sanction_sms_is_short_and_points_to_the_letter(renderer):
    out = renderer.render("pre_sanction_notice", "sms", sample_context("pre_sanction_notice", long=True))
    assert "recommandée" in out.text
    assert gsm7_units(out.text) <= 306


@pytest.mark.parametrize(
    "civility,expected",
    [("Madame", "convoquée"), ("Monsieur", "convoqué "), ("Madame, Monsieur", "convoqué(e)")],
)
def test_civility_agreement(renderer, civility, expected):
    ctx = sample_context("convocation")
    ctx["person"]["civility"] = civility
    text = renderer.render("convocation", "letter", ctx).text
    assert f"{civility}," in text
    assert expected in text


def test_mission_locale_greets_by_first_name_in_emails(renderer):
    out = renderer.render("invitation_1", "email", sample_context("invitation_1", kind="ml"))
    assert out.text.startswith("Bonjour Julie,")


# --------------------------------------------------------------------------- #
# SMS constraints
# --------------------------------------------------------------------------- #

SMS_CASES = [s for s, c in CASES if c == "sms"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("step", SMS_CASES)
def test_sms_fits_two_segments_with_long_values(renderer, step, kind):
    out = renderer.render(step, "sms", sample_context(step, long=True, kind=kind))
    assert len(out.text) <= 306, out.text
    assert gsm7_units(out.text) <= 306, out.text


@pytest.mark.parametrize("step", SMS_CASES)
def test_sms_fits_two_segments_after_transliteration(renderer, step):
    gsm7 = pytest.importorskip("worker.domain.gsm7")
    for kind in KINDS:
        text = renderer.render(step, "sms", sample_context(step, long=True, kind=kind)).text
        assert gsm7.segments(gsm7.to_gsm7(text)) <= 2, text


_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


@pytest.mark.parametrize("step", SMS_CASES)
def test_sms_static_text_is_gsm7(step):
    source = (TEMPLATES / "sms" / f"{step}.txt.j2").read_text(encoding="utf-8")
    static = _JINJA.sub("", source)
    outside = sorted({c for c in static if c not in GSM7_BASIC})
    assert not outside, f"non GSM-7 characters in sms/{step}.txt.j2: {outside}"


def test_no_template_contains_a_mobile_number():
    mobile = re.compile(r"(?<!\d)(?:0|\+33\s?|0033\s?)[67](?:[\s.\-]?\d{2}){4}(?!\d)")
    for path in TEMPLATES.rglob("*.j2"):
        text = path.read_text(encoding="utf-8")
        assert not mobile.search(text), f"{path} contains a literal mobile number"


# --------------------------------------------------------------------------- #
# Rendering details
# --------------------------------------------------------------------------- #

def test_autoescape_only_for_html(renderer):
    ctx = sample_context("convocation")
    ctx["person"]["first_name"] = "Léa <b>&"
    ctx["appointment"]["place"] = "Salle <A> & B"
    letter = renderer.render("convocation", "letter", ctx)
    assert "Salle &lt;A&gt; &amp; B" in letter.html
    assert "Salle <A> & B" in letter.text  # the text rendering unescapes
    sms = renderer.render("convocation", "sms", ctx)
    assert "Léa <b>&" in sms.text
    email = renderer.render("convocation", "email", ctx)
    assert "Salle <A> & B" in email.text and "Salle &lt;A&gt; &amp; B" in email.html


def test_letter_text_has_no_css_or_markup(renderer, tmp_templates):
    (tmp_templates / "letters" / "letter.css").write_text("section.letter { color: red; }", encoding="utf-8")
    r = TemplateRenderer(tmp_templates)
    out = r.render("invitation_1", "letter", sample_context("invitation_1"))
    assert "color: red" in out.html
    assert "color" not in out.text
    assert "\n\n\n" not in out.text
    lines = out.text.splitlines()
    assert lines[0] == "Centre départemental d'action sociale du Pays de Redon"
    # address lines stay on their own lines, without blank lines between them
    assert "Madame Julie MARTIN\n5 rue des Lilas\n35600 REDON" in out.text


def test_letters_can_be_concatenated(renderer):
    html = renderer.render("invitation_1", "letter", sample_context("invitation_1")).html
    section = re.search(r'<section class="letter".*?</section>', html, re.S)
    assert section and "Objet" in section.group(0) and "class=\"footnote privacy\"" in section.group(0)


# --------------------------------------------------------------------------- #
# Filters
# --------------------------------------------------------------------------- #

def test_date_filters():
    assert date_fr(date(2024, 6, 3)) == "lundi 3 juin 2024"
    assert date_fr(date(2024, 6, 1)) == "samedi 1er juin 2024"
    assert date_fr(date(2025, 8, 17)) == "dimanche 17 août 2025"
    assert date_fr(date(2024, 12, 25)) == "mercredi 25 décembre 2024"
    assert date_fr(datetime(2024, 2, 29, 23, 30, tzinfo=timezone.utc)) == "vendredi 1er mars 2024"
    assert date_short(date(2024, 6, 3)) == "lundi 03/06/2024"


def test_time_filters():
    assert time_fr(time(14, 30)) == "14 h 30"
    assert time_fr(time(9, 0)) == "9 h 00"
    assert time_fr(datetime(2024, 6, 3, 12, 30, tzinfo=timezone.utc)) == "14 h 30"  # Paris, summer
    assert time_fr(datetime(2024, 1, 8, 8, 0, tzinfo=timezone.utc)) == "9 h 00"  # Paris, winter
    assert datetime_fr(datetime(2024, 6, 3, 12, 30, tzinfo=timezone.utc)) == "lundi 3 juin 2024 à 14 h 30"
    assert datetime_fr(datetime(2024, 6, 3, 9, 0)) == "lundi 3 juin 2024 à 9 h 00"


def test_filters_reject_none():
    with pytest.raises(TypeError):
        date_fr(None)
    with pytest.raises(TypeError):
        datetime_fr(None)


def test_city():
    assert city_fr(["12 rue des Douves", "35600 REDON"]) == "Redon"
    assert city_fr(["20 rue de Rennes", "35510 CESSON-SEVIGNE"]) == "Cesson-Sevigne"
    assert city_fr("85000 LA ROCHE-SUR-YON") == "La Roche-sur-Yon"
    assert city_fr("35603 SAINT-NICOLAS-DE-REDON CEDEX 2") == "Saint-Nicolas-de-Redon"
    assert city_fr("35580 Guichen") == "Guichen"


def test_plain_dates_and_languages():
    """Appointment dates keep their weekday; other dates do not (issue 10, "Plain French")."""
    assert date_plain(date(2024, 6, 3)) == "3 juin 2024"
    assert date_plain(date(2024, 6, 1)) == "1er juin 2024"
    assert date_num(date(2024, 6, 3)) == "03/06/2024"
    assert date_lang(date(2024, 6, 3), "en") == "3 June 2024"
    assert date_lang(date(2024, 6, 3), "en", weekday=True) == "Monday 3 June 2024"
    assert date_lang(date(2024, 6, 3), "ar") == "03/06/2024"
    assert date_lang(date(2024, 6, 3), "ar", weekday=True) == "الاثنين 03/06/2024"
    assert date_lang(date(2024, 6, 3), "es") == "3 juin 2024"  # an unknown language: French
    at = datetime(2024, 6, 3, 12, 30, tzinfo=timezone.utc)
    assert datetime_lang(at, "fr") == "lundi 3 juin 2024 à 14 h 30"
    assert datetime_lang(at, "en") == "Monday 3 June 2024 at 14:30"
    assert datetime_lang(at, "ar") == "الاثنين 03/06/2024، الساعة 14:30"
    assert [duration_fr(m) for m in (45, 60, 90, 120)] == ["45 minutes", "1 heure", "1 h 30", "2 heures"]
    assert duration_lang(90, "en") == "1 hour 30 minutes" and duration_lang(45, "ar") == "45 دقيقة"
    assert town("CDAS du Pays de Redon, 12 rue des Douves, 35600 Redon") == "Redon"
    assert town("Agence, 8 avenue de la Gare, 35603 SAINT-NICOLAS-DE-REDON CEDEX") == "Saint-Nicolas-de-Redon"


def test_the_letter_date_has_no_weekday_and_is_still_redated():
    html = f'<p class="place-date">Redon, le {letter_date(date(2024, 6, 3))}</p>'
    assert html.endswith('<time class="letter-date" datetime="2024-06-03">3 juin 2024</time></p>')
    new, changed = redate_letter(html, date(2024, 6, 5))
    assert changed and '<time class="letter-date" datetime="2024-06-05">5 juin 2024</time>' in new


def test_sms_fit_takes_the_first_text_that_fits():
    short, long_ = "a" * 300, "a" * 307
    assert sms_fit([long_, short]) == short and sms_fit([short, long_]) == short
    assert sms_fit([long_, long_ + "b"]) == long_ + "b"  # none fits: the last (the shortest by design)
    assert sms_fit(["€" * 154, "x"]) == "x"  # an extension character counts two septets
    assert sms_fit(["ب" * 269, "ب" * 268], encoding="ucs2") == "ب" * 268
    assert ucs2_length("ب" * 10) == 10


# --------------------------------------------------------------------------- #
# Private SMS (issue 10): what a lock screen may show
# --------------------------------------------------------------------------- #

LANGUAGES = ("fr", "en", "ar")
# Words no SMS may hold, in every language: the RSA, a sanction, a suspension, an obligation, the
# commission. Arabic: دخل التضامن (the RSA), عقوبة (sanction), تعليق (suspension), إلزامي (compulsory),
# استدعاء (summons), لجنة (commission).
FORBIDDEN = {
    "fr": (r"\brsa\b", "revenu de solidarit", "sanction", "suspen", "réduction", "obligatoire", "oblig",
           "convoqu", "commission", "manquement", "avertissement", "allocataire", "pénalit"),
    "en": (r"\brsa\b", "solidarity", "sanction", "suspen", "reduc", "compulsory", "must", "mandatory",
           "oblig", "commission", "penalt", "benefit"),
    "ar": (r"\brsa\b", "التضامن", "عقوب", "تعليق", "إلزامي", "استدعاء", "لجنة"),
}
SEGMENT_LIMIT = {"fr": 2, "en": 2, "ar": 4}  # GSM-7 segments (fr, en); UCS-2 segments (ar: 67 characters each)


def _plain(text: str) -> str:
    return text.replace("\u2066", "").replace("\u2069", "").replace("\u00a0", " ")


def _ucs2_segments(text: str) -> int:
    n = ucs2_length(text)
    return 1 if n <= 70 else -(-n // 67)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("step", [s for s, c in CASES if c == "sms"])
def test_every_sms_is_private_says_who_when_where_and_fits(renderer, step, language):
    """Over every SMS template, organisation kind, ordinary and long values and language: no SMS
    names the RSA, a sanction, a suspension or an obligation; each says who writes (the
    organisation's short name), when, where, and the number to call or the booking link; French and
    English fit two GSM-7 segments once transliterated, Arabic four UCS-2 segments."""
    gsm7 = pytest.importorskip("worker.domain.gsm7")
    for kind in KINDS:
        for long in (False, True):
            ctx = sample_context(step, kind=kind, long=long, language=language)
            out = renderer.render(step, "sms", ctx)
            expected = f"sms/{step}.txt.j2" if language == "fr" else f"sms/{step}.{language}.txt.j2"
            assert out.template_name == expected
            text = _plain(out.text)
            low = text.lower()
            for word in FORBIDDEN[language]:
                assert not re.search(word, low), (word, text)
            assert ctx["org"]["short_name"] in text  # who writes
            assert ctx["org"]["phone"] in text or ctx["org"]["booking_url"] in text
            # when
            if ctx["appointment"]:
                at = ctx["appointment"]["at"]
                assert (f"{at.day:02d}/{at.month:02d}/{at.year}" in text or f"{at.day} " in text) and "30" in text
            if ctx["respond_by"]:
                d = ctx["respond_by"]
                assert f"{d.day:02d}/{d.month:02d}/{d.year}" in text or date_lang(d, language) in text
            if ctx["commission"]:
                d = ctx["commission"]["session_date"]
                assert date_lang(d, language, weekday=True) in text or f"{d.day:02d}/{d.month:02d}/{d.year}" in text
            # where: the place (or, when the SMS would not fit with it, its town), or La Poste
            place = (ctx["appointment"] or ctx["commission"] or ctx["venue"])["place"]
            if step == "pre_sanction_notice":
                assert "La Poste" in text or "post office" in text
            elif step != "ft_warning":
                assert place in text or town(place) in text, text
            if language == "ar":
                assert _ucs2_segments(out.text) <= SEGMENT_LIMIT["ar"], (ucs2_length(out.text), text)
            else:
                assert gsm7.segments(gsm7.to_gsm7(out.text)) <= SEGMENT_LIMIT[language], text
                assert gsm7.is_gsm7(gsm7.to_gsm7(out.text))


@pytest.mark.parametrize("step", [s for s, c in CASES if c == "sms"])
def test_translated_sms_static_text_is_gsm7_in_english(step):
    source = (TEMPLATES / "sms" / f"{step}.en.txt.j2").read_text(encoding="utf-8")
    strings = "".join(re.findall(r'"([^"]*)"', source)) + _JINJA.sub("", source)
    outside = sorted({c for c in strings if c not in GSM7_BASIC})
    assert not outside, f"non GSM-7 characters in sms/{step}.en.txt.j2: {outside}"


def test_the_language_picks_the_sms_and_its_version(renderer):
    ctx = sample_context("convocation", language="en")
    assert renderer.render("convocation", "sms", ctx).text.startswith("CDAS de Redon: Hello Julie, you have")
    assert renderer.template_version("convocation", "sms", "en") != renderer.template_version("convocation", "sms")
    out = renderer.render("convocation", "sms", ctx)
    assert out.template_version == renderer.template_version("convocation", "sms", "en")
    # an unknown language, or none: French
    for language in ("es", None):
        ctx = sample_context("convocation")
        ctx["person"]["language"] = language
        assert renderer.render("convocation", "sms", ctx).template_name == "sms/convocation.txt.j2"
    ctx = sample_context("convocation")
    del ctx["person"]["language"], ctx["person"]["large_print"]  # a context without them: French, ordinary print
    assert renderer.render("convocation", "sms", ctx).text.startswith("CDAS de Redon : Bonjour Julie")
    assert "large-print" not in renderer.render("convocation", "letter", ctx).html.split("</head>", 1)[1]


@pytest.mark.parametrize("step", [s for s, c in CASES if c == "email"])
def test_email_subjects_are_private_too(renderer, step):
    """A mail client shows the subject on a lock screen: no RSA, sanction, suspension or obligation."""
    for kind in KINDS:
        subject = renderer.render(step, "email", sample_context(step, kind=kind)).subject.lower()
        for word in FORBIDDEN["fr"]:
            if word != "convoqu":
                assert not re.search(word, subject), (word, subject)
        assert "dernier rappel" in subject or sample_context(step, kind=kind)["org"]["short_name"].lower() in subject \
            or "rendez-vous" in subject or "entretien" in subject


# --------------------------------------------------------------------------- #
# What the invitations and convocations say (issue 10, "Plain French")
# --------------------------------------------------------------------------- #

MEET = {"cd": "une personne du CDAS (Département) et une personne de France Travail, ensemble",
        "ft": "une conseillère ou un conseiller France Travail",
        "ml": "une conseillère ou un conseiller de la Mission locale",
        "msa": "une travailleuse sociale ou un travailleur social de la MSA"}


@pytest.mark.parametrize("channel", ["letter", "email"])
@pytest.mark.parametrize("step", ["invitation_1", "invitation_2", "convocation", "ft_convocation"])
def test_invitations_say_with_whom_how_long_where_access_what_to_bring_and_help(renderer, step, channel):
    for kind in ("ft",) if step.startswith("ft_") else KINDS:
        for long in (False, True):
            ctx = sample_context(step, kind=kind, long=long)
            text = " ".join(renderer.render(step, channel, ctx).text.split())
            venue = ctx["venue"]
            assert venue["meet"] in text  # who: the co-diagnostic on the CD path, else the adviser
            if not long:
                assert MEET[kind] in text
            assert duration_fr(venue["duration"]) + " environ" in text  # how long
            assert (ctx["appointment"] or venue)["place"] in text  # where
            if venue["access"]:
                assert venue["access"] in text  # how to get there
            assert ", ".join(venue["bring"]) in text  # what to bring
            assert "accompagné" in text and "de la personne de votre choix" in text
            assert "interprète" in text and "rendez-vous adapté" in text
            if ctx["appointment"]:
                assert datetime_fr(ctx["appointment"]["at"]) in text  # the appointment keeps its weekday
            # the action first: the first sentence of the body says what to do
            body = text.split(ctx["person"]["civility"] + ",", 1)[-1] if channel == "email" else \
                text.split("Protection de vos données.", 1)[0]
            assert re.search(r"Prenez rendez-vous|Vous êtes convoqué", body[:400] if channel == "email" else text)


def test_the_legal_basis_is_a_note_at_the_bottom(renderer):
    for step in [s for s, c in CASES if c == "letter"]:
        html = renderer.render(step, "letter", sample_context(step)).html
        if step != "procedure_closed":
            note = re.search(r'<p class="note">(.*?)</p>', html, re.S)
            assert note and ("L262" in note.group(1)), step
            # nothing but the closing and the signature after it
            assert html.index('class="note"') > html.index('class="salutation"')
            assert html.index('class="note"') < html.index('class="signature"')


# --------------------------------------------------------------------------- #
# The information notice (RGPD art. 13/14) on every letter and e-mail
# --------------------------------------------------------------------------- #

CONTROLLER = {"cd": "Département d'Ille-et-Vilaine", "ft": "France Travail", "ml": "Mission locale du Pays de Redon",
              "msa": "MSA Portes de Bretagne"}


@pytest.mark.parametrize("step,channel", [c for c in CASES if c[1] != "sms"])
def test_every_letter_and_email_carries_the_complete_information_notice(renderer, step, channel):
    for kind in KINDS:
        for long in (False, True):
            ctx = sample_context(step, kind=kind, long=long)
            out = renderer.render(step, channel, ctx)
            texts = [out.text] + ([html_text(out.html)] if channel == "email" else [])
            privacy = ctx["privacy"]
            for text in texts:
                text = " ".join(text.split())
                notice = text[text.index("Protection de vos données."):]
                # the controller: the Département for CD organisations and the sanction letters
                controller = ctx["issuer"]["name"] if step in DEPARTMENT_STEPS else (
                    privacy["controller"] if long else CONTROLLER[kind])
                assert f"Responsable du traitement : {controller}." in notice
                assert privacy["controller"] == controller
                assert "mission d'intérêt public" in notice and "RGPD, art. 6-1-e" in notice  # legal basis
                assert "L262-27 et suivants" in notice
                assert "But : votre accompagnement" in notice  # purpose
                assert "Source : la CAF ou la MSA" in notice  # source
                assert f"Destinataires : {privacy['recipients']}" in notice  # recipients
                assert "Conservation : 24 mois après le dernier contact" in notice  # retention
                for right in ("consulter vos données", "corriger", "limiter", "opposer"):  # rights
                    assert right in notice
                assert privacy["dpo_email"] in notice and ", ".join(privacy["dpo_address"]) in notice  # the DPO
                assert "CNIL" in notice and privacy["notice_url"] in notice  # the CNIL, the full notice


def html_text(html: str) -> str:
    from worker.adapters.rendering import html_to_text

    return html_to_text(html)


def test_the_notice_is_escaped_in_html_and_plain_in_text(renderer):
    ctx = sample_context("invitation_1")
    ctx["privacy"]["controller"] = "Département <d'essai> & co"
    out = renderer.render("invitation_1", "email", ctx)
    assert "Département <d'essai> & co" in out.text
    assert "Département &lt;d&#39;essai&gt; &amp; co" in out.html
    letter = renderer.render("invitation_1", "letter", ctx)
    assert "Département &lt;d&#39;essai&gt; &amp; co" in letter.html


# --------------------------------------------------------------------------- #
# Large print and the summaries in English and Arabic
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("step", [s for s, c in CASES if c == "letter"])
def test_large_print_marks_the_body_and_the_section_and_moves_the_notice(renderer, step):
    html = renderer.render(step, "letter", sample_context(step, large_print=True)).html
    assert '<body class="large-print">' in html and '<section class="letter large-print"' in html
    assert 'class="footnote' not in html  # the notice follows the signature, in the text's size
    assert html.index('class="privacy-large"') > html.index('class="signature"')
    assert "section.letter.large-print" in html and "font-size: 16pt" in html
    normal = renderer.render(step, "letter", sample_context(step)).html
    assert "large-print" not in normal.split("</head>", 1)[1] and 'class="footnote privacy"' in normal


SUMMARY_STEPS = ("invitation_1", "invitation_2", "convocation", "ft_convocation", "campaign_invitation",
                 "campaign_convocation")


@pytest.mark.parametrize("language", ["fr", "en", "ar"])
@pytest.mark.parametrize("step", [s for s, c in CASES if c == "letter"])
def test_the_summary_is_attached_to_the_invitations_in_the_persons_language(renderer, step, language):
    for kind in ("ft",) if step.startswith("ft_") else KINDS:
        ctx = sample_context(step, kind=kind, language=language)
        out = renderer.render(step, "letter", ctx)
        html, text = out.html, _plain(out.text)
        has = step in SUMMARY_STEPS and language != "fr"
        assert ('class="summary"' in html) == has
        if not has:
            continue
        # after the French letter (its signature), in the same section (the print batch keeps it)
        assert html.index('class="summary"') > html.index('class="signature"')
        assert html.index('class="summary"') < html.index("</section>")
        assert ctx["org"]["phone"] in text and ctx["org"]["booking_url"] in text
        assert ctx["privacy"]["notice_url"] in text
        if language == "en":
            assert '<div class="summary" lang="en">' in html
            assert "Summary in English" in text and "The letter in French before this page is the official one" in text
            assert "interpreter" in text and "person of your choice" in text
            if ctx["appointment"]:
                assert datetime_lang(ctx["appointment"]["at"], "en") in text and "You must attend" in text
            else:
                assert "Please book an appointment" in text and "4 June 2024" in text
        else:
            assert '<div class="summary" lang="ar" dir="rtl">' in html
            assert "ملخص باللغة العربية" in text and "مترجم" in text  # an interpreter
            if ctx["appointment"]:
                assert datetime_lang(ctx["appointment"]["at"], "ar") in text and "حضورك إلزامي" in text
            else:
                assert "يُرجى حجز موعد" in text and "04/06/2024" in text
            # the phone number is kept left to right and on one line
            assert "\u2066" + ctx["org"]["phone"].replace(" ", "\u00a0") + "\u2069" in out.html


def test_every_letter_prints_the_references_agents_look_up_and_the_matricule(renderer):
    """relance timeline accepts each of them (issue 10): the letter's, the case's and the matricule."""
    for step in ("invitation_1", "convocation", "pre_sanction_notice", "sanction_decision"):
        ctx = sample_context(step)
        text = " ".join(renderer.render(step, "letter", ctx).text.split())
        assert ctx["message"]["reference"] in text and ctx["case"]["reference"] in text
        assert f"Matricule : {ctx['person']['matricule']}" in text


def test_notice_facts_date_messages_without_weekday_and_the_appointment_with_it(renderer):
    """Only appointment dates keep their weekday (issue 10)."""
    text = " ".join(renderer.render("pre_sanction_notice", "letter", sample_context("pre_sanction_notice")).text.split())
    assert "Le 13 mai 2024 : invitation" in text and "lundi 13 mai" not in text
    assert "Le lundi 3 juin 2024 : vous n'êtes pas venue au rendez-vous" in text
