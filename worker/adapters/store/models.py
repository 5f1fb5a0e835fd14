"""SQLAlchemy 2 models: persons, cases, appointments, messages (the outbox and
contact record), inbound events and the append-only audit log.

Datetimes are stored as naive UTC (portable between SQLite and PostgreSQL) and
returned as aware UTC by :class:`UTCDateTime`.
"""
from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

UTC = dt.timezone.utc

# SQLite only auto-increments INTEGER PRIMARY KEY columns.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")



MESSAGE_REFERENCE_RE = re.compile(r"RL-(\d{6,})-(\d{7,})")  # see Message.reference

class UTCDateTime(TypeDecorator):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store: use aware UTC datetimes")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Person(Base):
    __tablename__ = "persons"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64), unique=True)
    nir_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    last_name: Mapped[str] = mapped_column(String(200))
    first_name: Mapped[str] = mapped_column(String(200))
    birth_date: Mapped[dt.date] = mapped_column(Date)
    sex: Mapped[str | None] = mapped_column(String(1))
    address_line1: Mapped[str | None] = mapped_column(String(200))
    address_line2: Mapped[str | None] = mapped_column(String(200))
    postcode: Mapped[str | None] = mapped_column(String(5))
    city: Mapped[str | None] = mapped_column(String(100))
    phone: Mapped[str | None] = mapped_column(String(20))  # E.164
    email: Mapped[str | None] = mapped_column(String(254))
    orientation: Mapped[str | None] = mapped_column(String(8))
    ft_registered: Mapped[bool] = mapped_column(Boolean, default=False)
    organisation: Mapped[str] = mapped_column(String(64))
    droits_devoirs: Mapped[bool] = mapped_column(Boolean, default=True)
    droit_opened_on: Mapped[dt.date] = mapped_column(Date)
    address_status: Mapped[str] = mapped_column(String(16), default="ok")  # ok | npai
    phone_status: Mapped[str] = mapped_column(String(16), default="ok")  # ok | failed | opted_out
    email_status: Mapped[str] = mapped_column(String(16), default="ok")  # ok | failed
    fingerprint: Mapped[str] = mapped_column(String(64))
    extra: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_contact_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # the droit whose 6-week orientation deadline was flagged (worker/services/orientation.py)
    orientation_flagged_for: Mapped[dt.date | None] = mapped_column(Date)

    cases: Mapped[list["Case"]] = relationship(back_populates="person", order_by="Case.id")


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id"), index=True)
    path: Mapped[str] = mapped_column(String(32))
    organisation: Mapped[str] = mapped_column(String(64))
    droit_opened_on: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="active")
    step: Mapped[str | None] = mapped_column(String(40))
    phase: Mapped[str] = mapped_column(String(24))
    step_entered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    respond_by: Mapped[dt.date | None] = mapped_column(Date)
    appointment_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    appointment_kind: Mapped[str | None] = mapped_column(String(16))
    appointment_count: Mapped[int] = mapped_column(Integer, default=0)
    prebook_phase: Mapped[str | None] = mapped_column(String(24))
    prebook_due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    paused_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    paused_phase: Mapped[str | None] = mapped_column(String(24))
    paused_remaining: Mapped[float | None] = mapped_column(Float)
    hold_reason: Mapped[str | None] = mapped_column(String(40))
    review_decision: Mapped[str | None] = mapped_column(String(24))
    receipt_on: Mapped[dt.date | None] = mapped_column(Date)
    npai: Mapped[bool] = mapped_column(Boolean, default=False)
    address_version: Mapped[int] = mapped_column(Integer, default=0)
    has_address: Mapped[bool] = mapped_column(Boolean, default=True)
    has_phone: Mapped[bool] = mapped_column(Boolean, default=False)
    phone_unusable: Mapped[bool] = mapped_column(Boolean, default=False)
    sms_opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    has_email: Mapped[bool] = mapped_column(Boolean, default=False)
    email_unusable: Mapped[bool] = mapped_column(Boolean, default=False)
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    first_invitation_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(48))
    commission_date: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Due process (migration 0004): the measure envisaged, observations, the commission's decision.
    notice_on: Mapped[dt.date | None] = mapped_column(Date)
    measure_rate: Mapped[int | None] = mapped_column(Integer)
    measure_months: Mapped[int | None] = mapped_column(Integer)
    measure_repeat: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    observations_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    decision_rate: Mapped[int | None] = mapped_column(Integer)
    decision_months: Mapped[int | None] = mapped_column(Integer)
    decision_from: Mapped[dt.date | None] = mapped_column(Date)
    lifted_on: Mapped[dt.date | None] = mapped_column(Date)
    pause_category: Mapped[str | None] = mapped_column(String(32))
    reported_by: Mapped[str | None] = mapped_column(String(64))
    # The stock campaign (migration 0008): the segment of a case it opened, and the channels of its
    # path's first step for that segment (space-separated); both None for the flux.
    segment: Mapped[str | None] = mapped_column(String(40))
    first_channels: Mapped[str | None] = mapped_column(String(40))
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # unused since 0010 (case_claim since 0011)
    version: Mapped[int] = mapped_column(Integer, default=0)

    person: Mapped[Person] = relationship(back_populates="cases")
    messages: Mapped[list["Message"]] = relationship(back_populates="case", order_by="Message.id")

    # The sweep's claim: active cases by due moment (partial: closed cases left out).
    __table_args__ = (Index("ix_cases_due_active", "due_at", postgresql_where=text("status = 'active'"),
                            sqlite_where=text("status = 'active'")),)
    # Optimistic concurrency: two writers of one case cannot both win.
    __mapper_args__ = {"version_id_col": version}

    @property
    def reference(self) -> str:
        return f"RL-{self.id:06d}"


class CaseDue(Base):
    """The sweep's queue (migrations 0010, 0011): one narrow row per active, unclaimed case with a due
    moment, kept by database triggers on ``cases`` (insert, update of ``due_at``/``status``, whatever
    writes them: the ORM, COPY, SQL). Rows are only inserted and deleted, never updated: a claim
    moves its rows to :class:`CaseClaim`, a new due moment deletes the row and inserts a new one.
    So the pages a claim reads are not rewritten in place, and reading them never makes PostgreSQL
    prune them first (bench/RESULTS.md section 2)."""

    __tablename__ = "case_due"

    case_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_case_due_due_at", "due_at"),)


class CaseClaim(Base):
    """The cases the sweep handed out (migration 0011), each until ``claimed_until``: taken out of
    :class:`CaseDue` by the claim, deleted by the trigger when the case's due moment changes (the
    case advanced), moved back by the end of its ``advance`` when it did not change; an expired
    claim (its worker died) is claimed again."""

    __tablename__ = "case_claim"

    # No foreign key: checking it would lock each claimed case's row in ``cases`` (12 ms per 1 000
    # claims). A claim goes with its case: the trigger deletes it when the case moves or closes, the
    # retention purge deletes it with the case.
    case_id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=False)
    due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # No index on it: the claims that expired are looked for in the table itself, which holds only the
    # claims in flight (at most a sweep's worth); an index would cost every claim one more insert.
    claimed_until: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Appointment(Base):
    __tablename__ = "appointments"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    step: Mapped[str | None] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(16))  # booked | convocation
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    organisation: Mapped[str] = mapped_column(String(64))
    place: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16), default="scheduled")  # scheduled|attended|missed|cancelled
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_appointments_slot", "organisation", "at", "status"),)


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    step: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(8))
    seq: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(24), default="pending")
    postage: Mapped[str | None] = mapped_column(String(8))
    address_version: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    status_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    enqueued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    provider_ref: Mapped[str | None] = mapped_column(String(128), index=True)
    template_name: Mapped[str | None] = mapped_column(String(120))
    template_version: Mapped[str | None] = mapped_column(String(64))
    content_hash: Mapped[str | None] = mapped_column(String(64))
    segments: Mapped[int | None] = mapped_column(Integer)
    pages: Mapped[int | None] = mapped_column(Integer)
    batch_id: Mapped[str | None] = mapped_column(String(120), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    cancel_reason: Mapped[str | None] = mapped_column(String(80))
    # Where it went: the number, e-mail address or postal address (lines) given to the provider (0012).
    recipient: Mapped[str | None] = mapped_column(Text)

    case: Mapped[Case] = relationship(back_populates="messages")

    __table_args__ = (
        UniqueConstraint("case_id", "step", "channel", "seq", name="uq_message_case_step_channel_seq"),
        Index("ix_messages_status_not_before", "status", "not_before"),
    )

    @property
    def reference(self) -> str:
        return f"RL-{self.case_id:06d}-{self.id:07d}"

    @staticmethod
    def parse_reference(text: str | None) -> tuple[int, int] | None:
        """(case id, message id) of a reference printed or sent by :attr:`reference`, else None."""
        match = MESSAGE_REFERENCE_RE.fullmatch((text or "").strip().upper())
        return (int(match.group(1)), int(match.group(2))) if match else None


class InboundEvent(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("persons.id"), index=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(24))
    payload: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="received")  # received | applied | ignored | rejected
    note: Mapped[str | None] = mapped_column(Text)


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(16))  # message | event | step | case | ingest
    case_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    entity_id: Mapped[int | None] = mapped_column(BigInteger)
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The chain the entry extends (migration 0010): concurrent writers extend different chains
    # (worker/adapters/store/audit.py); 0 for every entry written before.
    chain: Mapped[int] = mapped_column(SmallInteger, default=0, server_default=text("0"))

    __table_args__ = (Index("ix_audit_log_chain_id", "chain", "id"),)


class Lock(Base):
    """Named leases (the single active scheduler, print batches)."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


# --- the agents' workspace (migration 0007): agents, their sessions, their e-mail sign-in links --------


class Agent(Base):
    """A person who signs in to the workspace (``relance agents add``): an organisation and a role.

    Roles: ``agent`` (their organisation's cases), ``department`` (the department's RSA team: every
    case), ``ops`` (read-only, every case). Identified by e-mail (ProConnect's ``email`` claim, or the
    address an e-mail sign-in link goes to)."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)  # lower case
    name: Mapped[str] = mapped_column(String(200))
    organisation: Mapped[str | None] = mapped_column(String(64))  # None: department team or ops
    role: Mapped[str] = mapped_column(String(16))  # agent | department | ops
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    oidc_subject: Mapped[str | None] = mapped_column(String(255))  # ProConnect's `sub`, set at first sign-in
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class AgentSession(Base):
    """A signed-in browser: the cookie carries a random token, this row its SHA-256 (never the token)."""

    __tablename__ = "agent_sessions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"), index=True)
    method: Mapped[str] = mapped_column(String(16))  # proconnect | email
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # signed out or expired
    id_token: Mapped[str | None] = mapped_column(Text)  # OpenID Connect: the hint for the provider's sign-out


class LoginLink(Base):
    """An e-mail sign-in link: single use, expiring in minutes; only the keyed hash of its token is kept."""

    __tablename__ = "login_links"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


# --- RDV-Solidarités (migration 0009, issue 16): its appointments, per participant -----------------------


class RdvsParticipation(Base):
    """One person of an RDV-Solidarités appointment as Relance last applied it (its webhooks).

    One row per organisation, appointment (``rdv_id``) and participant (``participant``: ``u<user id>``,
    else ``p<participation id>``). ``event_at`` is the ``meta.timestamp`` of the last delivery taken
    in, ``digest`` its body's SHA-256: an older or repeated delivery changes nothing. ``booked_at`` is
    the appointment date Relance holds as booked for it (``rdv_booked``), ``status`` RDV-Solidarités'.
    ``match``: ``matched`` (by affiliation number or name and birth date), ``linked`` (by an agent),
    ``pending`` (nobody recognised: an agent's task "rendez-vous à rapprocher", ``payload`` keeps what
    RDV-Solidarités said until it is linked or discarded), ``discarded``. ``payload`` is emptied once
    the row is linked or discarded; ``note`` says why a row waits (no personal data)."""

    __tablename__ = "rdvs_participations"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    organisation: Mapped[str] = mapped_column(String(64))
    rdv_id: Mapped[int] = mapped_column(BigInteger)
    participant: Mapped[str] = mapped_column(String(24))
    rdvs_user_id: Mapped[int | None] = mapped_column(BigInteger)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("persons.id"), index=True)
    case_id: Mapped[int | None] = mapped_column(BigInteger)
    match: Mapped[str] = mapped_column(String(16))  # matched | linked | pending | discarded
    matched_by: Mapped[str | None] = mapped_column(String(24))  # affiliation_number | name_birth_date | agent
    event_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    digest: Mapped[str | None] = mapped_column(String(64))
    starts_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str | None] = mapped_column(String(16))  # RDV-Solidarités' status, destroyed or removed
    booked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    payload: Mapped[dict | None] = mapped_column(JSON)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("organisation", "rdv_id", "participant", name="uq_rdvs_participation"),
                      Index("ix_rdvs_participations_match", "match", "organisation"),
                      Index("ix_rdvs_participations_user", "organisation", "rdvs_user_id"))


# --- the stock campaign (migration 0008): the campaign, and the people of the stock in it --------------


class Campaign(Base):
    """A campaign bringing the stock back into follow-up (``relance ingest --stock``): paused or not."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | paused
    status_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    status_note: Mapped[str | None] = mapped_column(String(200))  # why it was paused (ops' words)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class CampaignMember(Base):
    """A person of the stock in a campaign: segment and priority (the stock file's), and whether the
    campaign invited them (``invited``: the case it opened), found them already followed (``followed``:
    an active case when their turn came) or waits (``waiting``; a segment the department does not invite
    stays ``waiting``, counted apart)."""

    __tablename__ = "campaign_members"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id"), index=True)
    segment: Mapped[str] = mapped_column(String(40))
    priority: Mapped[int] = mapped_column(Integer)
    contract_end: Mapped[dt.date | None] = mapped_column(Date)  # the stock file's, when given
    status: Mapped[str] = mapped_column(String(16), default="waiting")  # waiting | invited | followed
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    invited_on: Mapped[dt.date | None] = mapped_column(Date)  # local day of the invitation
    invited_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    organisation: Mapped[str | None] = mapped_column(String(64))  # the book the invitation filled
    path: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str | None] = mapped_column(String(200))  # the stock file's name
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("campaign_id", "person_id", name="uq_campaign_member_person"),
                      Index("ix_campaign_members_status", "campaign_id", "status"))
