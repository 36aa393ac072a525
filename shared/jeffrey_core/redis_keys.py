"""Every Redis key the project writes, in one place, each with its owner and lifetime."""

from __future__ import annotations

from dataclasses import dataclass

# kombu's Redis transport keeps one list per priority step (default steps 0, 3, 6, 9).
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def celery_queue_keys(queue: str) -> list[str]:
    """The Redis lists holding a Celery queue's messages (owned by kombu)."""
    return [queue + suffix for suffix in _PRIORITY_SUFFIXES]


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

    def dream_lock(self, user_id: str) -> str:
        """Held by the run consolidating this user (value: run id); TTL above the task time limit."""
        return f"{self.prefix}:dream:lock:{user_id}"

    def dream_lock_pattern(self) -> str:
        return f"{self.prefix}:dream:lock:*"

    def dream_heartbeat(self, run_id: str) -> str:
        """A run's batches are alive: set when a batch starts and when it commits, TTL the stall window
        (2x the batch hard time limit); when it is gone the recovery sweep re-sends the run's batch."""
        return f"{self.prefix}:dream:heartbeat:{run_id}"

    def dream_recovery_lock(self) -> str:
        """One stalled-run recovery sweep at a time (OwnedLock, TTL 30 s)."""
        return f"{self.prefix}:dream:recovery-lock"

    def dream_enabled(self) -> str:
        """Scheduled dreaming on/off ("1"/"0"); no TTL, owned by POST /dream/toggle; absent means on."""
        return f"{self.prefix}:dream:enabled"

    def dream_batch_size(self) -> str:
        """The learned batch size B; no TTL, owned by the tuner."""
        return f"{self.prefix}:dream:batch_size"

    def dream_quality_average(self) -> str:
        """Running average of batch quality, used by the tuner; no TTL."""
        return f"{self.prefix}:dream:quality_avg"

    def dream_cycle_slot(self, slot: int) -> str:
        """Claimed by the first cycle of a schedule slot (TTL 1 h): a second beat's cycle is a no-op."""
        return f"{self.prefix}:dream:cycle:{slot}"

    def rate_limit_prefix(self) -> str:
        """Prefix of the API's rate-limit counters (owned by jeffrey_api.rate_limit, keys named as
        `limits` names them): two sliding-window counters per budget and caller (user or IP), each
        with a TTL of twice the window (2 min for "120/minute", 2 h for "6/hour")."""
        return f"{self.prefix}:ratelimit"

    def revoked_token(self, jti: str) -> str:
        """A revoked access token's id (jeffrey_core.revocation); TTL: until the token would have expired."""
        return f"{self.prefix}:revoked:{jti}"

    def sse_streams(self, user_id: str) -> str:
        """Leases of a user's open event streams (sorted set: one member per stream, scored by its last
        refresh; owned by jeffrey_api.streams); TTL twice the lease, stale members dropped on acquire."""
        return f"{self.prefix}:sse:{user_id}"

    def events_channel(self) -> str:
        """Pub/sub channel of run progress events (nothing stored)."""
        return f"{self.prefix}:events"

    def redis_hygiene(self) -> str:
        """Result of the periodic scan for keys without TTL (JSON); TTL 3x the scan period."""
        return f"{self.prefix}:hygiene:keys_without_ttl"

    def persistent_patterns(self) -> tuple[str, ...]:
        """Keys that legitimately have no TTL, each with a documented owner (docs/reliability.md)."""
        return (
            f"{self.prefix}:redbeat:*",  # celery-redbeat's schedule entries
            f"{self.prefix}:breaker:*",  # pybreaker's state and counters
            self.dream_enabled(),  # the toggle
            self.dream_batch_size(),  # the tuner
            self.dream_quality_average(),  # the tuner
        )

    def task_deliveries(self, task_id: str, retries: int) -> str:
        """How many times a task message (attempt `retries`) was redelivered; TTL 24 h (base task)."""
        return f"{self.prefix}:deliveries:{task_id}:{retries}"

    def redbeat_lock(self) -> str:
        """Held by the beat that is scheduling; expires when it stops renewing (redbeat_lock_timeout)."""
        return f"{self.redbeat_prefix()}:lock"
