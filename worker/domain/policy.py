"""Policy and territory: the paths and organisations, as data (read from ``config/`` by
:mod:`worker.adapters.config_files`).

Everything here is data validated at start-up. A bad file fails with
:class:`ConfigError` naming the file, the key and what is wrong (in French: the
people who edit these files are the department's staff).
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

CHANNELS = ("letter", "sms", "email")
STEP_KINDS = ("invite", "appointment", "task", "handoff", "review", "notice", "referral")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PATH_IDS = ("cd", "ft", "ft_unregistered", "ml")


class ConfigError(Exception):
    def __init__(self, file: object, key: str, problem: str):
        self.file, self.key, self.problem = str(file), key, problem
        super().__init__(f"{file}: {key}: {problem}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepSpec(_Strict):
    id: str
    kind: str
    channels: tuple[str, ...] = ()
    next: str | None = None
    respond_days: int | None = None
    min_days: int | None = None
    observation_days: int | None = None
    relies_on: tuple[str, ...] = ()
    postage: str = "simple"

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in STEP_KINDS:
            raise ValueError(f"type d'étape inconnu {v!r} (attendu : {', '.join(STEP_KINDS)})")
        return v

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for c in v:
            if c not in CHANNELS:
                raise ValueError(f"canal inconnu {c!r} (attendu : {', '.join(CHANNELS)})")
        if len(set(v)) != len(v):
            raise ValueError("canal en double")
        return v

    @field_validator("postage")
    @classmethod
    def _postage(cls, v: str) -> str:
        if v not in ("simple", "lrar"):
            raise ValueError("doit valoir 'simple' ou 'lrar'")
        return v

    @model_validator(mode="after")
    def _required(self) -> "StepSpec":
        need = {"invite": "respond_days", "appointment": "min_days", "notice": "observation_days"}.get(self.kind)
        if need and getattr(self, need) is None:
            raise ValueError(f"l'étape {self.id!r} de type {self.kind} doit préciser {need}")
        for name in ("respond_days", "min_days", "observation_days"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} ne peut pas être négatif")
        if self.kind not in ("referral",) and self.next is None:
            raise ValueError(f"l'étape {self.id!r} doit préciser 'next'")
        return self


class PathSpec(_Strict):
    label: str
    steps: tuple[StepSpec, ...]
    # When an appointment passes with neither rdv_attended nor rdv_missed by the end of the grace
    # period, an agent confirms the attendance ("présence à confirmer"): no absence is assumed.
    confirm_attendance: bool = False

    def step(self, step_id: str) -> StepSpec:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def has(self, step_id: str) -> bool:
        return any(s.id == step_id for s in self.steps)

    @property
    def first(self) -> StepSpec:
        return self.steps[0]

    def review_step(self) -> StepSpec | None:
        for s in self.steps:
            if s.kind == "review":
                return s
        return None


class Delays(_Strict):
    first_invitation_target_days: int = 15
    orientation_deadline_days: int = 42
    orientation_warning_days: int = 7
    reminder_days_before: int = 2
    reminder_time: dt.time = dt.time(10, 0)
    missed_grace_working_days: int = 1
    receipt_wait_days: int = 30


class Bounds(_Strict):
    rate: tuple[int, int]  # percent of the RSA suspended, min and max
    months: tuple[int, int]

    @model_validator(mode="after")
    def _ordered(self) -> "Bounds":
        for name in ("rate", "months"):
            low, high = getattr(self, name)
            if not 0 < low <= high or (name == "rate" and high > 100):
                raise ValueError(f"{name} : bornes invalides {low}–{high}")
        return self


class MeasureSpec(_Strict):
    """The suspension's bounds (CASF R262-68 as amended by décret n° 2025-478): see docs/legal.md."""

    first: Bounds = Bounds(rate=(30, 100), months=(1, 2))
    repeat: Bounds = Bounds(rate=(30, 100), months=(1, 4))
    household_cap_rate: int = 50  # households of more than one person

    def check(self, rate: int | None, months: int | None, repeat: bool,
              household_size: int | None = None) -> tuple[int, int]:
        """The measure (rate, months) with the defaults (the range's minimum); ValueError in French."""
        bounds = self.repeat if repeat else self.first
        rate = bounds.rate[0] if rate is None else rate
        months = bounds.months[0] if months is None else months
        label = "en cas de répétition" if repeat else "pour un premier manquement"
        if not bounds.rate[0] <= rate <= bounds.rate[1]:
            raise ValueError(f"taux {rate} % hors des bornes {label} ({bounds.rate[0]} à {bounds.rate[1]} %)")
        if not bounds.months[0] <= months <= bounds.months[1]:
            raise ValueError(f"durée {months} mois hors des bornes {label} "
                             f"({bounds.months[0]} à {bounds.months[1]} mois)")
        if household_size is not None and household_size > 1 and rate > self.household_cap_rate:
            raise ValueError(f"taux {rate} % au-delà du plafond de {self.household_cap_rate} % "
                             "pour un foyer de plus d'une personne")
        return rate, months


class ReasonCategory(_Strict):
    label: str  # French, as agents and the commission read it
    natural_end: bool = True  # False: no end date is known (homelessness, incarceration): a review date


class LegitimateReasons(_Strict):
    """The categories of legitimate reasons (the seed's list). The free text is never stored."""

    review_days: int = 90  # categories without a natural end: reviewed by an agent after this many days
    categories: dict[str, ReasonCategory] = {
        "hospitalisation": ReasonCategory(label="hospitalisation"),
        "incarceration": ReasonCategory(label="incarcération", natural_end=False),
        "medical_appointment": ReasonCategory(label="rendez-vous médical"),
        "sick_leave": ReasonCategory(label="arrêt maladie"),
        "no_childcare": ReasonCategory(label="absence de mode de garde"),
        "homelessness": ReasonCategory(label="sans domicile stable", natural_end=False),
        "training_or_work": ReasonCategory(label="formation ou emploi"),
        "other": ReasonCategory(label="autre motif"),
    }

    @model_validator(mode="after")
    def _valid(self) -> "LegitimateReasons":
        if self.review_days < 1:
            raise ValueError("review_days doit être au moins 1")
        if not self.categories:
            raise ValueError("au moins une catégorie")
        return self

    def get(self, category: str | None) -> ReasonCategory:
        """The category, or ValueError in French listing the known ones."""
        if not category or category not in self.categories:
            known = ", ".join(self.categories)
            raise ValueError(f"catégorie {category!r} inconnue (attendu : {known})" if category
                             else f"la catégorie (--category) est obligatoire ({known})")
        return self.categories[category]


class ReminderSpec(_Strict):
    step: str = "rdv_reminder"
    channels: tuple[str, ...] = ("sms",)


class Policy(_Strict):
    delays: Delays = Delays()
    reminder: ReminderSpec = ReminderSpec()
    measure: MeasureSpec = MeasureSpec()
    legitimate_reasons: LegitimateReasons = LegitimateReasons()
    paths: dict[str, PathSpec]
    # orientation -> path; an empty target (``msa: ~``): followed by its own body, never invited (no case)
    routing: dict[str, str | None]
    # The sanction envisaged, as the pre-sanction notice states it.
    sanction_text: str = (
        "la suspension de tout ou partie du montant de votre RSA, pour une durée limitée, "
        "décidée par le président du conseil départemental après avis de l'équipe pluridisciplinaire"
    )

    @model_validator(mode="after")
    def _coherent(self) -> "Policy":
        for pid, path in self.paths.items():
            ids = [s.id for s in path.steps]
            if len(ids) != len(set(ids)):
                raise ValueError(f"paths.{pid}: identifiant d'étape en double")
            for i, s in enumerate(path.steps):
                if s.next is not None and s.next not in ids:
                    raise ValueError(f"paths.{pid}.steps[{i}].next: étape inconnue {s.next!r}")
                for r in s.relies_on:
                    if r not in ids:
                        raise ValueError(f"paths.{pid}.steps[{i}].relies_on: étape inconnue {r!r}")
            if self.reminder.step in ids:
                raise ValueError(f"paths.{pid}: {self.reminder.step!r} est réservé au rappel de rendez-vous")
        for key, target in self.routing.items():
            if target is not None and target not in self.paths:
                raise ValueError(f"routing.{key or '(vide)'}: parcours inconnu {target!r}")
        return self

    def path(self, path_id: str) -> PathSpec:
        return self.paths[path_id]

    def route(self, orientation: str | None, ft_registered: bool) -> str | None:
        """The path a person starts on; None: not followed on the department's paths (``msa``)."""
        key = orientation or ""
        if key == "ft":
            key = "ft_registered" if ft_registered else "ft_unregistered"
        if key == "msa" and key not in self.routing:
            return None  # the MSA follows its own people
        return self.routing[key]


# What the invitations and convocations say about the appointment when the territory says
# nothing else (issue 10): who the person meets, by organisation kind, and what to bring.
DEFAULT_MEET = {
    "cd": "une personne du Département et une personne de France Travail, ensemble",
    "ft": "une conseillère ou un conseiller France Travail",
    "ml": "une conseillère ou un conseiller de la Mission locale",
    "msa": "une travailleuse sociale ou un travailleur social de la MSA",
}
DEFAULT_BRING = (
    "pièce d'identité ou titre de séjour",
    "numéro d'allocataire CAF ou MSA",
    "CV si vous en avez un",
)


def _not_blank(v: str | None) -> str | None:
    if v is not None and not v.strip():
        raise ValueError("ne peut pas être vide (retirez la clé pour la valeur par défaut)")
    return v


class Slots(_Strict):
    place: str
    weekdays: tuple[str, ...]
    times: tuple[dt.time, ...]
    capacity: int = 1
    # What the letters say about the appointment (issue 10, "Plain French"): how to get there
    # (transport, step-free access), how long it lasts, what to bring, who the person meets
    # (default: DEFAULT_MEET for the organisation's kind).
    access: str | None = None
    duration_minutes: int = 60
    bring: tuple[str, ...] = DEFAULT_BRING
    meet: str | None = None

    _texts = field_validator("access", "meet")(_not_blank)

    @field_validator("duration_minutes")
    @classmethod
    def _duration(cls, v: int) -> int:
        if not 15 <= v <= 240:
            raise ValueError("une durée en minutes, de 15 à 240")
        return v

    @field_validator("bring")
    @classmethod
    def _bring(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not item.strip() for item in v):
            raise ValueError("un élément vide")
        return v

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for d in v:
            if d not in WEEKDAYS:
                raise ValueError(f"jour inconnu {d!r} (attendu : {', '.join(WEEKDAYS)})")
        if not v:
            raise ValueError("au moins un jour")
        return v

    @field_validator("capacity")
    @classmethod
    def _capacity(cls, v: int) -> int:
        if v < 1:
            raise ValueError("doit être au moins 1")
        return v


_RSA_WORD = re.compile(r"(?<![a-z0-9])rsa(?![a-z0-9])")
# RDV-Solidarités (issue 16): the motif categories of RSA appointments there (`short_name`), and the one
# each path's invitations book. Defaults of `rdv_solidarites` in config/territory.yaml.
RDVS_RSA_CATEGORIES = ("rsa_orientation", "rsa_orientation_on_phone_platform", "rsa_orientation_france_travail",
                       "rsa_accompagnement", "rsa_accompagnement_social", "rsa_accompagnement_sociopro",
                       "rsa_cer_signature", "rsa_follow_up", "rsa_insertion_offer", "rsa_main_tendue",
                       "rsa_atelier_collectif_mandatory", "rsa_spie", "rsa_integration_information")
RDVS_PATH_CATEGORIES = {"cd": "rsa_orientation", "ft": "rsa_orientation", "ft_unregistered": "rsa_orientation",
                        "ml": "rsa_orientation"}
SHORT_LINK_MAX = 60  # characters: an SMS carries the link, a letter prints it to be typed


def _names_the_rsa(url: str) -> bool:
    return bool(_RSA_WORD.search(url.lower()))


class BookingLink(_Strict):
    """An organisation's RDV-Solidarités booking link for one motif category (issue 16).

    ``url``: the page (the letter's QR code and the e-mail's link go there); ``{organisation_id}``
    stands for the organisation's id in RDV-Solidarités. ``short``: a shorter link to the same page,
    which the SMS carry and the letters print; needed when ``url`` is long or names the RSA (a lock
    screen shows an SMS to anyone)."""
    url: str
    short: str | None = None

    @field_validator("url", "short")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.fullmatch(r"https://[^\s/]+\.[^\s/]+(/\S*)?", v):
            raise ValueError(f"une adresse https:// sans espace attendue, pas {v!r}")
        if re.search(r"\{(?!organisation_id\})[^}]*\}", v):
            raise ValueError(f"{v!r} : seul {{organisation_id}} peut être remplacé dans un lien")
        return v

    @model_validator(mode="after")
    def _shown(self) -> "BookingLink":
        shown = self.short or self.url
        if _names_the_rsa(shown):
            raise ValueError(f"{shown!r} nomme le RSA : ce lien figure dans les SMS, lisibles par tous sur un "
                             "écran verrouillé" + ("" if self.short else " ; donnez un lien court (short) qui ne le "
                                                                     "nomme pas"))
        if len(shown.replace("{organisation_id}", "0000000")) > SHORT_LINK_MAX:
            raise ValueError(f"{shown!r} : trop long pour un SMS et pour être recopié d'un courrier "
                             f"({SHORT_LINK_MAX} caractères au plus) ; donnez un lien court (short)")
        return self


class RdvSolidaritesOrganisation(_Strict):
    """An organisation in RDV-Solidarités: its id there (``data.organisation.id`` of its webhooks, and
    ``{organisation_id}`` in its links) and its booking link per motif category."""
    organisation_id: int | None = None
    booking: dict[str, BookingLink] = {}

    @model_validator(mode="after")
    def _ids(self) -> "RdvSolidaritesOrganisation":
        for category, link in self.booking.items():
            if self.organisation_id is None and "{organisation_id}" in link.url + (link.short or ""):
                raise ValueError(f"booking.{category} : le lien utilise {{organisation_id}} : "
                                 "donnez organisation_id")
        return self


@dataclass(frozen=True)
class Booking:
    """The booking link of one message: ``url`` (QR code, e-mail link), ``short`` (SMS, printed),
    ``display`` (``short`` without ``https://``: what a letter prints), ``category`` (None: the
    organisation's general ``booking_url``)."""
    url: str
    short: str
    display: str
    category: str | None = None


class Organisation(_Strict):
    kind: str
    name: str
    short_name: str
    signatory: str
    address: tuple[str, ...]
    phone: str
    email: str
    booking_url: str
    digest_recipients: tuple[str, ...] = ()
    convocation: Slots
    # The data controller of what this organisation sends (a key of `privacy.controllers`);
    # default: DEFAULT_CONTROLLER for its kind (the Département for CD organisations).
    controller: str | None = None
    # RDV-Solidarités (issue 16): its id there and its booking link per motif category.
    rdv_solidarites: RdvSolidaritesOrganisation | None = None

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in ("cd", "ft", "ml", "msa"):
            raise ValueError("doit valoir cd, ft, ml ou msa")
        return v

    @field_validator("booking_url")
    @classmethod
    def _private_link(cls, v: str) -> str:
        # the SMS carry the link, and a lock screen shows it to anyone (issue 10, "Private SMS")
        if _names_the_rsa(v):
            raise ValueError(f"{v!r} nomme le RSA : ce lien figure dans les SMS, lisibles par tous "
                             "sur un écran verrouillé")
        return v

    def booking(self, category: str | None) -> Booking:
        """The booking link for a motif category: its own if configured, else ``booking_url``."""
        rdvs = self.rdv_solidarites
        link = rdvs.booking.get(category) if rdvs and category else None
        if link is None:
            return Booking(self.booking_url, self.booking_url, _display(self.booking_url))
        ident = str(rdvs.organisation_id) if rdvs.organisation_id is not None else ""
        url = link.url.replace("{organisation_id}", ident)
        short = (link.short or link.url).replace("{organisation_id}", ident)
        return Booking(url, short, _display(short), category)

    @property
    def meet(self) -> str:
        """Who the person meets at the appointment (the letters say it)."""
        return self.convocation.meet or DEFAULT_MEET[self.kind]

    def controller_key(self, department_key: str) -> str:
        if self.controller:
            return self.controller
        return department_key if self.kind == "cd" else DEFAULT_CONTROLLER[self.kind]


def _display(url: str) -> str:
    """A link as a letter prints it: without ``https://``, ``www.`` and a final ``/``."""
    return re.sub(r"^https?://(www\.)?", "", url).rstrip("/")


class RdvSolidarites(_Strict):
    """The Département's RDV-Solidarités (issue 16, docs/rdv-solidarites.md): which motif categories
    are RSA appointments (any other is acknowledged and ignored), and which one each path books."""
    motif_categories: tuple[str, ...] = RDVS_RSA_CATEGORIES
    path_categories: dict[str, str] = dict(RDVS_PATH_CATEGORIES)

    @model_validator(mode="after")
    def _known(self) -> "RdvSolidarites":
        for path, category in self.path_categories.items():
            if path not in PATH_IDS:
                raise ValueError(f"path_categories : parcours inconnu {path!r} (attendu : {', '.join(PATH_IDS)})")
            if category not in self.motif_categories:
                raise ValueError(f"path_categories.{path} : catégorie {category!r} absente de motif_categories")
        return self


class Commission(_Strict):
    name: str
    place: str
    sessions: tuple[dt.date, ...]

    def next_session(self, after: dt.date) -> dt.date | None:
        for d in sorted(self.sessions):
            if d > after:
                return d
        return None


class ReviewOrganisations(_Strict):
    """An organisation by the person's postcode (the longest matching prefix, else the default): which
    CD organisation reviews a France Travail case handed to the Département; who takes a re-oriented
    case (``Territory.path_organisations``)."""
    default: str
    by_postcode: dict[str, str] = {}

    @field_validator("by_postcode", mode="before")
    @classmethod
    def _prefixes(cls, v: object) -> object:
        if not isinstance(v, dict):
            return v
        out = {}
        for prefix, code in v.items():
            prefix = str(prefix)
            if not (prefix.isdigit() and 1 <= len(prefix) <= 5):
                raise ValueError(f"{prefix!r} : un début de code postal fait de 1 à 5 chiffres")
            out[prefix] = code
        return out

    def for_postcode(self, postcode: str | None) -> str:
        """The organisation for this postcode: the longest matching prefix, else the default."""
        code = (postcode or "").strip()
        best = max((p for p in self.by_postcode if code.startswith(p)), key=len, default=None)
        return self.by_postcode[best] if best is not None else self.default

    def check(self, key: str, organisations: dict, kind: str) -> None:
        """Every organisation named exists and is of ``kind`` (the message names ``key``)."""
        for where, prefix, code in [("default", None, self.default),
                                    *(("by_postcode", p, c) for p, c in self.by_postcode.items())]:
            label = f"{prefix} : " if prefix else ""
            org = organisations.get(code)
            if org is None:
                raise ValueError(f"{key}.{where}: {label}organisation inconnue {code!r} (absente de 'organisations')")
            if org.kind != kind:
                raise ValueError(f"{key}.{where}: {label}l'organisation {code!r} est de type {org.kind} : "
                                 f"il faut une organisation de type {kind}")


def _address_lines(v: tuple[str, ...]) -> tuple[str, ...]:
    if not v:
        raise ValueError("au moins une ligne d'adresse")
    return v


class ObservationsService(_Strict):
    name: str
    address: tuple[str, ...]

    _address = field_validator("address")(_address_lines)


class Department(_Strict):
    """The Département: its Président alone envisages and decides an RSA suspension
    (CASF L262-37). It issues the sanction letters."""
    name: str
    short_name: str
    address: tuple[str, ...]
    observations_service: ObservationsService
    phone: str
    email: str
    signatory_name: str
    signatory_title: str
    review_organisations: ReviewOrganisations

    _address = field_validator("address")(_address_lines)

    @field_validator("signatory_name", "signatory_title", "name", "short_name")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("ne peut pas être vide")
        return v

    @property
    def signature(self) -> str:
        """The signature line of the letters the Département issues."""
        return (f"Pour le Président du Conseil départemental et par délégation, "
                f"{self.signatory_name}, {self.signatory_title}")

    def review_organisation(self, postcode: str | None) -> str:
        """The CD organisation that reviews a case of this postcode: the longest
        matching prefix, else the default."""
        return self.review_organisations.for_postcode(postcode)


# The data controller of an organisation by kind when it names none (issue 10): the Département
# for its CDAS and the CCAS it delegates to, France Travail as an institution, the Mission locale,
# the MSA for the accompaniment it provides itself.
DEFAULT_CONTROLLER = {"ft": "france_travail", "ml": "mission_locale", "msa": "msa"}


class PrivacyController(_Strict):
    """A data controller as the information notice names it (RGPD art. 13/14)."""
    name: str | None = None  # None: the Département's own name (the `department` controller only)
    dpo_email: str
    dpo_address: tuple[str, ...]
    notice_url: str  # the full information notice
    # who sees the data, in the notice's words
    recipients: str = ("le Département, le CDAS ou le CCAS, France Travail, la Mission locale et, "
                       "si besoin, la commission RSA")

    _address = field_validator("dpo_address")(_address_lines)
    _name = field_validator("name")(_not_blank)

    @field_validator("dpo_email")
    @classmethod
    def _email(cls, v: str) -> str:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", v):
            raise ValueError(f"adresse e-mail invalide {v!r}")
        return v

    @field_validator("notice_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.fullmatch(r"https://[^\s]+\.[^\s]+", v):
            raise ValueError(f"une adresse https:// attendue, pas {v!r}")
        return v

    _recipients = field_validator("recipients")(_not_blank)


class Privacy(_Strict):
    """The information notice of every letter and e-mail (RGPD art. 13/14)."""
    department: str = "departement"  # the key of the Département's controller (CD organisations, sanction letters)
    source: str = "la CAF ou la MSA"  # where the data come from
    controllers: dict[str, PrivacyController]

    @model_validator(mode="after")
    def _department(self) -> "Privacy":
        if self.department not in self.controllers:
            raise ValueError(f"department: responsable {self.department!r} absent de 'controllers'")
        for key, controller in self.controllers.items():
            if controller.name is None and key != self.department:
                raise ValueError(f"controllers.{key}.name: le nom du responsable est obligatoire")
        return self


# The kind of organisation that runs each path: the CD path a CDAS or a CCAS (kind cd), both France
# Travail paths an agency (its registered and not-yet-registered people), the Mission locale's path a
# Mission locale.
PATH_KINDS = {"cd": "cd", "ft": "ft", "ft_unregistered": "ft", "ml": "ml"}


class Territory(_Strict):
    timezone: str = "Europe/Paris"
    privacy: Privacy  # before the organisations: their data controllers are checked against it
    organisations: dict[str, Organisation]
    commission: Commission
    department: Department
    rdv_solidarites: RdvSolidarites = RdvSolidarites()
    # Who takes a case re-oriented to another path, by the person's postcode (path -> rule).
    path_organisations: dict[str, ReviewOrganisations] = {}

    @field_validator("organisations")
    @classmethod
    def _controllers(cls, organisations: dict[str, Organisation], info: ValidationInfo) -> dict[str, Organisation]:
        """Every organisation's data controller is in `privacy.controllers`."""
        privacy = info.data.get("privacy")
        if privacy is None:  # the privacy block failed on its own
            return organisations
        for code, org in organisations.items():
            key = org.controller_key(privacy.department)
            if key not in privacy.controllers:
                where = "controller" if org.controller else "kind"
                raise ValueError(f"{code}.{where} : responsable du traitement {key!r} "
                                 "absent de 'privacy.controllers'")
        return organisations

    @model_validator(mode="after")
    def _booking_categories(self) -> "Territory":
        known = self.rdv_solidarites.motif_categories
        for code, org in self.organisations.items():
            for category in (org.rdv_solidarites.booking if org.rdv_solidarites else {}):
                if category not in known:
                    raise ValueError(f"organisations.{code}.rdv_solidarites.booking : catégorie de motif "
                                     f"{category!r} absente de rdv_solidarites.motif_categories")
        return self

    def booking(self, organisation: str, path: str | None) -> Booking:
        """The booking link of a case's messages: its organisation's link for its path's motif category."""
        return self.organisations[organisation].booking(self.rdv_solidarites.path_categories.get(path or ""))

    def controller(self, organisation: str | None) -> tuple[str, PrivacyController]:
        """(name, controller) of an organisation's messages; None: the Département's."""
        key = (self.privacy.department if organisation is None
               else self.organisations[organisation].controller_key(self.privacy.department))
        controller = self.privacy.controllers[key]
        return controller.name or self.department.name, controller

    def organisation_for_path(self, path: str, postcode: str | None, current: str | None) -> str | None:
        """The organisation of a case opened on ``path`` for a person followed by ``current``: the same
        when it runs that kind of path, else ``path_organisations`` by postcode (longest prefix, else
        its default), else the territory's only organisation of that kind; failing all, ``current``."""
        kind = PATH_KINDS.get(path)
        org = self.organisations.get(current or "")
        if kind is None or (org is not None and org.kind == kind):
            return current
        rule = self.path_organisations.get(path)
        if rule is not None:
            return rule.for_postcode(postcode)
        of_kind = [c for c, o in self.organisations.items() if o.kind == kind]
        return of_kind[0] if len(of_kind) == 1 else current

    @model_validator(mode="after")
    def _path_organisations(self) -> "Territory":
        """Each rule is for a known path and names organisations of the kind that runs it."""
        for path, rule in self.path_organisations.items():
            if path not in PATH_KINDS:
                raise ValueError(f"path_organisations.{path}: parcours inconnu {path!r} "
                                 f"(attendu : {', '.join(PATH_KINDS)})")
            rule.check(f"path_organisations.{path}", self.organisations, PATH_KINDS[path])
        return self

    @model_validator(mode="after")
    def _review_organisations(self) -> "Territory":
        """The Département's review organisations exist and are CD organisations (the message names
        the key, as Policy's do)."""
        self.department.review_organisations.check("department.review_organisations", self.organisations, "cd")
        return self


@dataclass(frozen=True)
class Config:
    policy: Policy
    territory: Territory
    files: dict[str, str] = field(default_factory=dict)
    campaign: object | None = None  # worker.domain.campaign.CampaignConfig (config/campaign.yaml), if present
