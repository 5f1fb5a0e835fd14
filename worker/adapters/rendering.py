"""Rendering of the messages sent to beneficiaries (letters, SMS, e-mails).

Templates live in ``templates/`` (see ``templates/README.md`` for the contract):

* ``letters/<step>.html.j2`` (extends ``letters/_base.html.j2``),
* ``sms/<step>.txt.j2``,
* ``email/<step>.txt.j2`` and, optionally, ``email/<step>.html.j2``.

Letters and e-mails set ``{% set subject = "..." %}`` at top level; it is read
from the rendered template module (this works through ``{% extends %}``).

Every rendering returns a :class:`Rendered` carrying the template version (the
SHA-256 of the template's source and of every template it extends or includes,
recursively) and a hash of what was rendered, which the audit log records
instead of the content itself.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta
from markupsafe import Markup

__all__ = [
    "CHANNELS",
    "Rendered",
    "TemplateError",
    "TemplateRenderer",
    "date_fr",
    "time_fr",
    "datetime_fr",
    "date_short",
    "datetime_short",
    "city_fr",
    "accord",
    "html_to_text",
]

CHANNELS = ("letter", "sms", "email")

_DAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
_MONTHS = (
    "janvier", "février", "mars", "avril", "mai", "juin",
    "juillet", "août", "septembre", "octobre", "novembre", "décembre",
)

try:  # the system time zone database; the displayed time is always Paris time
    from zoneinfo import ZoneInfo

    _PARIS = ZoneInfo("Europe/Paris")
except Exception:  # pragma: no cover - no tz database on the host
    _PARIS = None


@dataclass(frozen=True)
class Rendered:
    template_name: str  # e.g. "letters/invitation_1.html.j2"
    template_version: str  # sha256 hex of the sources (template + extends/includes)
    subject: str | None
    text: str  # SMS body; e-mail text part; plain-text rendering of a letter
    html: str | None  # e-mail HTML part; the full letter HTML
    content_hash: str  # sha256 hex of subject + text + html


class TemplateError(Exception):
    """A template is missing, invalid, or needs a variable the context lacks."""

    def __init__(self, template_name: str, message: str):
        super().__init__(f"{template_name}: {message}")
        self.template_name = template_name


# --------------------------------------------------------------------------- #
# Filters (French formatting, independent of the system locale)
# --------------------------------------------------------------------------- #

def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return _paris(value).date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        return _as_date(datetime.fromisoformat(value)) if "T" in value else date.fromisoformat(value)
    raise TypeError(f"expected a date, got {type(value).__name__}")


def _paris(value: datetime) -> datetime:
    if value.tzinfo is not None and _PARIS is not None:
        return value.astimezone(_PARIS)
    return value


def date_fr(value: Any) -> str:
    """``lundi 3 juin 2024`` (``samedi 1er juin 2024`` on the first of the month)."""
    d = _as_date(value)
    day = "1er" if d.day == 1 else str(d.day)
    return f"{_DAYS[d.weekday()]} {day} {_MONTHS[d.month - 1]} {d.year}"


def time_fr(value: Any) -> str:
    """``14 h 30``, ``9 h 00``."""
    if isinstance(value, datetime):
        value = _paris(value).time()
    elif isinstance(value, str):
        value = time.fromisoformat(value)
    if not isinstance(value, time):
        raise TypeError(f"expected a time or datetime, got {type(value).__name__}")
    return f"{value.hour} h {value.minute:02d}"


def date_short(value: Any) -> str:
    """``lundi 03/06/2024``: the compact form used in SMS."""
    d = _as_date(value)
    return f"{_DAYS[d.weekday()]} {d.day:02d}/{d.month:02d}/{d.year}"


def datetime_short(value: Any) -> str:
    """``lundi 03/06/2024 à 14 h 30``: the compact form used in SMS."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    value = _paris(value)
    return f"{date_short(value)} à {time_fr(value)}"


def datetime_fr(value: Any) -> str:
    """``lundi 3 juin 2024 à 14 h 30`` (aware datetimes are shown in Paris time)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    value = _paris(value)
    return f"{date_fr(value)} à {time_fr(value)}"


_LOWER_WORDS = {"sur", "sous", "en", "de", "des", "du", "la", "le", "les", "lès", "lez", "aux", "au", "et", "d", "l"}


def city_fr(address: Any) -> str:
    """The city of a postal address, for the place-and-date line.

    Accepts the address lines (the last one is ``POSTCODE CITY``) or that line;
    ``35600 REDON`` -> ``Redon``, ``35510 CESSON-SEVIGNE`` -> ``Cesson-Sevigne``,
    ``85000 LA ROCHE-SUR-YON`` -> ``La Roche-sur-Yon``; a CEDEX mention is dropped.
    """
    if not isinstance(address, str):
        address = list(address)[-1]
    line = re.sub(r"^\s*\d{4,5}\s+", "", address.strip())
    line = re.sub(r"\s+CEDEX(\s+\d+)?\s*$", "", line, flags=re.IGNORECASE).strip()
    if not line.isupper():  # already written in mixed case: keep it
        return line
    parts = re.split(r"([\s\-']+)", line.lower())
    out = []
    for i, part in enumerate(parts):
        if i > 0 and part in _LOWER_WORDS:
            out.append(part)
        else:
            out.append(part[:1].upper() + part[1:])
    return "".join(out)


def accord(person: Any) -> str:
    """Feminine agreement suffix from the civility: ``e``, ``""`` or ``(e)``.

    Used as ``{% set e = person|accord %}`` then ``convoqué{{ e }}``.
    """
    civility = person["civility"] if isinstance(person, dict) else getattr(person, "civility")
    civility = (civility or "").strip()
    if civility == "Madame":
        return "e"
    if civility == "Monsieur":
        return ""
    return "(e)"


# --------------------------------------------------------------------------- #
# Text normalisation
# --------------------------------------------------------------------------- #

_PARAGRAPH_TAGS = {
    "p", "section", "article", "header", "footer", "main", "address", "table",
    "ul", "ol", "dl", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
}
_LINE_TAGS = {"br", "div", "li", "dt", "dd", "tr", "aside"}
_SKIP_TAGS = {"head", "style", "script", "title"}


class _TextExtractor(HTMLParser):
    """HTML to text: paragraph-level tags give a blank line, line-level tags a
    line break; consecutive breaks merge; whitespace in text is a space."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._pending = 0  # 0: none, 1: line break, 2: blank line

    def _break(self, level: int) -> None:
        self._pending = max(self._pending, level)

    def _tag(self, tag: str) -> None:
        if tag in _PARAGRAPH_TAGS:
            self._break(2)
        elif tag in _LINE_TAGS:
            self._break(1)
        elif tag in ("td", "th"):
            self._data(" ")

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        else:
            self._tag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        else:
            self._tag(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag not in _SKIP_TAGS:
            self._tag(tag)

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._data(data)

    def _data(self, data: str) -> None:
        data = re.sub(r"\s+", " ", data)
        if not data.strip():
            if self.parts and not self._pending:
                self.parts.append(" ")
            return
        if self._pending:
            if self.parts:
                self.parts.append("\n" * self._pending)
            self._pending = 0
            data = data.lstrip()
        self.parts.append(data)


def _normalise_paragraphs(text: str) -> str:
    """Collapse spaces within lines, strip lines, keep at most one blank line."""
    lines = [re.sub(r"[ \t\u00a0\u202f\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    out = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return out.strip()


def html_to_text(html: str) -> str:
    """A plain-text rendering of an HTML document (tags stripped, whitespace normalised)."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return _normalise_paragraphs("".join(parser.parts))


def _normalise_sms(text: str) -> str:
    """Runs of spaces become one space, runs of newlines one newline; stripped."""
    text = re.sub(r"[ \t\u00a0\r\f\v]+", " ", text)
    text = re.sub(r" *\n[ \n]*", "\n", text)
    return text.strip()


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _sha256(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x1f")  # unit separator: ("ab", "c") and ("a", "bc") differ
    return h.hexdigest()


# --------------------------------------------------------------------------- #
# Renderer
# --------------------------------------------------------------------------- #

def _autoescape(name: str | None) -> bool:
    return bool(name) and name.endswith(".html.j2")


class TemplateRenderer:
    """Renders ``(step, channel)`` with a context following templates/README.md."""

    def __init__(self, templates_dir: Path):
        self.templates_dir = Path(templates_dir)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.templates_dir)),
            undefined=jinja2.StrictUndefined,
            autoescape=_autoescape,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            auto_reload=True,
        )
        self.env.filters.update(
            date_fr=date_fr,
            time_fr=time_fr,
            datetime_fr=datetime_fr,
            date_short=date_short,
            datetime_short=datetime_short,
            city_fr=city_fr,
            accord=accord,
        )

    # -- names --------------------------------------------------------------

    @staticmethod
    def _names(step: str, channel: str) -> tuple[str, str | None]:
        """(main template, optional second template) for a step and channel."""
        if not re.fullmatch(r"[a-z0-9_]+", step or "") or step.startswith("_"):
            raise TemplateError(f"{channel}/{step}", "invalid step name")
        if channel == "letter":
            return f"letters/{step}.html.j2", None
        if channel == "sms":
            return f"sms/{step}.txt.j2", None
        if channel == "email":
            return f"email/{step}.txt.j2", f"email/{step}.html.j2"
        raise TemplateError(f"{channel}/{step}", f"unknown channel {channel!r} (expected one of {CHANNELS})")

    def _exists(self, name: str) -> bool:
        return (self.templates_dir / name).is_file()

    def has(self, step: str, channel: str) -> bool:
        try:
            main, _ = self._names(step, channel)
        except TemplateError:
            return False
        return self._exists(main)

    # -- versions -----------------------------------------------------------

    def _source(self, name: str) -> str:
        try:
            source, _, _ = self.env.loader.get_source(self.env, name)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(name, f"template not found: {exc.name}") from exc
        return source

    def _dependencies(self, name: str) -> list[tuple[str, str]]:
        """[(name, source)] of a template and of all it extends/includes/imports, depth first."""
        seen: dict[str, str] = {}

        def visit(current: str) -> None:
            if current in seen:
                return
            source = self._source(current)
            seen[current] = source
            # Parsing is the costly part: remember each source's references (sources are re-read,
            # so an edited template is re-parsed).
            cache = self.__dict__.setdefault("_refs_cache", {})
            refs = cache.get((current, source))
            if refs is None:
                try:
                    ast = self.env.parse(source, current)
                except jinja2.TemplateSyntaxError as exc:
                    raise TemplateError(current, f"syntax error line {exc.lineno}: {exc.message}") from exc
                refs = list(meta.find_referenced_templates(ast))
                cache[(current, source)] = refs
            for ref in refs:
                if ref is None:
                    raise TemplateError(current, "dynamic extends/include cannot be versioned")
                visit(ref)

        visit(name)
        return list(seen.items())

    def _version(self, names: list[str]) -> str:
        parts: list[str] = []
        done: set[str] = set()
        for name in names:
            for dep, source in self._dependencies(name):
                if dep not in done:
                    done.add(dep)
                    parts.extend((dep, source))
        return _sha256(*parts)

    def template_version(self, step: str, channel: str) -> str:
        main, second = self._names(step, channel)
        if not self._exists(main):
            raise TemplateError(main, "template not found")
        names = [main] + ([second] if second and self._exists(second) else [])
        return self._version(names)

    # -- rendering ----------------------------------------------------------

    def _render(self, name: str, context: dict) -> tuple[str, str | None]:
        """Render one template; return (output, subject or None)."""
        try:
            template = self.env.get_template(name)
            module = template.make_module(dict(context))
            output = str(module)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(name, f"template not found: {exc.name}") from exc
        except jinja2.UndefinedError as exc:
            raise TemplateError(name, f"undefined variable: {exc.message}") from exc
        except jinja2.TemplateSyntaxError as exc:
            where = exc.name or exc.filename or name
            raise TemplateError(name, f"syntax error in {where} line {exc.lineno}: {exc.message}") from exc
        except TemplateError:
            raise
        except Exception as exc:  # a filter given None, a bad attribute type...
            raise TemplateError(name, f"{type(exc).__name__}: {exc}") from exc
        subject = getattr(module, "subject", None)
        if isinstance(subject, Markup):  # built from escaped values in an HTML template
            subject = subject.unescape()
        elif subject is not None and not isinstance(subject, str):
            subject = str(subject)
        return output, subject

    def render(self, step: str, channel: str, context: dict) -> Rendered:
        main, second = self._names(step, channel)
        if not self._exists(main):
            raise TemplateError(main, "template not found")
        context = dict(context)
        context.setdefault("step", step)

        html: str | None
        if channel == "letter":
            html, subject = self._render(main, context)
            text = html_to_text(html)
            names = [main]
        elif channel == "sms":
            raw, _ = self._render(main, context)
            text, html, subject = _normalise_sms(raw), None, None
            names = [main]
        else:  # email
            raw, subject = self._render(main, context)
            text = _normalise_paragraphs(raw)
            names = [main]
            html = None
            if second and self._exists(second):
                html, html_subject = self._render(second, context)
                html = html.strip() + "\n"
                names.append(second)
                if subject is None:
                    subject = html_subject
                elif html_subject is not None and _one_line(html_subject) != _one_line(subject):
                    raise TemplateError(second, "subject differs from the text part's subject")

        if channel in ("letter", "email"):
            if subject is None or not _one_line(subject):
                raise TemplateError(main, 'no subject: set {% set subject = "..." %} at top level')
            subject = _one_line(subject)
        if not text:
            raise TemplateError(main, "rendered an empty text")

        content_hash = _sha256(subject or "", text, html or "")
        return Rendered(
            template_name=main,
            template_version=self._version(names),
            subject=subject,
            text=text,
            html=html,
            content_hash=content_hash,
        )
