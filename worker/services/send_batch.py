"""Sending messages in batches, at most once each: claim, re-check and render together, call the
providers concurrently, record the outcomes together.

A batch (the ids of one send task) goes in waves of at most ``RELANCE_SEND_CONCURRENCY``
messages (fewer under a rate limit: about half a second of sending). Per wave:

1. one transaction: the wave's messages locked (in id order), each re-checked against its case
   just before sending (``engine.send_verdict``: deferred outside the window, cancelled when the
   case moved on), the rest claimed by one ``pending -> sending`` compare-and-set, rendered, and
   audited (one write); committed before any provider is called;
2. the provider calls, concurrently (a thread pool per process, pooled connections), each at its
   slot when the provider has a rate limit (:mod:`worker.adapters.rate_limit`);
3. one transaction records every answer (:func:`worker.services.send_outcome.record_outcome`);
   then what a refused number or address tells its case.

Never sent twice: a claimed message is never claimed again (only ``relance messages retry``
puts one back). A worker killed between 1 and 3 leaves its wave ``sending``: reconcile surfaces
it to ops, never resends it; the rest of the batch is still ``pending`` and the relay publishes
it again. A wave cut short by its time limit records the answers received, and puts back to
``pending`` the messages whose request never left.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from worker.adapters.channels.base import (
    OptOutError,
    OutgoingMessage,
    RecipientError,
    RetryableError,
    TechnicalError,
)
from worker.adapters.store import audit, repository
from worker.adapters.store.models import Case, Message, Person
from worker.adapters.store.session import session_scope
from worker.domain import engine
from worker.domain.model import PENDING, SENDING, MessageView
from worker.domain.postal import AddressError
from worker.services.message_content import build_context, missed_appointments, template_step
from worker.services.send_outcome import SendResult, apply_follow_up, record_outcome

log = logging.getLogger("relance.services")

WAVE_SECONDS = 0.5  # under a rate limit, a wave holds about this much sending
NOT_SENT = object()  # a request that never left (the wave was stopped first)


@dataclass
class Prepared:
    """A claimed, rendered message, ready for its provider."""

    message_id: int
    channel: str
    outgoing: OutgoingMessage
    template: tuple
    recipient: str  # what the provider is given: number, e-mail address, address lines


def send_messages(app, message_ids, now: dt.datetime,
                  clock: Callable[[], dt.datetime] | None = None) -> list[SendResult]:
    """Send a batch of messages (any channels), at most once each; one result per id, in order.

    ``now`` dates everything; with ``clock`` (the real clock), each wave is dated when it starts."""
    ids = list(dict.fromkeys(int(i) for i in message_ids))
    results: dict[int, SendResult] = {}
    with session_scope(app.db_url) as s:
        channels = dict(s.execute(select(Message.id, Message.channel).where(Message.id.in_(ids))).all())
    for message_id in ids:
        if message_id not in channels:
            results[message_id] = SendResult(message_id, "skipped", "unknown message")
    for channel in dict.fromkeys(channels[i] for i in ids if i in channels):
        group = [i for i in ids if channels.get(i) == channel]
        limiter = app.rate_limiter(channel)
        size = app.settings.send_concurrency
        if limiter is not None:
            size = max(1, min(size, math.ceil(WAVE_SECONDS / limiter.interval)))
        for start in range(0, len(group), size):
            wave = group[start:start + size]
            slots = limiter.reserve(len(wave)) if limiter is not None else None
            if slots is not None:
                time.sleep(max(0.0, slots.at(0) - time.monotonic()))
            moment = clock() if clock is not None else now
            results.update(_send_wave(app, wave, moment, slots))
    return [results[i] for i in ids]


def _send_wave(app, ids: list[int], now: dt.datetime, slots) -> dict[int, SendResult]:
    results, ready = _with_retries(lambda: _prepare(app, ids, now))
    if not ready:
        return results
    outcomes, interrupted = _deliver(app, ready, slots)
    try:
        results.update(_with_retries(lambda: _record(app, outcomes, now)))
    except BaseException:
        log.error("outcomes of %d sends not recorded: left 'sending', surfaced by reconcile", len(outcomes))
        raise
    if interrupted is not None:
        raise interrupted
    return results


def _with_retries(fn, attempts: int = 3):
    """Run a transaction again when PostgreSQL aborted it for a deadlock or a serialization failure."""
    for attempt in range(attempts):
        try:
            return fn()
        except DBAPIError as exc:
            code = getattr(getattr(exc, "orig", None), "sqlstate", None)
            if code not in ("40P01", "40001") or attempt == attempts - 1:
                raise
            log.warning("send transaction aborted (%s), run again", code)
    raise AssertionError("unreachable")


def _prepare(app, ids: list[int], now: dt.datetime) -> tuple[dict[int, SendResult], list[Prepared]]:
    """One transaction: lock, re-check, claim, render and audit the wave's messages."""
    results: dict[int, SendResult] = {}
    ready: list[Prepared] = []
    with session_scope(app.db_url) as s, audit.buffered(s):
        q = select(Message).where(Message.id.in_(ids)).order_by(Message.id)
        if s.bind.dialect.name == "postgresql":
            q = q.with_for_update()  # in id order: a duplicate batch waits, then finds them claimed
        msgs = s.execute(q).scalars().all()
        due = [m for m in msgs if m.status == PENDING and m.not_before <= now]
        for m in msgs:
            if m.status != PENDING:
                results[m.id] = SendResult(m.id, "skipped", f"already {m.status}")
            elif m.not_before > now:
                results[m.id] = SendResult(m.id, "skipped", "not yet due")
        case_ids = {m.case_id for m in due}
        cases = {c.id: c for c in s.execute(select(Case).where(Case.id.in_(case_ids))
                                            .options(selectinload(Case.messages))).scalars()} if due else {}
        persons = {p.id: p for p in s.execute(select(Person).where(
            Person.id.in_({c.person_id for c in cases.values()}))).scalars()} if due else {}
        claim = []
        for m in due:
            case = cases[m.case_id]
            verdict = engine.send_verdict(repository.to_state(case),
                                          MessageView(m.step, m.channel, m.seq, m.status, m.address_version, m.id),
                                          now, app.policy, app.calendar)
            if verdict == "defer":
                m.not_before = app.calendar.next_send_slot(now)
                m.enqueued_at = None
                results[m.id] = SendResult(m.id, "deferred", m.not_before.isoformat())
            elif verdict.startswith("cancel:"):
                repository.set_message_status(s, m, "cancelled", now, reason=verdict[7:])
                results[m.id] = SendResult(m.id, "cancelled", verdict[7:])
            else:
                claim.append(m)
        s.flush()
        won = set(s.execute(update(Message).where(Message.id.in_([m.id for m in claim]), Message.status == PENDING)
                            .values(status=SENDING, claimed_at=now, status_at=now, attempts=Message.attempts + 1)
                            .returning(Message.id).execution_options(synchronize_session=False)).scalars()) \
            if claim else set()
        missed = missed_appointments(s, {m.case_id for m in claim if m.id in won}) if won else {}
        for m in claim:
            if m.id not in won:
                results[m.id] = SendResult(m.id, "skipped", "claimed by another worker")
                continue
            set_committed_value(m, "status", SENDING)
            set_committed_value(m, "attempts", (m.attempts or 0) + 1)
            audit.append(s, at=now, kind="message", case_id=m.case_id, entity_id=m.id,
                         data={"step": m.step, "channel": m.channel, "seq": m.seq, "status": SENDING})
            case = cases[m.case_id]
            prepared = _render(s, app, m, case, persons[case.person_id], now, missed.get(case.id), results)
            if prepared is not None:
                ready.append(prepared)
    return results, ready


def _render(s, app, msg: Message, case: Case, person: Person, now: dt.datetime, last_missed,
            results: dict) -> Prepared | None:
    try:
        ctx = build_context(s, app, msg, case, person, now, last_missed=last_missed)
        rendered = app.renderer.render(template_step(app, msg, case), msg.channel, ctx)
    except Exception as exc:  # noqa: BLE001 - recorded and surfaced, never swallowed
        kind = "failed" if isinstance(exc, AddressError) else "technical-failure"
        # The reason, never the refused value (« name », « street »…): no personal data in the audit log.
        masked = re.sub(r"«[^»]*»", "«…»", str(exc))
        repository.set_message_status(s, msg, kind, now, error=f"{type(exc).__name__}: {masked}"[:500])
        if isinstance(exc, AddressError):
            audit.append(s, at=now, kind="case", case_id=case.id, entity_id=case.id,
                         data={"flag": "address_invalid", "detail": masked[:200]})
        log.warning("message %s not rendered: %s", msg.id, type(exc).__name__)
        results[msg.id] = SendResult(msg.id, kind, str(exc))
        return None
    to = {"sms": person.phone, "email": person.email, "letter": "\n".join(ctx["person"].address_lines)}[msg.channel]
    org = app.territory.organisations[case.organisation]
    outgoing = OutgoingMessage(
        message_id=msg.id, reference=msg.reference, channel=msg.channel, step=msg.step,
        organisation=case.organisation, case_reference=case.reference, to=to or "",
        subject=rendered.subject, text=rendered.text, html=rendered.html, postage=msg.postage,
        sender_name=org.name, reply_to=org.email if msg.channel == "email" else None,
        extra={"day": app.calendar.local_date(now).isoformat()})
    return Prepared(msg.id, msg.channel, outgoing,
                    (rendered.template_name, rendered.template_version, rendered.content_hash), to or "")


_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def _pool(size: int) -> ThreadPoolExecutor:
    """This process's senders (created after a fork: threads do not survive one)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid() or _POOL[1]._max_workers != size:
            _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=size, thread_name_prefix="relance-send"))
        return _POOL[1]


def _call(app, item: Prepared, deadline: float | None, stop: threading.Event):
    if deadline is not None and stop.wait(max(0.0, deadline - time.monotonic())):
        return item, None, NOT_SENT
    if stop.is_set():
        return item, None, NOT_SENT
    try:
        return item, app.channel(item.channel).send(item.outgoing), None
    except (RetryableError, RecipientError, OptOutError, TechnicalError) as exc:
        return item, None, exc
    except Exception as exc:  # noqa: BLE001 - an unknown error is a technical failure, visible to ops
        return item, None, TechnicalError(f"{type(exc).__name__}")


def _deliver(app, items: list[Prepared], slots) -> tuple[list, BaseException | None]:
    """Every provider call of the wave, concurrently; (answers, the interruption if the wave was cut)."""
    stop = threading.Event()
    deadlines = [slots.at(i) if slots is not None else None for i in range(len(items))]
    if len(items) == 1 or app.settings.send_concurrency == 1:
        outcomes = []
        try:
            for item, deadline in zip(items, deadlines):
                outcomes.append(_call(app, item, deadline, stop))
        except BaseException as exc:  # noqa: BLE001 - the time limit: what was not sent goes back
            return outcomes + [(item, None, NOT_SENT) for item in items[len(outcomes):]], exc
        return outcomes, None
    pool = _pool(app.settings.send_concurrency)
    futures = [pool.submit(_call, app, item, deadline, stop) for item, deadline in zip(items, deadlines)]
    try:
        return [f.result() for f in futures], None
    except BaseException as exc:  # noqa: BLE001 - SoftTimeLimitExceeded and the like, in this thread
        stop.set()
        outcomes = []
        for item, f in zip(items, futures):
            if f.cancel():
                outcomes.append((item, None, NOT_SENT))  # never started: never sent
            elif f.done() or _wait(f):
                outcomes.append(f.result())
            # else: still talking to the provider: left "sending" (surfaced by reconcile)
        return outcomes, exc


def _wait(future, seconds: float = 2.0) -> bool:
    try:
        future.result(timeout=seconds)
        return True
    except Exception:  # noqa: BLE001 - a timeout: the request is still out
        return False


def _record(app, outcomes: list, now: dt.datetime) -> dict[int, SendResult]:
    """One transaction: every answer of the wave; then what refused numbers tell their cases."""
    results: dict[int, SendResult] = {}
    follow_ups, contacted = [], set()
    ids = [item.message_id for item, _, _ in outcomes]
    if not ids:
        return results
    with session_scope(app.db_url) as s, audit.buffered(s):
        # Lock the rows before reading them: the provider's status callbacks may be recording
        # delivery receipts for these very messages at the same time.
        s.execute(update(Message).where(Message.id.in_(ids)).values(status=Message.status)
                  .execution_options(synchronize_session=False))
        msgs = {m.id: m for m in s.execute(select(Message).where(Message.id.in_(ids))).scalars()}
        for item, delivery, error in outcomes:
            msg = msgs.get(item.message_id)
            if msg is None:  # purged meanwhile
                results[item.message_id] = SendResult(item.message_id, "skipped", "unknown message")
                continue
            if error is NOT_SENT:
                if msg.status == SENDING:  # the request never left: back to the outbox
                    msg.attempts = max(0, (msg.attempts or 1) - 1)
                    msg.enqueued_at = msg.claimed_at = None
                    repository.set_message_status(s, msg, PENDING, now)
                results[msg.id] = SendResult(msg.id, "skipped", "not sent (interrupted)")
                continue
            result, follow, case_id = record_outcome(s, msg, delivery, error, item.template, now,
                                                     recipient=item.recipient)
            results[msg.id] = result
            if follow is not None:
                follow_ups.append(follow)
            if case_id is not None:
                contacted.add(case_id)
        if contacted:
            persons = select(Case.person_id).where(Case.id.in_(contacted)).scalar_subquery()
            s.execute(update(Person).where(Person.id.in_(persons)).values(last_contact_at=now)
                      .execution_options(synchronize_session=False))
    for follow in follow_ups:
        try:
            apply_follow_up(app, follow, now)
        except Exception:  # noqa: BLE001 - the message is recorded; the case learns it at the next receipt
            log.exception("message %s: refusal not applied to its case", follow.message_id)
    return results
