"""System tasks: thin wrappers that validate, call plain logic and return small JSON."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from celery import shared_task

from jeffrey_core.contract import TaskName
from jeffrey_core.settings import get_settings
from jeffrey_worker.resources import redis_client, redis_keys


@shared_task(name=TaskName.SYSTEM_ECHO.value, bind=True)
def echo(self: Any, message: str) -> dict[str, Any]:
    """Send `message` back with who answered and when: proves the broker-worker-backend loop."""
    return {
        "message": message,
        "worker": self.request.hostname or socket.gethostname(),
        "pid": os.getpid(),
        "task_id": self.request.id,
        "answered_at": time.time(),
    }


@shared_task(name=TaskName.BEAT_HEARTBEAT.value, ignore_result=True)
def beat_heartbeat() -> None:
    """Record when a beat-scheduled tick was last executed; the key expires if beat stops."""
    period = get_settings().celery.beat_heartbeat_seconds
    redis_client().set(redis_keys().beat_heartbeat(), str(time.time()), ex=max(1, int(period * 3)))
