"""Phone numbers and e-mail addresses: normalisation and usability checks.

Pure functions, shared by ingestion (drop unusable values with a warning) and
by the SMS channel (only French mobile numbers are texted).
"""
from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

# Metropolitan France and the DROM (Guadeloupe, Martinique, Guyane, La Réunion, Mayotte).
TEXTABLE_REGIONS = frozenset({"FR", "GP", "MQ", "GF", "RE", "YT"})

_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")


def normalize_phone(raw: str | None) -> str | None:
    """Return the E.164 form of a French phone number, or None if unusable."""
    if raw is None:
        return None
    raw = raw.strip()
    if not raw:
        return None
    # A national number (06..., 0692...) is read as metropolitan first, then
    # as each DROM, whose national numbers share the leading 0.
    for region in ("FR", "RE", "GP", "MQ", "GF", "YT"):
        try:
            number = phonenumbers.parse(raw, region)
        except NumberParseException:
            return None
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        if raw.startswith("+") or raw.startswith("00"):
            return None
    return None


def is_textable_mobile(e164: str | None) -> bool:
    """True for a valid mobile number of metropolitan France or the DROM."""
    if not e164:
        return False
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException:
        return False
    if not phonenumbers.is_valid_number(number):
        return False
    region = phonenumbers.region_code_for_number(number)
    if region not in TEXTABLE_REGIONS:
        return False
    return phonenumbers.number_type(number) in (
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )


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
