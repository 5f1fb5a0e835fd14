#!/usr/bin/env python3
"""French readability of every message template: words, sentences, longest sentence, Kandel-Moles score.

    .venv/bin/python scripts/readability_report.py                  # the table, on stdout (Markdown)
    .venv/bin/python scripts/readability_report.py --write          # rewrite docs/readability.md
    .venv/bin/python scripts/readability_report.py --templates DIR --save-json FILE   # measure other templates

Renders each beneficiary template (letters, SMS, e-mails: tests/template_samples.STEP_CHANNELS) with
the sample context of tests/template_samples.py (ordinary values, the step's usual organisation:
France Travail for ``ft_*``, the CDAS otherwise) and measures the French prose it holds with
tests/readability.py (see there how words, sentences and syllables are counted). The "before"
column is read from docs/readability_before.json: the templates as they were before issue 10,
measured by this script (``--templates <old templates> --save-json docs/readability_before.json``).
The "worst case" columns go over every organisation kind (cd, ft, ml, msa) with ordinary and long
values, as tests/unit/test_readability.py does.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.readability import Stats, measure, reading_text  # noqa: E402
from tests.template_samples import STEP_CHANNELS, sample_context  # noqa: E402
from worker.adapters.rendering import TemplateRenderer  # noqa: E402

BEFORE = ROOT / "docs" / "readability_before.json"
DOC = ROOT / "docs" / "readability.md"
KINDS = ("cd", "ft", "ml", "msa")
BUCKETS = ((1, 10), (11, 15), (16, 20), (21, 25), (26, 30), (31, 40), (41, 1000))


def _stats(renderer: TemplateRenderer, step: str, channel: str, **kw) -> Stats:
    ctx = sample_context(step, **kw)
    rendered = renderer.render(step, channel, ctx)
    stats = measure(reading_text(channel, rendered, ctx))
    stats.printed_words = len(rendered.text.split())  # everything printed: letterhead, addresses, data
    return stats


def _row(stats: Stats) -> dict:
    return {"words": stats.words, "printed_words": stats.printed_words, "sentences": stats.sentences,
            "longest": stats.longest,
            "over_20": stats.over(20), "over_30": stats.over(30),
            "words_per_sentence": round(stats.words_per_sentence, 1), "score": round(stats.score, 1),
            "lengths": stats.lengths}


def measure_templates(templates: Path, *, worst: bool = True) -> dict:
    renderer = TemplateRenderer(templates)
    out = {}
    for step, channels in STEP_CHANNELS.items():
        for channel in channels:
            if not renderer.has(step, channel):
                continue
            row = _row(_stats(renderer, step, channel))
            if worst:
                every = [_stats(renderer, step, channel, kind=kind, long=long)
                         for kind in KINDS for long in (False, True)]
                row["worst_score"] = round(min(s.score for s in every), 1)
                row["worst_longest"] = max(s.longest for s in every)
                row["all_lengths"] = [n for s in every for n in s.lengths]
            out[f"{step}/{channel}"] = row
    return out


def _total(rows: dict) -> dict:
    stats = Stats()
    for row in rows.values():
        stats.words += row["words"]
        stats.lengths += row["lengths"]
    # the score of the whole set: weighted by words
    score = sum(r["score"] * r["words"] for r in rows.values()) / max(stats.words, 1)
    return {"words": stats.words, "sentences": stats.sentences, "longest": stats.longest,
            "over_20": stats.over(20), "over_30": stats.over(30),
            "words_per_sentence": round(stats.words_per_sentence, 1), "score": round(score, 1)}


def _distribution(lengths: list[int]) -> list[str]:
    total = max(len(lengths), 1)
    cells = []
    for low, high in BUCKETS:
        n = sum(1 for x in lengths if low <= x <= high)
        cells.append(f"{n} ({100 * n / total:.0f} %)")
    return cells


def markdown(after: dict, before: dict | None) -> str:
    lines = []
    head = "| template | words (printed) | longest sentence | sentences > 20 words | score |"
    if before:
        head = ("| template | words measured (all printed) before → after | longest sentence before → after | "
                "sentences > 20 words before → after | score before → after | worst case after: score / longest |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    keys = list(after) + [k for k in (before or {}) if k not in after]
    for key in keys:
        a, b = after.get(key), (before or {}).get(key)
        if before:
            def pair(field, a=a, b=b):
                return f"{b[field] if b else '—'} → {a[field] if a else '—'}"
            worst = f"{a['worst_score']} / {a['worst_longest']}" if a and "worst_score" in a else "—"
            words = (f"{b['words'] if b else '—'} ({b.get('printed_words', '—') if b else '—'}) → "
                     f"{a['words'] if a else '—'} ({a.get('printed_words', '—') if a else '—'})")
            lines.append(f"| `{key}` | {words} | {pair('longest')} | {pair('over_20')} | "
                         f"{pair('score')} | {worst} |")
        else:
            lines.append(f"| `{key}` | {a['words']} ({a['printed_words']}) | {a['longest']} | {a['over_20']} | "
                         f"{a['score']} |")
    ta, tb = _total(after), (_total(before) if before else None)
    if tb:
        lines.append(f"| **all** | {tb['words']} → {ta['words']} | {tb['longest']} → {ta['longest']} | "
                     f"{tb['over_20']} of {tb['sentences']} → {ta['over_20']} of {ta['sentences']} | "
                     f"{tb['score']} → {ta['score']} | |")
    lines.append("")
    lines.append("Sentence lengths (words), ordinary values, every template:")
    lines.append("")
    labels = [f"{lo}–{hi}" if hi < 1000 else f"> {lo - 1}" for lo, hi in BUCKETS]
    lines.append("| | " + " | ".join(labels) + " |")
    lines.append("|---|" + "---|" * len(labels))
    if before:
        lines.append("| before | " + " | ".join(_distribution([n for r in before.values() for n in r["lengths"]]))
                     + " |")
    lines.append("| after | " + " | ".join(_distribution([n for r in after.values() for n in r["lengths"]]))
                 + " |")
    if all("all_lengths" in r for r in after.values()):
        lines.append("| after, every organisation, ordinary and long values | " + " | ".join(
            _distribution([n for r in after.values() for n in r["all_lengths"]])) + " |")
    return "\n".join(lines) + "\n"


INTRO = """# Readability of the messages (issue 10)

Generated by `scripts/readability_report.py --write`; do not edit the tables by hand.

Every beneficiary template (letters, SMS, e-mails) is rendered with the ordinary sample values of
`tests/template_samples.py` (the CDAS de Redon, or France Travail Redon for the `ft_*` steps) and its
French prose measured by `tests/readability.py`: the subject, body and footer (data-protection
notice included) of a letter; an e-mail's text part without its contact block; the whole SMS.
"Words measured" are the words of that prose, the data it quotes (names, addresses, places, links,
phone numbers) counting one word each; "all printed" counts every word the message prints (letterhead,
address block, references, data). Since issue 10 a letter and an e-mail carry the complete information
notice (about 90 words; before, about 50) and the appointment's length, access, company and help.
**score** is Kandel & Moles' reading ease for French
(207 − 1.015 × words/sentence − 73.6 × syllables/word: about 60–70 standard, 70–80 fairly easy,
80 and more easy). "Before" is the templates as they were before issue 10
(`docs/readability_before.json`, measured with the same script). The "worst case" column goes over
every organisation kind and ordinary and long values. The thresholds the tests hold are in the README
("Lisibilité des messages").

"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--templates", type=Path, default=ROOT / "templates")
    parser.add_argument("--before", type=Path, default=BEFORE, help="JSON of the templates before (default: %(default)s)")
    parser.add_argument("--save-json", type=Path, help="write the measures of --templates to this JSON file")
    parser.add_argument("--write", action="store_true", help=f"write {DOC.relative_to(ROOT)}")
    args = parser.parse_args(argv)

    after = measure_templates(args.templates, worst=not args.save_json)
    if args.save_json:
        args.save_json.write_text(json.dumps(after, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    before = json.loads(args.before.read_text(encoding="utf-8")) if args.before.is_file() and not args.save_json \
        else None
    table = markdown(after, before)
    if args.write:
        DOC.write_text(INTRO + table, encoding="utf-8")
        print(f"wrote {DOC.relative_to(ROOT)}")
    else:
        print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
