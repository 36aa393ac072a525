"""Sending work to the workers by task name (the API never imports worker code).

Every send goes through `jeffrey_core.enqueue` with the fail-fast request policy; `call` is the one
send-and-wait round trip (emotion detection, echo), with its errors mapped to 503/504 envelopes.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import redis
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu.exceptions import OperationalError as KombuOperationalError

from jeffrey_api.errors import ApiError, unavailable
from jeffrey_api.state import AppState
from jeffrey_core import enqueue
from jeffrey_core.contract import TaskName

log = logging.getLogger(__name__)
KICK_DEBOUNCE_MS = 1000


def send(state: AppState, name: TaskName, countdown: float | None = None, **kwargs: Any) -> Any:
    """Publish a task for a request: a dead broker must fail fast, not stall the request."""
    return enqueue.send(state.celery, name, caller=enqueue.Caller.REQUEST, countdown=countdown, **kwargs)


async def call(state: AppState, name: TaskName, timeout: float, **kwargs: Any) -> Any:
    """Send a task and wait for its result: 504 when no worker answers in time, 503 when Redis is down."""

    def round_trip() -> Any:
        result = send(state, name, **kwargs)
        try:
            return result.get(timeout=timeout, propagate=True)
        finally:
            result.forget()

    try:
        return await anyio.to_thread.run_sync(round_trip)
    except CeleryTimeoutError as exc:
        raise ApiError(504, "worker_timeout", f"no worker answered within {timeout:g}s") from exc
    except (KombuOperationalError, redis.RedisError, OSError) as exc:
        raise unavailable("broker_unavailable", "the broker (Redis) is not reachable; retry later") from exc


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
