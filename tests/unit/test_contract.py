"""The task contract and the Celery configuration built from settings."""

from __future__ import annotations

import inspect

import pytest

from jeffrey_core import enqueue
from jeffrey_core.celery_factory import create_celery
from jeffrey_core.contract import TASK_ROUTES, Queue, TaskName, queue_for
from jeffrey_core.retry_policy import DEFAULT_POLICY, policy_for
from jeffrey_core.settings import Settings

pytestmark = pytest.mark.unit


def test_every_named_task_has_a_route() -> None:
    routed = {name: queue_for(name.value) for name in TaskName}
    assert routed[TaskName.EMOTION_DETECT] is Queue.EMOTION
    assert routed[TaskName.EMOTION_ANNOTATE_PENDING] is Queue.EMOTION
    assert routed[TaskName.SYSTEM_ECHO] is Queue.DEFAULT
    assert routed[TaskName.DEAD_LETTER] is Queue.DEAD_LETTER
    assert all(
        name.value in TASK_ROUTES
        or name.value.startswith(("jeffrey.dream.", "jeffrey.emotion.", "jeffrey.dlq."))
        for name in TaskName
    )


def test_a_task_without_a_declared_policy_gets_the_patient_defaults() -> None:
    """The explicit choice for new tasks: retry transient errors 5 times with capped backoff, and
    publish with the patient (worker) policy unless the caller says it is a request."""
    assert policy_for("jeffrey.future.task") == DEFAULT_POLICY
    assert DEFAULT_POLICY.max_retries == 5 and DEFAULT_POLICY.backoff_max_seconds == 60
    assert inspect.signature(enqueue.send).parameters["caller"].default is enqueue.Caller.WORKER
    assert enqueue.PUBLISH_RETRY[enqueue.Caller.REQUEST]["max_retries"] == 1
    assert enqueue.PUBLISH_RETRY[enqueue.Caller.WORKER]["max_retries"] >= 5


def test_prefix_routes_send_families_to_their_queue() -> None:
    assert queue_for("jeffrey.dream.consolidate_batch") is Queue.DREAM
    assert queue_for("jeffrey.emotion.annotate") is Queue.EMOTION
    assert queue_for("jeffrey.unknown") is Queue.DEFAULT


def test_celery_config_is_safe_by_construction() -> None:
    conf = create_celery(Settings()).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.result_expires > 0
    assert conf.worker_send_task_events and conf.task_send_sent_event
    assert {q.name for q in conf.task_queues} == {"dream", "emotion", "default", "dead_letter"}
