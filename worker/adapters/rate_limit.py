"""A provider's rate limit, shared by every worker: sending slots reserved in Redis.

``RELANCE_SMS_RATE_LIMIT`` / ``RELANCE_EMAIL_RATE_LIMIT`` messages per second per sender: a
worker about to send n messages reserves n consecutive slots, ``1 / rate`` seconds apart
(a GCRA bucket: one Redis key per sender holding the time the next slot is free, moved on
atomically by a Lua script, with Redis's clock), then sends each message at its slot. The
workers of every machine share the key, so together they never exceed the rate: the
provider is never made to answer 429, and a burst waits in the queues instead.
Without Redis (the embedded mode) the same bucket lives in the process.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

# KEYS[1]: the sender's key; ARGV: the interval between two slots (µs), the burst allowed after
# an idle time (slots), the slots wanted. Returns the first slot and the interval, in µs from now.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local earliest = now - burst * interval
if tat < earliest then tat = earliest end
local next_free = tat + n * interval
redis.call('SET', KEYS[1], string.format('%.0f', next_free), 'PX', math.floor((next_free - now) / 1000) + 60000)
return {string.format('%.0f', tat - now), string.format('%.0f', interval)}
"""


@dataclass(frozen=True)
class Slots:
    """When each of n messages may go (``time.monotonic()`` values of this process)."""

    first: float
    interval: float
    count: int

    def at(self, i: int) -> float:
        return self.first + i * self.interval


class LocalRateLimiter:
    """The bucket in this process (the embedded mode, tests)."""

    def __init__(self, rate: float, burst: int = 1):
        self.interval = 1.0 / rate
        self.burst = burst
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> Slots:
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now - self.burst * self.interval)
            self._next = start + n * self.interval
        return Slots(start, self.interval, n)


class RedisRateLimiter:
    """The bucket in Redis, shared by every worker on every machine."""

    def __init__(self, url: str, key: str, rate: float, burst: int = 1):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.key = key
        self.interval_us = round(1_000_000 / rate)
        self.interval = self.interval_us / 1e6
        self.burst = burst
        self._script = self.client.register_script(_RESERVE)

    def reserve(self, n: int) -> Slots:
        start_us, interval_us = self._script(keys=[self.key], args=[self.interval_us, self.burst, n])
        now = time.monotonic()
        return Slots(now + int(start_us) / 1e6, int(interval_us) / 1e6, n)


def build_rate_limiter(rate: float, broker_url: str, key: str, burst: int = 1):
    """None without a limit; Redis's bucket with a Redis broker; else this process's."""
    if not rate or rate <= 0:
        return None
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisRateLimiter(broker_url, key, rate, burst)
    return LocalRateLimiter(rate, burst)
