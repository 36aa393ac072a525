"""A Celery consumer that survives losing its Redis broker.

Celery 5.7's `on_connection_error_after_connected` closes the broken connection after
`collect()` has already detached it from its transport; kombu's Redis channel then tries to restore
unacknowledged messages through that detached connection and raises AttributeError, which is not a
connection error, so the worker stops with "Unrecoverable error" instead of reconnecting (seen in
the chaos suite: Redis stopped for 10 s). We swallow that one error and let the consumer reconnect
as designed; unacknowledged messages come back through the visibility timeout (tasks are idempotent).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

log = logging.getLogger(__name__)


class ResilientConsumer(Consumer):  # type: ignore[misc]
    def on_connection_error_after_connected(self, exc: Any) -> None:
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as error:
            log.warning("ignoring %r while closing the lost broker connection; reconnecting", error)
