"""Sending work to the workers by task name (the API never imports worker code).

Every send goes through `jeffrey_core.enqueue` with the fail-fast request policy; `call` is the one
send-and-wait round trip (emotion detection, echo), awaited without a thread, with its errors mapped
to 502/503/504 envelopes.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import anyio
import redis
from celery import states
from kombu.exceptions import OperationalError as KombuOperationalError

from jeffrey_api.errors import ApiError, unavailable
from jeffrey_api.results import await_result
from jeffrey_api.state import AppState
from jeffrey_core import enqueue
from jeffrey_core.contract import TaskName

log = logging.getLogger(__name__)
KICK_DEBOUNCE_MS = 1000


def send(state: AppState, name: TaskName, countdown: float | None = None, **kwargs: Any) -> Any:
    """Publish a task for a request: a dead broker must fail fast, not stall the request."""
    return enqueue.send(state.celery, name, caller=enqueue.Caller.REQUEST, countdown=countdown, **kwargs)


async def call(state: AppState, name: TaskName, timeout: float, **kwargs: Any) -> Any:
    """Send a task and wait for its result without holding a thread (`results.await_result`).

    The wait is cut to API_RESULT_MAX_WAIT; 504 `worker_timeout` when no worker answered by then, 503
    when Redis is down, 502 `worker_failed` when the task raised (its error stays in the worker log)."""
    timeout = min(timeout, state.settings.api.result_max_wait)
    try:
        # Publishing is quick (the request policy fails fast), but blocking: one short thread hop.
        result = await anyio.to_thread.run_sync(functools.partial(send, state, name, **kwargs))
        meta = await await_result(state.celery, state.redis, result.id, timeout)
    except (KombuOperationalError, redis.RedisError, OSError) as exc:
        raise unavailable("broker_unavailable", "the broker (Redis) is not reachable; retry later") from exc
    if meta is None:
        raise ApiError(504, "worker_timeout", f"no worker answered within {timeout:g}s")
    if meta["status"] != states.SUCCESS:
        log.error("task %s (%s) ended %s", name, result.id, meta["status"])
        raise ApiError(502, "worker_failed", "the worker could not compute the answer; retry later")
    return meta["result"]


def kick_annotation(state: AppState) -> bool:
    """Ask a worker to annotate new memories, at most once a second however many requests arrive.

    The first request of a window sets the debounce key and sends two sweeps: one now (the leading
    edge: its memories are annotated without waiting out the window, and the sweep keeps taking
    whatever else is pending until nothing is) and one just after the window closes (the trailing
    edge: every later request of the window committed before the key expired, so that sweep sees
    their memories). A sweep that finds the sweep lock taken does nothing.

    Within 0.9 s of this process setting the key, it is known to be
    still set, so the request skips Redis altogether. Never fails the request: the memories are
    already committed, and beat's periodic sweep finds them even when this kick could not be sent
    (Redis down).
    """
    clock = (id(state.sync_redis), state.keys.emotion_kick())
    if time.monotonic() - _last_kick.get(clock, -1e9) < KICK_DEBOUNCE_MS / 1000 * 0.9:
        return False
    try:
        started = time.monotonic()
        if not state.sync_redis.set(state.keys.emotion_kick(), "1", nx=True, px=KICK_DEBOUNCE_MS):
            return False
        try:
            send(state, TaskName.EMOTION_ANNOTATE_PENDING)
            send(state, TaskName.EMOTION_ANNOTATE_PENDING, countdown=KICK_DEBOUNCE_MS / 1000 + 0.1)
        except Exception:
            state.sync_redis.delete(state.keys.emotion_kick())  # let the next request try again
            raise
        _last_kick[clock] = started
        return True
    except (redis.RedisError, KombuOperationalError, OSError) as exc:
        log.warning("annotation kick not sent (%s); the periodic sweep will annotate", exc.__class__.__name__)
        return False


# When this process last set each debounce key (monotonic seconds), per Redis client and key.
_last_kick: dict[tuple[int, str], float] = {}
