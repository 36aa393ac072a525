"""Redis clients with timeouts on every call, built from settings (never at import).

Every Redis connection of every process is built here, so Sentinel (REDIS_SENTINELS) reaches all of
them: with Sentinels configured a client asks them for the current master of REDIS_SENTINEL_MASTER
before each new connection, and after a failover its next connection goes to the promoted replica
(redis-py's SentinelConnectionPool). Without Sentinels the clients connect to REDIS_URL as before.
The Celery side (broker, result backend, redbeat) gets its URLs and options from the functions at
the end of this module; see docs/operations.md.
"""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool as AsyncBlockingPool
from redis.asyncio.connection import ConnectionPool as AsyncConnectionPool
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.sentinel import Sentinel

from jeffrey_core.settings import RedisSettings, with_password

HEALTH_CHECK_INTERVAL = 15


class AsyncBlockingSentinelPool(AsyncSentinelPool, AsyncBlockingPool):
    """A Sentinel-managed pool that waits (up to `timeout`) for a free connection at its cap, like
    BlockingConnectionPool, instead of failing at once."""


def sentinel_kwargs(settings: RedisSettings) -> dict[str, Any]:
    """How to talk to the Sentinels themselves: short timeouts, their own password if any."""
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.connect_timeout,
    }
    if settings.sentinel_password is not None:
        options["password"] = settings.sentinel_password.get_secret_value()
    return options


def _master_kwargs(settings: RedisSettings, **options: Any) -> dict[str, Any]:
    return {"password": settings.master_password(), "db": settings.db(), **options}


def create_async_redis(settings: RedisSettings) -> aioredis.Redis:
    """An asyncio client for the API: fails fast instead of hanging when Redis is away."""
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.socket_timeout,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "decode_responses": True,
    }
    pool = create_async_pool(
        settings, max_connections=settings.max_connections, timeout=settings.socket_timeout, **options
    )
    return aioredis.Redis(connection_pool=pool)


def create_sync_redis(settings: RedisSettings, decode_responses: bool = True) -> redis.Redis:
    """A blocking client for workers, beat and the CLI (bytes responses for pybreaker's storage)."""
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.socket_timeout,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "decode_responses": decode_responses,
    }
    if settings.sentinels:
        sentinel = Sentinel(settings.sentinels, sentinel_kwargs=sentinel_kwargs(settings))  # type: ignore[no-untyped-call]
        client = sentinel.master_for(settings.sentinel_master, **_master_kwargs(settings, **options))  # type: ignore[no-untyped-call]
        return cast(redis.Redis, client)
    return redis.Redis.from_url(settings.dsn(), **options)


def create_async_pool(
    settings: RedisSettings, max_connections: int, timeout: float, **options: Any
) -> AsyncConnectionPool:
    """A pool of its own with at most `max_connections`, waiting up to `timeout` for one at the cap
    (the rate limiter's and the event streams' pools); `options` go to each connection."""
    if not settings.sentinels:
        return AsyncBlockingPool.from_url(
            settings.dsn(), max_connections=max_connections, timeout=timeout, **options
        )
    sentinel = _async_sentinel(settings)
    return AsyncBlockingSentinelPool(  # type: ignore[no-untyped-call]
        settings.sentinel_master,
        sentinel,
        is_master=True,
        max_connections=max_connections,
        timeout=timeout,
        **_master_kwargs(settings, **options),
    )


def _async_sentinel(settings: RedisSettings) -> AsyncSentinel:
    return AsyncSentinel(settings.sentinels, sentinel_kwargs=sentinel_kwargs(settings))  # type: ignore[no-untyped-call]


# Celery (kombu's `sentinel://` transport and Celery's SentinelBackend) and redbeat.


def celery_url(settings: RedisSettings) -> str:
    """The broker and result-backend URL: REDIS_URL, or one `sentinel://` URL per Sentinel joined by
    ';' (kombu and Celery read the master's password and db from the first)."""
    if not settings.sentinels:
        return settings.dsn()
    db = settings.db()
    return ";".join(
        with_password(f"sentinel://{_netloc(host, port)}/{db}", settings.master_password())
        for host, port in settings.sentinels
    )


def celery_sentinel_options(settings: RedisSettings) -> dict[str, Any]:
    """Transport options Celery needs on top of the usual ones when the URL is `sentinel://`."""
    if not settings.sentinels:
        return {}
    return {"master_name": settings.sentinel_master, "sentinel_kwargs": sentinel_kwargs(settings)}


def redbeat_config(settings: RedisSettings) -> dict[str, Any]:
    """redbeat_redis_url (and, with Sentinels, redbeat_redis_options) for celery-redbeat."""
    if not settings.sentinels:
        return {"redbeat_redis_url": settings.dsn()}
    return {
        # redbeat takes the Sentinel branch for a `redis-sentinel` URL with `sentinels` in the options.
        "redbeat_redis_url": "redis-sentinel://",
        "redbeat_redis_options": {
            "sentinels": settings.sentinels,
            "service_name": settings.sentinel_master,
            "password": settings.master_password(),
            "db": settings.db(),
            "socket_timeout": settings.socket_timeout,
            "sentinel_kwargs": sentinel_kwargs(settings),
            # Retry a call (e.g. the lock extension) through a failover instead of failing beat's tick.
            "retry_period": 30,
        },
    }


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
