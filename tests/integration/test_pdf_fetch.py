"""PDF rendering fetches nothing but the template assets and data: URLs (issue 11).

Before: WeasyPrint resolved every ``file:`` URL: a letter HTML planted in the
shared letters folder embedded ``/proc/self/environ`` (the Twilio token) or any
readable file in the print batch, as a PDF attachment, an image or a stylesheet.
"""
from __future__ import annotations

import base64
import datetime as dt
import io

import pytest

pytest.importorskip("weasyprint")

from pypdf import PdfReader  # noqa: E402

from worker.adapters.pdf import AssetRefused, BatchLetter, asset_fetcher, render_pdf, write_print_batch  # noqa: E402

SECRET = "TOPSECRET-4f1c9a"
PNG_1PX = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")).decode()


@pytest.fixture
def planted(tmp_path):
    """A secret file, an SVG and a stylesheet showing it, and a template assets folder with a link out."""
    secret = tmp_path / "secrets" / "twilio.env"
    secret.parent.mkdir()
    secret.write_text(f"RELANCE_TWILIO_AUTH_TOKEN={SECRET}\n", encoding="utf-8")
    svg = tmp_path / "secrets" / "token.svg"
    svg.write_text(f'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="40">'
                   f'<text x="0" y="20">{SECRET}-SVG</text></svg>', encoding="utf-8")
    css = tmp_path / "secrets" / "token.css"
    css.write_text(f'section.letter::after {{ content: "{SECRET}-CSS"; }}', encoding="utf-8")
    assets = tmp_path / "templates"
    assets.mkdir()
    (assets / "ok.css").write_text('section.letter::after { content: "VISIBLE-ASSET"; }', encoding="utf-8")
    (assets / "escape.css").symlink_to(css)
    return {"secret": secret, "svg": svg, "css": css, "assets": assets}


def _letter(planted, extra_head: str = "", extra_body: str = "") -> str:
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8">'
            f'<link rel="attachment" href="file:///proc/self/environ">'
            f'<link rel="attachment" href="{planted["secret"].as_uri()}">'
            f'<link rel="stylesheet" href="{planted["css"].as_uri()}">'
            f'<link rel="stylesheet" href="{(planted["assets"] / "escape.css").as_uri()}">'
            f'{extra_head}</head><body><section class="letter"><p>Madame Alix Testeur</p>'
            f'<img src="{planted["svg"].as_uri()}"><img src="file:///proc/self/environ">'
            f'<img src="http://127.0.0.1:9/pixel.png"><img src="twilio.env">'
            f'{extra_body}</section></body></html>')


def _inspect(pdf: bytes) -> tuple[str, dict]:
    """(the PDF's text, its attachments)."""
    reader = PdfReader(io.BytesIO(pdf))
    return "".join(page.extract_text() or "" for page in reader.pages), dict(reader.attachments)


def test_a_planted_letter_gets_no_file_and_no_network(planted):
    base = planted["secret"].parent.as_uri() + "/"  # relative URLs resolve next to the secret
    pdf = render_pdf([_letter(planted)], base, assets=planted["assets"])
    text, attachments = _inspect(pdf)
    assert "Madame Alix Testeur" in text
    assert attachments == {}  # neither /proc/self/environ nor the secret file
    assert SECRET not in text  # neither as an image (SVG) nor through a stylesheet


def test_the_template_assets_and_data_urls_still_load(planted):
    ok = (planted["assets"] / "ok.css").as_uri()
    pdf = render_pdf([_letter(planted, extra_head=f'<link rel="stylesheet" href="{ok}">',
                              extra_body=f'<img src="data:image/png;base64,{PNG_1PX}">')],
                     assets=planted["assets"])
    text, attachments = _inspect(pdf)
    assert "VISIBLE-ASSET" in text and SECRET not in text and attachments == {}


def test_the_fetcher_itself(planted):
    fetch = asset_fetcher(planted["assets"])
    assert fetch((planted["assets"] / "ok.css").as_uri()) is not None
    assert fetch(f"data:image/png;base64,{PNG_1PX}") is not None
    for url in ("file:///proc/self/environ", planted["secret"].as_uri(),
                (planted["assets"] / "escape.css").as_uri(),  # a link inside the assets leading out
                (planted["assets"] / ".." / "secrets" / "twilio.env").as_uri(),
                "http://127.0.0.1:9/x.png", "https://example.org/x.css", "ftp://example.org/x",
                "file://otherhost/etc/passwd"):
        with pytest.raises(AssetRefused):
            fetch(url)


def test_the_print_batch_is_rendered_with_the_same_rule(planted, tmp_path):
    batch = write_print_batch(tmp_path / "print", day=dt.date(2024, 6, 3), organisation="CDAS-REDON",
                              postage="simple", assets=planted["assets"],
                              letters=[BatchLetter(reference="RL-000001-0000001", case_reference="RL-000001",
                                                   step="invitation_1", html=_letter(planted))])
    pdf = batch.pdf_path.read_bytes()
    text, attachments = _inspect(pdf)
    assert "Madame Alix Testeur" in text and attachments == {}
    assert SECRET not in text
    assert batch.pdf_path.stat().st_mode & 0o777 == 0o640
