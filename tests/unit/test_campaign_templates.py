"""The stock campaign's first letter and e-mail (issue 14) for every appointment type of
config/campaign.yaml: they say what the appointment is for, never "premier entretien", and the prose
the department writes there (`purpose`, `meet`) keeps the readability thresholds of the README
("Lisibilité des messages", tests/unit/test_readability.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.readability import measure, reading_text
from tests.template_samples import sample_context
from tests.unit.test_readability import AIM_WORDS, MAX_WORDS, MIN_SCORE, SHARE_OVER_AIM
from worker.adapters.config_files import load_config
from worker.adapters.rendering import TemplateRenderer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = load_config(ROOT / "config").campaign
STEPS = ("campaign_invitation", "campaign_convocation")
KINDS = ("cd", "ft", "ml", "msa")


@pytest.fixture(scope="module")
def renderer() -> TemplateRenderer:
    return TemplateRenderer(ROOT / "templates")


def _context(step: str, key: str, kind: str, long: bool = False) -> dict:
    ctx = sample_context(step, kind=kind, long=long)
    t = CONFIG.appointment_types[key]
    ctx["campaign"] = {"segment": None, "appointment": key, "label": t.label, "name": t.name,
                       "purpose": t.purpose, "meet": t.meet}
    if t.meet:
        ctx["venue"]["meet"] = t.meet  # as worker/services/message_content.py builds it
    return ctx


@pytest.mark.parametrize("channel", ["letter", "email"])
@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("key", sorted(CONFIG.appointment_types))
def test_each_appointment_type_is_said_plainly(renderer, key, step, channel):
    t = CONFIG.appointment_types[key]
    for kind in KINDS:
        for long in (False, True):
            ctx = _context(step, key, kind, long)
            out = renderer.render(step, channel, ctx)
            text = " ".join(out.text.split())
            assert t.name in text and " ".join(t.purpose.split()) in text, (key, step, kind)
            assert "premier entretien" not in text.lower()
            if t.meet:
                assert t.meet in text
            stats = measure(reading_text(channel, out, ctx))
            where = (key, step, channel, kind, long)
            assert stats.longest <= MAX_WORDS, (where, stats.longest_sentence)
            assert stats.share_over(AIM_WORDS) <= SHARE_OVER_AIM, (where, stats.lengths)
            assert stats.score >= MIN_SCORE[channel], (where, round(stats.score, 1))


def test_the_invitation_is_the_flux_one_but_for_what_it_is_for(renderer):
    """The same promises as invitation_1 (booking, help, why, what follows), another purpose."""
    ctx = _context("campaign_invitation", "co_diagnostic", "cd")
    text = " ".join(renderer.render("campaign_invitation", "letter", ctx).text.split())
    for words in ("Prenez rendez-vous avant le 4 juin 2024 pour un co-diagnostic", "droits et de devoirs",
                  "motif légitime", "vous recevrez une relance", "de la personne de votre choix"):
        assert words in text
    conv = " ".join(renderer.render("campaign_convocation", "letter", _context("campaign_convocation", "milestone",
                                                                              "ft")).text.split())
    assert "convoquée pour un entretien d'étape avec France Travail Redon" in conv
    assert "Votre présence est obligatoire" in conv and "dernier rappel" in conv
