"""The evaluation's data (Annexe E of the convention): ``relance export evaluation FILE --purpose "…"``.

One row per person and droit of the experiment (the report's cohort, :mod:`worker.services.report_data`:
droits opened in the period, the stock's people excluded), **pseudonymised**: no name, no NIR, no
address, no phone or e-mail, no matricule — a keyed pseudonym (HMAC-SHA256 of the person's internal id,
``RELANCE_EVALUATION_KEY``: the same person keeps it from one export to the next, and nobody without
the key can recompute it from an identity), sex, year of birth, age at the droit, postcode. Then the
entry and exit dates and each action with its date, all from the stored facts. The fields the
project does not hold are columns marked « non détenu » in every row (:data:`NOT_HELD_COLUMNS`),
never filled in.

Refused without a purpose (``--purpose``) or a proper key; the file is written whole, mode 0600; the
export is recorded in the audit log (who, when, the period, how many people and rows, the purpose)
— never a pseudonym, never a row.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
from pathlib import Path

from sqlalchemy import select

from worker.adapters import files, workbook
from worker.adapters.store import audit
from worker.adapters.store.models import Appointment, AuditEntry, Case, InboundEvent, Message, Person
from worker.adapters.store.session import session_scope
from worker.domain import describe
from worker.domain.indicators import age_years
from worker.services import report, report_data
from worker.services.errors import ServiceError
from worker.services.report_tables import PATHS, ROUTES, Cohort

NOT_HELD = "non détenu"
MIN_PURPOSE = 10
ORIENTATION_STATUS = {"entry": "à l'entrée (flux)", "in_time": "dans les 6 semaines", "late": "après 6 semaines",
                      "overdue": "non orienté, échéance passée", "running": "non orienté, délai en cours",
                      "closed": "sorti avant l'échéance sans orientation"}
# (column, what it is, where it comes from): the dictionary sheet of the export.
COLUMNS = (
    ("pseudonyme", "Pseudonyme de la personne (même personne, même pseudonyme d'un export à l'autre)",
     "HMAC-SHA256 de l'identifiant interne, clé RELANCE_EVALUATION_KEY"),
    ("sexe", "Sexe (F, M ou vide)", "flux"),
    ("annee_naissance", "Année de naissance", "flux (date de naissance : l'année seule)"),
    ("age_ouverture_droit", "Âge révolu à l'ouverture du droit", "flux"),
    ("code_postal", "Code postal de l'adresse", "flux"),
    ("date_ouverture_droit", "Date d'ouverture du droit (entrée)", "flux"),
    ("date_reception_flux", "Date à laquelle le flux a apporté le droit", "premier dossier du droit"),
    ("droit_recu_en_retard", "Flux reçu après l'objectif de la 1re invitation (oui/non)", "premier dossier"),
    ("organisation", "Organisation qui a reçu le droit", "premier dossier"),
    ("parcours_entree", "Parcours du premier dossier", "premier dossier"),
    ("orientation", "Orientation", "réorientation enregistrée, sinon flux"),
    ("orientation_delai", "Orientation au regard des 6 semaines", "docs/indicators.md"),
    ("date_orientation", "Date de l'orientation", "réorientation enregistrée, sinon réception du flux"),
    ("date_premiere_invitation", "1re invitation envoyée", "messages"),
    ("date_relance", "1re relance envoyée (2e invitation, dernier rappel France Travail)", "messages"),
    ("date_convocation", "1re convocation envoyée", "messages"),
    ("date_premier_rdv", "Date du premier rendez-vous non annulé", "rendez-vous"),
    ("premier_rdv_fixe_par", "Premier rendez-vous pris par la personne ou fixé par convocation", "rendez-vous"),
    ("statut_premier_rdv", "Issue du premier rendez-vous", "rendez-vous"),
    ("date_premier_rdv_honore", "Premier rendez-vous honoré (première action d'accompagnement)", "rendez-vous"),
    ("nb_rdv_honores", "Rendez-vous honorés", "rendez-vous"),
    ("nb_absences", "Rendez-vous manqués ou passés sans présence enregistrée", "rendez-vous"),
    ("motifs_legitimes", "Catégories des motifs légitimes enregistrés (jamais leur texte)", "événements"),
    ("courrier_revenu_npai", "Un courrier est revenu (NPAI) (oui/non)", "messages"),
    ("date_examen_sanction", "Entrée en examen avant sanction", "journal des étapes"),
    ("decision_examen", "Dernière décision d'examen", "événements"),
    ("date_preavis", "Préavis de sanction (LRAR) envoyé", "messages"),
    ("date_reception_preavis", "Date de réception du préavis", "dossier"),
    ("date_renvoi_commission", "Renvoi en commission RSA", "journal des étapes"),
    ("date_seance_commission", "Séance de la commission", "dossier"),
    ("suspension_taux", "Suspension décidée : taux (%)", "dossier"),
    ("suspension_duree_mois", "Suspension décidée : durée (mois)", "dossier"),
    ("suspension_debut", "Suspension décidée : début", "dossier"),
    ("date_levee", "Levée de la suspension", "dossier"),
    ("en_cours", "Le parcours est en cours (oui/non)", "dossiers"),
    ("date_sortie", "Sortie : clôture du dernier dossier du droit", "dossiers"),
    ("motif_sortie", "Issue du dernier dossier", "dossiers"),
)
# What the evaluation asks for and the project does not hold: a column « non détenu », never invented.
NOT_HELD_COLUMNS = (
    ("date_signature_contrat", "Signature du contrat d'engagement (CER, PPAE)"),
    ("situation_sortie", "Situation à la sortie (emploi, formation)"),
    ("niveau_formation", "Niveau de formation"),
)
RELANCE_STEPS = ("invitation_2", "ft_warning")
CONVOCATION_STEPS = ("convocation", "ft_convocation")


@dataclasses.dataclass(frozen=True)
class ExportResult:
    path: Path
    people: int
    rows: int


def pseudonym(key: bytes, person_id: int) -> str:
    return "P-" + hmac.new(key, b"relance-evaluation\0" + str(person_id).encode(), hashlib.sha256).hexdigest()[:20]


def _yes(value: bool) -> str:
    return "oui" if value else "non"


def _facts(s, scope, droits: dict) -> dict:
    """Per droit: messages sent by step, appointments, events, steps entered, the last case."""
    facts = {key: {"sent": {}, "appointments": [], "events": [], "steps": {}, "last": None} for key in droits}
    in_range = report_data.in_range(scope)

    def of(pid, opened_on):
        return facts.get((pid, opened_on))

    q = (select(Case.person_id, Case.droit_opened_on, Message.step, Message.sent_at)
         .join(Message, Message.case_id == Case.id).where(in_range, Message.sent_at.is_not(None)))
    for pid, opened_on, step, sent_at in s.execute(q):
        f = of(pid, opened_on)
        if f is not None and (step not in f["sent"] or sent_at < f["sent"][step]):
            f["sent"][step] = sent_at
    q = (select(Case.person_id, Case.droit_opened_on, Appointment.status)
         .join(Appointment, Appointment.case_id == Case.id).where(in_range))
    for pid, opened_on, status in s.execute(q):
        if (f := of(pid, opened_on)) is not None:
            f["appointments"].append(status)
    q = (select(Case.person_id, Case.droit_opened_on, InboundEvent.type, InboundEvent.at,
                InboundEvent.payload["decision"].as_string(), InboundEvent.payload["category"].as_string())
         .join(InboundEvent, InboundEvent.case_id == Case.id)
         .where(in_range, InboundEvent.status == "applied").order_by(InboundEvent.at, InboundEvent.id))
    for pid, opened_on, type_, at, decision, category in s.execute(q):
        if (f := of(pid, opened_on)) is not None:
            f["events"].append((type_, at, decision, category))
    q = (select(Case.person_id, Case.droit_opened_on, AuditEntry.data["to_step"].as_string(), AuditEntry.at)
         .join(AuditEntry, AuditEntry.case_id == Case.id).where(in_range, AuditEntry.kind == "step"))
    for pid, opened_on, step, at in s.execute(q):
        f = of(pid, opened_on)
        if f is not None and (step not in f["steps"] or at < f["steps"][step]):
            f["steps"][step] = at
    for case in s.execute(select(Case).where(in_range).order_by(Case.id)).scalars():
        if (f := of(case.person_id, case.droit_opened_on)) is not None:
            f["last"] = case
            if case.decision_rate is not None:
                f["decided"] = case
            if case.receipt_on is not None:
                f["receipt_on"] = case.receipt_on
            if case.commission_date is not None:
                f["commission_date"] = case.commission_date
    return facts


def _row(app, cohort: Cohort, key_bytes: bytes, d, person, f) -> list:
    cal = app.calendar

    def day(at):
        return None if at is None else cal.local_date(at)

    def first_of(steps):
        dates = [f["sent"][s] for s in steps if s in f["sent"]]
        return day(min(dates)) if dates else None

    status, route, oriented_on = cohort.orientation_of(d)
    first = d.first_appointment
    last, decided = f["last"], f.get("decided")
    reviews = [e for e in f["events"] if e[0] == "review_decision"]
    categories = [e[3] for e in f["events"] if e[3] and (e[0] == "legitimate_reason" or (
        e[0] == "review_decision" and e[2] == "legitimate_reason"))]
    labels = app.policy.legitimate_reasons.categories
    return [
        pseudonym(key_bytes, d.person_id), person.sex or None, person.birth_date.year if person.birth_date else None,
        age_years(person.birth_date, d.opened_on), person.postcode, d.opened_on, day(d.received_at), _yes(d.late),
        d.organisation, PATHS.get(d.path, d.path), ROUTES.get(route, route) if route else None,
        ORIENTATION_STATUS[status], oriented_on,
        day(d.first_invitation_at), first_of(RELANCE_STEPS), first_of(CONVOCATION_STEPS),
        day(first.at) if first else None,
        ({"booked": "la personne", "convocation": "convocation"}.get(first.kind, first.kind) if first else None),
        describe.APPOINTMENT_OUTCOMES.get(first.status, "à venir ou à confirmer") if first else None,
        day(d.first_attended_at), f["appointments"].count("attended"),
        sum(1 for s in f["appointments"] if s in ("missed", "unconfirmed")),
        " ; ".join(labels[c].label if c in labels else c for c in categories) or None, _yes(d.letter_returned),
        day(f["steps"].get("sanction_review")),
        describe.DECISIONS.get(reviews[-1][2], reviews[-1][2]) if reviews else None,
        first_of(("pre_sanction_notice",)), f.get("receipt_on"),
        day(f["steps"].get("crsa_referral")), f.get("commission_date"),
        decided.decision_rate if decided else None, decided.decision_months if decided else None,
        decided.decision_from if decided else None, decided.lifted_on if decided else None,
        _yes(d.active), None if d.active else day(d.closed_at),
        None if d.active or last is None else describe.OUTCOMES.get(last.outcome, last.outcome),
        *[NOT_HELD for _ in NOT_HELD_COLUMNS],
    ]


def export(app, path: Path, *, purpose: str, actor: str, now: dt.datetime, start: dt.date | None = None,
           end: dt.date | None = None) -> ExportResult:
    """Write the evaluation's file (``.xlsx`` or ``.csv``) and record the export in the audit log."""
    purpose = " ".join((purpose or "").split())
    if len(purpose) < MIN_PURPOSE:
        raise ServiceError("--purpose : dites en une phrase à quoi sert cet export (destinataire, finalité) ; "
                           "il est inscrit au journal d'audit")
    problem = app.settings.evaluation_key_problem()
    if problem:
        raise ServiceError(problem)
    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if kind not in ("xlsx", "csv"):
        raise ServiceError("FICHIER : extension .xlsx ou .csv attendue")
    if not path.parent.is_dir():
        raise ServiceError(f"dossier introuvable : {path.parent}")
    if path.is_dir():
        raise ServiceError(f"{path} est un dossier : donner le nom du fichier à écrire")
    scope = report.scope_for(app, now, start, end, None)
    with session_scope(app.db_url) as s:
        droits = report_data.droits(s, app.policy, scope)
        facts = _facts(s, scope, droits)
        ids = sorted({pid for pid, _d in droits})
        persons = {p.id: p for p in s.execute(select(Person).where(Person.id.in_(ids))).scalars()} if ids else {}
        cohort = Cohort(app, scope, list(droits.values()))
        key = app.settings.evaluation_key.encode()
        rows = [_row(app, cohort, key, r.d, persons[r.d.person_id], facts[(r.d.person_id, r.d.opened_on)])
                for r in cohort.rows]
    header = [c[0] for c in COLUMNS] + [c[0] for c in NOT_HELD_COLUMNS]
    if kind == "csv":
        data = workbook.csv_bytes(header, [[v.isoformat() if isinstance(v, dt.date) else v for v in row]
                                           for row in rows])
    else:
        data = workbook.xlsx_bytes(_sheets(app, header, rows, purpose, scope, now))
    people = len({r[0] for r in rows})
    written = False
    try:
        # The audit entry and the file together: no file without its entry (the entry is committed after
        # the file is written; a failed commit removes the file), no entry for a file that failed.
        with session_scope(app.db_url) as s:
            audit.append(s, at=now, kind="export", data={
                "export": "evaluation", "actor": actor, "purpose": purpose[:300], "people": people,
                "rows": len(rows), "droits_from": scope.start.isoformat(), "droits_until": scope.end.isoformat(),
                "format": kind})
            files.replace_file(path, data, files.PRIVATE_MODE)
            written = True
    except BaseException:
        if written:
            path.unlink(missing_ok=True)
        raise
    return ExportResult(path, people, len(rows))


def _sheets(app, header, rows, purpose, scope, now) -> list:
    about = [["Objet", "Données de l'évaluation (annexe E de la convention), pseudonymisées"],
             ["Finalité déclarée", purpose],
             ["Droits ouverts", f"du {scope.start:%d/%m/%Y} au {scope.end:%d/%m/%Y}"],
             ["Produit le", f"{app.calendar.local(now):%d/%m/%Y à %H:%M}"],
             ["Lignes", len(rows)], ["Personnes", len({r[0] for r in rows})],
             ["Pseudonymisation", "ni nom, ni NIR, ni adresse, ni téléphone, ni e-mail, ni matricule ; le "
                                  "pseudonyme est un HMAC-SHA256 avec une clé que le destinataire n'a pas"],
             ["Non détenu", "colonnes que le projet ne détient pas : « non détenu » dans chaque ligne, jamais "
                            "complétées"],
             ["Définitions", "docs/indicators.md du projet Relance"]]
    dictionary = [[c, what, source, "oui"] for c, what, source in COLUMNS]
    dictionary += [[c, what, "—", "non"] for c, what in NOT_HELD_COLUMNS]
    dates = {c[0] for c in COLUMNS if c[0].startswith(("date_", "suspension_debut"))}
    kinds = ["date" if h in dates else ("int" if h in ("annee_naissance", "age_ouverture_droit", "nb_rdv_honores",
                                                        "nb_absences", "suspension_taux",
                                                        "suspension_duree_mois") else "text") for h in header]
    return [workbook.Sheet("Lisez-moi", ["Élément", "Valeur"], about, ("text", "text"), (24, 110)),
            workbook.Sheet("Personnes", header, rows, kinds, [max(12, min(len(h) + 2, 26)) for h in header]),
            workbook.Sheet("Variables", ["Colonne", "Contenu", "Source", "Détenu"], dictionary, (),
                           (26, 70, 50, 8))]
