"""Phone numbers of metropolitan France and the DROM (worker.domain.contact)."""
from __future__ import annotations

import pytest

from worker.domain import contact
from worker.domain.contact import normalize_phone


@pytest.mark.parametrize("raw, e164", [
    # the two the audit found stored under +33
    ("0596 60 12 34", "+596596601234"),  # Martinique landline
    ("0269 61 12 34", "+262269611234"),  # Mayotte landline
    # the other DROM landlines
    ("0590 82 12 34", "+590590821234"),  # Guadeloupe
    ("0594 30 12 34", "+594594301234"),  # Guyane
    ("0262 41 12 34", "+262262411234"),  # La Réunion
    # the DROM mobiles
    ("0690 12 34 56", "+590690123456"),
    ("0691 22 12 34", "+590691221234"),
    ("0694 12 34 56", "+594694123456"),
    ("0696 12 34 56", "+596696123456"),
    ("0697 12 34 56", "+596697123456"),
    ("0692 12 34 56", "+262692123456"),
    ("0693 12 34 56", "+262693123456"),
    ("0639 01 23 45", "+262639012345"),  # Mayotte mobile
    # a DROM number written with +33 or 0033 gets its own country code
    ("+33 5 96 60 12 34", "+596596601234"),
    ("0033 269 61 12 34", "+262269611234"),
    ("+33 6 39 01 23 45", "+262639012345"),
    # already right, and metropolitan numbers unchanged
    ("+596 596 60 12 34", "+596596601234"),
    ("06 12 34 56 78", "+33612345678"),
    ("02 99 71 00 00", "+33299710000"),
    ("07 55 12 34 56", "+33755123456"),
    # foreign numbers are kept (and never texted)
    ("+44 7911 123456", "+447911123456"),
    # unusable
    ("12345", None), ("", None), (None, None), ("+44 20", None), ("not a phone", None),
])
def test_normalize_phone(raw, e164):
    assert normalize_phone(raw) == e164


@pytest.mark.parametrize("e164, kind", [
    ("+33612345678", "mobile"), ("+33755123456", "mobile"),
    ("+590690123456", "mobile"), ("+596696123456", "mobile"), ("+594694123456", "mobile"),
    ("+262692123456", "mobile"), ("+262639012345", "mobile"),
    ("+33299710000", "landline"), ("+33970000000", "landline"),  # fixed, VoIP
    ("+596596601234", "landline"), ("+262269611234", "landline"), ("+590590821234", "landline"),
    ("+447911123456", "foreign"), ("+4915112345678", "foreign"),
    ("+33596601234", "landline"),  # stored before the fix: still not a mobile
    ("", "invalid"), (None, "invalid"), ("+3312", "invalid"), ("not a number", "invalid"),
])
def test_phone_kind(e164, kind):
    assert contact.phone_kind(e164) == kind
    assert contact.can_receive_sms(e164) is (kind == "mobile")


def test_phone_warning_says_why_without_the_number():
    assert contact.phone_warning("+33612345678") is None
    for number, word in (("+33299710000", "fixe"), ("+596596601234", "fixe"), ("+447911123456", "étranger")):
        reason = contact.phone_warning(number)
        assert word in reason and "SMS" in reason and number not in reason
