import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.domain.gsm7 import (
    GSM7_BASIC,
    GSM7_CHARS,
    GSM7_EXTENSION,
    _TRANSLIT,
    gsm7_length,
    is_gsm7,
    segments,
    to_gsm7,
)

FRENCH_AND_TRICKY = (
    "àâäçéèêëîïôöùûüÿœæÀÂÄÇÉÈÊËÎÏÔÖÙÛÜŸŒÆ’‘“”«»…–—\u00a0\u202f€°ñÑßøØåÅ"
    "{}[]~^|\\\f\n\r\t ΔΦΓΩΣ😀日é\u0301\x00\x1b"
)


def test_alphabet_sizes():
    assert len(GSM7_BASIC) == 127  # 128 code points minus the escape
    assert len(GSM7_EXTENSION) == 10
    assert "\x1b" not in GSM7_CHARS


@pytest.mark.parametrize(
    "source, expected",
    [
        ("cœur", "coeur"),
        ("Œuvre", "OEuvre"),
        ("l’été", "l'été"),
        ("‘a’", "'a'"),
        ("“oui”", '"oui"'),
        ("« non »", '" non "'),
        ("fenêtre", "fenetre"),
        ("garçon", "garcon"),
        ("Ça", "Ça"),  # Ç is GSM-7, ç is not
        ("âge", "age"),
        ("île", "ile"),
        ("hôtel", "hotel"),
        ("où", "où"),
        ("naïf", "naif"),
        ("Noël", "Noel"),
        ("L'HAŸ", "L'HAY"),
        ("À BIENTÔT", "A BIENTOT"),
        ("ÉCOLE", "ÉCOLE"),
        ("10\u00a0h", "10 h"),
        ("5\u202f€", "5 €"),
        ("attendez…", "attendez..."),
        ("a – b — c", "a - b - c"),
        ("100 €", "100 €"),
        ("n° 3", "no 3"),
        ("ﬁn", "fin"),
        ("e\u0301", "é"),  # decomposed é composes to the GSM-7 é
        ("tab\there", "tab here"),
        ("zero\u200bwidth", "zerowidth"),
        ("emoji 😀", "emoji ?"),
    ],
)
def test_to_gsm7_examples(source, expected):
    assert to_gsm7(source) == expected


def test_gsm7_characters_are_kept():
    keep = "éèùìòàÉÄÖÑÜäöñüßÇÅåÆæØø£$¥¤§¡¿@_ΔΦΓΛΩΠΨΣΘΞ€{}[]~^|\\\n\r"
    assert to_gsm7(keep) == keep


def test_transliteration_table_is_pure_gsm7():
    for source, target in _TRANSLIT.items():
        assert is_gsm7(target), (source, target)
        assert source not in GSM7_CHARS, source


def test_empty():
    assert to_gsm7("") == ""
    assert gsm7_length("") == 0
    assert segments("") == 1


def test_length_counts_extension_chars_twice():
    assert gsm7_length("abc") == 3
    assert gsm7_length("€") == 2
    assert gsm7_length("{[]}") == 8
    assert gsm7_length("é") == 1
    assert gsm7_length("œ") == 2  # counted after transliteration: "oe"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # 160 septets
        ("€" * 81, 2),
        ("a" * 159 + "€", 2),  # 161 septets
        # 152 septets + € would leave the escape alone in part 1: € moves to part 2.
        ("a" * 152 + "€" + "a" * 152, 3),
        ("a" * 151 + "€" + "a" * 153, 2),
    ],
)
def test_segments(text, expected):
    assert segments(text) == expected


@given(st.text(alphabet=st.sampled_from(sorted(GSM7_CHARS)), max_size=800))
def test_segments_bounds(text):
    length = gsm7_length(text)
    parts = segments(text)
    if length <= 160:
        assert parts == 1
    else:
        assert math.ceil(length / 153) <= parts <= math.ceil(length / 152)
        if not any(c in GSM7_EXTENSION for c in text):
            assert parts == math.ceil(length / 153)


_any_text = st.text(
    alphabet=st.one_of(st.characters(), st.sampled_from(FRENCH_AND_TRICKY)), max_size=300
)


@settings(max_examples=500)
@given(_any_text)
def test_to_gsm7_output_is_pure_gsm7_and_idempotent(text):
    out = to_gsm7(text)
    assert is_gsm7(out)
    assert to_gsm7(out) == out
    assert gsm7_length(out) == gsm7_length(text)


@given(st.text(alphabet=st.sampled_from(sorted(GSM7_CHARS))))
def test_gsm7_text_is_unchanged(text):
    assert to_gsm7(text) == text


# --- Arabic and other scripts GSM-7 cannot carry go in UCS-2, never as "?" -----------------------

from worker.domain.gsm7 import needs_ucs2, sms_body, sms_segments  # noqa: E402


def test_arabic_is_sent_as_written_in_ucs2():
    text = "مرحبا، لديك موعد يوم الاثنين 3 يونيو الساعة 10:00. اتصل بالرقم 02 99 00 00 00"
    assert needs_ucs2(text)
    assert sms_body(text) == text and "?" not in sms_body(text)
    units = len(text.encode("utf-16-le")) // 2
    assert sms_segments(text) == (1 if units <= 70 else -(-units // 67))


def test_french_and_english_stay_gsm7():
    for text in ("Bonjour Léa, votre rendez-vous est le lundi 3 juin à 10 h.", "Hello, your appointment…"):
        assert not needs_ucs2(text)
        assert sms_body(text) == to_gsm7(text)
        assert sms_segments(text) == segments(text)


def test_an_emoji_alone_does_not_switch_to_ucs2():
    # not a letter: transliterated to "?" as before (the templates carry none)
    assert not needs_ucs2("Bonjour 🙂")
