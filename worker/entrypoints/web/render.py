"""The workspace's pages: Jinja2 templates under ``templates/web/``, autoescaped, in French."""
from __future__ import annotations

import datetime as dt

import jinja2
from fastapi.responses import HTMLResponse

from worker.adapters.rendering import date_fr, datetime_fr

def _d(value) -> str:
    """``03/06/2024``."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        value = value.date()
    return f"{value:%d/%m/%Y}"


def _dt(value) -> str:
    """``03/06/2024 à 14:30`` (a local date-time)."""
    return "" if value is None else f"{value:%d/%m/%Y à %H:%M}"


def _cap(text) -> str:
    """The first letter upper case, the rest as it is (Jinja's capitalize lowers the rest)."""
    text = str(text or "")
    return text[:1].upper() + text[1:]


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else (plural or word + 's')}"


class Pages:
    def __init__(self, templates_dir):
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir)), autoescape=True,
                                      undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                      auto_reload=False)
        self.env.filters.update(d=_d, dt=_dt, date_fr=date_fr, datetime_fr=datetime_fr, plural=_plural, cap=_cap)

    def render(self, name: str, status_code: int = 200, headers: dict | None = None, **context) -> HTMLResponse:
        html = self.env.get_template(f"web/{name}.html.j2").render(**context)
        return HTMLResponse(html, status_code=status_code, headers=headers)
