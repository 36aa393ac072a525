"""Event stream limits (issue 11, item 2) against a real uvicorn server and a private Redis: a cap per
user (leases in Redis, shared by replicas) and per process, 429 `too_many_streams` with Retry-After past
either while /readyz stays 200, streams released when the client goes away, and a stream that ends
when its token expires.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from jeffrey_api.errors import ApiError
from jeffrey_api.streams import LEASE_REFRESH_SECONDS, LEASE_SECONDS, StreamLimiter
from jeffrey_core.auth import mint_token
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.settings import ApiSettings, RedisSettings, Settings
from tests.support.processes import eventually, service_env, start_api

pytestmark = pytest.mark.integration
SECRET = service_env("", "")["JEFFREY_SECRET_KEY"]
PER_USER = 5


@dataclass
class Api:
    base: str
    redis: redis.Redis

    def open_streams(self) -> float:
        """The API's own count of open streams (its Prometheus gauge)."""
        for line in httpx.get(f"{self.base}/metrics", timeout=10).text.splitlines():
            if line.startswith("jeffrey_api_event_streams "):
                return float(line.split()[1])
        raise AssertionError("no jeffrey_api_event_streams gauge")

    def leases(self, user: str) -> int:
        return int(self.redis.zcard(RedisKeys().sse_streams(user)))


@dataclass
class Streams:
    """Streams held open by one async client; responses that were refused are kept apart."""

    client: httpx.AsyncClient
    url: str
    opened: list[httpx.Response] = field(default_factory=list)
    refused: list[httpx.Response] = field(default_factory=list)
    readers: list[AsyncIterator[str]] = field(default_factory=list)

    async def attempt(self, headers: dict[str, str]) -> None:
        response = await self.client.send(
            self.client.build_request("GET", self.url, headers=headers), stream=True
        )
        if response.status_code == 200:
            # Keep the iterator: httpx closes the response when an abandoned one is collected.
            lines = response.aiter_lines()
            first = await anext(lines)
            assert first == ": connected", first
            self.opened.append(response)
            self.readers.append(lines)
        else:
            await response.aread()
            await response.aclose()
            self.refused.append(response)

    async def close(self) -> None:
        for response in self.opened:
            await response.aclose()
        self.opened.clear()
        self.readers.clear()


def auth(user: str, ttl: int = 600) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, user, ['memories'], ttl)}"}


def new_user() -> str:
    return f"sse-{uuid.uuid4().hex[:8]}"


def async_client() -> httpx.AsyncClient:
    # No client-side pool limit: every stream needs a connection of its own.
    return httpx.AsyncClient(
        timeout=30, limits=httpx.Limits(max_connections=None, max_keepalive_connections=0)
    )


def assert_too_many(response: httpx.Response, scope: str, limit: int) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "too_many_streams" and error["details"] == {"scope": scope, "limit": limit}
    assert int(response.headers["retry-after"]) >= 1


@contextmanager
def start(redis_url: str, sqlite_url: str, log_dir: Path, **extra: str) -> Iterator[Api]:
    env = service_env(redis_url, sqlite_url, SSE_MAX_PER_USER=str(PER_USER), **extra)
    process, base = start_api(env, log_dir)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield Api(base, client)
    finally:
        process.stop()
        client.close()


@pytest.fixture
def api(redis_url: str, sqlite_url: str, log_dir: Path) -> Iterator[Api]:
    with start(redis_url, sqlite_url, log_dir) as served:
        yield served


async def _poll_readyz(base: str, done: asyncio.Event) -> list[int]:
    statuses: list[int] = []
    async with httpx.AsyncClient(timeout=30) as client:
        while not done.is_set() or not statuses:
            statuses.append((await client.get(f"{base}/readyz")).status_code)
            await asyncio.sleep(0.05)
    return statuses


async def _storm(api: Api, user: str, connections: int) -> tuple[Streams, list[int], float]:
    """`connections` concurrent stream requests by one user while /readyz is polled; the seconds until
    every one was answered (accepted or refused)."""
    done = asyncio.Event()
    client = async_client()
    streams = Streams(client, f"{api.base}/api/v1/events")
    headers = auth(user)
    readyz = asyncio.create_task(_poll_readyz(api.base, done))
    started = time.perf_counter()
    await asyncio.gather(*(streams.attempt(headers) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    done.set()
    return streams, await readyz, elapsed


@pytest.mark.slow
def test_past_the_per_user_cap_streams_get_429_while_readyz_stays_200(api: Api) -> None:
    user = new_user()

    async def scenario() -> None:
        streams, readyz, elapsed = await _storm(api, user, 200)
        try:
            print(
                f"\n200 concurrent SSE requests, one user: {len(streams.refused)} refused in {elapsed:.2f} s"
            )
            assert len(streams.opened) == PER_USER and len(streams.refused) == 200 - PER_USER
            for refused in streams.refused:
                assert_too_many(refused, "user", PER_USER)
            assert readyz and set(readyz) == {200}, readyz
            assert api.leases(user) == PER_USER and api.open_streams() == PER_USER
            # The cap is per user: someone else still gets a stream.
            other = Streams(streams.client, streams.url)
            await other.attempt(auth(new_user()))
            assert len(other.opened) == 1
            await other.close()
        finally:
            await streams.close()
            await streams.client.aclose()

    asyncio.run(scenario())
    # Client gone: leases and the process's count go back down, and the user may open streams again.
    eventually(lambda: api.leases(user) == 0 and api.open_streams() == 0, 15, "streams not released")
    assert httpx.get(f"{api.base}/readyz").status_code == 200

    async def again() -> None:
        async with async_client() as client:
            streams = Streams(client, f"{api.base}/api/v1/events")
            await asyncio.gather(*(streams.attempt(auth(user)) for _ in range(PER_USER)))
            assert len(streams.opened) == PER_USER
            await streams.close()

    asyncio.run(again())


def test_the_process_cap_holds_across_users(redis_url: str, sqlite_url: str, log_dir: Path) -> None:
    with start(redis_url, sqlite_url, log_dir, SSE_MAX_TOTAL="3") as api:

        async def scenario() -> None:
            async with async_client() as client:
                streams = Streams(client, f"{api.base}/api/v1/events")
                for _ in range(4):
                    await streams.attempt(auth(new_user()))
                assert len(streams.opened) == 3
                assert_too_many(streams.refused[0], "process", 3)
                await streams.close()

        asyncio.run(scenario())
        eventually(lambda: api.open_streams() == 0, 15, "streams not released")
        assert httpx.get(f"{api.base}/readyz").status_code == 200


def test_a_stream_ends_when_its_token_expires(api: Api) -> None:
    user = new_user()
    headers = auth(user, ttl=4)
    with httpx.stream("GET", f"{api.base}/api/v1/events", headers=headers, timeout=20) as response:
        assert response.status_code == 200
        assert api.leases(user) == 1
        lines = list(response.iter_lines())  # returns once the server ends the stream (20 s read deadline)
    assert lines[0] == ": connected"
    assert "event: token_expired" in lines, lines
    eventually(lambda: api.leases(user) == 0 and api.open_streams() == 0, 15, "stream not released")
    # The expired token no longer opens anything.
    assert httpx.get(f"{api.base}/api/v1/events", headers=headers).status_code == 401


def test_leases_left_by_a_dead_replica_expire_and_a_lost_lease_ends_the_stream(redis_url: str) -> None:
    """The per-user count lives in Redis: leases a crashed replica never released stop counting once
    they are LEASE_SECONDS old (by the Redis clock), and a stream whose lease is gone learns it."""
    settings = Settings(
        redis=RedisSettings(REDIS_URL=redis_url), api=ApiSettings(SSE_MAX_PER_USER=2, SSE_MAX_TOTAL=10)
    )
    user, keys = new_user(), RedisKeys()

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        limiter = StreamLimiter(settings, client, keys)
        try:
            now, _ = await client.time()
            key = keys.sse_streams(user)
            await client.zadd(key, {"dead-replica-stale": now - LEASE_SECONDS - 1, "dead-replica-live": now})
            first = await limiter.open(user, keys.events_channel())  # the stale lease was dropped
            with pytest.raises(ApiError) as refused:  # the live one still counts
                await limiter.open(user, keys.events_channel())
            assert refused.value.status_code == 429 and refused.value.details == {"scope": "user", "limit": 2}
            assert limiter.active == 1 and set(await client.zrange(key, 0, -1)) == {
                "dead-replica-live",
                first.lease_id,
            }

            await client.zrem(key, first.lease_id)  # as if it had gone stale and been dropped
            first.refreshed_at -= LEASE_REFRESH_SECONDS
            assert await limiter.refresh(first) is False
            await limiter.release(first)
            await limiter.release(first)  # twice is harmless
            assert limiter.active == 0 and await client.zcard(key) == 1
        finally:
            await limiter.aclose()
            await client.aclose()

    asyncio.run(scenario())
