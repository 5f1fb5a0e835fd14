"""What the agents' workspace does besides recording events: new contact details, letter previews,
and the e-mail that carries a sign-in link.

Events themselves go through :func:`worker.services.cases.apply_event`, as ``relance event`` does,
with ``source="web:<agent id>"``.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import re
import secrets

from sqlalchemy import select

from worker.adapters.pdf import render_pdf
from worker.adapters.store.models import Case, Message, Person
from worker.adapters.store.session import session_scope
from worker.domain.contact import can_receive_sms, normalize_phone
from worker.services import agents, cases
from worker.services.errors import ServiceError
from worker.services.print_batches import _letter_path
from worker.services.workspace import NotVisible, _visible, parse_case_reference

log = logging.getLogger("relance.workspace")

_POSTCODE_RE = re.compile(r"\d{5}")
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069\ufffd]")


def _clean(value: str | None, field: str, limit: int, required: bool = False) -> str | None:
    text = " ".join((value or "").split())
    if not text:
        if required:
            raise ServiceError(f"{field} : obligatoire")
        return None
    if len(text) > limit or _BAD_CHARS.search(text) or text[0] in "=+-@":
        raise ServiceError(f"{field} : valeur refusée ({limit} caractères au plus, sans caractère de contrôle "
                           "ni formule de tableur)")
    return text


def new_address(app, reference: str, agent, *, line1: str, line2: str | None, postcode: str, city: str,
                now: dt.datetime):
    """The person's new postal address (after a returned letter, or found by phone), then the event
    ``address_updated`` (as the flux would record it) with the agent's identity."""
    line1_ = _clean(line1, "adresse", 200, required=True)
    line2_ = _clean(line2, "complément d'adresse", 200)
    city_ = _clean(city, "commune", 100, required=True)
    postcode_ = (postcode or "").strip()
    if not _POSTCODE_RE.fullmatch(postcode_):
        raise ServiceError("code postal : 5 chiffres attendus")
    external_id = _set_person(app, reference, agent, now, address_line1=line1_, address_line2=line2_,
                              postcode=postcode_, city=city_.upper())
    return cases.apply_event(app, external_id=external_id, type="address_updated", now=now,
                             source=f"web:{agent.id}", extra={"actor": agent.id})


def new_phone(app, reference: str, agent, *, phone: str, now: dt.datetime):
    """The person's new phone number, then ``phone_updated`` (a mobile) or ``sms_failed`` (no SMS)."""
    e164 = normalize_phone(phone)
    if e164 is None:
        raise ServiceError("numéro de téléphone invalide")
    external_id = _set_person(app, reference, agent, now, phone=e164)
    kind = "phone_updated" if can_receive_sms(e164) else "sms_failed"
    return cases.apply_event(app, external_id=external_id, type=kind, now=now, source=f"web:{agent.id}",
                             extra={"actor": agent.id})


def _set_person(app, reference: str, agent, now: dt.datetime, **values) -> str:
    case_id = parse_case_reference(reference)
    with session_scope(app.db_url) as s:
        case = s.get(Case, case_id) if case_id is not None else None
        if case is None or not _visible(agent, case.organisation):
            raise NotVisible()
        person = s.get(Person, case.person_id)
        for name, value in values.items():
            setattr(person, name, value)
        person.updated_at = now
        log.info("contact details of case %s changed by agent %s (%s)", case.reference, agent.id,
                 ", ".join(sorted(values)))
        return person.external_id


def letter_pdf(app, message_id: int, agent) -> tuple[str, bytes]:
    """(file name, PDF) of a letter as it was written, for the case page's preview."""
    with session_scope(app.db_url) as s:
        msg = s.get(Message, message_id) if 0 < message_id < 2**63 else None
        case = s.get(Case, msg.case_id) if msg is not None else None
        if msg is None or case is None or msg.channel != "letter" or not _visible(agent, case.organisation):
            raise NotVisible()
        path = _letter_path(app.settings.letters, msg.provider_ref)
        reference, step = msg.reference, msg.step
    try:
        html = path.read_text(encoding="utf-8") if path is not None and not path.is_symlink() else None
    except (FileNotFoundError, IsADirectoryError):
        html = None
    if html is None:
        raise ServiceError("le fichier de ce courrier n'existe plus (purgé ou déplacé)")
    return f"{reference}_{step}.pdf", render_pdf([html], assets=app.settings.templates_dir)


def send_login_link(app, email: str, base_url: str, now: dt.datetime) -> bool:
    """Send a sign-in link to an active agent's address (SMTP, or a file under ``<outbox>/connexion/``
    with the local e-mail backend); False, silently, for any other address."""
    made = agents.create_login_link(app, email, now)
    if made is None:
        log.info("sign-in link asked for an address that is not an active agent's")
        return False
    token, agent = made
    minutes = app.settings.web_login_link_minutes
    link = f"{base_url.rstrip('/')}/espace/connexion/lien?jeton={token}"
    subject = "Relance — votre lien de connexion à l'espace agents"
    text = (f"Bonjour {agent.name},\n\nPour vous connecter à l'espace agents de Relance, ouvrez ce lien "
            f"dans les {minutes} minutes :\n\n{link}\n\nIl ne sert qu'une fois. Si vous n'avez rien demandé, "
            "ignorez ce message : personne ne peut se connecter sans ce lien.\n\nMessage automatique de "
            "Relance : ne pas répondre.\n")
    settings = app.settings
    if settings.email_backend == "smtp":
        from worker.adapters.channels.smtp_email import send_email

        send_email(settings.smtp_settings(), to=agent.email, subject=subject, text=text,
                   reference=f"CONNEXION-{agent.id}-{int(now.timestamp())}",
                   sender_name=settings.smtp_from_name or "Relance")
    else:
        folder = settings.outbox / "connexion"
        folder.mkdir(parents=True, exist_ok=True)
        name = folder / f"{now.astimezone(dt.timezone.utc):%Y%m%dT%H%M%S}_agent{agent.id}_{secrets.token_hex(4)}.txt"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"To: {agent.email}\nSubject: {subject}\n\n{text}")
    log.info("sign-in link sent to agent %s", agent.id)
    return True


def active_reference(app, reference: str) -> str | None:
    """The reference of the person's active case when this one is closed (forms act there), else None."""
    case_id = parse_case_reference(reference)
    with session_scope(app.db_url) as s:
        case = s.get(Case, case_id) if case_id is not None else None
        if case is None or case.status == "active":
            return None
        current = s.execute(select(Case).where(Case.person_id == case.person_id, Case.status == "active")
                            .order_by(Case.id.desc()).limit(1)).scalar()
        return current.reference if current else None
