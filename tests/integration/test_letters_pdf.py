"""Letters to PDF with real WeasyPrint rendering (worker.adapters.pdf).

Uses the real letter templates (worker.adapters.rendering.TemplateRenderer with the
sample contexts of tests/template_samples.py) and real postal blocks
(worker.domain.postal.address_block), one letter per template.
"""
from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
from datetime import date
from pathlib import Path

import pytest
from pypdf import PdfReader

from worker.adapters.pdf import (
    MANIFEST_COLUMNS,
    BatchLetter,
    LetterHtml,
    combine_letters,
    render_batch,
    render_pdf,
    split_pdf,
    write_print_batch,
)
from worker.domain.postal import address_block

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
MM = 72 / 25.4  # PDF points per millimetre

STEPS = (
    "invitation_1",
    "convocation",
    "pre_sanction_notice",
    "invitation_2",
    "crsa_referral",
    "ft_convocation",
    "ft_warning",
    "sanction_decision",
    "sanction_lifting",
    "procedure_closed",
)
PEOPLE = (
    ("Madame", "Marie", "Da Silva", "21 impasse des Tilleuls", None, "35390", "GRAND-FOUGERAY"),
    ("Monsieur", "Julien", "Diallo", "47 rue de Vilaine", "Bâtiment B", "35600", "BAINS-SUR-OUST"),
    ("Madame", "Manon", "Fontaine", "32 rue Saint-Michel", "Chez M. Dupont", "35330", "VAL D'ANAST"),
    ("Madame", "Inès", "Riou", "59 allée des Chênes", "Résidence Les Ajoncs", "35560", "SAINT-NICOLAS-DE-REDON"),
    (None, "Sébastien", "L'Hôtellier", "lieu-dit La Noë", "Appartement 12", "35480", "GUIPRY-MESSAC"),
    ("Monsieur", "Nicolas", "Saint-Jalmes", "117 avenue du Général de Gaulle", None, "56350", "ALLAIRE"),
    ("Madame", "Nathalie", "Le Goff", "3 place de l'Église", None, "35550", "PIPRIAC"),
    ("Monsieur", "Yann", "Guéguen", "8 rue du Port", None, "35600", "REDON"),
    ("Madame", "Élodie", "Perrin", "14 rue de la Libération", "Appartement 3", "35580", "GUICHEN"),
    (None, "Camille", "Hervé", "2 chemin des Landes", None, "35660", "LANGON"),
)
assert len(PEOPLE) >= len(STEPS)
LONG_PERSON = (
    "Monsieur", "Jean-Baptiste", "Le Bihan-Kerouédan", "12 chemin de la Grée", "Résidence du Parc",
    "35600", "SAINTE-MARIE",
)


def _person(civility, first, last, line1, line2, postcode, city):
    return {
        "civility": civility or "Madame, Monsieur",
        "first_name": first,
        "last_name": last,
        "address_lines": address_block(
            civility=civility, first_name=first, last_name=last, line1=line1, line2=line2,
            postcode=postcode, city=city,
        ),
    }


def _minimal_letter(reference: str, person: dict) -> str:
    css = (TEMPLATES / "letters" / "letter.css").read_text()
    lines = "".join(f"<div>{line}</div>" for line in person["address_lines"])
    body = "<p>Texte du courrier, avec des accents : é è à ç.</p>" * 8
    return (
        f'<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8"><style>{css}</style></head>'
        f'<body><section class="letter" data-reference="{reference}">'
        f'<header class="letterhead"><div class="org-name">CDAS</div></header>'
        f'<address class="recipient">{lines}</address>'
        f'<p class="reference">Réf. : {reference}</p><p class="subject">Objet : test</p>'
        f'<main class="body">{body}</main></section></body></html>'
    )


def _renderer():
    """The real template renderer, or None while the templates are missing."""
    try:
        from worker.adapters.rendering import TemplateRenderer
    except ImportError:  # pragma: no cover
        return None
    renderer = TemplateRenderer(TEMPLATES)
    return renderer if all(renderer.has(step, "letter") for step in STEPS) else None


def _render_letter(
    renderer, step: str, person: dict, case_reference: str, reference: str, *, long: bool = False
) -> str:
    if renderer is None:  # pragma: no cover - templates not written yet
        return _minimal_letter(reference, person)
    from tests.template_samples import sample_context

    context = sample_context(step, long=long)
    context["person"] = person
    context["case"] = dict(context["case"], reference=case_reference)
    context["message"] = {"reference": reference}
    return renderer.render(step, "letter", context).html


@pytest.fixture(scope="module")
def letters() -> list[dict]:
    """[{reference, case_reference, step, person, html}] for one letter per
    template, then a pre-sanction notice with long values (on two pages)."""
    renderer = _renderer()
    out = []
    rows = list(zip(STEPS, PEOPLE, [False] * len(STEPS))) + [("pre_sanction_notice", LONG_PERSON, True)]
    for i, (step, person_row, long) in enumerate(rows):
        person = _person(*person_row)
        case_reference = f"RL-{200 + i:06d}"
        reference = f"{case_reference}-{step[:4].upper()}-L"
        html = _render_letter(renderer, step, person, case_reference, reference, long=long)
        out.append(
            {"reference": reference, "case_reference": case_reference, "step": step,
             "person": person, "html": html}
        )
    return out


@pytest.fixture(scope="module")
def batch(letters):
    return render_batch([LetterHtml(l["reference"], l["html"]) for l in letters], keep_document=True)


def _pages_text(pdf: bytes) -> list[str]:
    return [page.extract_text() or "" for page in PdfReader(io.BytesIO(pdf)).pages]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text)


# --------------------------------------------------------------------------- #


def test_batch_page_count_and_contiguous_ranges(letters, batch):
    reader = PdfReader(io.BytesIO(batch.pdf))
    assert len(reader.pages) == batch.page_count
    assert list(batch.pages_per_letter) == [l["reference"] for l in letters]
    expected_first = 1
    for reference, (first, count) in batch.pages_per_letter.items():
        assert first == expected_first, reference
        assert count >= 1
        expected_first += count
    assert expected_first - 1 == batch.page_count
    # some letters of the real templates run on two pages: the mapping must cope
    assert batch.page_count >= len(letters)


def test_each_letter_first_page_has_its_address_block_once(letters, batch):
    pages = _pages_text(batch.pdf)
    for letter in letters:
        first, count = batch.pages_per_letter[letter["reference"]]
        lines = letter["person"]["address_lines"]
        first_page = _norm(pages[first - 1])
        letter_text = _norm(" ".join(pages[first - 1 : first - 1 + count]))
        for line in lines:
            assert first_page.count(line) == 1, (letter["reference"], line, first_page[:400])
        # the identity and locality lines appear once in the whole letter
        assert letter_text.count(lines[0]) == 1
        assert letter_text.count(lines[-1]) == 1
        # and in no other letter
        others = " ".join(
            _norm(p) for i, p in enumerate(pages) if not first - 1 <= i < first - 1 + count
        )
        assert lines[0] not in others


def test_every_page_carries_the_letter_reference_and_later_pages_their_number(letters, batch):
    """The first page has the reference in its header (and no page margin
    boxes); each later page has "Réf. <reference>" and its own page number."""
    pages = _pages_text(batch.pdf)
    assert any(count > 1 for _first, count in batch.pages_per_letter.values())
    for letter in letters:
        first, count = batch.pages_per_letter[letter["reference"]]
        text = _norm(pages[first - 1])
        assert f"Réf. : {letter['reference']} — Dossier {letter['case_reference']}" in text
        assert "Page 1" not in text
        for n in range(1, count):
            text = _norm(pages[first - 1 + n])
            assert f"Réf. {letter['reference']}" in text
            assert f"Page {n + 1}" in text


def test_accents_are_extracted_as_text(batch):
    text = _norm(" ".join(_pages_text(batch.pdf)))
    for word in ("Bâtiment B", "Résidence Les Ajoncs", "légitime", "solidarité", "réception"):
        assert word in text


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")
def test_recipient_block_sits_in_the_envelope_window(letters, batch, tmp_path):
    """Every word of the postal block is inside the window (page x 100-186 mm,
    y 52-82 mm); nothing else is printed in the area the window may show."""
    for letter in letters:
        first, _ = batch.pages_per_letter[letter["reference"]]
        words = _first_page_words(batch.pdf, tmp_path, page=first)
        assert words
        block_words = {w for line in letter["person"]["address_lines"] for w in line.split()}
        in_window = [w for w in words if w[2] > 88 and w[0] < 190 and w[3] > 39 and w[1] < 96]
        assert in_window, "no text in the window"
        for x0, y0, x1, y1, word in in_window:
            assert word.replace("&apos;", "'") in block_words, f"{word!r} shows through the window"
            assert 99 <= x0 and x1 <= 187, (word, x0, x1)
            assert 51 <= y0 and y1 <= 83, (word, y0, y1)
        assert len(in_window) == sum(len(line.split()) for line in letter["person"]["address_lines"])


def test_split_pdf_gives_one_pdf_per_letter(letters, batch):
    for splitter in (
        lambda: split_pdf(batch.pdf, batch.pages_per_letter),
        batch.split,
        lambda: batch.split(method="weasyprint"),
    ):
        parts = splitter()
        assert list(parts) == [l["reference"] for l in letters]
        for letter in letters:
            reader = PdfReader(io.BytesIO(parts[letter["reference"]]))
            assert len(reader.pages) == batch.pages_per_letter[letter["reference"]][1]
            first_page = _norm(reader.pages[0].extract_text())
            assert letter["person"]["address_lines"][0] in first_page
            assert f"Réf. : {letter['reference']}" in first_page
            # the letterhead, drawn from the batch's layer, and the information notice came along
            assert "Protection de vos données" in first_page and "Tél. :" in first_page


def test_split_pdf_rejects_a_range_outside_the_pdf(batch):
    with pytest.raises(ValueError):
        split_pdf(batch.pdf, {"X": (batch.page_count, 2)})


def test_render_pdf_one_and_several(letters):
    one = render_pdf([letters[0]["html"]])
    assert len(PdfReader(io.BytesIO(one)).pages) >= 1
    two = render_pdf([letters[0]["html"], letters[3]["html"]])
    text = _norm(" ".join(_pages_text(two)))
    assert letters[0]["person"]["address_lines"][0] in text
    assert letters[3]["person"]["address_lines"][0] in text
    with pytest.raises(ValueError):
        render_pdf([])


def test_combine_letters_keeps_styles_once_and_marks_each_section(letters):
    combined = combine_letters([l["html"] for l in letters])
    assert combined.count("letter.css") <= 1 and combined.count("@page letter:nth(1 of letter)") == 1
    for i in range(len(letters)):
        assert combined.count(f'id="relance-letter-{i}"') == 1
    assert combined.count('<section id="relance-letter-') == len(letters)
    # the layer elements left the letters for one section per distinct layer, after them
    head, body = combined.split("</head>", 1)
    letters_part, layers_part = body.split('<section class="letter relance-layer"', 1)
    assert "data-layer" not in letters_part
    assert 'class="letterhead' not in letters_part and 'class="place-date' not in letters_part
    # the information notice is a layer too (the same for every letter of a controller); each letter
    # keeps the empty footnote that holds its place at the bottom of the first page
    assert "Protection de vos données" not in letters_part
    assert len(re.findall(r'<span class="footnote privacy" style="height: [0-9.]+mm"></span>', letters_part)) \
        == len(letters)
    layers = combined.count('<section class="letter relance-layer" id="relance-layer-')
    assert 1 <= layers < len(letters)
    assert layers_part.count('class="letterhead" data-layer') == layers
    assert len(re.findall(r'<span class="privacy-notice" data-layer style="top: [0-9.]+mm">', layers_part)) == layers
    assert layers_part.count("Protection de vos données") == layers
    # without layers, each letter keeps its own
    plain = combine_letters([l["html"] for l in letters], layers=False)
    assert "relance-layer" not in plain
    assert plain.count('class="letterhead" data-layer') == len(letters)


def test_combine_letters_accepts_fragments_and_replaces_ids():
    html = combine_letters(
        ["<p>sans section</p>", '<section class="letter" id="x" data-reference="B"><p>b</p></section>']
    )
    assert '<section class="letter" id="relance-letter-0"><p>sans section</p></section>' in html
    assert 'id="x"' not in html and 'id="relance-letter-1"' in html


def test_render_batch_refuses_duplicates_and_empty(letters):
    with pytest.raises(ValueError, match="double"):
        render_batch([LetterHtml("A", letters[0]["html"]), LetterHtml("A", letters[1]["html"])])
    with pytest.raises(ValueError):
        render_batch([])


# --------------------------------------------------------------------------- #
# write_print_batch
# --------------------------------------------------------------------------- #


def _batch_letters(letters):
    return [
        BatchLetter(l["reference"], l["case_reference"], l["step"], l["html"]) for l in letters
    ]


def test_write_print_batch_files_manifest_and_refusal_to_overwrite(letters, tmp_path):
    day = date(2024, 5, 20)
    written = write_print_batch(
        tmp_path, day=day, organisation="CDAS-REDON", postage="lettre_verte",
        letters=_batch_letters(letters),
    )
    assert written.pdf_path == tmp_path / "2024-05-20" / "CDAS-REDON_lettre_verte.pdf"
    assert written.manifest_path == tmp_path / "2024-05-20" / "CDAS-REDON_lettre_verte_manifest.csv"
    assert written.letter_count == len(letters)
    pdf = written.pdf_path.read_bytes()
    assert len(PdfReader(io.BytesIO(pdf)).pages) == written.page_count
    import hashlib

    assert written.sha256 == hashlib.sha256(pdf).hexdigest()

    with written.manifest_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == MANIFEST_COLUMNS
    assert len(rows) == len(letters) + 1
    pages = _pages_text(pdf)
    total = 0
    for row, letter in zip(rows[1:], letters):
        reference, case_reference, step, first, count = row
        assert (reference, case_reference, step) == (
            letter["reference"], letter["case_reference"], letter["step"]
        )
        assert (int(first), int(count)) == written.pages_per_letter[reference]
        assert letter["person"]["address_lines"][0] in _norm(pages[int(first) - 1])
        total += int(count)
    assert total == written.page_count

    # no temporary file left behind
    assert sorted(p.name for p in written.pdf_path.parent.iterdir()) == [
        "CDAS-REDON_lettre_verte.pdf", "CDAS-REDON_lettre_verte_manifest.csv"
    ]

    # the same batch again: refused, nothing overwritten
    before = (pdf, written.manifest_path.read_bytes())
    with pytest.raises(FileExistsError):
        write_print_batch(
            tmp_path, day=day, organisation="CDAS-REDON", postage="lettre_verte",
            letters=_batch_letters(letters[:1]),
        )
    assert (written.pdf_path.read_bytes(), written.manifest_path.read_bytes()) == before
    assert len(list(written.pdf_path.parent.iterdir())) == 2

    # another postage, or another day, is another batch
    other = write_print_batch(
        tmp_path, day=day, organisation="CDAS-REDON", postage="lrar", letters=_batch_letters(letters[2:3]),
    )
    assert other.pdf_path.name == "CDAS-REDON_lrar.pdf" and other.letter_count == 1


def test_write_print_batch_refuses_when_only_the_manifest_exists(letters, tmp_path):
    directory = tmp_path / "2024-05-21"
    directory.mkdir()
    (directory / "ML-REDON_lettre_verte_manifest.csv").write_text("x")
    with pytest.raises(FileExistsError):
        write_print_batch(
            tmp_path, day=date(2024, 5, 21), organisation="ML-REDON", postage="lettre_verte",
            letters=_batch_letters(letters[:1]),
        )
    assert not (directory / "ML-REDON_lettre_verte.pdf").exists()


@pytest.mark.parametrize(
    "organisation, postage",
    [("../etc", "lrar"), ("CDAS REDON", "lrar"), ("CDAS-REDON", "lettre/verte"), ("", "lrar")],
)
def test_write_print_batch_refuses_unsafe_names(letters, tmp_path, organisation, postage):
    with pytest.raises(ValueError):
        write_print_batch(
            tmp_path, day=date(2024, 5, 20), organisation=organisation, postage=postage,
            letters=_batch_letters(letters[:1]),
        )
    assert list(tmp_path.iterdir()) == []


def test_write_print_batch_refuses_an_empty_batch(tmp_path):
    with pytest.raises(ValueError):
        write_print_batch(tmp_path, day=date(2024, 5, 20), organisation="CDAS-REDON",
                          postage="lrar", letters=[])
    assert list(tmp_path.iterdir()) == []


def test_batch_split_methods(letters):
    result = render_batch([LetterHtml(l["reference"], l["html"]) for l in letters[:2]])
    assert set(result.split()) == {letters[0]["reference"], letters[1]["reference"]}
    with pytest.raises(ValueError, match="keep_document"):
        result.split(method="weasyprint")
    with pytest.raises(ValueError, match="unknown"):
        result.split(method="ghostscript")


def _first_page_words(pdf: bytes, tmp_path: Path, page: int = 1):
    path = tmp_path / "letter.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(
        ["pdftotext", "-f", str(page), "-l", str(page), "-bbox", str(path), "-"],
        check=True, capture_output=True, text=True,
    ).stdout
    return [
        (float(x0) / MM, float(y0) / MM, float(x1) / MM, float(y1) / MM, word)
        for x0, y0, x1, y1, word in re.findall(
            r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>', out
        )
    ]


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")
def test_a_full_six_line_block_of_38_characters_fits_the_window(tmp_path):
    """The longest block the standard allows: 6 lines, none wrapped, all in the window."""
    person = _person(
        "Madame", "Marie-Christine", "De Rochefoucauld", "117 boulevard du Maréchal de Lattre de Tassigny",
        "Chez M. et Mme Le Goff-Trémeur-Kermarec; Résidence Les Ajoncs du Grand Pré Vert; "
        "Bâtiment C escalier 4 appartement 12",
        "35560", "SAINT-NICOLAS-DE-REDON",
    )
    lines = person["address_lines"]
    assert len(lines) == 6 and max(len(line) for line in lines) == 38
    html = _render_letter(_renderer(), "invitation_1", person, "RL-000300", "RL-000300-INV1-L")
    words = _first_page_words(render_pdf([html]), tmp_path)
    block = [w for w in words if w[2] > 88 and w[0] < 190 and w[3] > 39 and w[1] < 96]
    assert len({round(w[1], 1) for w in block}) == 6  # 6 lines: none wrapped
    assert len(block) == sum(len(line.split()) for line in lines)
    for x0, y0, x1, y1, word in block:
        assert 99 <= x0 and x1 <= 187, (word, x0, x1)
        assert 51 <= y0 and y1 <= 83, (word, y0, y1)


# --------------------------------------------------------------------------- #
# Layers: what every letter of an organisation shares is rendered once
# --------------------------------------------------------------------------- #


def _raster(pdf: bytes, page: int) -> bytes:
    return subprocess.run(
        ["pdftoppm", "-r", "50", "-gray", "-f", str(page), "-l", str(page), "-"],
        input=pdf, capture_output=True, check=True,
    ).stdout


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils not installed")
def test_a_letter_of_the_batch_prints_exactly_as_the_letter_alone(letters, batch):
    """The layered batch (letterhead, place and date drawn from one form XObject per
    organisation) gives, page by page, the same pixels as the letter rendered
    on its own by plain WeasyPrint."""
    import weasyprint

    for letter in letters:
        first, count = batch.pages_per_letter[letter["reference"]]
        alone = weasyprint.HTML(string=letter["html"]).write_pdf()
        assert len(PdfReader(io.BytesIO(alone)).pages) == count, letter["reference"]
        for n in range(count):
            assert _raster(batch.pdf, first + n) == _raster(alone, n + 1), (letter["reference"], n + 1)


def test_the_batch_pdf_holds_one_form_per_distinct_layer(letters, batch):
    reader = PdfReader(io.BytesIO(batch.pdf))
    forms = set()
    for page in reader.pages:
        xobjects = page["/Resources"].get("/XObject", {})
        forms |= {name for name in xobjects if name.startswith("/RelanceLayer")}
    organisations = {re.search(r'class="org-name">([^<]*)<', l["html"]).group(1) for l in letters}
    assert len(organisations) >= 2
    # one layer per organisation and day (and postage mention), far fewer than the letters
    assert len(organisations) <= len(forms) < len(letters)
    # each letter's first page draws its layer once; later pages draw none
    for letter in letters:
        first, count = batch.pages_per_letter[letter["reference"]]
        content = reader.pages[first - 1].get_contents().get_data()
        assert len(re.findall(rb"/RelanceLayer\d+ Do", content)) == 1
        for n in range(1, count):
            assert b"/RelanceLayer" not in reader.pages[first - 1 + n].get_contents().get_data()
    # the layer pages themselves are gone: no named destination leads to them
    assert len(reader.pages) == batch.page_count
    names = reader.trailer["/Root"].get("/Names", {}).get("/Dests", {}).get("/Names", [])
    assert not any(str(name).startswith("relance-layer-") for name in names[::2])


def test_identical_letters_share_one_layer_and_the_same_letter_twice_is_not_merged(letters):
    html = letters[0]["html"]
    result = render_batch([LetterHtml("A", html), LetterHtml("B", html.replace(letters[0]["reference"], "B"))])
    assert result.pages_per_letter == {"A": (1, 1), "B": (2, 1)}
    texts = _pages_text(result.pdf)
    assert all("Protection de vos données" in text for text in texts)
    assert "Réf. : B" in _norm(texts[1]) and "Réf. : B" not in _norm(texts[0])


def test_layer_elements_are_taken_out_whole():
    from worker.adapters.pdf import _take_layer

    body = (
        '<section class="letter"><div data-layer class="a"><div>x<div>y</div></div><img src="i.png"></div>'
        '<p data-layer-note="no">stays</p><hr data-layer><p>text</p>'
        "<footer class='f' data-layer=\"\"><p>z</p></footer></section>"
    )
    kept, layer = _take_layer(body)
    assert kept == '<section class="letter"><p data-layer-note="no">stays</p><p>text</p></section>'
    assert layer == (
        '<div data-layer class="a"><div>x<div>y</div></div><img src="i.png"></div>\n'
        "<hr data-layer>\n<footer class='f' data-layer=\"\"><p>z</p></footer>"
    )
    assert _take_layer("<p>nothing</p>") == ("<p>nothing</p>", "")
    with pytest.raises(ValueError, match="balise de fin"):
        _take_layer("<div data-layer><p>never closed</p>")


def test_a_layer_element_in_the_flow_that_fills_a_page_is_refused(letters):
    from worker.adapters.pdf import LetterRenderError

    long_layer = '<div data-layer class="note">' + "<p>Texte qui occupe la page.</p>" * 200 + "</div>"
    html = letters[0]["html"].replace('<main class="body">', long_layer + '<main class="body">')
    with pytest.raises(LetterRenderError, match="data-layer"):
        render_batch([LetterHtml("A", html)])


KINDS = ("cd", "ft", "ml", "msa")
# pdftotext's word boxes span the font's ascent and descent: 1.164 em for DejaVu Sans (measured:
# a 12 pt word is 13.97 pt high), so a word's font size is its box height / 1.164.
EM_BOX = 1.164


def _size(word) -> float:
    """The font size (pt) of a pdftotext word (x0, y0, x1, y1, text in mm)."""
    return (word[3] - word[1]) * MM / EM_BOX


def _notice_top(words) -> float:
    """Page y (mm) of the information notice's first line ("Protection de vos données.")."""
    starts = [w for i, w in enumerate(words) if w[4] == "Protection" and i + 2 < len(words)
              and words[i + 1][4] == "de" and words[i + 2][4] == "vos"]
    assert starts, "no information notice on the first page"
    return starts[-1][1]


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")
@pytest.mark.parametrize("step", STEPS)
def test_each_letter_fits_one_sheet_and_its_footer_stays_on_the_paper(step, tmp_path):
    """With ordinary values every letter is one page, for every organisation kind (the pre-sanction
    notice, two at most); with long values at most two. The first page's footer is the information
    notice (a footnote): it ends at least 10 mm above the paper's edge, and the text of the letter
    never reaches it. Sizes measured on the PDF: the text 12 pt, the notice at least 9 pt (issue 10,
    "Readable print")."""
    import weasyprint

    from tests.template_samples import sample_context

    renderer = _renderer()
    most = 2 if step == "pre_sanction_notice" else 1
    for kind in ("ft",) if step.startswith("ft_") else KINDS:  # France Travail's steps are its own
        ordinary = renderer.render(step, "letter", sample_context(step, kind=kind)).html
        assert len(weasyprint.HTML(string=ordinary).render().pages) <= most, (step, kind)
    for long in (False, True):
        html = renderer.render(step, "letter", sample_context(step, long=long)).html
        pdf = weasyprint.HTML(string=html).write_pdf()
        assert len(PdfReader(io.BytesIO(pdf)).pages) <= 2
        words = _first_page_words(pdf, tmp_path)
        top = _notice_top(words)
        notice = [w for w in words if w[1] >= top - 0.5]
        assert any("CNIL" in w[4] for w in notice), "the data-protection notice is at the bottom of the first page"
        assert max(w[3] for w in notice) <= 287
        # the text of the letter never reaches the notice
        text = [w for w in words if 97 <= w[1] < top - 0.5]
        assert max(w[3] for w in text) < top
        # sizes: the text in 12 pt (the subject and body), the notice 9 pt or more
        body_sizes = sorted(_size(w) for w in text)
        assert abs(body_sizes[len(body_sizes) // 2] - 12) < 0.3, body_sizes[len(body_sizes) // 2]
        assert min(_size(w) for w in notice) >= 8.9


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")
@pytest.mark.parametrize("step", STEPS)
def test_large_print_letters_are_set_in_16_pt(step, tmp_path):
    """person.large_print: the text in 16 pt (measured on the PDF), the information notice after the
    signature in the same size; the page count may grow. The print batch keeps the large print
    (the class is on the letter's section, which the batch keeps)."""
    import weasyprint

    from tests.template_samples import sample_context

    renderer = _renderer()
    html = renderer.render(step, "letter", sample_context(step, large_print=True)).html
    assert '<body class="large-print">' in html and '<section class="letter large-print"' in html
    pdf = weasyprint.HTML(string=html).write_pdf()
    pages = len(PdfReader(io.BytesIO(pdf)).pages)
    assert pages <= 4
    sizes = []
    for page in range(1, pages + 1):
        words = _first_page_words(pdf, tmp_path, page=page)
        sizes += [_size(w) for w in words if (page > 1 or w[1] >= 97) and w[1] < 281]
    sizes.sort()
    assert abs(sizes[len(sizes) // 2] - 16) < 0.3, sizes[len(sizes) // 2]
    assert sizes[len(sizes) // 10] > 15.5  # 9 words in 10 in 16 pt (the legal note too)
    text = _norm(" ".join(_pages_text(pdf)))
    assert "Protection de vos données." in text and "CNIL" in text
    # the same letter in a print batch, with an ordinary one: the same pages as on its own
    ordinary = renderer.render(step, "letter", sample_context(step)).html
    batch = render_batch([LetterHtml("A", ordinary), LetterHtml("B", html)])
    assert batch.pages_per_letter["B"][1] == pages


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")
@pytest.mark.parametrize("language", ["en", "ar"])
@pytest.mark.parametrize("step", ["invitation_1", "invitation_2", "convocation", "ft_convocation"])
def test_the_summary_in_english_or_arabic_is_one_page_after_the_french_letter(step, language, tmp_path):
    """person.language en / ar: the French letter (one page), then its summary on one page of its
    own; Arabic right to left, in a font that has the Arabic letters (DejaVu Sans: no glyph missing)."""
    import weasyprint

    from tests.template_samples import sample_context

    renderer = _renderer()
    heading = "Summary in English" if language == "en" else "ملخص باللغة العربية"
    for long in (False, True):
        ctx = sample_context(step, language=language, long=long)
        html = renderer.render(step, "letter", ctx).html
        pdf = weasyprint.HTML(string=html).write_pdf()
        pages = [_norm(p).replace("\u2066", "").replace("\u2069", "") for p in _pages_text(pdf)]
        # the summary is the last page, and only it (one page of its own)
        assert [i for i, p in enumerate(pages) if heading in p] == [len(pages) - 1], (step, language, long)
        summary = pages[-1]
        if not long:
            assert len(pages) == 2, (step, language)
            assert "Objet :" in pages[0] and "Salutations distinguées." in pages[0]
        assert ctx["org"]["phone"] in summary
        assert f"Réf. {ctx['message']['reference']}" in summary and f"Page {len(pages)}" in summary
        if language == "en":
            assert "The letter in French before this page is the official one" in summary
        else:
            assert 'dir="rtl"' in html and 'lang="ar"' in html
            assert "الرسالة الرسمية هي الرسالة المكتوبة بالفرنسية" in summary
    # DejaVu Sans has every letter (Arabic included): no other font was fetched as a fallback
    if shutil.which("pdffonts"):
        path = tmp_path / "summary.pdf"
        path.write_bytes(pdf)
        fonts = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True, check=True).stdout
        embedded = [line.split()[0] for line in fonts.splitlines()[2:] if line.strip()]
        assert embedded and all("DejaVu-Sans" in name for name in embedded), embedded


# --- the address block in the envelope window (issue 10): measured on the PDF -----------------------

WINDOW_MM = (100, 186, 52, 82)  # x from, x to, y from, y to (letter.css)


def _words_bbox(pdf: bytes, tmp_path) -> list[tuple[float, float, float, float, str]]:
    """(xMin, yMin, xMax, yMax, word) in millimetres of the first page (pdftotext -bbox)."""
    import html as html_lib
    import re as re_lib
    import subprocess as sp

    path = tmp_path / "window.pdf"
    path.write_bytes(pdf)
    out = sp.run(["pdftotext", "-bbox", "-f", "1", "-l", "1", str(path), "-"], check=True,
                 capture_output=True, text=True).stdout
    mm = 25.4 / 72
    return [(float(a) * mm, float(b) * mm, float(c) * mm, float(d) * mm, html_lib.unescape(w))
            for a, b, c, d, w in re_lib.findall(
                r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>', out)]


@pytest.mark.parametrize("line2,city", [
    ("B.P. 12, Chez Mme Martin", "Redon"),
    ("Résidence des Grands Chênes Bâtiment C; Chez Mme Le Goff-Hernandez; BP 12345; Cedex",
     "Saint-Nicolas-de-Redon"),
])
def test_the_address_block_stays_in_the_window_one_line_each(line2, city, tmp_path):
    import weasyprint

    lines = address_block(civility="Monsieur", first_name="Jean-Baptiste", last_name="Le Bihan-Kerouédan",
                          line1="128 boulevard du Maréchal de Lattre de Tassigny", line2=line2,
                          postcode="35600", city=city)
    # and 38-character lines of the widest capitals a French address has (M, W, D, O...): the worst case
    lines = lines[:-1] + ["MOULIN DE LA GRANDE ROCHE DOM DU MANOIR"[:38]] + [lines[-1]]
    lines = lines[-6:]
    person = {"address_lines": lines}
    pdf = weasyprint.HTML(string=_minimal_letter("RL-000001-0000001", person)).write_pdf()
    words = _words_bbox(pdf, tmp_path)
    x0, x1, y0, y1 = WINDOW_MM
    block = [w for w in words if w[0] >= x0 - 1 and w[1] >= y0 - 1 and w[3] <= y1 + 1]
    rows = sorted({round(w[1], 1) for w in block})
    assert len(rows) == len(lines), (rows, lines)  # one printed line per line of the block: no wrap
    assert max(w[2] for w in block) <= x1 and min(w[0] for w in block) >= x0
    assert max(w[3] for w in block) <= y1


def test_a_po_box_is_printed_below_the_street_line(tmp_path):
    import weasyprint

    lines = address_block(civility="Madame", first_name="Julie", last_name="Martin", line1="12 rue des Douves",
                          line2="B.P. 12, Chez Mme Martin", postcode="35600", city="Redon cedex")
    pdf = weasyprint.HTML(string=_minimal_letter("RL-000001-0000002", {"address_lines": lines})).write_pdf()
    words = _words_bbox(pdf, tmp_path)
    y_of = {w[4]: w[1] for w in words}
    assert y_of["DOUVES"] < y_of["BP"] < y_of["CEDEX"]
    assert y_of["Chez"] < y_of["DOUVES"]
    assert "B.P." not in y_of  # no punctuation from the street line on


HEADER_BLOCKS = ("letterhead", "place-date", "recipient", "reference", "postage")


def _header_boxes(html: str) -> dict[str, tuple[float, float, float, float]]:
    """The first page's header blocks as WeasyPrint lays them out: class -> (x0, y0, x1, y1) in mm."""
    import weasyprint

    page = weasyprint.HTML(string=html).render().pages[0]
    found, stack = {}, [page._page_box]
    px = 25.4 / 96
    while stack:
        box = stack.pop()
        element = getattr(box, "element", None)
        classes = (element.get("class") or "").split() if element is not None else []
        for name in HEADER_BLOCKS + ("subject",):
            if name in classes and name not in found and getattr(box, "element_tag", None) in ("p", "header", "address"):
                x, y = box.border_box_x() * px, box.border_box_y() * px
                found[name] = (x, y, x + box.border_width() * px, y + box.border_height() * px)
        stack.extend(getattr(box, "children", ()) or ())
    return found


@pytest.mark.parametrize("step", STEPS)
def test_the_header_blocks_never_overlap(step):
    """Letterhead, place and date, the window's address, the references (with the matricule) and the
    postage mention each keep their own place above the subject, with ordinary and long values."""
    from tests.template_samples import sample_context

    renderer = _renderer()
    for kind in ("ft",) if step.startswith("ft_") else KINDS:
        for long in (False, True):
            context = sample_context(step, kind=kind, long=long)
            assert context["person"].get("matricule"), "the samples carry a matricule"
            boxes = _header_boxes(renderer.render(step, "letter", context).html)
            subject_top = boxes.pop("subject")[1]
            assert {"letterhead", "reference", "recipient"} <= set(boxes), boxes
            names = sorted(boxes)
            for i, a in enumerate(names):
                ax0, ay0, ax1, ay1 = boxes[a]
                assert ay1 <= subject_top + 0.1, (step, kind, long, a, ay1, subject_top)
                for b in names[i + 1:]:
                    bx0, by0, bx1, by1 = boxes[b]
                    apart = ax1 <= bx0 + 0.1 or bx1 <= ax0 + 0.1 or ay1 <= by0 + 0.1 or by1 <= ay0 + 0.1
                    assert apart, (step, kind, long, a, boxes[a], b, boxes[b])
