"""System services of the worker: beat's heartbeat and the Redis hygiene scan (functions of a context)."""

from __future__ import annotations

import fnmatch
import json
import time
from typing import Any

from jeffrey_core.dlq import DeadLetterQueue
from jeffrey_core.erasure import sweep_residue
from jeffrey_core.store.idempotency import purge_expired_idempotency_keys
from jeffrey_worker.context import WorkerContext

EXAMPLES_KEPT = 20


def record_beat_heartbeat(ctx: WorkerContext, now: float | None = None) -> None:
    """Record when a beat-scheduled tick last ran; the key expires (3 periods) if beat stops."""
    period = ctx.settings.celery.beat_heartbeat_seconds
    ctx.redis.set(
        ctx.keys.beat_heartbeat(), str(time.time() if now is None else now), ex=max(1, int(period * 3))
    )


def redis_hygiene(ctx: WorkerContext) -> dict[str, Any]:
    """Count project keys without a TTL, split by whether their owner is documented; stored for /metrics."""
    client, keys = ctx.redis, ctx.keys
    documented = undocumented = 0
    examples: list[str] = []
    patterns = keys.persistent_patterns()
    for key in client.scan_iter(match=f"{keys.prefix}:*", count=500):
        if client.ttl(key) != -1:
            continue
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns):
            documented += 1
            continue
        undocumented += 1
        if len(examples) < EXAMPLES_KEPT:
            examples.append(key)
    report = {"documented": documented, "undocumented": undocumented, "examples": examples, "at": time.time()}
    period = ctx.settings.celery.redis_hygiene_seconds
    client.set(keys.redis_hygiene(), json.dumps(report), ex=max(60, int(period * 3)))
    return report


def erasure_sweep(ctx: WorkerContext, app: Any, user_id: str, run_ids: list[str]) -> dict[str, int]:
    """What tasks in flight during a user's erasure left in Redis: their results and dead letters
    naming the erased runs, and the user's dream lock (jeffrey_core.erasure)."""
    return sweep_residue(ctx.redis, ctx.keys, app, user_id, set(run_ids))


def apply_retention(ctx: WorkerContext, app: Any) -> dict[str, int]:
    """Delete what has outlived its purpose: expired idempotency keys (they hold full responses,
    memory text included) and dead letters older than DLQ_RETENTION_SECONDS."""
    with ctx.sessions() as session:
        keys = purge_expired_idempotency_keys(session)
        session.commit()
    letters = DeadLetterQueue(ctx.redis, app).purge(ctx.settings.celery.dlq_retention_seconds)
    return {"idempotency_keys": keys, "dead_letters": letters}
