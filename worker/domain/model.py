"""The engine's vocabulary: case state, events and the actions it returns.

Plain frozen dataclasses, no I/O. The repository turns database rows into a
:class:`CaseState` and persists the state and actions the engine returns.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

# Message statuses (GOV.UK Notify's lifecycle, plus letter states).
PENDING = "pending"
SENDING = "sending"
SENT = "sent"
DISPATCHED = "dispatched"  # letter: its print batch was produced
DELIVERED = "delivered"
FAILED = "failed"  # permanent failure (bad number, refused address, opt-out)
TEMPORARY_FAILURE = "temporary-failure"
TECHNICAL_FAILURE = "technical-failure"
CANCELLED = "cancelled"
RETURNED = "returned"  # letter came back (NPAI)

REACHED = frozenset({SENT, DISPATCHED, DELIVERED})
OPEN = frozenset({PENDING, SENDING})

EVENT_TYPES = (
    "rdv_booked",
    "rdv_attended",
    "rdv_missed",
    "rdv_cancelled",
    "legitimate_reason",
    "npai",
    "address_updated",
    "phone_updated",
    "sms_failed",
    "sms_opt_out",
    "droit_closed",
    "reoriented",
    "review_decision",
    "phone_followup_done",
    "ar_signed",
    "ar_unclaimed",
    "observations_received",
    "hearing_requested",
    "sanction_decided",
    "sanction_lifted",
    "legitimate_reason_ended",
    "preferences_updated",
)
LANGUAGES = ("fr", "en", "ar")  # the languages of the SMS and of the invitation's summary
REVIEW_DECISIONS = ("proceed", "refer", "legitimate_reason", "close")
OBSERVATIONS_REVIEW = "observations_review"  # the human step after observations or a legitimate reason
# Letters of the Département after the procedure (planned on a closed case).
SANCTION_DECISION = "sanction_decision"
SANCTION_LIFTING = "sanction_lifting"
PROCEDURE_CLOSED = "procedure_closed"

# Phases of an active case.
ENTER = "enter"  # the case enters `step` when due
WAITING = "waiting"  # invitation sent, waiting for a booking until due
AWAITING_SLOT = "awaiting_slot"  # a convocation needs a slot (allocated by the service layer)
APPOINTMENT = "appointment"  # an appointment is booked/fixed; missed check when due
TASK = "task"  # an agent's task (phone follow-up)
REVIEW = "review"  # human gate: waits for review_decision
AWAITING_RECEIPT = "awaiting_receipt"  # LRAR sent, waiting for the receipt date
OBSERVATION = "observation"  # 10 days of observations running
PAUSED = "paused"  # legitimate reason running
HELD = "held"  # blocked: needs an agent (hold_reason says why)
CLOSED = "closed"


@dataclass(frozen=True)
class MessageView:
    step: str
    channel: str
    seq: int
    status: str
    address_version: int = 0
    id: int | None = None


@dataclass(frozen=True)
class CaseState:
    path: str
    organisation: str
    droit_opened_on: dt.date
    created_at: dt.datetime
    id: int | None = None
    status: str = "active"  # active | closed
    step: str | None = None
    phase: str = ENTER
    step_entered_at: dt.datetime | None = None
    due_at: dt.datetime | None = None
    respond_by: dt.date | None = None
    appointment_at: dt.datetime | None = None
    appointment_kind: str | None = None  # booked | convocation
    appointment_count: int = 0
    prebook_phase: str | None = None
    prebook_due_at: dt.datetime | None = None
    paused_until: dt.datetime | None = None
    paused_phase: str | None = None
    paused_remaining: float | None = None  # seconds of waiting left when the pause began
    hold_reason: str | None = None
    review_decision: str | None = None
    receipt_on: dt.date | None = None
    npai: bool = False
    address_version: int = 0
    has_address: bool = True
    has_phone: bool = False
    phone_unusable: bool = False
    sms_opt_out: bool = False
    has_email: bool = False
    email_unusable: bool = False
    late: bool = False
    first_invitation_at: dt.datetime | None = None
    outcome: str | None = None
    closed_at: dt.datetime | None = None
    notice_on: dt.date | None = None  # the pre-sanction notice was issued that day: no receipt before
    # The measure envisaged (review_decision proceed), printed in the pre-sanction notice.
    measure_rate: int | None = None
    measure_months: int | None = None
    measure_repeat: bool = False
    # Set when, since the last decision to proceed, the person sent observations, asked to be heard or had
    # a legitimate reason: the referral then waits for an agent's `refer` (observations_review).
    observations_at: dt.datetime | None = None
    # After the commission: the measure decided, and its end.
    decision_rate: int | None = None
    decision_months: int | None = None
    decision_from: dt.date | None = None
    lifted_on: dt.date | None = None
    # The category of the legitimate reason running (or that stopped the procedure); never its text.
    pause_category: str | None = None
    # France Travail's organisation that reported the failure (ft_report) before the case was handed
    # to the department's reviewing organisation.
    reported_by: str | None = None
    # A case opened by the stock campaign (issue 14): its segment (config/campaign.yaml), and the channels
    # of its path's first step for that segment, space-separated ("sms|email" = the first usable of
    # them); None: a case of the flux, on its steps' own channels.
    segment: str | None = None
    first_channels: str | None = None
    messages: tuple[MessageView, ...] = ()


@dataclass(frozen=True)
class Event:
    type: str
    at: dt.datetime
    until: dt.datetime | None = None
    appointment_at: dt.datetime | None = None
    decision: str | None = None
    to: str | None = None
    reason: str | None = None
    receipt_on: dt.date | None = None  # ar_*: the receipt date; sanction_lifted: the day it ends
    rate: int | None = None  # review_decision proceed / sanction_decided: percent of the RSA suspended
    months: int | None = None
    repeat: bool = False  # review_decision proceed: a repeated failure (the décret's wider range)
    start_on: dt.date | None = None  # sanction_decided: first day of the suspension
    category: str | None = None  # legitimate_reason / review_decision legitimate_reason: config category
    review_on: dt.date | None = None  # legitimate_reason without a natural end: the day an agent reviews it
    household_size: int | None = None  # from the flux when it tells it: caps the measure (MeasureSpec.check)
    large_print: bool | None = None  # preferences_updated: letters in 16 pt
    language: str | None = None  # preferences_updated: fr | en | ar (SMS and the invitation's summary)


# --- actions -------------------------------------------------------------------


@dataclass(frozen=True)
class PlanMessage:
    step: str
    channel: str
    seq: int
    not_before: dt.datetime
    postage: str | None = None


@dataclass(frozen=True)
class ReplanMessage:
    """A message cancelled earlier is wanted again (same step, channel and seq): back to pending.

    The appointment reminder cancelled by a legitimate reason, when the pause
    ends before the appointment it was for.
    """

    step: str
    channel: str
    seq: int
    not_before: dt.datetime


@dataclass(frozen=True)
class CancelPending:
    reason: str
    channel: str | None = None  # only this channel; None = all
    keep_step: str | None = None  # except messages of this step (the appointment reminder)


@dataclass(frozen=True)
class StepChanged:
    from_step: str | None
    to_step: str
    reason: str


@dataclass(frozen=True)
class MarkReturned:
    address_version: int


@dataclass(frozen=True)
class NeedSlot:
    step: str
    earliest: dt.datetime


@dataclass(frozen=True)
class RecordAppointment:
    at: dt.datetime
    kind: str  # booked | convocation
    step: str


@dataclass(frozen=True)
class AppointmentOutcome:
    status: str  # attended | missed | unconfirmed | cancelled


@dataclass(frozen=True)
class OpenCase:
    path: str
    start_step: str
    due_at: dt.datetime
    reason: str
    # A legitimate reason without a natural end still runs: the new case starts paused with it and
    # waits, at its review date, for an agent (never starts by itself).
    pause_category: str | None = None


@dataclass(frozen=True)
class HandOver:
    """The case passes to the department's reviewing organisation (chosen by the service layer
    from the person's postcode, config/territory.yaml ``department.review_organisations``)."""

    reason: str


@dataclass(frozen=True)
class ReferToCommission:
    after: dt.date


@dataclass(frozen=True)
class Flag:
    name: str  # late | npai | held | receipt_overdue | task
    detail: str = ""


Action = (
    PlanMessage
    | ReplanMessage
    | CancelPending
    | StepChanged
    | MarkReturned
    | NeedSlot
    | RecordAppointment
    | AppointmentOutcome
    | OpenCase
    | ReferToCommission
    | HandOver
    | Flag
)


@dataclass(frozen=True)
class Decision:
    state: CaseState
    actions: tuple = ()
    note: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.actions)
