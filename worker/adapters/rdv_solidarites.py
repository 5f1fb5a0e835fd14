"""RDV-Solidarités' outgoing webhooks (issue 16): their signature and their payload.

The format, as RDV-Solidarités sends it (read in rdv-solidarites/rdvs-tech-doc,
``api-interconnexions-sortantes/`` README, ``format-des-donnees.md`` and ``generation-de-signature.md``,
and in betagouv/rdv-service-public: ``app/models/concerns/webhook_deliverable.rb``,
``app/jobs/webhook_job.rb``, ``app/blueprints/rdv_blueprint.rb``, ``participation_blueprint.rb``,
``user_blueprint.rb``, ``motif_blueprint.rb``, ``motif_category_blueprint.rb``, ``app/models/rdv.rb``):

* one HTTP POST per creation, update or deletion, ``Content-Type: application/json; charset=utf-8``,
  body ``{"data": {...}, "meta": {"model": "Rdv", "event": "created" | "updated" | "destroyed",
  "timestamp": "...", "webhook_reason": ...}}`` (``destroyed``: the data as it was just before);
* header ``X-Lapin-Signature``: the hexadecimal HMAC-SHA256 of the raw body, keyed with the secret
  shared for that URL;
* ``data`` (RdvBlueprint): ``id``, ``uuid``, ``status`` (``unknown``, ``seen``, ``noshow``,
  ``excused``: cancelled by the person, ``revoked``: cancelled by the service), ``starts_at``,
  ``ends_at``, ``duration_in_min``, ``collectif``, ``motif`` (``id``, ``name``, ``motif_category``:
  ``id``, ``name``, ``short_name``), ``organisation`` (``id``, ``name``…), ``lieu``, ``agents``,
  ``users`` (deprecated: each user's ``id``, ``first_name``, ``last_name``, ``birth_name``,
  ``birth_date``, ``affiliation_number``…) and ``participations`` (each with its ``id``, its own
  ``status`` and its ``user``);
* dates: ``"2020-08-07 10:00:00 +0200"`` in the documentation's sample, ISO 8601
  (``"2024-06-12T14:30:00.000+02:00"``) as Rails encodes them today: both are read.

:func:`parse` keeps what Relance uses and, for each participant, the few fields an agent needs to
recognise the person (:attr:`Participant.kept`): never the agents, addresses, phone numbers,
e-mails or notes. Errors are :class:`PayloadError` with a French message that quotes no value.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

SIGNATURE_HEADER = "X-Lapin-Signature"
STATUSES = ("unknown", "seen", "noshow", "excused", "revoked")
EVENTS = ("created", "updated", "destroyed")
MAX_PARTICIPANTS = 1000
MAX_ID = 2 ** 63 - 1
_DATE_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)\s*(Z|[+-]\d{2}:?\d{2})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
# The user's fields kept while the person is not recognised (what an agent needs to link them).
USER_FIELDS = ("id", "first_name", "last_name", "birth_name", "birth_date", "affiliation_number",
               "caisse_affiliation")


class PayloadError(ValueError):
    """A body that is not an RDV-Solidarités notification (French, quotes no value)."""


def sign(secret: str, body: bytes) -> str:
    """The signature RDV-Solidarités puts in ``X-Lapin-Signature``."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secrets: list[str], body: bytes, signature: str | None) -> bool:
    """True when ``signature`` is the body's HMAC under one of ``secrets`` (constant-time compare)."""
    given = (signature or "").strip().lower().encode("ascii", "replace")
    if not given or not secrets:
        return False
    ok = False
    for secret in secrets:  # every secret is tried: the time does not say which one matched
        ok |= hmac.compare_digest(sign(secret, body).encode("ascii"), given)
    return ok


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class Participant:
    """One person of the appointment: a participation (``participations``) or a user (``users``)."""
    key: str  # "u<user id>", else "p<participation id>": the same person in both forms
    user_id: int | None
    participation_id: int | None
    status: str  # the participation's own status; the appointment's in the old form
    affiliation_number: str | None
    last_name: str | None
    birth_name: str | None
    birth_date: dt.date | None
    kept: dict = field(default_factory=dict)  # the user's USER_FIELDS and the participation's id/status


@dataclass(frozen=True)
class Delivery:
    model: str
    event: str
    timestamp: dt.datetime | None
    rdv_id: int | None
    starts_at: dt.datetime | None
    status: str | None
    motif_category: str | None
    organisation_id: int | None
    collective: bool
    form: str  # "participations" or "users" (the old single-status form)
    participants: tuple[Participant, ...]
    summary: dict  # the appointment without its people (kept with an unrecognised participant)

    def state(self, participant: Participant) -> dict:
        """What an unrecognised participant's row keeps: enough to apply it once linked."""
        return {"meta": {"model": self.model, "event": self.event,
                         "timestamp": self.timestamp.isoformat() if self.timestamp else None},
                "data": {**self.summary, "participant": participant.kept}}


def parse_datetime(value, tz: ZoneInfo, what: str) -> dt.datetime | None:
    """``"2020-08-07 10:00:00 +0200"`` or ISO 8601; without an offset, local to ``tz``; returned in UTC."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{what} : date-heure attendue")
    m = _DATE_TIME.fullmatch(value.strip())
    if not m:
        raise PayloadError(f"{what} : date-heure illisible")
    day, time, offset = m.groups()
    if offset and offset != "Z" and ":" not in offset:
        offset = offset[:3] + ":" + offset[3:]
    try:
        parsed = dt.datetime.fromisoformat(f"{day}T{time}{'+00:00' if offset == 'Z' else offset or ''}")
    except ValueError:
        raise PayloadError(f"{what} : date-heure invalide") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(dt.timezone.utc)


def _id(value, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise PayloadError(f"{what} : identifiant entier attendu")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise PayloadError(f"{what} : identifiant entier attendu")
        value = int(value.strip())
    if not 1 <= value <= MAX_ID:
        raise PayloadError(f"{what} : identifiant hors bornes")
    return value


def _text(value, limit: int = 200) -> str | None:
    if value is None or not isinstance(value, (str, int)):
        return None
    text = _CONTROL.sub(" ", str(value)).strip()
    return text[:limit] or None


def _date(value) -> dt.date | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.date.fromisoformat(value.strip()[:10])
    except ValueError:
        return None


def _object(value, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{what} : objet JSON attendu")
    return value


def _participant(user: dict, participation: dict | None, status: str, index: int) -> Participant:
    where = f"participations[{index}]" if participation is not None else f"users[{index}]"
    user_id = _id(user.get("id"), f"{where}.user.id" if participation is not None else f"{where}.id")
    participation_id = _id((participation or {}).get("id"), f"{where}.id")
    if user_id is None and participation_id is None:
        raise PayloadError(f"{where} : ni usager ni participation identifiés")
    key = f"u{user_id}" if user_id is not None else f"p{participation_id}"
    kept_user = {k: _text(user.get(k)) for k in USER_FIELDS if user.get(k) not in (None, "")}
    kept = {"user": kept_user, "status": status}
    if participation_id is not None:
        kept["participation_id"] = participation_id
    return Participant(key=key, user_id=user_id, participation_id=participation_id, status=status,
                       affiliation_number=_text(user.get("affiliation_number"), 64),
                       last_name=_text(user.get("last_name")), birth_name=_text(user.get("birth_name")),
                       birth_date=_date(user.get("birth_date")), kept=kept)


def _status(value, what: str) -> str:
    if value in (None, ""):
        return "unknown"
    if value not in STATUSES:
        raise PayloadError(f"{what} : statut inconnu (attendu : {', '.join(STATUSES)})")
    return value


def parse(body: bytes, tz: ZoneInfo) -> Delivery:
    """The notification in ``body`` (:class:`PayloadError` if it is not one)."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise PayloadError("le corps de la requête n'est pas un JSON valide") from None
    if not isinstance(doc, dict):
        raise PayloadError("un objet JSON est attendu")
    meta = _object(doc.get("meta"), "meta")
    data = _object(doc.get("data"), "data")
    model = _text(meta.get("model"), 40) or ""
    event = _text(meta.get("event"), 16) or ""
    if not model or event not in EVENTS:
        raise PayloadError(f"meta : model et event ({', '.join(EVENTS)}) sont obligatoires")
    timestamp = parse_datetime(meta.get("timestamp"), tz, "meta.timestamp")
    if model != "Rdv":  # plages d'ouverture, absences, usagers...: not for Relance
        return Delivery(model, event, timestamp, None, None, None, None, None, False, "users", (), {})
    rdv_id = _id(data.get("id"), "data.id")
    if rdv_id is None:
        raise PayloadError("data.id : l'identifiant du rendez-vous est obligatoire")
    status = _status(data.get("status"), "data.status")
    starts_at = parse_datetime(data.get("starts_at"), tz, "data.starts_at")
    motif = _object(data.get("motif"), "data.motif")
    category = _object(motif.get("motif_category"), "data.motif.motif_category")
    organisation = _object(data.get("organisation"), "data.organisation")
    participants: list[Participant] = []
    participations = data.get("participations")
    if participations is not None:
        form = "participations"
        if not isinstance(participations, list):
            raise PayloadError("data.participations : liste attendue")
        for i, item in enumerate(participations[:MAX_PARTICIPANTS + 1]):
            item = _object(item, f"data.participations[{i}]")
            participants.append(_participant(_object(item.get("user"), f"data.participations[{i}].user"), item,
                                             _status(item.get("status"), f"data.participations[{i}].status"), i))
    else:
        form = "users"
        users = data.get("users") or []
        if not isinstance(users, list):
            raise PayloadError("data.users : liste attendue")
        for i, item in enumerate(users[:MAX_PARTICIPANTS + 1]):
            participants.append(_participant(_object(item, f"data.users[{i}]"), None, status, i))
    if len(participants) > MAX_PARTICIPANTS:
        raise PayloadError(f"plus de {MAX_PARTICIPANTS} participants")
    keys = [p.key for p in participants]
    if len(set(keys)) != len(keys):
        raise PayloadError("un même usager figure deux fois dans le rendez-vous")
    summary = {"id": rdv_id, "status": status, "starts_at": starts_at.isoformat() if starts_at else None,
               "collectif": bool(data.get("collectif")),
               "motif": {"name": _text(motif.get("name")), "category": _text(category.get("short_name"), 64)},
               "organisation": {"id": _id(organisation.get("id"), "data.organisation.id"),
                                "name": _text(organisation.get("name"))},
               "lieu": _text(_object(data.get("lieu"), "data.lieu").get("name"))}
    return Delivery(model, event, timestamp, rdv_id, starts_at, status, summary["motif"]["category"],
                    summary["organisation"]["id"], summary["collectif"], form, tuple(participants), summary)

