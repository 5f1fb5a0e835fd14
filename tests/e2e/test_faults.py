"""Faults on the real topology (worker subprocesses, real Redis, real PostgreSQL).

Each test ends on the same promise: every planned message went out exactly
once (the fake Twilio accepted each message id at most once; e-mails and
letters written once; one "sent" audit entry each), nothing planned was lost
(no message left pending), and the only messages not sent are the ones a
crash interrupted mid-send: those are surfaced as technical failures
("interrompu pendant l'envoi") and never resent.

The jobs (sweep, relay, reconcile) are run from the test with a simulated
working-day "now" that travels with each task (see conftest.SIM_NOW): the
worker processes do the sending. Later "nows" stand for the scheduler's next
runs (the relay re-enqueues what was enqueued more than 5 minutes ago and is
still pending; reconcile surfaces what has been "sending" for longer than
RELANCE_SENDING_TIMEOUT_MINUTES, 15).
"""
from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from tests.e2e.conftest import INTERRUPTED, SAMPLE_CASES, SAMPLE_FLUX, SIM_NOW, assert_exactly_once
from worker.entrypoints import jobs
from worker.entrypoints import queues
from worker.services import ingest
from worker.adapters.store.models import AuditEntry, Case, InboundEvent, Lock, Message, Person
from worker.adapters.store.session import session_scope
from worker.entrypoints.scheduler import LeaderScheduler
from worker.entrypoints.tasks import cases as case_tasks
from worker.entrypoints.tasks import maintenance
from worker.entrypoints.tasks import sms as sms_tasks

pytestmark = pytest.mark.e2e

MIN = dt.timedelta(minutes=1)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat()


def _sending_ids(stack) -> set[int]:
    return {m["id"] for m in stack.messages() if m["status"] == "sending"}


def _reconcile_through_the_worker(stack, now: dt.datetime) -> None:
    """The scheduler's reconcile job, as the maintenance task, run by a worker."""
    result = maintenance.reconcile.apply_async(args=[_iso(now)])
    outcome = stack.wait_tasks([result.id])[0]
    assert not outcome.startswith("raised"), outcome


def test_worker_killed_mid_send(stack):
    """SIGKILL a worker (and its pool) while SMS are in flight at Twilio; a new worker takes over."""
    stack.fake.latency = 1.0  # each SMS request takes 1 s at "Twilio"
    first = stack.start_worker("first", queues.ALL, concurrency=2)
    stack.ingest_and_plan(SIM_NOW)
    jobs.relay(stack.app, SIM_NOW)
    stack.wait_until(lambda: stack.fake.started >= 3 and any(
        m["status"] == "sending" and m["channel"] == "sms" for m in stack.messages()), 60,
        "SMS in flight at the fake Twilio", procs=[first])

    first.kill()
    interrupted = _sending_ids(stack)
    assert interrupted, "nothing was in flight when the worker died"
    stack.fake.latency = 0
    sent_before = {m["id"] for m in stack.messages() if m["status"] == "sent"}

    second = stack.start_worker("second", queues.ALL, concurrency=2)
    # The tasks the dead worker had reserved stay unacknowledged in Redis (until the
    # visibility timeout); the rest of the queue goes to the new worker. Next relay
    # run: whatever is still pending is enqueued again.
    stack.wait_until(lambda: not any(stack.queue_lengths().values()), 60, "queues drained", procs=[second])
    jobs.relay(stack.app, SIM_NOW + 6 * MIN)
    stack.wait_until(lambda: {m["id"] for m in stack.unsettled(SIM_NOW)} <= interrupted, 60,
                     "everything not interrupted sent", procs=[second])
    assert _sending_ids(stack) == interrupted  # never picked up again while "sending"

    # Reconcile after the sending timeout: surfaced to ops, not resent.
    _reconcile_through_the_worker(stack, SIM_NOW + 16 * MIN)
    after = {m["id"]: m for m in stack.messages()}
    for mid in interrupted:
        assert after[mid]["status"] == "technical-failure", after[mid]
        assert after[mid]["error"].startswith(INTERRUPTED)

    # Even if the broker redelivers the killed tasks (after its visibility timeout), or the
    # relay runs again, nothing interrupted is sent a second time.
    seen = stack.fake.message_id_counts()
    redelivered = [sms_tasks.send.apply_async(args=[mid, _iso(SIM_NOW + 20 * MIN)])
                   for mid in interrupted if after[mid]["channel"] == "sms"]
    outcomes = stack.wait_tasks([r.id for r in redelivered])
    assert all(o == "'skipped'" for o in outcomes), outcomes
    assert jobs.relay(stack.app, SIM_NOW + 30 * MIN) == 0
    assert stack.fake.message_id_counts() == seen

    summary = assert_exactly_once(stack, SIM_NOW, interrupted=interrupted)
    assert summary["by_status"].get("technical-failure", 0) == len(interrupted)
    assert sent_before <= {m["id"] for m in stack.messages() if m["status"] == "sent"}
    print(f"\nworker killed: {len(interrupted)} interrupted, {summary}")


def test_worker_killed_in_the_middle_of_a_batch(stack):
    """Issue 15: one send task carries a batch of 8 SMS, sent in waves of 2. SIGKILL the worker
    while the second wave is at Twilio: the first wave is recorded sent, the second is surfaced
    (never resent: Twilio may have it), the last four, never claimed, go out once; the batch task
    itself, redelivered by Redis, does nothing."""
    stack.fake.latency = 1.0
    planner = stack.start_worker("cases", (queues.CASES,), concurrency=2)
    stack.ingest_and_plan(SIM_NOW)
    planner.stop()
    sms_due = sorted((m for m in stack.messages() if m["channel"] == "sms" and m["status"] == "pending"
                      and m["not_before"] <= SIM_NOW), key=lambda m: (m["not_before"], m["id"]))
    assert len(sms_due) >= 10
    batch = [m["id"] for m in sms_due[:8]]  # the relay's first SMS task (its order)
    stack.app.settings.send_batch_size = 8
    sender = stack.start_worker("sms", (queues.SMS,), concurrency=1,
                                extra_env={"RELANCE_SEND_BATCH_SIZE": "8", "RELANCE_SEND_CONCURRENCY": "2"})
    jobs.relay(stack.app, SIM_NOW)

    def statuses() -> dict[int, str]:
        return {m["id"]: m["status"] for m in stack.messages() if m["id"] in batch}

    stack.wait_until(lambda: stack.fake.started >= 4 and list(statuses().values()).count("sent") == 2
                     and list(statuses().values()).count("sending") == 2, 60,
                     "the second wave of the first batch at the fake Twilio", procs=[sender])
    sender.kill()
    at_kill = statuses()
    interrupted = {i for i, st in at_kill.items() if st == "sending"}
    assert sorted(at_kill.values()) == ["pending"] * 4 + ["sending"] * 2 + ["sent"] * 2, at_kill
    assert set(batch[:2]) == {i for i, st in at_kill.items() if st == "sent"}  # waves in the batch's order
    assert interrupted == set(batch[2:4])
    stack.fake.latency = 0

    # The other queues, and the rest: relayed again once the sms queue has drained.
    worker = stack.start_worker("w", queues.ALL, concurrency=2)
    stack.wait_until(lambda: not any(stack.queue_lengths().values()), 60, "queues drained", procs=[worker])
    jobs.relay(stack.app, SIM_NOW + 6 * MIN)
    stack.wait_until(lambda: {m["id"] for m in stack.unsettled(SIM_NOW)} <= interrupted, 60,
                     "everything but the interrupted wave sent", procs=[worker])
    assert {i for i, st in statuses().items() if st == "sent"} == set(batch) - interrupted
    _reconcile_through_the_worker(stack, SIM_NOW + 16 * MIN)

    # Redis hands the killed batch task out again (its visibility timeout): nothing is sent again.
    seen = stack.fake.message_id_counts()
    again = sms_tasks.send_batch.apply_async(args=[batch, _iso(SIM_NOW + 20 * MIN)])
    [outcome] = stack.wait_tasks([again.id])
    assert outcome == "{'skipped': 8}", outcome
    assert stack.fake.message_id_counts() == seen
    summary = assert_exactly_once(stack, SIM_NOW, interrupted=interrupted)
    assert summary["by_status"].get("technical-failure", 0) == len(interrupted)
    print(f"\nkilled mid-batch: 2 sent, {len(interrupted)} interrupted, 4 sent after the restart; {summary}")


def test_redis_restarted_during_a_run(stack, redis_server):
    """Redis restarts (without persistence: every queued task is lost) while SMS are being sent."""
    stack.fake.latency = 0.3
    worker = stack.start_worker("w", queues.ALL, concurrency=2)
    stack.ingest_and_plan(SIM_NOW)
    jobs.relay(stack.app, SIM_NOW)
    stack.wait_until(lambda: len(stack.fake.messages) >= 3, 60, "first SMS accepted", procs=[worker])

    redis_server.restart()
    assert not any(stack.queue_lengths().values())  # the queued sends are gone
    lost = len(stack.unsettled(SIM_NOW))
    assert lost > 0
    stack.fake.latency = 0

    # The worker reconnects by itself. Now and then kombu (5.x) trips over the lost
    # connection while requeueing its unacknowledged messages and the worker exits, with
    # status 0: its supervisor starts it again (compose `restart: unless-stopped`, systemd
    # `Restart=always`; docs/ops.md). Do the same here: the guarantees must hold either way.
    stack.wait_until(lambda: worker.log().count("Connected to redis") >= 2 or not worker.alive(), 60,
                     "the worker back on Redis (or exited)")
    restarted = not worker.alive()
    if restarted:
        assert "Connection to broker lost" in worker.log(), worker.tail()
        worker.stop()
        worker = stack.start_worker("w", queues.ALL, concurrency=2)
    # In-flight sends finish (their outcome goes to PostgreSQL, not Redis); a send cut by an
    # exiting worker stays "sending" and is reconciled below.
    stack.wait_until(lambda: not _sending_ids(stack) or restarted, 30, "in-flight sends finished",
                     procs=[worker])
    interrupted = _sending_ids(stack)

    # The next relay run re-enqueues every message the database still has pending.
    pending = len(stack.unsettled(SIM_NOW)) - len(interrupted)
    relayed = jobs.relay(stack.app, SIM_NOW + 6 * MIN)
    assert relayed == pending > 0
    stack.wait_until(lambda: {m["id"] for m in stack.unsettled(SIM_NOW)} <= interrupted, 60,
                     "every message sent after the restart", procs=[worker])
    if interrupted:
        _reconcile_through_the_worker(stack, SIM_NOW + 20 * MIN)
    summary = assert_exactly_once(stack, SIM_NOW, interrupted=interrupted)
    assert summary["by_status"].get("technical-failure", 0) == len(interrupted)
    print(f"\nredis restarted: {lost} messages unsettled at the restart, {relayed} re-enqueued, "
          f"worker {'exited and was restarted' if restarted else 'reconnected'}, "
          f"{len(interrupted)} interrupted, {summary}")


def test_postgres_unreachable_for_a_while(stack, pg_server):
    """PostgreSQL stops while sends are in flight; jobs and tasks fail meanwhile; then it comes back."""
    stack.fake.latency = 0.3
    worker = stack.start_worker("w", queues.ALL, concurrency=2)
    stack.ingest_and_plan(SIM_NOW)
    jobs.relay(stack.app, SIM_NOW)
    stack.wait_until(lambda: len(stack.fake.messages) >= 3, 60, "first SMS accepted", procs=[worker])

    pg_server.stop()
    try:
        # The scheduler cannot renew its lease: it runs nothing until the database is back.
        assert LeaderScheduler(stack.app, interval_seconds=1).is_leader() is False
        # Its jobs, run anyway, fail (it would log them and retry at its next run).
        with pytest.raises(OperationalError):
            jobs.relay(stack.app, SIM_NOW + 6 * MIN)
        with pytest.raises(OperationalError):
            jobs.sweep(stack.app, SIM_NOW + 6 * MIN)
        # The worker keeps consuming: each send fails before anything is sent (the claim
        # needs the database) and the task is dropped: the database still says "pending".
        stack.wait_until(lambda: not any(stack.queue_lengths().values()), 60,
                         "queued tasks consumed (and failed) while PostgreSQL is down", procs=[worker])
        time.sleep(1)  # the last ones finish failing
        assert worker.alive()
        at_fake_during_outage = sum(stack.fake.message_id_counts().values())
    finally:
        pg_server.start()
    stack.fake.latency = 0

    # Back: messages whose outcome could not be recorded are "sending" (the provider may
    # have them): those are never resent. Everything else pending is relayed again.
    interrupted = _sending_ids(stack)
    relayed = jobs.relay(stack.app, SIM_NOW + 6 * MIN)
    assert relayed > 0
    stack.wait_until(lambda: {m["id"] for m in stack.unsettled(SIM_NOW)} <= interrupted, 60,
                     "every message sent once PostgreSQL is back", procs=[worker])
    _reconcile_through_the_worker(stack, SIM_NOW + 20 * MIN)
    summary = assert_exactly_once(stack, SIM_NOW, interrupted=interrupted)
    assert summary["by_status"].get("technical-failure", 0) == len(interrupted)
    assert "OperationalError" in worker.log()  # the failures were real
    print(f"\npostgres down: {at_fake_during_outage} SMS accepted before/while down, "
          f"{len(interrupted)} interrupted, {relayed} relayed after, {summary}")


def test_same_event_delivered_twice(stack):
    """The same agent event reaches the workers twice (two tasks, same idempotency key): applied once."""
    worker = stack.start_worker("w", (queues.CASES,), concurrency=2)
    stack.ingest_and_plan(SIM_NOW)
    with session_scope(stack.pg_url) as s:  # someone invited on the CD path
        case_id, external_id = s.execute(
            select(Case.id, Person.external_id).join(Person, Case.person_id == Person.id)
            .where(Case.step == "invitation_1", Case.path == "cd").order_by(Case.id).limit(1)).one()

    key = "agenda-cdas:rdv:4242"
    kwargs = {"external_id": external_id, "type": "rdv_booked", "now_iso": _iso(SIM_NOW + 60 * MIN),
              "idempotency_key": key, "appointment_at": _iso(SIM_NOW + dt.timedelta(days=7)), "source": "api"}
    first, second = (case_tasks.apply_event.apply_async(kwargs=kwargs) for _ in range(2))
    outcomes = stack.wait_tasks([first.id, second.id])
    statuses = sorted(o.split("'status': '")[1].split("'")[0] for o in outcomes)
    assert statuses == ["applied", "duplicate"], outcomes
    # A third delivery, much later: still the same event.
    third = case_tasks.apply_event.apply_async(kwargs=kwargs)
    assert "'status': 'duplicate'" in stack.wait_tasks([third.id])[0]

    with session_scope(stack.pg_url) as s:
        events = s.execute(select(InboundEvent).where(  # keys are stored scoped: <person id>:<type>:<key>
            InboundEvent.idempotency_key.endswith(f":rdv_booked:{key}"))).scalars().all()
        assert len(events) == 1 and events[0].status == "applied"
        audited = [d for (d,) in s.execute(select(AuditEntry.data).where(
            AuditEntry.kind == "event", AuditEntry.case_id == case_id))]
        assert [d["type"] for d in audited] == ["rdv_booked"]
        reminders = s.execute(select(Message).where(Message.case_id == case_id,
                                                    Message.step == "rdv_reminder")).scalars().all()
        assert len(reminders) <= 1  # planned once, if the path has a reminder
    assert worker.alive()


def _lease(stack) -> tuple[str, dt.datetime] | None:
    with session_scope(stack.pg_url) as s:
        row = s.execute(select(Lock.owner, Lock.expires_at).where(Lock.name == "scheduler")).one_or_none()
        return (row[0], row[1]) if row else None


def _owner_pid(owner: str) -> int:
    return int(owner.split(":")[-2])


def test_two_schedulers_one_leader(stack):
    """Two `relance scheduler` at once: one holds the lease; kill it, the other takes over after expiry."""
    interval, lease = 0.5, 2.0
    a = stack.start_scheduler(interval=interval, lease=lease, name="scheduler-a")
    b = stack.start_scheduler(interval=interval, lease=lease, name="scheduler-b")
    by_pid = {a.pid: a, b.pid: b}
    stack.wait_until(lambda: _lease(stack) is not None, 60, "a scheduler to take the lease", procs=[a, b])

    # For a few seconds (several runs of both), the same one holds it and renews it.
    owners, expiries = set(), []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        owner, expires = _lease(stack)
        owners.add(owner)
        expiries.append(expires)
        time.sleep(0.1)
    assert len(owners) == 1, owners
    leader_owner = owners.pop()
    assert _owner_pid(leader_owner) in by_pid
    assert expiries[-1] > expiries[0]  # renewed at each run
    leader = by_pid[_owner_pid(leader_owner)]
    follower = b if leader is a else a

    leader.kill()  # no release: the lease has to expire
    last_expiry = _lease(stack)[1]
    stack.wait_until(lambda: _owner_pid(_lease(stack)[0]) == follower.pid, lease + interval + 15,
                     "the other scheduler to take over", procs=[follower])
    taken_at = dt.datetime.now(dt.timezone.utc)
    assert taken_at >= last_expiry - dt.timedelta(seconds=0.2), "lease taken before it expired"
    first_expiry = _lease(stack)[1]
    stack.wait_until(lambda: _lease(stack)[1] > first_expiry, 10, "the new leader renewing", procs=[follower])
    assert follower.alive()
    print(f"\nschedulers: takeover {(taken_at - last_expiry).total_seconds():+.2f}s after the old lease expired")


def test_sweep_and_relay_through_the_maintenance_queue(stack):
    """The scheduler's jobs as maintenance tasks, run by a worker: the whole flow stays exactly once
    even when every job runs twice (two schedulers' worth of runs)."""
    worker = stack.start_worker("w", queues.ALL, concurrency=2)
    ingest.ingest_file(stack.app, SAMPLE_FLUX, SIM_NOW)
    sweeps = [maintenance.sweep.apply_async(args=[_iso(SIM_NOW)]) for _ in range(2)]
    stack.wait_tasks([r.id for r in sweeps])
    stack.wait_until(lambda: len({m["case_id"] for m in stack.messages()}) == SAMPLE_CASES, 60,
                     "messages planned", procs=[worker])
    relays = [maintenance.relay.apply_async(args=[_iso(SIM_NOW)]) for _ in range(2)]
    stack.wait_tasks([r.id for r in relays])
    stack.wait_until(lambda: not stack.unsettled(SIM_NOW), 60, "every message sent", procs=[worker])
    summary = assert_exactly_once(stack, SIM_NOW)
    assert summary["by_status"] == {"sent": summary["due"]}


def _queued_ids(stack) -> list[int]:
    """The message ids of the send tasks waiting in Redis (kombu's JSON envelope, base64 body; a
    task carries a batch of ids)."""
    import base64
    import json

    import redis

    client = redis.Redis.from_url(stack.redis_url, socket_timeout=2)
    ids = []
    try:
        for queue in (queues.SMS, queues.LETTERS, queues.EMAIL):
            for raw in client.lrange(queue, 0, -1):
                envelope = json.loads(raw)
                args = json.loads(base64.b64decode(envelope["body"]))[0]
                ids.extend(int(i) for i in (args[0] if isinstance(args[0], list) else [args[0]]))
    finally:
        client.close()
    return ids


def test_queues_stay_bounded_with_the_workers_down_for_an_hour(stack):
    """Issue 11: with the workers down, the relay re-published every pending message every 5 minutes
    (3 187 pending became 18 690 queued in an hour). Now: the scheduler's cycle every simulated minute
    for an hour (an injected clock, no sleeping) leaves each pending message queued once; when a
    worker comes back, everything goes out exactly once."""
    planner = stack.start_worker("cases", (queues.CASES,), concurrency=2)
    stack.ingest_and_plan(SIM_NOW)
    stack.wait_until(lambda: not stack.queue_lengths()[queues.CASES], 30, "advance tasks done", procs=[planner])
    planner.stop()  # from here on, no worker at all
    pending = {m["id"] for m in stack.messages() if m["status"] == "pending" and m["not_before"] <= SIM_NOW}
    assert pending

    lengths = []
    for minute in range(61):
        counts = jobs.scheduler_cycle(stack.app, SIM_NOW + minute * MIN)
        assert None not in counts.values(), counts
        lengths.append(len(_queued_ids(stack)))  # messages queued (in batch tasks)
    queued = _queued_ids(stack)
    assert sorted(queued) == sorted(pending), "each pending message queued exactly once"
    assert max(lengths) == len(pending), lengths
    print(f"\nworkers down for a simulated hour: {len(pending)} pending, queue length at most {max(lengths)} "
          f"(was one more copy of each every 5 minutes)")

    worker = stack.start_worker("w", queues.ALL, concurrency=2)
    stack.wait_until(lambda: not stack.unsettled(SIM_NOW), 60, "every message sent once the workers are back",
                     procs=[worker])
    summary = assert_exactly_once(stack, SIM_NOW)
    assert summary["by_status"] == {"sent": summary["due"]}
