"""Workbooks (XLSX, with openpyxl) and CSV files of tables people open in a spreadsheet.

Every cell goes through :func:`worker.adapters.spreadsheet.safe_row`: a text starting with ``=``,
``+``, ``-``, ``@`` is written as text, never run as a formula. One sheet per table, its header on
the first row (frozen, bold), the values typed (numbers as numbers, dates as dates, percentages as
fractions shown with ``%``).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import re
from typing import Any, Sequence

from worker.adapters.spreadsheet import safe_row

NUMBER_FORMATS = {"pct": "0.0%", "days": "0.0", "int": "0", "date": "DD/MM/YYYY"}


@dataclasses.dataclass
class Sheet:
    title: str
    header: Sequence[str]
    rows: Sequence[Sequence[Any]]
    kinds: Sequence[str] = ()  # per column: text | int | pct | days | date (NUMBER_FORMATS)
    widths: Sequence[int] = ()  # per column, in characters (default: from the header)


def sheet_title(title: str, taken: set[str]) -> str:
    """A valid, unique sheet name: at most 31 characters, none of ``[]:*?/\\``."""
    base = re.sub(r"[\[\]:*?/\\]", " ", title).strip()[:31] or "Feuille"
    name, n = base, 2
    while name.lower() in taken:
        suffix = f" ({n})"
        name, n = base[:31 - len(suffix)] + suffix, n + 1
    taken.add(name.lower())
    return name


def xlsx_bytes(sheets: Sequence[Sheet]) -> bytes:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter

    wb = Workbook(write_only=True)
    taken: set[str] = set()
    bold = Font(bold=True)
    wrap = Alignment(wrap_text=True, vertical="top")
    for sheet in sheets:
        ws = wb.create_sheet(title=sheet_title(sheet.title, taken))
        ws.freeze_panes = "A2"
        for i, label in enumerate(sheet.header):
            width = sheet.widths[i] if i < len(sheet.widths) else min(max(len(str(label)) + 2, 10), 40)
            ws.column_dimensions[get_column_letter(i + 1)].width = width
        header = []
        for label in safe_row(sheet.header):
            cell = WriteOnlyCell(ws, value=label)
            cell.font, cell.alignment = bold, wrap
            header.append(cell)
        ws.append(header)
        formats = [NUMBER_FORMATS.get(k) for k in sheet.kinds]
        for row in sheet.rows:
            cells = []
            for i, value in enumerate(safe_row(row)):
                cell = WriteOnlyCell(ws, value=value)
                fmt = formats[i] if i < len(formats) else None
                if fmt and value is not None and not isinstance(value, str):
                    cell.number_format = fmt
                cells.append(cell)
            ws.append(cells)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def csv_bytes(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """UTF-8 with a byte-order mark (a French spreadsheet then reads the accents), comma-separated."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(safe_row(header))
    for row in rows:
        writer.writerow(safe_row(row))
    return ("\ufeff" + out.getvalue()).encode("utf-8")
