"""A `relance worker` for the benchmarks: the same Celery app, settings and worker
options as ``python -m worker.entrypoints.cli worker``, plus one no-op task (``bench.noop``)
to measure bare Celery's throughput on the same broker, queues and settings
(acks_late, prefetch multiplier 1, task events, INFO logging).

    python bench/celery_bench.py -Q cases,sms -c 2 -n bench@%h
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from worker.entrypoints.celery_app import celery  # noqa: E402  (configured from RELANCE_* at import)


@celery.task(name="bench.noop", acks_late=True, reject_on_worker_lost=True)
def noop() -> None:
    return None


def main(argv: list[str]) -> None:
    from worker.bootstrap import get_app
    from worker.adapters.store.session import upgrade

    ctx = get_app()
    if ctx.settings.eager:
        raise SystemExit("RELANCE_BROKER_URL must be a Redis URL")
    upgrade(ctx.db_url)
    # The options of `relance worker` (worker/entrypoints/cli.py), with the queues/concurrency/name given.
    celery.worker_main(["worker", *argv, "-E", "--loglevel", "INFO", "--without-gossip", "--without-mingle"])


if __name__ == "__main__":
    main(sys.argv[1:])
