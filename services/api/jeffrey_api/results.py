"""Waiting for a worker's answer without holding a thread: the task's result key is polled with the
API's asyncio Redis client, backing off from 20 ms to 250 ms, under a deadline.

Celery's own `AsyncResult.get` blocks a thread for the whole wait (the API's pool has 40), and its Redis
backend subscribes to every sent task's result channel on a blocking connection that only `get` drains.
The API therefore uses `PolledRedisBackend`, which never subscribes: the answer is read from the key
the worker stores it in (`celery-task-meta-<id>`, kept CELERY_RESULT_EXPIRES), then deleted.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis
from celery import Celery, states
from celery.backends.redis import RedisBackend, SentinelBackend

POLL_FIRST_SECONDS = 0.02
POLL_MAX_SECONDS = 0.25


class PolledRedisBackend(RedisBackend):  # type: ignore[misc]
    """Celery's Redis result backend, minus the per-task subscription made when a task is sent."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None


class PolledSentinelBackend(SentinelBackend):  # type: ignore[misc]
    """The same through Sentinel (REDIS_SENTINELS: the URL is `sentinel://...;sentinel://...`)."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None


def polled_backend_url(dsn: str) -> str:
    """`result_backend` naming PolledRedisBackend (PolledSentinelBackend for a `sentinel://` URL) on the
    Redis at `dsn` (Celery's "class+url" form)."""
    backend = PolledSentinelBackend if dsn.startswith("sentinel://") else PolledRedisBackend
    return f"{backend.__module__}:{backend.__qualname__}+{dsn}"


async def await_result(
    celery: Celery, client: aioredis.Redis, task_id: str, timeout: float
) -> dict[str, Any] | None:
    """The task's finished result meta (status, result, ...) or None when none came within `timeout`.

    The result key is deleted either way (a late answer then lives until CELERY_RESULT_EXPIRES)."""
    backend = celery.backend
    key = backend.get_key_for_task(task_id)
    deadline = time.monotonic() + timeout
    pause = POLL_FIRST_SECONDS
    try:
        while True:
            raw = await client.get(key)
            if raw is not None:
                meta: dict[str, Any] = backend.decode_result(raw)
                if meta.get("status") in states.READY_STATES:
                    return meta
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, POLL_MAX_SECONDS)
    finally:
        await _forget(client, key)


async def _forget(client: aioredis.Redis, key: bytes | str) -> None:
    try:
        await client.delete(key)
    except Exception:  # noqa: S110 - best effort: the key expires after CELERY_RESULT_EXPIRES anyway
        pass
