"""Task events leave the worker batched and none is lost at shutdown (jeffrey_worker/consumer.py).

A real worker on a private Redis db, a real Celery event receiver (what Flower runs). The consumer
flushes buffered task events every WORKER_EVENT_FLUSH_SECONDS instead of at every turn of its loop;
the buffer must still reach the receiver when the worker stops, since no timer fires after that.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from jeffrey_core.celery_factory import create_celery
from jeffrey_core.contract import TaskName
from jeffrey_core.settings import Settings
from tests.support.processes import ServiceProcess, eventually, service_env, start_worker

pytestmark = pytest.mark.integration
TASKS = 3  # 9 task events, under Celery's buffer limit of 24: only a timer or the shutdown sends them


class Events:
    """Every event the receiver got, collected in a thread until stopped."""

    def __init__(self, app: Celery) -> None:
        self.seen: list[dict[str, Any]] = []
        self._app = app
        self._ready = threading.Event()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Events:
        self._thread.start()
        assert self._ready.wait(10), "event receiver did not start"
        return self

    def __exit__(self, *_: object) -> None:
        self._receiver.should_stop = True
        self._thread.join(10)

    def _run(self) -> None:
        with self._app.connection_for_read() as connection:
            self._receiver = self._app.events.Receiver(connection, handlers={"*": self.seen.append})
            self._ready.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def of_type(self, kind: str, ids: set[str]) -> set[str]:
        return {e["uuid"] for e in list(self.seen) if e["type"] == kind and e.get("uuid") in ids}


@pytest.fixture
def client(redis_url: str) -> Iterator[Celery]:
    app = create_celery(Settings(), main=f"events-{uuid.uuid4().hex[:6]}")
    app.conf.broker_url = app.conf.result_backend = redis_url  # never the default Redis
    yield app
    app.close()


def _worker(redis_url: str, sqlite_url: str, log_dir: Path, flush_seconds: str) -> ServiceProcess:
    env = service_env(
        redis_url, sqlite_url, WORKER_EVENT_FLUSH_SECONDS=flush_seconds, WORKER_METRICS_PORT="0"
    )
    return start_worker(env, log_dir, f"events-{uuid.uuid4().hex[:6]}@localhost", queues="default")


def _echo(app: Celery) -> set[str]:
    name = TaskName.SYSTEM_ECHO.value
    results = [app.send_task(name, args=[f"m{i}"], queue="default") for i in range(TASKS)]
    for result in results:
        assert result.get(timeout=30)["message"].startswith("m")
    return {r.id for r in results}


def test_buffered_task_events_reach_the_receiver_while_the_worker_runs(
    client: Celery, redis_url: str, sqlite_url: str, log_dir: Path
) -> None:
    worker = _worker(redis_url, sqlite_url, log_dir, "0.1")
    try:
        with Events(client) as events:
            ids = _echo(client)
            for kind in ("task-received", "task-started", "task-succeeded"):
                eventually(lambda k=kind: events.of_type(k, ids) == ids, 15, f"{kind} events missing")
            assert worker.running()
    finally:
        worker.stop()


def test_events_still_buffered_are_sent_when_the_worker_stops(
    client: Celery, redis_url: str, sqlite_url: str, log_dir: Path
) -> None:
    worker = _worker(redis_url, sqlite_url, log_dir, "30")  # no timer fires before the stop below
    try:
        with Events(client) as events:
            ids = _echo(client)
            assert events.of_type("task-succeeded", ids) == set(), "events left before their flush time"
            worker.stop()
            for kind in ("task-received", "task-started", "task-succeeded"):
                eventually(lambda k=kind: events.of_type(k, ids) == ids, 15, f"{kind} events lost at stop")
    finally:
        worker.stop()
