"""A small, pure, in-memory simulator of one person's cases, for engine tests.

It does what the repository and the services do around the engine, without a
database, a clock or a channel:

* holds the person (contact flags, updated by contact events the way
  ``services._update_person_contact`` does) and every case opened for them
  (the first one, then those the engine opens with ``OpenCase``);
* keeps its own message table (the "database") and applies the engine's
  actions to it like ``repository.persist``: ``PlanMessage`` inserts a pending
  row, ``CancelPending`` / ``MarkReturned`` change rows, ``NeedSlot`` picks the
  first working day at 10:00 local at or after ``earliest`` and calls
  ``assign_slot``, ``OpenCase`` creates a case;
* rebuilds the :class:`CaseState` given to the engine from that table (like
  ``repository.to_state``) and checks that the engine's own view of the
  messages agrees with what its actions did to the table;
* advances time in order: a case is decided exactly when it is due, a pending
  message is re-checked with ``send_verdict`` exactly at its ``not_before``
  ("send" -> sent, "defer" -> not_before = next_send_slot(now),
  "cancel:..." -> cancelled);
* logs everything the invariants need: every step entered (with the state and
  the message table at that moment), every event applied, every message sent,
  every closure — each record carries a global sequence number ``n`` so that
  records at the same instant stay ordered.

``engine`` can be swapped for a deliberately broken one to show that the
invariant checkers catch what they claim to catch.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Any

from worker.domain import engine as real_engine
from worker.domain.model import (
    CANCELLED,
    PENDING,
    REACHED,
    RETURNED,
    SENT,
    AppointmentOutcome,
    CancelPending,
    CaseState,
    Decision,
    Event,
    Flag,
    HandOver,
    MarkReturned,
    MessageView,
    NeedSlot,
    OpenCase,
    PlanMessage,
    ReplanMessage,
    RecordAppointment,
    ReferToCommission,
    StepChanged,
)

UTC = dt.timezone.utc
SLOT_TIME = dt.time(10, 0)


class SimError(AssertionError):
    """The simulator found the engine inconsistent (state vs actions) or stuck."""


@dataclass
class Person:
    has_address: bool = True
    has_phone: bool = False
    has_email: bool = False
    npai: bool = False
    phone_unusable: bool = False
    sms_opt_out: bool = False
    email_unusable: bool = False


@dataclass
class SimMessage:
    id: int
    case_id: int
    step: str
    channel: str
    seq: int
    status: str
    not_before: dt.datetime
    address_version: int
    planned_at: dt.datetime
    postage: str | None = None
    sent_at: dt.datetime | None = None
    reason: str | None = None

    def view(self) -> MessageView:
        return MessageView(self.step, self.channel, self.seq, self.status, self.address_version, self.id)


@dataclass(frozen=True)
class Sent:
    n: int
    case_id: int
    step: str
    channel: str
    seq: int
    at: dt.datetime
    postage: str | None
    case_status: str
    case_step: str | None
    case_phase: str


@dataclass(frozen=True)
class StepEntered:
    n: int
    case_id: int
    path: str
    step: str
    from_step: str | None
    reason: str
    at: dt.datetime
    state: CaseState  # the state the engine returned with this step change
    messages: tuple  # copies of the case's message rows when the step was entered


@dataclass(frozen=True)
class Applied:
    n: int
    case_id: int
    event: Event
    at: dt.datetime
    before: CaseState
    after: CaseState
    actions: tuple
    note: str


@dataclass(frozen=True)
class Closed:
    n: int
    case_id: int
    at: dt.datetime
    outcome: str | None


@dataclass(frozen=True)
class Opened:
    n: int
    case_id: int
    path: str
    start_step: str | None
    due_at: dt.datetime
    reason: str
    at: dt.datetime
    from_case: int | None


@dataclass(frozen=True)
class ActionLog:
    n: int
    case_id: int
    at: dt.datetime
    action: Any
    cause: str


def first_slot(cal, earliest: dt.datetime, time: dt.time = SLOT_TIME) -> dt.datetime:
    """The first working day at ``time`` local at or after ``earliest``."""
    day = cal.local_date(earliest)
    while True:
        if cal.is_working_day(day):
            at = cal.at(day, time)
            if at >= earliest:
                return at
        day += dt.timedelta(days=1)


class Sim:
    def __init__(self, policy, cal, *, path: str = "cd", organisation: str = "CDAS-REDON",
                 droit_opened_on: dt.date | None = None, start: dt.datetime,
                 has_address: bool = True, has_phone: bool = True, has_email: bool = False,
                 engine=real_engine, slot_time: dt.time = SLOT_TIME, open_first: bool = True,
                 lag: dt.timedelta = dt.timedelta(0)):
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.policy = policy
        self.cal = cal
        self.engine = engine
        self.slot_time = slot_time
        self.review_organisation = "CDAS-RENNES"  # the department's reviewing organisation (HandOver)
        self.lag = lag  # the scheduler's delay: due cases and messages are handled this late
        self.now = start
        self.organisation = organisation
        self.droit_opened_on = droit_opened_on or cal.local_date(start)
        self.person = Person(has_address=has_address, has_phone=has_phone, has_email=has_email)
        self.states: dict[int, CaseState] = {}
        self.table: dict[int, list[SimMessage]] = {}
        self._n = itertools.count(1)
        self._msg_ids = itertools.count(1)
        self.log: list = []  # every record, in order
        self.sent: list[Sent] = []
        self.steps: list[StepEntered] = []
        self.applied: list[Applied] = []
        self.closed: list[Closed] = []
        self.opened: list[Opened] = []
        self.actions: list[ActionLog] = []
        self.deferrals = 0
        self.cancellations: list[tuple[int, str, str, str]] = []  # (case, step, channel, reason)
        if open_first:
            self.open_case(path, reason="flux")
            self.run_until(self.now)

    # --- records -----------------------------------------------------------------
    def _record(self, cls, **kw):
        rec = cls(n=next(self._n), **kw)
        self.log.append(rec)
        for attr, kind in (("sent", Sent), ("steps", StepEntered), ("applied", Applied), ("closed", Closed),
                           ("opened", Opened), ("actions", ActionLog)):
            if cls is kind:
                getattr(self, attr).append(rec)
        return rec

    # --- cases -------------------------------------------------------------------
    def open_case(self, path: str, start_step: str | None = None, due_at: dt.datetime | None = None,
                  reason: str = "flux", from_case: int | None = None, pause_category: str | None = None) -> int:
        cid = len(self.states) + 1
        p = self.person
        state = self.engine.new_case(path=path, organisation=self.organisation,
                                     droit_opened_on=self.droit_opened_on, now=self.now, policy=self.policy,
                                     cal=self.cal, has_address=p.has_address, has_phone=p.has_phone,
                                     has_email=p.has_email, start_step=start_step, due_at=due_at,
                                     pause_category=pause_category)
        state = dataclasses.replace(state, id=cid, npai=p.npai, phone_unusable=p.phone_unusable,
                                    sms_opt_out=p.sms_opt_out, email_unusable=p.email_unusable)
        self.states[cid] = state
        self.table[cid] = []
        self._record(Opened, case_id=cid, path=path, start_step=state.step, due_at=state.due_at, reason=reason,
                     at=self.now, from_case=from_case)
        return cid

    @property
    def case_id(self) -> int:
        """The case events go to: the active one, else the latest (services._active_case)."""
        active = [cid for cid, s in self.states.items() if s.status == "active"]
        return max(active) if active else max(self.states)

    def state(self, cid: int | None = None) -> CaseState:
        cid = self.case_id if cid is None else cid
        return dataclasses.replace(self.states[cid],
                                   messages=tuple(m.view() for m in self.table[cid]))

    @property
    def case(self) -> CaseState:
        return self.state()

    def messages(self, cid: int | None = None, **match) -> list[SimMessage]:
        cid = self.case_id if cid is None else cid
        return [m for m in self.table[cid] if all(getattr(m, k) == v for k, v in match.items())]

    def all_messages(self) -> list[SimMessage]:
        return [m for rows in self.table.values() for m in rows]

    # --- persisting a decision (repository.persist) ---------------------------------
    def _persist(self, cid: int, decision: Decision, cause: str) -> None:
        rows = self.table[cid]
        before = self.states[cid]
        state = decision.state
        follow_ups: list[Decision] = []
        for action in decision.actions:
            self._record(ActionLog, case_id=cid, at=self.now, action=action, cause=cause)
            if isinstance(action, PlanMessage):
                if any(m.step == action.step and m.channel == action.channel and m.seq == action.seq for m in rows):
                    raise SimError(f"case {cid}: second message planned for {action}")
                rows.append(SimMessage(next(self._msg_ids), cid, action.step, action.channel, action.seq, PENDING,
                                       action.not_before, before.address_version, self.now, action.postage))
            elif isinstance(action, ReplanMessage):
                [m] = [m for m in rows if (m.step, m.channel, m.seq) == (action.step, action.channel, action.seq)]
                if m.status != CANCELLED:
                    raise SimError(f"case {cid}: {action} for a message that is {m.status}")
                m.status, m.reason, m.not_before = PENDING, None, action.not_before
            elif isinstance(action, CancelPending):
                for m in rows:
                    if m.status == PENDING and (not action.channel or m.channel == action.channel) \
                            and (not action.keep_step or m.step != action.keep_step):
                        m.status, m.reason = CANCELLED, action.reason
                        self.cancellations.append((cid, m.step, m.channel, action.reason))
            elif isinstance(action, MarkReturned):
                for m in rows:
                    if m.channel == "letter" and m.address_version == action.address_version and m.status in REACHED:
                        m.status, m.reason = RETURNED, "npai"
            elif isinstance(action, StepChanged):
                self._record(StepEntered, case_id=cid, path=before.path, step=action.to_step,
                             from_step=action.from_step, reason=action.reason, at=self.now, state=state,
                             messages=tuple(dataclasses.replace(m) for m in rows))
            elif isinstance(action, NeedSlot):
                slot = first_slot(self.cal, action.earliest, self.slot_time)
                follow_ups.append(self.engine.assign_slot(state, slot, self.now, self.policy, self.cal))
            elif isinstance(action, OpenCase):
                self.open_case(action.path, start_step=action.start_step, due_at=action.due_at,
                               reason=action.reason, from_case=cid, pause_category=action.pause_category)
            elif isinstance(action, HandOver):
                # repository.persist picks the department's organisation from the postcode
                state = dataclasses.replace(state, organisation=self.review_organisation,
                                            reported_by=state.reported_by or before.organisation)
            elif isinstance(action, (RecordAppointment, AppointmentOutcome, ReferToCommission, Flag)):
                pass
            else:  # pragma: no cover - a new action type the simulator does not know
                raise SimError(f"unknown action {action!r}")
        self._check_views(cid, state, cause)
        self.states[cid] = state
        if before.status == "active" and state.status != "active":
            self._record(Closed, case_id=cid, at=self.now, outcome=state.outcome)
        for follow in follow_ups:
            self._persist(cid, follow, cause + "+slot")

    def _check_views(self, cid: int, state: CaseState, cause: str) -> None:
        """The engine's view of the messages must be what its actions did to the table."""
        mine = sorted((m.step, m.channel, m.seq, m.status, m.address_version) for m in self.table[cid])
        theirs = sorted((m.step, m.channel, m.seq, m.status, m.address_version) for m in state.messages)
        if mine != theirs:
            raise SimError(f"case {cid} ({cause}): engine state and actions disagree:\n"
                           f"  table  {mine}\n  engine {theirs}")

    # --- time ------------------------------------------------------------------------
    def _next_time(self) -> dt.datetime | None:
        times = [s.due_at for s in self.states.values() if s.status == "active" and s.due_at is not None]
        times += [m.not_before for m in self.all_messages() if m.status == PENDING]
        return min(times) + self.lag if times else None

    def _decide_due(self) -> bool:
        did = False
        for cid in sorted(self.states):
            for _ in range(50):
                s = self.states[cid]
                if s.status != "active" or s.due_at is None or s.due_at + self.lag > self.now:
                    break
                state = self.state(cid)
                decision = self.engine.decide(state, self.now, self.policy, self.cal)
                if decision.state.due_at is not None and decision.state.due_at + self.lag <= self.now \
                        and decision.state == state and not decision.actions:
                    raise SimError(f"case {cid} stays due at {self.now} and decide does nothing ({decision.note})")
                self._persist(cid, decision, "due")
                did = True
            else:
                raise SimError(f"case {cid} decided 50 times at {self.now}")
        return did

    def _send_due(self) -> bool:
        did = False
        due = sorted((m for m in self.all_messages() if m.status == PENDING and m.not_before + self.lag <= self.now),
                     key=lambda m: (m.not_before, m.id))
        for m in due:
            if m.status != PENDING:
                continue
            state = self.state(m.case_id)
            verdict = self.engine.send_verdict(state, m.view(), self.now, self.policy, self.cal)
            did = True
            if verdict == "send":
                m.status, m.sent_at = SENT, self.now
                self._record(Sent, case_id=m.case_id, step=m.step, channel=m.channel, seq=m.seq, at=self.now,
                             postage=m.postage, case_status=state.status, case_step=state.step,
                             case_phase=state.phase)
            elif verdict == "defer":
                later = self.cal.next_send_slot(self.now)
                if later <= self.now:
                    raise SimError(f"message {m.step}/{m.channel} deferred to {later}, not after {self.now}")
                m.not_before = later
                self.deferrals += 1
            elif verdict.startswith("cancel:"):
                m.status, m.reason = CANCELLED, verdict[7:]
                self.cancellations.append((m.case_id, m.step, m.channel, verdict[7:]))
            else:
                raise SimError(f"unknown verdict {verdict!r}")
        return did

    def run_until(self, until: dt.datetime) -> None:
        """Process, in time order, everything due up to ``until``; then now = until."""
        for _ in range(100_000):
            nxt = self._next_time()
            if nxt is None or nxt > until:
                break
            self.now = max(self.now, nxt)
            decided = self._decide_due()
            sent = self._send_due()
            if not decided and not sent:
                raise SimError(f"nothing progressed at {self.now}")
        else:  # pragma: no cover
            raise SimError("run_until did not converge")
        self.now = max(self.now, until)

    def advance(self, delta: dt.timedelta | None = None, **kw) -> None:
        delta = delta if delta is not None else dt.timedelta(**kw)
        self.run_until(self.now + delta)

    def advance_to(self, moment: dt.datetime) -> None:
        self.run_until(moment)

    # --- events ------------------------------------------------------------------------
    def _update_person(self, type_: str) -> None:
        p = self.person
        if type_ == "npai":
            p.npai = True
        elif type_ == "address_updated":
            p.npai, p.has_address = False, True
        elif type_ == "sms_failed":
            p.phone_unusable = True
        elif type_ == "sms_opt_out":
            p.sms_opt_out = True
        elif type_ == "phone_updated":
            p.has_phone, p.phone_unusable, p.sms_opt_out = True, False, False

    def event(self, type_: str, case_id: int | None = None, **params) -> Decision:
        """Apply an event now (to the active case) and process what becomes due at once."""
        self.run_until(self.now)
        cid = self.case_id if case_id is None else case_id
        if (type_ == "legitimate_reason" or params.get("decision") == "legitimate_reason") \
                and "category" not in params:
            params["category"] = "hospitalisation"  # the scenarios' default: a reason with an end date
        ev = Event(type=type_, at=self.now, **params)
        before = self.state(cid)
        decision = self.engine.apply(before, ev, self.now, self.policy, self.cal)
        self._update_person(type_)
        self._record(Applied, case_id=cid, event=ev, at=self.now, before=before, after=decision.state,
                     actions=decision.actions, note=decision.note)
        self._persist(cid, decision, f"event:{type_}")
        self.run_until(self.now)
        return decision

    # --- reading the logs ------------------------------------------------------------------
    def entered(self, cid: int | None = None) -> list[str]:
        return [e.step for e in self.steps if cid is None or e.case_id == cid]

    def entry(self, step: str, cid: int | None = None) -> StepEntered | None:
        for e in self.steps:
            if e.step == step and (cid is None or e.case_id == cid):
                return e
        return None

    def sent_for(self, step: str | None = None, channel: str | None = None, cid: int | None = None) -> list[Sent]:
        return [s for s in self.sent if (step is None or s.step == step) and (channel is None or s.channel == channel)
                and (cid is None or s.case_id == cid)]
