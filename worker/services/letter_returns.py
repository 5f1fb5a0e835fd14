"""The mail room's returns of letters.

**Returns** (:func:`process_returns`, ``relance letters returns FILE``): the
mail room's CSV, ``reference,date,outcome`` (comma or semicolon, UTF-8 or
cp1252): each line becomes an ``npai`` / ``ar_signed`` / ``ar_unclaimed``
event on the letter's case, once (idempotency key per reference and outcome).
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import logging
import unicodedata
from pathlib import Path

from sqlalchemy import select

from worker.adapters.store import audit
from worker.adapters.store.models import Case, Message, Person
from worker.adapters.store.session import one_transaction, session_scope
from worker.services import cases
from worker.services.errors import ServiceError
from worker.services.print_batches import LEFT

log = logging.getLogger("relance.letters")
RETURN_OUTCOMES = ("npai", "ar_signed", "ar_unclaimed")
MAX_FIELD_CHARS = 128 * 1024  # a longer field rejects its line (the csv module's own limit would end the file)


_COLUMNS = {
    "reference": "reference", "ref": "reference",
    "date": "date",
    "outcome": "outcome", "resultat": "outcome", "motif": "outcome",
}


def _plain(value: str) -> str:
    value = unicodedata.normalize("NFKD", value.strip().lstrip("\ufeff"))
    return "".join(c for c in value if not unicodedata.combining(c)).lower()


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _parse_return_date(value: str) -> dt.date | None:
    value = value.strip()
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):  # Excel re-saves ISO dates as JJ/MM/AAAA
        try:
            return dt.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    return None


def _fr(d: dt.date) -> str:
    return f"{d:%d/%m/%Y}"


def process_returns(app, path: Path, now: dt.datetime) -> dict:
    """Record the mail room's returns: NPAI and LRAR receipts, once each.

    Returns ``{"applied": n, "duplicates": n, "rejected": [{"line", "reason"}],
    "ignored": [{"line", "reference", "note"}]}``: ``applied`` counts the lines
    recorded now (``ignored`` lists those among them that changed nothing on
    the case, e.g. a receipt already known), ``duplicates`` the lines already
    recorded by an earlier run (or earlier in the file).

    All or nothing: the whole file is read and checked first (a bad line, a field
    over 128 KiB included, is rejected alone), then its good lines are applied in
    one transaction. A line the engine refuses is rejected and the others applied
    again from scratch; any other error applies nothing (the file can be given
    again as it is: each line is recorded once).
    """
    path = Path(path)
    data = path.read_bytes()
    text = _decode(data)
    report: dict = {"applied": 0, "duplicates": 0, "rejected": [], "ignored": []}
    lines = text.splitlines()
    header_line = next((ln for ln in lines if ln.strip()), "")
    delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    if csv.field_size_limit() <= len(text):  # checked per line below (MAX_FIELD_CHARS), not by the csv module
        csv.field_size_limit(len(text) + 1)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = None
    for row in reader:
        if any(cell.strip() for cell in row):
            header = [_COLUMNS.get(_plain(cell)) for cell in row]
            break
    if header is None or not {"reference", "date", "outcome"} <= set(header):
        report["rejected"].append({"line": reader.line_num or 1, "reason": (
            "en-tête invalide : colonnes attendues reference, date, outcome"
            + (f" (trouvé : {header_line.strip()[:80]})" if header_line.strip() else " (fichier vide)"))})
        _audit_returns(app, path, data, report, now)
        return report
    index = {name: header.index(name) for name in ("reference", "date", "outcome")}
    checked = _check_lines(app, reader, index, app.calendar.local_date(now), report)
    _apply_all(app, checked, path, data, report, now)
    report["rejected"].sort(key=lambda r: r["line"])
    log.info("returns %s: %d applied, %d duplicates, %d rejected", path.name, report["applied"],
             report["duplicates"], len(report["rejected"]))
    return report


def _check_lines(app, reader, index: dict, today: dt.date, report: dict) -> list[tuple]:
    """Every line read and checked, nothing written: ``(line, reference, outcome, date, message id, external id)``."""
    candidates = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:
            report["rejected"].append({"line": reader.line_num, "reason": "ligne CSV illisible : ligne ignorée"})
            continue
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue

        def reject(reason: str) -> None:
            report["rejected"].append({"line": line, "reason": reason})

        if any(len(cell) > MAX_FIELD_CHARS for cell in row):
            reject("champ de plus de 128 Kio : ligne ignorée")
            continue

        def cell(name: str) -> str:
            i = index[name]
            return row[i].strip() if i < len(row) else ""

        reference, raw_date, outcome = cell("reference").upper(), cell("date"), cell("outcome").lower()
        if not reference:
            reject("référence manquante")
            continue
        ids = Message.parse_reference(reference)
        if ids is None:
            reject(f"référence invalide « {reference[:40]} » (attendu : RL-000123-0000456, imprimée sur le courrier)")
            continue
        if outcome not in RETURN_OUTCOMES:
            reject(f"résultat inconnu « {outcome[:30]} » (attendu : npai, ar_signed ou ar_unclaimed)")
            continue
        on = _parse_return_date(raw_date)
        if on is None:
            reject(f"date invalide « {raw_date[:30]} » (attendu : AAAA-MM-JJ)")
            continue
        if on > today:
            reject(f"date {_fr(on)} dans le futur")
            continue
        candidates.append((line, reference, outcome, on, ids))

    checked = []
    with session_scope(app.db_url) as s:
        for line, reference, outcome, on, (case_id, message_id) in candidates:
            found = s.execute(select(Message, Person.external_id).join(Case, Case.id == Message.case_id)
                              .join(Person, Person.id == Case.person_id)
                              .where(Message.id == message_id)).first()
            reason = None
            if found is None or found[0].case_id != case_id:
                reason = f"référence inconnue : {reference}"
            else:
                msg, external_id = found
                postage = msg.postage or "simple"
                if msg.channel != "letter":
                    reason = f"la référence {reference} n'est pas un courrier ({msg.channel})"
                elif msg.status not in LEFT or msg.sent_at is None:
                    reason = f"le courrier {reference} n'a jamais été envoyé (statut : {msg.status})"
                elif outcome.startswith("ar_") and postage != "lrar":
                    reason = (f"accusé de réception pour {reference}, qui n'est pas une lettre recommandée "
                              f"(envoi {postage})")
                elif on < app.calendar.local_date(msg.sent_at):
                    reason = (f"date {_fr(on)} antérieure à l'envoi du courrier "
                              f"({_fr(app.calendar.local_date(msg.sent_at))})")
            if reason is not None:
                report["rejected"].append({"line": line, "reason": reason})
            else:
                checked.append((line, reference, outcome, on, message_id, external_id))
    return checked


class _LineRefused(Exception):
    def __init__(self, item: tuple, reason: str) -> None:
        super().__init__(reason)
        self.item, self.reason = item, reason


def _apply_all(app, checked: list[tuple], path: Path, data: bytes, report: dict, now: dt.datetime) -> None:
    """The checked lines and the audit entry, in one transaction; a line the engine refuses is
    rejected and the rest applied again from scratch. Any other error: nothing applied."""
    pending = list(checked)
    while True:
        done: dict = {"applied": 0, "duplicates": 0, "ignored": []}
        try:
            with one_transaction(app.db_url):
                for item in pending:
                    line, reference, outcome, on, message_id, external_id = item
                    try:
                        result = cases.apply_event(
                            app, external_id=external_id, type=outcome, now=now,
                            receipt_on=on if outcome.startswith("ar_") else None, source="mail_room",
                            idempotency_key=f"return:{reference}:{outcome}", message_id=message_id)
                    except ServiceError as exc:
                        raise _LineRefused(item, str(exc)) from None
                    if result.status == "duplicate":
                        done["duplicates"] += 1
                        continue
                    done["applied"] += 1
                    if result.status == "ignored":
                        done["ignored"].append({"line": line, "reference": reference, "note": result.note})
                _audit_returns(app, path, data, {**report, **done}, now)
        except _LineRefused as refused:
            report["rejected"].append({"line": refused.item[0], "reason": refused.reason})
            pending.remove(refused.item)
            continue
        report.update(done)
        return


def _audit_returns(app, path: Path, data: bytes, report: dict, now: dt.datetime) -> None:
    with session_scope(app.db_url) as s:
        audit.append(s, at=now, kind="ingest", data={
            "kind": "mail_room_returns", "file": path.name, "file_sha256": hashlib.sha256(data).hexdigest(),
            "applied": report["applied"], "duplicates": report["duplicates"],
            "rejected": len(report["rejected"])})
