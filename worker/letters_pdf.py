"""Letters to PDF: one letter, or a whole print batch rendered at once.

WeasyPrint's fixed cost per document (parsing the stylesheet, loading and
subsetting the fonts, writing the PDF) is larger than the cost of laying out
one more letter, so the daily print batch puts every letter in ONE HTML
document and renders it once:

* :func:`combine_letters` takes the ``<section class="letter">`` of each full
  HTML letter (as produced by ``letters/<step>.html.j2``), the stylesheets once,
  and marks each section with an ``id``;
* :func:`render_batch` renders that document and maps the pages back to the
  letters through WeasyPrint's page anchors (``Page.anchors``: the ids present
  on each page), giving ``(first_page, page_count)`` per letter reference,
  first page numbered from 1;
* :func:`split_pdf` (pypdf) or :meth:`BatchResult.split` (pypdf, or
  WeasyPrint's ``Document.copy``) cut one PDF per letter when one is needed
  (archive, e-mail copy); pypdf is several times faster;
* :func:`write_print_batch` writes the day's batch for one organisation and
  one postage: ``<out_dir>/<YYYY-MM-DD>/<organisation>_<postage>.pdf`` and the
  printer's manifest ``<organisation>_<postage>_manifest.csv``, atomically, and
  never over an existing batch.

Rendering never fetches anything from the network: only ``file:`` and
``data:`` URLs are resolved.
"""
from __future__ import annotations

import contextlib
import csv
import gc
import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "LetterHtml",
    "BatchLetter",
    "BatchResult",
    "PrintBatch",
    "LetterRenderError",
    "combine_letters",
    "render_pdf",
    "render_batch",
    "split_pdf",
    "write_print_batch",
    "MANIFEST_COLUMNS",
]

MANIFEST_COLUMNS = ("reference", "case_reference", "step", "first_page", "pages")

_ANCHOR_PREFIX = "relance-letter-"
_TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")

_BODY_RE = re.compile(r"<body\b[^>]*>(.*)</body\s*>", re.IGNORECASE | re.DOTALL)
_HEAD_RE = re.compile(r"<head\b[^>]*>(.*?)</head\s*>", re.IGNORECASE | re.DOTALL)
_STYLE_RE = re.compile(r"<style\b[^>]*>.*?</style\s*>", re.IGNORECASE | re.DOTALL)
_LINK_RE = re.compile(r"<link\b[^>]*\brel\s*=\s*[\"']?stylesheet[^>]*>", re.IGNORECASE)
_SECTION_RE = re.compile(
    r"<section\b(?=[^>]*\bclass\s*=\s*[\"'][^\"']*\bletter\b)([^>]*)>", re.IGNORECASE
)
_ID_ATTR_RE = re.compile(r"""\s\bid\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)""", re.IGNORECASE)


class LetterRenderError(RuntimeError):
    """The batch rendered, but its pages could not be mapped back to the letters."""


@dataclass(frozen=True)
class LetterHtml:
    """One letter: its message reference and its full HTML document."""

    reference: str
    html: str


@dataclass(frozen=True)
class BatchLetter:
    """One letter of a print batch (see :func:`write_print_batch`)."""

    reference: str  # message reference, e.g. RL-000123-INV1-L
    case_reference: str  # e.g. RL-000123
    step: str  # e.g. invitation_1
    html: str  # full HTML document from letters/<step>.html.j2


@dataclass
class BatchResult:
    """The rendered batch.

    ``pages_per_letter[reference] == (first_page, page_count)``, pages numbered
    from 1 in the combined PDF, in the order the letters were given.
    """

    pdf: bytes
    pages_per_letter: dict[str, tuple[int, int]]
    page_count: int
    _document: Any = field(default=None, repr=False, compare=False)

    def split(
        self, references: Iterable[str] | None = None, *, method: str = "pypdf"
    ) -> dict[str, bytes]:
        """One PDF per letter (all letters, or those of ``references``).

        ``method="pypdf"`` (default) cuts the batch PDF (:func:`split_pdf`): the
        fastest (measured 3 to 8 times faster), but each part embeds the
        batch's font subsets (about 20 KiB). ``method="weasyprint"`` writes each
        letter's pages again from the laid-out document (needs
        ``render_batch(..., keep_document=True)``): smaller files, slower.
        """
        wanted = list(self.pages_per_letter) if references is None else list(references)
        ranges = {ref: self.pages_per_letter[ref] for ref in wanted}
        if method == "pypdf":
            return split_pdf(self.pdf, ranges)
        if method != "weasyprint":
            raise ValueError(f"unknown split method {method!r} (pypdf or weasyprint)")
        if self._document is None:
            raise ValueError("render_batch(..., keep_document=True) is needed to split with weasyprint")
        out = {}
        with _fewer_gc_passes():
            for ref, (first, count) in ranges.items():
                pages = self._document.pages[first - 1 : first - 1 + count]
                out[ref] = self._document.copy(pages).write_pdf()
        return out


@dataclass(frozen=True)
class PrintBatch:
    """A print batch written to disk by :func:`write_print_batch`."""

    day: date
    organisation: str
    postage: str
    pdf_path: Path
    manifest_path: Path
    letter_count: int
    page_count: int
    pages_per_letter: dict[str, tuple[int, int]]
    sha256: str  # of the PDF file


# --------------------------------------------------------------------------- #
# Combining letters into one HTML document
# --------------------------------------------------------------------------- #


def _split_document(document: str) -> tuple[list[str], str]:
    """(stylesheet tags of the head, inner HTML of the body) of one document."""
    head_match = _HEAD_RE.search(document)
    head = head_match.group(1) if head_match else ""
    styles = _STYLE_RE.findall(head) + _LINK_RE.findall(head)
    body_match = _BODY_RE.search(document)
    if body_match:
        body = body_match.group(1)
    else:
        # A fragment: drop a head if any, keep the rest.
        body = _HEAD_RE.sub("", document)
        body = re.sub(r"</?(html|body)\b[^>]*>|<!DOCTYPE[^>]*>", "", body, flags=re.IGNORECASE)
        if not head_match:
            styles = _STYLE_RE.findall(body) + _LINK_RE.findall(body)
            body = _LINK_RE.sub("", _STYLE_RE.sub("", body))
    return styles, body


def _mark_section(body: str, anchor: str) -> str:
    """Give the letter's first ``<section class="letter">`` the id ``anchor``.

    A body without such a section is wrapped in one.
    """
    match = _SECTION_RE.search(body)
    if match is None:
        return f'<section class="letter" id="{anchor}">{body}</section>'
    attrs = _ID_ATTR_RE.sub("", match.group(1))
    return f'{body[: match.start()]}<section id="{anchor}"{attrs}>{body[match.end():]}'


def combine_letters(html_documents: list[str]) -> str:
    """One HTML document holding every letter, in order.

    The stylesheets (``<style>`` and ``<link rel=stylesheet>`` of each head) are
    kept once each, in order of first appearance; the n-th letter's section gets
    ``id="relance-letter-<n>"`` (n from 0).
    """
    styles: list[str] = []
    seen: set[str] = set()
    bodies: list[str] = []
    for index, document in enumerate(html_documents):
        doc_styles, body = _split_document(document)
        for style in doc_styles:
            if style not in seen:
                seen.add(style)
                styles.append(style)
        bodies.append(_mark_section(body, f"{_ANCHOR_PREFIX}{index}"))
    return (
        '<!DOCTYPE html>\n<html lang="fr">\n<head>\n<meta charset="utf-8">\n'
        "<title>Lot de courriers</title>\n"
        + "\n".join(styles)
        + "\n</head>\n<body>\n"
        + "\n".join(bodies)
        + "\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------- #
# Rendering
# --------------------------------------------------------------------------- #

_FONT_CONFIG = None


def _font_config():
    """One FontConfiguration per process (fontconfig setup is not free)."""
    global _FONT_CONFIG
    if _FONT_CONFIG is None:
        from weasyprint.text.fonts import FontConfiguration

        _FONT_CONFIG = FontConfiguration()
    return _FONT_CONFIG


def _html(document: str, base_url: str | None):
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    fetcher = URLFetcher(allowed_protocols={"file", "data"})
    return HTML(string=document, base_url=base_url, url_fetcher=fetcher)


@contextlib.contextmanager
def _fewer_gc_passes():
    """Run the young-generation collector 100 times less often while rendering.

    WeasyPrint allocates millions of short-lived objects (boxes, styles) and
    keeps most of them until the end of the render: the default collector
    keeps scanning them for nothing (about 15 % of the rendering time).
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], 70_000), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def _render_document(document: str, base_url: str | None):
    return _html(document, base_url).render(font_config=_font_config())


def render_pdf(html_documents: list[str], base_url: str | None = None) -> bytes:
    """Render one or several full HTML letters into one PDF (one render).

    A single document is rendered as it is; several are combined first
    (:func:`combine_letters`), each letter starting on a new page.
    """
    if not html_documents:
        raise ValueError("aucun courrier à imprimer")
    if len(html_documents) == 1:
        document = html_documents[0]
    else:
        document = combine_letters(list(html_documents))
    with _fewer_gc_passes():
        return _render_document(document, base_url).write_pdf()


def _page_ranges(document, count: int) -> list[tuple[int, int]]:
    """(first_page, page_count) of each of the ``count`` letters, from the anchors."""
    first_pages: dict[int, int] = {}
    for page_number, page in enumerate(document.pages, start=1):
        for anchor in page.anchors:
            if anchor.startswith(_ANCHOR_PREFIX):
                # a letter on several pages carries its anchor on each of them
                first_pages.setdefault(int(anchor[len(_ANCHOR_PREFIX):]), page_number)
    missing = [i for i in range(count) if i not in first_pages]
    if missing:
        raise LetterRenderError(f"courriers introuvables dans le rendu : n° {missing}")
    starts = [first_pages[i] for i in range(count)]
    if starts[0] != 1 or any(b <= a for a, b in zip(starts, starts[1:])):
        raise LetterRenderError(f"pages des courriers dans le désordre : {starts}")
    ends = starts[1:] + [len(document.pages) + 1]
    return [(start, end - start) for start, end in zip(starts, ends)]


def render_batch(
    letters: list[LetterHtml],
    base_url: str | None = None,
    *,
    keep_document: bool = False,
) -> BatchResult:
    """Render every letter in one WeasyPrint document; map pages back to letters.

    Returns the combined PDF and ``pages_per_letter[reference] = (first_page,
    page_count)`` (first page numbered from 1). With ``keep_document=True`` the
    laid-out document is kept so that :meth:`BatchResult.split` can write each
    letter's PDF without re-rendering.
    """
    if not letters:
        raise ValueError("aucun courrier à imprimer")
    references = [letter.reference for letter in letters]
    duplicates = sorted({r for r in references if references.count(r) > 1})
    if duplicates:
        raise ValueError(f"référence en double dans le lot : {', '.join(duplicates)}")

    with _fewer_gc_passes():
        document = _render_document(combine_letters([letter.html for letter in letters]), base_url)
        ranges = _page_ranges(document, len(letters))
        pdf = document.write_pdf()
    return BatchResult(
        pdf=pdf,
        pages_per_letter=dict(zip(references, ranges)),
        page_count=len(document.pages),
        _document=document if keep_document else None,
    )


def split_pdf(batch_pdf: bytes, ranges: dict[str, tuple[int, int]]) -> dict[str, bytes]:
    """Cut a batch PDF into one PDF per letter with pypdf.

    ``ranges[reference] = (first_page, page_count)``, first page numbered from 1
    (as in :attr:`BatchResult.pages_per_letter`).
    """
    from pypdf import PdfReader, PdfWriter

    reader = PdfReader(io.BytesIO(batch_pdf))
    total = len(reader.pages)
    out = {}
    for reference, (first, count) in ranges.items():
        if first < 1 or count < 1 or first - 1 + count > total:
            raise ValueError(f"{reference} : pages {first}+{count} hors du PDF ({total} pages)")
        writer = PdfWriter()
        for index in range(first - 1, first - 1 + count):
            writer.add_page(reader.pages[index])
        buffer = io.BytesIO()
        writer.write(buffer)
        out[reference] = buffer.getvalue()
    return out


# --------------------------------------------------------------------------- #
# The daily print batch
# --------------------------------------------------------------------------- #


def _check_token(name: str, value: str) -> str:
    if not isinstance(value, str) or not _TOKEN_RE.fullmatch(value):
        raise ValueError(
            f"{name} invalide pour un nom de fichier : {value!r} "
            "(lettres, chiffres, « - » et « _ » seulement)"
        )
    return value


def _write_temp(directory: Path, data: bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def _publish(temp: Path, final: Path) -> None:
    """Move ``temp`` to ``final`` atomically; FileExistsError if ``final`` exists.

    ``os.link`` fails if the target exists, so two workers can never both
    publish the same batch; ``os.replace`` after a check is the fallback on
    file systems without hard links.
    """
    try:
        os.link(temp, final)
    except FileExistsError:
        raise FileExistsError(f"le lot existe déjà : {final}") from None
    except OSError:
        if final.exists():
            raise FileExistsError(f"le lot existe déjà : {final}") from None
        os.replace(temp, final)
        return
    os.unlink(temp)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - not on every platform
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_print_batch(
    out_dir: Path,
    *,
    day: date,
    organisation: str,
    postage: str,
    letters: list[BatchLetter],
    base_url: str | None = None,
) -> PrintBatch:
    """Write the print batch of ``day`` for one organisation and one postage.

    Files: ``out_dir/<YYYY-MM-DD>/<organisation>_<postage>.pdf`` and
    ``<organisation>_<postage>_manifest.csv`` (columns ``reference,
    case_reference, step, first_page, pages``; first page numbered from 1).
    Raises FileExistsError if that batch already exists (nothing is
    overwritten; the caller never batches a letter twice), ValueError on an
    empty batch, a duplicate reference or a name unfit for a file name.
    """
    _check_token("organisation", organisation)
    _check_token("affranchissement", postage)
    if not letters:
        raise ValueError("aucun courrier à imprimer")

    directory = Path(out_dir) / day.isoformat()
    stem = f"{organisation}_{postage}"
    pdf_path = directory / f"{stem}.pdf"
    manifest_path = directory / f"{stem}_manifest.csv"
    for path in (pdf_path, manifest_path):
        if path.exists():
            raise FileExistsError(f"le lot existe déjà : {path}")

    result = render_batch(
        [LetterHtml(reference=letter.reference, html=letter.html) for letter in letters],
        base_url=base_url,
    )

    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for letter in letters:
        first, count = result.pages_per_letter[letter.reference]
        writer.writerow([letter.reference, letter.case_reference, letter.step, first, count])

    directory.mkdir(parents=True, exist_ok=True)
    pdf_temp = _write_temp(directory, result.pdf, ".pdf")
    manifest_temp = _write_temp(directory, rows.getvalue().encode("utf-8"), ".csv")
    try:
        _publish(pdf_temp, pdf_path)  # claims the batch name atomically
        try:
            _publish(manifest_temp, manifest_path)
        except BaseException:
            pdf_path.unlink(missing_ok=True)
            raise
    finally:
        pdf_temp.unlink(missing_ok=True)
        manifest_temp.unlink(missing_ok=True)
    _fsync_dir(directory)

    return PrintBatch(
        day=day,
        organisation=organisation,
        postage=postage,
        pdf_path=pdf_path,
        manifest_path=manifest_path,
        letter_count=len(letters),
        page_count=result.page_count,
        pages_per_letter=dict(result.pages_per_letter),
        sha256=hashlib.sha256(result.pdf).hexdigest(),
    )
