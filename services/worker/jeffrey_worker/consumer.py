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

The consumer also sends task events in fewer messages. Celery buffers the worker's task events
(received, started, succeeded...) and flushes them at the next turn of the event loop, which with
fast tasks is about one Redis PUBLISH per event: that flush was about 60 % of the worker main
process's CPU in `bench.queue` and the whole gap to a bare Celery worker (docs/performance.md).
Here the flush waits up to WORKER_EVENT_FLUSH_SECONDS (0.1 s by default; 0 keeps Celery's way), so
one PUBLISH carries the events of that interval (at most 24, Celery's buffer limit, which still
flushes at once when full). Flower and the event stream see each event at most that much later, in
the same order; the buffer is flushed before the consumer shuts down. Events buffered when the
broker connection is lost are dropped, as in Celery (whose window is one turn of the loop).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery.worker.consumer import Consumer
from celery.worker.request import Request

from jeffrey_core.settings import get_settings

log = logging.getLogger(__name__)


class ResilientConsumer(Consumer):  # type: ignore[misc]
    _event_flush_due = 0.0  # monotonic time by which the scheduled flush must have run; 0: none

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._event_flush_seconds = get_settings().worker.event_flush_seconds

    def on_send_event_buffered(self) -> None:
        if not self._event_flush_seconds:
            super().on_send_event_buffered()
            return
        now = time.monotonic()
        # A flush that is long overdue (its timer entry dropped with a reset loop) is replaced.
        if self.hub and now >= self._event_flush_due:
            self._event_flush_due = now + self._event_flush_seconds + 1.0
            self.hub.call_later(self._event_flush_seconds, self._flush_events_later)

    def _flush_events_later(self) -> None:
        self._event_flush_due = 0.0
        self._flush_events()

    def shutdown(self) -> None:
        self._flush_events()  # before the Events step closes the dispatcher with events still buffered
        super().shutdown()

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
