"""Flower, read-only: it shows workers, queues and tasks, and launches nothing.

Flower's HTTP API lets any authenticated user apply or send a task by name with any
arguments, revoke tasks, change time and rate limits, shut workers down or change the
queues they consume. Those routes bypass the API key, the argument checks of
``POST /events`` and the ``--now`` rule: ops watch Flower, they do not act through it
(they act with ``relance …``). Flower has no option for that, so its write routes are
removed from its URL table before it starts (:func:`make_read_only`).
"""
from __future__ import annotations

# Flower's routes that change something: tasks launched, revoked or re-limited, workers controlled.
WRITE_ROUTES = (
    r"/api/worker/shutdown/",
    r"/api/worker/pool/",
    r"/api/worker/queue/",
    r"/api/task/apply/",
    r"/api/task/async-apply/",
    r"/api/task/send-task/",
    r"/api/task/abort/",
    r"/api/task/timeout/",
    r"/api/task/rate-limit/",
    r"/api/task/revoke/",
)


def _pattern(handler) -> str:
    regex = getattr(handler, "regex", None)
    return regex.pattern if regex is not None else handler[0]


def make_read_only() -> list[str]:
    """Drop Flower's write routes (in place: ``flower.app`` holds the same list); the patterns removed."""
    from flower import urls

    removed = [_pattern(h) for h in urls.handlers if _pattern(h).startswith(WRITE_ROUTES)]
    urls.handlers[:] = [h for h in urls.handlers if not _pattern(h).startswith(WRITE_ROUTES)]
    return removed
