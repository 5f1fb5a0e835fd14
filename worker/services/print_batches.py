"""Letters after sending: the daily print batch.

**Print batch** (:func:`produce_batches`, ``relance letters batch``, and the
scheduler's ``print_batch`` job at ``RELANCE_PRINT_BATCH_TIME`` on working days
when ``RELANCE_LETTER_BACKEND=pdf``). Sending a letter writes its full HTML to
the shared letters folder (``<letters>/<YYYY-MM-DD>/<reference>_<step>_<postage>.html``,
``Message.provider_ref``) and leaves the message ``sent``. The batch takes every
``sent`` letter not yet batched whose ``sent_at`` falls on or before the day
(local date): the day's letters plus any left from earlier days. It groups them
by (organisation of the case, postage ``simple``/``lrar``), renders ONE PDF per
group (one WeasyPrint document: :mod:`worker.adapters.pdf`) and the printer's
manifest, under ``<print_dir>/<YYYY-MM-DD>/<organisation>_<postage>.pdf`` and
``…_manifest.csv``; a second run of the same day writes ``…_2``, ``…_3``,
never over an earlier batch. The messages then become ``dispatched`` with
``batch_id = "<YYYY-MM-DD>/<organisation>_<postage>[_n]"`` and their page count.

A letter is never batched twice, even by two runs at once (two machines, the
job and an agent's CLI): each group is first *claimed* by a compare-and-set
(``batch_id`` from NULL to a unique claim token, status still ``sent``),
committed before anything is rendered; only the claimed letters are rendered.
If rendering fails the claim is released (the letters wait for the next run).
If the process dies between the claim and the end, the next run, once the claim
is older than :data:`STALE_CLAIM`, looks for the letters in the manifests
already written that day: found, they are recorded as dispatched in that batch;
not found, the claim is released.

A letter whose HTML file is missing is not dropped silently: it becomes
``technical-failure`` with an explicit error (audited) and stays out of the
batch; ops resend it after checking.

The mail room's returns are :mod:`worker.services.letter_returns`.
"""
from __future__ import annotations

import csv
import datetime as dt
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update

from worker.adapters.files import read_nofollow
from worker.adapters.rendering import redate_letter
from worker.adapters.store import audit, repository
from worker.adapters.store.models import Case, Message
from worker.adapters.store.session import session_scope
from worker.domain import engine
from worker.domain.model import CANCELLED, DISPATCHED, SENT

log = logging.getLogger("relance.letters")
UTC = dt.timezone.utc

POSTAGES = ("simple", "lrar")
CLAIM_PREFIX = "claim:"
STALE_CLAIM = dt.timedelta(minutes=30)
# Statuses of a letter that actually left (the mail room can only report on those).
LEFT = frozenset({SENT, DISPATCHED, "delivered", "returned"})

__all__ = ["Batch", "BatchError", "produce_batches", "daily_print_batch"]


@dataclass(frozen=True)
class Batch:
    """One print batch written by :func:`produce_batches`."""

    batch_id: str  # "<YYYY-MM-DD>/<organisation>_<postage>[_n]"
    day: dt.date
    organisation: str
    postage: str  # simple | lrar
    pdf_path: Path
    manifest_path: Path
    letters: int  # number of letters
    pages: int  # pages of the PDF
    references: tuple[str, ...]


class BatchError(RuntimeError):
    """Some groups could not be printed (their letters wait for the next run).

    ``batches`` holds the batches that were produced all the same.
    """

    def __init__(self, message: str, batches: list[Batch]):
        super().__init__(message)
        self.batches = batches


# --- print batch ----------------------------------------------------------------------------------


@dataclass
class _Claimed:
    id: int
    reference: str
    case_reference: str
    step: str
    provider_ref: str | None


def _claim_token(day: dt.date, now: dt.datetime) -> str:
    return f"{CLAIM_PREFIX}{day.isoformat()}:{now.astimezone(UTC):%Y%m%dT%H%M%S}:{uuid.uuid4().hex[:12]}"


def _parse_claim(token: str) -> tuple[dt.date, dt.datetime] | None:
    try:
        _, day, stamp, _ = token.split(":")
        return (dt.date.fromisoformat(day),
                dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=UTC))
    except ValueError:
        return None


def _letter_path(root: Path, provider_ref: str | None) -> Path | None:
    """The letter's HTML file in the shared letters folder (never outside it)."""
    if not provider_ref:
        return None
    path = (root / provider_ref).resolve()
    try:
        path.relative_to(root.resolve())
    except ValueError:
        return None
    return path


def _release(app, token: str) -> None:
    with session_scope(app.db_url) as s:
        s.execute(update(Message).where(Message.batch_id == token).values(batch_id=None)
                  .execution_options(synchronize_session=False))


def _finalize(s, app, message_ids: list[int], batch_id: str, pages: dict[int, int], now: dt.datetime) -> None:
    """Record letters as printed in ``batch_id`` (status, page count, audit)."""
    for msg in s.execute(select(Message).where(Message.id.in_(message_ids))).scalars():
        msg.batch_id = batch_id
        msg.pages = pages.get(msg.id)
        if msg.status == SENT:  # a letter returned meanwhile (NPAI) keeps its status
            repository.set_message_status(s, msg, DISPATCHED, now)


def _recover_stale_claims(app, now: dt.datetime) -> None:
    """Claims left by a run that died: finish them from the manifests, or release them."""
    with session_scope(app.db_url) as s:
        rows = s.execute(select(Message.id, Message.case_id, Message.batch_id)
                         .where(Message.batch_id.like(f"{CLAIM_PREFIX}%"))).all()
    by_token: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for mid, case_id, token in rows:
        by_token[token].append((mid, case_id))
    for token, members in by_token.items():
        parsed = _parse_claim(token)
        if parsed is not None and now - parsed[1] < STALE_CLAIM:
            continue  # a run may still be working on it
        day = parsed[0] if parsed else None
        printed: dict[str, tuple[str, int]] = {}  # reference -> (batch stem, pages)
        folder = app.settings.print_dir / day.isoformat() if day else None
        if folder is not None and folder.is_dir():
            for manifest in sorted(folder.glob("*_manifest.csv")):
                stem = manifest.name[: -len("_manifest.csv")]
                with open(manifest, encoding="utf-8", newline="") as fh:
                    for row in csv.DictReader(fh):
                        printed[row["reference"]] = (stem, int(row["pages"]))
        with session_scope(app.db_url) as s:
            by_batch: dict[str, list[int]] = defaultdict(list)
            pages: dict[int, int] = {}
            for mid, case_id in members:
                reference = f"RL-{case_id:06d}-{mid:07d}"
                if reference in printed:
                    stem, count = printed[reference]
                    by_batch[f"{day.isoformat()}/{stem}"].append(mid)
                    pages[mid] = count
            for batch_id, ids in by_batch.items():
                _finalize(s, app, ids, batch_id, pages, now)
                log.warning("print batch %s: %d letters recovered from an interrupted run", batch_id, len(ids))
            s.execute(update(Message).where(Message.batch_id == token).values(batch_id=None)
                      .execution_options(synchronize_session=False))


def _candidates(app, day: dt.date) -> dict[tuple[str, str], list[int]]:
    """Letters to print by (organisation, postage): sent, not batched, sent on or before ``day``."""
    cutoff = app.calendar.start_of_day(day + dt.timedelta(days=1))
    with session_scope(app.db_url) as s:
        rows = s.execute(
            select(Message.id, Case.organisation, Message.postage)
            .join(Case, Case.id == Message.case_id)
            .where(Message.channel == "letter", Message.status == SENT, Message.batch_id.is_(None),
                   Message.sent_at.is_not(None), Message.sent_at < cutoff)
            .order_by(Message.id)).all()
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for mid, organisation, postage in rows:
        groups[(organisation, postage or "simple")].append(mid)
    return groups


def _claim(app, ids: list[int], token: str) -> list[_Claimed]:
    """Compare-and-set ``batch_id`` NULL -> token on still-unbatched sent letters; what we won."""
    with session_scope(app.db_url) as s:
        s.execute(update(Message).where(Message.id.in_(ids), Message.batch_id.is_(None), Message.status == SENT)
                  .values(batch_id=token).execution_options(synchronize_session=False))
    with session_scope(app.db_url) as s:
        rows = s.execute(select(Message.id, Message.case_id, Message.step, Message.provider_ref)
                         .where(Message.batch_id == token).order_by(Message.id)).all()
    return [_Claimed(mid, f"RL-{case_id:06d}-{mid:07d}", f"RL-{case_id:06d}", step, ref)
            for mid, case_id, step, ref in rows]


def _fail_missing(app, missing: list[tuple[_Claimed, Path | None]], now: dt.datetime) -> None:
    root = app.settings.letters
    with session_scope(app.db_url) as s:
        for claimed, path in missing:
            msg = s.get(Message, claimed.id)
            msg.batch_id = None
            where = str(path) if path is not None else f"{root}/{claimed.provider_ref or '?'}"
            repository.set_message_status(
                s, msg, "technical-failure", now,
                error=(f"lot d'impression : courrier introuvable ({where}) ; il n'a pas été imprimé, "
                       "vérifier le dossier partagé des courriers puis le renvoyer")[:500])
            log.error("print batch: letter %s has no HTML file; marked technical-failure", claimed.reference)


def _drop_stale(app, claimed: list[_Claimed], now: dt.datetime) -> list[_Claimed]:
    """Letters whose case moved on since they were written (a booking, a closure, a legitimate reason,
    NPAI: :func:`engine.stale_letter`) are cancelled, never printed; returns the others."""
    keep: list[_Claimed] = []
    with session_scope(app.db_url) as s:
        for c in claimed:
            msg = s.get(Message, c.id)
            state = repository.to_state(s.get(Case, msg.case_id))
            view = next(m for m in state.messages if m.id == msg.id)
            reason = engine.stale_letter(state, view, now, app.policy, app.calendar)
            if reason is None:
                keep.append(c)
                continue
            msg.batch_id = None
            repository.set_message_status(s, msg, CANCELLED, now, reason=f"not_printed:{reason}")
            log.info("print batch: letter %s not printed, its case moved on (%s)", c.reference, reason)
    return keep


def _batch_name_taken(app, directory: Path, day: dt.date, stem: str) -> bool:
    if (directory / f"{stem}.pdf").exists() or (directory / f"{stem}_manifest.csv").exists():
        return True
    with session_scope(app.db_url) as s:
        return s.execute(select(Message.id).where(Message.batch_id == f"{day.isoformat()}/{stem}")
                         .limit(1)).first() is not None


def _render_group(app, day: dt.date, organisation: str, postage: str, letters: list, base_url: str):
    """Write the group's PDF and manifest under the first free name; (PrintBatch, stem)."""
    from worker.adapters.pdf import write_print_batch

    directory = app.settings.print_dir / day.isoformat()
    for n in range(1, 1000):
        token = postage if n == 1 else f"{postage}_{n}"
        stem = f"{organisation}_{token}"
        if _batch_name_taken(app, directory, day, stem):
            continue
        try:
            written = write_print_batch(app.settings.print_dir, day=day, organisation=organisation,
                                        postage=token, letters=letters, base_url=base_url,
                                        assets=app.settings.templates_dir)
        except FileExistsError:
            continue  # another run published this name first: take the next one
        return written, stem
    raise RuntimeError(f"trop de lots pour {organisation}_{postage} le {day.isoformat()}")


def produce_batches(app, day: dt.date, now: dt.datetime, *, drop_stale: bool = True) -> list[Batch]:
    """Print the letters sent on or before ``day``: one PDF + manifest per (organisation, postage).

    A letter whose case moved on since it was written is cancelled, not printed (``drop_stale``;
    False only to re-run a past day on a database that has lived on since, as the tests do).

    Raises :class:`BatchError` (after doing every other group) if some group
    could not be rendered; its letters are released for the next run.
    """
    from worker.adapters.pdf import BatchLetter

    _recover_stale_claims(app, now)
    root = app.settings.letters
    base_url = root.resolve().as_uri() + "/"
    batches: list[Batch] = []
    errors: list[str] = []
    for (organisation, postage), ids in sorted(_candidates(app, day).items()):
        token = _claim_token(day, now)
        claimed = _claim(app, ids, token)
        if drop_stale:
            claimed = _drop_stale(app, claimed, now)
        if not claimed:
            continue  # another run took them, or none is still wanted
        letters, kept, missing, redated = [], [], [], 0
        for c in claimed:
            path = _letter_path(root, c.provider_ref)
            try:
                # never through a link (even one to another letter of the folder)
                html = read_nofollow(path).decode("utf-8") if path is not None else None
            except (FileNotFoundError, OSError):
                html = None
            if html is None:
                missing.append((c, path))
                continue
            # A letter is dated on the working day its print batch goes out (it may have waited).
            html, changed = redate_letter(html, day)
            redated += changed
            letters.append(BatchLetter(reference=c.reference, case_reference=c.case_reference, step=c.step,
                                       html=html))
            kept.append(c)
        if missing:
            _fail_missing(app, missing, now)
        if not letters:
            continue
        try:
            written, stem = _render_group(app, day, organisation, postage, letters, base_url)
        except Exception as exc:  # noqa: BLE001 - released, reported, the other groups go on
            _release(app, token)
            log.exception("print batch %s_%s of %s failed; letters released", organisation, postage, day)
            errors.append(f"{organisation}_{postage} : {type(exc).__name__}: {exc}")
            continue
        batch_id = f"{day.isoformat()}/{stem}"
        pages = {c.id: written.pages_per_letter[c.reference][1] for c in kept}
        with session_scope(app.db_url) as s:
            _finalize(s, app, [c.id for c in kept], batch_id, pages, now)
            audit.append(s, at=now, kind="batch", data={
                "batch_id": batch_id, "letters": len(kept), "pages": written.page_count, "redated": redated,
                "pdf_sha256": written.sha256, "message_ids": [c.id for c in kept]})
        batches.append(Batch(batch_id=batch_id, day=day, organisation=organisation, postage=postage,
                             pdf_path=written.pdf_path, manifest_path=written.manifest_path,
                             letters=len(kept), pages=written.page_count,
                             references=tuple(c.reference for c in kept)))
        log.info("print batch %s: %d letters, %d pages", batch_id, len(kept), written.page_count)
    if errors:
        done = ", ".join(b.batch_id for b in batches) or "aucun"
        raise BatchError(f"lots non produits (courriers remis à imprimer au prochain passage) : "
                         f"{' ; '.join(errors)} — lots produits : {done}", batches)
    return batches


def daily_print_batch(app, now: dt.datetime | None = None) -> list[Batch]:
    """The scheduler's job: today's batch, on working days only."""
    now = now or dt.datetime.now(UTC)
    today = app.calendar.local_date(now)
    if not app.calendar.is_working_day(today):
        return []
    return produce_batches(app, today, now)
