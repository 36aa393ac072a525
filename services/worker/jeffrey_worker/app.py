"""The worker's Celery app: `celery -A jeffrey_worker.app worker|flower|inspect ...`.

This module is Celery's entry point, so building the app here is its purpose; the configuration
itself comes from `create_celery(get_settings())` and nothing else runs at import.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import (
    celeryd_init,
    setup_logging,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)

from jeffrey_core.celery_factory import create_celery
from jeffrey_core.contract import TaskName
from jeffrey_core.enqueue import Caller, send
from jeffrey_core.logging import configure_logging
from jeffrey_core.settings import Settings, get_settings
from jeffrey_core.stack_env import settings_or_exit


def create_worker_app(settings: Settings) -> Celery:
    app = create_celery(settings, main="jeffrey-worker")
    app.conf.include = ["jeffrey_worker.tasks", "jeffrey_worker.dream_tasks"]
    app.conf.worker_consumer = "jeffrey_worker.consumer:ResilientConsumer"
    if settings.celery.worker_concurrency:
        app.conf.worker_concurrency = settings.celery.worker_concurrency
    return app


@setup_logging.connect
def _logging(**_: Any) -> None:
    observability = get_settings().observability
    configure_logging("worker", observability.log_level, observability.log_format)


@celeryd_init.connect
def _prepare_metrics(**_: Any) -> None:
    # Runs in the worker's main process before any pool process exists or prometheus_client is imported.
    from jeffrey_worker.metrics import prepare_multiprocess_dir

    prepare_multiprocess_dir()


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    settings = get_settings().worker
    if settings.metrics_port:
        from jeffrey_worker.metrics import start_exporter

        start_exporter(settings.metrics_host, settings.metrics_port)


@worker_ready.connect
def _recover_stalled_runs(**_: Any) -> None:
    # A worker that starts (often: restarts after a crash) looks for dream runs whose batch message
    # died with a worker, instead of leaving them to Redis' visibility timeout. Best effort: beat's
    # sweep (DREAM_RECOVERY_SECONDS) covers a send that fails here.
    try:
        send(app, TaskName.DREAM_RECOVER, caller=Caller.REQUEST)
    except Exception:  # startup must not fail on a best-effort kick
        logging.getLogger(__name__).warning("could not send the stalled-run recovery sweep", exc_info=True)


@worker_process_init.connect
def _build_context(**_: Any) -> None:
    # Each pool process builds its context and loads both models once, before its first task.
    from jeffrey_worker import context

    ctx = context.install(get_settings(), app)
    ctx.detector  # noqa: B018 - loading is the point
    ctx.embedder  # noqa: B018


@worker_process_shutdown.connect
def _mark_dead(pid: int | None = None, **_: Any) -> None:
    import os

    from jeffrey_worker.metrics import mark_process_dead

    mark_process_dead(pid or os.getpid())


# Nothing configured (no REDIS_URL, no running `make run`): one line and exit 2, never 6379.
app = create_worker_app(settings_or_exit())
