"""Cells of the CSV/XLSX files people open in a spreadsheet: never a formula.

A text cell starting with ``=``, ``+``, ``-``, ``@`` (or a tab / carriage return,
which some spreadsheets skip before reading a formula) is run as a formula by
Excel and LibreOffice ("CSV injection"). :func:`safe_row` prefixes such a cell
with an apostrophe, which the spreadsheet shows as text. Numbers, dates and
other non-text values are written as they are. Every CSV or XLSX export goes
through it (``grep -rn "csv.writer\\|DictWriter\\|openpyxl" worker``).
"""
from __future__ import annotations

from typing import Any, Iterable

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

__all__ = ["FORMULA_PREFIXES", "safe_cell", "safe_row"]


def safe_cell(value: Any) -> Any:
    """``value``, or ``"'" + value`` for a text that a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def safe_row(values: Iterable[Any]) -> list[Any]:
    """:func:`safe_cell` of each value, for ``csv.writer.writerow``."""
    return [safe_cell(v) for v in values]
