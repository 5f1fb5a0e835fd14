"""What waits for an agent: the cases that need a human, per organisation.

The engine never passes a human gate on its own. A case waits for an agent
when:

* ``review``: a review decision (``sanction_review``: look for a legitimate
  reason, then ``review_decision proceed | legitimate_reason | close``;
  ``observations_review`` after the notice: ``refer | legitimate_reason | close``);
* ``task``: a task, such as the phone follow-up of a person not registered
  with France Travail (``phone_followup_done``), an attendance to confirm (an
  appointment passed with nothing recorded on a path where absences are
  confirmed by an agent: ``rdv_attended`` or ``rdv_missed``), or a legitimate
  reason without a natural end reaching its review date
  (``legitimate_reason_ended``, or a new ``legitimate_reason --review-on``);
* ``held``: the case is blocked: the address came back (NPAI), no LRAR
  receipt, no convocation slot, a cancelled convocation, no letter could
  reach the person;
* ``orientation``: the person still has no orientation and the 6-week
  deadline is near or past (:mod:`worker.services.orientation`);
* ``rdvs``: an RDV-Solidarités appointment whose participant nobody recognised
  ("rendez-vous à rapprocher": link it to a person or discard it,
  :mod:`worker.services.rdv_matches`).

Also listed, for the agenda, ``commission``: the cases referred to a coming RSA
commission session, and those whose session has passed with no decision
recorded yet (``sanction_decided``, or nothing if the commission did not
propose a suspension).

:func:`agenda` returns them as :class:`Item` (case reference, external id,
organisation, since when, what to do: in French). ``relance agenda`` prints
them; the agents' daily digest (:mod:`worker.services.digests`) sends them. No name and no contact detail:
agents find the person by the external id in their own tools.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re

from sqlalchemy import and_, or_, select

from worker.adapters.store.models import Appointment, Case, Person
from worker.adapters.store.session import session_scope
from worker.domain.describe import STEPS, days_left
from worker.services import rdv_matches, replies
from worker.services.orientation import report as orientation_report

SECTIONS = {
    "replies": "Réponses reçues — à lire",
    "rdvs": "Rendez-vous à rapprocher",
    "review": "Décisions à prendre",
    "task": "Tâches",
    "held": "Dossiers bloqués",
    "orientation": "Orientation : échéance des 6 semaines",
    "commission": "Commission RSA : dossiers inscrits",
}

HOLDS = {
    "npai": "courrier revenu (NPAI) : trouver une adresse (flux ou relance event address_updated)",
    "no_address": "aucune adresse : en obtenir une (flux ou relance event address_updated)",
    "letter_missing": "aucun courrier n'a atteint la personne : vérifier l'adresse avant toute suite",
    "no_receipt": "accusé de réception de la LRAR non revenu : enregistrer sa date (relance letters returns)",
    "no_slot": "aucun créneau de convocation libre : ajouter des créneaux (config/territory.yaml)",
    "rdv_cancelled": "convocation annulée par la personne : fixer la suite",
}


@dataclasses.dataclass(frozen=True)
class Item:
    section: str  # a key of SECTIONS
    organisation: str
    case_reference: str
    external_id: str
    step: str | None
    since: dt.date | None
    todo: str  # what to do, in French (with the CLI command)
    # For the workspace and the digest (worker/entrypoints/web): the action's form (a key of ACTIONS),
    # the date to act by (a legal one for orientation and the commission, else a target: TARGET_DAYS),
    # and the reply's number for "replies".
    action: str = ""
    deadline: dt.date | None = None
    reply_id: int | None = None
    match_id: int | None = None  # "rdvs": the RDV-Solidarités appointment to link (worker.services.rdv_matches)

    def as_json(self) -> dict:
        return {**dataclasses.asdict(self), "since": self.since.isoformat() if self.since else None,
                "deadline": self.deadline.isoformat() if self.deadline else None}


# What an agent does about each kind of item (the workspace's form, the digest's link).
ACTIONS = {
    "review": "prendre la décision d'examen",
    "phone_followup": "noter le résultat de l'appel",
    "attendance": "noter la présence",
    "reason_review": "réexaminer le motif légitime",
    "contact": "saisir les nouvelles coordonnées",
    "receipt": "noter la date de l'accusé de réception",
    "rdv_booked": "fixer la suite (rendez-vous ou motif)",
    "reply": "lire la réponse",
    "rdv_match": "rapprocher ou écarter le rendez-vous",
    "reoriented": "orienter la personne",
    "commission": "préparer la séance",
    "sanction_decided": "noter la décision du Président",
    "slots": "ajouter des créneaux de convocation",
}
# Days from `since` to act by, when no legal deadline applies (a target for the team, not a rule).
TARGET_DAYS = {"review": 10, "task": 5, "held": 5, "replies": 2, "rdvs": 2}
_HOLD_ACTIONS = {"npai": "contact", "no_address": "contact", "letter_missing": "contact", "no_receipt": "receipt",
                 "no_slot": "slots", "rdv_cancelled": "rdv_booked"}


_COMMAND_IN_PARENS = re.compile(r"\s*\([^()]*relance [^()]*\)")
_COMMAND_TAIL = re.compile(r"(,| ;)? puis relance .*$|\s*: (s'il a pris fin, )?relance (event|replies) .*$")


def plain_todo(todo: str) -> str:
    """What to do, without the command lines and with the steps' French names (workspace, digest)."""
    text = _COMMAND_TAIL.sub("", _COMMAND_IN_PARENS.sub("", todo))
    text = re.sub(r"\(([a-z0-9_]+)\)", lambda m: f"({STEPS.get(m.group(1), m.group(1))})", text)
    return re.sub(r"\b(avant l'étape) ([a-z0-9_]+)", lambda m: f"{m.group(1)} « {STEPS.get(m.group(2), m.group(2))} »",
                  text).strip()


def _hold_text(reason: str | None) -> str:
    code = (reason or "").split(":", 1)[0]
    text = HOLDS.get(code, f"bloqué ({reason})")
    step = (reason or "").split(":", 1)[1] if ":" in (reason or "") else None
    return f"{text} ; avant l'étape {step}" if step else text


def _review_text(s, case: Case, external_id: str) -> str:
    """What a review asks, with what the agent must know: an absence nobody confirmed, who reported."""
    if case.notice_on is not None:
        return (f"réponse après le préavis ({case.step}) : lire les observations ou le motif, puis "
                f"relance event review_decision {external_id} --decision refer|legitimate_reason|close")
    notes = []
    last = s.execute(select(Appointment.status).where(Appointment.case_id == case.id)
                     .order_by(Appointment.id.desc()).limit(1)).scalar()
    if last == "unconfirmed":
        notes.append("absence non confirmée : personne n'a enregistré la présence ni l'absence")
    if case.reported_by:
        notes.append(f"manquement signalé par {case.reported_by}")
    extra = f" [{' ; '.join(notes)}]" if notes else ""
    return (f"décision d'examen ({case.step}){extra} : chercher un motif légitime, puis "
            f"relance event review_decision {external_id} --decision proceed|legitimate_reason|close "
            "(proceed : --rate et --months de la suspension envisagée)")


def agenda(app, now: dt.datetime, organisation: str | None = None) -> list[Item]:
    """The cases waiting for an agent (and the coming commission), by organisation then section."""
    today = app.calendar.local_date(now)
    items: list[Item] = []
    with session_scope(app.db_url) as s:
        waiting = or_(Case.phase.in_(("review", "task", "held")),
                      # the engine handed these to an agent: nothing is due until someone records it
                      and_(Case.phase.in_(("appointment", "paused")), Case.due_at.is_(None)))
        q = (select(Case, Person.external_id).join(Person, Person.id == Case.person_id)
             .where(Case.status == "active", waiting))
        if organisation:
            q = q.where(Case.organisation == organisation)
        labels = {k: c.label for k, c in app.policy.legitimate_reasons.categories.items()}
        for case, external_id in s.execute(q):
            since = app.calendar.local_date(case.step_entered_at) if case.step_entered_at else None
            section = case.phase
            if case.phase == "review":
                todo = _review_text(s, case, external_id)
            elif case.phase == "task":
                todo = f"appel de suivi ({case.step}), puis relance event phone_followup_done {external_id}"
            elif case.phase == "appointment":
                section, since = "task", app.calendar.local_date(case.appointment_at)
                when = f"{app.calendar.local(case.appointment_at):%d/%m/%Y %H:%M}"
                todo = (f"présence à confirmer au rendez-vous du {when} ({case.step}) : "
                        f"relance event rdv_attended|rdv_missed {external_id} "
                        "(aucune absence n'est supposée sans cela)")
            elif case.phase == "paused":
                section = "task"
                since = app.calendar.local_date(case.paused_until) if case.paused_until else since
                label = labels.get(case.pause_category or "", case.pause_category or "motif légitime")
                todo = (f"motif légitime sans fin prévisible ({label}) à réexaminer : s'il a pris fin, relance "
                        f"event legitimate_reason_ended {external_id} ; sinon un nouveau motif avec --review-on")
            else:
                todo = _hold_text(case.hold_reason)
            action = {"review": "review", "task": "phone_followup", "appointment": "attendance",
                      "paused": "reason_review"}.get(case.phase) or _HOLD_ACTIONS.get(
                          (case.hold_reason or "").split(":", 1)[0], "")
            deadline = since if case.phase == "paused" else (
                since + dt.timedelta(days=TARGET_DAYS[section]) if since else None)
            items.append(Item(section, case.organisation, case.reference, external_id, case.step, since, todo,
                              action, deadline))

        q = (select(Case, Person.external_id).join(Person, Person.id == Case.person_id)
             .where(Case.outcome == "crsa_referral", Case.commission_date.is_not(None),
                    or_(Case.commission_date >= today, Case.decision_rate.is_(None))))
        if organisation:
            q = q.where(Case.organisation == organisation)
        for case, external_id in s.execute(q):
            if case.commission_date >= today:
                todo = f"séance du {case.commission_date:%d/%m/%Y}"
            else:
                todo = (f"séance du {case.commission_date:%d/%m/%Y} passée : enregistrer la décision du Président "
                        f"(relance event sanction_decided {external_id} --rate --months --from), ou rien si "
                        "aucune suspension n'est décidée")
            items.append(Item("commission", case.organisation, case.reference, external_id, case.step,
                              case.commission_date, todo,
                              "commission" if case.commission_date >= today else "sanction_decided",
                              case.commission_date))
    for r in replies.pending(app, organisation):
        items.append(Item("replies", r.organisation or app.territory.department.review_organisations.default,
                          r.case_reference or "?", r.external_id or "?", None,
                          app.calendar.local_date(r.received_at),
                          f"réponse reçue — à lire : transmise à {r.forwarded_to} ; puis relance replies read {r.id}",
                          "reply", app.calendar.local_date(r.received_at) + dt.timedelta(days=TARGET_DAYS["replies"]),
                          r.id))
    for m in rdv_matches.pending(app, organisation):  # RDV-Solidarités: a participant nobody recognised
        when = f" du {app.calendar.local(m.starts_at):%d/%m/%Y %H:%M}" if m.starts_at else ""
        received = app.calendar.local_date(m.received_at)
        items.append(Item("rdvs", m.organisation, "?", "?", None, received,
                          f"rendez-vous RDV-Solidarités n° {m.rdv_id}{when} : {m.note or 'personne non reconnue'} ; "
                          f"puis relance rdvs link {m.id} MATRICULE (ou relance rdvs discard {m.id})",
                          "rdv_match", received + dt.timedelta(days=TARGET_DAYS["rdvs"]), match_id=m.id))
    warning = app.policy.delays.orientation_warning_days
    for w in orientation_report(app, now):
        if w.days_left > warning or (organisation and w.organisation != organisation):
            continue
        left = days_left(w.days_left)
        items.append(Item("orientation", w.organisation, w.case_reference, w.external_id, w.step, w.received_on,
                          f"orienter avant le {w.deadline:%d/%m/%Y} ({left})", "reoriented", w.deadline))
    order = list(SECTIONS)
    items.sort(key=lambda i: (i.organisation or "", order.index(i.section), i.since or dt.date.min,
                              i.case_reference))
    return items
