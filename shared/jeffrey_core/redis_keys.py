"""Every Redis key the project writes, in one place, each with its owner and lifetime."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisKeys:
    """Key builder bound to a prefix (REDIS_KEY_PREFIX), so test runs can use their own namespace."""

    prefix: str = "jeffrey"

    def beat_heartbeat(self) -> str:
        """Written by the beat heartbeat task; TTL 3x the heartbeat period."""
        return f"{self.prefix}:beat:last_tick"

    def redbeat_prefix(self) -> str:
        """celery-redbeat's schedule and lock keys (owned by redbeat)."""
        return f"{self.prefix}:redbeat:"

    def redbeat_lock(self) -> str:
        """Held by the beat that is scheduling; expires when it stops renewing (redbeat_lock_timeout)."""
        return f"{self.redbeat_prefix()}:lock"
