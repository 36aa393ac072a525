"""Request budgets per client IP and per user, counted in Redis so every API replica shares them.

Counting follows the sliding-window-counter strategy of the `limits` package: two counters per budget
and caller, each key with a TTL of twice the window (`RedisKeys.rate_limit_prefix`). It approximates a
true sliding window (no burst of twice the limit at a window edge) at the cost of a fixed window,
whatever the limit. `limits` parses the budgets ("120/minute") and names the keys; the counting itself
is `_SPEND_LUA`, one script (EVALSHA) that spends the IP's budget and then, if that allowed it, the
user's, and returns both windows, so a request costs one Redis round trip. `limits`' own API costs
four (issue 12: about a fifth of the API's CPU on the memory POST): its `hit` runs one script per
budget and answers only a bool, so the RateLimit headers need a `get_window_stats` script call per
budget after it, and its storage offers no pipeline or batch. The script is `limits`' own
`acquire_sliding_window.lua` run for each caller in turn (same keys, same arithmetic, so the counters
stay compatible), and the headers are computed as `get_window_stats` does. Its keys are in different
hash slots: fine for one Redis (with or without Sentinel), not for Redis Cluster.

The limiter never makes a request wait on a sick Redis: its calls have their own short timeout
(`RATE_LIMIT_REDIS_TIMEOUT`) on their own small pool, and on any failure it lets requests through
unlimited for `RATE_LIMIT_FAIL_OPEN_SECONDS` before asking Redis again (memory writes must keep
working through a Redis outage: the database is their outbox).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from limits import RateLimitItem, parse
from redis.exceptions import NoScriptError, RedisError, ResponseError

from jeffrey_core.redis_client import create_async_pool
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.settings import RateLimitSettings, Settings

log = logging.getLogger(__name__)

_READ_METHODS = frozenset({"GET", "HEAD"})
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_POOL_SIZE = 64

# KEYS: the previous and the current window of each caller, in spending order (IP, then user), then
# optionally the key that marks the user's token revoked. ARGV: the window in seconds, then each
# caller's limit. Returns {revoked (0 or 1), then per caller asked: {allowed, previous count, previous
# TTL ms, current count, current TTL ms} after its hit}; a refused caller is the last one asked, and a
# revoked token's user is not asked (its request is anonymous). The body of the loop is `limits`'
# acquire_sliding_window.lua.
_SPEND_LUA = """
local expiry = tonumber(ARGV[1]) * 1000
local callers = math.floor(#KEYS / 2)
local revoked = 0
if #KEYS % 2 == 1 and redis.call('exists', KEYS[#KEYS]) == 1 then
    revoked = 1
    callers = 1
end
local answers = {revoked}
for i = 1, callers do
    local previous, current = KEYS[2 * i - 1], KEYS[2 * i]
    local limit = tonumber(ARGV[i + 1])
    local current_ttl = tonumber(redis.call('pttl', current))
    if current_ttl > 0 and current_ttl < expiry then
        redis.call('rename', current, previous)
        redis.call('set', current, 0, 'PX', current_ttl + expiry)
    end
    local previous_count = tonumber(redis.call('get', previous)) or 0
    local previous_ttl = math.max(0, tonumber(redis.call('pttl', previous)))
    local current_count = tonumber(redis.call('get', current)) or 0
    current_ttl = tonumber(redis.call('pttl', current))
    local allowed = math.floor(previous_count * previous_ttl / expiry) + current_count + 1 <= limit
    if allowed then
        if current_ttl == -2 then
            redis.call('set', current, 1, 'PX', expiry * 2)
            current_ttl = expiry * 2
        else
            redis.call('incrby', current, 1)
        end
        current_count = current_count + 1
    end
    current_ttl = math.max(0, current_ttl)
    answers[i + 1] = {allowed and 1 or 0, previous_count, previous_ttl, current_count, current_ttl}
    if not allowed then
        break
    end
end
return answers
"""


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
    # What the same round trip said of the user's token (`check`'s `revocation_key`); None: not asked.
    revoked: bool | None = None

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
        self._key_prefix = key_prefix
        self._spends = _Coalescer(aioredis.Redis(connection_pool=pool), _SPEND_LUA)
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

    async def check(
        self, budget: Budget, ip: str, user: str | None, revocation_key: str | None = None
    ) -> Quota | None:
        """Spends one request of `budget` for the IP, then (if allowed) for the user. Returns the refused
        quota, else the tightest of the two; None when Redis failed or recently failed (fail open).
        With `revocation_key` (the user's token's) the same round trip says whether it exists
        (`Quota.revoked`); if it does, only the IP's budget is spent, as for an anonymous request."""
        if time.monotonic() < self._open_until:
            return None
        try:
            async with asyncio.timeout(self.settings.redis_timeout):
                return await self._spend_all(budget, ip, user, revocation_key)
        except (RedisError, OSError, TimeoutError) as exc:
            self._open_until = time.monotonic() + self.settings.fail_open_seconds
            log.warning(
                "rate limiter cannot reach Redis (%s); requests are not limited for the next %g s",
                exc.__class__.__name__,
                self.settings.fail_open_seconds,
            )
            return None

    def _keys(self, item: RateLimitItem, *identifiers: str) -> tuple[str, str]:
        """The previous and current window keys, named as `limits`' Redis storage names them."""
        current = f"{self._key_prefix}:{{{item.key_for(*identifiers)}}}"
        return f"{current}/-1", current

    async def _spend_all(
        self, budget: Budget, ip: str, user: str | None, revocation_key: str | None
    ) -> Quota:
        callers = [(Caller.IP, ip)] + ([(Caller.USER, user)] if user is not None else [])
        items = [self.items[budget, caller] for caller, _ in callers]
        keys = [
            key
            for item, (caller, identity) in zip(items, callers, strict=True)
            for key in self._keys(item, budget.value, caller.value, identity)
        ]
        # Every budget of one caller kind shares the window; IP and user limits differ only in amount.
        args = [items[0].get_expiry(), *(item.amount for item in items)]
        if user is not None and revocation_key is not None:
            keys.append(revocation_key)
        revoked, *answers = await self._spends.run(keys, args)
        known = None if revocation_key is None else bool(revoked)
        quotas = [
            _quota(budget, caller, item, answer, known)
            for (caller, _), item, answer in zip(callers, items, answers, strict=False)
        ]
        refused = [quota for quota in quotas if not quota.allowed]
        if refused:
            return refused[0]
        return min(quotas, key=lambda q: (q.remaining, q.reset_seconds))

    async def aclose(self) -> None:
        self._spends.cancel()
        await self._pool.disconnect()


class _Coalescer:
    """Runs one Lua script for many callers, sending the calls queued meanwhile as one pipeline.

    Each call of a request is queued; one drain task at a time sends everything queued as a pipeline
    of EVALSHAs (one connection, one write, one read) and hands each caller its own answer, then sends
    what queued while it waited. Under load dozens of requests share one round trip and one pass
    through redis-py's connection pool, retry and telemetry wrappers, which cost more than Redis's own
    work (the limiter's single EVALSHA per request was a fifth of the API's CPU at 64 connections,
    issue 12 profile); alone, a request waits for nothing more than its own call. Scripts run one at a
    time in Redis either way, so every answer is what the same calls made one by one would get.
    A caller that gives up (its timeout) only abandons its answer.

    Since only one drain sends at a time, it keeps one connection from the pool for itself and
    writes the EVALSHAs and reads their answers on it directly, without redis-py's pipeline, pool
    checkout and retry wrappers around each round trip (a third of the limiter's CPU). A connection
    that fails is disconnected and handed back, and the next round trip takes a fresh one from the
    pool (which finds a promoted master after a Sentinel failover)."""

    def __init__(self, client: aioredis.Redis, script: str) -> None:
        self._client = client
        self._connection: Any = None  # the drain's own connection, taken from the client's pool
        self._script = script
        self._sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()  # EVALSHA's name
        self._queue: list[tuple[list[str], list[int], asyncio.Future[Any]]] = []
        self._drain: asyncio.Task[None] | None = None

    async def run(self, keys: list[str], args: list[int]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((keys, args, future))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._send_queued())
        return await future

    def cancel(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
        self._connection = None  # the pool's disconnect (RateLimiter.aclose) closes it

    async def _send_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                answers = await self._pipeline([(keys, args) for keys, args, _ in batch])
            except Exception as exc:  # Redis down or slow: every caller of the batch fails open
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (*_, future), answer in zip(batch, answers, strict=True):
                if future.done():
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    async def _pipeline(self, calls: list[tuple[list[str], list[int]]]) -> list[Any]:
        answers = await self._send(calls)
        if any(isinstance(a, NoScriptError) for a in answers):  # a new or restarted Redis
            await self._client.script_load(self._script)
            answers = await self._send(calls)
        return answers

    async def _send(self, calls: list[tuple[list[str], list[int]]]) -> list[Any]:
        """One write of every EVALSHA, then each answer in order (a Redis error is that call's answer)."""
        pool = self._client.connection_pool
        if self._connection is None:
            self._connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        connection = self._connection
        try:
            commands = [("EVALSHA", self._sha, len(keys), *keys, *args) for keys, args in calls]
            await connection.send_packed_command(connection.pack_commands(commands))
            answers: list[Any] = []
            for _ in calls:
                try:
                    answers.append(await connection.read_response())
                except ResponseError as error:  # NOSCRIPT and the like; the rest is still read
                    answers.append(error)
            return answers
        except BaseException:
            # Lost, timed out or cancelled half way: its unread answers would desync the next call.
            self._connection = None
            try:
                await connection.disconnect()
            finally:
                await pool.release(connection)
            raise


def _quota(
    budget: Budget, caller: Caller, item: RateLimitItem, answer: list[int], revoked: bool | None
) -> Quota:
    """A caller's quota from the script's answer, as `limits`' `get_window_stats` computes it."""
    allowed, previous_count, previous_ttl_ms, current_count, current_ttl_ms = (int(v) for v in answer)
    expiry = item.get_expiry()
    previous_ttl, current_ttl = previous_ttl_ms / 1000, current_ttl_ms / 1000
    weighted = previous_count * previous_ttl / expiry + current_count
    reset = 0.0
    if previous_count or current_count:
        previous_reset = previous_ttl % (expiry / previous_count) if previous_count else math.inf
        current_reset = current_ttl % expiry if current_count else math.inf
        reset = min(previous_reset, current_reset)
    return Quota(
        budget=budget,
        caller=caller,
        limit=item.amount,
        window_seconds=expiry,
        remaining=max(0, item.amount - math.floor(weighted)),
        reset_seconds=max(0, math.ceil(reset)),
        allowed=bool(allowed),
        revoked=revoked,
    )
