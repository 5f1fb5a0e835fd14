"""What the audit log says about a case, in French, for agents (``relance timeline``).

The audit entries are data (English keys, codes); agents read sentences.
:func:`case_entry` turns the known shapes into one line; anything else is
shown as it is (JSON), never hidden.
"""
from __future__ import annotations

import datetime as dt
import json

OUTCOMES = {
    "attended": "rendez-vous honoré",
    "crsa_referral": "transmis à la commission RSA",
    "droit_closed": "droit clos",
    "legitimate_reason": "motif légitime retenu après examen",
    "reoriented": "réorienté (suite dans un nouveau dossier)",
    "restarted_after_address_update": "repris après changement d'adresse (nouveau dossier)",
    "restarted_after_legitimate_reason": "repris après le motif légitime (nouveau dossier)",
    "review_closed": "classé après examen",
}

MESSAGE_STATUSES = {
    "pending": "prévu", "sending": "en cours d'envoi", "sent": "envoyé", "dispatched": "remis à La Poste",
    "delivered": "remis", "returned": "revenu (NPAI)", "failed": "échec", "technical-failure": "échec technique",
    "cancelled": "annulé",
}
CHANNELS = {"letter": "courrier", "sms": "SMS", "email": "e-mail"}
EVENT_STATUSES = {"received": "reçu", "applied": "appliqué", "ignored": "sans effet", "rejected": "rejeté"}

REASONS = {
    "flux": "flux",
    "campaign": "campagne du stock",
    "start": "début",
    "no_response": "sans réponse",
    "rdv_missed": "rendez-vous manqué",
    "rdv_cancelled": "rendez-vous annulé",
    "legitimate_reason_over": "fin du motif légitime",
    "observation_period_over": "fin du délai d'observations",
    "phone_followup_done": "appel de suivi fait",
    "no_attendance_recorded": "présence non enregistrée",
    "no_receipt": "accusé de réception non reçu",
    "npai": "courrier revenu (NPAI)",
    "address_updated": "nouvelle adresse",
    "reoriented": "réorientation",
    "review_decision:proceed": "décision de l'agent : poursuivre",
    "review_decision:legitimate_reason": "décision de l'agent : motif légitime",
    "review_decision:refer": "décision de l'agent : renvoi en commission",
    "observations": "la personne a répondu ou avait un motif légitime",
    "observations_received": "observations reçues",
    "hearing_requested": "demande à être entendu(e)",
    "ar_signed": "accusé de réception signé",
    "ar_unclaimed": "pli non réclamé (avis de passage)",
    "receipt": "attend la date de réception du préavis",
    "observation_period": "attend la fin du délai d'observations",
    "attendance_to_confirm": "présence à confirmer (rien d'enregistré après le rendez-vous)",
    "legitimate_reason_review": "motif légitime sans fin prévisible : à réexaminer",
}

APPOINTMENT_OUTCOMES = {"attended": "honoré", "missed": "manqué", "cancelled": "annulé",
                        "unconfirmed": "passé sans présence enregistrée (absence non confirmée)"}
DECISIONS = {"proceed": "poursuivre (préavis)", "refer": "renvoi en commission", "close": "classement",
             "legitimate_reason": "motif légitime"}

FLAGS = {
    "late": "première invitation après l'objectif de 15 jours",
    "paused": "en pause : motif légitime",
    "resumed": "reprise après le motif légitime",
    "held": "en attente d'une décision d'agent",
    "npai": "adresse inutilisable (NPAI) : appel et recherche CAF",
    "receipt": "accusé de réception enregistré",
    "receipt_overdue": "accusé de réception attendu et non reçu",
    "task": "tâche pour un agent",
    "review": "à examiner par un agent",
    "sms_failed": "numéro inutilisable : courriers maintenus",
    "sms_opt_out": "opposition aux SMS enregistrée",
    "phone_updated": "numéro mis à jour",
    "address_updated": "adresse mise à jour",
    "email_unusable": "e-mail inutilisable : courriers maintenus",
    "address_invalid": "adresse impropre à un courrier",
    "orientation_deadline": "non orienté",
    "observations": "réponse après le préavis : à examiner",
    "referral_waits": "renvoi en commission décidé",
    "sanction_decided": "suspension décidée",
    "sanction_lifted": "suspension levée",
}


# The steps as agents read them (config/paths.yaml step ids; an unknown id is shown as it is).
STEPS = {
    "invitation_1": "1re invitation",
    "invitation_2": "relance (2e invitation)",
    "phone_followup": "appel de suivi",
    "convocation": "convocation",
    "rdv_reminder": "rappel de rendez-vous",
    "ft_convocation": "convocation France Travail",
    "ft_warning": "dernier rappel France Travail",
    "ft_report": "signalement de France Travail",
    "sanction_review": "examen avant sanction",
    "pre_sanction_notice": "préavis de sanction (LRAR)",
    "observations_review": "examen des observations",
    "crsa_referral": "renvoi en commission RSA",
    "sanction_decision": "décision de suspension",
    "sanction_lifting": "levée de la suspension",
    "procedure_closed": "procédure close",
}


# Why a message was cancelled (the engine's codes), for agents.
CANCEL_REASONS = {
    "appointment_missed": "annulé : rendez-vous passé", "appointment_passed": "annulé : rendez-vous passé",
    "rdv_booked": "annulé : la personne a pris rendez-vous",
    "rdv_cancelled": "annulé : rendez-vous annulé", "legitimate_reason": "annulé : motif légitime",
    "npai": "annulé : adresse inutilisable (NPAI)", "sms_failed": "annulé : numéro inutilisable",
    "sms_opt_out": "annulé : opposition aux SMS",
}


def step_label(step: str | None) -> str:
    """A step id in French (``sanction_review`` → « examen avant sanction »)."""
    if not step:
        return "—"
    return STEPS.get(step, step)


def current_contact(person, channel: str) -> str:
    """The person's number, e-mail address or postal address for ``channel``, as the pages show it."""
    if channel == "sms":
        return person.phone or "numéro inconnu"
    if channel == "email":
        return person.email or "adresse e-mail inconnue"
    lines = (person.address_line1, person.address_line2, f"{person.postcode or ''} {person.city or ''}".strip())
    return ", ".join(x for x in lines if x) or "adresse inconnue"


def message_destination(message, person, moved: bool | None = None) -> str:
    """« à … » for a message: where it went (``recipient``, what its provider was given), and « modifié
    depuis » when the person's contact is no longer that one (``moved``; for a letter the caller says,
    from the case's address version; otherwise: the recipient is not the current contact). A message
    still to be sent goes to the current contact; one that went nowhere (cancelled, not rendered): ""."""
    channel, recipient = message.channel, message.recipient
    if not recipient:
        if message.sent_at is None and message.status not in ("pending", "sending"):
            return ""
        if moved:  # sent before 0012 recorded where: the letter itself says
            return "à l'adresse d'alors, modifiée depuis"
        return "à " + current_contact(person, channel)
    shown = ", ".join(line.strip() for line in recipient.splitlines() if line.strip())
    if moved is None:
        moved = recipient != current_contact(person, channel)
    if moved:
        shown += " (numéro modifié depuis)" if channel == "sms" else " (adresse modifiée depuis)"
    return "à " + shown


def _date_fr(value) -> str:
    try:
        day = dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return str(value)
    return f"{day:%d/%m/%Y}"


# Flags whose detail only repeats, in English, what the French label says.
_PLAIN_FLAGS = frozenset({"late", "npai"})


def reason(code) -> str:
    """A step change's or a case opening's reason, in French (the code itself if unknown)."""
    text = str(code)
    if text in REASONS:
        return REASONS[text]
    if text.startswith("handoff:"):
        return f"transmis après l'étape {text.split(':', 1)[1]}"
    if text.startswith("reoriented"):
        return "réorientation"
    return text


def days_left(days: int) -> str:
    """``J-7`` before a deadline, ``dépassée de 3 j`` after it."""
    return f"J-{days}" if days >= 0 else f"dépassée de {-days} j"


def local_time(value, tz: dt.tzinfo | None) -> str:
    """``JJ/MM/AAAA HH:MM`` in ``tz`` (the territory's time zone) of an ISO date-time."""
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if tz is not None and moment.tzinfo is not None:
        moment = moment.astimezone(tz)
    return f"{moment:%d/%m/%Y %H:%M}"


def case_entry(detail: dict, tz: dt.tzinfo | None = None) -> str:
    """One French line for an audit entry of kind ``case`` (date-times shown in ``tz``)."""
    if not isinstance(detail, dict):
        return str(detail)
    action = detail.get("action")
    if action == "opened":
        late = ", hors délai" if detail.get("late") else ""
        segment = f", segment {detail['segment']}" if detail.get("segment") else ""  # the stock campaign's
        return (f"ouvert : parcours {detail.get('path')}, étape {detail.get('start_step')} "
                f"(motif : {reason(detail.get('reason'))}{late}{segment})")
    if action == "closed":
        outcome = detail.get("outcome")
        return f"clos : {OUTCOMES.get(outcome, outcome)}"
    if action == "continued_in":
        return f"suite dans le dossier RL-{int(detail.get('case', 0)):06d} (motif : {reason(detail.get('reason'))})"
    if "appointment" in detail:
        kind = {"booked": "pris par la personne", "convocation": "fixé par convocation"}.get(
            detail["appointment"], detail["appointment"])
        return f"rendez-vous {kind} pour le {local_time(detail.get('at'), tz)} (étape {detail.get('step')})"
    if "appointment_outcome" in detail:
        status = detail["appointment_outcome"]
        return f"rendez-vous {APPOINTMENT_OUTCOMES.get(status, status)}"
    if "handed_over_to" in detail:
        return (f"transmis pour examen à {detail['handed_over_to']} "
                f"(manquement signalé par {detail.get('reported_by')})")
    if "organisation_to" in detail:
        return (f"réorienté : suivi désormais par {detail['organisation_to']} "
                f"(auparavant {detail.get('organisation_from') or 'aucune organisation'})")
    if "commission_session" in detail:
        session = detail["commission_session"]
        if session == "none configured":
            return "à inscrire à une commission RSA : aucune séance configurée"
        return f"inscrit à la commission RSA du {_date_fr(session)}"
    flag = detail.get("flag")
    if flag == "orientation_deadline":
        left = days_left(int(detail.get("days_left", 0)))
        return f"non orienté : échéance des 6 semaines le {_date_fr(detail.get('deadline'))} ({left})"
    if flag in FLAGS:
        extra = None if flag in _PLAIN_FLAGS else detail.get("detail")
        return f"signalé : {FLAGS[flag]}" + (f" ({reason(extra)})" if extra else "")
    return json.dumps(detail, ensure_ascii=False, default=str)


def event_detail(type_: str, payload: dict, categories: dict[str, str] | None = None) -> str:
    """What an event said, in French, from its stored payload (never free text: none is stored)."""
    p = payload or {}
    labels = categories or {}
    parts: list[str] = []
    if p.get("decision"):
        parts.append(f"décision : {DECISIONS.get(p['decision'], p['decision'])}")
    if p.get("category"):
        parts.append(f"motif : {labels.get(p['category'], p['category'])}")
    if p.get("until"):
        parts.append(f"jusqu'au {_date_fr(p['until'])}")
    if p.get("review_on"):
        parts.append(f"à réexaminer le {_date_fr(p['review_on'])}")
    if p.get("rate") is not None and p.get("months") is not None:
        parts.append(f"suspension de {p['rate']} % pendant {p['months']} mois"
                     + (" (manquement répété)" if p.get("repeat") else ""))
    if p.get("start_on"):
        parts.append(f"à partir du {_date_fr(p['start_on'])}")
    if p.get("receipt_on"):
        parts.append(f"date : {_date_fr(p['receipt_on'])}")
    if p.get("appointment_at"):
        parts.append(f"rendez-vous le {_date_fr(p['appointment_at'])}")
    if p.get("to"):
        parts.append(f"vers le parcours {p['to']}")
    if p.get("excused"):  # RDV-Solidarités' "excused": cancelled by the person, never a failure
        parts.append("annulé par la personne, qui s'est excusée : pas un manquement")
    elif p.get("cancelled_by") == "service":
        parts.append("annulé par le service")
    rdvs = p.get("rdv_solidarites")
    if isinstance(rdvs, dict) and rdvs.get("rdv_id"):
        parts.append(f"RDV-Solidarités, rendez-vous n° {rdvs['rdv_id']}")
    return " ; ".join(parts)
