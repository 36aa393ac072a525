"""Tasks: thin wrappers that validate the payload, call plain logic and return small JSON."""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import socket
import time
from typing import Any

import redis

from jeffrey_core.contract import MAX_DETECT_TEXTS, TaskName
from jeffrey_core.settings import get_settings
from jeffrey_worker import annotation
from jeffrey_worker.emotion_service import record_predictions
from jeffrey_worker.metrics import worker_metrics
from jeffrey_worker.reliability import jeffrey_task
from jeffrey_worker.resources import guarded_detector, redis_client, redis_keys, sessions

log = logging.getLogger(__name__)
MAX_TEXT_CHARS = 5000


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


@jeffrey_task(TaskName.BEAT_HEARTBEAT.value, ignore_result=True)
def beat_heartbeat() -> None:
    """Record when a beat-scheduled tick was last executed; the key expires if beat stops."""
    period = get_settings().celery.beat_heartbeat_seconds
    redis_client().set(redis_keys().beat_heartbeat(), str(time.time()), ex=max(1, int(period * 3)))


@jeffrey_task(TaskName.REDIS_HYGIENE.value, ignore_result=True)
def redis_hygiene() -> dict[str, Any]:
    """Count project keys without a TTL, split by whether their owner is documented; stored for /metrics."""
    client, keys = redis_client(), redis_keys()
    documented = undocumented = 0
    examples: list[str] = []
    patterns = keys.persistent_patterns()
    for key in client.scan_iter(match=f"{keys.prefix}:*", count=500):
        if client.ttl(key) != -1:
            continue
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns):
            documented += 1
        else:
            undocumented += 1
            if len(examples) < 20:
                examples.append(key)
    report = {"documented": documented, "undocumented": undocumented, "examples": examples, "at": time.time()}
    period = get_settings().celery.redis_hygiene_seconds
    client.set(keys.redis_hygiene(), json.dumps(report), ex=max(60, int(period * 3)))
    return report


@jeffrey_task(TaskName.EMOTION_DETECT.value, soft_time_limit=10, time_limit=15)
def detect_emotion(texts: list[str]) -> list[dict[str, Any]]:
    """Emotion of 1-64 texts, in order (the API validated them; checked again: messages can be forged)."""
    if (
        not isinstance(texts, list)
        or not 1 <= len(texts) <= MAX_DETECT_TEXTS
        or not all(isinstance(t, str) and 0 < len(t) <= MAX_TEXT_CHARS for t in texts)
    ):
        raise ValueError(
            f"texts must be a list of 1-{MAX_DETECT_TEXTS} strings of 1-{MAX_TEXT_CHARS} characters"
        )
    results = guarded_detector().detect(texts)
    record_predictions(results)
    return [r.as_dict() for r in results]


@jeffrey_task(TaskName.EMOTION_ANNOTATE_PENDING.value, bind=True, ignore_result=True)
def annotate_pending(self: Any) -> dict[str, int]:
    """Annotate every memory without an emotion, in micro-batches; one sweep at a time."""
    settings = get_settings()
    lock = redis_client().lock(
        redis_keys().emotion_sweep_lock(), timeout=settings.celery.task_time_limit + 5, blocking=False
    )
    if not lock.acquire(blocking=False):
        return {"skipped": 1}
    try:
        detector = guarded_detector()
        breaker_closed = detector.breaker.current_state == "closed"
        stats = annotation.annotate_pending(
            sessions(),
            detector.detect,
            batch_size=settings.emotion.annotate_batch_size,
            budget_seconds=settings.celery.task_soft_time_limit * 0.6,
            include_fallback=breaker_closed,
        )
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            log.warning("annotation sweep lock expired before release")
    record_predictions(stats.results_written)
    metrics = worker_metrics()
    metrics.annotations.labels(outcome="written").inc(stats.written)
    metrics.annotations.labels(outcome="skipped").inc(stats.skipped)
    if stats.more_pending:
        self.app.send_task(TaskName.EMOTION_ANNOTATE_PENDING.value)
    if stats.written:
        log.info("annotated %d memories in %d batches", stats.written, stats.batches)
    return {"written": stats.written, "skipped": stats.skipped, "batches": stats.batches}
