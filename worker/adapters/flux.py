"""Flux / stock file parser: bytes in, validated rows out.

Pure: no database, no clock (``today`` is a parameter), no logging of personal
data. The caller upserts ``ParseResult.rows`` and reports ``rejected`` and
``warnings`` to the agents (reasons are in French).

Accepted input (see samples/README.md for the columns):

- CSV, comma or semicolon separated (detected from the header line), CRLF or LF.
  An optional Excel ``sep=;`` first line is understood.
- JSON Lines (one object per line, same field names), recognised when the text
  starts with ``{`` or the file name ends in ``.jsonl`` / ``.ndjson``. Values may
  be strings, booleans or null (integers are read as text).
- Encoding decided per file, with evidence (:func:`_decode`): UTF-8 (with or
  without BOM) unless most non-ASCII bytes are not in well-formed UTF-8
  sequences, then Windows-1252. A line that does not fit the file's encoding (a
  stray cp1252 byte in a UTF-8 file, a UTF-8 line in a cp1252 file) rejects its
  row alone: a file is never decoded wholesale into mojibake.

Each bad row gets exactly one Rejection (the first problem found); a row whose
phone or e-mail is unusable is kept without it and gets a Warning. Refused per
row: a value longer than its database column (:data:`FIELD_MAX_LENGTHS`, read
from the store's models), a field over 128 KiB, control characters, bidi
overrides/isolates and U+FFFD in any field, text that looks double-encoded
("Ã©") and a spreadsheet formula prefix (``= + - @``) at the start of an
identity field (:data:`IDENTITY_FIELDS`). Values quoted in reasons are cut short.

Refused as a whole (:class:`FluxFormatError`): a stock file given as a flux
(stock columns such as ``segment``, or most droits opened more than
:data:`STOCK_DROIT_AGE_DAYS` before the file's newest one). Columns that are
neither the flux's nor in ``extra_columns`` (``config/flux_columns.yaml``) are
dropped with one warning naming them (never their values).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field, fields
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Iterable

import phonenumbers

from worker.adapters.store.models import Person
from worker.domain.contact import DROM_NSN_PREFIXES, normalize_email, normalize_phone

__all__ = [
    "FluxRow",
    "Rejection",
    "Warning",
    "ParseResult",
    "FluxFormatError",
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "FIELD_MAX_LENGTHS",
    "IDENTITY_FIELDS",
    "MAX_FIELD_CHARS",
    "STOCK_DROIT_AGE_DAYS",
    "parse_flux",
    "parse_flux_file",
    "row_fingerprint",
]

REQUIRED_COLUMNS: tuple[str, ...] = (
    "external_id",
    "last_name",
    "first_name",
    "birth_date",
    "address_line1",
    "postcode",
    "city",
    "droit_opened_on",
    "organisation",
)
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "nir",
    "sex",
    "address_line2",
    "phone",
    "email",
    "orientation",
    "ft_registered",
    "droits_devoirs",
)
KNOWN_COLUMNS: frozenset[str] = frozenset(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
BOOLEAN_COLUMNS: frozenset[str] = frozenset({"ft_registered", "droits_devoirs"})

ORIENTATIONS = frozenset({"cd", "ft", "ml", "msa"})  # msa: followed by the MSA, never invited (no case)
MIN_AGE_AT_DROIT = 16  # years
MAX_AGE = 120  # years
MIN_BIRTH_YEAR = 1900

_TRUE = frozenset({"true", "1", "oui", "vrai"})
_FALSE = frozenset({"false", "0", "non", "faux"})
_SEXES = {"F": "F", "M": "M"}

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_POSTCODE_RE = re.compile(r"\d{5}", re.ASCII)
_NIR_RE = re.compile(r"\d{5}(?:\d{2}|2[AB])\d{8}", re.ASCII)
_NIR_STRIP = str.maketrans("", "", " .-")

_UTF8_BOM = b"\xef\xbb\xbf"

# Limits: the store's columns are the one source (a longer value is refused per row,
# on every backend, instead of a driver error on PostgreSQL and silent storage on SQLite).
FIELD_MAX_LENGTHS: dict[str, int] = {
    c.name: c.type.length for c in Person.__table__.columns
    if c.name in KNOWN_COLUMNS and getattr(c.type, "length", None)
}
MAX_FIELD_CHARS = 128 * 1024  # any field; the csv module's own limit is lifted (the file is in memory)
EXTRA_MAX_LENGTH = 1000  # a whitelisted extra column's value
# Identity fields: printed on letters and in exports; formula prefixes refused there.
IDENTITY_FIELDS: tuple[str, ...] = ("external_id", "last_name", "first_name", "address_line1", "address_line2",
                                    "city")
_RAW_LIMITED = tuple(f for f in IDENTITY_FIELDS if f in FIELD_MAX_LENGTHS)
_RAW_LIMITS = tuple((f, FIELD_MAX_LENGTHS[f]) for f in _RAW_LIMITED)
_BACKSTOP_LIMITED = tuple(f for f in FIELD_MAX_LENGTHS if f not in _RAW_LIMITED)
_FORMULA_PREFIXES = frozenset("=+-@")
# C0/C1 controls, DEL, bidi embeddings/overrides (U+202A-U+202E) and isolates (U+2066-U+2069),
# and U+FFFD (a character lost to a bad conversion).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ufffd]")

# Stock, not flux: its columns, or most droits opened long before the file's newest one
# (a flux holds the droits of the last weeks; the stock spans years). Measured from the
# file's newest droit, not from today, so that a flux processed late stays a flux (its
# people are invited at once and counted late).
STOCK_COLUMNS: tuple[str, ...] = ("segment", "priority", "contract", "contrat")
STOCK_DROIT_AGE_DAYS = 183

_LINE_BREAK = re.compile(r"(\r\n|\r|\n)")  # as csv + io.StringIO(newline="") split lines
_LINE_BREAK_B = re.compile(rb"(\r\n|\r|\n)")
_UTF8_SEQUENCE = re.compile(  # one well-formed multi-byte UTF-8 character
    rb"[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    rb"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
    rb"|\xf4[\x80-\x8f][\x80-\xbf]{2}")
_ASCII_BYTES = bytes(range(128))


# --------------------------------------------------------------------------- types


@dataclass(frozen=True)
class FluxRow:
    line: int  # 1 = header line for CSV; 1 = first line for JSONL
    external_id: str
    nir: str | None
    last_name: str
    first_name: str
    birth_date: date
    sex: str | None
    address_line1: str
    address_line2: str | None
    postcode: str
    city: str
    phone: str | None
    email: str | None
    droit_opened_on: date
    orientation: str | None
    ft_registered: bool
    organisation: str
    droits_devoirs: bool
    # Unknown columns (e.g. the stock file's segment, priority), as strings.
    # Not part of the hash so that rows stay hashable.
    extra: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Rejection:
    line: int
    external_id: str | None
    field: str
    reason: str  # in French, for agents


@dataclass(frozen=True)
class Warning:  # noqa: A001 - name required by the ingestion contract; the row is kept
    line: int
    external_id: str | None
    field: str
    reason: str  # in French, for agents


@dataclass
class ParseResult:
    rows: list[FluxRow]
    rejected: list[Rejection]
    warnings: list[Warning]
    encoding: str  # "utf-8" | "utf-8-sig" | "cp1252"
    fmt: str  # "csv" | "jsonl"


class FluxFormatError(Exception):
    """The whole file is unusable; the message (in French) says why."""


# --------------------------------------------------------------------------- fingerprint

_FINGERPRINT_FIELDS = tuple(f.name for f in fields(FluxRow) if f.name != "line")


def _fp_value(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return sorted((str(k), str(v)) for k, v in value.items())
    return value


def row_fingerprint(row: FluxRow) -> str:
    """sha256 (hex) of every person field except ``line``: equal means unchanged."""
    payload = [[name, _fp_value(getattr(row, name))] for name in _FINGERPRINT_FIELDS]
    blob = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- phone fast path
#
# worker.domain.contact.normalize_phone is the reference, but libphonenumber's parse +
# validation costs ~40-100 µs a number, most of a 100 000-row file's time. The
# usual French writings (ten digits in pairs separated by spaces or dots, or +33 and nine digits,
# "0033 6 ...") are recognised here and checked against libphonenumber's own FR
# metadata (same rule as is_valid_number: the general pattern and one type
# pattern match); anything else, or any number not valid in metropolitan France
# (DROM numbers, odd writings), goes to normalize_phone. Equivalence is tested.

_PHONE_SHAPE = re.compile(r"(?:\+33|0033|0)[ .\-]?([1-9](?:[ .\-]?\d){8})", re.ASCII)
_PHONE_SEPARATORS = str.maketrans("", "", " .-")


def _compile_fr_phone_rules() -> tuple[Any, list[Any]] | None:
    try:
        md = phonenumbers.PhoneMetadata.metadata_for_region("FR")
    except Exception:  # pragma: no cover - metadata layout changed: no fast path
        return None

    def desc(d: Any) -> Any:
        if d is None or not d.national_number_pattern:
            return None
        return (frozenset(d.possible_length or ()), re.compile(d.national_number_pattern))

    general = desc(md.general_desc)
    if general is None:  # pragma: no cover
        return None
    types = [
        desc(getattr(md, name, None))
        # Validity = any type matches, so order is free: most likely first.
        for name in (
            "mobile", "fixed_line", "voip", "toll_free", "shared_cost", "premium_rate",
            "uan", "personal_number", "pager", "voicemail",
        )
    ]
    return general, [t for t in types if t is not None]


_FR_PHONE_RULES = _compile_fr_phone_rules()


def _desc_matches(nsn: str, rule: Any) -> bool:
    lengths, pattern = rule
    if lengths and len(nsn) not in lengths:
        return False
    return pattern.fullmatch(nsn) is not None


def _fast_fr_phone(raw: str) -> str | None:
    """E.164 for a common writing of a valid metropolitan number, else None (= ask normalize_phone)."""
    if _FR_PHONE_RULES is None:
        return None
    m = _PHONE_SHAPE.fullmatch(raw)
    if m is None:
        return None
    nsn = m.group(1).translate(_PHONE_SEPARATORS)
    if nsn[:3] in DROM_NSN_PREFIXES:  # 0596…, 0269…, 0639…: a DROM number (its own country code)
        return None
    general, types = _FR_PHONE_RULES
    if not _desc_matches(nsn, general):
        return None
    for rule in types:
        if _desc_matches(nsn, rule):
            return "+33" + nsn
    return None


def _normalize_phone(raw: str) -> str | None:
    return _fast_fr_phone(raw) or normalize_phone(raw)


# --------------------------------------------------------------------------- helpers


class _Reject(Exception):
    """Internal: first problem found on a row."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field_name
        self.reason = reason


def _fr_date(d: date) -> str:
    return d.strftime("%d/%m/%Y")


def _show(value: str, limit: int = 40) -> str:
    """A value quoted in a reason: cut short, without control or bidi characters."""
    value = _FORBIDDEN.sub("?", value[: limit + 1])
    return value if len(value) <= limit else value[:limit] + "…"


def _safe_id(value: object) -> str | None:
    """The row's external_id for a report, or None when it is itself unfit to be shown."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > FIELD_MAX_LENGTHS.get("external_id", 64):
        return None
    if _FORBIDDEN.search(value) or value[0] in _FORMULA_PREFIXES:
        return None
    return value


def _is_stock_column(name: str) -> bool:
    return name in STOCK_COLUMNS or name.startswith(("contract_", "contrat_"))


def _column_names(names: Iterable[str], limit: int = 20) -> str:
    shown = [_show(n) for n in sorted(names)]
    return ", ".join(shown[:limit]) + (f" (et {len(shown) - limit} autres)" if len(shown) > limit else "")


def _stock_error(why: str) -> FluxFormatError:
    return FluxFormatError(
        f"fichier de stock refusé comme flux : {why}. Pour ces personnes, utilisez l'import du stock "
        "(relance ingest --stock FICHIER) ; aucune ligne n'a été intégrée"
    )


def _looks_double_encoded(value: str) -> bool:
    """UTF-8 once read as Windows-1252 ("HÃ©lÃ¨ne" for "Hélène")."""
    try:
        return value.encode("cp1252").decode("utf-8") != value
    except UnicodeError:
        return False


_CHAR_KINDS = (("\u202a", "\u202e", "caractère de contrôle de l'écriture bidirectionnelle"),
               ("\u2066", "\u2069", "caractère de contrôle de l'écriture bidirectionnelle"),
               ("\ufffd", "\ufffd", "caractère de remplacement (texte mal converti)"))


def _check_text(name: str, value: str, limit: int | None, identity: bool) -> None:
    """Length, forbidden characters, formula prefix and double encoding of one value."""
    if len(value) > MAX_FIELD_CHARS:
        raise _Reject(name, f"champ {name} de plus de 128 Kio ({len(value)} caractères) : ligne ignorée")
    if limit is not None and len(value) > limit:
        raise _Reject(name, f"{name} trop long : {len(value)} caractères, {limit} au plus")
    bad = _FORBIDDEN.search(value)
    if bad is not None:
        ch = bad.group()
        kind = next((k for lo, hi, k in _CHAR_KINDS if lo <= ch <= hi), "caractère de contrôle")
        raise _Reject(name, f"{kind} (U+{ord(ch):04X}) dans {name} : refusé, corriger la ligne")
    if identity and value:
        if value[0] in _FORMULA_PREFIXES:
            raise _Reject(name, f"{name} commence par « {value[0]} » (début de formule de tableur) : refusé, "
                                "corriger la ligne")
        if not value.isascii() and _looks_double_encoded(value):
            raise _Reject(name, f"{name} mal encodé (UTF-8 relu en Windows-1252, ex. « Ã© » pour « é ») : "
                                "ligne ignorée, réexporter le fichier en UTF-8")


def _parse_date(value: str, field_name: str, label: str) -> date:
    if not value:
        raise _Reject(field_name, f"{label} ({field_name}) manquante")
    if not _DATE_RE.fullmatch(value):
        raise _Reject(
            field_name,
            f"{label} « {_show(value)} » invalide : format attendu AAAA-MM-JJ (ex. 2024-05-03)",
        )
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _Reject(
            field_name, f"{label} « {_show(value)} » impossible : ce jour n'existe pas"
        ) from None


def _parse_bool(value: str, field_name: str, default: bool) -> bool:
    if not value:
        return default
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise _Reject(
        field_name,
        f"valeur « {_show(value)} » invalide pour {field_name} : "
        "true/false, 1/0, oui/non ou vide attendu",
    )


def _check_nir(value: str) -> str:
    nir = value.translate(_NIR_STRIP).upper()
    if len(nir) != 15:
        raise _Reject("nir", f"NIR invalide : 15 caractères attendus (clé comprise), {len(nir)} reçus")
    if not _NIR_RE.fullmatch(nir):
        raise _Reject("nir", "NIR invalide : 13 chiffres (2A/2B pour la Corse) puis une clé de 2 chiffres attendus")
    body = nir[:13]
    if nir[5:7] == "2A":
        body = body[:5] + "19" + body[7:]
    elif nir[5:7] == "2B":
        body = body[:5] + "18" + body[7:]
    if 97 - int(body) % 97 != int(nir[13:]):
        raise _Reject("nir", "NIR invalide : clé de contrôle incorrecte")
    return nir


class _Validator:
    """Turns one record (column -> trimmed text) into a FluxRow or a rejection."""

    def __init__(self, organisations: Iterable[str], today: date, *, kind: str = "flux",
                 extra_columns: frozenset[str] = frozenset(),
                 bad_lines: dict[int, tuple[str, str]] | None = None) -> None:
        self.orgs = {o.strip().upper(): o for o in organisations}
        self.today = today
        self.today_t = (today.year, today.month, today.day)
        self.kind = kind
        self.extra_columns = extra_columns  # unknown columns kept in extra
        # physical line -> (what marks a damaged value: "\ufffd" or "non-ascii", why it does not fit the encoding)
        self.bad_lines = bad_lines or {}
        self.seen: dict[str, int] = {}  # external_id -> first line
        self.seen_nir: dict[str, int] = {}  # NIR -> first line (two people never share one)
        self.rows: list[FluxRow] = []
        self.rejected: list[Rejection] = []
        self.warnings: list[Warning] = []

    def reject(self, line: int, external_id: str | None, field_name: str, reason: str) -> None:
        self.rejected.append(Rejection(line, _safe_id(external_id), field_name, reason))

    def keeps(self, name: str) -> bool:
        """Is this unknown column kept in ``extra``?"""
        return name in self.extra_columns or (self.kind == "stock" and _is_stock_column(name))

    def unknown_columns(self, line: int, names: Iterable[str]) -> None:
        names = set(names)
        if names:
            plural = "s" if len(names) > 1 else ""
            self.warnings.append(Warning(
                line, None, "colonnes",
                f"colonne{plural} inconnue{plural} ignorée{plural}, non enregistrée{plural} : {_column_names(names)} "
                "(à ajouter à config/flux_columns.yaml si elle est nécessaire au suivi)"))

    def add(self, line: int, rec: dict[str, str], extra: dict[str, str], end: int | None = None) -> None:
        ext = rec.get("external_id", "")
        if self.bad_lines:
            # A line that does not fit the file's encoding rejects its row if a kept value was damaged.
            for n in range(line, (end or line) + 1):
                if n in self.bad_lines:
                    mark, reason = self.bad_lines[n]
                    damaged = next((k for values in (rec, extra) for k, value in values.items()
                                    if (mark in value if mark == "\ufffd" else not value.isascii())), None)
                    if damaged is not None:
                        self.reject(line, ext, damaged, reason)
                        return
        try:
            row = self._build(line, rec, extra)
        except _Reject as exc:
            self.reject(line, ext, exc.field, exc.reason)
            return
        except RecursionError:
            self.reject(line, ext, "ligne", "valeur trop imbriquée : ligne ignorée")
            return
        self.rows.append(row)

    def _build(self, line: int, rec: dict[str, str], extra: dict[str, str]) -> FluxRow:
        get = rec.get
        # 1. identity in the file
        ext = get("external_id", "")
        if not ext:
            raise _Reject("external_id", "identifiant (external_id) manquant")
        _check_text("external_id", ext, FIELD_MAX_LENGTHS.get("external_id"), True)
        first_line = self.seen.get(ext)
        if first_line is not None:
            raise _Reject(
                "external_id",
                f"external_id « {ext} » déjà présent ligne {first_line} du fichier : "
                "ligne ignorée",
            )
        self.seen[ext] = line
        # Every value: length, forbidden characters, formula prefix (identity fields).
        joined = " ".join(rec.values())
        if len(joined) <= MAX_FIELD_CHARS and not _FORBIDDEN.search(joined):
            for name, limit in _RAW_LIMITS:  # the common case: lengths and prefixes only
                value = get(name)
                if value and (len(value) > limit or value[0] in _FORMULA_PREFIXES
                              or (not value.isascii() and _looks_double_encoded(value))):
                    _check_text(name, value, limit, True)
        else:
            for name, value in rec.items():
                _check_text(name, value, FIELD_MAX_LENGTHS.get(name) if name in _RAW_LIMITED else None,
                            name in IDENTITY_FIELDS)
        for name, value in extra.items():
            _check_text(name, value, EXTRA_MAX_LENGTH, False)

        # 2. names
        last_name = get("last_name", "")
        if not last_name:
            raise _Reject("last_name", "nom de famille (last_name) manquant")
        first_name = get("first_name", "")
        if not first_name:
            raise _Reject("first_name", "prénom (first_name) manquant")

        # 3. dates
        birth = _parse_date(get("birth_date", ""), "birth_date", "date de naissance")
        droit = _parse_date(
            get("droit_opened_on", ""), "droit_opened_on", "date d'ouverture du droit"
        )
        if droit > self.today:
            raise _Reject(
                "droit_opened_on",
                f"date d'ouverture du droit {_fr_date(droit)} dans le futur "
                f"(fichier traité le {_fr_date(self.today)})",
            )
        if birth.year < MIN_BIRTH_YEAR:
            raise _Reject("birth_date", f"date de naissance invraisemblable (avant {MIN_BIRTH_YEAR})")
        if (birth.year + MAX_AGE, birth.month, birth.day) < self.today_t:
            raise _Reject("birth_date", f"date de naissance invraisemblable (plus de {MAX_AGE} ans)")
        if (birth.year + MIN_AGE_AT_DROIT, birth.month, birth.day) > (
            droit.year,
            droit.month,
            droit.day,
        ):
            raise _Reject(
                "birth_date",
                "date de naissance invraisemblable "
                f"(moins de {MIN_AGE_AT_DROIT} ans à l'ouverture du droit)",
            )

        # 4. postal address
        address_line1 = get("address_line1", "")
        city = get("city", "")
        if not address_line1 and not city:
            raise _Reject(
                "address_line1",
                "adresse postale absente (adresse et commune vides) : aucun courrier possible",
            )
        if not address_line1:
            raise _Reject(
                "address_line1",
                "adresse postale incomplète : numéro et voie (address_line1) manquants",
            )
        if not city:
            raise _Reject("city", "adresse postale incomplète : commune (city) manquante")
        postcode = get("postcode", "")
        if not postcode:
            raise _Reject("postcode", "code postal (postcode) manquant")
        if not _POSTCODE_RE.fullmatch(postcode):
            raise _Reject("postcode", f"code postal « {_show(postcode)} » invalide : 5 chiffres attendus")

        # 5. who follows the person
        org_raw = get("organisation", "")
        if not org_raw:
            raise _Reject("organisation", "organisation manquante")
        organisation = self.orgs.get(org_raw.upper())
        if organisation is None:
            raise _Reject("organisation", f"organisation « {_show(org_raw)} » inconnue du territoire")
        orientation_raw = get("orientation", "")
        orientation: str | None = None
        if orientation_raw:
            orientation = orientation_raw.lower()
            if orientation not in ORIENTATIONS:
                raise _Reject(
                    "orientation",
                    f"orientation « {_show(orientation_raw)} » inconnue : cd, ft, ml, msa ou vide attendu",
                )

        # 6. optional identity fields
        nir_raw = get("nir", "")
        nir = _check_nir(nir_raw) if nir_raw else None
        if nir is not None:
            nir_line = self.seen_nir.get(nir)
            if nir_line is not None:
                raise _Reject("nir", f"même NIR qu'une autre personne ligne {nir_line} du fichier : ligne ignorée")
            self.seen_nir[nir] = line
        sex_raw = get("sex", "")
        sex: str | None = None
        if sex_raw:
            sex = _SEXES.get(sex_raw.upper())
            if sex is None:
                raise _Reject("sex", f"sexe « {_show(sex_raw)} » invalide : F, M ou vide attendu")

        # 7. flags
        ft_registered = _parse_bool(get("ft_registered", ""), "ft_registered", False)
        droits_devoirs = _parse_bool(get("droits_devoirs", ""), "droits_devoirs", True)

        # 8. contact: never a reason to reject, letters still go out
        phone_raw = get("phone", "")
        phone = _normalize_phone(phone_raw) if phone_raw else None
        if phone_raw and phone is None:
            self.warnings.append(
                Warning(
                    line,
                    ext,
                    "phone",
                    "numéro de téléphone inutilisable : ignoré (pas de SMS, courriers seulement)",
                )
            )
        email_raw = get("email", "")
        email = normalize_email(email_raw) if email_raw else None
        if email_raw and email is None:
            self.warnings.append(
                Warning(line, ext, "email", "adresse e-mail inutilisable : ignorée (pas d'e-mail)")
            )

        normalised = {"sex": sex, "postcode": postcode, "phone": phone, "email": email,
                      "orientation": orientation, "organisation": organisation}
        for name in _BACKSTOP_LIMITED:  # normalised values (phone, e-mail, organisation code...)
            value = normalised.get(name)
            if isinstance(value, str) and len(value) > FIELD_MAX_LENGTHS[name]:
                raise _Reject(name, f"{name} trop long : {len(value)} caractères, {FIELD_MAX_LENGTHS[name]} au plus")
        return FluxRow(
            line=line,
            external_id=ext,
            nir=nir,
            last_name=last_name,
            first_name=first_name,
            birth_date=birth,
            sex=sex,
            address_line1=address_line1,
            address_line2=get("address_line2", "") or None,
            postcode=postcode,
            city=city,
            phone=phone,
            email=email,
            droit_opened_on=droit,
            orientation=orientation,
            ft_registered=ft_registered,
            organisation=organisation,
            droits_devoirs=droits_devoirs,
            extra=extra,
        )


# --------------------------------------------------------------------------- decoding


def _decode(data: bytes) -> tuple[str, str, dict[int, tuple[str, str]]]:
    """(text, encoding, {physical line: (mark of a damaged value, why it does not fit the file's encoding)}).

    Valid UTF-8 is UTF-8. Otherwise the evidence is counted: bytes in well-formed
    UTF-8 sequences against the other non-ASCII bytes. A BOM, or at least as many
    bytes in UTF-8 sequences, make the file UTF-8 and each invalid line suspect
    (decoded with U+FFFD, for the parsing only); otherwise the file is Windows-1252
    and each line holding a UTF-8 sequence (mixed encodings) or a byte undefined in
    cp1252 is suspect. A suspect line rejects its row if one of the row's kept
    values is damaged (:meth:`_Validator.add`).
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise FluxFormatError(
            "encodage UTF-16 non pris en charge : enregistrez le fichier en CSV UTF-8 "
            "(séparateur virgule ou point-virgule)"
        )
    if data.startswith(b"PK\x03\x04"):
        raise FluxFormatError(
            "fichier non reconnu : classeur Excel (.xlsx) ou archive, ni CSV ni JSON Lines ; "
            "enregistrez-le au format CSV"
        )
    if data.startswith(b"%PDF"):
        raise FluxFormatError("fichier non reconnu : document PDF, ni CSV ni JSON Lines")
    bom = data.startswith(_UTF8_BOM)
    body = data[3:] if bom else data
    if b"\x00" in _LINE_BREAK_B.split(body[:4096], 1)[0]:
        # NUL in the header line: binary (or UTF-16 without BOM). Elsewhere a NUL rejects its row.
        raise FluxFormatError("fichier non reconnu : contenu binaire, ni CSV ni JSON Lines")
    try:
        return body.decode("utf-8"), ("utf-8-sig" if bom else "utf-8"), {}
    except UnicodeDecodeError:
        pass
    parts = _LINE_BREAK_B.split(body)
    lines, seps = parts[0::2], parts[1::2]
    not_utf8: dict[int, int] = {}  # line -> first offending byte
    for n, seg in enumerate(lines, start=1):
        if not seg.isascii():
            try:
                seg.decode("utf-8")
            except UnicodeDecodeError as exc:
                not_utf8[n] = seg[exc.start]
    # The evidence: bytes in well-formed UTF-8 sequences against the other non-ASCII bytes.
    in_utf8 = len(b"".join(_UTF8_SEQUENCE.findall(body)))
    non_ascii = len(body.translate(None, _ASCII_BYTES))
    bad: dict[int, tuple[str, str]] = {}  # line -> (mark of a damaged value, reason)
    if bom or in_utf8 >= non_ascii - in_utf8:
        encoding = "utf-8-sig" if bom else "utf-8"
        decoded = [seg.decode("utf-8", "replace") for seg in lines]
        for n, byte in not_utf8.items():
            bad[n] = ("\ufffd", f"octet 0x{byte:02X} invalide en UTF-8 (caractère saisi dans un autre encodage ?) "
                                "alors que le fichier est en UTF-8 : ligne ignorée, corriger le caractère et "
                                "réenregistrer en UTF-8")
    else:
        encoding = "cp1252"
        decoded = []
        for n, seg in enumerate(lines, start=1):
            if not seg.isascii() and _UTF8_SEQUENCE.search(seg):
                bad[n] = ("non-ascii", "encodage mélangé : ligne en UTF-8 dans un fichier Windows-1252 : ligne "
                                       "ignorée, enregistrer tout le fichier dans un seul encodage (UTF-8 de préférence)")
            try:
                decoded.append(seg.decode("cp1252"))
            except UnicodeDecodeError as exc:
                bad[n] = ("\ufffd", f"octet 0x{seg[exc.start]:02X} non défini en Windows-1252 : ligne ignorée, "
                                    "enregistrer le fichier en UTF-8")
                decoded.append(seg.decode("cp1252", "replace"))
    out = [decoded[0]]
    for sep, line in zip(seps, decoded[1:]):
        out.append(sep.decode("ascii"))
        out.append(line)
    return "".join(out), encoding, bad


def _missing_columns_error(missing: list[str], where: str) -> FluxFormatError:
    plural = "s" if len(missing) > 1 else ""
    return FluxFormatError(
        f"colonne{plural} obligatoire{plural} absente{plural} {where} : {', '.join(missing)}"
    )


# --------------------------------------------------------------------------- CSV


def _lift_csv_field_limit(size: int) -> None:
    """The csv module refuses fields over 128 KiB with an error that ends the reading; the
    file is in memory already, so the limit only ever goes up, and MAX_FIELD_CHARS is
    checked per row instead."""
    if csv.field_size_limit() <= size:
        csv.field_size_limit(size + 1)


def _parse_csv(text: str, v: _Validator) -> None:
    first_nl = text.find("\n")
    first = (text if first_nl < 0 else text[:first_nl]).strip()
    line_offset = 0
    delimiter = None
    if first.lower().startswith("sep=") and len(first) == 5:
        # Excel's "sep=;" hint line.
        delimiter = first[4]
        text = "" if first_nl < 0 else text[first_nl + 1 :]
        line_offset = 1
        first_nl = text.find("\n")
        first = (text if first_nl < 0 else text[:first_nl]).strip()
    if not first:
        raise FluxFormatError("en-tête absent : la première ligne du fichier est vide")
    if delimiter is None:
        delimiter = ";" if first.count(";") > first.count(",") else ","

    _lift_csv_field_limit(len(text))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        raw_header = next(reader)
    except (StopIteration, csv.Error):
        raise FluxFormatError("en-tête CSV illisible") from None
    header = [h.strip().lstrip("\ufeff").lower() for h in raw_header]
    header_line = reader.line_num + line_offset

    seen_cols: set[str] = set()
    for name in header:
        if name and name in seen_cols:
            raise FluxFormatError(f"colonne « {_show(name)} » en double dans l'en-tête")
        seen_cols.add(name)
    missing = [c for c in REQUIRED_COLUMNS if c not in seen_cols]
    if missing:
        shown = "virgule" if delimiter == "," else "point-virgule"
        raise _missing_columns_error(
            missing,
            f"de l'en-tête (séparateur détecté : {shown} ; "
            "fichier CSV ou JSON Lines attendu)",
        )
    stock = [name for name in header if _is_stock_column(name)]
    if stock and v.kind == "flux":
        raise _stock_error(f"colonnes propres au stock ({_column_names(stock)})")

    ncols = len(header)
    ext_idx = header.index("external_id")
    extra_cols = [(i, name) for i, name in enumerate(header) if name and name not in KNOWN_COLUMNS and v.keeps(name)]
    known_cols = [(i, name) for i, name in enumerate(header) if name in KNOWN_COLUMNS]
    v.unknown_columns(header_line, (n for n in header if n and n not in KNOWN_COLUMNS and not v.keeps(n)))

    next_line = reader.line_num + 1 + line_offset
    while True:
        line = next_line
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error:
            next_line = reader.line_num + 1 + line_offset
            v.reject(line, None, "ligne", "CSV illisible sur cette ligne : enregistrement ignoré")
            continue
        next_line = reader.line_num + 1 + line_offset
        values = [x.strip() for x in values]
        if not any(values):
            continue  # blank line, or a spreadsheet's empty row ";;;;"
        end = next_line - 1
        if len(values) != ncols:
            span = f" ; enregistrement étalé sur les lignes {line} à {end}" if end > line else ""
            v.reject(
                line,
                values[ext_idx] if ext_idx < len(values) else None,
                "ligne",
                f"{len(values)} champs au lieu de {ncols} "
                f"(séparateur ou guillemet mal placé ?){span}",
            )
            continue
        rec = {name: values[i] for i, name in known_cols}
        extra = {name: values[i] for i, name in extra_cols}
        v.add(line, rec, extra, end)


# --------------------------------------------------------------------------- JSON Lines


def _json_text(value: Any) -> str:
    """Text for an extra column."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _parse_jsonl(text: str, v: _Validator) -> None:
    records: list[tuple[int, dict[str, Any]]] = []
    keys_seen: dict[str, int] = {}  # key -> first line
    bad_lines = 0
    for lineno, raw in enumerate(_LINE_BREAK.split(text)[0::2], start=1):
        raw = raw.strip()
        if not raw:
            continue
        try:
            obj = json.loads(raw)
        except RecursionError:
            v.reject(lineno, None, "ligne", "ligne JSON trop imbriquée : ligne ignorée")
            bad_lines += 1
            continue
        except ValueError as exc:
            col = getattr(exc, "colno", None)
            where = f" (colonne {col})" if col else ""
            v.reject(lineno, None, "ligne", f"ligne JSON illisible{where} : ligne ignorée")
            bad_lines += 1
            continue
        if not isinstance(obj, dict):
            v.reject(lineno, None, "ligne", "objet JSON {…} attendu sur chaque ligne : ligne ignorée")
            bad_lines += 1
            continue
        norm = {str(k).strip().lower(): val for k, val in obj.items()}
        for key in norm:
            keys_seen.setdefault(key, lineno)
        records.append((lineno, norm))

    if not records and bad_lines:
        raise FluxFormatError("aucune ligne JSON valide : fichier JSON Lines inutilisable")
    missing = [c for c in REQUIRED_COLUMNS if c not in keys_seen]
    if missing:
        raise _missing_columns_error(missing, "de toutes les lignes du fichier JSON Lines")
    stock = [key for key in keys_seen if _is_stock_column(key)]
    if stock and v.kind == "flux":
        raise _stock_error(f"champs propres au stock ({_column_names(stock)})")
    unknown = {k: n for k, n in keys_seen.items() if k and k not in KNOWN_COLUMNS and not v.keeps(k)}
    if unknown:
        v.unknown_columns(min(unknown.values()), unknown)

    for lineno, obj in records:
        rec: dict[str, str] = {}
        extra: dict[str, str] = {}
        bad: tuple[str, str] | None = None
        for key, val in obj.items():
            if key not in KNOWN_COLUMNS:
                if key and v.keeps(key):
                    try:
                        extra[key] = _json_text(val)
                    except (RecursionError, ValueError):
                        bad = bad or (key, f"valeur inattendue pour {_show(key)} (trop imbriquée) : texte attendu")
                continue
            if val is None:
                rec[key] = ""
            elif isinstance(val, str):
                rec[key] = val.strip()
            elif isinstance(val, bool):
                if key in BOOLEAN_COLUMNS:
                    rec[key] = "true" if val else "false"
                elif bad is None:
                    bad = (key, f"valeur booléenne inattendue pour {key} : texte attendu")
            elif isinstance(val, int):
                try:
                    rec[key] = str(val)
                except ValueError:  # over the interpreter's digit limit
                    bad = bad or (key, f"nombre trop long pour {key} : texte attendu")
            elif bad is None:
                kind = "nombre décimal" if isinstance(val, float) else "objet ou liste"
                bad = (key, f"valeur inattendue pour {key} ({kind}) : texte attendu")
        if bad is not None:
            v.reject(lineno, obj.get("external_id"), bad[0], bad[1])
            continue
        v.add(lineno, rec, extra)


# --------------------------------------------------------------------------- entry points


def _check_not_stock(rows: list[FluxRow]) -> None:
    """Most droits opened long before the file's newest one: a stock, not a flux."""
    if not rows:
        return
    newest = max(r.droit_opened_on for r in rows)
    cutoff = newest - timedelta(days=STOCK_DROIT_AGE_DAYS)
    old = sum(1 for r in rows if r.droit_opened_on < cutoff)
    if old * 2 > len(rows):
        raise _stock_error(
            f"{old} lignes sur {len(rows)} ont un droit ouvert plus de {STOCK_DROIT_AGE_DAYS} jours avant le plus "
            f"récent du fichier ({_fr_date(newest)}), alors qu'un flux ne porte que les droits des dernières semaines"
        )


def parse_flux(
    data: bytes,
    *,
    organisations: set[str] | frozenset[str],
    today: date,
    filename: str = "",
    kind: str = "flux",
    extra_columns: frozenset[str] | set[str] = frozenset(),
) -> ParseResult:
    """Parse a flux file (CSV or JSON Lines) given as bytes.

    ``kind="stock"`` is for the stock import (``relance ingest --stock``): stock columns are kept in
    ``extra`` and the file is not refused as a stock. ``extra_columns``: the
    unknown columns to keep in ``extra`` (config/flux_columns.yaml); the others are
    dropped with one warning. Raises FluxFormatError when the file as a whole is
    unusable, or is a stock given as a flux.
    """
    if kind not in ("flux", "stock"):
        raise ValueError(f"kind: flux or stock, not {kind!r}")
    if not data or not data.strip():
        raise FluxFormatError("fichier vide")
    text, encoding, bad_lines = _decode(data)
    stripped = text.lstrip()
    if not stripped:
        raise FluxFormatError("fichier vide")
    name = filename.lower()
    v = _Validator(organisations, today, kind=kind,
                   extra_columns=frozenset(c.strip().lower() for c in extra_columns), bad_lines=bad_lines)
    if stripped.startswith("{") or name.endswith((".jsonl", ".ndjson")):
        fmt = "jsonl"
        _parse_jsonl(text, v)
    else:
        if stripped.startswith("["):
            raise FluxFormatError(
                "tableau JSON non pris en charge : une personne par ligne attendue "
                "(JSON Lines) ou un fichier CSV"
            )
        fmt = "csv"
        _parse_csv(text, v)
    if kind == "flux":
        _check_not_stock(v.rows)
    # JSON Lines reports unreadable lines first: present everything in file order.
    v.rejected.sort(key=lambda r: r.line)
    return ParseResult(
        rows=v.rows, rejected=v.rejected, warnings=v.warnings, encoding=encoding, fmt=fmt
    )


def parse_flux_file(
    path: str | Path,
    *,
    organisations: set[str] | frozenset[str],
    today: date,
    kind: str = "flux",
    extra_columns: frozenset[str] | set[str] = frozenset(),
) -> ParseResult:
    """Read ``path`` and parse it with :func:`parse_flux`."""
    p = Path(path)
    return parse_flux(p.read_bytes(), organisations=organisations, today=today, filename=p.name, kind=kind,
                      extra_columns=extra_columns)
