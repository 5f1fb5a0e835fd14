"""The actions an agent takes on a case page: one entry of :data:`ACTIONS` per form.

Each form records exactly what ``relance event`` would, through the same service function
(:func:`worker.services.cases.apply_event`), with ``source="web:<agent id>"`` (the audit log names the
agent) and, for a review decision, the agent's mandatory justification. A new decision or event is one
more :class:`Action` here: its fields (rendered and checked generically), when it applies, what it
records.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Callable

from worker.domain.describe import DECISIONS
from worker.services import cases, workspace_actions
from worker.services.errors import ServiceError

MAX_TEXT = 2000


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    kind: str  # radio | select | text | textarea | date | datetime | number | checkbox
    required: bool = False
    hint: str = ""
    choices: Any = ()  # ((value, label), ...) or a function of the form context
    required_if: tuple[str, tuple[str, ...]] | None = None  # required when that field has one of these values
    autocomplete: str = ""
    maxlength: int = 200


@dataclass
class FormCtx:
    app: Any
    agent: Any
    reference: str
    external_id: str
    now: dt.datetime
    case: dict
    person: dict
    key: str = ""  # the form's idempotency key (a double submission records once)

    def event(self, type_: str, suffix: str = "", extra: dict | None = None, **kwargs) -> cases.EventResult:
        return cases.apply_event(self.app, external_id=self.external_id, type=type_, now=self.now,
                                 source=f"web:{self.agent.id}",
                                 idempotency_key=f"web-{self.key}{suffix}" if self.key else None,
                                 extra={"actor": self.agent.id, **(extra or {})}, **kwargs)


class FieldError(ServiceError):
    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.field = name


@dataclass(frozen=True)
class Action:
    key: str
    title: str
    button: str
    fields: tuple[Field, ...]
    applies: Callable[[dict, dict, dt.date], bool]
    run: Callable[[FormCtx, dict], str]
    primary: bool = True  # an action of the current step (else: under "Autres actions")
    intro: str = ""


# --- choices -------------------------------------------------------------------------------------------


def _categories(ctx: FormCtx):
    return [(k, c.label + ("" if c.natural_end else " (sans fin prévisible : date de réexamen)"))
            for k, c in ctx.app.policy.legitimate_reasons.categories.items()]


def _decisions(ctx: FormCtx):
    if ctx.case["step"] == "observations_review":
        keys = ("refer", "legitimate_reason", "close")
    else:
        keys = ("proceed", "legitimate_reason", "close")
    labels = {"proceed": "Poursuivre : le Département envoie le préavis de sanction (LRAR)",
              "refer": "Renvoyer à la commission RSA",
              "legitimate_reason": "Motif légitime : la procédure s'arrête pendant le motif",
              "close": "Classer : la procédure s'arrête"}
    return [(k, labels.get(k, DECISIONS[k])) for k in keys]


def _paths(ctx: FormCtx):
    return [(k, p.label) for k, p in ctx.app.policy.paths.items()]


def _measure_hint(ctx: FormCtx) -> str:
    m = ctx.app.policy.measure
    return (f"Premier manquement : {m.first.rate[0]} à {m.first.rate[1]} % pendant {m.first.months[0]} à "
            f"{m.first.months[1]} mois ; manquement répété : jusqu'à {m.repeat.months[1]} mois. "
            "Vide : le minimum.")


# --- the common fields ---------------------------------------------------------------------------------

CATEGORY = Field("category", "Catégorie du motif", "select", choices=_categories,
                 hint="Seule la catégorie est enregistrée, jamais les mots de la personne.")
UNTIL = Field("until", "Fin du motif (date)", "date",
              hint="Pour un motif qui a une fin prévisible (hospitalisation, arrêt maladie…).")
REVIEW_ON = Field("review_on", "Date de réexamen", "date",
                  hint="Pour un motif sans fin prévisible (sans domicile stable, incarcération) : par défaut dans "
                       "90 jours.")
JUSTIFICATION = Field("justification", "Justification de la décision", "textarea", required=True, maxlength=MAX_TEXT,
                      hint="Obligatoire. Ce que vous avez vérifié et pourquoi vous décidez ainsi (visible par la "
                           "commission). N'y recopiez pas de données de santé.")
ADDRESS = (
    Field("line1", "Adresse (numéro et voie)", "text", autocomplete="address-line1"),
    Field("line2", "Complément d'adresse", "text", autocomplete="address-line2"),
    Field("postcode", "Code postal", "text", autocomplete="postal-code", maxlength=5),
    Field("city", "Commune", "text", autocomplete="address-level2", maxlength=100),
)


def _reason_kwargs(values: dict) -> dict:
    return {"category": values.get("category"), "until": values.get("until"),
            "review_on": values.get("review_on")}


def _done(result: cases.EventResult, what: str) -> str:
    if result.status == "duplicate":
        return f"{what} : déjà enregistré (formulaire envoyé deux fois)."
    if result.status == "ignored":
        return f"{what} : enregistré, sans effet sur le dossier ({result.note})."
    return f"{what} : enregistré."


# --- the actions ---------------------------------------------------------------------------------------


def _review(ctx: FormCtx, v: dict) -> str:
    decision = v["decision"]
    kwargs: dict = {}
    if decision == "proceed":
        kwargs = {"rate": v.get("rate"), "months": v.get("months"), "repeat": bool(v.get("repeat"))}
    elif decision == "legitimate_reason":
        if not v.get("category"):
            raise FieldError("category", "choisissez la catégorie du motif légitime")
        kwargs = _reason_kwargs(v)
    result = ctx.event("review_decision", decision=decision, extra={"justification": v["justification"]}, **kwargs)
    return _done(result, f"Décision « {DECISIONS.get(decision, decision)} »")


ATTENDANCE = {"present": "présent(e)", "absent": "absent(e)", "excused": "excusé(e) : motif légitime"}


def _attendance(ctx: FormCtx, v: dict) -> str:
    outcome = v["outcome"]
    if outcome == "present":
        return _done(ctx.event("rdv_attended"), "Présence")
    if outcome == "absent":
        return _done(ctx.event("rdv_missed"), "Absence")
    if not v.get("category"):
        raise FieldError("category", "choisissez la catégorie du motif de l'absence excusée")
    return _done(ctx.event("legitimate_reason", **_reason_kwargs(v)), "Absence excusée (motif légitime)")


PHONE_OUTCOMES = {"reached": "personne jointe", "no_answer": "pas de réponse", "wrong_number": "mauvais numéro",
                  "new_contact": "nouvelle adresse ou nouveau numéro obtenu"}


def _phone_followup(ctx: FormCtx, v: dict) -> str:
    outcome = v["outcome"]
    if outcome == "wrong_number":
        ctx.event("sms_failed", "-sms")
    elif outcome == "new_contact":
        _new_contact(ctx, v)
    result = ctx.event("phone_followup_done", extra={"outcome": outcome, "outcome_label": PHONE_OUTCOMES[outcome]})
    return _done(result, f"Appel de suivi ({PHONE_OUTCOMES[outcome]})")


def _new_contact(ctx: FormCtx, v: dict) -> str:
    done = []
    if v.get("phone"):
        workspace_actions.new_phone(ctx.app, ctx.reference, ctx.agent, phone=v["phone"], now=ctx.now)
        done.append("numéro")
    if any(v.get(f) for f in ("line1", "postcode", "city")):
        workspace_actions.new_address(ctx.app, ctx.reference, ctx.agent, line1=v.get("line1") or "",
                                      line2=v.get("line2"), postcode=v.get("postcode") or "",
                                      city=v.get("city") or "", now=ctx.now)
        done.append("adresse")
    if not done:
        raise FieldError("phone", "saisissez un nouveau numéro ou une nouvelle adresse")
    return f"Nouvelles coordonnées ({' et '.join(done)}) : enregistrées."


def _receipt(ctx: FormCtx, v: dict) -> str:
    kind = v["kind"]
    label = "Accusé de réception signé" if kind == "ar_signed" else "Pli non réclamé"
    return _done(ctx.event(kind, receipt_on=v["receipt_on"]), label)


def _observations(ctx: FormCtx, v: dict) -> str:
    kind = v["kind"]
    label = "Observations reçues" if kind == "observations_received" else "Demande à être entendu(e)"
    return _done(ctx.event(kind), label)


def _reason(ctx: FormCtx, v: dict) -> str:
    return _done(ctx.event("legitimate_reason", **_reason_kwargs(v)), "Motif légitime")


def _reason_review(ctx: FormCtx, v: dict) -> str:
    if v["outcome"] == "ended":
        return _done(ctx.event("legitimate_reason_ended"), "Fin du motif légitime")
    if not v.get("review_on"):
        raise FieldError("review_on", "indiquez la prochaine date de réexamen")
    return _done(ctx.event("legitimate_reason", category=ctx.case["pause_category"] or "other",
                           review_on=v["review_on"]), "Motif légitime prolongé")


def _booked(ctx: FormCtx, v: dict) -> str:
    return _done(ctx.event("rdv_booked", appointment_at=v["appointment_at"]), "Rendez-vous")


def _decided(ctx: FormCtx, v: dict) -> str:
    return _done(ctx.event("sanction_decided", rate=v["rate"], months=v["months"], start_on=v["start_on"]),
                 "Décision du Président")


def _reoriented(ctx: FormCtx, v: dict) -> str:
    return _done(ctx.event("reoriented", to=v["to"]), "Réorientation")


def _closed(ctx: FormCtx, v: dict) -> str:
    return _done(ctx.event("droit_closed"), "Droit clos")


def _active(c: dict) -> bool:
    return c["status"] == "active"


ACTIONS: dict[str, Action] = {a.key: a for a in (
    Action("review", "Décision d'examen", "Enregistrer la décision", (
        Field("decision", "Décision", "radio", required=True, choices=_decisions),
        Field("rate", "Taux de suspension envisagé (%)", "number", hint="", required=False),
        Field("months", "Durée envisagée (mois)", "number"),
        Field("repeat", "Manquement répété (bornes plus larges)", "checkbox"),
        CATEGORY, UNTIL, REVIEW_ON, JUSTIFICATION),
        lambda c, p, today: _active(c) and c["phase"] == "review", _review,
        intro="Cherchez d'abord un motif légitime (appel, courrier, partenaires). Taux et durée : seulement pour "
              "« Poursuivre » ; catégorie et dates : seulement pour « Motif légitime »."),
    Action("attendance", "Présence au rendez-vous", "Enregistrer la présence", (
        Field("outcome", "La personne était", "radio", required=True, choices=tuple(ATTENDANCE.items())),
        CATEGORY, UNTIL, REVIEW_ON),
        lambda c, p, today: _active(c) and c["phase"] == "appointment" and c["appointment_past"], _attendance,
        intro="Aucune absence n'est supposée : sans cette saisie, rien ne se passe. Catégorie et dates : "
              "seulement pour une absence excusée."),
    Action("phone_followup", "Résultat de l'appel de suivi", "Enregistrer l'appel", (
        Field("outcome", "Résultat", "radio", required=True, choices=tuple(PHONE_OUTCOMES.items())),
        Field("phone", "Nouveau numéro de téléphone", "text", autocomplete="tel", maxlength=20),
        *ADDRESS),
        lambda c, p, today: _active(c) and c["phase"] == "task" and c["step"] == "phone_followup",
        _phone_followup, intro="Numéro ou adresse : seulement si vous en avez obtenu de nouveaux."),
    Action("receipt", "Accusé de réception du préavis (LRAR)", "Enregistrer la date", (
        Field("kind", "Retour de La Poste", "radio", required=True,
              choices=(("ar_signed", "accusé de réception signé"), ("ar_unclaimed", "pli non réclamé (avis de passage)"))),
        Field("receipt_on", "Date de réception (ou de l'avis de passage)", "date", required=True)),
        lambda c, p, today: _active(c) and bool(c["notice_on"]) and not c["receipt_on"], _receipt),
    Action("observations", "Réponse au préavis", "Enregistrer la réponse", (
        Field("kind", "La personne a", "radio", required=True,
              choices=(("observations_received", "envoyé des observations"),
                       ("hearing_requested", "demandé à être entendue"))),),
        lambda c, p, today: _active(c) and bool(c["notice_on"]) and c["phase"] in ("awaiting_receipt", "observation"),
        _observations),
    Action("reason_review", "Réexamen du motif légitime", "Enregistrer", (
        Field("outcome", "Le motif", "radio", required=True,
              choices=(("ended", "a pris fin : la procédure reprend"), ("extended", "dure encore : nouvelle date"))),
        REVIEW_ON),
        lambda c, p, today: _active(c) and c["phase"] == "paused" and bool(c["paused_until"])
        and c["paused_until"] <= today, _reason_review),
    Action("contact", "Nouvelle adresse ou nouveau numéro", "Enregistrer les coordonnées", (
        Field("phone", "Nouveau numéro de téléphone", "text", autocomplete="tel", maxlength=20), *ADDRESS),
        lambda c, p, today: _active(c) and (p["address_status"] == "npai" or p["phone_status"] == "failed"
                                            or (c["hold_reason"] or "").split(":")[0] in
                                            ("npai", "no_address", "letter_missing")),
        lambda ctx, v: _new_contact(ctx, v),
        intro="Après un courrier revenu (NPAI) ou un numéro inutilisable : la suite du dossier reprend."),
    Action("sanction_decided", "Décision du Président après la commission", "Enregistrer la décision", (
        Field("rate", "Taux de suspension (%)", "number", required=True),
        Field("months", "Durée (mois)", "number", required=True),
        Field("start_on", "Début de la suspension", "date", required=True)),
        lambda c, p, today: c["outcome"] == "crsa_referral" and bool(c["commission_date"])
        and c["commission_date"] <= today and c["decision"][0] is None, _decided,
        intro="Si aucune suspension n'est décidée, n'enregistrez rien."),
    Action("legitimate_reason", "Motif légitime", "Enregistrer le motif", (
        Field("category", CATEGORY.label, "select", required=True, choices=_categories, hint=CATEGORY.hint),
        UNTIL, REVIEW_ON), lambda c, p, today: _active(c), _reason, primary=False,
        intro="Tout envoi s'arrête pendant le motif."),
    Action("rdv_booked", "Rendez-vous pris", "Enregistrer le rendez-vous", (
        Field("appointment_at", "Date et heure du rendez-vous", "datetime", required=True),),
        lambda c, p, today: _active(c) and c["phase"] != "review", _booked, primary=False),
    Action("contact_other", "Nouvelles coordonnées", "Enregistrer les coordonnées", (
        Field("phone", "Nouveau numéro de téléphone", "text", autocomplete="tel", maxlength=20), *ADDRESS),
        lambda c, p, today: _active(c), lambda ctx, v: _new_contact(ctx, v), primary=False),
    Action("reoriented", "Réorientation", "Réorienter", (
        Field("to", "Nouveau parcours", "select", required=True, choices=_paths),),
        lambda c, p, today: _active(c), _reoriented, primary=False),
    Action("droit_closed", "Droit RSA clos", "Clore le dossier", (
        Field("confirm", "Je confirme que le droit RSA de la personne est clos", "checkbox", required=True),),
        lambda c, p, today: _active(c), _closed, primary=False),
)}


# --- reading a submitted form ----------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def choices_of(f: Field, ctx: FormCtx) -> list[tuple[str, str]]:
    return list(f.choices(ctx) if callable(f.choices) else f.choices)


def parse(action: Action, form, ctx: FormCtx) -> tuple[dict, dict[str, str]]:
    """(values, errors by field) of a submitted form; dates in the territory's zone, as the CLI reads them."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    tz = ctx.app.calendar.tz
    raw = {f.name: form.get(f.name) for f in action.fields}
    for f in action.fields:
        text = raw.get(f.name)
        text = text.strip() if isinstance(text, str) else ""
        if f.kind == "checkbox":
            values[f.name] = bool(text)
            if f.required and not text:
                errors[f.name] = "case à cocher obligatoire"
            continue
        required = f.required or (f.required_if is not None and raw.get(f.required_if[0]) in f.required_if[1])
        if not text:
            values[f.name] = None
            if required:
                errors[f.name] = "champ obligatoire"
            continue
        limit = MAX_TEXT if f.kind == "textarea" else f.maxlength
        if len(text) > limit or _CONTROL.search(text):
            errors[f.name] = f"{limit} caractères au plus, sans caractère de contrôle"
            continue
        try:
            values[f.name] = _convert(f, text, ctx, tz)
        except ValueError as exc:
            errors[f.name] = str(exc)
    return values, errors


def _convert(f: Field, text: str, ctx: FormCtx, tz):
    if f.kind in ("radio", "select"):
        if text not in dict(choices_of(f, ctx)):
            raise ValueError("choix invalide")
        return text
    if f.kind == "number":
        if not re.fullmatch(r"\d{1,3}", text):
            raise ValueError("nombre entier attendu")
        return int(text)
    if f.kind in ("date", "datetime"):
        try:
            value = dt.datetime.fromisoformat(text) if f.kind == "datetime" else dt.date.fromisoformat(text)
        except ValueError:
            raise ValueError("date invalide (JJ/MM/AAAA)") from None
        day = value.date() if isinstance(value, dt.datetime) else value
        if not dt.date(2000, 1, 1) <= day <= ctx.app.calendar.local_date(ctx.now) + dt.timedelta(days=730):
            raise ValueError("date hors des bornes (2000 à dans deux ans)")
        if f.name == "until":  # the CLI's --until DATE: midnight, local time
            return dt.datetime.combine(value, dt.time(0, 0), tzinfo=tz).astimezone(dt.timezone.utc)
        if isinstance(value, dt.datetime):
            return value.replace(tzinfo=tz).astimezone(dt.timezone.utc)
        return value
    return text


__all__ = ["ACTIONS", "Action", "Field", "FieldError", "FormCtx", "choices_of", "parse"]
