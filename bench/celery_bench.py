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
    _trace_main_memory()
    celery.worker_main(["worker", *argv, "-E", "--loglevel", "INFO", "--without-gossip", "--without-mingle"])


def _trace_main_memory() -> None:
    """BENCH_TRACE_MAIN_MEMORY=T1,T2,FILE: in the worker's main process (not the pool's), compare
    tracemalloc snapshots taken T1 and T2 seconds after start, top 25 growths by line to FILE."""
    import os

    spec = os.environ.get("BENCH_TRACE_MAIN_MEMORY")
    if not spec:
        return
    import threading
    import time
    import tracemalloc

    from celery.signals import worker_process_init

    first, second, path = spec.split(",", 2)
    tracemalloc.start(10)
    worker_process_init.connect(lambda **_: tracemalloc.stop(), weak=False)  # the pool processes

    def run() -> None:
        time.sleep(float(first))
        before = tracemalloc.take_snapshot()
        time.sleep(float(second) - float(first))
        after = tracemalloc.take_snapshot()
        stats = after.compare_to(before, "traceback")
        with open(path, "w", encoding="utf-8") as out:
            for stat in stats[:25]:
                out.write(f"{stat.size_diff / 1024:.1f} KiB in {stat.count_diff} blocks\n")
                out.write("\n".join("    " + line for line in stat.traceback.format()) + "\n")

    threading.Thread(target=run, daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1:])
