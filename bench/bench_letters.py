#!/usr/bin/env python3
"""Benchmark: letters rendered to PDF per second and per core.

    .venv/bin/python bench/bench_letters.py [-n 200] [--batch-size 100] [--no-append]

Renders N letters from the real templates (templates/letters, with the sample
contexts of tests/template_samples.py and names/addresses of the sample flux
files put through worker.domain.postal.address_block; a realistic inline HTML letter
if the templates are missing), in one process:

(a) baseline: plain WeasyPrint, one document per letter
    (``weasyprint.HTML(string=html).write_pdf()``, nothing else);
(b) batched: batches of --batch-size letters, one WeasyPrint document each
    (worker.adapters.pdf.render_batch), as the daily print batch does: the
    parts every letter of an organisation shares (letterhead, footer, place
    and date: the template's ``data-layer`` elements) are rendered once per
    batch and drawn on each letter's first page as a PDF form XObject;

then times cutting one batch into one PDF per letter with pypdf (split_pdf)
and with WeasyPrint's Document.copy (BatchResult.split). Everything runs in
one single-threaded process, so letters/s is letters/s per core; CPU time is
reported too. Results are printed and appended to bench/RESULTS-letters.md.
"""
from __future__ import annotations

import argparse
import csv
import html
import os
import platform
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.adapters.pdf import LetterHtml, render_batch, split_pdf  # noqa: E402
from worker.domain.postal import AddressError, address_block  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS-letters.md"
TARGET = 25.0  # letters/s per core, batched

# Share of each letter in a day's batch (invitations dominate).
STEP_WEIGHTS = (
    ("invitation_1", 40),
    ("invitation_2", 25),
    ("convocation", 15),
    ("ft_convocation", 8),
    ("ft_warning", 5),
    ("pre_sanction_notice", 4),
    ("crsa_referral", 3),
)


def _people() -> list[dict]:
    """Persons with a valid postal block, from the shared sample flux files."""
    people = []
    for path in sorted((ROOT.parent / "shared" / "data").glob("*.csv")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("cp1252")
        delimiter = ";" if ";" in text.splitlines()[0] else ","
        for row in csv.DictReader(text.splitlines(), delimiter=delimiter):
            civility = {"F": "Madame", "M": "Monsieur"}.get(row.get("sex", ""), "Madame, Monsieur")
            try:
                lines = address_block(
                    civility=civility,
                    first_name=row["first_name"],
                    last_name=row["last_name"],
                    line1=row["address_line1"],
                    line2=row["address_line2"] or None,
                    postcode=row["postcode"],
                    city=row["city"],
                )
            except (AddressError, KeyError):
                continue
            people.append(
                {
                    "civility": civility,
                    "first_name": row["first_name"],
                    "last_name": row["last_name"],
                    "address_lines": lines,
                }
            )
    if not people:
        people.append(
            {
                "civility": "Madame",
                "first_name": "Julie",
                "last_name": "Martin",
                "address_lines": ["Madame Julie MARTIN", "5 RUE DES LILAS", "35600 REDON"],
            }
        )
    return people


def _steps(n: int) -> list[str]:
    cycle = [step for step, weight in STEP_WEIGHTS for _ in range(weight)]
    # spread the steps evenly instead of in runs
    order = sorted(range(len(cycle)), key=lambda i: (i * 37) % len(cycle))
    cycle = [cycle[i] for i in order]
    return [cycle[i % len(cycle)] for i in range(n)]


def template_letters(n: int) -> list[LetterHtml] | None:
    try:
        from tests.template_samples import sample_context
        from worker.adapters.rendering import TemplateRenderer
    except ImportError:
        return None
    templates = ROOT / "templates"
    renderer = TemplateRenderer(templates)
    people = _people()
    letters = []
    for i, step in enumerate(_steps(n)):
        if not renderer.has(step, "letter"):
            return None
        context = sample_context(step)
        context["person"] = people[i % len(people)]
        case_ref = f"RL-{100000 + i:06d}"
        context["case"] = dict(context["case"], reference=case_ref)
        reference = f"{case_ref}-{step.upper()[:4]}-L"
        context["message"] = {"reference": reference}
        letters.append(LetterHtml(reference, renderer.render(step, "letter", context).html))
    return letters


_INLINE_CSS_FALLBACK = """
@page { size: A4; margin: 12mm 18mm 16mm 20mm; }
html { font-family: "DejaVu Sans", sans-serif; font-size: 10pt; line-height: 1.3; }
section.letter + section.letter { break-before: page; }
.letterhead { float: left; width: 68mm; font-size: 8.5pt; }
.recipient { float: right; width: 86mm; min-height: 44mm; margin: 40mm 6mm 0 0; font-style: normal; }
.subject { clear: both; padding-top: 3mm; }
"""


def inline_letters(n: int) -> list[LetterHtml]:
    """A realistic letter written inline, for when the templates are missing."""
    people = _people()
    css_path = ROOT / "templates" / "letters" / "letter.css"
    css = css_path.read_text() if css_path.is_file() and css_path.stat().st_size else _INLINE_CSS_FALLBACK
    paragraph = (
        "Vous bénéficiez du revenu de solidarité active (RSA). Le RSA s'accompagne de droits et "
        "de devoirs : vous avez droit à un accompagnement adapté à votre situation (emploi, "
        "formation, santé, logement, mobilité, garde d'enfants…) et vous avez l'obligation d'y "
        "participer (articles L262-27 et suivants du code de l'action sociale et des familles)."
    )
    letters = []
    for i in range(n):
        person = people[i % len(people)]
        reference = f"RL-{100000 + i:06d}-INV1-L"
        recipient = "".join(f"<div>{html.escape(line)}</div>" for line in person["address_lines"])
        body = "".join(f"<p>{paragraph}</p>" for _ in range(5))
        letters.append(
            LetterHtml(
                reference,
                f"""<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8">
<style>{css}</style></head><body>
<section class="letter" data-reference="{reference}">
<header class="letterhead"><div class="org-name">Centre départemental d'action sociale du Pays de Redon</div>
<address class="org-address"><div>12 rue des Douves</div><div>35600 REDON</div>
<div class="org-phone">Tél. : 02 61 91 10 10</div><div>cdas-redon@example.org</div></address></header>
<address class="recipient">{recipient}</address>
<p class="place-date">Redon, le lundi 20 mai 2024</p>
<p class="reference">Réf. : {reference}</p>
<p class="subject"><strong>Objet : Votre RSA : prenez rendez-vous</strong></p>
<main class="body"><p>{html.escape(person['civility'])},</p>{body}</main>
<div class="signature"><p>La responsable du CDAS du Pays de Redon</p></div>
<footer class="footer"><p>Prendre rendez-vous : https://rdv.example.org/cdas-redon — 02 61 91 10 10</p></footer>
</section></body></html>""",
            )
        )
    return letters


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--letters", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--no-baseline", action="store_true", help="skip (a)")
    parser.add_argument("--inline", action="store_true", help="use the inline letter, not the templates")
    parser.add_argument("--no-append", action="store_true", help=f"do not append to {RESULTS.name}")
    args = parser.parse_args(argv)
    command = "cd /work/main && .venv/bin/python bench/" + Path(__file__).name + (
        " " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""
    )

    import weasyprint

    source = "templates"
    letters = None if args.inline else template_letters(args.letters)
    if letters is None:
        source = "inline HTML (templates missing)" if not args.inline else "inline HTML"
        letters = inline_letters(args.letters)
    n = len(letters)

    load_before = os.getloadavg()
    # warm-up: fontconfig, Pango and WeasyPrint's first-use caches
    render_batch(letters[:2])
    weasyprint.HTML(string=letters[0].html).write_pdf()

    rows = []
    if not args.no_baseline:
        _, wall, cpu = _timed(
            lambda: [weasyprint.HTML(string=letter.html).write_pdf() for letter in letters]
        )
        rows.append(("(a) plain WeasyPrint, one document per letter", n, None, wall, cpu))

    batches = [letters[i : i + args.batch_size] for i in range(0, n, args.batch_size)]
    results, wall, cpu = _timed(lambda: [render_batch(batch) for batch in batches])
    pages = sum(result.page_count for result in results)
    rows.append((f"(b) batches of {args.batch_size}, one document each", n, pages, wall, cpu))

    first = batches[0]
    kept = render_batch(first, keep_document=True)
    _, split_wall, _ = _timed(lambda: split_pdf(kept.pdf, kept.pages_per_letter))
    _, copy_wall, _ = _timed(lambda: kept.split(method="weasyprint"))
    pdf_size = sum(len(result.pdf) for result in results)

    load_after = os.getloadavg()
    now = datetime.now().astimezone()
    lines = [
        f"## {now:%Y-%m-%d %H:%M %Z}",
        "",
        f"- command: `{command}`",
        f"- machine: {os.cpu_count()} CPU ({_cpu_model()}), nproc {len(os.sched_getaffinity(0))}, "
        f"Python {platform.python_version()}, WeasyPrint {weasyprint.__version__}, "
        f"{platform.system()} {platform.release()}",
        f"- letters: {n} from {source}; {pages} pages in total; single process, single thread",
        f"- load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f} "
        "(other processes on the machine inflate wall time; CPU time is this process's own)",
        "",
        "| mode | letters | wall s | CPU s | letters/s per core (wall) | letters/s per core (CPU) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, count, _pages, wall_s, cpu_s in rows:
        lines.append(
            f"| {label} | {count} | {wall_s:.2f} | {cpu_s:.2f} | {count / wall_s:.1f} | {count / cpu_s:.1f} |"
        )
    batched_rate = n / rows[-1][4]  # CPU-time based: one core's worth
    lines += [
        "",
        f"- batched output: {pdf_size / n / 1024:.1f} KiB of PDF per letter; "
        f"target ≥ {TARGET:.0f} letters/s per core (CPU time): "
        f"**{'met' if batched_rate >= TARGET else 'NOT met'}** ({batched_rate:.1f})",
        f"- splitting one batch of {len(first)} letters into one PDF each: pypdf `split_pdf` "
        f"{split_wall:.2f} s, WeasyPrint `Document.copy` {copy_wall:.2f} s",
    ]
    if len(rows) == 2:
        lines.append(f"- speed-up of batching (CPU time): × {rows[0][4] / rows[1][4]:.2f}")
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.no_append:
        header = "" if RESULTS.exists() else (
            "# Letters to PDF: benchmark results\n\n"
            "Appended by `bench/bench_letters.py` (newest last). letters/s per core: one\n"
            "single-threaded process; scale with one worker process per core.\n\n"
        )
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write(header + report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
