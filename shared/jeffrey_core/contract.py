"""The task contract shared by the API, the workers and beat: queue names, task names, routes.

The API sends tasks by name from here and never imports `jeffrey_worker`.
Messages carry ids and small JSON, never objects.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, get_args

from pydantic import BaseModel


class Queue(StrEnum):
    DREAM = "dream"
    EMOTION = "emotion"
    DEFAULT = "default"
    # Nothing consumes it by default: tasks that failed for good wait there for an operator.
    DEAD_LETTER = "dead_letter"


# Queues a worker consumes unless told otherwise.
WORKER_QUEUES: tuple[Queue, ...] = (Queue.DREAM, Queue.EMOTION, Queue.DEFAULT)


class TaskName(StrEnum):
    # Answers with the worker's identity and clock: a real round trip through broker and backend.
    SYSTEM_ECHO = "jeffrey.system.echo"
    # Beat's own liveness: writes a timestamp (with a TTL) that /readyz and ops tools read.
    BEAT_HEARTBEAT = "jeffrey.system.beat_heartbeat"
    # Counts project keys without a TTL (Redis hygiene), for /metrics.
    REDIS_HYGIENE = "jeffrey.system.redis_hygiene"
    # Data retention: expired idempotency keys and old dead letters are deleted.
    RETENTION = "jeffrey.system.retention"
    # After a user's erasure: results and dead letters that tasks in flight at that moment left behind.
    ERASURE_SWEEP = "jeffrey.system.erasure_sweep"
    # Emotion of up to 64 texts, answered synchronously to the API (result backend).
    EMOTION_DETECT = "jeffrey.emotion.detect"
    # Annotate memories that have no emotion yet, in micro-batches; kicked by the API, swept by beat.
    EMOTION_ANNOTATE_PENDING = "jeffrey.emotion.annotate_pending"
    # One batch of a dream run; it sends the next batch itself until the user's memories are done.
    DREAM_CONSOLIDATE_BATCH = "jeffrey.dream.consolidate_batch"
    # Beat's dream cycle: one run per user with enough pending memories (honours the toggle).
    DREAM_CYCLE = "jeffrey.dream.cycle"
    # Re-send the batch of each run whose batches stopped (no heartbeat): on worker start and from beat.
    DREAM_RECOVER = "jeffrey.dream.recover"
    # A failed-for-good task's record, parked on the dead_letter queue (nothing consumes it).
    DEAD_LETTER = "jeffrey.dlq.dead_letter"


TASK_ROUTES: dict[str, dict[str, str]] = {
    TaskName.SYSTEM_ECHO.value: {"queue": Queue.DEFAULT.value},
    TaskName.BEAT_HEARTBEAT.value: {"queue": Queue.DEFAULT.value},
    TaskName.REDIS_HYGIENE.value: {"queue": Queue.DEFAULT.value},
    TaskName.RETENTION.value: {"queue": Queue.DEFAULT.value},
    TaskName.ERASURE_SWEEP.value: {"queue": Queue.DEFAULT.value},
    # Future task families are routed by prefix so a new task cannot land on the wrong queue.
    "jeffrey.dream.*": {"queue": Queue.DREAM.value},
    "jeffrey.emotion.*": {"queue": Queue.EMOTION.value},
    "jeffrey.dlq.*": {"queue": Queue.DEAD_LETTER.value},
}


def queue_for(task_name: str) -> Queue:
    """The queue a task name is routed to (default when no route matches)."""
    if task_name in TASK_ROUTES:
        return Queue(TASK_ROUTES[task_name]["queue"])
    for pattern, route in TASK_ROUTES.items():
        if pattern.endswith(".*") and task_name.startswith(pattern[:-1]):
            return Queue(route["queue"])
    return Queue.DEFAULT


class DreamToggle(StrEnum):
    """Scheduled dreaming on/off, as stored in Redis (RedisKeys.dream_enabled); absent means on."""

    ON = "1"
    OFF = "0"

    @classmethod
    def is_on(cls, raw: str | bytes | None) -> bool:
        value = raw.decode() if isinstance(raw, bytes) else raw
        return value != cls.OFF.value

    @classmethod
    def of(cls, enabled: bool) -> DreamToggle:
        return cls.ON if enabled else cls.OFF


# Limits of a memory's text and of one detect call (validated by the API, checked again by workers).
MAX_DETECT_TEXTS = 64
MAX_TEXT_CHARS = 5000

EmotionLabel = Literal["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
EKMAN_LABELS: tuple[str, ...] = get_args(EmotionLabel)


class EmotionDetection(BaseModel):
    """One text's emotion, as workers return it, memories store it and /emotion/detect answers it."""

    label: str
    fine_label: str
    confidence: float
    scores: dict[str, float]
    fine_scores: dict[str, float]
    labels: list[str]
    method: str
    model_version: str
    lang: str | None


# Name of the emotion model's circuit breaker (its state lives in Redis, see RedisKeys.breaker_state).
EMOTION_BREAKER = "emotion-model"


def echo_payload(message: str) -> dict[str, Any]:
    """The payload of SYSTEM_ECHO: a short string the worker sends back."""
    return {"message": message[:200]}
