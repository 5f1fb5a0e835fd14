"""French readability of what beneficiaries read (issue 10, "Plain French").

Used by ``tests/unit/test_readability.py`` (the thresholds) and
``scripts/readability_report.py`` (the before/after table of docs/readability.md).

* **Score**: Kandel & Moles (1958), Flesch's reading ease adapted to French:
  ``207 - 1.015 * words/sentence - 73.6 * syllables/word``. Higher is easier:
  about 60-70 is "standard" prose, 70-80 "fairly easy", 80 and more "easy".
* **Syllables** are counted here (no library): the groups of vowels of the
  written word, a final mute ``e``/``es`` not counted (``France``: 1,
  ``Madame``: 2), a hiatus after ``é``, a diaeresis and a ``y`` between vowels
  split a group (``créer``: 2, ``naïf``: 2, ``payer``: 2), every word at least 1. A number counts one
  syllable per digit, at most 3. ``textstat`` (pyphen hyphenation points) was
  tried and not kept: hyphenation never cuts one letter off a word's ends, so
  it counts ``ami`` 1 and ``obligatoire`` 3 (here 2 and 4).
* **Sentences** end at ``.``, ``!``, ``?`` or ``…`` followed by a space, and at
  every line break (a list item, a line of the appointment box is a sentence
  of its own). Abbreviations (``art.``, ``Tél.``, ``Réf.``, ``M.``) do not end
  one. A unit of fewer than 4 words (``Madame,``, ``Lieu``, a phone line) is
  left out: this can only make the average longer, never shorter.
* **Words** are the blank-separated tokens (``l'accompagnement`` is one word,
  ``rendez-vous`` one). Links, e-mail addresses and phone numbers count as one
  word of one syllable, and so do the data a message quotes from the flux and
  the configuration (names, organisation names, addresses, places, the list of
  what to bring, a signature): they are copied, not read, and the template's
  writer does not choose them. The prose the territory writes in the
  configuration (how to get to the place, who the person meets) is measured.
* **What is measured**: the subject, the body and the footer of a letter (not
  the letterhead, the addresses or the references, nor a translated summary);
  the text part of an e-mail without its contact block (the lines after
  ``--``) and signature; the whole SMS.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

__all__ = ["Stats", "syllables", "sentences", "measure", "reading_text", "MIN_WORDS"]

MIN_WORDS = 4  # shorter units (labels, salutations, contact lines) are not sentences

_VOWELS = "aeiouyàâäéèêëîïôöûùüÿœæ"
_GROUP = re.compile(f"[{_VOWELS}]+")
_LETTERS = re.compile(r"[^a-zàâäçéèêëîïôöûùüÿœæ]")
_ABBREVIATIONS = {"art", "tél", "tel", "réf", "ref", "m", "mme", "cf", "n°", "no", "p", "st", "ste", "bd", "av"}

_URL = re.compile(r"(?:https?://|www\.)\S+", re.I)
_EMAIL = re.compile(r"\S+@\S+\.\w+")
_PHONE = re.compile(r"(?<!\d)(?:\+33\s?|0)\d(?:[\s.]?\d{2}){4}(?!\d)")


def syllables(word: str) -> int:
    """Syllables of one written French word (see the module's notes)."""
    digits = re.sub(r"\D", "", word)
    letters = _LETTERS.sub("", word.lower())
    if not letters:
        return min(max(len(digits), 1), 3)
    count = len(_GROUP.findall(letters))
    # hiatus: é followed by a sounded vowel (créer, réaliser; not the mute e of idée), a diaeresis
    # (naïf, Noël), a y between vowels (payer, voyage)
    count += len(re.findall(f"é(?=[{_VOWELS}])(?!es?$)", letters))
    count += len(re.findall(f"(?<=[{_VOWELS}])[ïëü]", letters))
    count += len(re.findall(f"(?<=[{_VOWELS}])y(?=[{_VOWELS}])", letters))
    if count > 1 and re.search(f"[^{_VOWELS}]es?$", letters):
        count -= 1  # final mute e: France, pièce, Madame, rendez-vous... (not "idée")
    return max(count, 1)


def _words(unit: str) -> list[str]:
    unit = _URL.sub(" lien ", unit)
    unit = _EMAIL.sub(" mail ", unit)
    unit = _PHONE.sub(" tél ", unit)
    out = []
    for token in unit.split():
        token = token.strip(".,;:!?…()[]«»\"“”'’–—-/*•")
        if token and re.search(r"\w", token):
            out.append(token)
    return out


def sentences(text: str) -> list[str]:
    """The sentences of a text: split at end punctuation and at every line break."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        start = 0
        for match in re.finditer(r"[.!?…]+(?=\s+\S)", line):
            before = line[start:match.start()].split()
            last = before[-1].lower() if before else ""
            if match.group(0) == "." and last.strip("([«\"'.") in _ABBREVIATIONS:
                continue
            out.append(line[start:match.end()].strip())
            start = match.end()
        rest = line[start:].strip()
        if rest:
            out.append(rest)
    return out


@dataclass
class Stats:
    words: int = 0
    syllables: int = 0
    lengths: list[int] = field(default_factory=list)  # words per sentence
    longest_sentence: str = ""
    printed_words: int = 0  # set by scripts/readability_report.py: every word the message prints

    @property
    def sentences(self) -> int:
        return len(self.lengths)

    @property
    def words_per_sentence(self) -> float:
        return self.words / self.sentences if self.sentences else 0.0

    @property
    def syllables_per_word(self) -> float:
        return self.syllables / self.words if self.words else 0.0

    @property
    def score(self) -> float:
        """Kandel & Moles reading ease."""
        return 207 - 1.015 * self.words_per_sentence - 73.6 * self.syllables_per_word

    @property
    def longest(self) -> int:
        return max(self.lengths, default=0)

    def over(self, n: int) -> int:
        """How many sentences have more than ``n`` words."""
        return sum(1 for length in self.lengths if length > n)

    def share_over(self, n: int) -> float:
        return self.over(n) / self.sentences if self.sentences else 0.0


def measure(text: str) -> Stats:
    stats = Stats()
    for sentence in sentences(text):
        words = _words(sentence)
        if len(words) < MIN_WORDS:
            continue
        stats.words += len(words)
        stats.syllables += sum(syllables(w) for w in words)
        stats.lengths.append(len(words))
        if len(words) > len(_words(stats.longest_sentence)):
            stats.longest_sentence = sentence
    return stats


# --------------------------------------------------------------------------- #
# What a reader reads, per channel
# --------------------------------------------------------------------------- #

_BLOCKS = {"p", "li", "dt", "dd", "div", "h1", "h2", "h3", "tr", "br", "ul", "ol", "dl"}
_KEEP = ("subject", "body", "footer")


class _LetterReader(HTMLParser):
    """The text of a letter's subject, body and footer; a line per block; skips a translated summary."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, keep, skip)
        self.out: list[str] = []

    def _state(self) -> tuple[bool, bool]:
        return (self.stack[-1][1], self.stack[-1][2]) if self.stack else (False, False)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        keep, skip = self._state()
        keep = keep or any(c in _KEEP for c in classes)
        skip = skip or tag in ("style", "head", "title") or "summary" in classes or (
            attrs.get("lang") not in (None, "fr"))
        if tag in _BLOCKS or "footnote" in classes:
            self.out.append("\n")
        if tag not in ("br", "meta", "img", "hr", "link"):
            self.stack.append((tag, keep, skip))

    def handle_endtag(self, tag):
        if tag in _BLOCKS:
            self.out.append("\n")
        elif tag == "th":
            self.out.append(" : ")
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        keep, skip = self._state()
        if keep and not skip:
            self.out.append(re.sub(r"\s+", " ", data))


def _get(obj, name):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def data_values(ctx: dict | None) -> list[str]:
    """The data a message quotes (see the module's notes), longest first, as they may be printed."""
    if not ctx:
        return []
    values: list = []
    person, org, issuer = ctx.get("person"), ctx.get("org"), ctx.get("issuer")
    for obj, names in ((person, ("first_name", "last_name")),
                       (org, ("name", "short_name", "signatory", "email")),
                       (issuer, ("name", "short_name", "signature", "email")),
                       (ctx.get("venue"), ("place",)), (ctx.get("appointment"), ("place",)),
                       (ctx.get("missed"), ("place",)), (ctx.get("commission"), ("name", "place")),
                       (ctx.get("privacy"), ("controller", "dpo_email", "notice_url"))):
        if obj:
            values += [_get(obj, n) for n in names]
    for obj, name in ((org, "address"), (issuer, "address"), (ctx.get("privacy"), "dpo_address")):
        if obj and _get(obj, name):
            lines = list(_get(obj, name))
            values += [", ".join(lines), *lines]
    service = _get(issuer, "observations_service") if issuer else None
    if service:
        values += [_get(service, "name"), ", ".join(_get(service, "address")), *_get(service, "address")]
    venue = ctx.get("venue")
    if venue:
        values += list(_get(venue, "bring") or [])
    notice = ctx.get("notice")
    if notice:
        values += [_get(fact, "place") for fact in _get(notice, "facts") or []]
    out = {str(v).strip() for v in values if v and str(v).strip()}
    return sorted(out, key=len, reverse=True)


def _mask(text: str, ctx: dict | None) -> str:
    for value in data_values(ctx):
        text = re.sub(r"(?<![\w-])" + re.escape(value) + r"(?![\w-])", "nom", text)
    return text


def reading_text(channel: str, rendered, ctx: dict | None = None) -> str:
    """The French prose of a rendered message (``Rendered`` of worker.adapters.rendering), the data
    quoted from ``ctx`` (its context) masked as one word each."""
    signatory = _get(ctx.get("org"), "signatory") if ctx else None
    if channel == "sms":
        return _mask(rendered.text, ctx)
    if channel == "letter":
        parser = _LetterReader()
        parser.feed(rendered.html)
        lines = [re.sub(r"\s+", " ", line).strip() for line in "".join(parser.out).split("\n")]
        return _mask("\n".join(line for line in lines if line), ctx)
    # e-mail: the text part without the contact block after "--" and the signature line
    out, contact = [], False
    for line in rendered.text.splitlines():
        if line.strip() in ("--", "-- "):
            contact = True
            continue
        if contact:
            if not line.strip():
                contact = False
            continue
        if signatory and line.strip() == signatory.strip():
            continue
        out.append(line)
    subject = rendered.subject or ""
    return _mask(subject + "\n" + "\n".join(out), ctx)
