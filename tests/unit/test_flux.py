"""Flux file parser: samples, one test per rejection rule, formats and encodings."""
from __future__ import annotations

import dataclasses
import json
import random
import time
from datetime import date
from pathlib import Path

import pytest

from worker.domain.contact import normalize_phone
from worker.adapters.flux import (
    FluxFormatError,
    FluxRow,
    ParseResult,
    Rejection,
    Warning as FluxWarning,
    _normalize_phone,
    parse_flux,
    parse_flux_file,
    row_fingerprint,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
DATA = ROOT / "tests" / "data"

ORGS = frozenset(
    {"CDAS-REDON", "CDAS-VALLONS", "CCAS-REDON", "FT-REDON", "ML-REDON", "MSA-PORTES-BRETAGNE"}
)
TODAY = date(2024, 6, 1)

HEADER = (
    "external_id,nir,last_name,first_name,birth_date,sex,address_line1,address_line2,"
    "postcode,city,phone,email,droit_opened_on,orientation,ft_registered,organisation,"
    "droits_devoirs"
)
COLUMNS = HEADER.split(",")
GOOD = {
    "external_id": "CAF35-0007000",
    "nir": "202023530339079",
    "last_name": "Laurent",
    "first_name": "Sandrine",
    "birth_date": "2002-02-03",
    "sex": "F",
    "address_line1": "97 rue Saint-Michel",
    "address_line2": "",
    "postcode": "35470",
    "city": "BAIN-DE-BRETAGNE",
    "phone": "06 12 34 67 95",
    "email": "sandrine.laurent@example.org",
    "droit_opened_on": "2024-05-16",
    "orientation": "cd",
    "ft_registered": "false",
    "organisation": "CDAS-VALLONS",
    "droits_devoirs": "true",
}


def csv_bytes(*rows: dict, header: str = HEADER, sep: str = ",", eol: str = "\n") -> bytes:
    cols = header.split(",")
    lines = [sep.join(cols)]
    for row in rows:
        full = {**GOOD, **row}
        lines.append(sep.join(full.get(c, "") for c in cols))
    return (eol.join(lines) + eol).encode("utf-8")


def parse(data: bytes, today: date = TODAY, **kw) -> ParseResult:
    return parse_flux(data, organisations=ORGS, today=today, **kw)


def one_rejection(**override: str) -> Rejection:
    """Parse a file with one good row then the overridden row; return its rejection."""
    res = parse(csv_bytes({"external_id": "CAF35-0006999", "nir": ""}, override))
    assert len(res.rows) == 1, res.rejected
    assert len(res.rejected) == 1, res.rejected
    rej = res.rejected[0]
    assert rej.line == 3
    return rej


def nir_with_key(body13: str) -> str:
    n = int(body13.replace("2A", "19").replace("2B", "18"))
    return f"{body13}{97 - n % 97:02d}"


# --------------------------------------------------------------------------- samples


def read_expected() -> tuple[set[tuple[int, str | None]], dict[int, tuple[str | None, str]]]:
    rejected: set[tuple[int, str | None]] = set()
    warned: dict[int, tuple[str | None, str]] = {}
    for raw in (SAMPLES / "flux_2024-05_with_errors.expected.txt").read_text("utf-8").splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        line, ext, what = raw.split("\t")
        key = (int(line), ext or None)
        if "row kept" in what:
            field = "phone" if what.startswith("phone") else "email"
            warned[int(line)] = (ext or None, field)
        else:
            rejected.add(key)
    return rejected, warned


def test_errors_sample_matches_expected_file():
    expected_rejected, expected_warned = read_expected()
    assert len(expected_rejected) == 10 and set(expected_warned) == {18, 23}

    res = parse_flux_file(
        SAMPLES / "flux_2024-05_with_errors.csv", organisations=ORGS, today=TODAY
    )
    data_rows = len((SAMPLES / "flux_2024-05_with_errors.csv").read_bytes().splitlines()) - 1
    assert data_rows == 32

    assert {(r.line, r.external_id) for r in res.rejected} == expected_rejected
    assert len(res.rejected) == len(expected_rejected)  # exactly one per bad row
    assert {w.line: (w.external_id, w.field) for w in res.warnings} == expected_warned
    assert len(res.rows) == data_rows - len(expected_rejected) == 22
    assert (res.encoding, res.fmt) == ("utf-8", "csv")

    fields = {r.line: r.field for r in res.rejected}
    assert fields == {
        12: "external_id",
        13: "droit_opened_on",
        14: "droit_opened_on",
        15: "postcode",
        16: "orientation",
        17: "birth_date",
        19: "last_name",
        20: "external_id",
        21: "address_line1",
        22: "organisation",
    }
    by_line = {r.line: r for r in res.rows}
    assert by_line[18].phone is None and by_line[18].external_id == "CAF35-0003106"
    assert by_line[23].email is None and by_line[23].phone == "+33612343837"
    # the duplicate is the later row; the first one is kept
    assert by_line[2].first_name == "Sandrine"
    assert all(r.reason for r in res.rejected) and all(w.reason for w in res.warnings)


def test_march_sample_parses_fully():
    res = parse_flux_file(SAMPLES / "flux_2024-03.csv", organisations=ORGS, today=date(2024, 4, 1))
    assert (len(res.rows), res.rejected, res.warnings) == (30, [], [])
    assert (res.encoding, res.fmt) == ("utf-8", "csv")
    first = res.rows[0]
    assert first == FluxRow(
        line=2,
        external_id="CAF35-0001000",
        nir="105063528166939",
        last_name="Diallo",
        first_name="Julien",
        birth_date=date(2005, 6, 27),
        sex="M",
        address_line1="47 rue de Vilaine",
        address_line2="Bâtiment B",
        postcode="35600",
        city="BAINS-SUR-OUST",
        phone="+33612345968",
        email=None,
        droit_opened_on=date(2024, 3, 18),
        orientation="ml",
        ft_registered=False,
        organisation="ML-REDON",
        droits_devoirs=False,
        extra={},
    )
    assert [r.line for r in res.rows] == list(range(2, 32))
    assert {r.orientation for r in res.rows} == {None, "cd", "ft", "ml"}
    assert any(r.first_name == "Inès" for r in res.rows)


def test_excel_sample_semicolon_cp1252_crlf():
    raw = (SAMPLES / "flux_2024-04_excel.csv").read_bytes()
    assert b"\r\n" in raw and b";" in raw.splitlines()[0]
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    res = parse_flux_file(
        SAMPLES / "flux_2024-04_excel.csv", organisations=ORGS, today=date(2024, 5, 2)
    )
    assert (len(res.rows), res.rejected, res.warnings) == (30, [], [])
    assert (res.encoding, res.fmt) == ("cp1252", "csv")
    first = res.rows[0]
    assert first.external_id == "CAF35-0002000"
    assert first.address_line2 == "Résidence Les Ajoncs"
    assert first.droit_opened_on == date(2024, 4, 30)
    assert first.orientation is None
    # the last column (before CRLF) is read cleanly: 3 people are not subject to droits et devoirs
    assert sum(not r.droits_devoirs for r in res.rows) == 3
    assert all(r.organisation in ORGS for r in res.rows)


def test_stock_sample_keeps_segment_and_priority_fast():
    # Parsed as a stock (the stock import's mode): as a flux it is refused (see test_the_stock_sample_is_refused_as_a_flux).
    start = time.perf_counter()
    res = parse_flux_file(SAMPLES / "stock_2023-03.csv", organisations=ORGS, today=date(2023, 3, 31), kind="stock")
    elapsed = time.perf_counter() - start
    assert (len(res.rows), res.rejected, res.warnings) == (1396, [], [])
    assert all(set(r.extra) == {"segment", "priority"} for r in res.rows)
    first = res.rows[0]
    assert first.extra == {"segment": "non_oriented", "priority": "1"}
    assert {r.organisation for r in res.rows} == set(ORGS)
    assert elapsed < 1.0, f"stock parsed in {elapsed:.2f}s"


def test_jsonl_sample_parses():
    res = parse_flux_file(SAMPLES / "flux_2024-06.jsonl", organisations=ORGS, today=date(2024, 7, 1))
    assert (len(res.rows), res.rejected, res.warnings) == (20, [], [])
    assert (res.encoding, res.fmt) == ("utf-8", "jsonl")
    assert [r.line for r in res.rows] == list(range(1, 21))
    assert {r.orientation for r in res.rows} == {None, "cd", "ft", "ml"}
    assert {r.organisation for r in res.rows} == set(ORGS)
    assert all(r.droit_opened_on.strftime("%Y-%m") == "2024-06" for r in res.rows)
    assert all(r.phone is None or r.phone.startswith("+3361234") for r in res.rows)
    assert any(r.ft_registered for r in res.rows) and any(not r.droits_devoirs for r in res.rows)


def test_samples_are_copied_byte_for_byte_when_shared_exists():
    shared = Path("/work/shared/data")
    if not shared.is_dir():
        pytest.skip("no shared data folder")
    for name in (
        "flux_2024-03.csv",
        "flux_2024-04_excel.csv",
        "flux_2024-05_with_errors.csv",
        "flux_2024-05_with_errors.expected.txt",
        "stock_2023-03.csv",
        "README.md",
    ):
        assert (SAMPLES / name).read_bytes() == (shared / name).read_bytes(), name


# --------------------------------------------------------------------------- formats


def test_utf8_bom_variant():
    raw = (SAMPLES / "flux_2024-03.csv").read_bytes()
    res = parse(b"\xef\xbb\xbf" + raw, today=date(2024, 4, 1))
    assert res.encoding == "utf-8-sig"
    assert len(res.rows) == 30 and not res.rejected
    assert res.rows[0].external_id == "CAF35-0001000"


def test_bom_semicolon_crlf_from_bytes():
    data = b"\xef\xbb\xbf" + csv_bytes(GOOD, sep=";", eol="\r\n")
    res = parse(data)
    assert not res.rejected and len(res.rows) == 1
    assert res.rows[0].droits_devoirs is True and res.rows[0].city == "BAIN-DE-BRETAGNE"


def test_cp1252_is_fallback_and_utf8_preferred():
    data = csv_bytes({"address_line2": "Résidence Les Chênes"})
    assert parse(data).rows[0].address_line2 == "Résidence Les Chênes"
    res = parse(data.decode("utf-8").encode("cp1252"))
    assert res.encoding == "cp1252"
    assert res.rows[0].address_line2 == "Résidence Les Chênes"


def test_crlf_and_lf_give_the_same_rows():
    rows = [GOOD, {"external_id": "CAF35-0007001", "nir": "", "address_line2": "Bâtiment B"}]
    a = parse(csv_bytes(*rows, eol="\n"))
    b = parse(csv_bytes(*rows, eol="\r\n"))
    assert a.rows == b.rows and len(a.rows) == 2


def test_values_are_trimmed_and_quoted_fields_understood():
    data = (
        HEADER
        + '\n  CAF35-0007000 , 202023530339079 , Laurent ,"Sandrine, dite Sandy",2002-02-03,f,'
        '"97 rue Saint-Michel","  ",35470,BAIN-DE-BRETAGNE,  06.12.34.67.95 , ,2024-05-16, CD ,'
        "NON,cdas-vallons,Oui\n"
    ).encode()
    res = parse(data)
    assert not res.rejected and not res.warnings
    row = res.rows[0]
    assert row.external_id == "CAF35-0007000"
    assert row.first_name == "Sandrine, dite Sandy"
    assert row.address_line2 is None and row.email is None
    assert (row.sex, row.orientation, row.organisation) == ("F", "cd", "CDAS-VALLONS")
    assert (row.ft_registered, row.droits_devoirs) == (False, True)
    assert row.phone == "+33612346795"


def test_unknown_columns_go_to_extra_and_optional_columns_may_be_absent():
    # Unknown columns are kept only when whitelisted (config/flux_columns.yaml); "segment" is now a stock column.
    header = (
        "external_id,last_name,first_name,birth_date,address_line1,postcode,city,"
        "droit_opened_on,organisation,secteur,Commentaire"
    )
    res = parse(csv_bytes({"secteur": "msa", "Commentaire": " à revoir "}, header=header),
                extra_columns={"secteur", "commentaire"})
    row = res.rows[0]
    assert row.extra == {"secteur": "msa", "commentaire": "à revoir"}
    assert (row.nir, row.sex, row.phone, row.email, row.orientation) == (None,) * 5
    assert row.ft_registered is False and row.droits_devoirs is True


def test_blank_lines_and_empty_spreadsheet_rows_are_skipped():
    data = csv_bytes(GOOD) + b"\n  \n" + b",,,,,,,,,,,,,,,,\n" + b"\n"
    res = parse(data)
    assert len(res.rows) == 1 and not res.rejected


def test_excel_sep_hint_line():
    data = b"sep=;\r\n" + csv_bytes(GOOD, sep=";", eol="\r\n")
    res = parse(data)
    assert not res.rejected
    assert res.rows[0].line == 3


def test_row_with_wrong_field_count_is_rejected():
    data = csv_bytes(GOOD) + b"CAF35-0007001,too,few\n"
    res = parse(data)
    assert len(res.rows) == 1
    [rej] = res.rejected
    assert (rej.line, rej.external_id, rej.field) == (3, "CAF35-0007001", "ligne")
    assert "3 champs au lieu de 17" in rej.reason


def test_jsonl_from_bytes_with_booleans_nulls_and_bom():
    # "priority" is a stock column now: "rang" instead, and the extras whitelisted.
    rec = {**GOOD, "ft_registered": True, "droits_devoirs": None, "address_line2": None,
           "orientation": "", "rang": 2, "tags": ["a"]}
    data = b"\xef\xbb\xbf\n" + json.dumps(rec, ensure_ascii=False).encode() + b"\r\n"
    res = parse(data, extra_columns={"rang", "tags"})
    assert (res.fmt, res.encoding) == ("jsonl", "utf-8-sig")
    row = res.rows[0]
    assert row.line == 2
    assert (row.ft_registered, row.droits_devoirs, row.address_line2, row.orientation) == (
        True, True, None, None,
    )
    assert row.extra == {"rang": "2", "tags": '["a"]'}


def test_jsonl_detected_by_name_even_with_leading_garbage():
    data = b"not json\n" + json.dumps(GOOD).encode() + b"\n"
    res = parse(data, filename="flux.jsonl")
    assert res.fmt == "jsonl" and len(res.rows) == 1
    assert [(r.line, r.field) for r in res.rejected] == [(1, "ligne")]


def test_bad_json_line_is_rejected_and_the_rest_goes_on():
    # Its last line carries segment and priority: read in the stock import's mode.
    res = parse_flux_file(
        DATA / "flux_bad_json_line.jsonl", organisations=ORGS, today=date(2024, 7, 1), kind="stock"
    )
    assert res.fmt == "jsonl"
    assert [r.external_id for r in res.rows] == ["CAF35-0009001", "CAF35-0009003"]
    [rej] = res.rejected
    assert (rej.line, rej.external_id, rej.field) == (2, None, "ligne")
    assert "JSON" in rej.reason
    moal = res.rows[1]
    assert moal.first_name == "Tugdual" and moal.ft_registered and moal.droits_devoirs
    assert moal.extra == {"segment": "test", "priority": "2"}
    assert res.rows[0].first_name == "Annaïg"


def test_jsonl_non_object_line_and_wrong_value_types():
    lines = [
        json.dumps({**GOOD, "external_id": "A1", "last_name": True}),
        json.dumps([1, 2]),
        json.dumps({**GOOD, "external_id": "A2", "postcode": {"code": "35600"}}),
        json.dumps({**GOOD, "external_id": "A3", "postcode": 35600}),
    ]
    res = parse("\n".join(lines).encode())
    assert [(r.line, r.external_id, r.field) for r in res.rejected] == [
        (1, "A1", "last_name"),
        (2, None, "ligne"),
        (3, "A2", "postcode"),
    ]
    assert [r.external_id for r in res.rows] == ["A3"] and res.rows[0].postcode == "35600"


def test_jsonl_missing_key_on_one_line_rejects_that_line():
    rec = dict(GOOD)
    del rec["organisation"]
    res = parse((json.dumps(GOOD) + "\n" + json.dumps({**rec, "external_id": "B2"})).encode())
    assert len(res.rows) == 1
    assert [(r.line, r.field) for r in res.rejected] == [(2, "organisation")]


# --------------------------------------------------------------------------- file-level errors


def test_missing_required_header_column():
    header = HEADER.replace(",organisation", "").replace("city,", "")
    with pytest.raises(FluxFormatError) as exc:
        parse(csv_bytes(GOOD, header=header))
    msg = str(exc.value)
    assert "city" in msg and "organisation" in msg and "obligatoire" in msg


def test_jsonl_required_key_absent_everywhere():
    rec = dict(GOOD)
    del rec["droit_opened_on"]
    with pytest.raises(FluxFormatError, match="droit_opened_on"):
        parse(json.dumps(rec).encode())


@pytest.mark.parametrize("data", [b"", b"   \r\n\n", b"\xef\xbb\xbf"])
def test_empty_file(data):
    with pytest.raises(FluxFormatError, match="vide"):
        parse(data)


@pytest.mark.parametrize(
    "data",
    [
        b"PK\x03\x04\x14\x00\x06\x00",
        b"%PDF-1.7\n...",
        b"\x00\x01\x02binary",
        "external_id\tnom".encode("utf-16"),
        b'[{"external_id": "A"}]',
        b"just some text\nnothing like a flux\n",
        b"{not json at all\n{neither\n",
    ],
)
def test_not_csv_nor_jsonl(data):
    with pytest.raises(FluxFormatError):
        parse(data)


def test_header_only_is_an_empty_flux():
    res = parse((HEADER + "\n").encode())
    assert (res.rows, res.rejected, res.warnings) == ([], [], [])


def test_duplicate_header_column():
    with pytest.raises(FluxFormatError, match="double"):
        parse(csv_bytes(GOOD, header=HEADER + ",city"))


# --------------------------------------------------------------------------- one test per rule


def test_rule_missing_external_id():
    rej = one_rejection(external_id="")
    assert (rej.external_id, rej.field) == (None, "external_id")
    assert "manquant" in rej.reason


def test_rule_duplicate_external_id_later_row_rejected():
    res = parse(csv_bytes(GOOD, {"first_name": "Doublon"}, {"external_id": "CAF35-0007001", "nir": ""}))
    assert [r.line for r in res.rows] == [2, 4]
    [rej] = res.rejected
    assert (rej.line, rej.external_id, rej.field) == (3, "CAF35-0007000", "external_id")
    assert "ligne 2" in rej.reason


def test_rule_duplicate_checked_before_other_problems():
    res = parse(csv_bytes(GOOD, {"postcode": "1"}))
    assert [(r.line, r.field) for r in res.rejected] == [(3, "external_id")]


@pytest.mark.parametrize("field", ["last_name", "first_name"])
def test_rule_missing_names(field):
    rej = one_rejection(**{field: "  "})
    assert rej.field == field and rej.external_id == GOOD["external_id"]


@pytest.mark.parametrize(
    "field,value",
    [
        ("droit_opened_on", "31/02/2024"),
        ("droit_opened_on", "2024-02-31"),
        ("droit_opened_on", "2024-5-3"),
        ("droit_opened_on", ""),
        ("birth_date", "1990-13-01"),
        ("birth_date", "03/02/2002"),
        ("birth_date", ""),
    ],
)
def test_rule_bad_or_impossible_dates(field, value):
    rej = one_rejection(**{field: value})
    assert rej.field == field


def test_rule_impossible_date_reason_says_so():
    assert "impossible" in one_rejection(droit_opened_on="2023-02-29").reason
    assert "AAAA-MM-JJ" in one_rejection(droit_opened_on="31/02/2024").reason
    # 2024 is a leap year
    assert not parse(csv_bytes({"droit_opened_on": "2024-02-29"})).rejected


def test_rule_droit_in_the_future():
    rej = one_rejection(droit_opened_on="2024-06-02")
    assert rej.field == "droit_opened_on" and "futur" in rej.reason
    assert not parse(csv_bytes({"droit_opened_on": "2024-06-01"})).rejected  # today is fine


@pytest.mark.parametrize(
    "birth",
    ["1899-12-31", "1904-05-31", "2008-05-17", "2024-05-20", "2030-01-01"],
)
def test_rule_implausible_birth_date(birth):
    # droit 2024-05-16, today 2024-06-01: older than 120 or younger than 16 at droit
    rej = one_rejection(birth_date=birth, nir="")
    assert rej.field == "birth_date" and "invraisemblable" in rej.reason


@pytest.mark.parametrize("birth", ["1904-06-01", "2008-05-16"])
def test_rule_birth_date_limits_are_plausible(birth):
    res = parse(csv_bytes({"birth_date": birth, "nir": ""}))
    assert not res.rejected


@pytest.mark.parametrize("postcode", ["3560", "356000", "35 600", "2A004", "ABCDE"])
def test_rule_postcode_not_five_digits(postcode):
    rej = one_rejection(postcode=postcode)
    assert rej.field == "postcode" and "5 chiffres" in rej.reason


def test_rule_missing_postcode():
    assert one_rejection(postcode="").field == "postcode"


@pytest.mark.parametrize(
    "override,field",
    [
        ({"address_line1": "", "city": ""}, "address_line1"),
        ({"address_line1": ""}, "address_line1"),
        ({"city": ""}, "city"),
    ],
)
def test_rule_no_postal_address(override, field):
    rej = one_rejection(**override)
    assert rej.field == field and "adresse postale" in rej.reason


@pytest.mark.parametrize("org", ["CDAS-INCONNU", ""])
def test_rule_unknown_or_missing_organisation(org):
    assert one_rejection(organisation=org).field == "organisation"


@pytest.mark.parametrize("orientation", ["pole-emploi", "CDAS", "x"])
def test_rule_unknown_orientation(orientation):
    rej = one_rejection(orientation=orientation)
    assert rej.field == "orientation" and orientation in rej.reason


@pytest.mark.parametrize("value,expected", [("", None), ("cd", "cd"), ("FT", "ft"), ("Ml", "ml")])
def test_orientation_values(value, expected):
    assert parse(csv_bytes({"orientation": value})).rows[0].orientation == expected


@pytest.mark.parametrize(
    "nir",
    [
        "20202353033907",  # 14 characters
        "2020235303390791",  # 16
        "202023530339078",  # wrong key
        "2020235X0339079",  # letter
        "1850520004012" + "00",  # key 00 never valid
    ],
)
def test_rule_invalid_nir(nir):
    rej = one_rejection(nir=nir)
    assert rej.field == "nir" and "NIR" in rej.reason
    assert nir not in rej.reason  # no NIR in messages


def test_nir_corsica_and_spaces():
    a = nir_with_key("185052A004012")
    b = nir_with_key("285052B004012")
    assert a != b
    res = parse(csv_bytes({"nir": a}, {"external_id": "C2", "nir": b.lower()},
                          {"external_id": "C3", "nir": "2 02 02 35 303 390 79"}))
    assert not res.rejected
    assert [r.nir for r in res.rows] == [a, b, "202023530339079"]
    # the key of a Corsican NIR is not the key computed with "20"
    wrong = a[:13] + f"{97 - int(a[:5] + '20' + a[7:13]) % 97:02d}"
    assert wrong != a
    assert one_rejection(nir=wrong).field == "nir"


@pytest.mark.parametrize("sex", ["X", "H", "femme", "2"])
def test_rule_bad_sex(sex):
    assert one_rejection(sex=sex).field == "sex"


@pytest.mark.parametrize("value,expected", [("F", "F"), ("m", "M"), ("", None)])
def test_sex_values(value, expected):
    assert parse(csv_bytes({"sex": value})).rows[0].sex == expected


@pytest.mark.parametrize("field", ["ft_registered", "droits_devoirs"])
@pytest.mark.parametrize("value", ["yes", "peut-être", "2", "t"])
def test_rule_bad_boolean(field, value):
    rej = one_rejection(**{field: value})
    assert rej.field == field


@pytest.mark.parametrize(
    "value,expected",
    [("true", True), ("TRUE", True), ("1", True), ("Oui", True), ("VRAI", True),
     ("false", False), ("0", False), ("non", False), ("FAUX", False)],
)
def test_boolean_values(value, expected):
    row = parse(csv_bytes({"ft_registered": value, "droits_devoirs": value})).rows[0]
    assert (row.ft_registered, row.droits_devoirs) == (expected, expected)


def test_boolean_defaults():
    row = parse(csv_bytes({"ft_registered": "", "droits_devoirs": ""})).rows[0]
    assert (row.ft_registered, row.droits_devoirs) == (False, True)


def test_exactly_one_rejection_for_a_row_with_many_problems():
    res = parse(csv_bytes({"last_name": "", "postcode": "1", "organisation": "X", "sex": "?"}))
    assert [(r.line, r.field) for r in res.rejected] == [(2, "last_name")]


@pytest.mark.parametrize("phone", ["12345", "06 12 34", "+44 20", "not a phone"])
def test_unusable_phone_keeps_row_with_warning(phone):
    res = parse(csv_bytes({"phone": phone}))
    assert not res.rejected
    assert res.rows[0].phone is None
    [w] = res.warnings
    assert (w.line, w.external_id, w.field) == (2, GOOD["external_id"], "phone")
    assert isinstance(w, FluxWarning)
    assert phone not in w.reason  # no phone numbers in messages


def test_unusable_email_keeps_row_with_warning():
    res = parse(csv_bytes({"email": "not-an-email"}))
    assert not res.rejected and res.rows[0].email is None
    assert [(w.line, w.field) for w in res.warnings] == [(2, "email")]


def test_rejected_rows_get_no_warning():
    res = parse(csv_bytes({"phone": "12345", "postcode": "1"}))
    assert len(res.rejected) == 1 and res.warnings == []


@pytest.mark.parametrize(
    "raw,e164",
    [
        ("06 12 34 56 78", "+33612345678"),
        ("06.12.34.56.78", "+33612345678"),
        ("+33612345678", "+33612345678"),
        ("0033 6 12 34 56 78", "+33612345678"),
        ("02 99 71 00 00", "+33299710000"),
        ("0692 12 34 56", "+262692123456"),  # La Réunion: through worker.domain.contact
        ("+33 (0)6 12 34 56 78", normalize_phone("+33 (0)6 12 34 56 78")),
    ],
)
def test_phone_normalisation(raw, e164):
    assert parse(csv_bytes({"phone": raw})).rows[0].phone == e164


def test_phone_fast_path_agrees_with_worker_contact():
    rnd = random.Random(97)
    samples = [f"0612340{i:03d}" for i in range(1000)]
    for _ in range(3000):
        nsn = str(rnd.randint(100_000_000, 999_999_999))
        pairs = " ".join([nsn[0]] + [nsn[k:k + 2] for k in range(1, 9, 2)])
        samples += ["0" + nsn, "+33" + nsn, "0033" + nsn, "0" + pairs, "0" + pairs.replace(" ", ".")]
    mismatches = [s for s in samples if _normalize_phone(s) != normalize_phone(s)]
    assert mismatches == []


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_ignores_line_and_sees_every_other_field():
    a = parse(csv_bytes(GOOD)).rows[0]
    moved = dataclasses.replace(a, line=42)
    assert row_fingerprint(a) == row_fingerprint(moved)
    assert len(row_fingerprint(a)) == 64
    for name, value in [
        ("first_name", "Sandra"),
        ("phone", None),
        ("droit_opened_on", date(2024, 5, 17)),
        ("droits_devoirs", False),
        ("extra", {"segment": "msa"}),
    ]:
        assert row_fingerprint(dataclasses.replace(a, **{name: value})) != row_fingerprint(a), name


def test_fingerprint_stable_across_formats():
    csv_row = parse(csv_bytes(GOOD)).rows[0]
    json_row = parse(json.dumps(GOOD).encode()).rows[0]
    assert csv_row.line == 2 and json_row.line == 1
    assert row_fingerprint(csv_row) == row_fingerprint(json_row)


def test_rows_are_hashable():
    res = parse(csv_bytes(GOOD))
    assert len({res.rows[0], res.rows[0]}) == 1


def test_parse_is_pure_and_repeatable():
    data = (SAMPLES / "flux_2024-05_with_errors.csv").read_bytes()
    a, b = parse(data), parse(data)
    assert a == b


def test_same_nir_twice_in_a_file_rejects_the_later_row():
    res = parse(csv_bytes(GOOD, {"external_id": "CAF35-0007001"}))
    assert [r.external_id for r in res.rows] == ["CAF35-0007000"]
    [rej] = res.rejected
    assert (rej.line, rej.external_id, rej.field) == (3, "CAF35-0007001", "nir")
    assert "ligne 2" in rej.reason and GOOD["nir"] not in rej.reason


# --------------------------------------------------------------------------- hardening (issue 11)


def test_deeply_nested_json_line_is_one_rejection():
    data = (json.dumps(GOOD) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n"
            + '{"a":' * 50_000 + "1" + "}" * 50_000 + "\n").encode()
    res = parse(data)
    assert [r.external_id for r in res.rows] == [GOOD["external_id"]]
    assert [(r.line, r.field) for r in res.rejected] == [(2, "ligne"), (3, "ligne")]


def test_field_over_128_kib_is_one_rejection_and_the_file_goes_on():
    big = "x" * (200 * 1024)
    res = parse(csv_bytes(GOOD, {"external_id": "CAF35-0007001", "nir": "", "address_line2": big},
                          {"external_id": "CAF35-0007002", "nir": ""}))
    assert [r.external_id for r in res.rows] == ["CAF35-0007000", "CAF35-0007002"]
    [rej] = res.rejected
    assert (rej.line, rej.field) == (3, "address_line2") and "128" in rej.reason and big not in rej.reason


def test_field_over_128_kib_in_a_quoted_multiline_record():
    big = "y\n" * (70 * 1024)
    res = parse(csv_bytes(GOOD, {"external_id": "CAF35-0007001", "nir": "", "address_line2": f'"{big}"'},
                          {"external_id": "CAF35-0007002", "nir": ""}))
    assert [r.external_id for r in res.rows][0] == "CAF35-0007000"
    assert res.rejected and res.rejected[0].line == 3 and "128" in res.rejected[0].reason
    assert "CAF35-0007002" in [r.external_id for r in res.rows]


def test_unclosed_quote_no_longer_ends_the_file():
    data = csv_bytes(GOOD, {"external_id": "CAF35-0007001", "nir": "", "address_line2": '"oups'},
                     *[{"external_id": f"CAF35-00071{i:02d}", "nir": ""} for i in range(3)])
    res = parse(data)
    assert res.rows[0].external_id == "CAF35-0007000"
    # The unclosed quote swallows the rest into one record: one rejection naming its span.
    assert len(res.rejected) == 1 and res.rejected[0].line == 3


@pytest.mark.parametrize("field,limit", [("last_name", 200), ("first_name", 200), ("external_id", 64),
                                         ("address_line1", 200), ("city", 100)])
def test_rule_values_longer_than_their_column(field, limit):
    ok = parse(csv_bytes({field: "A" * limit}))
    assert not ok.rejected, ok.rejected
    res = parse(csv_bytes({field: "A" * (limit + 1)}))
    [rej] = res.rejected
    assert rej.field == field and f"{limit + 1} caractères" in rej.reason and "A" * 20 not in rej.reason


def test_limits_come_from_the_store_models():
    from worker.adapters.flux import FIELD_MAX_LENGTHS
    from worker.adapters.store.models import Person

    assert FIELD_MAX_LENGTHS["last_name"] == Person.__table__.c.last_name.type.length == 200
    assert FIELD_MAX_LENGTHS["external_id"] == Person.__table__.c.external_id.type.length == 64


def test_echoed_values_are_cut_short():
    rej = one_rejection(postcode="9" * 5000)
    assert len(rej.reason) < 200


def _utf8_with_stray_byte() -> bytes:
    rows = [{"external_id": f"CAF35-00072{i:02d}", "nir": "", "first_name": "Hélène", "city": "SAINT-MÉEN"}
            for i in range(5)]
    data = csv_bytes(*rows)
    lines = data.split(b"\n")
    lines[3] = lines[3].replace("Hélène".encode(), "Hélène".encode("cp1252"))
    return b"\n".join(lines)


def test_stray_cp1252_byte_in_utf8_rejects_that_row_only():
    res = parse(_utf8_with_stray_byte())
    assert res.encoding == "utf-8"
    assert [r.first_name for r in res.rows] == ["Hélène"] * 4
    assert all(r.city == "SAINT-MÉEN" for r in res.rows)
    [rej] = res.rejected
    assert (rej.line, rej.external_id, rej.field) == (4, "CAF35-0007202", "first_name")
    assert "UTF-8" in rej.reason and "0xE9" in rej.reason


def test_utf8_line_in_a_cp1252_file_is_rejected_not_mojibaked():
    rows = [{"external_id": f"CAF35-00073{i:02d}", "nir": "", "first_name": "Hélène"} for i in range(5)]
    lines = csv_bytes(*rows).decode("utf-8").encode("cp1252").split(b"\n")
    lines[2] = lines[2].replace("Hélène".encode("cp1252"), "Hélène".encode("utf-8"))
    res = parse(b"\n".join(lines))
    assert res.encoding == "cp1252"
    assert [r.first_name for r in res.rows] == ["Hélène"] * 4
    [rej] = res.rejected
    assert rej.line == 3 and "encodage" in rej.reason


def test_utf8_bom_is_evidence_of_utf8():
    data = b"\xef\xbb\xbf" + csv_bytes({"first_name": "Zoé", "nir": ""}).replace("Zoé".encode(), b"Zo\xe9")
    res = parse(data)
    assert res.encoding == "utf-8-sig" and not res.rows and res.rejected[0].field == "first_name"


def test_double_encoded_text_is_rejected():
    res = parse(csv_bytes({"first_name": "HÃ©lÃ¨ne"}))
    [rej] = res.rejected
    assert rej.field == "first_name" and "encod" in rej.reason


def test_a_replacement_character_is_rejected():
    res = parse(csv_bytes({"last_name": "Le Go\ufffdf"}))
    assert [r.field for r in res.rejected] == ["last_name"]


@pytest.mark.parametrize("value", ["=1+1", "+33 6", "-x", "@cmd", "A\tB", "A\x00B", "A\x85B", "a\u202eb",
                                   "a\u2069b", "a\u202ab"])
@pytest.mark.parametrize("field", ["last_name", "first_name", "address_line1", "address_line2", "city",
                                   "external_id"])
def test_rule_control_bidi_and_formula_characters_in_identity_fields(field, value):
    res = parse(csv_bytes({"external_id": "CAF35-0007000", field: value}))
    assert [r.field for r in res.rejected] == [field], res.rejected
    assert value not in res.rejected[0].reason


def test_control_characters_in_other_fields_are_refused_too():
    res = parse(json.dumps({**GOOD, "email": "a\u202e@example.org", "orientation": "cd\x00"}).encode())
    assert len(res.rejected) == 1 and res.rejected[0].field in ("email", "orientation")


def test_names_with_hyphens_apostrophes_and_accents_are_fine():
    res = parse(csv_bytes({"last_name": "N'Diaye-Le Goff", "first_name": "Jean-Noël",
                           "address_line2": "Bât. B - 2e étage", "city": "SAINT-MÉEN-LE-GRAND"}))
    assert not res.rejected and res.rows[0].first_name == "Jean-Noël"


def test_stock_columns_make_the_file_a_stock():
    header = HEADER + ",segment,priority"
    with pytest.raises(FluxFormatError) as exc:
        parse(csv_bytes({"segment": "msa", "priority": "1"}, header=header))
    assert "utilisez l'import du stock" in str(exc.value) and "segment" in str(exc.value)
    with pytest.raises(FluxFormatError, match="import du stock"):
        parse(csv_bytes({"contract_end": "2024-12-31"}, header=HEADER + ",contract_end"))
    with pytest.raises(FluxFormatError, match="import du stock"):
        parse(json.dumps({**GOOD, "segment": "msa"}).encode())


def test_the_stock_sample_is_refused_as_a_flux():
    with pytest.raises(FluxFormatError, match="utilisez l'import du stock"):
        parse_flux_file(SAMPLES / "stock_2023-03.csv", organisations=ORGS, today=date(2023, 3, 31))


def test_a_majority_of_old_droits_makes_the_file_a_stock():
    from worker.adapters.flux import STOCK_DROIT_AGE_DAYS

    assert STOCK_DROIT_AGE_DAYS == 183
    old = [{"external_id": f"CAF35-00074{i:02d}", "nir": "", "droit_opened_on": "2021-0{}-10".format(i % 9 + 1)}
           for i in range(6)]
    new = [{"external_id": f"CAF35-00075{i:02d}", "nir": "", "droit_opened_on": "2024-05-10"} for i in range(5)]
    with pytest.raises(FluxFormatError, match="utilisez l'import du stock"):
        parse(csv_bytes(*old, *new))
    # A minority of late droits is an ordinary flux (those people are invited at once, counted late).
    res = parse(csv_bytes(*old[:5], *new, {"external_id": "CAF35-0007600", "nir": "", "droit_opened_on": "2024-05-11"}))
    assert len(res.rows) == 11 and not res.rejected
    # A flux processed long after its month is still a flux.
    res = parse_flux_file(SAMPLES / "flux_2024-03.csv", organisations=ORGS, today=date(2025, 6, 1))
    assert len(res.rows) == 30


def test_unknown_columns_are_dropped_with_one_warning_naming_them():
    header = HEADER + ",sante,Commentaire"
    res = parse(csv_bytes(GOOD, {"external_id": "CAF35-0007001", "nir": "", "sante": "ALD"}, header=header))
    assert all(r.extra == {} for r in res.rows) and not res.rejected
    [w] = res.warnings
    assert (w.line, w.external_id, w.field) == (1, None, "colonnes")
    assert "sante" in w.reason and "commentaire" in w.reason and "ALD" not in w.reason


def test_whitelisted_columns_are_kept_in_extra():
    header = HEADER + ",numero_cd,sante"
    res = parse(csv_bytes({"numero_cd": "A-12", "sante": "ALD"}, header=header),
                extra_columns=frozenset({"numero_cd"}))
    assert res.rows[0].extra == {"numero_cd": "A-12"}
    assert [w.field for w in res.warnings] == ["colonnes"] and "numero_cd" not in res.warnings[0].reason


def test_jsonl_unknown_keys_warned_once():
    lines = [json.dumps({**GOOD, "external_id": f"J{i}", "nir": "", "sante": "x"}) for i in range(3)]
    res = parse("\n".join(lines).encode())
    assert len(res.rows) == 3 and all(r.extra == {} for r in res.rows)
    assert [(w.line, w.field) for w in res.warnings] == [(1, "colonnes")]


def test_whitelisted_value_is_checked_too():
    header = HEADER + ",numero_cd"
    res = parse(csv_bytes({"numero_cd": "A\x1b12"}, header=header), extra_columns=frozenset({"numero_cd"}))
    assert [r.field for r in res.rejected] == ["numero_cd"]


def test_a_few_nul_bytes_are_per_row_not_a_binary_file():
    data = csv_bytes(GOOD, {"external_id": "CAF35-0007001", "nir": ""})
    data = data.replace(b"CAF35-0007001,,Laurent", b"CAF35-0007001,,Lau\x00rent")
    res = parse(data)
    assert [r.external_id for r in res.rows] == ["CAF35-0007000"]
    assert [(r.line, r.field) for r in res.rejected] == [(3, "last_name")]


def test_a_stray_byte_in_a_dropped_column_does_not_reject_the_row():
    header = HEADER + ",remarque"
    data = csv_bytes({"first_name": "Hélène", "remarque": "Zo\ue000"}, header=header).replace(
        "\ue000".encode(), b"\xe9")
    res = parse(data)
    assert res.encoding == "utf-8" and [r.first_name for r in res.rows] == ["Hélène"] and not res.rejected
