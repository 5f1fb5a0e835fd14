"""The production topology, for real: Celery workers, the scheduler and the API as
subprocesses (``python -m worker.entrypoints.cli worker|scheduler|api``) on a real Redis and
a real PostgreSQL, SMS through a fake Twilio that posts signed status callbacks
to the API.

- ``test_scheduler_drives_everything_on_the_real_clock``: nothing is driven from
  the test: a flux file dropped in the inbox is ingested, swept, relayed and
  sent by the processes alone (scheduler jobs every second instead of every
  minute: ``RELANCE_SCHEDULER_INTERVAL_SECONDS``). On the real clock, so SMS and
  e-mails go out on working days only: on a weekend or a public holiday the test
  checks they are deferred to the next sending slot instead, and never sent.
- ``test_sms_email_letters_and_callbacks_on_a_working_day``: the jobs are run
  from the test with a simulated working-day "now" that travels with each task,
  so the SMS/e-mail path and the callbacks are exercised whatever the day.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import time

import pytest

from tests.e2e.conftest import (
    SAMPLE_CASES,
    SAMPLE_FLUX,
    SIM_NOW,
    TERMINAL_SENT,
    assert_exactly_once,
    due_by,
)
from worker.entrypoints import jobs
from worker.entrypoints import queues

pytestmark = pytest.mark.e2e

UTC = dt.timezone.utc
FRONT_QUEUES = (queues.INGEST, queues.CASES, queues.MAINTENANCE)
SEND_QUEUES = (queues.SMS, queues.LETTERS, queues.EMAIL)


def _no_task_errors(procs) -> None:
    for proc in procs:
        log = proc.log()
        bad = [line for line in log.splitlines() if " raised " in line or "Traceback" in line or " ERROR " in line]
        assert not bad, f"{proc.name} logged errors:\n" + "\n".join(bad[:20])


def test_scheduler_drives_everything_on_the_real_clock(stack):
    t0 = time.monotonic()
    front = stack.start_worker("front", FRONT_QUEUES, concurrency=2, wait=False)
    send = stack.start_worker("send", SEND_QUEUES, concurrency=2, wait=False)
    api = stack.maybe_start_api(wait=False)
    stack.wait_ready(front, send, api)
    scheduler = stack.start_scheduler(interval=1)
    procs = [front, send, scheduler] + ([api] if api else [])

    inbox = stack.app.settings.inbox
    inbox.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLE_FLUX, inbox / ".incoming.tmp")
    (inbox / ".incoming.tmp").rename(inbox / SAMPLE_FLUX.name)  # appears atomically
    done = inbox / "done"
    stack.wait_until(lambda: any(done.glob(f"*_{SAMPLE_FLUX.name}")), 60, "the inbox file ingested", procs=procs)
    report = json.loads(next(done.glob("*.report.json")).read_text(encoding="utf-8"))
    assert report["status"] == "done" and report["cases_opened"] == SAMPLE_CASES, report

    def settled() -> bool:
        messages = stack.messages()
        now = dt.datetime.now(UTC)
        return (len({m["case_id"] for m in messages}) == SAMPLE_CASES
                and not [m for m in messages if m["not_before"] <= now and m["status"] in ("pending", "sending")])

    stack.wait_until(settled, 90, "every due message handled by the workers", procs=procs)
    now = dt.datetime.now(UTC)
    cal = stack.app.calendar
    messages = stack.messages()
    at_fake = stack.fake.message_id_counts()
    due = due_by(messages, now)
    later = [m for m in messages if m not in due]

    # Letters go out every day; on working days SMS and e-mails too (window 00:00-23:59).
    letters = [m for m in messages if m["channel"] == "letter"]
    assert letters and all(m["status"] == "sent" for m in letters), letters
    assert len(stack.letter_files()) == len(letters)
    summary = assert_exactly_once(stack, now)
    # What is not due yet waits for a sending slot and never reached a provider.
    for m in later:
        assert m["status"] == "pending" and at_fake[m["id"]] == 0, m
        assert cal.in_window(m["not_before"]), m
    if not cal.in_window(now):
        assert not at_fake, "SMS sent outside the sending window"
        assert {m["channel"] for m in later} >= {"sms"}, "nothing deferred on a non-working day?"

    sms_sent = [m for m in due if m["channel"] == "sms" and m["status"] in TERMINAL_SENT]
    if api and sms_sent:
        stack.fake.wait_idle(timeout=30)
        stack.wait_until(lambda: all(m["status"] == "delivered" for m in stack.messages()
                                     if m["id"] in {s["id"] for s in sms_sent}),
                         30, "delivery callbacks applied by the API", procs=procs)

    # The scheduler holds the lease; nothing crashed; no task failed.
    assert all(p.alive() for p in procs)
    _no_task_errors([front, send])
    print(f"\nreal clock ({cal.local(now):%A %H:%M}): {summary}, {len(later)} deferred, "
          f"{time.monotonic() - t0:.1f}s")


def test_sms_email_letters_and_callbacks_on_a_working_day(stack):
    t0 = time.monotonic()
    api = stack.start_api(wait=False)  # skips if worker/entrypoints/api.py is missing
    front = stack.start_worker("front", FRONT_QUEUES, concurrency=1, wait=False)
    send = stack.start_worker("send", SEND_QUEUES, concurrency=2, wait=False)
    procs = [front, send, api]
    stack.wait_ready(*procs)

    stack.ingest_and_plan(SIM_NOW)
    planned = due_by(stack.messages(), SIM_NOW)
    assert {m["channel"] for m in planned} == {"sms", "email", "letter"}
    assert jobs.relay(stack.app, SIM_NOW) == len(planned)
    stack.wait_until(lambda: not stack.unsettled(SIM_NOW), 60, "every planned message sent", procs=procs)

    stack.fake.wait_idle(timeout=30)
    sms = [m for m in planned if m["channel"] == "sms"]
    callbacks = stack.fake.callbacks
    assert len(callbacks) == 2 * len(sms)  # "sent" then "delivered", each once
    rejected = [c for c in callbacks if c.status_code is None or not 200 <= c.status_code < 300]
    assert not rejected, f"the API refused callbacks: {rejected[:3]}"
    stack.wait_until(lambda: all(m["status"] == "delivered" for m in stack.messages() if m["channel"] == "sms"
                                 and m["not_before"] <= SIM_NOW), 30, "SMS delivered", procs=procs)
    summary = assert_exactly_once(stack, SIM_NOW, expect_delivered=True)
    assert summary["at_fake"] == len(sms)
    _no_task_errors([front, send])
    print(f"\nsimulated working day: {summary}, {time.monotonic() - t0:.1f}s")
