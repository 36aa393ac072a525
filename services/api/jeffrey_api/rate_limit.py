"""Request budgets per client IP and per user, counted in Redis so every API replica shares them.

Counting is done by the `limits` package with its sliding-window-counter strategy: two counters per
budget and caller, updated by one atomic Lua script per request, each key with a TTL of twice the
window (`RedisKeys.rate_limit_prefix`). It approximates a true sliding window (no burst of twice the
limit at a window edge) at the cost of a fixed window, whatever the limit.

The limiter never makes a request wait on a sick Redis: its calls have their own short timeout
(`RATE_LIMIT_REDIS_TIMEOUT`) on their own small pool, and on any failure it lets requests through
unlimited for `RATE_LIMIT_FAIL_OPEN_SECONDS` before asking Redis again (memory writes must keep
working through a Redis outage: the database is their outbox).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.exceptions import RedisError

from jeffrey_core.redis_client import create_async_pool
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.settings import RateLimitSettings, Settings

log = logging.getLogger(__name__)

_READ_METHODS = frozenset({"GET", "HEAD"})
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_POOL_SIZE = 64


class Budget(StrEnum):
    WRITES = "writes"
    DETECT = "detect"
    DREAM_RUNS = "dream_runs"
    READS = "reads"


class Caller(StrEnum):
    IP = "ip"
    USER = "user"


def classify(method: str, path: str, prefix: str = "/api/v1") -> Budget | None:
    """The budget a request spends; None for exempt requests: everything outside `prefix` (health,
    readiness, metrics, docs, OpenAPI) and methods that are neither reads nor writes (OPTIONS)."""
    prefix = prefix.rstrip("/")
    if path != prefix and not path.startswith(prefix + "/"):
        return None
    if method in _READ_METHODS:
        return Budget.READS
    if method not in _WRITE_METHODS:
        return None
    route = path[len(prefix) :].rstrip("/")
    if method == "POST" and route == "/emotion/detect":
        return Budget.DETECT
    if method == "POST" and route == "/dream/run":
        return Budget.DREAM_RUNS
    return Budget.WRITES


@dataclass(frozen=True)
class Quota:
    """Where one caller stands in one budget after this request."""

    budget: Budget
    caller: Caller
    limit: int
    window_seconds: int
    remaining: int
    reset_seconds: int
    allowed: bool

    def headers(self) -> dict[str, str]:
        """The IETF RateLimit headers (draft-ietf-httpapi-ratelimit-headers): reset in seconds."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
            "RateLimit-Policy": f"{self.limit};w={self.window_seconds}",
        }

    @property
    def retry_after(self) -> int:
        return max(1, self.reset_seconds)

    def message(self) -> str:
        return (
            f"rate limit '{self.budget.value}' exceeded for this {self.caller.value}: "
            f"{self.limit} requests per {self.window_seconds} s; retry in {self.retry_after} s"
        )


def budget_items(settings: RateLimitSettings) -> dict[tuple[Budget, Caller], RateLimitItem]:
    """Each budget's limit per user, and per IP (times `ip_multiplier`)."""
    items: dict[tuple[Budget, Caller], RateLimitItem] = {}
    for budget in Budget:
        per_user = parse(getattr(settings, budget.value))
        items[budget, Caller.USER] = per_user
        items[budget, Caller.IP] = type(per_user)(
            per_user.amount * settings.ip_multiplier, per_user.multiples, per_user.namespace
        )
    return items


class RateLimiter:
    """Spends budgets in Redis; `check` answers None (fail open) when Redis cannot be asked."""

    def __init__(self, settings: RateLimitSettings, pool: aioredis.ConnectionPool, key_prefix: str) -> None:
        self.settings = settings
        self.items = budget_items(settings)
        self._pool = pool
        # `limits` types its client options as scalars, but hands a `connection_pool` to redis-py as is.
        client_options: dict[str, Any] = {"connection_pool": pool}
        storage = RedisStorage(
            "async+redis://",  # the connections come from `pool` (our URL, password, db or socket)
            implementation="redispy",
            key_prefix=key_prefix,
            wrap_exceptions=True,
            **client_options,
        )
        self._strategy = SlidingWindowCounterRateLimiter(storage)
        self._open_until = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        timeout = settings.rate_limit.redis_timeout
        # A pool of its own: the limiter neither waits behind nor starves the request pool.
        pool = create_async_pool(
            settings.redis,
            max_connections=_POOL_SIZE,
            timeout=timeout,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
        )
        return cls(settings.rate_limit, pool, RedisKeys(settings.redis.key_prefix).rate_limit_prefix())

    async def check(self, budget: Budget, ip: str, user: str | None) -> Quota | None:
        """Spends one request of `budget` for the IP, then (if allowed) for the user. Returns the refused
        quota, else the tightest of the two; None when Redis failed or recently failed (fail open)."""
        if time.monotonic() < self._open_until:
            return None
        try:
            async with asyncio.timeout(self.settings.redis_timeout):
                return await self._spend_all(budget, ip, user)
        except (StorageError, RedisError, OSError, TimeoutError) as exc:
            self._open_until = time.monotonic() + self.settings.fail_open_seconds
            log.warning(
                "rate limiter cannot reach Redis (%s); requests are not limited for the next %g s",
                exc.__class__.__name__,
                self.settings.fail_open_seconds,
            )
            return None

    async def _spend_all(self, budget: Budget, ip: str, user: str | None) -> Quota:
        callers = [(Caller.IP, ip)] + ([(Caller.USER, user)] if user is not None else [])
        quotas = []
        for caller, identity in callers:
            quota = await self._spend(budget, caller, identity)
            if not quota.allowed:
                return quota
            quotas.append(quota)
        return min(quotas, key=lambda q: (q.remaining, q.reset_seconds))

    async def _spend(self, budget: Budget, caller: Caller, identity: str) -> Quota:
        item = self.items[budget, caller]
        identifiers = (budget.value, caller.value, identity)
        allowed = await self._strategy.hit(item, *identifiers)
        stats = await self._strategy.get_window_stats(item, *identifiers)
        return Quota(
            budget=budget,
            caller=caller,
            limit=item.amount,
            window_seconds=item.get_expiry(),
            remaining=stats.remaining,
            reset_seconds=max(0, math.ceil(stats.reset_time - time.time())),
            allowed=allowed,
        )

    async def aclose(self) -> None:
        await self._pool.disconnect()
