#!/usr/bin/env python3
"""Render the first page of each letter template to a small PNG in docs/letters/.

    .venv/bin/python scripts/render_letter_examples.py [--long] [--out docs/letters] [--dpi 60]

Uses the real templates (worker.adapters.rendering.TemplateRenderer) with the sample
contexts of tests/template_samples.py, renders each letter with WeasyPrint
(worker.adapters.pdf.render_pdf), then converts the first page with
``pdftoppm -r <dpi> -png -singlefile`` (poppler-utils). ``--long`` uses the
long sample values (long names, addresses and organisation names) and writes
``<step>-long.png``. A step written ``<step>:<kind>`` uses that organisation kind
(``cd``, ``ft``, ``ml``, ``msa``) and writes ``<step>-<kind>.png``. ``--all-pages`` writes every page (``<step>-<n>.png``).
A step written ``<step>@large`` is the large-print variant (``<step>-large.png``, first page);
``<step>@en`` / ``<step>@ar`` the summary in English / Arabic attached to the French letter
(``<step>-summary-en.png``: the summary's page).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.template_samples import sample_context  # noqa: E402
from worker.adapters.pdf import render_pdf  # noqa: E402
from worker.adapters.rendering import TemplateRenderer  # noqa: E402

STEPS = (
    "invitation_1",
    "invitation_2",
    "convocation",
    "pre_sanction_notice",
    "crsa_referral",
    "ft_convocation",
    "ft_warning",
    # the Département's letters, for a CD case and a France Travail case (<step>-ft.png)
    "sanction_decision",
    "sanction_lifting",
    "procedure_closed",
    "pre_sanction_notice:ft",
    "sanction_decision:ft",
    "sanction_lifting:ft",
    "procedure_closed:ft",
    # issue 10: large print (16 pt), and the summaries in English and Arabic
    "convocation@large",
    "invitation_1@en",
    "convocation@ar",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "letters")
    parser.add_argument("--dpi", type=int, default=60)
    parser.add_argument("--long", action="store_true", help="long sample values")
    parser.add_argument("--all-pages", action="store_true", help="every page, not only the first")
    parser.add_argument("steps", nargs="*", default=list(STEPS))
    args = parser.parse_args(argv)

    renderer = TemplateRenderer(ROOT / "templates")
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-long" if args.long else ""
    with tempfile.TemporaryDirectory() as tmp:
        for entry in args.steps:
            entry, _, variant = entry.partition("@")
            step, _, kind = entry.partition(":")
            extra = {"large": {"large_print": True}, "en": {"language": "en"}, "ar": {"language": "ar"}}.get(
                variant, {})
            rendered = renderer.render(step, "letter", sample_context(step, long=args.long, kind=kind or None,
                                                                      **extra))
            name = f"{step}-{kind}" if kind else step
            if variant == "large":
                name += "-large"
            elif variant:
                name += f"-summary-{variant}"
            pdf = Path(tmp) / f"{name}.pdf"
            pdf.write_bytes(render_pdf([rendered.html], base_url=str(ROOT / "templates")))
            if variant in ("en", "ar"):  # the summary's page: the last one
                info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True).stdout
                last = next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:"))
                target = args.out / f"{name}{suffix}"
                subprocess.run(["pdftoppm", "-r", str(args.dpi), "-png", "-singlefile", "-f", last, "-l", last,
                                str(pdf), str(target)], check=True)
                written = [target.with_suffix(".png")]
            elif args.all_pages:
                prefix = args.out / f"{name}{suffix}"
                subprocess.run(
                    ["pdftoppm", "-r", str(args.dpi), "-png", str(pdf), str(prefix)], check=True
                )
                written = sorted(args.out.glob(f"{name}{suffix}-*.png"))
            else:
                target = args.out / f"{name}{suffix}"
                subprocess.run(
                    ["pdftoppm", "-r", str(args.dpi), "-png", "-singlefile", "-f", "1", "-l", "1",
                     str(pdf), str(target)],
                    check=True,
                )
                written = [target.with_suffix(".png")]
            pages = subprocess.run(
                ["pdfinfo", str(pdf)], check=True, capture_output=True, text=True
            ).stdout
            count = next(
                (line.split()[-1] for line in pages.splitlines() if line.startswith("Pages:")), "?"
            )
            for path in written:
                print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
                      f"  ({path.stat().st_size // 1024} KiB, letter of {count} page(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
