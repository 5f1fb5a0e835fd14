"""Letters to PDF: one letter, or a whole print batch rendered at once.

WeasyPrint's fixed cost per document (parsing the stylesheet, loading and
subsetting the fonts, writing the PDF) is larger than the cost of laying out
one more letter, so the daily print batch puts every letter in ONE HTML
document and renders it once:

* :func:`combine_letters` takes the ``<section class="letter">`` of each full
  HTML letter (as produced by ``letters/<step>.html.j2``), the stylesheets once,
  and marks each section with an ``id``;
* the parts of a letter marked ``data-layer`` in the template (letterhead,
  place and date, postage mention, footer: the same for every letter of an
  organisation on a given day, and out of the flow of the text) are taken out
  of each letter; each distinct set of them is rendered ONCE, on a page of its
  own at the end of the document, and that page is turned into a PDF form
  XObject drawn on the first page of every letter that carried it (a
  "form overlay", as print-production tools do). A letter then costs the
  layout of its own text only; the printed page is the same;
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

Rendering fetches nothing but ``data:`` URLs and the files of the template
assets folders (``assets``: the project's ``templates/`` by default; the
caller passes ``RELANCE_TEMPLATES_DIR``): no network, no other file — a letter
planted in the shared folder that links ``/proc/self/environ`` or a secret as
an image, a stylesheet or a PDF attachment gets nothing (the fetch is refused
and WeasyPrint renders without it). A link inside the assets folder that leads
out of it is refused too.
"""
from __future__ import annotations

import contextlib
import csv
import gc
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Iterable

from worker.adapters.files import SHARED_MODE, fsync_dir, publish, safe_dir, write_temp
from worker.adapters.spreadsheet import safe_row

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
_LAYER_PREFIX = "relance-layer-"
_LAYER_CLASS = "relance-layer"
# A layer page is a letter section holding only the letter's layer elements; it
# must never add a bookmark (the page is removed from the PDF).
_LAYER_STYLE = (
    f"<style>section.{_LAYER_CLASS}, section.{_LAYER_CLASS} * "
    "{ bookmark-level: none; string-set: none; }\n"
    f"section.{_LAYER_CLASS} {{ break-before: page; }}</style>"
)
_START_TAG_RE = re.compile(r"<([A-Za-z][A-Za-z0-9-]*)((?:\s[^>]*)?)>")
_LAYER_ATTR_RE = re.compile(r"(?:^|\s)data-layer(?=[\s=/]|$)")
_VOID_TAGS = frozenset(
    "area base br col embed hr img input link meta source track wbr".split()
)
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
    # reference -> (layer number, index of the layer's page in _document.pages)
    _layers: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False, compare=False)

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
                stamps: dict[int, int] = {}
                layer_pages: dict[int, int] = {}
                if ref in self._layers:
                    layer, layer_index = self._layers[ref]
                    pages = pages + [self._document.pages[layer_index]]
                    stamps, layer_pages = {0: layer}, {layer: count}
                out[ref] = self._document.copy(pages).write_pdf(
                    finisher=_layer_stamper(stamps, layer_pages)
                )
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


def _element_end(html: str, start: re.Match) -> int:
    """Index just after the element opened by ``start`` (its matching end tag)."""
    tag = start.group(1).lower()
    if tag in _VOID_TAGS or start.group(0).endswith("/>"):
        return start.end()
    depth = 1
    for match in re.finditer(rf"<(/?){re.escape(tag)}(?=[\s/>])[^>]*>", html[start.end():], re.I):
        if match.group(1):
            depth -= 1
        elif not match.group(0).endswith("/>"):
            depth += 1
        if depth == 0:
            return start.end() + match.end()
    raise ValueError(f"élément <{tag} data-layer> sans balise de fin")


def _take_layer(body: str) -> tuple[str, str]:
    """(the body without its ``data-layer`` elements, those elements in order)."""
    if "data-layer" not in body:
        return body, ""
    kept: list[str] = []
    layer: list[str] = []
    position = 0
    for match in _START_TAG_RE.finditer(body):
        if match.start() < position or not _LAYER_ATTR_RE.search(match.group(2)):
            continue
        end = _element_end(body, match)
        kept.append(body[position : match.start()])
        layer.append(body[match.start() : end])
        position = end
    kept.append(body[position:])
    return "".join(kept), "\n".join(layer)


@dataclass(frozen=True)
class _Composition:
    """One HTML document for several letters, and where their layers are."""

    html: str
    letter_count: int
    layer_of: list[int | None]  # letter n -> its layer number (None: no layer)
    layer_count: int


def _compose(html_documents: list[str], *, layers: bool = True) -> _Composition:
    styles: list[str] = []
    seen: set[str] = set()
    bodies: list[str] = []
    layer_numbers: dict[str, int] = {}
    layer_of: list[int | None] = []
    for index, document in enumerate(html_documents):
        doc_styles, body = _split_document(document)
        for style in doc_styles:
            if style not in seen:
                seen.add(style)
                styles.append(style)
        layer = ""
        if layers:
            body, layer = _take_layer(body)
        layer_of.append(layer_numbers.setdefault(layer, len(layer_numbers)) if layer else None)
        bodies.append(_mark_section(body, f"{_ANCHOR_PREFIX}{index}"))
    for layer, number in layer_numbers.items():
        bodies.append(
            f'<section class="letter {_LAYER_CLASS}" id="{_LAYER_PREFIX}{number}">\n{layer}\n</section>'
        )
    if layer_numbers:
        styles.append(_LAYER_STYLE)
    html = (
        '<!DOCTYPE html>\n<html lang="fr">\n<head>\n<meta charset="utf-8">\n'
        "<title>Lot de courriers</title>\n"
        + "\n".join(styles)
        + "\n</head>\n<body>\n"
        + "\n".join(bodies)
        + "\n</body>\n</html>\n"
    )
    return _Composition(html, len(html_documents), layer_of, len(layer_numbers))


def combine_letters(html_documents: list[str], *, layers: bool = True) -> str:
    """One HTML document holding every letter, in order.

    The stylesheets (``<style>`` and ``<link rel=stylesheet>`` of each head) are
    kept once each, in order of first appearance; the n-th letter's section gets
    ``id="relance-letter-<n>"`` (n from 0). With ``layers`` (the default), the
    ``data-layer`` elements of each letter are taken out of it, and each
    distinct set of them becomes a section ``id="relance-layer-<k>"`` after the
    letters (see :func:`render_batch`).
    """
    return _compose(list(html_documents), layers=layers).html


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


PROJECT_ASSETS = Path(__file__).resolve().parents[2] / "templates"


class AssetRefused(ValueError):
    """A URL a letter may not load (network, or a file outside the template assets)."""


def _inside(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root + os.sep) for root in roots)


def asset_fetcher(assets: Path | Iterable[Path] | None = None):
    """WeasyPrint URL fetcher: ``data:`` URLs, and regular files under ``assets`` (after resolving links)."""
    from urllib.parse import unquote, urlsplit

    from weasyprint.urls import URLFetcher

    if assets is None:
        assets = [PROJECT_ASSETS]
    elif isinstance(assets, (str, Path)):
        assets = [assets]
    roots = tuple(os.path.realpath(p) for p in assets)

    class _AssetFetcher(URLFetcher):
        def fetch(self, url, headers=None):
            scheme = url.split(":", 1)[0].lower() if ":" in url else ""
            if scheme == "data":
                return super().fetch(url, headers)
            if scheme == "file":
                parts = urlsplit(url)
                if parts.netloc in ("", "localhost"):
                    path = os.path.realpath(unquote(parts.path))
                    if _inside(path, roots) and os.path.isfile(path):
                        return super().fetch(Path(path).as_uri(), headers)
            raise AssetRefused(f"ressource refusée dans un courrier ({scheme or 'sans protocole'}:) : "
                               "seuls les fichiers des modèles et les URL data: sont permis")

    return _AssetFetcher(allowed_protocols={"file", "data"}, allow_redirects=False, timeout=1)


def _html(document: str, base_url: str | None, assets=None):
    from weasyprint import HTML

    return HTML(string=document, base_url=base_url, url_fetcher=asset_fetcher(assets))


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


def _render_document(document: str, base_url: str | None, assets=None):
    return _html(document, base_url, assets).render(font_config=_font_config())


def box_height_mm(document: str, class_name: str) -> float:
    """The height (margin box, mm) of the first element of ``document`` carrying ``class_name``, as
    WeasyPrint lays it out: what a letter reserves for a block drawn elsewhere (the information
    notice, a layer of the print batch: templates/letters/letter.css)."""
    with _fewer_gc_passes():
        page = _render_document(document, None).pages[0]
    stack = [page._page_box]
    while stack:
        box = stack.pop()
        element = getattr(box, "element", None)
        if element is not None and class_name in (element.get("class") or "").split() \
                and getattr(box, "element_tag", None) is not None and box.height is not None:
            return box.margin_height() * 25.4 / 96
        stack.extend(reversed(getattr(box, "children", ()) or ()))
    raise ValueError(f"aucun élément de classe {class_name!r}")


def render_pdf(html_documents: list[str], base_url: str | None = None, *, assets=None) -> bytes:
    """Render one or several full HTML letters into one PDF (one render).

    A single document is rendered as it is; several are rendered as a batch
    (:func:`render_batch`), each letter starting on a new page.
    """
    if not html_documents:
        raise ValueError("aucun courrier à imprimer")
    if len(html_documents) == 1:
        with _fewer_gc_passes():
            return _render_document(html_documents[0], base_url, assets).write_pdf()
    letters = [LetterHtml(f"courrier-{i}", html) for i, html in enumerate(html_documents)]
    return render_batch(letters, base_url, assets=assets).pdf


def _anchor_number(anchor: str, prefix: str) -> int | None:
    if anchor.startswith(prefix) and anchor[len(prefix):].isdigit():
        return int(anchor[len(prefix):])
    return None


def _page_map(document, composition: _Composition) -> tuple[list[tuple[int, int]], dict[int, int]]:
    """((first_page, page_count) of each letter, page index of each layer).

    Letter pages are numbered from 1; layer pages are indexes (from 0) in
    ``document.pages``, and come after every letter.
    """
    count = composition.letter_count
    first_pages: dict[int, int] = {}
    layer_pages: dict[int, list[int]] = {}
    for page_number, page in enumerate(document.pages, start=1):
        for anchor in page.anchors:
            letter = _anchor_number(anchor, _ANCHOR_PREFIX)
            if letter is not None:
                # a letter on several pages carries its anchor on each of them
                first_pages.setdefault(letter, page_number)
                continue
            layer = _anchor_number(anchor, _LAYER_PREFIX)
            if layer is not None:
                layer_pages.setdefault(layer, []).append(page_number)
    missing = [i for i in range(count) if i not in first_pages]
    if missing:
        raise LetterRenderError(f"courriers introuvables dans le rendu : n° {missing}")
    starts = [first_pages[i] for i in range(count)]
    if starts[0] != 1 or any(b <= a for a, b in zip(starts, starts[1:])):
        raise LetterRenderError(f"pages des courriers dans le désordre : {starts}")
    layers: dict[int, int] = {}
    for layer in range(composition.layer_count):
        pages = layer_pages.get(layer, [])
        if len(pages) != 1 or pages[0] <= starts[-1]:
            raise LetterRenderError(
                f"calque n° {layer} mal placé (pages {pages}) : les éléments data-layer "
                "doivent être hors du flux du texte (position absolue ou running)"
            )
        layers[layer] = pages[0] - 1
    end_of_letters = min(layers.values(), default=len(document.pages)) + 1
    ends = starts[1:] + [end_of_letters]
    return [(start, end - start) for start, end in zip(starts, ends)], layers


def _object_number(reference: bytes | str) -> int:
    if isinstance(reference, bytes):
        reference = reference.decode("ascii")
    return int(reference.split()[0])


def _layer_stamper(stamps: dict[int, int], layer_pages: dict[int, int]):
    """WeasyPrint finisher drawing each layer page on the pages that carry it.

    ``stamps[page_index] = layer`` and ``layer_pages[layer] = page_index``
    (indexes from 0 in the rendered document). Each layer page's content
    stream becomes a form XObject of the shared resources (same fonts, same
    coordinates: the page and the letter's first page have the same size), is
    drawn at the start of each stamped page (``/RelanceLayerK Do``), and the
    layer page leaves the page tree and the named destinations.
    """

    def finisher(_document, pdf) -> None:
        import pydyf

        numbers = list(pdf.pages["Kids"][::3])
        pages = [pdf.objects[number] for number in numbers]
        names: dict[int, str] = {}
        for layer, index in layer_pages.items():
            page = pages[index]
            stream = pdf.objects[_object_number(page["Contents"])]
            stream.extra["Type"] = "/XObject"
            stream.extra["Subtype"] = "/Form"
            stream.extra["BBox"] = page["MediaBox"]
            stream.extra["Resources"] = page["Resources"]
            resources = pdf.objects[_object_number(page["Resources"])]
            names[layer] = f"RelanceLayer{layer}"
            resources["XObject"][names[layer]] = stream.reference
        for index, layer in stamps.items():
            stream = pdf.objects[_object_number(pages[index]["Contents"])]
            # drawn first, in the page's default coordinates (the form sets its own)
            stream.stream.insert(0, f"/{names[layer]} Do".encode("ascii"))

        removed = {pages[index].reference for index in layer_pages.values()}
        kept = [number for number, page in zip(numbers, pages) if page.reference not in removed]
        pdf.pages["Kids"] = pydyf.Array([item for number in kept for item in (number, 0, "R")])
        pdf.pages["Count"] = len(kept)
        for index in layer_pages.values():
            pages[index].clear()  # an unreferenced, empty object
        dests = pdf.catalog.get("Names", {}).get("Dests") if "Names" in pdf.catalog else None
        if dests is not None:
            entries = list(dests["Names"])
            dests["Names"] = pydyf.Array(
                [
                    item
                    for name, destination in zip(entries[::2], entries[1::2])
                    if destination[0] not in removed
                    for item in (name, destination)
                ]
            )

    return finisher


def render_batch(
    letters: list[LetterHtml],
    base_url: str | None = None,
    *,
    keep_document: bool = False,
    assets=None,
) -> BatchResult:
    """Render every letter in one WeasyPrint document; map pages back to letters.

    Returns the combined PDF and ``pages_per_letter[reference] = (first_page,
    page_count)`` (first page numbered from 1). The letters' ``data-layer``
    elements are rendered once per distinct set (see the module's docstring).
    With ``keep_document=True`` the laid-out document is kept so that
    :meth:`BatchResult.split` can write each letter's PDF without re-rendering.
    """
    if not letters:
        raise ValueError("aucun courrier à imprimer")
    references = [letter.reference for letter in letters]
    duplicates = sorted({r for r in references if references.count(r) > 1})
    if duplicates:
        raise ValueError(f"référence en double dans le lot : {', '.join(duplicates)}")

    composition = _compose([letter.html for letter in letters])
    with _fewer_gc_passes():
        document = _render_document(composition.html, base_url, assets)
        ranges, layer_pages = _page_map(document, composition)
        stamps = {
            first - 1: layer
            for (first, _count), layer in zip(ranges, composition.layer_of)
            if layer is not None
        }
        pdf = document.write_pdf(finisher=_layer_stamper(stamps, layer_pages))
    return BatchResult(
        pdf=pdf,
        pages_per_letter=dict(zip(references, ranges)),
        page_count=sum(count for _first, count in ranges),
        _document=document if keep_document else None,
        _layers={
            reference: (layer, layer_pages[layer])
            for reference, layer in zip(references, composition.layer_of)
            if layer is not None
        },
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


def write_print_batch(
    out_dir: Path,
    *,
    day: date,
    organisation: str,
    postage: str,
    letters: list[BatchLetter],
    base_url: str | None = None,
    assets=None,
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
        assets=assets,
    )

    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for letter in letters:
        first, count = result.pages_per_letter[letter.reference]
        writer.writerow(safe_row([letter.reference, letter.case_reference, letter.step, first, count]))

    safe_dir(Path(out_dir), day.isoformat())  # a link planted as the day's folder is refused
    pdf_temp = write_temp(directory, result.pdf, ".pdf", SHARED_MODE)  # 0640: the print room's group reads it
    manifest_temp = write_temp(directory, rows.getvalue().encode("utf-8"), ".csv", SHARED_MODE)
    try:
        publish(pdf_temp, pdf_path)  # claims the batch name atomically
        try:
            publish(manifest_temp, manifest_path)
        except BaseException:
            pdf_path.unlink(missing_ok=True)
            raise
    finally:
        pdf_temp.unlink(missing_ok=True)
        manifest_temp.unlink(missing_ok=True)
    fsync_dir(directory)

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
