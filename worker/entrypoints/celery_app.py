"""The Celery application: queues, routing and "never lose, never double-send" settings.

Timing, consistent by construction (docs/ops.md, *Time limits*): every task has a soft and
a hard time limit; no task is published with a countdown or an ETA; the broker's
visibility timeout (after which Redis hands an unacknowledged task to another worker)
outlasts the longest hard limit, so a task still running is never handed out twice.

On the embedded default (``RELANCE_BROKER_URL=memory://``) tasks run eagerly,
in-process; with a Redis URL they go to real workers.
"""
from __future__ import annotations

import logging

from celery import Celery
from kombu import Exchange, Queue

from worker.entrypoints import queues
from worker.settings import get_settings

celery = Celery("relance", include=[
    "worker.entrypoints.tasks.ingest", "worker.entrypoints.tasks.cases", "worker.entrypoints.tasks.sms", "worker.entrypoints.tasks.letters",
    "worker.entrypoints.tasks.email", "worker.entrypoints.tasks.maintenance",
])


def configure(settings=None) -> Celery:
    settings = settings or get_settings()
    eager = settings.eager
    # Reconfiguring (tests, the demo) must not keep producers bound to the previous
    # broker, nor queues/routes computed from the previous configuration.
    celery.close()
    celery.__dict__.pop("amqp", None)
    celery.conf.update(
        # kombu wants a host even for the in-memory transport.
        broker_url="memory://localhost/" if eager else settings.broker_url,
        result_backend=None,
        task_ignore_result=True,
        task_always_eager=eager,
        task_eager_propagates=True,
        task_default_queue=queues.CASES,
        # One direct exchange per queue: a task routed to a queue reaches that queue only.
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in queues.ALL],
        task_routes={
            "relance.ingest.*": {"queue": queues.INGEST},
            "relance.cases.*": {"queue": queues.CASES},
            "relance.sms.*": {"queue": queues.SMS},
            "relance.letters.*": {"queue": queues.LETTERS},
            "relance.email.*": {"queue": queues.EMAIL},
            "relance.maintenance.*": {"queue": queues.MAINTENANCE},
        },
        # Never lose: acknowledge after the task ran; one task at a time per process.
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        # Requeue on worker loss only where rerunning is safe: set per task
        # (sends are safe: the claim makes a rerun a no-op).
        task_reject_on_worker_lost=False,
        # Time limits (seconds) on every task: the soft one raises inside the task (a send
        # records its outcome, or stays "sending" and is surfaced by reconcile), the hard one
        # kills it. Ingestion, bounce scans and maintenance passes get the long limits
        # (worker/entrypoints/tasks/_common.py). No task is ever published with a countdown or
        # an ETA (the database holds time): the visibility timeout only has to outlast the
        # longest hard limit, which Settings checks (RELANCE_BROKER_VISIBILITY_TIMEOUT).
        task_time_limit=settings.task_time_limit,
        task_soft_time_limit=settings.task_soft_time_limit,
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout},
        broker_connection_retry_on_startup=True,
        # Broker connection lost (Redis restarted): running sends finish and record their
        # outcome in the database (Celery 6 would cancel them by default, leaving them
        # "sending"); their unacknowledged messages may come back and are no-ops then.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        worker_hijack_root_logger=False,
    )
    return celery


configure()

# The twilio client logs every request's headers at INFO: noise in the workers' logs.
logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
