"""Circuit breakers whose state lives in Redis (pybreaker's CircuitRedisStorage), behind one adapter.

Workers build the breaker that guards the emotion model; the API, readiness and auto-debug only
read it. Both go through pybreaker's public storage API (`state`, `opened_at`), so nothing outside
this module knows how pybreaker lays out its keys.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pybreaker
import redis

from jeffrey_core.redis_keys import RedisKeys


def redis_storage(client: redis.Redis, keys: RedisKeys, name: str) -> pybreaker.CircuitRedisStorage:
    """pybreaker's shared storage for breaker `name`; `client` must return bytes (no decode_responses)."""
    return pybreaker.CircuitRedisStorage(
        pybreaker.STATE_CLOSED, client, namespace=keys.breaker_namespace(name)
    )


def build_breaker(
    client: redis.Redis, keys: RedisKeys, name: str, fail_max: int, reset_seconds: float
) -> pybreaker.CircuitBreaker:
    return pybreaker.CircuitBreaker(
        fail_max=fail_max,
        reset_timeout=reset_seconds,
        state_storage=redis_storage(client, keys, name),
        name=name,
    )


def slow_threshold(base_seconds: float, seconds_per_kchar: float, chars: int) -> float:
    """Seconds a call over `chars` characters may take before it counts as slow for its breaker.

    Slowness is judged per input size, not per call: a breaker shared by every user must not be
    opened by one user's large but valid input, only by work that is slow for its size.
    """
    return base_seconds + seconds_per_kchar * max(0, chars) / 1000


@dataclass(frozen=True)
class BreakerSnapshot:
    state: str  # closed | open | half-open
    opened_at: float | None  # Unix time

    def seconds_until_probe(self, reset_seconds: float, now: float | None = None) -> int | None:
        """Seconds until an open breaker lets a call through; None when a call may go ahead now.

        Once the reset timeout has passed, pybreaker lets the next call through as the half-open
        probe that closes it again, so refusing that call would keep the breaker open forever.
        """
        if self.state != pybreaker.STATE_OPEN:
            return None
        remaining = (self.opened_at or 0.0) + reset_seconds - (time.time() if now is None else now)
        return max(1, math.ceil(remaining)) if remaining > 0 else None


def read_breaker(client: redis.Redis, keys: RedisKeys, name: str) -> BreakerSnapshot:
    """The shared state of breaker `name` (raises redis errors: the caller decides what down means)."""
    client.ping()  # pybreaker's storage swallows Redis errors and reports "closed"; we want to know
    storage = redis_storage(client, keys, name)
    opened = storage.opened_at
    return BreakerSnapshot(str(storage.state), opened.timestamp() if opened else None)
