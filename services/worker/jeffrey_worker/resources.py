"""Per-process clients for tasks, opened on first use in each (forked) process, never at import."""

from __future__ import annotations

import os
from typing import Any

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from jeffrey_core.redis_client import create_sync_redis
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.settings import get_settings
from jeffrey_core.store.engine import create_db_engine, create_session_factory

_per_process: dict[tuple[int, str], Any] = {}


def per_process(name: str, build: Any) -> Any:
    """One instance per process: a forked pool child never reuses its parent's sockets or state."""
    key = (os.getpid(), name)
    if key not in _per_process:
        _per_process[key] = build()
    return _per_process[key]


def redis_client() -> redis.Redis:
    client: redis.Redis = per_process("redis", lambda: create_sync_redis(get_settings().redis))
    return client


def redis_bytes_client() -> redis.Redis:
    """pybreaker's Redis storage expects bytes responses."""
    settings = get_settings().redis

    def build() -> redis.Redis:
        return redis.Redis.from_url(
            settings.dsn(),
            socket_connect_timeout=settings.connect_timeout,
            socket_timeout=settings.socket_timeout,
        )

    client: redis.Redis = per_process("redis-bytes", build)
    return client


def redis_keys() -> RedisKeys:
    return RedisKeys(get_settings().redis.key_prefix)


def engine() -> Engine:
    db: Engine = per_process("engine", lambda: create_db_engine(get_settings().database))
    return db


def sessions() -> sessionmaker[Session]:
    factory: sessionmaker[Session] = per_process("sessions", lambda: create_session_factory(engine()))
    return factory


def guarded_detector() -> Any:
    """The emotion detector behind its circuit breaker, loaded once per process."""
    from jeffrey_worker.emotion_service import build_guarded_detector

    return per_process("detector", build_guarded_detector)
