"""Retry policies of every task, in one place (listed in docs/reliability.md).

Transient errors (a dependency unreachable or slow, a lock held) retry with exponential backoff,
full jitter and a cap; permanent errors (bad payload, missing row) fail at once. A task that fails
for good — retries exhausted, a permanent error, or redelivered after worker loss more than
MAX_DELIVERIES times — is re-published to the `dead_letter` queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from jeffrey_core.contract import TaskName

# Celery on Redis redelivers a message whose worker died, with no bound; we add one.
MAX_DELIVERIES = 3


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    backoff_seconds: int  # first delay; doubles each attempt (with full jitter)
    backoff_max_seconds: int


DEFAULT_POLICY = RetryPolicy(max_retries=5, backoff_seconds=1, backoff_max_seconds=60)

POLICIES: dict[TaskName, RetryPolicy] = {
    TaskName.SYSTEM_ECHO: RetryPolicy(0, 1, 1),  # someone is waiting for the answer: no retry
    TaskName.BEAT_HEARTBEAT: RetryPolicy(0, 1, 1),  # the next tick replaces it
    TaskName.REDIS_HYGIENE: RetryPolicy(0, 1, 1),  # the next scan replaces it
    TaskName.RETENTION: RetryPolicy(0, 1, 1),  # the next pass deletes what this one could not
    TaskName.ERASURE_SWEEP: RetryPolicy(5, 5, 60),  # Redis may be failing over: a few minutes
    TaskName.EMOTION_DETECT: RetryPolicy(0, 1, 1),  # answered synchronously; the caller retries
    TaskName.EMOTION_ANNOTATE_PENDING: RetryPolicy(5, 2, 60),  # beat's sweep also covers it
    TaskName.DREAM_CONSOLIDATE_BATCH: RetryPolicy(10, 2, 60),  # ~10 min of database outage
    TaskName.DREAM_CYCLE: RetryPolicy(3, 5, 60),
    TaskName.DREAM_RECOVER: RetryPolicy(0, 1, 1),  # the next sweep (beat, DREAM_RECOVERY_SECONDS) replaces it
}


def policy_for(task_name: str) -> RetryPolicy:
    try:
        return POLICIES[TaskName(task_name)]
    except ValueError:
        return DEFAULT_POLICY
