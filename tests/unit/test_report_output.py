"""How the report is written (worker/services/report_output.py, worker/adapters/charts.py and workbook.py):
French numbers, charts as self-contained SVG, workbooks and CSV files in which no cell is a formula."""
from __future__ import annotations

import base64
import csv
import io
import re

import openpyxl

from worker.adapters import charts, workbook
from worker.services.report_output import fmt


def test_numbers_as_a_french_reader_expects_them():
    assert fmt(None, "pct") == "—" and fmt(0.125, "pct") == "12,5\u202f%" and fmt(1.0, "pct") == "100,0\u202f%"
    assert fmt(5.5, "days") == "5,5" and fmt(9, "days") == "9" and fmt(9.0, "days") == "9"
    assert fmt(12345, "int") == "12\u202f345" and fmt("mai 2024", "text") == "mai 2024"


def test_charts_are_svg_with_nothing_to_fetch_and_the_same_every_time():
    labels = ["mai 24", "juin 24", "juil. 24"]
    svg = charts.bars(labels, [("parcours CD", [1, 6, 0]), ("Mission locale", [0, 1, 0])], "Entrants", "droits")
    again = charts.bars(labels, [("parcours CD", [1, 6, 0]), ("Mission locale", [0, 1, 0])], "Entrants", "droits")
    assert svg == again and "<svg" in svg and "<script" not in svg and "<image" not in svg
    assert not re.search(r"(?:href|src)=\"(?!#)", svg)  # only internal references
    assert "<dc:date>" not in svg and "matplotlib.org" not in svg
    line = charts.lines(labels, [("médiane", [5.5, None, 3]), ("part", [0.5, 1.0, None])], "Délais", "jours",
                        target=(15, "objectif"))
    assert "<svg" in line
    uri = charts.data_uri(svg)
    assert uri.startswith("data:image/svg+xml;base64,") and base64.b64decode(uri.split(",", 1)[1]).decode() == svg


def test_no_cell_is_ever_a_formula():
    hostile = ["=HYPERLINK(\"http://x\")", "+33612345678", "-1", "@SUM(A1)", "\t=1", "ordinaire"]
    data = workbook.xlsx_bytes([workbook.Sheet("=Feuille: [1]/?", ["=entête", "nombre"], [[v, 3] for v in hostile]
                                               + [[None, -2]], ("text", "int")),
                                workbook.Sheet("=Feuille: [1]/?", ["a"], [["b"]])])
    wb = openpyxl.load_workbook(io.BytesIO(data))
    assert wb.sheetnames == ["=Feuille   1", "=Feuille   1 (2)"]  # valid, unique sheet names
    ws = wb.worksheets[0]
    values = [list(r) for r in ws.iter_rows(values_only=True)]
    assert values[0] == ["'=entête", "nombre"]
    assert [r[0] for r in values[1:]] == ["'=HYPERLINK(\"http://x\")", "'+33612345678", "'-1", "'@SUM(A1)", "'\t=1",
                                          "ordinaire", None]
    assert values[-1][1] == -2 and ws.freeze_panes == "A2"  # numbers stay numbers
    assert all(cell.data_type != "f" for r in ws.iter_rows() for cell in r)
    text = workbook.csv_bytes(["=a", "b"], [["-3", 4], ["@x", None]]).decode("utf-8")
    assert text.startswith("\ufeff")
    assert list(csv.reader(io.StringIO(text.lstrip("\ufeff")))) == [["'=a", "b"], ["'-3", "4"], ["'@x", ""]]
