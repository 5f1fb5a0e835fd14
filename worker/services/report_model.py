"""The report's shape: tables of typed values with French titles and labels (:mod:`worker.services.report`
builds them, :mod:`worker.services.report_output` writes them)."""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

KINDS = ("text", "int", "pct", "days")  # pct: a fraction (0 to 1); days: a number of days


@dataclasses.dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: str = "int"


@dataclasses.dataclass
class Table:
    key: str
    title: str
    columns: list[Column]
    rows: list[list[Any]]
    note: str = ""

    def as_json(self) -> dict:
        return {"title": self.title, "note": self.note,
                "columns": [{"key": c.key, "label": c.label, "kind": c.kind} for c in self.columns],
                "rows": [{c.key: _json_value(v) for c, v in zip(self.columns, row)} for row in self.rows]}

    def column(self, key: str) -> list[Any]:
        index = [c.key for c in self.columns].index(key)
        return [row[index] for row in self.rows]


@dataclasses.dataclass
class Report:
    generated_at: dt.datetime  # local time
    start: dt.date
    end: dt.date
    organisation: str | None
    organisation_label: str
    months: list[dt.date]
    tables: list[Table]
    notes: list[str]
    target_days: int = 15  # the first invitation's target (config/paths.yaml)

    def table(self, key: str) -> Table:
        return next(t for t in self.tables if t.key == key)

    def as_json(self) -> dict:
        return {"generated_at": self.generated_at.isoformat(), "from": self.start.isoformat(),
                "to": self.end.isoformat(), "organisation": self.organisation, "notes": self.notes,
                "tables": {t.key: t.as_json() for t in self.tables}}


def _json_value(value):
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 4)
    return value
