"""Sending work to the workers by task name (the API never imports worker code)."""

from __future__ import annotations

import logging
from typing import Any

import redis
from kombu.exceptions import OperationalError as KombuOperationalError

from jeffrey_api.state import AppState
from jeffrey_core.contract import TaskName, queue_for

log = logging.getLogger(__name__)
KICK_DEBOUNCE_MS = 1000


def send(state: AppState, name: TaskName, countdown: float | None = None, **kwargs: Any) -> Any:
    """Publish a task with at most one immediate retry: a dead broker must fail fast, not stall a request."""
    queue = queue_for(name.value).value
    # One quick retry: it replaces a pooled connection that died with a restarted Redis.
    policy = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1}
    return state.celery.send_task(
        name.value, kwargs=kwargs, queue=queue, retry=True, retry_policy=policy, countdown=countdown
    )


def kick_annotation(state: AppState) -> bool:
    """Ask a worker to annotate new memories, at most once a second however many requests arrive.

    The first request of a window sets the debounce key and sends a sweep that runs just after the
    window closes; every later request of the window committed before the key expired, so that one
    sweep sees its memories too. Never fails the request: the memories are already committed, and
    beat's periodic sweep finds them even when this kick could not be sent (Redis down).
    """
    try:
        if not state.sync_redis.set(state.keys.emotion_kick(), "1", nx=True, px=KICK_DEBOUNCE_MS):
            return False
        try:
            send(state, TaskName.EMOTION_ANNOTATE_PENDING, countdown=KICK_DEBOUNCE_MS / 1000 + 0.1)
        except Exception:
            state.sync_redis.delete(state.keys.emotion_kick())  # let the next request try again
            raise
        return True
    except (redis.RedisError, KombuOperationalError, OSError) as exc:
        log.warning("annotation kick not sent (%s); the periodic sweep will annotate", exc.__class__.__name__)
        return False
