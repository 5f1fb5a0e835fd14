"""The stock import (``relance ingest --stock FILE``, issue 14): the people already in the RSA.

The file has the flux's columns plus ``segment`` (a key of ``config/campaign.yaml`` ``segments``),
``priority`` (1 first; empty: the segment's) and, optionally, ``contract_end`` (AAAA-MM-JJ: when a
valid contract comes up for renewal). It is read and checked like a flux file
(:func:`worker.adapters.flux.parse_flux`, ``kind="stock"``: the same rejections, with the same
report), plus a rejection per row whose segment, priority or contract end is unusable.

People are matched like the flux's (``external_id``, then the NIR's keyed hash), created or updated
(an address or phone change is applied to their active case, as the flux does) and become members
of the campaign ``stock`` with their segment and priority. **Nobody is invited here, and no case is
opened**: the campaign (:mod:`worker.services.campaign`) invites them at the pace the appointment books
allow. Importing the same file again changes nothing; a later file may change a person's segment or
priority while they wait (once invited, their case goes on).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.adapters.store import audit
from worker.adapters.store.bulk import database_errors_as, in_values
from worker.adapters.store.models import Campaign, CampaignMember, Person
from worker.adapters.store.session import session_scope
from worker.domain.contact import phone_warning
from worker.services.errors import IngestError, ServiceError
from worker.services.ingest import PERSON_FIELDS, REFUSED, fingerprint, update_person

log = logging.getLogger("relance.services")

CAMPAIGN = "stock"  # the campaign the stock file feeds
CHUNK = 500
STOCK_KEYS = ("segment", "priority", "contract_end")


@dataclass
class StockReport:
    file: str
    accepted: int = 0  # new people
    updated: int = 0
    unchanged: int = 0
    segments: dict[str, int] = field(default_factory=dict)  # people of the file per segment
    rejected: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"accepted": self.accepted, "updated": self.updated, "unchanged": self.unchanged,
                "segments": self.segments, "rejected": self.rejected, "warnings": self.warnings}


@dataclass(frozen=True)
class _Row:
    row: object  # FluxRow, without the stock's columns in ``extra``
    segment: str
    priority: int
    contract_end: dt.date | None


def _is_stock_key(name: str) -> bool:
    from worker.adapters.flux import STOCK_COLUMNS

    return name in STOCK_COLUMNS or name in STOCK_KEYS or name.startswith(("contract_", "contrat_"))


def _stock_fields(row, cfg) -> _Row:
    """The row's segment, priority and contract end, checked; ValueError((field, French reason))."""
    extra = row.extra or {}
    segment = str(extra.get("segment") or "").strip().lower()
    if not segment:
        raise ValueError(("segment", "segment manquant : colonne segment obligatoire dans le fichier du stock"))
    seg = cfg.segment(segment)
    if seg is None:
        raise ValueError(("segment", f"segment « {segment[:40]} » inconnu de config/campaign.yaml "
                                     f"(attendu : {', '.join(cfg.segments)})"))
    raw = str(extra.get("priority") or "").strip()
    if not raw:
        priority = seg.priority
    elif raw.isdigit() and 1 <= int(raw) <= 9:
        priority = int(raw)
    else:
        raise ValueError(("priority", f"priorité « {raw[:20]} » invalide : un chiffre de 1 (la première) à 9, "
                                      "ou vide pour celle du segment"))
    end_raw = str(extra.get("contract_end") or "").strip()
    try:
        contract_end = dt.date.fromisoformat(end_raw) if end_raw else None
    except ValueError:
        raise ValueError(("contract_end", f"fin de contrat « {end_raw[:20]} » invalide : format attendu AAAA-MM-JJ")) \
            from None
    kept = {k: v for k, v in extra.items() if not _is_stock_key(k)}
    return _Row(dataclasses.replace(row, extra=kept), segment, priority, contract_end)


def _reject(row, field_name: str, reason: str) -> dict:
    return {"line": row.line, "external_id": row.external_id, "field": field_name, "reason": reason}


def import_stock(app, path: Path, now: dt.datetime, progress=None) -> StockReport:
    """Read a stock file; reject bad rows with a reason; upsert people and their campaign membership."""
    from worker.adapters.config_files import load_flux_columns
    from worker.adapters.flux import parse_flux

    cfg = app.config.campaign
    if cfg is None:
        raise ServiceError("import du stock impossible : config/campaign.yaml est absent (les segments, "
                           "leurs canaux et leurs rendez-vous y sont décrits)")
    path = Path(path)
    data = path.read_bytes()
    parsed = parse_flux(data, organisations=frozenset(app.territory.organisations),
                        today=app.calendar.local_date(now), filename=path.name, kind="stock",
                        extra_columns=load_flux_columns(app.settings.config_dir))
    report = StockReport(file=path.name)
    report.rejected = [{"line": r.line, "external_id": r.external_id, "field": r.field, "reason": r.reason}
                       for r in parsed.rejected]
    report.warnings = [{"line": w.line, "external_id": w.external_id, "field": w.field, "reason": w.reason}
                       for w in parsed.warnings]
    rows: list[_Row] = []
    for row in parsed.rows:
        try:
            rows.append(_stock_fields(row, cfg))
        except ValueError as exc:
            report.rejected.append(_reject(row, *exc.args[0]))
            continue
        if row.phone and (why := phone_warning(row.phone)):
            report.warnings.append({"line": row.line, "external_id": row.external_id, "field": "phone", "reason": why})
    report.rejected.sort(key=lambda r: r["line"])
    with database_errors_as(IngestError, REFUSED):
        for start in range(0, len(rows), CHUNK):
            with session_scope(app.db_url) as s:
                campaign = campaign_row(s, now, create=True)
                _import_chunk(s, app, campaign, rows[start:start + CHUNK], path.name, now, report)
            if progress:
                progress(min(start + CHUNK, len(rows)), len(rows))
        with session_scope(app.db_url) as s:
            audit.append(s, at=now, kind="ingest", data={
                "kind": "stock", "file_sha256": hashlib.sha256(data).hexdigest(), "file": path.name,
                "rows": len(parsed.rows), "accepted": report.accepted, "updated": report.updated,
                "unchanged": report.unchanged, "rejected": len(report.rejected), "segments": report.segments})
    log.info("stock %s: %d accepted, %d updated, %d unchanged, %d rejected", path.name, report.accepted,
             report.updated, report.unchanged, len(report.rejected))
    return report


def campaign_row(s: Session, now: dt.datetime, create: bool = False) -> Campaign | None:
    campaign = s.execute(select(Campaign).where(Campaign.name == CAMPAIGN)).scalar()
    if campaign is None and create:
        campaign = Campaign(name=CAMPAIGN, status="active", created_at=now, updated_at=now)
        s.add(campaign)
        s.flush()
    return campaign


def _import_chunk(s: Session, app, campaign: Campaign, rows: list[_Row], source: str, now: dt.datetime,
                  report: StockReport) -> None:
    hashes = {id(r): app.nir_hash(r.row.nir) for r in rows}
    by_ext = {p.external_id: p for p in s.execute(select(Person).where(
        in_values(s, Person.external_id, [r.row.external_id for r in rows]))).scalars()}
    nirs = [h for h in hashes.values() if h]
    by_nir = {p.nir_hash: p for p in s.execute(select(Person).where(in_values(s, Person.nir_hash, nirs))).scalars()} \
        if nirs else {}
    for item in rows:
        row, nh = item.row, hashes[id(item)]
        fp = fingerprint(row)
        person = by_ext.get(row.external_id) or (by_nir.get(nh) if nh else None)
        owner = by_nir.get(nh) if nh else None
        if person is not None and owner is not None and owner is not person:
            report.rejected.append(_reject(row, "nir", "NIR déjà attribué à une autre personne connue (autre "
                                                       "matricule) : ligne ignorée, à vérifier avec la CAF"))
            continue
        if person is None:
            person = Person(**{f: getattr(row, f) for f in PERSON_FIELDS}, external_id=row.external_id, nir_hash=nh,
                            fingerprint=fp, extra=dict(row.extra), created_at=now, updated_at=now,
                            address_status="ok", phone_status="ok", email_status="ok")
            s.add(person)
            s.flush()
            report.accepted += 1
        elif person.fingerprint == fp and person.external_id == row.external_id:
            report.unchanged += 1
        else:
            update_person(s, app, person, row, fp, nh, now, source="stock")
            report.updated += 1
        by_ext[row.external_id] = person
        if nh:
            by_nir[nh] = person
        _member(s, campaign, person, item, source, now)
        report.segments[item.segment] = report.segments.get(item.segment, 0) + 1


def _member(s: Session, campaign: Campaign, person: Person, item: _Row, source: str, now: dt.datetime) -> None:
    member = s.execute(select(CampaignMember).where(CampaignMember.campaign_id == campaign.id,
                                                    CampaignMember.person_id == person.id)).scalar()
    if member is None:
        s.add(CampaignMember(campaign_id=campaign.id, person_id=person.id, segment=item.segment,
                             priority=item.priority, contract_end=item.contract_end, status="waiting",
                             source=source[:200], created_at=now, updated_at=now))
        return
    if (member.segment, member.priority, member.contract_end) != (item.segment, item.priority, item.contract_end):
        member.segment, member.priority, member.contract_end = item.segment, item.priority, item.contract_end
        member.source, member.updated_at = source[:200], now


__all__ = ["StockReport", "import_stock", "campaign_row", "CAMPAIGN"]
