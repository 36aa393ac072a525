"""The one way to enqueue work: send a task by name, to the queue the contract routes it to, with the
publish-retry policy of the caller's kind.

Requests fail fast (a dead broker answers 503 in milliseconds, never stalls a request); workers and
beat are patient (their work is already durable elsewhere, and giving up would only move it to a
retry or a dead letter). A caller that declares nothing gets the patient policy: losing a message
silently is worse than waiting a few seconds for Redis.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from celery import Celery

from jeffrey_core.contract import TaskName, queue_for


class Caller(StrEnum):
    REQUEST = "request"  # an API request is waiting
    WORKER = "worker"  # a task chaining the next step
    BEAT = "beat"  # the scheduler


# kombu's publish retry policy (see kombu.Connection.ensure): attempts and back-off in seconds.
PUBLISH_RETRY: dict[Caller, dict[str, float]] = {
    # One quick retry: it replaces a pooled connection that died with a restarted Redis.
    Caller.REQUEST: {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1},
    # About 30 s of patience: a Redis restart or failover, not a permanent outage.
    Caller.WORKER: {"max_retries": 10, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 5},
    Caller.BEAT: {"max_retries": 10, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 5},
}


def send(
    app: Celery,
    name: TaskName | str,
    *,
    caller: Caller = Caller.WORKER,
    countdown: float | None = None,
    args: list[Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Publish task `name` with `kwargs` (JSON only) and return its AsyncResult.

    The message's `argsrepr`/`kwargsrepr` (what worker logs, task events and Flower show) carry
    sizes instead of user text, the same redaction as dead letters; the task still gets the text."""
    from jeffrey_core.dlq import redact  # dlq publishes through this module

    task = str(name)
    return app.send_task(
        task,
        args=args,
        kwargs=kwargs,
        argsrepr=repr([redact(value)[0] for value in args or []]),
        kwargsrepr=repr(redact(kwargs)[0]),
        queue=queue_for(task).value,
        retry=True,
        retry_policy=PUBLISH_RETRY[caller],
        countdown=countdown,
    )
