"""Admission control: refuse new work for a queue that is above its maximum depth (429 + Retry-After)."""

from __future__ import annotations

import redis

from jeffrey_api.errors import ApiError, unavailable
from jeffrey_api.state import AppState
from jeffrey_core.contract import Queue
from jeffrey_core.redis_keys import celery_queue_keys


def queue_depth(client: redis.Redis, queue: str) -> int:
    with client.pipeline(transaction=False) as pipe:
        for key in celery_queue_keys(queue):
            pipe.llen(key)
        return int(sum(pipe.execute()))


def admit(state: AppState, queue: Queue) -> None:
    """Raise 429 when `queue` is full, 503 when Redis cannot say; return when the work may be sent."""
    limit = state.settings.admission.max_depth(queue)
    if limit is None:
        return
    try:
        depth = queue_depth(state.sync_redis, queue.value)
    except redis.RedisError as exc:
        raise unavailable("broker_unavailable", "Redis is not reachable; retry later") from exc
    if depth >= limit:
        raise ApiError(
            429,
            "queue_full",
            f"the {queue.value} queue holds {depth} tasks (limit {limit}); retry later",
            {"queue": queue.value, "depth": depth, "limit": limit},
            headers={"Retry-After": str(state.settings.admission.retry_after_seconds)},
        )
