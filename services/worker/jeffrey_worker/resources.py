"""Per-process clients for tasks, opened on first use in each (forked) process, never at import."""

from __future__ import annotations

import os

import redis

from jeffrey_core.redis_client import create_sync_redis
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.settings import get_settings

_clients: dict[int, redis.Redis] = {}


def redis_client() -> redis.Redis:
    """This process's Redis client (a forked child never reuses its parent's sockets)."""
    pid = os.getpid()
    if pid not in _clients:
        _clients.clear()
        _clients[pid] = create_sync_redis(get_settings().redis)
    return _clients[pid]


def redis_keys() -> RedisKeys:
    return RedisKeys(get_settings().redis.key_prefix)
