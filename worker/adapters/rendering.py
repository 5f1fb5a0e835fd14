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

import functools
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
    "LANGUAGES",
    "date_fr",
    "date_plain",
    "date_num",
    "date_lang",
    "datetime_lang",
    "duration_fr",
    "duration_lang",
    "letter_date",
    "sms_fit",
    "ucs2_length",
    "time_fr",
    "town",
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
_DAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS_EN = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)
# Arabic: the weekday by name, the date in digits (03/06/2024): month names differ between the
# Maghreb (جوان / يونيو) and the Mashriq (حزيران), digits are read everywhere.
_DAYS_AR = ("الاثنين", "الثلاثاء", "الأربعاء", "الخميس", "الجمعة", "السبت", "الأحد")

# The languages of the SMS and of the summary attached to the invitation letters (issue 10); every
# other text is in French. A person whose language is another one gets French.
LANGUAGES = ("fr", "en", "ar")
# Unicode isolates: a phone number, a link or a date kept left-to-right inside Arabic text
# (without them "02 61 91 10 10" reads "10 10 91 61 02" in a right-to-left paragraph)
_LRI, _PDI = "\u2066", "\u2069"

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


def date_plain(value: Any) -> str:
    """``3 juin 2024`` (``1er juin 2024``): a date that is not an appointment's has no weekday."""
    d = _as_date(value)
    day = "1er" if d.day == 1 else str(d.day)
    return f"{day} {_MONTHS[d.month - 1]} {d.year}"


def date_num(value: Any) -> str:
    """``03/06/2024``: a deadline in an SMS (an appointment there keeps its weekday: :func:`datetime_short`)."""
    d = _as_date(value)
    return f"{d.day:02d}/{d.month:02d}/{d.year}"


def _language(lang: Any) -> str:
    return lang if lang in LANGUAGES else "fr"


def date_lang(value: Any, lang: str = "fr", weekday: bool = False) -> str:
    """A date in ``lang``: ``3 juin 2024`` / ``3 June 2024`` / ``03/06/2024``; with ``weekday``
    (an appointment) ``lundi 3 juin 2024`` / ``Monday 3 June 2024`` / ``الاثنين 03/06/2024``."""
    d = _as_date(value)
    lang = _language(lang)
    if lang == "en":
        text = f"{d.day} {_MONTHS_EN[d.month - 1]} {d.year}"
        return f"{_DAYS_EN[d.weekday()]} {text}" if weekday else text
    if lang == "ar":
        text = date_num(d)
        return f"{_DAYS_AR[d.weekday()]} {text}" if weekday else text
    return date_fr(d) if weekday else date_plain(d)


def datetime_lang(value: Any, lang: str = "fr") -> str:
    """An appointment in ``lang``: ``lundi 3 juin 2024 à 14 h 30`` / ``Monday 3 June 2024 at 14:30`` /
    ``الاثنين 03/06/2024، الساعة 14:30``."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    value = _paris(value)
    lang = _language(lang)
    if lang == "en":
        return f"{date_lang(value, 'en', weekday=True)} at {value.hour:02d}:{value.minute:02d}"
    if lang == "ar":
        return f"{date_lang(value, 'ar', weekday=True)}، الساعة {value.hour:02d}:{value.minute:02d}"
    return datetime_fr(value)


def duration_fr(minutes: Any) -> str:
    """``45 minutes``, ``1 heure``, ``1 h 30``, ``2 heures``."""
    minutes = int(minutes)
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{minutes} minutes"
    if not rest:
        return "1 heure" if hours == 1 else f"{hours} heures"
    return f"{hours} h {rest:02d}"


def duration_lang(minutes: Any, lang: str = "fr") -> str:
    """A length in ``lang``: ``1 h 30`` / ``1 hour 30 minutes`` / ``90 دقيقة``."""
    minutes = int(minutes)
    lang = _language(lang)
    if lang == "en":
        hours, rest = divmod(minutes, 60)
        parts = ([f"{hours} hour" + ("s" if hours > 1 else "")] if hours else []) + (
            [f"{rest} minutes"] if rest else [])
        return " ".join(parts)
    if lang == "ar":
        return f"{minutes} دقيقة"
    return duration_fr(minutes)


def town(place: Any) -> str:
    """The town of a one-line place (``CDAS de Redon, 12 rue des Douves, 35600 Redon`` -> ``Redon``)."""
    last = str(place).rsplit(",", 1)[-1].strip()
    return city_fr(last) if last else str(place)


SMS_LIMIT = 306  # two GSM-7 segments (153 septets each)
SMS_LIMIT_UCS2 = 268  # four UCS-2 segments (67 characters each): the Arabic SMS


def ucs2_length(text: str) -> int:
    """Characters of ``text`` sent as UCS-2 (UTF-16 code units): an SMS that is not GSM-7 (Arabic)."""
    return len(text.encode("utf-16-le")) // 2


def sms_fit(candidates: Any, limit: int | None = None, encoding: str = "gsm7") -> str:
    """The first of ``candidates`` that fits ``limit`` once normalised, else the last one: e.g. the
    SMS with the full place, else with its town. ``encoding`` ``gsm7`` (French, English: septets
    after transliteration, limit 306) or ``ucs2`` (Arabic: UTF-16 units, limit 268)."""
    from worker.domain.gsm7 import gsm7_length

    measure = ucs2_length if encoding == "ucs2" else gsm7_length
    limit = limit or (SMS_LIMIT_UCS2 if encoding == "ucs2" else SMS_LIMIT)
    candidates = [str(c) for c in candidates]
    for text in candidates:
        if measure(_normalise_sms(text)) <= limit:
            return text
    return candidates[-1]


def nobreak(value: Any) -> str:
    """``value`` with non-breaking spaces (a phone number kept on one line)."""
    return str(value).replace(" ", "\u00a0")


def ltr(value: Any) -> str:
    """``value`` kept left-to-right inside right-to-left text (Unicode isolates LRI ... PDI)."""
    return f"{_LRI}{value}{_PDI}"


_LETTER_DATE = re.compile(r'<time class="letter-date" datetime="(\d{4}-\d{2}-\d{2})">[^<]*</time>')


def letter_date(value: Any) -> Markup:
    """The date a letter bears (``3 juin 2024``: no weekday), marked so that the print batch can set
    it to the day the letter actually goes out (:func:`redate_letter`)."""
    d = _as_date(value)
    return Markup(f'<time class="letter-date" datetime="{d.isoformat()}">{date_plain(d)}</time>')


def redate_letter(html: str, day: date) -> tuple[str, bool]:
    """The letter's HTML dated ``day`` (the working day its print batch goes out); (html, changed)."""
    wanted = letter_date(day)
    new, n = _LETTER_DATE.subn(lambda m: str(wanted), html)
    return new, n > 0 and new != html


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

    def _tag(self, tag: str, attrs: list | None = None) -> None:
        if attrs and any(name == "class" and "footnote" in (value or "").split() for name, value in attrs):
            self._break(2)  # a footnote (the letters' information notice) is a paragraph of its own
        elif tag in _PARAGRAPH_TAGS:
            self._break(2)
        elif tag in _LINE_TAGS:
            self._break(1)
        elif tag in ("td", "th"):
            self._data(" ")

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        else:
            self._tag(tag, attrs)

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


QR_DPI = 300  # print resolution of the letters' QR code, at least
QR_SIZE_MM = 24  # its printed size (templates/letters/letter.css: .qr img)


@functools.lru_cache(maxsize=256)
def qr_png(url: str) -> str:
    """A QR code of ``url`` as a PNG ``data:`` URI (the letters' booking link, issue 16): whole pixels
    per module, at least QR_DPI when printed QR_SIZE_MM wide, drawn without interpolation
    (``image-rendering: pixelated``), so its edges stay sharp. A raster image is embedded once per
    print batch and only referenced by each letter; the SVG it replaced was parsed and drawn again on
    every letter (13 % of a batch's time: bench/RESULTS-letters.md). A ``data:`` URL is the only kind
    the PDF renderer fetches."""
    import segno

    code = segno.make(str(url), error="m", micro=False)
    modules = code.symbol_size(border=0)[0]
    scale = max(1, -(-QR_DPI * QR_SIZE_MM // (25.4 * modules)))
    return code.png_data_uri(scale=int(scale), border=0)


# --------------------------------------------------------------------------- #
# Renderer
# --------------------------------------------------------------------------- #

def _autoescape(name: str | None) -> bool:
    return bool(name) and name.endswith(".html.j2")


@functools.lru_cache(maxsize=64)
def _notice_height_mm(css: str, notice_html: str) -> float:
    """Laid out once per stylesheet and text (a controller's notice), then remembered."""
    from worker.adapters.pdf import box_height_mm

    document = ('<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8"><style>' + css + "</style></head>"
                '<body><section class="letter"><span class="privacy-notice" style="position: static">'
                '<span class="privacy-text">' + notice_html + "</span></span></section></body></html>")
    return box_height_mm(document, "privacy-text")


class TemplateRenderer:
    """Renders ``(step, channel)`` with a context following templates/README.md."""

    def __init__(self, templates_dir: Path):
        self.templates_dir = Path(templates_dir)
        self._letter_css: tuple[int, str] | None = None  # (mtime, text) of letters/letter.css
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
            letter_date=letter_date,
            date_plain=date_plain,
            date_num=date_num,
            date_lang=date_lang,
            datetime_lang=datetime_lang,
            duration_fr=duration_fr,
            duration_lang=duration_lang,
            ltr=ltr,
            nobreak=nobreak,
            town=town,
            sms_fit=sms_fit,
            qr=qr_png,
            notice_height=self._notice_height,
        )

    def _notice_height(self, notice_html) -> float:
        """The height (mm) of the letters' information notice (``.privacy-text``, 9 pt, 172 mm wide)
        with this text: the first page keeps that much room for it (letters/_base.html.j2)."""
        path = self.templates_dir / "letters" / "letter.css"
        stamp = path.stat().st_mtime_ns  # the stylesheet read again only when it changed (templates reload)
        if self._letter_css is None or self._letter_css[0] != stamp:
            self._letter_css = (stamp, path.read_text(encoding="utf-8"))
        return _notice_height_mm(self._letter_css[1], str(notice_html))

    # -- names --------------------------------------------------------------

    @staticmethod
    def _names(step: str, channel: str, language: str = "fr") -> tuple[str, str | None]:
        """(main template, optional second template) for a step and channel (and, for an SMS, the
        person's language: ``sms/<step>.<lang>.txt.j2``; see :meth:`_sms_name`)."""
        if not re.fullmatch(r"[a-z0-9_]+", step or "") or step.startswith("_"):
            raise TemplateError(f"{channel}/{step}", "invalid step name")
        if channel == "letter":
            return f"letters/{step}.html.j2", None
        if channel == "sms":
            if language != "fr" and language in LANGUAGES:
                return f"sms/{step}.{language}.txt.j2", None
            return f"sms/{step}.txt.j2", None
        if channel == "email":
            return f"email/{step}.txt.j2", f"email/{step}.html.j2"
        raise TemplateError(f"{channel}/{step}", f"unknown channel {channel!r} (expected one of {CHANNELS})")

    def render_report(self, name: str, context: dict) -> str:
        """An agents' document (``templates/reports/<name>.html.j2``) as HTML."""
        if not re.fullmatch(r"[a-z0-9_]+", name or ""):
            raise TemplateError(f"reports/{name}", "invalid report name")
        template = f"reports/{name}.html.j2"
        try:
            return self.env.get_template(template).render(**context)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(template, f"template not found: {exc.name}") from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(template, str(exc)) from exc

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

    @staticmethod
    def language_of(context: dict) -> str:
        """The person's language in a context (``person.language``; French when absent or unknown)."""
        person = context.get("person")
        lang = person.get("language") if isinstance(person, dict) else getattr(person, "language", None)
        return _language(lang)

    def _main_name(self, step: str, channel: str, language: str) -> tuple[str, str | None]:
        """The names for ``language``: its SMS when there is one, else the French one."""
        names = self._names(step, channel, language)
        if language != "fr" and not self._exists(names[0]):
            return self._names(step, channel)
        return names

    def template_version(self, step: str, channel: str, language: str = "fr") -> str:
        main, second = self._main_name(step, channel, _language(language))
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
        main, second = self._main_name(step, channel, self.language_of(context))
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
