"""What the API process holds open between requests; built in the lifespan, closed on shutdown."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio
import redis.asyncio as aioredis
from celery import Celery
from prometheus_client import CollectorRegistry
from redis import Redis as SyncRedis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from jeffrey_api.readiness import ReadinessProbe
from jeffrey_api.results import polled_backend_url
from jeffrey_api.streams import StreamLimiter
from jeffrey_core.breaker import read_breaker
from jeffrey_core.celery_factory import create_celery
from jeffrey_core.contract import EMOTION_BREAKER
from jeffrey_core.redis_client import celery_url, create_async_redis, create_sync_redis
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.settings import Settings
from jeffrey_core.store.engine import create_db_engine, create_session_factory, pool_capacity


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: aioredis.Redis
    # For the synchronous (threadpool) routes: debouncing task kicks.
    sync_redis: SyncRedis
    # Bytes responses (no decode_responses), for pybreaker's storage behind jeffrey_core.breaker.
    redis_bytes: SyncRedis
    celery: Celery
    readiness: ReadinessProbe
    registry: CollectorRegistry
    keys: RedisKeys
    # Event streams: their caps, and the connections they subscribe on (not `redis`'s pool).
    streams: StreamLimiter
    # Requests holding a database session at once: one fewer than the engine's connections, so request
    # threads never wait for a connection held by a request that waits for a thread (deps.get_session),
    # and the one left serves what opens its own session (audit rows, readiness, /metrics, erasure).
    session_slots: anyio.Semaphore

    @classmethod
    def open(cls, settings: Settings, registry: CollectorRegistry) -> AppState:
        """Every client the process shares, built once (and RedisKeys once)."""
        keys = RedisKeys(settings.redis.key_prefix)
        engine = create_db_engine(settings.database)
        redis = create_async_redis(settings.redis)
        celery = create_celery(settings, main="jeffrey-api")
        # Results are awaited by polling (jeffrey_api.results), never by a subscription per sent task.
        celery.conf.result_backend = polled_backend_url(celery_url(settings.redis))
        redis_bytes = create_sync_redis(settings.redis, decode_responses=False)
        readiness = ReadinessProbe(
            redis,
            engine,
            celery,
            cache_seconds=settings.api.readiness_cache_seconds,
            worker_ping_timeout=settings.api.worker_ping_timeout,
            breakers=breaker_states(redis_bytes, keys),
        )
        return cls(
            settings=settings,
            engine=engine,
            sessions=create_session_factory(engine),
            redis=redis,
            sync_redis=create_sync_redis(settings.redis),
            redis_bytes=redis_bytes,
            celery=celery,
            readiness=readiness,
            registry=registry,
            keys=keys,
            streams=StreamLimiter(settings, redis, keys),
            session_slots=anyio.Semaphore(max(1, pool_capacity(settings.database) - 1)),
        )

    async def close(self) -> None:
        await self.streams.aclose()
        await self.redis.aclose()
        self.sync_redis.close()
        self.redis_bytes.close()
        self.celery.close()
        self.engine.dispose()


def breaker_states(client: SyncRedis, keys: RedisKeys) -> Callable[[], dict[str, str]]:
    """Reads each breaker's state through jeffrey_core.breaker (blocking; for /readyz)."""

    def read() -> dict[str, str]:
        return {name: read_breaker(client, keys, name).state for name in (EMOTION_BREAKER,)}

    return read
