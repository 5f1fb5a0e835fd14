"""The timeline's audit entries, in French for agents (worker.domain.describe)."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from worker.domain import describe
from worker.domain.describe import case_entry, local_time

PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize("detail, expected", [
    ({"action": "opened", "path": "cd", "start_step": "invitation_1", "reason": "flux", "late": True,
      "due_at": "2024-06-03T08:00:00+00:00"},
     "ouvert : parcours cd, étape invitation_1 (motif : flux, hors délai)"),
    ({"action": "closed", "outcome": "attended"}, "clos : rendez-vous honoré"),
    ({"action": "closed", "outcome": "crsa_referral"}, "clos : transmis à la commission RSA"),
    ({"action": "continued_in", "case": 42, "reason": "address_updated"},
     "suite dans le dossier RL-000042 (motif : nouvelle adresse)"),
    ({"appointment": "convocation", "step": "convocation", "at": "2024-06-10T08:30:00+00:00"},
     "rendez-vous fixé par convocation pour le 10/06/2024 10:30 (étape convocation)"),
    ({"appointment_outcome": "missed"}, "rendez-vous manqué"),
    ({"commission_session": "2024-07-04"}, "inscrit à la commission RSA du 04/07/2024"),
    ({"commission_session": "none configured"}, "à inscrire à une commission RSA : aucune séance configurée"),
    ({"flag": "late", "detail": "first invitation after the target"},
     "signalé : première invitation après l'objectif de 15 jours"),
    ({"flag": "held", "detail": "no_slot"}, "signalé : en attente d'une décision d'agent (no_slot)"),
    ({"flag": "email_unusable"}, "signalé : e-mail inutilisable : courriers maintenus"),
    ({"flag": "observations", "detail": "hearing_requested"},
     "signalé : réponse après le préavis : à examiner (demande à être entendu(e))"),
    ({"flag": "referral_waits", "detail": "observation_period"},
     "signalé : renvoi en commission décidé (attend la fin du délai d'observations)"),
    ({"flag": "sanction_decided", "detail": "30 % pendant 1 mois"}, "signalé : suspension décidée (30 % pendant 1 mois)"),
    ({"flag": "orientation_deadline", "deadline": "2024-07-15", "days_left": 7},
     "non orienté : échéance des 6 semaines le 15/07/2024 (J-7)"),
    ({"flag": "orientation_deadline", "deadline": "2024-07-15", "days_left": -3},
     "non orienté : échéance des 6 semaines le 15/07/2024 (dépassée de 3 j)"),
])
def test_known_entries_read_as_french_sentences(detail, expected):
    assert case_entry(detail, PARIS) == expected


def test_an_unknown_entry_is_shown_as_it_is():
    assert case_entry({"flag": "something_new", "detail": "x"}, PARIS) == '{"flag": "something_new", "detail": "x"}'
    assert case_entry({"other": 1}) == '{"other": 1}'


def test_times_are_shown_in_the_territory_time_zone():
    assert local_time("2024-01-15T08:30:00+00:00", PARIS) == "15/01/2024 09:30"
    assert local_time("2024-07-15T08:30:00+00:00", PARIS) == "15/07/2024 10:30"
    assert local_time(dt.datetime(2024, 7, 15, 8, 30, tzinfo=dt.timezone.utc).isoformat(), None) == "15/07/2024 08:30"
    assert local_time("pas une date", PARIS) == "pas une date"


def test_reasons_read_as_french_and_unknown_codes_stay_visible():
    from worker.domain.describe import reason

    assert reason("no_response") == "sans réponse"
    assert reason("handoff:ft_report") == "transmis après l'étape ft_report"
    assert reason("review_decision:legitimate_reason") == "décision de l'agent : motif légitime"
    assert reason("something_new") == "something_new"


def test_where_a_message_went_is_what_its_provider_was_given_not_the_current_contact():
    from types import SimpleNamespace as NS

    person = NS(phone="+33698765432", email=None, address_line1="3 rue de la Gare", address_line2=None,
                postcode="35600", city="REDON")

    def msg(channel, recipient=None, status="sent", sent_at="2024-06-10"):
        return NS(channel=channel, recipient=recipient, status=status, sent_at=sent_at)

    assert describe.message_destination(msg("sms", "+33612345678"), person) == "à +33612345678 (numéro modifié depuis)"
    assert describe.message_destination(msg("sms", "+33698765432"), person) == "à +33698765432"
    assert describe.message_destination(msg("email", "a@example.org"), person) == "à a@example.org (adresse modifiée depuis)"
    letter = msg("letter", "Madame Camille LE GALL\n3 RUE DE LA GARE\n35600 REDON")
    assert describe.message_destination(letter, person, moved=False) == "à Madame Camille LE GALL, 3 RUE DE LA GARE, 35600 REDON"
    assert describe.message_destination(letter, person, moved=True).endswith("REDON (adresse modifiée depuis)")
    # not sent yet: where it will go; sent before recipients were recorded: the contact then unknown
    assert describe.message_destination(msg("sms", status="pending", sent_at=None), person) == "à +33698765432"
    assert describe.message_destination(msg("letter"), person, moved=True) == "à l'adresse d'alors, modifiée depuis"
    assert describe.message_destination(msg("email", status="pending", sent_at=None), person) == "à adresse e-mail inconnue"
    # went nowhere (cancelled before sending): no destination at all
    assert describe.message_destination(msg("sms", status="cancelled", sent_at=None), person) == ""
