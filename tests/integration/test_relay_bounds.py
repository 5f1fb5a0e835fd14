"""The relay and the sweep stay bounded when nothing consumes the queues (issue 11, "Unbounded
queues": with the workers down, the relay re-published every pending message every 5 minutes —
3 187 pending became 18 690 queued in an hour).

The broker is simulated here (what was published, per queue; nothing consumed), the clock
injected (a scheduler cycle per simulated minute, no sleeping); tests/e2e/test_faults.py
measures the same on a real Redis."""
from __future__ import annotations

import collections
import datetime as dt

import pytest

from worker.adapters.store import session as db_session
from worker.bootstrap import build_app
from worker.entrypoints.tasks import dispatch
from worker.services import cases, ingest
from worker.settings import Settings

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 6, 5, 8, 0, tzinfo=UTC)  # a Wednesday, 10:00 in Paris
MIN = dt.timedelta(minutes=1)


class FakeBroker:
    """Queues that only grow (the workers are down); ``depth`` is what the relay asks."""

    def __init__(self):
        self.queues: dict[str, list] = collections.defaultdict(list)

    def depth(self, queue: str) -> int:
        return len(self.queues[queue])

    def task(self, name: str):
        broker = self

        class Task:
            def apply_async(self, args, queue=None, **_):
                # a send task carries a batch of message ids (RELANCE_SEND_BATCH_SIZE)
                broker.queues[queue or name].extend(args[0] if isinstance(args[0], list) else [args[0]])

        return Task()


@pytest.fixture
def planned(tmp_path, flux_writer, monkeypatch):
    """30 people ingested and their cases advanced: their first messages pending; a "Redis" URL
    (nothing eager) and a fake broker in place of the send tasks."""
    url = f"sqlite:///{tmp_path / 'relance.db'}"
    settings = Settings(data_dir=tmp_path / "var", database_url=url, broker_url="redis://127.0.0.1:9/0",
                        relay_batch_size=7)
    app = build_app(settings)
    db_session.upgrade(url)
    broker = FakeBroker()
    monkeypatch.setattr(dispatch, "SEND_TASKS", {ch: broker.task(q) for ch, q in
                                                 (("sms", "sms"), ("letter", "letters"), ("email", "email"))})
    path = flux_writer([{"external_id": f"CAF35-00090{i:02d}", "droit_opened_on": "2024-05-29"} for i in range(30)])
    ingest.ingest_file(app, path, NOW)
    for case_id in cases.due_case_ids(app, NOW, 1000):
        cases.advance_case(app, case_id, NOW)
    try:
        yield app, broker
    finally:
        db_session.get_engine(url).dispose()
        db_session.dispose_all()


def _pending(app, now) -> int:
    from sqlalchemy import func, select

    from worker.adapters.store.models import Message
    from worker.adapters.store.session import session_scope

    with session_scope(app.db_url) as s:
        return s.execute(select(func.count()).select_from(Message).where(
            Message.status == "pending", Message.not_before <= now)).scalar_one()


def test_workers_down_for_an_hour_each_message_queued_once(planned):
    app, broker = planned
    pending = _pending(app, NOW)
    assert pending >= 60  # letters, SMS and e-mails of 30 people
    sizes = []
    for minute in range(61):  # the scheduler's relay, every minute for an hour
        dispatch.relay(app, NOW + minute * MIN, depth=broker.depth)
        sizes.append(sum(len(q) for q in broker.queues.values()))
    queued = [mid for q in broker.queues.values() for mid in q]
    assert len(queued) == len(set(queued)) == pending, f"queue lengths minute by minute: {sizes}"
    assert max(sizes) == pending
    print(f"\nworkers down 60 simulated minutes: {pending} pending, queue length at most {max(sizes)}")


def test_an_emptied_queue_gets_its_lost_messages_again(planned):
    """Redis lost its data (or the tasks failed): the queue is empty, the messages still pending."""
    app, broker = planned
    first = dispatch.relay(app, NOW, depth=broker.depth)
    broker.queues.clear()
    assert dispatch.relay(app, NOW + 4 * MIN, depth=broker.depth) == 0  # published less than 5 minutes ago
    assert dispatch.relay(app, NOW + 6 * MIN, depth=broker.depth) == first
    # An unknown queue length (broker unreachable): never a second publication.
    broker.queues.clear()
    assert dispatch.relay(app, NOW + 20 * MIN, depth=lambda q: None) == 0


def test_one_pass_publishes_at_most_relay_max_per_pass(planned):
    app, broker = planned
    app.settings.relay_max_per_pass = 10
    pending = _pending(app, NOW)
    assert dispatch.relay(app, NOW, depth=broker.depth) == 10
    total = 10
    for minute in range(1, 30):
        total += dispatch.relay(app, NOW + minute * MIN, depth=broker.depth)
    assert total == pending  # the rest went at the next passes, each once
    assert all(len(q) == len(set(q)) for q in broker.queues.values())


def test_the_sweep_holds_back_while_advance_tasks_wait(planned, monkeypatch):
    app, broker = planned
    published = []
    monkeypatch.setattr(dispatch.case_tasks.advance_batch, "apply_async", lambda args, **_: published.append(args[0]))
    assert dispatch.sweep(app, NOW, depth=lambda q: 3) == 0
    assert dispatch.sweep(app, NOW, depth=lambda q: None) == 0
    assert published == []
