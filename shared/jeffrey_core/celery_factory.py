"""Build Celery apps from settings; the worker, beat and API each call this with their own role."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Exchange
from kombu.entity import Queue as KombuQueue

from jeffrey_core.contract import TASK_ROUTES, Queue
from jeffrey_core.redis_client import celery_sentinel_options, celery_url
from jeffrey_core.settings import Settings


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration every Jeffrey process shares."""
    # REDIS_URL, or `sentinel://` URLs with the master's name in the transport options (REDIS_SENTINELS).
    redis_url = celery_url(settings.redis)
    sentinel = celery_sentinel_options(settings.redis)
    transport = {
        # Must exceed the longest task time limit or Redis redelivers running tasks (validated in settings).
        "visibility_timeout": settings.celery.visibility_timeout,
        "socket_connect_timeout": settings.redis.connect_timeout,
        "socket_timeout": max(settings.redis.socket_timeout, 5.0),
        "retry_on_timeout": True,
        "health_check_interval": 25,
        **sentinel,
    }
    exchange = Exchange("jeffrey", type="direct")
    queues = [KombuQueue(q.value, exchange, routing_key=q.value) for q in Queue]
    return {
        "broker_url": redis_url,
        "result_backend": redis_url,
        "broker_transport_options": transport,
        "result_backend_transport_options": {
            "visibility_timeout": settings.celery.visibility_timeout,
            **sentinel,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.redis.connect_timeout * 4,
        "redis_socket_connect_timeout": settings.redis.connect_timeout,
        "redis_socket_timeout": max(settings.redis.socket_timeout, 5.0),
        "redis_backend_health_check_interval": 25,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "result_expires": settings.celery.result_expires,
        "result_extended": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.celery.task_soft_time_limit,
        "task_time_limit": settings.celery.task_time_limit,
        # No STARTED state in the result backend: nothing reads it (the API awaits the final state,
        # Flower follows the task-started event), and it was one more backend write per task.
        "task_track_started": False,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "task_queues": queues,
        "task_default_queue": Queue.DEFAULT.value,
        "task_default_exchange": exchange.name,
        "task_default_routing_key": Queue.DEFAULT.value,
        "task_routes": TASK_ROUTES,
        "task_create_missing_queues": False,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "enable_utc": True,
        "timezone": "UTC",
    }


def create_celery(settings: Settings, main: str = "jeffrey") -> Celery:
    """A configured Celery app; it connects lazily, on first use."""
    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
