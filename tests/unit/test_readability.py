"""Plain French, measured (issue 10): every beneficiary template, rendered for every organisation kind
with ordinary and long values, against the thresholds of the README ("Lisibilité des messages").

The measure (Kandel & Moles' reading ease, sentence lengths) is tests/readability.py;
scripts/readability_report.py gives the before/after table of docs/readability.md.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.readability import MIN_WORDS, Stats, measure, reading_text, sentences, syllables
from tests.template_samples import STEP_CHANNELS, sample_context
from worker.adapters.rendering import TemplateRenderer

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
KINDS = ("cd", "ft", "ml", "msa")
CASES = [(step, channel) for step, channels in STEP_CHANNELS.items() for channel in channels]

# The thresholds (README, "Lisibilité des messages").
MAX_WORDS = 25  # no sentence longer, anywhere (the issue: aim 20, none over 30)
AIM_WORDS = 20  # at most SHARE_OVER_AIM of a message's sentences longer than this
SHARE_OVER_AIM = 0.10
MIN_SCORE = {"letter": 65.0, "email": 65.0, "sms": 60.0}  # Kandel-Moles, each rendering
MIN_MEAN_SCORE = 72.0  # over every template, ordinary values, weighted by words
MIN_SHARE_SHORT = 0.80  # of all sentences, ordinary values: 15 words or fewer


@pytest.fixture(scope="module")
def renderer() -> TemplateRenderer:
    return TemplateRenderer(TEMPLATES)


def _stats(renderer, step, channel, **kw) -> tuple[Stats, str]:
    ctx = sample_context(step, **kw)
    text = reading_text(channel, renderer.render(step, channel, ctx), ctx)
    return measure(text), text


# --------------------------------------------------------------------------- #
# The measure itself
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("word,count", [
    ("ami", 2), ("rendez-vous", 3), ("obligatoire", 4), ("suspension", 3), ("téléphone", 3), ("pièce", 1),
    ("France", 1), ("Madame", 2), ("une", 1), ("identité", 4), ("accompagnement", 5), ("créer", 2),
    ("idée", 2), ("naïf", 2), ("payer", 2), ("quatre", 1), ("réception", 3), ("2024", 3), ("10", 2),
    ("l'accompagnement", 5), ("questions", 2),
])
def test_french_syllables(word, count):
    assert syllables(word) == count


def test_sentences_and_units():
    text = ("Tél. : 02 61 91 10 10. Vous avez rendez-vous avec M. Dupont (art. 6-1-e). Venez !\n"
            "- en ligne : https://rdv.example.org/cdas-redon ;\nMadame,")
    assert sentences(text) == ["Tél. : 02 61 91 10 10.", "Vous avez rendez-vous avec M. Dupont (art. 6-1-e).",
                               "Venez !", "- en ligne : https://rdv.example.org/cdas-redon ;", "Madame,"]
    stats = measure(text)
    # units under MIN_WORDS words are left out; a phone number or a link is one word
    assert stats.lengths == [8] and MIN_WORDS == 4
    assert 0 < stats.score < 120


def test_the_score_is_kandel_moles():
    stats = measure("Le chat mange. Le chien dort bien.")  # units of 3 and 4 words: only the second counts
    assert stats.lengths == [4] and stats.syllables == 4
    assert stats.score == pytest.approx(207 - 1.015 * 4 - 73.6 * 1)


def test_data_are_one_word():
    ctx = sample_context("convocation", long=True)
    out = TemplateRenderer(TEMPLATES).render("convocation", "sms", ctx)
    text = reading_text("sms", out, ctx)
    assert ctx["appointment"]["place"] not in text and ctx["person"]["first_name"] not in text


# --------------------------------------------------------------------------- #
# The thresholds, over every template, organisation kind and value set
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("step,channel", CASES)
def test_every_message_is_plain_french(renderer, step, channel):
    for kind in KINDS:
        for long in (False, True):
            stats, text = _stats(renderer, step, channel, kind=kind, long=long)
            where = (step, channel, kind, "long" if long else "ordinary")
            assert stats.sentences, where
            assert stats.longest <= MAX_WORDS, (where, stats.longest_sentence)
            assert stats.share_over(AIM_WORDS) <= SHARE_OVER_AIM, (where, stats.lengths)
            assert stats.score >= MIN_SCORE[channel], (where, round(stats.score, 1), text)


def test_all_templates_together(renderer):
    total = Stats()
    weighted = 0.0
    for step, channel in CASES:
        stats, _ = _stats(renderer, step, channel)
        total.words += stats.words
        total.lengths += stats.lengths
        weighted += stats.score * stats.words
    assert weighted / total.words >= MIN_MEAN_SCORE, weighted / total.words
    short = sum(1 for n in total.lengths if n <= 15) / total.sentences
    assert short >= MIN_SHARE_SHORT, short
    assert total.longest <= AIM_WORDS  # with ordinary values, not one sentence over 20 words


def test_the_report_script_runs(renderer, tmp_path):
    """scripts/readability_report.py measures the templates the same way (docs/readability.md)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "readability_report", Path(__file__).resolve().parents[2] / "scripts" / "readability_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.measure_templates(TEMPLATES, worst=False)
    assert set(rows) == {f"{s}/{c}" for s, c in CASES}
    assert rows["invitation_1/letter"]["longest"] <= AIM_WORDS
    table = module.markdown(rows, rows)
    assert "| `invitation_1/letter` |" in table and "before" in table
