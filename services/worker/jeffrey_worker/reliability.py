"""The base task of every Jeffrey task: retry policy, bounded redelivery and the dead-letter queue."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import redis
from celery import Task, shared_task
from celery.exceptions import Ignore
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from jeffrey_core.contract import queue_for
from jeffrey_core.dlq import dead_letter_record, publish_dead_letter
from jeffrey_core.retry_policy import MAX_DELIVERIES, policy_for
from jeffrey_core.settings import get_settings
from jeffrey_worker import context

log = logging.getLogger(__name__)

# Errors that may go away by themselves: they retry. Anything else is permanent.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    redis.ConnectionError,
    redis.TimeoutError,
    KombuOperationalError,
    ConnectionError,
    TimeoutError,
    socket.timeout,
)
DELIVERY_TTL_SECONDS = 24 * 3600


class JeffreyTask(Task):  # type: ignore[misc]
    """The adapter layer: hands tasks the process's WorkerContext (`self.ctx`), dead-letters a task
    that fails for good, and refuses one redelivered too often after worker loss."""

    # Acks and rejects that meet a channel closed by a lost broker connection leave the message
    # to the visibility timeout instead of stopping the worker (jeffrey_worker/consumer.py).
    Request = "jeffrey_worker.consumer:ResilientRequest"

    @property
    def ctx(self) -> context.WorkerContext:
        return context.current(get_settings(), self.app)

    def _delivery_key(self, task_id: str) -> str:
        return self.ctx.keys.task_deliveries(task_id, self.request.retries)

    def _redelivered(self) -> bool:
        """Whether the broker handed this message out before. kombu's Redis transport sets the flag on
        every path that puts a delivered message back (a worker lost: reject with requeue; the
        visibility timeout; a closed channel's restore), so a first delivery costs no Redis call."""
        return bool((getattr(self.request, "delivery_info", None) or {}).get("redelivered"))

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        if not self._redelivered():
            return
        try:
            key = self._delivery_key(task_id)
            # One round trip for both (issue 12: the queue path's per-task Redis calls).
            pipe = self.ctx.redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, DELIVERY_TTL_SECONDS)
            deliveries = 1 + int(pipe.execute()[0])  # the first delivery was not counted
        except redis.RedisError:
            return  # cannot count now: run it rather than block on Redis
        if deliveries > MAX_DELIVERIES:
            log.error("task %s[%s] delivered %d times: dead-lettering it", self.name, task_id, deliveries)
            self._dead_letter(
                task_id, args, kwargs, None, "", f"redelivered {deliveries} times after worker loss"
            )
            raise Ignore()

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        if not self._redelivered():
            return  # nothing was counted
        try:
            self.ctx.redis.delete(self._delivery_key(task_id))
        except redis.RedisError:
            pass  # the key expires by itself

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        transient = isinstance(exc, TRANSIENT_ERRORS)
        reason = "retries exhausted" if transient else "permanent error"
        self._dead_letter(task_id, args, kwargs, exc, str(einfo), reason)

    def _dead_letter(
        self, task_id: str, args: Any, kwargs: Any, exc: BaseException | None, traceback: str, reason: str
    ) -> None:
        delivery = getattr(self.request, "delivery_info", None) or {}
        record = dead_letter_record(
            task=self.name,
            task_id=task_id,
            args=list(args or []),
            kwargs=dict(kwargs or {}),
            queue=delivery.get("routing_key") or queue_for(self.name).value,
            error=exc,
            traceback=traceback,
            attempts=self.request.retries + 1,
            reason=reason,
        )
        try:
            publish_dead_letter(self.app, record)
            log.warning("task %s[%s] dead-lettered (%s)", self.name, task_id, reason)
        except Exception:
            # The broker is gone too: the message itself is redelivered later (acks_late), nothing is lost.
            log.exception("could not dead-letter %s[%s]", self.name, task_id)


def jeffrey_task(name: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """`shared_task` with the base class and the retry policy of `name` (jeffrey_core.retry_policy)."""
    policy = policy_for(name)
    defaults: dict[str, Any] = {
        "name": name,
        "base": JeffreyTask,
        "max_retries": policy.max_retries,
        "retry_backoff": policy.backoff_seconds,
        "retry_backoff_max": policy.backoff_max_seconds,
        "retry_jitter": True,
    }
    if policy.max_retries:
        defaults["autoretry_for"] = TRANSIENT_ERRORS
    defaults.update(options)
    return shared_task(**defaults)  # type: ignore[no-any-return]
