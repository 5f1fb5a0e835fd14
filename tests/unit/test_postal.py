"""The French postal block (NF Z10-011): worker.domain.postal.address_block."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.domain.postal import MAX_LINE_LENGTH, MAX_LINES, AddressError, address_block

LAST_LINE_RE = re.compile(r"^[0-9]{5} [A-Z0-9 ]+$")
POSTAL_RE = re.compile(r"^[A-Z0-9]+( [A-Z0-9]+)*$")


def block(**kw):
    args = dict(
        civility="Madame",
        first_name="Marie",
        last_name="Da Silva",
        line1="21 impasse des Tilleuls",
        line2=None,
        postcode="35390",
        city="GRAND-FOUGERAY",
    )
    args.update(kw)
    return address_block(**args)


# --- realistic cases from the sample flux --------------------------------------------


def test_simple_address():
    assert block() == [
        "Madame Marie DA SILVA",
        "21 IMPASSE DES TILLEULS",
        "35390 GRAND FOUGERAY",
    ]


def test_hyphenated_commune_becomes_spaces():
    lines = block(postcode="35560", city="SAINT-NICOLAS-DE-REDON")
    assert lines[-1] == "35560 SAINT NICOLAS DE REDON"


def test_apostrophe_in_commune_becomes_space():
    lines = block(postcode="35330", city="VAL D'ANAST")
    assert lines[-1] == "35330 VAL D ANAST"


def test_lowercase_accented_commune_is_capitalised_without_accents():
    assert block(postcode="35600", city="Bains-sur-Oust")[-1] == "35600 BAINS SUR OUST"
    assert block(postcode="35470", city="Bain-de-Bretagne")[-1] == "35470 BAIN DE BRETAGNE"
    assert block(postcode="56350", city="Allaire Œuvré")[-1] == "56350 ALLAIRE OEUVRE"


def test_complement_goes_above_the_street_and_keeps_its_case():
    lines = block(
        civility="Madame",
        first_name="Manon",
        last_name="Fontaine",
        line1="32 rue Saint-Michel",
        line2="Chez M. Dupont",
        postcode="35330",
        city="VAL D'ANAST",
    )
    assert lines == [
        "Madame Manon FONTAINE",
        "Chez M. Dupont",
        "32 RUE SAINT MICHEL",
        "35330 VAL D ANAST",
    ]


@pytest.mark.parametrize("complement", ["Bâtiment B", "Résidence Les Ajoncs", "Appartement 12"])
def test_sample_complements(complement):
    lines = block(line2=complement)
    assert lines[1] == complement
    assert lines[2] == "21 IMPASSE DES TILLEULS"


def test_street_line_has_no_punctuation_and_no_accents():
    assert block(line1="59 allée des Chênes")[1] == "59 ALLEE DES CHENES"
    assert block(line1="12, rue de l'Église")[1] == "12 RUE DE L EGLISE"
    assert block(line1="lieu-dit La Noë")[1] == "LIEU DIT LA NOE"


def test_name_line_keeps_accents_and_uppercases_last_name():
    lines = block(civility="Monsieur", first_name="Sébastien", last_name="L'Hôtellier")
    assert lines[0] == "Monsieur Sébastien L'HÔTELLIER"


@pytest.mark.parametrize(
    "civility, expected",
    [
        ("Madame", "Madame Marie DA SILVA"),
        ("F", "Madame Marie DA SILVA"),
        ("Mme", "Madame Marie DA SILVA"),
        ("Monsieur", "Monsieur Marie DA SILVA"),
        ("M", "Monsieur Marie DA SILVA"),
        ("M.", "Monsieur Marie DA SILVA"),
        (None, "Marie DA SILVA"),
        ("", "Marie DA SILVA"),
        ("Madame, Monsieur", "Marie DA SILVA"),
    ],
)
def test_civilities(civility, expected):
    assert block(civility=civility)[0] == expected


def test_unknown_civility_is_refused():
    with pytest.raises(AddressError, match="civilité"):
        block(civility="Sa Majesté")


# --- shortening ----------------------------------------------------------------------


def test_no_abbreviation_when_it_fits():
    lines = block(line1="117 avenue du Général de Gaulle")
    assert lines[1] == "117 AVENUE DU GENERAL DE GAULLE"


def test_street_type_abbreviated_first_when_too_long():
    lines = block(line1="12 boulevard du Président Franklin Roosevelt")
    assert lines[1] == "12 BD DU PRESIDENT FRANKLIN ROOSEVELT"


def test_titles_abbreviated_when_the_street_type_is_not_enough():
    lines = block(line1="117 boulevard du Maréchal de Lattre de Tassigny")
    assert lines[1] == "117 BD DU MAL DE LATTRE DE TASSIGNY"


def test_long_complement_is_abbreviated():
    lines = block(line2="Résidence Les Ajoncs du Grand Pré Fleuri d'Oust")
    assert lines[1] == "RES LES AJONCS DU GD PRE FLEURI D OUST"


def test_long_complement_with_several_parts_is_split_above_the_street():
    lines = block(line2="Chez M. Dupont, Résidence Les Ajoncs, Bâtiment B")
    assert lines == [
        "Madame Marie DA SILVA",
        "Chez M. Dupont",
        "Résidence Les Ajoncs",
        "Bâtiment B",
        "21 IMPASSE DES TILLEULS",
        "35390 GRAND FOUGERAY",
    ]


def test_more_than_six_lines_is_refused():
    with pytest.raises(AddressError, match="lignes"):
        block(line2="Chez M. Dupont; Résidence Les Ajoncs du Pré; Bâtiment B; Escalier 4")


def test_long_name_is_shortened_progressively():
    # civility abbreviated, then first name reduced to initials, then dropped
    assert block(first_name="Marie-Christine", last_name="Rochefoucauld")[0] == (
        "Madame Marie-Christine ROCHEFOUCAULD"
    )
    assert block(first_name="Marie-Christine", last_name="De Rochefoucauld")[0] == (
        "Mme Marie-Christine DE ROCHEFOUCAULD"
    )
    assert block(first_name="Marie-Christine", last_name="De La Rochefoucauld-Montbel")[0] == (
        "Mme M.-C. DE LA ROCHEFOUCAULD-MONTBEL"
    )
    assert block(first_name="Marie", last_name="De La Rochefoucauld-Montbel Ouest")[0] == (
        "Mme DE LA ROCHEFOUCAULD-MONTBEL OUEST"
    )
    with pytest.raises(AddressError, match="nom du destinataire trop long"):
        block(last_name="De La Rochefoucauld-Montbel du Bois Joli")


def test_long_commune_uses_saint_abbreviation():
    lines = block(postcode="35000", city="Sainte-Marie-de-la-Mer-sur-Vilaine")
    assert lines[-1] == "35000 STE MARIE DE LA MER SUR VILAINE"


# --- refusals ------------------------------------------------------------------------


@pytest.mark.parametrize("postcode", ["3560", "356000", "35A00", "", "  ", "٣٥٦٠٠"])
def test_bad_postcode(postcode):
    with pytest.raises(AddressError, match="code postal"):
        block(postcode=postcode)


def test_postcode_with_a_space_is_accepted():
    assert block(postcode=" 35 600 ", city="REDON")[-1] == "35600 REDON"


@pytest.mark.parametrize("city", ["", "   ", "--", "'"])
def test_missing_city(city):
    with pytest.raises(AddressError, match="commune"):
        block(city=city)


@pytest.mark.parametrize("line1", ["", "   ", ", -", None])
def test_missing_street(line1):
    with pytest.raises(AddressError, match="voie"):
        block(line1=line1)


def test_missing_last_name():
    with pytest.raises(AddressError, match="nom"):
        block(last_name="  ")


def test_street_too_long_even_abbreviated():
    with pytest.raises(AddressError, match="trop long"):
        block(line1="12 rue de la Très Longue Voie Communale Numéro Quarante Deux")


def test_commune_too_long():
    with pytest.raises(AddressError, match="commune"):
        block(city="Une Commune Au Nom Vraiment Beaucoup Trop Long")


def test_error_is_a_value_error():
    assert issubclass(AddressError, ValueError)


# --- every row of the sample files ---------------------------------------------------

SAMPLES = Path(__file__).resolve().parents[2] / "samples"  # the bundled copies of the sample files


def _sample_rows():
    rows = []
    for path in sorted(SAMPLES.glob("*.csv")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("cp1252")
        delimiter = ";" if ";" in text.splitlines()[0] else ","
        rows += list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    return rows


def test_every_sample_address_is_accepted_or_refused_for_a_reason():
    rows = _sample_rows()
    assert len(rows) > 1000
    refused = []
    for row in rows:
        try:
            lines = address_block(
                civility={"F": "Madame", "M": "Monsieur"}.get(row["sex"]),
                first_name=row["first_name"],
                last_name=row["last_name"],
                line1=row["address_line1"],
                line2=row["address_line2"] or None,
                postcode=row["postcode"],
                city=row["city"],
            )
        except AddressError as exc:
            refused.append((row["external_id"], str(exc)))
            continue
        _check_block(lines)
    # Only the known-bad rows of flux_2024-05_with_errors.csv are refused:
    # a 4-digit postcode, a missing last name and a row with no postal address.
    ids = {external_id for external_id, _ in refused}
    assert ids == {"CAF35-0003103", "CAF35-0003107", "CAF35-0003109"}, refused


# --- property ------------------------------------------------------------------------


def _check_block(lines):
    assert 2 <= len(lines) <= MAX_LINES
    for line in lines:
        assert 0 < len(line) <= MAX_LINE_LENGTH, line
        assert line == line.strip() and "  " not in line
    assert LAST_LINE_RE.match(lines[-1]), lines[-1]
    assert POSTAL_RE.match(lines[-2]), lines[-2]  # street line


_words = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=60
)
_realistic = st.sampled_from(
    [
        "47 rue de Vilaine",
        "117 avenue du Général de Gaulle",
        "lieu-dit La Noë",
        "3 bis boulevard de la Liberté",
        "12, place de l'Église",
        "Bâtiment B",
        "Chez M. Dupont",
        "Résidence Les Ajoncs",
        "Appartement 12",
        "SAINT-NICOLAS-DE-REDON",
        "VAL D'ANAST",
        "Da Silva",
        "L'Hôtellier",
        "",
    ]
)
_text = st.one_of(_words, _realistic, st.builds(lambda a, b: a + " " + b, _realistic, _words))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    civility=st.one_of(
        st.none(), st.sampled_from(["Madame", "Monsieur", "Madame, Monsieur", "F", "M", "Dr"])
    ),
    first_name=_text,
    last_name=_text,
    line1=_text,
    line2=st.one_of(st.none(), _text),
    postcode=st.one_of(st.from_regex(r"\A[0-9]{5}\Z"), st.text(max_size=7)),
    city=_text,
)
def test_property_any_accepted_block_is_valid(civility, first_name, last_name, line1, line2, postcode, city):
    try:
        lines = address_block(
            civility=civility,
            first_name=first_name,
            last_name=last_name,
            line1=line1,
            line2=line2,
            postcode=postcode,
            city=city,
        )
    except AddressError as exc:
        assert str(exc)  # always says what is wrong
        return
    _check_block(lines)


# --- special delivery mentions and CEDEX (La Poste: BP/CS/TSA below the street, CEDEX last) -------


def _block(line2, city="Redon", line1="12 rue des Douves"):
    return address_block(civility="Madame", first_name="Julie", last_name="Martin", line1=line1,
                         line2=line2, postcode="35600", city=city)


def test_a_po_box_goes_below_the_street_line_without_punctuation():
    assert _block("B.P. 12") == ["Madame Julie MARTIN", "12 RUE DES DOUVES", "BP 12", "35600 REDON"]


def test_a_po_box_and_a_c_o_are_split_the_c_o_keeps_its_punctuation():
    assert _block("B.P. 12, Chez Mme Martin") == [
        "Madame Julie MARTIN", "Chez Mme Martin", "12 RUE DES DOUVES", "BP 12", "35600 REDON"]


def test_cs_tsa_and_cedex():
    assert _block("CS 70041; Cedex 9") == [
        "Madame Julie MARTIN", "12 RUE DES DOUVES", "CS 70041", "35600 REDON CEDEX 9"]
    assert _block("T.S.A. 30012") == ["Madame Julie MARTIN", "12 RUE DES DOUVES", "TSA 30012", "35600 REDON"]
    # a CEDEX already in the city is not repeated
    assert _block("Cedex", city="Redon Cedex")[-1] == "35600 REDON CEDEX"


def test_an_ordinary_complement_is_printed_as_written():
    assert _block("Chez M. Dupont, Bâtiment B")[1] == "Chez M. Dupont, Bâtiment B"
    assert _block("Bât. C, esc. 2, appt 14")[1] == "Bât. C, esc. 2, appt 14"


def test_every_line_fits_38_characters_and_6_lines():
    block = _block("Résidence des Grands Chênes Bâtiment C; Chez Mme Le Goff-Hernandez; BP 12345; Cedex",
                   city="Saint-Nicolas-de-Redon", line1="128 boulevard du Maréchal de Lattre de Tassigny")
    assert len(block) <= 6 and all(len(line) <= 38 for line in block), block
    assert block[-2] == "BP 12345" and block[-1].endswith("CEDEX")
    assert not any(ch in line for line in block[block.index("BP 12345") - 1:] for ch in ".,'-")
