"""What the API process holds open between requests; built in the lifespan, closed on shutdown."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from celery import Celery
from prometheus_client import CollectorRegistry
from redis import Redis as SyncRedis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from jeffrey_api.readiness import ReadinessProbe
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.settings import Settings


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: aioredis.Redis
    # For the synchronous (threadpool) routes: debouncing task kicks.
    sync_redis: SyncRedis
    celery: Celery
    readiness: ReadinessProbe
    registry: CollectorRegistry
    keys: RedisKeys
