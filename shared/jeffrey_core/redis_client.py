"""Redis clients with timeouts on every call, built from settings (never at import)."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from jeffrey_core.settings import RedisSettings


def create_async_redis(settings: RedisSettings) -> aioredis.Redis:
    """An asyncio client for the API: fails fast instead of hanging when Redis is away."""
    return aioredis.Redis.from_url(
        settings.dsn(),
        socket_connect_timeout=settings.connect_timeout,
        socket_timeout=settings.socket_timeout,
        health_check_interval=15,
        decode_responses=True,
    )


def create_sync_redis(settings: RedisSettings, decode_responses: bool = True) -> redis.Redis:
    """A blocking client for workers, beat and the CLI (bytes responses for pybreaker's storage)."""
    return redis.Redis.from_url(
        settings.dsn(),
        socket_connect_timeout=settings.connect_timeout,
        socket_timeout=settings.socket_timeout,
        health_check_interval=15,
        decode_responses=decode_responses,
    )
