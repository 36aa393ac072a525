"""DreamEngine state read from the database and Redis, so every API replica reports the same values."""

from __future__ import annotations

from typing import Any

import anyio

from jeffrey_api.admission import queue_depth
from jeffrey_api.state import AppState
from jeffrey_core.contract import Queue
from jeffrey_core.schedule import next_fire_time
from jeffrey_core.store import dreams as store
from jeffrey_core.store.models import RunStatus


async def lock_holders(state: AppState) -> dict[str, str]:
    holders: dict[str, str] = {}
    prefix = state.keys.dream_lock("")
    async for key in state.redis.scan_iter(match=state.keys.dream_lock_pattern(), count=200):
        owner = await state.redis.get(key)
        if owner:
            holders[str(key)[len(prefix) :]] = str(owner)
    return holders


def _database_view(state: AppState, user_id: str | None) -> dict[str, Any]:
    with state.sessions() as session:
        counts = store.run_counts(session, user_id)
        last = store.last_run(session, user_id)
        last_success = store.last_run(session, user_id, RunStatus.SUCCEEDED)
        return {
            "runs": {
                "total": sum(counts.values()),
                "succeeded": counts.get("succeeded", 0),
                "failed": counts.get("failed", 0),
                "active": counts.get("queued", 0) + counts.get("running", 0),
            },
            "last_run": {"id": last.id, "status": last.status, "queued_at": last.queued_at} if last else None,
            "last_success_at": last_success.finished_at if last_success else None,
            "last_quality": last_success.quality if last_success else None,
            "average_quality": store.average_quality(session, user_id),
            "pending_memories": store.count_pending(session, user_id),
        }


async def dream_status(state: AppState, user_id: str | None) -> dict[str, Any]:
    settings = state.settings.dream
    enabled_raw, batch_size = await state.redis.mget(
        state.keys.dream_enabled(), state.keys.dream_batch_size()
    )
    view = await anyio.to_thread.run_sync(_database_view, state, user_id)
    holders = await lock_holders(state)
    return {
        "enabled": enabled_raw != "0",
        "schedule": settings.schedule,
        "next_fire_at": next_fire_time(settings.schedule),
        "min_pending": settings.min_pending,
        "batch_size": int(batch_size) if batch_size else settings.batch_initial,
        "dlq_size": await anyio.to_thread.run_sync(queue_depth, state.sync_redis, Queue.DEAD_LETTER.value),
        "lock_holders": holders if user_id is None else {k: v for k, v in holders.items() if k == user_id},
        **view,
    }
