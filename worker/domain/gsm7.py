"""GSM 03.38 (GSM-7) helpers for SMS bodies.

An SMS whose body holds a single character outside the GSM-7 alphabet is sent
as UCS-2: 70 characters per segment instead of 160, so a French "œ" or a curly
apostrophe can triple the cost of a message. :func:`to_gsm7` transliterates
every such character into GSM-7 (keeping the accented letters the alphabet
does have: é è ù ì ò à Ç É ...), :func:`gsm7_length` counts septets and
:func:`segments` counts the parts the message will be split into.

Pure functions, no I/O.
"""
from __future__ import annotations

import unicodedata

# The GSM 03.38 default alphabet, in code-point order (0x00..0x7F). 0x1B is the
# escape to the extension table, not a character: it is left out on purpose.
GSM7_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ" "ÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)

# The extension table: each of these costs two septets (ESC + code).
GSM7_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")

GSM7_CHARS: frozenset[str] = GSM7_BASIC | GSM7_EXTENSION

SINGLE_SEGMENT_SEPTETS = 160
MULTIPART_SEGMENT_SEPTETS = 153  # 7 septets go to the concatenation header

REPLACEMENT = "?"

# Explicit transliterations, checked before the generic Unicode decomposition.
# Every value must be pure GSM-7 (a unit test checks it).
_TRANSLIT: dict[str, str] = {
    # ligatures
    "œ": "oe", "Œ": "OE", "ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl",
    # quotes and apostrophes
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u02bc": "'", "\u00b4": "'", "`": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "«": '"', "»": '"', "\u2039": "'", "\u203a": "'",
    # dashes, hyphens, bullets
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
    "\u2015": "-", "\u2212": "-", "\u00ad": "",
    "\u2022": "-", "\u00b7": ".", "\u2026": "...",
    # spaces (non-breaking, narrow, thin, ideographic ...) and invisible marks
    "\u00a0": " ", "\u202f": " ", "\u2007": " ", "\u2009": " ", "\u200a": " ",
    "\u2002": " ", "\u2003": " ", "\u2004": " ", "\u2005": " ", "\u2006": " ",
    "\u2008": " ", "\u205f": " ", "\u3000": " ", "\t": " ",
    "\u200b": "", "\u200c": "", "\u200d": "", "\u2060": "", "\ufeff": "",
    "\u2028": "\n", "\u2029": "\n", "\u0085": "\n", "\u000b": "\n",
    # letters absent from GSM-7 that Unicode does not decompose
    "ç": "c",  # ç is not GSM-7 (only Ç is)
    "Ð": "D", "ð": "d", "Đ": "D", "đ": "d", "Ł": "L", "ł": "l", "Þ": "Th", "þ": "th",
    "ı": "i", "ĸ": "k", "ŉ": "'n", "Ŋ": "N", "ŋ": "n", "Ħ": "H", "ħ": "h",
    "Ŧ": "T", "ŧ": "t", "ſ": "s",
    # symbols
    "°": "o", "º": "o", "ª": "a", "©": "(c)", "®": "(R)", "™": "TM",
    "×": "x", "÷": "/", "\u2044": "/", "\u2215": "/", "±": "+/-",
    "‰": "/1000", "¢": "c", "₣": "F", "¦": "|", "¨": "", "¯": "-", "¸": "",
    "→": "->", "←": "<-", "⇒": "=>", "≤": "<=", "≥": ">=", "≠": "!=",
    "µ": "u", "μ": "u",
    # Greek capitals GSM-7 lacks but whose shape is a Latin capital
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K",
    "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
}


def _is_gsm7(ch: str) -> bool:
    return ch in GSM7_CHARS


def _translit_char(ch: str) -> str:
    if ch in GSM7_CHARS:
        return ch
    mapped = _TRANSLIT.get(ch)
    if mapped is not None:
        return mapped
    # Compatibility composition first: it maps e.g. the Angstrom sign to Å,
    # which GSM-7 has, where a decomposition would lose the ring.
    composed = unicodedata.normalize("NFKC", ch)
    if composed != ch and all(_is_gsm7(c) for c in composed):
        return composed
    # Then strip diacritics: ê -> e, Ô -> O, ǘ -> u, ² -> 2, ½ -> 1/2 ...
    out: list[str] = []
    for part in unicodedata.normalize("NFKD", ch):
        if part in GSM7_CHARS:
            out.append(part)
        elif unicodedata.combining(part):
            continue
        elif part in _TRANSLIT:
            out.append(_TRANSLIT[part])
        elif unicodedata.category(part) in ("Cc", "Cf"):
            continue  # control/format characters carry no text
        else:
            out.append(REPLACEMENT)
    result = "".join(out)
    if result == "" and unicodedata.category(ch) not in ("Cc", "Cf", "Mn", "Me"):
        return REPLACEMENT
    return result


def to_gsm7(text: str) -> str:
    """Return ``text`` transliterated into the GSM-7 alphabet (+ extension table).

    Characters GSM-7 has are kept as they are (é, à, Ç, Ñ, €, ...); the others
    are replaced by their closest GSM-7 spelling ("œ" -> "oe", "ê" -> "e",
    "’" -> "'", "…" -> "...", non-breaking spaces -> " "). Control and
    zero-width characters are dropped; anything without a sensible spelling
    (emoji, CJK, ...) becomes "?". The result is idempotent:
    ``to_gsm7(to_gsm7(t)) == to_gsm7(t)``.
    """
    if not text:
        return ""
    # Compose first, so a decomposed "e" + U+0301 becomes "é" (which GSM-7 has).
    text = unicodedata.normalize("NFC", text)
    if all(ch in GSM7_CHARS for ch in text):
        return text
    return "".join(_translit_char(ch) for ch in text)


def is_gsm7(text: str) -> bool:
    """True if every character of ``text`` is in GSM-7 (basic or extension)."""
    return all(ch in GSM7_CHARS for ch in text)


def _septets(ch: str) -> int:
    return 2 if ch in GSM7_EXTENSION else 1


def gsm7_length(text: str) -> int:
    """Number of septets ``text`` occupies once transliterated with :func:`to_gsm7`.

    Extension-table characters (€ [ ] { } ^ ~ | \\ and form feed) count two.
    For text that already is GSM-7 this is its exact encoded length.
    """
    return sum(_septets(ch) for ch in to_gsm7(text))


def segments(text: str) -> int:
    """Number of SMS parts needed to send ``text`` (after :func:`to_gsm7`).

    One part holds 160 septets; a concatenated message holds 153 per part, and
    an extension character (two septets) is never split across two parts, so
    a part that has a single septet left starts the next one instead.
    An empty text counts as one part.
    """
    body = to_gsm7(text)
    total = sum(_septets(ch) for ch in body)
    if total <= SINGLE_SEGMENT_SEPTETS:
        return 1
    parts = 1
    used = 0
    for ch in body:
        size = _septets(ch)
        if used + size > MULTIPART_SEGMENT_SEPTETS:
            parts += 1
            used = 0
        used += size
    return parts


# --- scripts GSM-7 cannot carry: UCS-2 ------------------------------------------------------------

UCS2_SINGLE_SEGMENT = 70  # UTF-16 code units in a single UCS-2 SMS
UCS2_MULTIPART_SEGMENT = 67  # per part of a concatenated UCS-2 SMS


def needs_ucs2(text: str) -> bool:
    """True when transliterating into GSM-7 would lose letters (Arabic, ...): such an SMS is sent in
    UCS-2 as written, never as a line of "?". Latin text with accents stays GSM-7 (cheaper)."""
    text = unicodedata.normalize("NFC", text or "")
    return any(unicodedata.category(ch).startswith("L") and _translit_char(ch) == REPLACEMENT
               for ch in text if ch not in GSM7_CHARS)


def sms_body(text: str) -> str:
    """The body as it is sent: GSM-7 (transliterated) when it can be, else the text itself (UCS-2)
    without control or format characters."""
    if not needs_ucs2(text):
        return to_gsm7(text)
    text = unicodedata.normalize("NFC", text)
    # keep the bidi marks of right-to-left text (Cf: RLM/LRM/isolates), drop other control characters
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cc" or ch == "\n")


def sms_segments(text: str) -> int:
    """SMS parts of :func:`sms_body` (GSM-7: 160/153 septets; UCS-2: 70/67 UTF-16 units)."""
    if not needs_ucs2(text):
        return segments(text)
    units = len(sms_body(text).encode("utf-16-le")) // 2
    if units <= UCS2_SINGLE_SEGMENT:
        return 1
    return -(-units // UCS2_MULTIPART_SEGMENT)
