"""Server-Sent Event streams: how many may be open, and where each one's Redis connection comes from.

Two caps, checked before a stream is accepted (429 `too_many_streams` with Retry-After past either):

- `SSE_MAX_TOTAL` per API process: every stream holds a socket and a Redis connection of this process,
  so the count is the process's own (in memory, released in the same process, nothing to leak).
- `SSE_MAX_PER_USER` per user across every replica: one lease per open stream in a Redis sorted set
  (`RedisKeys.sse_streams`), scored with the Redis clock at its last refresh. An open stream refreshes
  its lease every `LEASE_REFRESH_SECONDS`; a lease not refreshed for `LEASE_SECONDS` (its replica died
  without releasing it) is dropped by the next acquire, so a crash frees its streams within that time.

Each stream subscribes on a connection of its own from a pool reserved for streams and sized to
`SSE_MAX_TOTAL`: streams never take connections from the pool that requests and /readyz use.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio.client import PubSub

from jeffrey_api.errors import RETRY_AFTER_SECONDS, ApiError
from jeffrey_core.redis_client import create_async_pool
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.settings import Settings

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
LEASE_REFRESH_SECONDS = 10.0

# Drop stale leases, refuse past the cap, else add this stream's lease; the Redis clock is the only
# clock, so replicas with skewed clocks agree. Returns 1 when the stream may open.
_ACQUIRE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], t, ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 2))
return 1
"""

# Refresh a lease that is still there; 0 when it was dropped as stale (the stream should end).
_REFRESH = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
local now = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(now[1]) + tonumber(now[2]) / 1000000, ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 2))
return 1
"""


def too_many_streams(scope: str, limit: int) -> ApiError:
    """429 with Retry-After: the caller (scope "user") or this process (scope "process") is at its cap."""
    who = "this user" if scope == "user" else "this API process"
    return ApiError(
        429,
        "too_many_streams",
        f"{who} already has {limit} open event streams (the limit); close one or retry later",
        {"scope": scope, "limit": limit},
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


@dataclass
class StreamSlot:
    """One accepted stream: its lease in Redis and its own pub/sub connection."""

    user_id: str
    lease_key: str
    lease_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    pubsub: PubSub | None = None
    refreshed_at: float = field(default_factory=time.monotonic)
    released: bool = False


class StreamLimiter:
    """Accepts or refuses event streams and owns the connections they subscribe on."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, keys: RedisKeys) -> None:
        self.max_per_user = settings.api.sse_max_per_user
        self.max_total = settings.api.sse_max_total
        self._redis = redis  # the request pool: the short lease calls only
        self._keys = keys
        self._pool = create_async_pool(
            settings.redis,
            max_connections=self.max_total,
            timeout=settings.redis.connect_timeout,
            socket_connect_timeout=settings.redis.connect_timeout,
            socket_timeout=settings.redis.socket_timeout,
            health_check_interval=15,
            decode_responses=True,
        )
        self._subscriber = aioredis.Redis(connection_pool=self._pool)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._refresh = self._redis.register_script(_REFRESH)
        self._report_active: Callable[[int], None] | None = None
        self._active = 0

    @property
    def active(self) -> int:
        """Streams open in this process."""
        return self._active

    @active.setter
    def active(self, value: int) -> None:
        self._active = value
        if self._report_active is not None:
            self._report_active(value)

    def report_active_to(self, report: Callable[[int], None]) -> None:
        """Call `report` with the count whenever it changes (multiprocess metrics: a gauge's set)."""
        self._report_active = report
        report(self._active)

    async def open(self, user_id: str, channel: str) -> StreamSlot:
        """A slot subscribed to `channel`; 429 past a cap, RedisError (503) when Redis cannot say."""
        if self.active >= self.max_total:
            raise too_many_streams("process", self.max_total)
        self.active += 1  # counted at once: concurrent opens must not all pass the check
        slot = StreamSlot(user_id, self._keys.sse_streams(user_id))
        try:
            allowed = await self._acquire(
                keys=[slot.lease_key], args=[slot.lease_id, LEASE_SECONDS, self.max_per_user]
            )
            if not allowed:
                slot.lease_id = ""  # nothing of ours to release in Redis
                raise too_many_streams("user", self.max_per_user)
            slot.pubsub = self._subscriber.pubsub()
            await slot.pubsub.subscribe(channel)
        except BaseException:
            await self.release(slot)
            raise
        return slot

    async def refresh(self, slot: StreamSlot) -> bool:
        """Keep the stream's lease alive (every LEASE_REFRESH_SECONDS); False when it was lost."""
        if time.monotonic() - slot.refreshed_at < LEASE_REFRESH_SECONDS:
            return True
        slot.refreshed_at = time.monotonic()
        return bool(await self._refresh(keys=[slot.lease_key], args=[slot.lease_id, LEASE_SECONDS]))

    async def release(self, slot: StreamSlot) -> None:
        """Give back the connection, the lease and the count; safe to call twice, never raises."""
        if slot.released:
            return
        slot.released = True
        if slot.pubsub is not None:
            try:
                await slot.pubsub.aclose()  # type: ignore[no-untyped-call]
            except Exception as exc:  # a broken connection is dropped by the pool anyway
                log.warning("event stream connection not closed cleanly: %s", exc.__class__.__name__)
        self.active -= 1
        if slot.lease_id:
            try:
                await self._redis.zrem(slot.lease_key, slot.lease_id)
            except Exception as exc:  # the lease expires on its own after LEASE_SECONDS
                log.warning("event stream lease not released: %s", exc.__class__.__name__)

    async def aclose(self) -> None:
        await self._subscriber.aclose()
        await self._pool.disconnect()


class StreamCollector(Collector):
    """`jeffrey_api_event_streams`: the streams open in this process, next to their cap."""

    def __init__(self, limiter: Callable[[], StreamLimiter | None]) -> None:
        self._limiter = limiter

    def collect(self) -> Iterator[GaugeMetricFamily]:
        limiter = self._limiter()
        if limiter is None:
            return
        yield GaugeMetricFamily(
            "jeffrey_api_event_streams", "Server-Sent Event streams open in this API process.", limiter.active
        )
        yield GaugeMetricFamily(
            "jeffrey_api_event_streams_limit",
            "Most event streams this process accepts (SSE_MAX_TOTAL).",
            limiter.max_total,
        )
