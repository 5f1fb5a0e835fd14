"""What waits for an agent: the cases that need a human, per organisation.

The engine never passes a human gate on its own. A case waits for an agent
when:

* ``review``: a review decision (``sanction_review``: look for a legitimate
  reason, then ``review_decision proceed | legitimate_reason | close``;
  ``observations_review`` after the notice: ``refer | legitimate_reason | close``);
* ``task``: a task, such as the phone follow-up of a person not registered
  with France Travail (``phone_followup_done``);
* ``held``: the case is blocked: the address came back (NPAI), no LRAR
  receipt, no convocation slot, a cancelled convocation, no letter could
  reach the person;
* ``orientation``: the person still has no orientation and the 6-week
  deadline is near or past (:mod:`worker.services.orientation`).

Also listed, for the agenda, ``commission``: the cases referred to a coming RSA
commission session.

:func:`agenda` returns them as :class:`Item` (case reference, external id,
organisation, since when, what to do: in French). ``relance agenda`` prints
them; the agents' daily digest (:mod:`worker.services.digests`) sends them. No name and no contact detail:
agents find the person by the external id in their own tools.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import select

from worker.adapters.store.models import Case, Person
from worker.adapters.store.session import session_scope
from worker.domain.describe import days_left
from worker.services.orientation import report as orientation_report

SECTIONS = {
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
    todo: str  # what to do, in French

    def as_json(self) -> dict:
        return {**dataclasses.asdict(self), "since": self.since.isoformat() if self.since else None}


def _hold_text(reason: str | None) -> str:
    code = (reason or "").split(":", 1)[0]
    text = HOLDS.get(code, f"bloqué ({reason})")
    step = (reason or "").split(":", 1)[1] if ":" in (reason or "") else None
    return f"{text} ; avant l'étape {step}" if step else text


def agenda(app, now: dt.datetime, organisation: str | None = None) -> list[Item]:
    """The cases waiting for an agent (and the coming commission), by organisation then section."""
    today = app.calendar.local_date(now)
    items: list[Item] = []
    with session_scope(app.db_url) as s:
        q = (select(Case, Person.external_id).join(Person, Person.id == Case.person_id)
             .where(Case.status == "active", Case.phase.in_(("review", "task", "held"))))
        if organisation:
            q = q.where(Case.organisation == organisation)
        for case, external_id in s.execute(q):
            since = app.calendar.local_date(case.step_entered_at) if case.step_entered_at else None
            if case.phase == "review" and case.notice_on is not None:
                todo = (f"réponse après le préavis ({case.step}) : lire les observations ou le motif, puis "
                        f"relance event review_decision {external_id} --decision refer|legitimate_reason|close")
            elif case.phase == "review":
                todo = (f"décision d'examen ({case.step}) : chercher un motif légitime, puis "
                        f"relance event review_decision {external_id} --decision proceed|legitimate_reason|close "
                        "(proceed : --rate et --months de la suspension envisagée)")
            elif case.phase == "task":
                todo = f"appel de suivi ({case.step}), puis relance event phone_followup_done {external_id}"
            else:
                todo = _hold_text(case.hold_reason)
            items.append(Item(case.phase, case.organisation, case.reference, external_id, case.step, since, todo))

        q = (select(Case, Person.external_id).join(Person, Person.id == Case.person_id)
             .where(Case.outcome == "crsa_referral", Case.commission_date >= today))
        if organisation:
            q = q.where(Case.organisation == organisation)
        for case, external_id in s.execute(q):
            items.append(Item("commission", case.organisation, case.reference, external_id, case.step,
                              case.commission_date, f"séance du {case.commission_date:%d/%m/%Y}"))
    warning = app.policy.delays.orientation_warning_days
    for w in orientation_report(app, now):
        if w.days_left > warning or (organisation and w.organisation != organisation):
            continue
        left = days_left(w.days_left)
        items.append(Item("orientation", w.organisation, w.case_reference, w.external_id, w.step, w.received_on,
                          f"orienter avant le {w.deadline:%d/%m/%Y} ({left})"))
    order = list(SECTIONS)
    items.sort(key=lambda i: (i.organisation or "", order.index(i.section), i.since or dt.date.min,
                              i.case_reference))
    return items
