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
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
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
