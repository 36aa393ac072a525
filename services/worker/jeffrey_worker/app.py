"""The worker's Celery app: `celery -A jeffrey_worker.app worker|flower|inspect ...`.

This module is Celery's entry point, so building the app here is its purpose; the configuration
itself comes from `create_celery(get_settings())` and nothing else runs at import.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging

from jeffrey_core.celery_factory import create_celery
from jeffrey_core.logging import configure_logging
from jeffrey_core.settings import Settings, get_settings


def create_worker_app(settings: Settings) -> Celery:
    app = create_celery(settings, main="jeffrey-worker")
    app.conf.include = ["jeffrey_worker.tasks"]
    if settings.celery.worker_concurrency:
        app.conf.worker_concurrency = settings.celery.worker_concurrency
    return app


@setup_logging.connect
def _logging(**_: Any) -> None:
    observability = get_settings().observability
    configure_logging("worker", observability.log_level, observability.log_format)


app = create_worker_app(get_settings())
