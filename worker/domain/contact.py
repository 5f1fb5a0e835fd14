"""Phone numbers and e-mail addresses: normalisation and usability checks.

Pure functions, shared by ingestion (drop unusable values with a warning, warn
about numbers that cannot take an SMS) and by the SMS channels (only French
mobile numbers are texted).

The overseas departments (DROM) share the 10-digit national plan with
metropolitan France (a leading 0) but have their own country codes. Their
national prefixes (ARCEP's plan) decide the country code, whatever
libphonenumber's metropolitan metadata also accepts: ``0596 …`` is a
Martinique landline, ``+596 596 …``, never ``+33 596 …``; ``0269 …`` is Mayotte,
``+262 269 …``.
"""
from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

# Metropolitan France and the DROM (Guadeloupe — with Saint-Barthélemy and
# Saint-Martin, which share +590 —, Martinique, Guyane, La Réunion, Mayotte).
TEXTABLE_REGIONS = frozenset({"FR", "GP", "BL", "MF", "MQ", "GF", "RE", "YT"})

# National prefix (first four digits of the 10-digit number) -> region whose
# country code the number takes.
DROM_PREFIXES: dict[str, str] = {
    "0590": "GP", "0690": "GP", "0691": "GP",  # Guadeloupe (+590): landlines, mobiles
    "0594": "GF", "0694": "GF",  # Guyane (+594)
    "0596": "MQ", "0696": "MQ", "0697": "MQ",  # Martinique (+596)
    "0262": "RE", "0692": "RE", "0693": "RE",  # La Réunion (+262)
    "0269": "YT", "0639": "YT",  # Mayotte (+262)
}
# The same, as the national significant number's first three digits (after +33 / 0).
DROM_NSN_PREFIXES = frozenset(p[1:] for p in DROM_PREFIXES)

# What phone_kind says of a number.
MOBILE, LANDLINE, FOREIGN, INVALID = "mobile", "landline", "foreign", "invalid"

_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")


def _fr_mobile_pattern() -> re.Pattern | None:
    try:
        desc = phonenumbers.PhoneMetadata.metadata_for_region("FR").mobile
        return re.compile(desc.national_number_pattern) if desc and desc.national_number_pattern else None
    except Exception:  # pragma: no cover - metadata layout changed: no fast path
        return None


_FR_MOBILE = _fr_mobile_pattern()


def _e164(number) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _drom(national: str) -> str | None:
    """E.164 of a 10-digit national number with a DROM prefix (None if not valid there)."""
    try:
        number = phonenumbers.parse(national, DROM_PREFIXES[national[:4]])
    except NumberParseException:
        return None
    return _e164(number) if phonenumbers.is_valid_number(number) else None


def normalize_phone(raw: str | None) -> str | None:
    """Return the E.164 form of a phone number, or None if unusable.

    A national number (``06…``, ``0596…``) is French: its DROM prefix, if any,
    gives its country code; otherwise metropolitan, then each DROM. A number
    with its country code (``+…``, ``00…``) is kept as it is when valid,
    except a DROM number written with +33 (``+33 596 …``), which gets its own.
    Foreign numbers are kept (valid, but no SMS: see :func:`phone_kind`).
    """
    if raw is None:
        return None
    raw = raw.strip()
    if not raw:
        return None
    try:
        number = phonenumbers.parse(raw, "FR")
    except NumberParseException:
        return None
    if number.country_code == 33:
        national = "0" + phonenumbers.national_significant_number(number)
        if len(national) == 10 and national[:4] in DROM_PREFIXES:
            return _drom(national)
    if phonenumbers.is_valid_number(number):
        return _e164(number)
    if raw.startswith("+") or raw.startswith("00"):
        return None
    # National numbers of the DROM outside the prefixes above (e.g. the 0709x mobiles).
    for region in ("RE", "GP", "MQ", "GF", "YT"):
        try:
            number = phonenumbers.parse(raw, region)
        except NumberParseException:
            return None
        if phonenumbers.is_valid_number(number):
            return _e164(number)
    return None


def phone_kind(e164: str | None) -> str:
    """``"mobile"`` (France or a DROM), ``"landline"`` (French, not a mobile: fixed,
    VoIP, special numbers), ``"foreign"`` or ``"invalid"``. Only a mobile can take an SMS."""
    if not e164:
        return INVALID
    # Fast path: a metropolitan mobile as normalize_phone writes it.
    if _FR_MOBILE is not None and len(e164) == 12 and e164.startswith("+33") and _FR_MOBILE.fullmatch(e164[3:]):
        return MOBILE
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException:
        return INVALID
    if not phonenumbers.is_valid_number(number):
        return INVALID
    if phonenumbers.region_code_for_number(number) not in TEXTABLE_REGIONS:
        return FOREIGN
    if phonenumbers.number_type(number) in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE):
        return MOBILE
    return LANDLINE


def can_receive_sms(e164: str | None) -> bool:
    """True for a valid mobile number of metropolitan France or the DROM."""
    return phone_kind(e164) == MOBILE


is_textable_mobile = can_receive_sms  # the former name


def phone_warning(e164: str | None) -> str | None:
    """Why a stored phone number will get no SMS (French, for the ingest report; never the number)."""
    kind = phone_kind(e164)
    if kind == MOBILE:
        return None
    if kind == LANDLINE:
        return "numéro de téléphone fixe (pas un mobile) : conservé, mais pas de SMS"
    if kind == FOREIGN:
        return "numéro de téléphone étranger : conservé, mais pas de SMS"
    return "numéro de téléphone inutilisable : pas de SMS"


def normalize_email(raw: str | None) -> str | None:
    """Return a trimmed e-mail address, or None if it is not a plausible address."""
    if raw is None:
        return None
    value = raw.strip()
    if not value:
        return None
    if not _EMAIL_RE.match(value) or len(value) > 254:
        return None
    return value
