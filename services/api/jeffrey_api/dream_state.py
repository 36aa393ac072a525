"""GET /dream/status: the dream read model of one user (or everyone) plus the toggle, schedule and locks."""

from __future__ import annotations

from typing import Any

import anyio

from jeffrey_api.admission import queue_depth
from jeffrey_api.read_model import DreamView, read_dream_view
from jeffrey_api.state import AppState
from jeffrey_core.contract import DreamToggle, Queue
from jeffrey_core.schedule import next_fire_time
from jeffrey_core.store.models import RunStatus


async def lock_holders(state: AppState) -> dict[str, str]:
    holders: dict[str, str] = {}
    prefix = state.keys.dream_lock("")
    async for key in state.redis.scan_iter(match=state.keys.dream_lock_pattern(), count=200):
        owner = await state.redis.get(key)
        if owner:
            holders[str(key)[len(prefix) :]] = str(owner)
    return holders


def read_view(state: AppState, user_id: str | None) -> DreamView:
    with state.sessions() as session:
        return read_dream_view(session, user_id)


def status_body(view: DreamView) -> dict[str, Any]:
    """The database part of /dream/status."""
    last, success = view.last_run, view.last_success
    return {
        "runs": {
            "total": view.total_runs,
            "succeeded": view.count(RunStatus.SUCCEEDED),
            "failed": view.count(RunStatus.FAILED),
            "active": view.active_runs,
        },
        "last_run": {"id": last.id, "status": last.status, "queued_at": last.queued_at} if last else None,
        "last_success_at": success.finished_at if success else None,
        "last_quality": success.quality if success else None,
        "average_quality": view.average_quality,
        "pending_memories": view.pending_memories,
    }


async def dream_status(state: AppState, user_id: str | None) -> dict[str, Any]:
    settings = state.settings.dream
    enabled_raw, batch_size = await state.redis.mget(
        state.keys.dream_enabled(), state.keys.dream_batch_size()
    )
    view = await anyio.to_thread.run_sync(read_view, state, user_id)
    holders = await lock_holders(state)
    return {
        "enabled": DreamToggle.is_on(enabled_raw),
        "schedule": settings.schedule,
        "next_fire_at": next_fire_time(settings.schedule),
        "min_pending": settings.min_pending,
        "batch_size": int(batch_size) if batch_size else settings.batch_initial,
        "dlq_size": await anyio.to_thread.run_sync(queue_depth, state.sync_redis, Queue.DEAD_LETTER.value),
        "lock_holders": holders if user_id is None else {k: v for k, v in holders.items() if k == user_id},
        **status_body(view),
    }
