"""French postal address block (AFNOR NF Z10-011), as a pure function.

The standard, as La Poste sums it up:

- at most 6 lines, at most 38 characters each (spaces included), no blank line,
  aligned left;
- lines ordered from the recipient's identity to the locality:
  1. identity (civility, first name, last name),
  2. inside the building (appartement, étage, escalier, « chez … »),
  3. outside the building (bâtiment, entrée, résidence),
  4. number and street (or lieu-dit when there is no street),
  5. lieu-dit / special delivery mention (BP, TSA …),
  6. postcode (5 digits) and locality;
- from the street line (line 4) down: no punctuation (no comma, hyphen,
  apostrophe, full stop), letters, digits and spaces only, and the three last
  lines in capitals; the last line in capitals without accents;
  ``SAINT-NICOLAS-DE-REDON`` becomes ``SAINT NICOLAS DE REDON``,
  ``VAL D'ANAST`` becomes ``VAL D ANAST``;
- abbreviations (``BOULEVARD`` → ``BD`` …) only when a line does not fit.

Lines 1 to 3 may keep their case, accents and punctuation ("Bâtiment B",
"Chez M. Dupont"); the last name is printed in capitals, as French
administrations do.

A flux row has one complement field (``line2``). Its parts (separated by ``;``,
a comma or a line break) go where La Poste wants them:

- a special delivery mention — BP (boîte postale), CS (course spéciale), TSA
  (tri service arrivée) — goes *below* the street line (line 5), in postal form
  ("B.P. 12" → "BP 12");
- a CEDEX mention goes on the last line, after the locality ("35600 REDON CEDEX");
- the rest (inside or outside the building, « chez … ») goes above the street
  line, kept as written; several parts are split into several lines when the
  whole does not fit on one line.
"""
from __future__ import annotations

import re
import unicodedata

__all__ = ["AddressError", "address_block", "MAX_LINES", "MAX_LINE_LENGTH"]

MAX_LINES = 6
MAX_LINE_LENGTH = 38
_POSTCODE_RE = re.compile(r"[0-9]{5}")


class AddressError(ValueError):
    """The address cannot be written as a valid French postal block.

    The message is in French and names what is wrong (it is shown to agents).
    """


# Civilities as they may come from a flux, a form or the template context.
# ``Madame, Monsieur`` (sex unknown) is a salutation, not a civility for the
# address: no civility is printed then.
_CIVILITIES = {
    "MADAME": ("Madame", "Mme"),
    "MME": ("Madame", "Mme"),
    "MLLE": ("Madame", "Mme"),  # "Mademoiselle" is no longer used by administrations
    "MADEMOISELLE": ("Madame", "Mme"),
    "F": ("Madame", "Mme"),
    "MONSIEUR": ("Monsieur", "M."),
    "M": ("Monsieur", "M."),
    "MR": ("Monsieur", "M."),
    "H": ("Monsieur", "M."),
}
_NO_CIVILITY = {"", "MADAME MONSIEUR", "MONSIEUR MADAME", "MADAME OU MONSIEUR", "X", "U"}

# Standard abbreviations (La Poste / NF Z10-011 annex), applied one word at a
# time, in this order, only while a line is too long. Keys are in the postal
# form (capitals, no accents); multi-word keys are matched as whole words.
_STREET_TYPES = {
    "ALLEE": "ALL",
    "AVENUE": "AV",
    "BOULEVARD": "BD",
    "CARREFOUR": "CAR",
    "CHAUSSEE": "CHS",
    "CHEMIN": "CHE",
    "CORNICHE": "COR",
    "COURS": "CRS",
    "DOMAINE": "DOM",
    "ESPLANADE": "ESP",
    "FAUBOURG": "FG",
    "HAMEAU": "HAM",
    "IMPASSE": "IMP",
    "LIEU DIT": "LD",
    "LOTISSEMENT": "LOT",
    "MONTEE": "MTE",
    "PASSAGE": "PAS",
    "PLACE": "PL",
    "PROMENADE": "PRO",
    "QUARTIER": "QUA",
    "RESIDENCE": "RES",
    "ROND POINT": "RPT",
    "ROUTE": "RTE",
    "RUELLE": "RLE",
    "SENTIER": "SEN",
    "SQUARE": "SQ",
    "TRAVERSE": "TRA",
    "VILLAGE": "VGE",
    "ZONE INDUSTRIELLE": "ZI",
    "ZONE ARTISANALE": "ZA",
}
_TITLES = {
    "GENERAL": "GAL",
    "MARECHAL": "MAL",
    "PRESIDENT": "PDT",
    "DOCTEUR": "DR",
    "PROFESSEUR": "PR",
    "COMMANDANT": "CDT",
    "CAPITAINE": "CAP",
    "LIEUTENANT": "LT",
    "COLONEL": "COL",
    "SAINT": "ST",
    "SAINTE": "STE",
    "NOTRE DAME": "ND",
    "GRAND": "GD",
    "GRANDE": "GDE",
}
_COMPLEMENTS = {
    "APPARTEMENT": "APPT",
    "BATIMENT": "BAT",
    "ESCALIER": "ESC",
    "ETAGE": "ETG",
    "IMMEUBLE": "IMM",
    "ENTREE": "ENT",
    "RESIDENCE": "RES",
    "LOGEMENT": "LOGT",
    "PORTE": "PTE",
    "CHAMBRE": "CH",
}
_LOCALITY = {"SAINT": "ST", "SAINTE": "STE"}

_STREET_ABBREVIATIONS = (_STREET_TYPES, _TITLES)
_COMPLEMENT_ABBREVIATIONS = (_COMPLEMENTS, _STREET_TYPES, _TITLES)

# Letters that NFKD does not decompose into a base letter.
_TRANSLITERATE = str.maketrans(
    {
        "Œ": "OE", "œ": "OE", "Æ": "AE", "æ": "AE", "ß": "SS", "ẞ": "SS",
        "Ø": "O", "ø": "O", "Ð": "D", "ð": "D", "Þ": "TH", "þ": "TH",
        "Ł": "L", "ł": "L", "Đ": "D", "đ": "D", "ı": "I",
    }
)


def _clean(value: str | None) -> str:
    """Collapse whitespace, drop control/format/unassigned characters, NFC."""
    if value is None:
        return ""
    value = unicodedata.normalize("NFC", str(value))
    out = []
    for ch in value:
        cat = unicodedata.category(ch)
        if ch.isspace() or cat in ("Zl", "Zp", "Zs"):
            out.append(" ")
        elif cat[0] == "C":  # Cc, Cf, Cs, Co, Cn
            continue
        else:
            out.append(ch)
    return " ".join("".join(out).split())


def _postal_form(value: str) -> str:
    """Capitals, no accents, no punctuation: only A-Z, 0-9 and single spaces."""
    value = value.translate(_TRANSLITERATE)
    value = unicodedata.normalize("NFKD", value)
    value = "".join(ch for ch in value if not unicodedata.combining(ch))
    value = value.translate(_TRANSLITERATE).upper()
    value = re.sub(r"[^A-Z0-9]+", " ", value)
    return " ".join(value.split())


def _abbreviate(line: str, tables: tuple[dict[str, str], ...]) -> str:
    """Abbreviate whole words of a postal-form line, one at a time, until it fits."""
    for table in tables:
        for word, short in table.items():
            if len(line) <= MAX_LINE_LENGTH:
                return line
            pattern = re.compile(r"(?<![A-Z0-9])" + re.escape(word) + r"(?![A-Z0-9])")
            line = pattern.sub(short, line, count=1)
    return line


def _identity_line(civility: str | None, first_name: str, last_name: str) -> str:
    key = _postal_form(_clean(civility))
    if key in _NO_CIVILITY:
        full = short = ""
    elif key in _CIVILITIES:
        full, short = _CIVILITIES[key]
    else:
        raise AddressError(
            f"civilité inconnue : « {_clean(civility)} » (attendu : Madame, Monsieur ou rien)"
        )
    first = _clean(first_name)
    last = _clean(last_name).upper()
    if not _postal_form(last):
        raise AddressError("nom du destinataire manquant")

    initials = ""
    if first:
        # "Marie-Christine" -> "M.-C.", "Jean Paul" -> "J. P."
        initials = re.sub(r"(\w)[^\s-]*", r"\1.", first)

    candidates = [
        (full, first),
        (short, first),
        (short, initials),
        (short, ""),
        ("", ""),
    ]
    for civ, given in candidates:
        line = " ".join(part for part in (civ, given, last) if part)
        if len(line) <= MAX_LINE_LENGTH:
            return line
    raise AddressError(
        f"nom du destinataire trop long : « {last} » ({len(last)} caractères, "
        f"{MAX_LINE_LENGTH} au plus)"
    )


_DELIVERY_RE = re.compile(r"(BP|CS|TSA|BOITE POSTALE|CASE POSTALE)( \d+| [A-Z]?\d+[A-Z]?)?")
_CEDEX_RE = re.compile(r"CEDEX( \d{1,2})?")


def _postal_mention(part: str) -> str:
    """A part in postal form with dotted abbreviations joined: "B.P. 12" -> "BP 12"."""
    form = _postal_form(part)
    for spaced, joined in (("T S A", "TSA"), ("B P", "BP"), ("C S", "CS")):
        form = re.sub(r"(?<![A-Z0-9])" + spaced + r"(?![A-Z0-9])", joined, form)
    return form


def _split_complement(line2: str | None) -> tuple[str, list[str], str | None]:
    """(what goes above the street, delivery lines below it, the CEDEX mention)."""
    raw = "" if line2 is None else str(line2)
    parts = [_clean(p) for p in re.split(r"[;\n\r]|,\s", raw)]
    above, delivery, cedex = [], [], None
    for part in (p for p in parts if p):
        form = _postal_mention(part)
        if _DELIVERY_RE.fullmatch(form):
            delivery.append(form)
        elif _CEDEX_RE.fullmatch(form):
            cedex = form
        else:
            above.append(part)
    if not delivery and cedex is None:
        return raw, [], None  # nothing moved: the complement as written
    return "; ".join(above), delivery, cedex


def _complement_lines(line2: str | None) -> list[str]:
    raw = "" if line2 is None else str(line2)
    whole = _clean(raw)
    if not whole:
        return []
    if len(whole) <= MAX_LINE_LENGTH:
        return [whole]
    parts = [_clean(p) for p in re.split(r"[;\n\r]|,\s", raw)]
    parts = [p for p in parts if p]
    lines = []
    for part in parts:
        if len(part) > MAX_LINE_LENGTH:
            part = _abbreviate(_postal_form(part), _COMPLEMENT_ABBREVIATIONS)
        if len(part) > MAX_LINE_LENGTH or not part:
            raise AddressError(
                f"complément d'adresse trop long, même abrégé : « {whole} » "
                f"({MAX_LINE_LENGTH} caractères au plus par ligne)"
            )
        lines.append(part)
    return lines


def address_block(
    *,
    civility: str | None,
    first_name: str,
    last_name: str,
    line1: str,
    line2: str | None,
    postcode: str,
    city: str,
) -> list[str]:
    """Return the lines of the postal block, identity first, ``POSTCODE CITY`` last.

    ``line1`` is the number and street (or lieu-dit), ``line2`` the complement
    (apartment, building, residence, « chez … »). Raises :class:`AddressError`
    when the address is incomplete or cannot fit in 6 lines of 38 characters,
    even with the standard abbreviations.
    """
    code = re.sub(r"\s+", "", _clean(postcode))
    if not code:
        raise AddressError("code postal manquant")
    if not _POSTCODE_RE.fullmatch(code):
        raise AddressError(f"code postal invalide : « {_clean(postcode)} » (5 chiffres attendus)")

    locality = _postal_form(_clean(city))
    if not locality:
        raise AddressError("commune manquante")
    room = MAX_LINE_LENGTH - len(code) - 1
    if len(locality) > room:
        for word, short in _LOCALITY.items():
            locality = re.sub(r"(?<![A-Z0-9])" + word + r"(?![A-Z0-9])", short, locality)
    if len(locality) > room:
        raise AddressError(
            f"nom de commune trop long : « {_clean(city)} » ({room} caractères au plus)"
        )

    street = _postal_form(_clean(line1))
    if not street:
        raise AddressError("adresse (numéro et voie, ou lieu-dit) manquante")
    street = _abbreviate(street, _STREET_ABBREVIATIONS)
    if len(street) > MAX_LINE_LENGTH:
        raise AddressError(
            f"numéro et voie trop longs, même abrégés : « {_clean(line1)} » "
            f"({MAX_LINE_LENGTH} caractères au plus)"
        )

    above, delivery, cedex = _split_complement(line2)
    if cedex and not _CEDEX_RE.search(locality):
        locality = f"{locality} {cedex}"
        if len(locality) > room:
            raise AddressError(
                f"commune et CEDEX trop longs : « {locality} » ({room} caractères au plus)"
            )
    for line in delivery:
        if len(line) > MAX_LINE_LENGTH:
            raise AddressError(f"mention de distribution trop longue : « {line} »")

    lines = [_identity_line(civility, first_name, last_name)]
    lines += _complement_lines(above)
    # La Poste: the special delivery mention (BP, CS, TSA) comes below the street line.
    lines += [street, *delivery, f"{code} {locality}"]
    if len(lines) > MAX_LINES:
        raise AddressError(
            f"adresse trop longue : {len(lines)} lignes ({MAX_LINES} au plus)"
        )
    return lines
