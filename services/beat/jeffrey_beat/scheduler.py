"""Beat's scheduler: celery-redbeat's, made to ride out a Redis failover instead of exiting.

redbeat extends its lock and reads the schedule from Redis on every tick; when Redis is unreachable
for a moment (the master died and Sentinel is promoting a replica, or a restart) that call raises
ConnectionError, and Celery's beat service logs it as CRITICAL and exits. Here a tick that cannot
reach Redis is skipped and tried again after RETRY_SECONDS. Only connection and timeout errors are
absorbed: a lock another beat took in the meantime (LockNotOwnedError, LockError) still stops this
beat, so two never fire the same entries.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redbeat import RedBeatScheduler
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0


class FailoverTolerantScheduler(RedBeatScheduler):  # type: ignore[misc]
    """RedBeatScheduler whose tick survives a Redis outage or failover (see the module docstring)."""

    unreachable_since: float | None = None

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            interval: float = super().tick(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if self.unreachable_since is None:
                self.unreachable_since = time.monotonic()
                log.warning("beat cannot reach Redis (%s); retrying every %g s", exc, RETRY_SECONDS)
            return RETRY_SECONDS
        if self.unreachable_since is not None:
            log.warning("beat reaches Redis again after %.1f s", time.monotonic() - self.unreachable_since)
            self.unreachable_since = None
        return interval
