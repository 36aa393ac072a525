"""Beat's Celery app: `celery -A jeffrey_beat.app beat`.

The scheduler is celery-redbeat: the schedule lives in Redis and a lock makes a second beat
wait as a hot standby instead of firing the same entries again.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging

from jeffrey_core.celery_factory import create_celery
from jeffrey_core.contract import TaskName
from jeffrey_core.enqueue import PUBLISH_RETRY, Caller
from jeffrey_core.logging import configure_logging
from jeffrey_core.redis_client import redbeat_config
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.schedule import cron_schedule
from jeffrey_core.settings import Settings, get_settings
from jeffrey_core.stack_env import settings_or_exit

# Beat wakes at least this often; the lock outlives a few loops so a short stall does not hand over.
MAX_LOOP_INTERVAL = 5
LOCK_TIMEOUT = 30


def _options(expires: float | None = None) -> dict[str, Any]:
    """Beat publishes like every other caller: queue from the contract (task_routes), beat's policy."""
    options: dict[str, Any] = {"retry": True, "retry_policy": PUBLISH_RETRY[Caller.BEAT]}
    if expires is not None:
        options["expires"] = expires
    return options


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "beat-heartbeat": {
            "task": TaskName.BEAT_HEARTBEAT.value,
            "schedule": settings.celery.beat_heartbeat_seconds,
            "options": _options(settings.celery.beat_heartbeat_seconds),
        },
        "dream-cycle": {
            "task": TaskName.DREAM_CYCLE.value,
            "schedule": cron_schedule(settings.dream.schedule),
            "options": _options(),
        },
        # Runs whose batches stopped (a worker died holding the batch message): re-sent without
        # waiting for Redis' visibility timeout.
        "dream-recovery": {
            "task": TaskName.DREAM_RECOVER.value,
            "schedule": settings.dream.recovery_seconds,
            "options": _options(settings.dream.recovery_seconds),
        },
        "redis-hygiene": {
            "task": TaskName.REDIS_HYGIENE.value,
            "schedule": settings.celery.redis_hygiene_seconds,
            "options": _options(settings.celery.redis_hygiene_seconds),
        },
        "retention": {
            "task": TaskName.RETENTION.value,
            "schedule": settings.celery.retention_seconds,
            "options": _options(settings.celery.retention_seconds),
        },
        # Safety net for annotation kicks the API could not send (Redis down at that moment).
        "emotion-sweep": {
            "task": TaskName.EMOTION_ANNOTATE_PENDING.value,
            "schedule": settings.emotion.sweep_seconds,
            "options": _options(settings.emotion.sweep_seconds),
        },
    }


def create_beat_app(settings: Settings) -> Celery:
    app = create_celery(settings, main="jeffrey-beat")
    keys = RedisKeys(settings.redis.key_prefix)
    app.conf.update(
        # redbeat's scheduler, surviving a Redis failover (jeffrey_beat.scheduler).
        beat_scheduler="jeffrey_beat.scheduler:FailoverTolerantScheduler",
        beat_max_loop_interval=MAX_LOOP_INTERVAL,
        **redbeat_config(settings.redis),  # REDIS_URL, or the Sentinels (REDIS_SENTINELS)
        redbeat_key_prefix=keys.redbeat_prefix(),
        redbeat_lock_timeout=LOCK_TIMEOUT,
        beat_schedule=beat_schedule(settings),
    )
    return app


@setup_logging.connect
def _logging(**_: Any) -> None:
    observability = get_settings().observability
    configure_logging("beat", observability.log_level, observability.log_format)


# Nothing configured (no REDIS_URL, no running `make run`): one line and exit 2, never 6379.
app = create_beat_app(settings_or_exit())
