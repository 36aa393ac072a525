"""A Celery consumer and task request that survive losing their Redis broker.

Celery 5.7's `on_connection_error_after_connected` closes the broken connection after
`collect()` has already detached it from its transport; kombu's Redis channel then tries to restore
unacknowledged messages through that detached connection and raises AttributeError, which is not a
connection error, so the worker stops with "Unrecoverable error" instead of reconnecting (seen in
the chaos suite: Redis stopped for 10 s). We swallow that one error and let the consumer reconnect
as designed; unacknowledged messages come back through the visibility timeout (tasks are idempotent).

The same detached channel breaks the other end of a task: a task that finishes (or fails) while the
consumer is reconnecting is acknowledged or rejected through the message's old channel, whose
connection and pools are gone, and kombu raises AttributeError there too (seen in the Sentinel
failover chaos test with many tasks in flight: the worker stopped). `ResilientRequest` (every
task's `Request`, set on the base task) treats that one case as "this channel can no longer settle
the message": it logs and marks the request settled; the message stays in the broker (kombu
requeues a collected channel's unacked messages when it can, else the visibility timeout does).
An AttributeError on a live channel is a bug and is raised as before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery.worker.consumer import Consumer
from celery.worker.request import Request

log = logging.getLogger(__name__)


class ResilientConsumer(Consumer):  # type: ignore[misc]
    def on_connection_error_after_connected(self, exc: Any) -> None:
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as error:
            log.warning("ignoring %r while closing the lost broker connection; reconnecting", error)


class ResilientRequest(Request):  # type: ignore[misc]
    def acknowledge(self) -> None:
        with _unless_channel_detached(self, "acknowledge"):
            super().acknowledge()

    def reject(self, requeue: bool = False) -> None:
        with _unless_channel_detached(self, "reject"):
            super().reject(requeue)


@contextmanager
def _unless_channel_detached(request: Request, action: str) -> Iterator[None]:
    try:
        yield
    except AttributeError as error:
        channel = getattr(request.message, "channel", None)
        if channel is None or getattr(channel, "connection", None) is not None:
            raise  # a live channel: not the reconnect case, a real bug
        request.acknowledged = True  # nothing more can settle it through this channel
        log.warning(
            "could not %s task %s: its broker channel closed with the lost connection (%r); "
            "the broker redelivers it after the visibility timeout",
            action,
            request.id,
            error,
        )
