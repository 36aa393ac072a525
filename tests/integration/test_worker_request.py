"""A task settled through a channel that a lost broker connection closed (jeffrey_worker/consumer.py).

Real Redis and kombu: a real task message is delivered, then its channel is put in the state kombu
leaves it in after the consumer collected the broken connection (detached, pools released). A plain
Celery request raises AttributeError there and stops the worker; ours logs, and the message stays in
the broker (requeued, or unacked for the visibility timeout to redeliver).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from celery.worker.request import Request
from kombu import Connection, Message, Queue

from jeffrey_worker.consumer import ResilientRequest

pytestmark = pytest.mark.integration


@pytest.fixture
def delivered(redis_url: str) -> Iterator[tuple[Celery, Connection, Message]]:
    app = Celery(f"detached-{uuid.uuid4().hex[:6]}", broker=redis_url, set_as_current=False)

    @app.task(name="detached.noop", shared=False)  # type: ignore[misc]
    def noop() -> None:
        return None

    queue = Queue(f"detached-{uuid.uuid4().hex[:8]}")
    app.send_task("detached.noop", queue=queue.name)
    connection = Connection(redis_url)
    messages: list[Message] = []
    consumer = connection.Consumer(queue, callbacks=[lambda _body, m: messages.append(m)], accept=["json"])
    consumer.consume()
    connection.drain_events(timeout=5)
    assert len(messages) == 1
    yield app, connection, messages[0]
    connection.release()


def detach(message: Message, connection: Connection) -> None:
    """What Consumer.on_connection_error_after_connected leaves behind: the channel collected from
    its connection, its client pools released (private kombu state, set as kombu sets it)."""
    channel: Any = message.channel
    connection.collect()
    channel._disconnect_pools()
    channel.__dict__.pop("client", None)
    assert channel.connection is None


def request_for(cls: type[Request], app: Celery, message: Message, connection: Connection) -> Request:
    return cls(
        message,
        app=app,
        on_ack=message.ack_log_error,
        on_reject=message.reject_log_error,
        connection_errors=connection.connection_errors,
        task=app.tasks["detached.noop"],
    )


@pytest.mark.parametrize("settle", ["reject", "acknowledge"])
def test_settling_through_a_detached_channel_leaves_the_message_for_redelivery(
    delivered: tuple[Celery, Connection, Message], redis_url: str, settle: str
) -> None:
    app, connection, message = delivered
    detach(message, connection)

    with pytest.raises(AttributeError):  # what stops a worker with Celery's own Request
        getattr(request_for(Request, app, message, connection), settle)()

    request = request_for(ResilientRequest, app, message, connection)
    getattr(request, settle)()
    assert request.acknowledged
    broker = redis.Redis.from_url(redis_url)
    # Still in the broker, once: back in its queue (kombu restores a collected channel's unacked
    # messages when it can) or in the unacked set, which the visibility timeout restores.
    queued = broker.llen(message.delivery_info["routing_key"])
    unacked = int(broker.hexists("unacked", message.delivery_tag))
    assert queued + unacked == 1, (queued, unacked)
    broker.close()


def test_a_live_channel_still_raises(delivered: tuple[Celery, Connection, Message]) -> None:
    app, _connection, message = delivered

    def broken(*_args: Any) -> None:
        raise AttributeError("a bug, not a lost connection")

    request = ResilientRequest(message, app=app, on_reject=broken, task=app.tasks["detached.noop"])
    with pytest.raises(AttributeError, match="a bug"):
        request.reject()
    assert not request.acknowledged
    message.ack()


def test_the_project_base_task_settles_through_the_resilient_request() -> None:
    from celery.utils.imports import symbol_by_name

    from jeffrey_worker.reliability import JeffreyTask

    assert symbol_by_name(JeffreyTask.Request) is ResilientRequest
