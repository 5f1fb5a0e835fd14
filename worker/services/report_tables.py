"""The report's tables (:mod:`worker.services.report`), each from the cohort of droits or from the
period's activity (:mod:`worker.services.report_data`). Definitions: ``docs/indicators.md``."""
from __future__ import annotations

import datetime as dt
from collections import Counter

from worker.domain import describe
from worker.domain.indicators import SHARE_DAYS, delay_stats, month_label, month_of, ratio
from worker.services.report_data import Activity, Droit, Scope
from worker.services.report_model import Column, Table

PATHS = {"cd": "parcours CD", "ft": "France Travail, inscrits", "ft_unregistered": "France Travail, non inscrits",
         "ml": "Mission locale"}
ROUTE_OF = {"cd": "cd", "ft": "ft", "ft_unregistered": "ft", "ml": "ml"}  # path or orientation -> route
ROUTES = {"cd": "Conseil départemental (CDAS / CCAS)", "ft": "France Travail", "ml": "Mission locale"}
CHANNELS = ("letter", "sms", "email")
STATUSES = ("pending", "sending", "sent", "dispatched", "delivered", "returned", "failed", "temporary-failure",
            "technical-failure", "cancelled")
NOT_HANDLED = ("pending", "sending", "cancelled")
EVENTS = (("ar_signed", "accusés de réception du préavis signés"),
          ("ar_unclaimed", "préavis non réclamés (avis de passage)"),
          ("observations_received", "observations reçues"), ("hearing_requested", "demandes à être entendu(e)"),
          ("sanction_decided", "décisions de suspension (après la commission)"),
          ("sanction_lifted", "levées de suspension"))
ORIENTATION = ("entry", "in_time", "late", "overdue", "running", "closed")


class Row:
    """One droit of the cohort and its delays in days (None: not yet)."""

    __slots__ = ("d", "month", "age", "invitation", "attended", "orientation")

    def __init__(self, d: Droit, month, age, invitation, attended, orientation):
        self.d, self.month, self.age, self.invitation, self.attended = d, month, age, invitation, attended
        self.orientation = orientation  # (status, route, oriented on)


class Cohort:
    def __init__(self, app, scope: Scope, droits: list[Droit]):
        self.policy, self.cal, self.scope = app.policy, app.calendar, scope
        self.target = app.policy.delays.first_invitation_target_days
        self.rows = [self._row(d) for d in sorted(droits, key=lambda d: (d.opened_on, d.person_id))]

    def days(self, at: dt.datetime | None, d: Droit) -> int | None:
        return None if at is None else (self.cal.local_date(at) - d.opened_on).days

    def _row(self, d: Droit) -> Row:
        return Row(d, month_of(d.opened_on), (self.scope.today - d.opened_on).days,
                   self.days(d.first_invitation_at, d), self.days(d.first_attended_at, d), self.orientation_of(d))

    def orientation_of(self, d: Droit) -> tuple[str, str | None, dt.date | None]:
        """(status, route, oriented on): entry (the flux brought it), in_time / late (recorded by a
        re-orientation within / after the 6 weeks), closed (left before the deadline without one),
        overdue (none, deadline passed), running (none yet, deadline to come)."""
        received = self.cal.local_date(d.received_at)
        deadline = received + dt.timedelta(days=self.policy.delays.orientation_deadline_days)
        if d.path != self.policy.routing.get("", "cd"):
            return "entry", ROUTE_OF.get(d.path, d.path), received
        if d.reoriented is not None:
            on = self.cal.local_date(d.reoriented[0])
            return ("in_time" if on <= deadline else "late"), ROUTE_OF.get(d.reoriented[1], d.reoriented[1]), on
        if d.orientation:
            return "entry", ROUTE_OF.get(d.orientation, d.orientation), received
        if not d.active and d.closed_at is not None and self.cal.local_date(d.closed_at) <= deadline:
            return "closed", None, None
        return ("overdue" if self.scope.today > deadline else "running"), None, None

    def on_time(self, rows=None):
        return [r for r in (self.rows if rows is None else rows) if not r.d.late]


def _by(counter: Counter, index: int, keep=lambda key: True) -> Counter:
    """``counter`` summed by the ``index``-th part of its keys, over the keys ``keep`` accepts."""
    out: Counter = Counter()
    for key, n in counter.items():
        if keep(key):
            out[key[index]] += n
    return out


def _first_key(r: Row) -> tuple[str, str] | None:
    a = r.d.first_appointment
    return None if a is None else (a.kind, a.step or "")


def _attendance(rows) -> tuple[int, int]:
    """(attended, attended + missed or unconfirmed) over the first appointments of ``rows``."""
    statuses = [r.d.first_appointment.status for r in rows if r.d.first_appointment is not None]
    held = sum(1 for s in statuses if s in ("attended", "missed", "unconfirmed"))
    return statuses.count("attended"), held


def _delay_row(label, rows, attr):
    stats = delay_stats([(getattr(r, attr), r.age) for r in rows])
    return [label, stats.cohort, stats.reached, stats.not_yet, stats.median, stats.p90,
            *[stats.share(n) for n in SHARE_DAYS]]


def _orientation_counts(rows) -> Counter:
    return Counter(r.orientation[0] for r in rows)


def _six_weeks(c: Counter) -> float | None:
    return ratio(c["entry"] + c["in_time"], c["entry"] + c["in_time"] + c["late"] + c["overdue"])


def summary(cohort: Cohort, act: Activity) -> Table:
    rows = cohort.rows
    on_time = cohort.on_time()
    inv = delay_stats([(r.invitation, r.age) for r in on_time])
    att = delay_stats([(r.attended, r.age) for r in on_time])
    attended, held = _attendance(rows)
    orient = _orientation_counts(rows)
    late = sum(1 for r in rows if r.d.late)
    returned = sum(1 for r in rows if r.d.letter_returned)
    w15 = next(w for w in inv.within if w.days == SHARE_DAYS[0])
    w30 = next(w for w in att.within if w.days == SHARE_DAYS[1])
    data = [
        ["Entrants (droits ouverts soumis aux droits et devoirs)", len(rows), None, None],
        ["dont droits reçus en retard (après l'objectif de 15 jours)", late, None, ratio(late, len(rows))],
        ["Délai médian de l'ouverture du droit à la 1re invitation (droits reçus à temps)", None, inv.median, None],
        [f"Invités dans les {SHARE_DAYS[0]} jours (droits reçus à temps)", w15.count, None, w15.share],
        ["Délai médian jusqu'au 1er rendez-vous honoré (droits reçus à temps)", None, att.median, None],
        [f"1er rendez-vous honoré dans les {SHARE_DAYS[1]} jours (droits reçus à temps)", w30.count, None, w30.share],
        ["Présence au premier rendez-vous", attended, None, ratio(attended, held)],
        ["Orientés dans les 6 semaines", orient["entry"] + orient["in_time"], None, _six_weeks(orient)],
        ["Entrants dont un courrier est revenu (NPAI)", returned, None, ratio(returned, len(rows))],
        ["Renvois en commission RSA (dans la période)", act.steps.get("crsa_referral", 0), None, None],
        ["Décisions de suspension (dans la période)", sum(v for k, v in act.events.items() if k[0] ==
                                                          "sanction_decided"), None, None],
    ]
    return Table("synthese", "Chiffres clés", [Column("indicator", "Indicateur", "text"), Column("count", "Nombre"),
                                               Column("days", "Jours", "days"), Column("share", "Part", "pct")], data)


def entrants_by_month(cohort: Cohort, no_duties: Counter) -> Table:
    paths = list(cohort.policy.paths)
    counts = Counter((r.month, r.d.path) for r in cohort.rows)
    late = Counter(r.month for r in cohort.rows if r.d.late)
    total = Counter(r.month for r in cohort.rows)
    rows = [[month_label(m), total[m], late[m], *[counts[(m, p)] for p in paths], no_duties[m]]
            for m, _lo, _hi in cohort.scope.months]
    rows.append(["Total", sum(total.values()), sum(late.values()), *[sum(v for k, v in counts.items() if k[1] == p)
                                                                     for p in paths], sum(no_duties.values())])
    return Table("entrants_mois", "Entrants par mois d'ouverture du droit et par parcours",
                 [Column("month", "Mois", "text"), Column("entrants", "Entrants"),
                  Column("late", "dont reçus en retard"), *[Column(f"path_{p}", PATHS.get(p, p)) for p in paths],
                  Column("no_duties", "Hors droits et devoirs (non suivis)")], rows,
                 "Un entrant est un droit ouvert dans le mois (date d'ouverture du droit) d'une personne soumise aux "
                 "droits et devoirs ; ses dossiers successifs (réorientation, nouvelle adresse) comptent une fois, "
                 "dans le parcours de son premier dossier. Mois sans entrant : 0.")


def entrants_by_organisation(cohort: Cohort) -> Table:
    paths = list(cohort.policy.paths)
    counts = Counter((r.d.organisation, r.d.path) for r in cohort.rows)
    orgs = sorted({r.d.organisation for r in cohort.rows})
    rows = [[org, sum(v for k, v in counts.items() if k[0] == org),
             sum(1 for r in cohort.rows if r.d.organisation == org and r.d.late),
             *[counts[(org, p)] for p in paths]] for org in orgs]
    return Table("entrants_organisation", "Entrants par organisation et par parcours",
                 [Column("organisation", "Organisation", "text"), Column("entrants", "Entrants"),
                  Column("late", "dont reçus en retard"), *[Column(f"path_{p}", PATHS.get(p, p)) for p in paths]],
                 rows, "L'organisation qui a reçu le droit (celle du premier dossier ; France Travail pour un dossier "
                       "qu'il a ensuite signalé au Département).")


def delays(cohort: Cohort) -> Table:
    on_time = cohort.on_time()
    late = [r for r in cohort.rows if r.d.late]
    rows = [_delay_row("Ouverture du droit → 1re invitation envoyée (droits reçus à temps)", on_time, "invitation"),
            _delay_row("Ouverture du droit → 1re invitation envoyée (droits reçus en retard)", late, "invitation"),
            _delay_row("Ouverture du droit → 1er rendez-vous honoré (droits reçus à temps)", on_time, "attended"),
            _delay_row("Ouverture du droit → 1er rendez-vous honoré (droits reçus en retard)", late, "attended")]
    return Table("delais", "Délais depuis l'ouverture du droit (jours)",
                 [Column("indicator", "Délai", "text"), Column("droits", "Droits"), Column("reached", "Avec le fait"),
                  Column("not_yet", "Pas encore"), Column("median", "Médiane (jours)", "days"),
                  Column("p90", "90e centile (jours)", "days"),
                  *[Column(f"within_{n}", f"Part dans les {n} jours", "pct") for n in SHARE_DAYS]], rows,
                 "Médiane et 90e centile parmi les droits qui ont le fait. Part dans les N jours : parmi les droits "
                 "ouverts depuis au moins N jours (ou dont le fait a déjà eu lieu). Les droits reçus en retard (le "
                 f"flux est arrivé plus de {cohort.target} jours après l'ouverture) sont comptés à part.")


def monthly(cohort: Cohort) -> Table:
    rows = []
    for m, _lo, _hi in cohort.scope.months:
        month_rows = [r for r in cohort.rows if r.month == m]
        on_time = cohort.on_time(month_rows)
        inv = delay_stats([(r.invitation, r.age) for r in on_time])
        att = delay_stats([(r.attended, r.age) for r in on_time])
        attended, held = _attendance(month_rows)
        rows.append([month_label(m), len(month_rows), len(month_rows) - len(on_time), inv.median, inv.p90,
                     inv.share(SHARE_DAYS[0]), att.median, att.share(SHARE_DAYS[1]), ratio(attended, held)])
    return Table("mois", "Par mois d'ouverture du droit",
                 [Column("month", "Mois", "text"), Column("entrants", "Entrants"), Column("late", "dont en retard"),
                  Column("invitation_median", "Délai médian 1re invitation (jours)", "days"),
                  Column("invitation_p90", "90e centile 1re invitation (jours)", "days"),
                  Column("invited_15", f"Part invités dans les {SHARE_DAYS[0]} jours", "pct"),
                  Column("attended_median", "Délai médian 1er RDV honoré (jours)", "days"),
                  Column("attended_30", f"Part 1er RDV honoré dans les {SHARE_DAYS[1]} jours", "pct"),
                  Column("attendance", "Présence au 1er RDV", "pct")], rows,
                 "Délais et parts : droits reçus à temps. Présence : tous les droits du mois dont le premier "
                 "rendez-vous a eu lieu (honoré, manqué ou passé sans présence enregistrée).")


def appointments(act: Activity) -> Table:
    rows = []
    for kind, label in (("booked", "Pris par la personne"), ("convocation", "Fixés par convocation"), (None, "Total")):
        c = Counter()
        for (k, status, excused), n in act.appointments.items():
            if kind is None or k == kind:
                c["excused" if status == "cancelled" and excused else status] += n
        held = c["attended"] + c["missed"] + c["unconfirmed"]
        rows.append([label, sum(c.values()), c["attended"], c["missed"], c["unconfirmed"], c["excused"],
                     c["cancelled"], c["scheduled"], ratio(c["attended"], held)])
    return Table("rendez_vous", "Rendez-vous dont la date tombe dans la période",
                 [Column("kind", "Rendez-vous", "text"), Column("total", "Total"), Column("attended", "Honorés"),
                  Column("missed", "Manqués (absence déclarée)"),
                  Column("unconfirmed", "Passés sans présence enregistrée"),
                  Column("excused", "Excusés (motif légitime)"), Column("cancelled", "Annulés (autres)"),
                  Column("scheduled", "À venir ou présence à confirmer"),
                  Column("attendance", "Taux de présence", "pct")],
                 rows, "Taux de présence : honorés / (honorés + manqués + passés sans présence enregistrée). Excusé : "
                       "annulé parce qu'un motif légitime a été enregistré pendant que le rendez-vous était fixé.")


def first_appointments(cohort: Cohort) -> Table:
    order = []
    for path in cohort.policy.paths.values():
        for step in path.steps:
            for key in (("booked", step.id), ("convocation", step.id)):
                if key not in order:
                    order.append(key)
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in cohort.rows:
        key = _first_key(r)
        if key is not None:
            groups.setdefault(key, []).append(r)
    keys = [k for k in order if k in groups] + sorted(k for k in groups if k not in order)
    with_first = sum(len(v) for v in groups.values())
    rows = []
    for kind, step in keys + [(None, None)]:
        rs = [r for v in groups.values() for r in v] if kind is None else groups[(kind, step)]
        attended, held = _attendance(rs)
        if kind is None:
            label = "Tous les premiers rendez-vous"
        elif kind == "convocation":
            label = f"Fixé par la {describe.step_label(step)}"
        else:
            label = f"Pris par la personne à l'étape « {describe.step_label(step)} »"
        rows.append([label, len(rs), ratio(len(rs), with_first), attended, held - attended, len(rs) - held,
                     ratio(attended, held)])
    rows.append(["Pas encore de rendez-vous", len(cohort.rows) - with_first,
                 ratio(len(cohort.rows) - with_first, len(cohort.rows)), None, None, None, None])
    return Table("premier_rdv", "Premier rendez-vous des entrants : à quel moment, et présence",
                 [Column("moment", "Premier rendez-vous", "text"), Column("droits", "Droits"),
                  Column("share", "Part", "pct"), Column("attended", "Honorés"),
                  Column("absent", "Manqués ou sans présence enregistrée"),
                  Column("pending", "À venir ou à confirmer"), Column("attendance", "Taux de présence", "pct")], rows,
                 "Le premier rendez-vous non annulé de chaque droit, par l'étape du dossier quand il a été pris ou "
                 "fixé. Part : parmi les droits qui ont un rendez-vous (« Pas encore » : parmi tous les entrants).")


def procedure(act: Activity) -> Table:
    rows = [[f"Étape : {describe.step_label(step)}", act.steps.get(step, 0)]
            for step in ("invitation_1", "invitation_2", "phone_followup", "convocation", "ft_convocation",
                         "ft_warning", "ft_report", "sanction_review", "pre_sanction_notice", "observations_review",
                         "crsa_referral")]
    rows += [[f"Événement : {label}", sum(v for k, v in act.events.items() if k[0] == kind)] for kind, label in EVENTS]
    return Table("procedure", "Relances, convocations et procédure : dans la période",
                 [Column("what", "Étape ou événement", "text"), Column("count", "Nombre")], rows,
                 "Étape : dossiers entrés à cette étape dans la période (journal des étapes). Événement : "
                 "événements enregistrés et appliqués dans la période.")


def reviews(act: Activity) -> Table:
    c = _by(act.events, 1, lambda k: k[0] == "review_decision")
    total = sum(c.values())
    rows = [[describe.DECISIONS.get(d, d), c[d], ratio(c[d], total)] for d in describe.DECISIONS]
    rows.append(["Total", total, ratio(total, total)])
    return Table("examens", "Décisions des agents aux examens (avant sanction, observations)",
                 [Column("decision", "Décision", "text"), Column("count", "Nombre"), Column("share", "Part", "pct")],
                 rows)


def outcomes(act: Activity) -> Table:
    ordered = sorted(act.outcomes.items(), key=lambda x: (-x[1], x[0] or ""))
    rows = [[describe.OUTCOMES.get(o, o or "—"), n] for o, n in ordered]
    rows.append(["Total", sum(act.outcomes.values())])
    return Table("sorties", "Dossiers clos dans la période, par issue",
                 [Column("outcome", "Issue", "text"), Column("count", "Dossiers")], rows,
                 "Un dossier repris dans un nouveau dossier (réorientation, nouvelle adresse, après un motif légitime) "
                 "est clos avec cette issue ; le droit, lui, continue.")


def reasons(act: Activity, policy) -> Table:
    during = _by(act.events, 2, lambda k: k[0] == "legitimate_reason")
    review = _by(act.events, 2, lambda k: k[0] == "review_decision" and k[1] == "legitimate_reason")
    cats = policy.legitimate_reasons.categories
    keys = list(cats) + sorted(k for k in set(during) | set(review) if k not in cats)
    rows = [[cats[k].label if k in cats else (k or "non précisée"), during[k], review[k], during[k] + review[k]]
            for k in keys]
    rows.append(["Total", sum(during.values()), sum(review.values()), sum(during.values()) + sum(review.values())])
    return Table("motifs_legitimes", "Motifs légitimes enregistrés dans la période, par catégorie",
                 [Column("category", "Catégorie", "text"), Column("during", "Pendant le parcours"),
                  Column("review", "Retenus à l'examen"), Column("total", "Total")], rows)


def orientation(cohort: Cohort) -> Table:
    by_route: dict[str | None, Counter] = {}
    for r in cohort.rows:
        by_route.setdefault(r.orientation[1], Counter())[r.orientation[0]] += 1
    routes = [k for k in ROUTES if k in by_route] + sorted(k for k in by_route if k and k not in ROUTES)
    rows = []
    for route in routes + [None, "all"]:
        c = Counter()
        for k, v in by_route.items():
            if route == "all" or k == route:
                c.update(v)
        label = {"all": "Ensemble", None: "Sans orientation enregistrée"}.get(route) or ROUTES.get(route, route)
        rows.append([label, *[c[s] for s in ORIENTATION], _six_weeks(c) if route is not None else None])
    return Table("orientation", "Orientation dans les 6 semaines, par orientation",
                 [Column("route", "Orientation", "text"), Column("entry", "Orientés à l'entrée (flux)"),
                  Column("in_time", "Orientés ensuite, dans les 6 semaines"),
                  Column("late", "Orientés après 6 semaines"), Column("overdue", "Non orientés, échéance passée"),
                  Column("running", "Non orientés, délai en cours"),
                  Column("closed", "Sortis avant l'échéance sans orientation"),
                  Column("share", "Part orientés dans les 6 semaines", "pct")], rows,
                 "Échéance : 6 semaines après la réception du flux (CASF D262-65-2). Une orientation est datée par "
                 "l'événement de réorientation qui l'enregistre ; celle que le flux apporte compte à l'entrée. Part : "
                 "(à l'entrée + dans les 6 semaines) / (orientés + non orientés échéance passée).")


def messages(act: Activity) -> Table:
    rows = []
    for channel in (*CHANNELS, None):
        c = _by(act.messages, 1, lambda k: channel is None or k[0] == channel)
        rows.append([describe.CHANNELS.get(channel, "Total"), *[c[s] for s in STATUSES], sum(c.values())])
    labels = {**describe.MESSAGE_STATUSES, "temporary-failure": "échec temporaire (nouvel essai)"}
    return Table("messages", "Messages prévus dans la période, par canal et statut actuel",
                 [Column("channel", "Canal", "text"), *[Column(s, labels.get(s, s)) for s in STATUSES],
                  Column("total", "Total")], rows)


def failures(act: Activity) -> Table:
    rows = []
    for channel in CHANNELS:
        c = _by(act.messages, 1, lambda k: k[0] == channel)
        handled = sum(v for s, v in c.items() if s not in NOT_HANDLED)
        rows.append([describe.CHANNELS[channel], handled, c["failed"], ratio(c["failed"], handled),
                     c["technical-failure"], ratio(c["technical-failure"], handled),
                     c["returned"] if channel == "letter" else None,
                     ratio(c["returned"], handled) if channel == "letter" else None])
    return Table("echecs", "Échecs et courriers revenus (NPAI), messages prévus dans la période",
                 [Column("channel", "Canal", "text"), Column("handled", "Traités"),
                  Column("failed", "Échecs définitifs"), Column("failed_rate", "Taux d'échec définitif", "pct"),
                  Column("technical", "Échecs techniques"), Column("technical_rate", "Taux d'échec technique", "pct"),
                  Column("returned", "Revenus (NPAI)"), Column("returned_rate", "Taux NPAI", "pct")], rows,
                 "Traités : ni prévus, ni en cours d'envoi, ni annulés. Échec définitif : numéro, adresse ou e-mail "
                 "refusé ; échec technique : panne ou refus du fournisseur, visible des exploitants.")


def messages_by_month(act: Activity, scope: Scope) -> Table:
    rows = []
    for i, (m, _lo, _hi) in enumerate(scope.months):
        counts = [act.sent_by_month.get((i, ch), 0) for ch in CHANNELS]
        rows.append([month_label(m), *counts, sum(counts)])
    return Table("messages_mois", "Messages envoyés par mois et par canal",
                 [Column("month", "Mois", "text"), *[Column(ch, describe.CHANNELS[ch]) for ch in CHANNELS],
                  Column("total", "Total")], rows,
                 "Remis au canal dans le mois : courrier produit, SMS ou e-mail confié au fournisseur.")
