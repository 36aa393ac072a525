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

    def emotion_kick(self) -> str:
        """Debounces annotation kicks from the API; TTL 1 s."""
        return f"{self.prefix}:emotion:kick"

    def emotion_sweep_lock(self) -> str:
        """One annotation sweep at a time; redis-py Lock with a TTL."""
        return f"{self.prefix}:emotion:sweep-lock"

    def breaker_namespace(self, name: str) -> str:
        """pybreaker CircuitRedisStorage namespace (state, counters, opened_at keys; owned by pybreaker)."""
        return f"{self.prefix}:breaker:{name}"

    def breaker_state(self, name: str) -> str:
        return f"{self.breaker_namespace(name)}:pybreaker:state"

    def redbeat_lock(self) -> str:
        """Held by the beat that is scheduling; expires when it stops renewing (redbeat_lock_timeout)."""
        return f"{self.redbeat_prefix()}:lock"
