"""System and emotion tasks, as thin adapters: validate the payload, call a service with the
worker's context, map the outcome (a next message, a small JSON result)."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from jeffrey_core.contract import TaskName
from jeffrey_worker import annotation, system
from jeffrey_worker.reliability import jeffrey_task


@jeffrey_task(TaskName.SYSTEM_ECHO.value, bind=True)
def echo(self: Any, message: str) -> dict[str, Any]:
    """Send `message` back with who answered and when: proves the broker-worker-backend loop."""
    return {
        "message": message,
        "worker": self.request.hostname or socket.gethostname(),
        "pid": os.getpid(),
        "task_id": self.request.id,
        "answered_at": time.time(),
    }


@jeffrey_task(TaskName.BEAT_HEARTBEAT.value, bind=True, ignore_result=True)
def beat_heartbeat(self: Any) -> None:
    system.record_beat_heartbeat(self.ctx)


@jeffrey_task(TaskName.REDIS_HYGIENE.value, bind=True, ignore_result=True)
def redis_hygiene(self: Any) -> dict[str, Any]:
    return system.redis_hygiene(self.ctx)


@jeffrey_task(TaskName.RETENTION.value, bind=True, ignore_result=True)
def retention(self: Any) -> dict[str, int]:
    return system.apply_retention(self.ctx, self.app)


@jeffrey_task(TaskName.ERASURE_SWEEP.value, bind=True, ignore_result=True)
def erasure_sweep(self: Any, user_id: str, run_ids: list[str]) -> dict[str, int]:
    return system.erasure_sweep(self.ctx, self.app, user_id, run_ids)


@jeffrey_task(TaskName.EMOTION_DETECT.value, bind=True, soft_time_limit=10, time_limit=15)
def detect_emotion(self: Any, texts: list[str]) -> list[dict[str, Any]]:
    """Emotion of 1-64 texts, in order."""
    return annotation.detect(self.ctx, texts)


@jeffrey_task(TaskName.EMOTION_ANNOTATE_PENDING.value, bind=True, ignore_result=True)
def annotate_pending(self: Any) -> dict[str, int]:
    """Annotate every memory without an emotion, in micro-batches; one sweep at a time."""
    stats = annotation.sweep(self.ctx)
    if stats is None:
        return {"skipped": 1}
    if stats.more_pending:
        self.ctx.send(TaskName.EMOTION_ANNOTATE_PENDING)
    return {"written": stats.written, "skipped": stats.skipped, "batches": stats.batches}
