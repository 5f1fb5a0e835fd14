"""Sample rendering contexts following templates/README.md.

``sample_context(step)`` gives ordinary values; ``long=True`` gives long but
realistic ones (compound names, long organisation names and booking links, the
longest French day and month names) to check that SMS fit in two segments and
that letters still lay out. Plain dicts: Jinja reads ``org.name`` from a dict.
"""
from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")

# step -> channels that have a template
STEP_CHANNELS: dict[str, tuple[str, ...]] = {
    "invitation_1": ("letter", "sms", "email"),
    "invitation_2": ("letter", "sms", "email"),
    "convocation": ("letter", "sms", "email"),
    "rdv_reminder": ("sms", "email"),
    "pre_sanction_notice": ("letter", "sms"),
    "crsa_referral": ("letter", "sms"),
    "ft_convocation": ("letter", "sms", "email"),
    "ft_warning": ("letter", "sms", "email"),
    "sanction_decision": ("letter",),
    "sanction_lifting": ("letter",),
    "procedure_closed": ("letter",),
    # the stock campaign's first letter and e-mail (issue 14), in place of invitation_1's / ft_convocation's
    "campaign_invitation": ("letter", "email"),
    "campaign_convocation": ("letter", "email"),
}

# The campaign's templates render a message of this step (the context's `step`).
CAMPAIGN_STEPS = {"campaign_invitation": "invitation_1", "campaign_convocation": "ft_convocation"}
# What the campaign's templates say the appointment is for (config/campaign.yaml appointment_types):
# ordinary values, and the longest.
_CAMPAIGN = {
    "campaign_invitation": {
        "segment": "non_oriented", "appointment": "co_diagnostic", "label": "co-diagnostic",
        "name": "un co-diagnostic", "meet": None,
        "purpose": "Ce rendez-vous fait le point sur votre situation. Le Département et France Travail vous "
                   "reçoivent ensemble. Vous choisissez avec eux qui vous accompagnera."},
    "campaign_convocation": {
        "segment": "ft_registered", "appointment": "milestone", "label": "entretien d'étape",
        "name": "un entretien d'étape", "meet": None,
        "purpose": "Ce rendez-vous fait le point sur votre parcours. Vous regardez ce qui avance et ce qui "
                   "bloque. Vous préparez ensemble la suite."},
}
_LONG_CAMPAIGN = {
    "segment": "cd_contract_to_renew", "appointment": "contract_renewal", "label": "renouvellement de contrat",
    "name": "le renouvellement de votre contrat", "meet": "votre référente ou votre référent",
    "purpose": "Votre contrat d'engagement arrive à son terme. Ce rendez-vous fait le bilan de ce contrat. "
               "Vous fixez ensemble vos prochains objectifs."}

# Steps whose letters the Département issues (worker/services/message_content.DEPARTMENT_STEPS).
DEPARTMENT_STEPS = ("pre_sanction_notice", "crsa_referral", "sanction_decision", "sanction_lifting",
                    "procedure_closed")

STEP_CODES = {
    "invitation_1": "INV1",
    "invitation_2": "INV2",
    "convocation": "CONV",
    "rdv_reminder": "RAPP",
    "pre_sanction_notice": "PRES",
    "crsa_referral": "CRSA",
    "ft_convocation": "FTCONV",
    "ft_warning": "FTAV",
    "sanction_decision": "DEC",
    "sanction_lifting": "LEV",
    "procedure_closed": "CLOS",
    "campaign_invitation": "INV1",
    "campaign_convocation": "FTCONV",
}

_DEPARTMENT = {
    "name": "Département d'Ille-et-Vilaine",
    "short_name": "Département",
    "address": ["Hôtel du Département", "1 avenue de la Préfecture", "CS 24218", "35042 RENNES CEDEX"],
    "phone": "02 61 91 20 00",
    "email": "insertion-redon@example.org",
    "observations_service": {
        "name": "Service insertion du Pays de Redon et des Vallons de Vilaine",
        "address": ["12 rue des Douves", "35600 REDON"],
    },
    "signature": ("Pour le Président du Conseil départemental et par délégation, "
                  "Claire Morvan, Directrice de l'insertion"),
}

_LONG_DEPARTMENT = {
    "name": "Département d'Ille-et-Vilaine - Direction de l'insertion et des solidarités",
    "short_name": "Département d'Ille-et-Vilaine",
    "address": ["Hôtel du Département", "Direction de l'insertion et des solidarités", "1 avenue de la Préfecture",
                "CS 24218", "35042 RENNES CEDEX"],
    "phone": "02 61 91 20 00",
    "email": "observations-rsa.insertion-pays-de-redon-vilaine@example.org",
    "observations_service": {
        "name": "Service insertion et lutte contre les exclusions du Pays de Redon et des Vallons de Vilaine",
        "address": ["Service insertion et lutte contre les exclusions", "Espace social Jean-Baptiste Le Maréchal",
                    "12 boulevard des Douves-Saint-Nicolas", "35603 SAINT-NICOLAS-DE-REDON CEDEX"],
    },
    "signature": ("Pour le Président du Conseil départemental et par délégation, "
                  "Marie-Christine Le Bourdonnec-Kerjean, Directrice adjointe de l'insertion et des solidarités"),
}


def _fact(kind, day, label, channels, town, place, text):
    return {"kind": kind, "date": day, "label": label, "channels": channels, "town": town, "place": place,
            "text": text}

_ORGS = {
    "cd": {
        "code": "CDAS-REDON",
        "kind": "cd",
        "name": "Centre départemental d'action sociale du Pays de Redon",
        "short_name": "CDAS de Redon",
        "signatory": "La responsable du CDAS du Pays de Redon",
        "address": ["12 rue des Douves", "35600 REDON"],
        "phone": "02 61 91 10 10",
        "email": "cdas-redon@example.org",
        "booking_url": "https://rdv.example.org/cdas-redon",
    },
    "ft": {
        "code": "FT-REDON",
        "kind": "ft",
        "name": "France Travail - agence de Redon",
        "short_name": "France Travail Redon",
        "signatory": "Le directeur de l'agence France Travail de Redon",
        "address": ["8 avenue de la Gare", "35600 REDON"],
        "phone": "02 61 91 10 40",
        "email": "ft-redon@example.org",
        "booking_url": "https://rdv.example.org/ft-redon",
    },
    "ml": {
        "code": "ML-REDON",
        "kind": "ml",
        "name": "Mission locale du Pays de Redon",
        "short_name": "Mission locale de Redon",
        "signatory": "La directrice de la Mission locale du Pays de Redon",
        "address": ["1 quai Jean Bart", "35600 REDON"],
        "phone": "02 61 91 10 50",
        "email": "mission-locale-redon@example.org",
        "booking_url": "https://rdv.example.org/ml-redon",
    },
    "msa": {
        "code": "MSA-PORTES-BRETAGNE",
        "kind": "msa",
        "name": "MSA Portes de Bretagne",
        "short_name": "MSA Portes de Bretagne",
        "signatory": "Le travailleur social de la MSA Portes de Bretagne",
        "address": ["20 rue de Rennes", "35510 CESSON-SEVIGNE"],
        "phone": "02 61 91 10 60",
        "email": "action-sociale.msa-pb@example.org",
        "booking_url": "https://rdv.example.org/msa-portes-bretagne",
    },
}

_LONG_ORGS = {
    "cd": {
        "code": "CDAS-REDON-VALLONS",
        "kind": "cd",
        "name": "Centre départemental d'action sociale du Pays de Redon et des Vallons de Vilaine",
        "short_name": "CDAS Pays de Redon-Vilaine",
        "signatory": "La responsable du Centre départemental d'action sociale du Pays de Redon et des Vallons de Vilaine",
        "address": ["Espace social Jean-Baptiste Le Maréchal", "12 boulevard des Douves-Saint-Nicolas", "CS 40123", "35603 SAINT-NICOLAS-DE-REDON CEDEX"],
        "phone": "02 61 91 10 10",
        "email": "accueil-rsa.cdas-pays-de-redon-vallons@example.org",
        "booking_url": "https://rendez-vous.example.org/accompagnement/cdas-pays-de-redon-vilaine",
    },
    "ft": {
        "code": "FT-REDON-VALLONS",
        "kind": "ft",
        "name": "France Travail - agence de Redon et des Vallons de Vilaine",
        "short_name": "France Travail Redon-Vilaine",
        "signatory": "Le directeur de l'agence France Travail de Redon et des Vallons de Vilaine",
        "address": ["Parc d'activités de la Gare-Saint-Melaine", "8 avenue de la Gare", "35600 REDON"],
        "phone": "02 61 91 10 40",
        "email": "conseillers-rsa.ft-redon-vallons@example.org",
        "booking_url": "https://rendez-vous.example.org/accompagnement/france-travail-redon-vilaine",
    },
    "ml": {
        "code": "ML-REDON-VALLONS",
        "kind": "ml",
        "name": "Mission locale du Pays de Redon et des Vallons de Vilaine",
        "short_name": "Mission locale Redon-Vilaine",
        "signatory": "La directrice de la Mission locale du Pays de Redon et des Vallons de Vilaine",
        "address": ["Maison de l'emploi et de la formation", "1 quai Jean Bart", "35600 REDON"],
        "phone": "02 61 91 10 50",
        "email": "referents-rsa.mission-locale-redon-vallons@example.org",
        "booking_url": "https://rendez-vous.example.org/accompagnement/mission-locale-redon-vilaine",
    },
    "msa": {
        "code": "MSA-PORTES-BRETAGNE",
        "kind": "msa",
        "name": "Mutualité sociale agricole Portes de Bretagne - action sanitaire et sociale",
        "short_name": "MSA Portes de Bretagne",
        "signatory": "Le travailleur social de la Mutualité sociale agricole Portes de Bretagne",
        "address": ["20 rue de Rennes", "35510 CESSON-SEVIGNE"],
        "phone": "02 61 91 10 60",
        "email": "action-sociale.msa-portes-de-bretagne@example.org",
        "booking_url": "https://rendez-vous.example.org/accompagnement/msa-portes-de-bretagne-redon",
    },
}


# What the organisation's `convocation` block says about the appointment (config/territory.yaml):
# access, length, what to bring, who the person meets (worker/domain/policy.DEFAULT_MEET by kind).
_VENUES = {
    "cd": {"access": "À 5 minutes à pied de la gare de Redon. Bus ligne 1, arrêt Douves. Entrée de plain-pied.",
           "duration": 90,
           "meet": "une personne du CDAS (Département) et une personne de France Travail, ensemble"},
    "ft": {"access": "En face de la gare de Redon. Bus lignes 1 et 2, arrêt Gare. Entrée accessible en fauteuil.",
           "duration": 45, "meet": "une conseillère ou un conseiller France Travail"},
    "ml": {"access": "Sur le port, à 10 minutes à pied de la gare. Bus ligne 2, arrêt Port. Rez-de-chaussée.",
           "duration": 60, "meet": "une conseillère ou un conseiller de la Mission locale"},
    "msa": {"access": None, "duration": 60,
            "meet": "une travailleuse sociale ou un travailleur social de la MSA"},
}
_LONG_ACCESS = ("Dans la zone d'activités de la Gare-Saint-Melaine, à 15 minutes à pied de la gare SNCF. "
                "Car BreizhGo ligne 6, arrêt Maison de l'emploi. Parking gratuit devant le bâtiment. "
                "Ascenseur au fond du hall, à gauche.")
_BRING = ["pièce d'identité ou titre de séjour", "numéro d'allocataire CAF ou MSA", "CV si vous en avez un"]
_LONG_BRING = _BRING + ["diplômes et attestations de formation",
                        "tout document utile sur votre santé, votre logement ou la garde de vos enfants"]

# The information notice's controller (config/territory.yaml `privacy`).
_PRIVACY = {
    "department": {"controller": "Département d'Ille-et-Vilaine", "dpo_email": "dpo@ille-et-vilaine.example.org",
                   "dpo_address": ["Délégué à la protection des données", "1 avenue de la Préfecture", "CS 24218",
                                   "35042 RENNES CEDEX"],
                   "notice_url": "https://www.ille-et-vilaine.example.org/rsa-donnees",
                   "recipients": ("le Département, le CDAS ou le CCAS, France Travail, la Mission locale et, "
                                  "si besoin, la commission RSA")},
    "ft": {"controller": "France Travail", "dpo_email": "dpo@francetravail.example.org",
           "dpo_address": ["France Travail, Délégué à la protection des données", "1 avenue du Docteur Gley",
                           "75987 PARIS CEDEX 20"],
           "notice_url": "https://www.francetravail.example.org/donnees-personnelles",
           "recipients": "France Travail, le Département et, si besoin, la commission RSA"},
    "ml": {"controller": "Mission locale du Pays de Redon", "dpo_email": "dpo@mission-locale-redon.example.org",
           "dpo_address": ["Mission locale, Délégué à la protection des données", "1 quai Jean Bart", "35600 REDON"],
           "notice_url": "https://www.mission-locale-redon.example.org/donnees",
           "recipients": "la Mission locale, le Département, France Travail et, si besoin, la commission RSA"},
    "msa": {"controller": "MSA Portes de Bretagne", "dpo_email": "dpo@msa-portes-bretagne.example.org",
            "dpo_address": ["MSA Portes de Bretagne, Délégué à la protection des données", "20 rue de Rennes",
                            "35510 CESSON-SEVIGNE"],
            "notice_url": "https://www.msa-portes-bretagne.example.org/donnees",
            "recipients": "la MSA, le Département et, si besoin, la commission RSA"},
}
_LONG_PRIVACY_DEPARTMENT = {
    "controller": "Département d'Ille-et-Vilaine - Direction de l'insertion et des solidarités",
    "dpo_email": "delegue-protection-donnees.insertion@ille-et-vilaine.example.org",
    "dpo_address": ["Délégué à la protection des données", "Direction des affaires juridiques",
                    "1 avenue de la Préfecture", "CS 24218", "35042 RENNES CEDEX"],
    "notice_url": "https://www.ille-et-vilaine.example.org/solidarites/rsa/protection-des-donnees-personnelles",
}


def _default_kind(step: str) -> str:
    return "ft" if step.startswith("ft_") or step == "campaign_convocation" else "cd"


def sample_context(step: str, *, long: bool = False, kind: str | None = None, language: str = "fr",
                   large_print: bool = False) -> dict:
    """A complete context for ``step`` (every name of the contract is present).

    ``kind`` picks the organisation (``cd``, ``ft``, ``ml``, ``msa``); by default
    France Travail for ``ft_*`` steps, the CDAS otherwise. ``language`` (``fr``,
    ``en``, ``ar``) and ``large_print`` are the person's.
    """
    kind = kind or _default_kind(step)
    org = dict((_LONG_ORGS if long else _ORGS)[kind])
    org["address"] = list(org["address"])
    path = {"cd": "cd", "msa": "cd", "ft": "ft", "ml": "ml"}[kind]
    case_ref = "RL-012345" if long else "RL-000123"
    code = STEP_CODES.get(step, "MSG")

    if long:
        person = {
            "civility": "Madame, Monsieur",
            "first_name": "Marie-Héloïse",
            "last_name": "de La Villemarqué-Kerambrun",
            "matricule": "MSA35-0000000099999",
            "address_lines": [
                "Madame Marie-Héloïse de La Villemarqué-Kerambrun",
                "Chez Monsieur et Madame Le Goff-Trémeur",
                "Résidence des Grands Chênes, bâtiment C, appartement 142",
                "Lieu-dit La Croix-Saint-Melaine",
                "35600 SAINT-NICOLAS-DE-REDON",
            ],
        }
        droit = date(2025, 8, 20)
        today = date(2025, 9, 3)  # a Wednesday
        respond_by = date(2025, 9, 24)  # mercredi 24 septembre 2025
        appt_at = datetime(2025, 9, 24, 10, 30, tzinfo=PARIS)
        place = (
            "Centre départemental d'action sociale des Vallons de Vilaine, "
            "salle du rez-de-chaussée, 4 place de la Mairie, 35580 Guichen"
        )
        place_long_missed = place
        town = "35600 SAINT-NICOLAS-DE-REDON"
        facts = [
            _fact("message", date(2025, 8, 20), "invitation", ["courrier", "SMS", "e-mail"], town, None,
                  f"Le 20 août 2025 : invitation envoyée par courrier, SMS et e-mail, "
                  f"à {town}."),
            _fact("message", date(2025, 9, 3), "relance", ["courrier", "SMS", "e-mail"], town, None,
                  f"Le 3 septembre 2025 : relance envoyée par courrier, SMS et e-mail, "
                  f"à {town}."),
            _fact("message", date(2025, 9, 10), "convocation", ["courrier", "SMS"], town, None,
                  f"Le 10 septembre 2025 : convocation envoyée par courrier et SMS, "
                  f"à {town}."),
            _fact("missed", date(2025, 9, 24), "rendez-vous manqué", [], None, place_long_missed,
                  f"Le mercredi 24 septembre 2025 : vous n'êtes pas venu(e) au rendez-vous, {place_long_missed}."),
        ]
        measure = {"rate": 100, "months": 2, "repeat": True}
        decision = {"rate": 100, "months": 2, "start": date(2025, 11, 1)}
        lifted_on = date(2025, 11, 26)
        sanction = (
            "la suspension de 50 % du montant de votre RSA pendant une durée d'un mois, "
            "renouvelable si vous ne reprenez pas contact avec votre référent"
        )
        commission = {
            "name": "Commission RSA du Pays de Redon et des Vallons de Vilaine",
            "place": "Hôtel du Département, antenne de Redon, salle du conseil, 12 rue des Douves, 35600 Redon",
            "session_date": date(2025, 9, 18),
        }
    else:
        person = {
            "civility": "Madame",
            "first_name": "Julie",
            "last_name": "Martin",
            "address_lines": ["Madame Julie MARTIN", "5 rue des Lilas", "35600 REDON"],
            "matricule": "CAF35-0001001",
        }
        droit = date(2024, 5, 13)
        today = date(2024, 5, 20)
        respond_by = date(2024, 6, 4)
        appt_at = datetime(2024, 6, 3, 14, 30, tzinfo=PARIS)
        place = "CDAS du Pays de Redon, 12 rue des Douves, 35600 Redon"
        facts = [
            _fact("message", date(2024, 5, 13), "invitation", ["courrier", "SMS"], "35600 REDON", None,
                  "Le 13 mai 2024 : invitation envoyée par courrier et SMS, à 35600 REDON."),
            _fact("message", date(2024, 5, 20), "convocation", ["courrier", "SMS"], "35600 REDON", None,
                  "Le 20 mai 2024 : convocation envoyée par courrier et SMS, à 35600 REDON."),
            _fact("missed", date(2024, 6, 3), "rendez-vous manqué", [], None,
                  "CDAS du Pays de Redon, 12 rue des Douves, 35600 Redon",
                  "Le lundi 3 juin 2024 : vous n'êtes pas venue au rendez-vous, "
                  "CDAS du Pays de Redon, 12 rue des Douves, 35600 Redon."),
        ]
        measure = {"rate": 30, "months": 1, "repeat": False}
        decision = {"rate": 30, "months": 1, "start": date(2024, 7, 1)}
        lifted_on = date(2024, 7, 15)
        sanction = "la suspension de 30 % du montant de votre RSA pendant un mois"
        commission = {
            "name": "Commission RSA du Pays de Redon et des Vallons de Vilaine",
            "place": "Hôtel du Département, antenne de Redon, 12 rue des Douves, 35600 Redon",
            "session_date": date(2024, 6, 20),
        }

    if kind == "ft":
        place = (
            "Agence France Travail de Redon et des Vallons de Vilaine, 8 avenue de la Gare, 35600 Redon"
            if long else "Agence France Travail, 8 avenue de la Gare, 35600 Redon"
        )
    elif kind == "ml":
        place = (
            "Mission locale du Pays de Redon et des Vallons de Vilaine, 1 quai Jean Bart, 35600 Redon"
            if long else "Mission locale, 1 quai Jean Bart, 35600 Redon"
        )

    if step in DEPARTMENT_STEPS:
        issuer = dict(_LONG_DEPARTMENT if long else _DEPARTMENT)
    else:
        issuer = {"name": org["name"], "short_name": org["short_name"], "address": list(org["address"]),
                  "phone": org["phone"], "email": org["email"],
                  "observations_service": {"name": org["name"], "address": list(org["address"])},
                  "signature": org["signatory"]}

    ground = (
        "Vous n'êtes pas venue au rendez-vous de France Travail. Vous ne participez donc pas à votre "
        "accompagnement (article L262-37 du code de l'action sociale et des familles)."
        if path == "ft" else
        "Vous n'êtes pas venue à la convocation. Vous ne participez donc pas à votre accompagnement "
        "(article L262-37 du code de l'action sociale et des familles)."
    )

    person = dict(person, language=language, large_print=large_print)
    venue = dict(_VENUES[kind], place=place, bring=list(_LONG_BRING if long else _BRING))
    if long:
        venue.update(access=_LONG_ACCESS, duration=120)
    privacy = dict(_PRIVACY["department"] if kind in ("cd",) or step in DEPARTMENT_STEPS else _PRIVACY[kind])
    if long and (kind == "cd" or step in DEPARTMENT_STEPS):
        privacy.update(_LONG_PRIVACY_DEPARTMENT)
    if step in DEPARTMENT_STEPS:
        privacy["controller"] = issuer["name"]  # the Département's name, as its letterhead says
    privacy.update(source="la CAF ou la MSA", retention_months=24)

    # The booking link (issue 16): the messages carry the short link (org.booking_url); the CD organisation's
    # goes to RDV-Solidarités' page of its motif category (the letter's QR code and the e-mail's link).
    booking = {"url": org["booking_url"], "short": org["booking_url"], "category": None,
               "display": org["booking_url"].removeprefix("https://")}
    if kind == "cd":
        booking.update(url=("https://rdv-solidarites.example.org/prendre_rdv?departement=35"
                            "&motif_category_short_name=rsa_orientation&organisation_ids[]=412"),
                       category="rsa_orientation")

    has_respond_by = step in {"invitation_1", "invitation_2", "ft_warning", "campaign_invitation"}
    has_appointment = step in {"convocation", "ft_convocation", "rdv_reminder", "campaign_convocation"}
    campaign = dict(_LONG_CAMPAIGN if long else _CAMPAIGN[step]) if step in CAMPAIGN_STEPS else None
    return {
        "person": person,
        "org": org,
        "booking": booking,
        "case": {"reference": case_ref, "path": path, "droit_opened_on": droit},
        "message": {"reference": f"{case_ref}-{code}-L"},
        "step": CAMPAIGN_STEPS.get(step, step),
        "today": today,
        "respond_by": respond_by if has_respond_by else None,
        "appointment": {"at": appt_at, "place": place} if has_appointment else None,
        # the last reminder names the appointment the person missed (its date and place)
        "missed": {"at": appt_at, "place": place} if step == "ft_warning" else None,
        "notice": (
            {"facts": facts, "ground": ground, "sanction": sanction, "observation_days": 10}
            if step in ("pre_sanction_notice", "sanction_decision") else None
        ),
        "commission": commission if step == "crsa_referral" else None,
        "issuer": issuer,
        "venue": venue,
        "campaign": campaign,
        "privacy": privacy,
        "measure": measure,
        "decision": decision,
        "lifted_on": lifted_on,
    }
