"""Flux / stock file parser: bytes in, validated rows out.

Pure: no database, no clock (``today`` is a parameter), no logging of personal
data. The caller upserts ``ParseResult.rows`` and reports ``rejected`` and
``warnings`` to the agents (reasons are in French).

Accepted input (see samples/README.md for the columns):

- CSV, comma or semicolon separated (detected from the header line), UTF-8 with
  or without BOM, or Windows-1252 when the bytes are not valid UTF-8, CRLF or LF.
  An optional Excel ``sep=;`` first line is understood.
- JSON Lines (one object per line, same field names), recognised when the text
  starts with ``{`` or the file name ends in ``.jsonl`` / ``.ndjson``. Values may
  be strings, booleans or null (integers are read as text).

Each bad row gets exactly one Rejection (the first problem found); a row whose
phone or e-mail is unusable is kept without it and gets a Warning.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any, Iterable

import phonenumbers

from worker.domain.contact import normalize_email, normalize_phone

__all__ = [
    "FluxRow",
    "Rejection",
    "Warning",
    "ParseResult",
    "FluxFormatError",
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
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

ORIENTATIONS = frozenset({"cd", "ft", "ml"})
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


def _parse_date(value: str, field_name: str, label: str) -> date:
    if not value:
        raise _Reject(field_name, f"{label} ({field_name}) manquante")
    if not _DATE_RE.fullmatch(value):
        raise _Reject(
            field_name,
            f"{label} « {value} » invalide : format attendu AAAA-MM-JJ (ex. 2024-05-03)",
        )
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _Reject(
            field_name, f"{label} « {value} » impossible : ce jour n'existe pas"
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
        f"valeur « {value} » invalide pour {field_name} : "
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

    def __init__(self, organisations: Iterable[str], today: date) -> None:
        self.orgs = {o.strip().upper(): o for o in organisations}
        self.today = today
        self.today_t = (today.year, today.month, today.day)
        self.seen: dict[str, int] = {}  # external_id -> first line
        self.seen_nir: dict[str, int] = {}  # NIR -> first line (two people never share one)
        self.rows: list[FluxRow] = []
        self.rejected: list[Rejection] = []
        self.warnings: list[Warning] = []

    def reject(self, line: int, external_id: str | None, field_name: str, reason: str) -> None:
        self.rejected.append(Rejection(line, external_id or None, field_name, reason))

    def add(self, line: int, rec: dict[str, str], extra: dict[str, str]) -> None:
        ext = rec.get("external_id", "")
        try:
            row = self._build(line, rec, extra)
        except _Reject as exc:
            self.rejected.append(Rejection(line, ext or None, exc.field, exc.reason))
            return
        self.rows.append(row)

    def _build(self, line: int, rec: dict[str, str], extra: dict[str, str]) -> FluxRow:
        get = rec.get
        # 1. identity in the file
        ext = get("external_id", "")
        if not ext:
            raise _Reject("external_id", "identifiant (external_id) manquant")
        first_line = self.seen.get(ext)
        if first_line is not None:
            raise _Reject(
                "external_id",
                f"external_id « {ext} » déjà présent ligne {first_line} du fichier : "
                "ligne ignorée",
            )
        self.seen[ext] = line

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
            raise _Reject("postcode", f"code postal « {postcode} » invalide : 5 chiffres attendus")

        # 5. who follows the person
        org_raw = get("organisation", "")
        if not org_raw:
            raise _Reject("organisation", "organisation manquante")
        organisation = self.orgs.get(org_raw.upper())
        if organisation is None:
            raise _Reject("organisation", f"organisation « {org_raw} » inconnue du territoire")
        orientation_raw = get("orientation", "")
        orientation: str | None = None
        if orientation_raw:
            orientation = orientation_raw.lower()
            if orientation not in ORIENTATIONS:
                raise _Reject(
                    "orientation",
                    f"orientation « {orientation_raw} » inconnue : cd, ft, ml ou vide attendu",
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
                raise _Reject("sex", f"sexe « {sex_raw} » invalide : F, M ou vide attendu")

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


def _decode(data: bytes) -> tuple[str, str]:
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
    if b"\x00" in data:
        raise FluxFormatError("fichier non reconnu : contenu binaire, ni CSV ni JSON Lines")
    bom = data.startswith(_UTF8_BOM)
    body = data[3:] if bom else data
    try:
        return body.decode("utf-8"), ("utf-8-sig" if bom else "utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return body.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        raise FluxFormatError(
            "encodage non reconnu : UTF-8 ou Windows-1252 attendu"
        ) from None


def _missing_columns_error(missing: list[str], where: str) -> FluxFormatError:
    plural = "s" if len(missing) > 1 else ""
    return FluxFormatError(
        f"colonne{plural} obligatoire{plural} absente{plural} {where} : {', '.join(missing)}"
    )


# --------------------------------------------------------------------------- CSV


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

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        raw_header = next(reader)
    except (StopIteration, csv.Error):
        raise FluxFormatError("en-tête CSV illisible") from None
    header = [h.strip().lstrip("\ufeff").lower() for h in raw_header]

    seen_cols: set[str] = set()
    for name in header:
        if name and name in seen_cols:
            raise FluxFormatError(f"colonne « {name} » en double dans l'en-tête")
        seen_cols.add(name)
    missing = [c for c in REQUIRED_COLUMNS if c not in seen_cols]
    if missing:
        shown = "virgule" if delimiter == "," else "point-virgule"
        raise _missing_columns_error(
            missing,
            f"de l'en-tête (séparateur détecté : {shown} ; "
            "fichier CSV ou JSON Lines attendu)",
        )

    ncols = len(header)
    ext_idx = header.index("external_id")
    extra_cols = [(i, name) for i, name in enumerate(header) if name and name not in KNOWN_COLUMNS]
    known_cols = [(i, name) for i, name in enumerate(header) if name in KNOWN_COLUMNS]

    next_line = reader.line_num + 1 + line_offset
    while True:
        line = next_line
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error:
            v.reject(
                line,
                None,
                "ligne",
                "CSV illisible à partir de cette ligne (guillemet non fermé ?) : "
                "reste du fichier ignoré",
            )
            break
        next_line = reader.line_num + 1 + line_offset
        values = [x.strip() for x in values]
        if not any(values):
            continue  # blank line, or a spreadsheet's empty row ";;;;"
        if len(values) != ncols:
            end = next_line - 1
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
        v.add(line, rec, extra)


# --------------------------------------------------------------------------- JSON Lines


def _json_text(value: Any) -> str | None:
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
    keys_seen: set[str] = set()
    bad_lines = 0
    for lineno, raw in enumerate(text.split("\n"), start=1):
        raw = raw.strip()
        if not raw:
            continue
        try:
            obj = json.loads(raw)
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
        keys_seen.update(norm)
        records.append((lineno, norm))

    if not records and bad_lines:
        raise FluxFormatError("aucune ligne JSON valide : fichier JSON Lines inutilisable")
    missing = [c for c in REQUIRED_COLUMNS if c not in keys_seen]
    if missing:
        raise _missing_columns_error(missing, "de toutes les lignes du fichier JSON Lines")

    for lineno, obj in records:
        rec: dict[str, str] = {}
        extra: dict[str, str] = {}
        bad: tuple[str, str] | None = None
        for key, val in obj.items():
            if key not in KNOWN_COLUMNS:
                extra[key] = _json_text(val)
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
                rec[key] = str(val)
            elif bad is None:
                kind = "nombre décimal" if isinstance(val, float) else "objet ou liste"
                bad = (key, f"valeur inattendue pour {key} ({kind}) : texte attendu")
        if bad is not None:
            ext = obj.get("external_id")
            v.reject(lineno, ext.strip() if isinstance(ext, str) else None, bad[0], bad[1])
            continue
        v.add(lineno, rec, extra)


# --------------------------------------------------------------------------- entry points


def parse_flux(
    data: bytes,
    *,
    organisations: set[str] | frozenset[str],
    today: date,
    filename: str = "",
) -> ParseResult:
    """Parse a flux or stock file (CSV or JSON Lines) given as bytes.

    Raises FluxFormatError when the file as a whole is unusable.
    """
    if not data or not data.strip():
        raise FluxFormatError("fichier vide")
    text, encoding = _decode(data)
    stripped = text.lstrip()
    if not stripped:
        raise FluxFormatError("fichier vide")
    name = filename.lower()
    v = _Validator(organisations, today)
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
) -> ParseResult:
    """Read ``path`` and parse it with :func:`parse_flux`."""
    p = Path(path)
    return parse_flux(p.read_bytes(), organisations=organisations, today=today, filename=p.name)
