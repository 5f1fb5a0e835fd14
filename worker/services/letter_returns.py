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
from worker.adapters.store.session import session_scope
from worker.services import cases
from worker.services.errors import ServiceError
from worker.services.print_batches import LEFT

log = logging.getLogger("relance.letters")
RETURN_OUTCOMES = ("npai", "ar_signed", "ar_unclaimed")


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
    """
    path = Path(path)
    data = path.read_bytes()
    text = _decode(data)
    report: dict = {"applied": 0, "duplicates": 0, "rejected": [], "ignored": []}
    lines = text.splitlines()
    header_line = next((ln for ln in lines if ln.strip()), "")
    delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
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
    today = app.calendar.local_date(now)

    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue

        def cell(name: str) -> str:
            i = index[name]
            return row[i].strip() if i < len(row) else ""

        reference, raw_date, outcome = cell("reference").upper(), cell("date"), cell("outcome").lower()

        def reject(reason: str) -> None:
            report["rejected"].append({"line": line, "reason": reason})

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
        case_id, message_id = ids
        with session_scope(app.db_url) as s:
            found = s.execute(select(Message, Person.external_id).join(Case, Case.id == Message.case_id)
                              .join(Person, Person.id == Case.person_id)
                              .where(Message.id == message_id)).first()
            if found is None or found[0].case_id != case_id:
                reject(f"référence inconnue : {reference}")
                continue
            msg, external_id = found
            channel, postage, status, sent_at = msg.channel, msg.postage or "simple", msg.status, msg.sent_at
        if channel != "letter":
            reject(f"la référence {reference} n'est pas un courrier ({channel})")
            continue
        if status not in LEFT or sent_at is None:
            reject(f"le courrier {reference} n'a jamais été envoyé (statut : {status})")
            continue
        if outcome.startswith("ar_") and postage != "lrar":
            reject(f"accusé de réception pour {reference}, qui n'est pas une lettre recommandée (envoi {postage})")
            continue
        sent_on = app.calendar.local_date(sent_at)
        if on < sent_on:
            reject(f"date {_fr(on)} antérieure à l'envoi du courrier ({_fr(sent_on)})")
            continue
        try:
            result = cases.apply_event(
                app, external_id=external_id, type=outcome, now=now,
                receipt_on=on if outcome.startswith("ar_") else None, source="mail_room",
                idempotency_key=f"return:{reference}:{outcome}", message_id=message_id)
        except ServiceError as exc:
            reject(str(exc))
            continue
        if result.status == "duplicate":
            report["duplicates"] += 1
            continue
        report["applied"] += 1
        if result.status == "ignored":
            report["ignored"].append({"line": line, "reference": reference, "note": result.note})
    _audit_returns(app, path, data, report, now)
    log.info("returns %s: %d applied, %d duplicates, %d rejected", path.name, report["applied"],
             report["duplicates"], len(report["rejected"]))
    return report


def _audit_returns(app, path: Path, data: bytes, report: dict, now: dt.datetime) -> None:
    with session_scope(app.db_url) as s:
        audit.append(s, at=now, kind="ingest", data={
            "kind": "mail_room_returns", "file": path.name, "file_sha256": hashlib.sha256(data).hexdigest(),
            "applied": report["applied"], "duplicates": report["duplicates"],
            "rejected": len(report["rejected"])})
