"""Is the Celery broker reachable? (``/ready``)"""
from __future__ import annotations


def ping_broker(url: str) -> None:
    """Raises if the broker at ``url`` does not answer within about 2 s."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
        return
    from kombu import Connection

    with Connection(url, connect_timeout=2) as conn:
        conn.ensure_connection(max_retries=1)
