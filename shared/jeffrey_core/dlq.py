"""The dead-letter queue: failed-for-good tasks as messages on the Celery `dead_letter` queue.

Workers publish a `jeffrey.dlq.dead_letter` message whose kwargs are the record (original task
name, args, kwargs, queue, error type and message, traceback, attempts, timestamps). Nothing
consumes that queue by default, so it simply accumulates; `celery ... purge -Q dead_letter` and
Flower see it like any queue. This module reads it straight from the kombu Redis lists (newest
first), replays a record to its original queue — removing it only once re-published — and purges.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery

from jeffrey_core import enqueue
from jeffrey_core.contract import Queue, TaskName
from jeffrey_core.redis_keys import celery_queue_keys

DEAD_LETTER_TASK = TaskName.DEAD_LETTER.value
TRACEBACK_LIMIT = 8000


REDACT_OVER_CHARS = 120


def redact(value: Any) -> tuple[Any, bool]:
    """`value` with user text replaced by its size: dead letters keep ids, never what people wrote.

    Strings over REDACT_OVER_CHARS characters, and lists of strings (texts to annotate), become
    `{"redacted": "text", "count": n, "chars": total}`; returns (value, whether anything was removed)."""
    if isinstance(value, str) and len(value) > REDACT_OVER_CHARS:
        return {"redacted": "text", "count": 1, "chars": len(value)}, True
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return {"redacted": "text", "count": len(value), "chars": sum(len(v) for v in value)}, True
    if isinstance(value, dict):
        pairs = {k: redact(v) for k, v in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, any(r for _, r in pairs.values())
    return value, False


def dead_letter_record(
    task: str,
    task_id: str,
    args: list[Any],
    kwargs: dict[str, Any],
    queue: str,
    error: BaseException | None,
    traceback: str,
    attempts: int,
    reason: str,
) -> dict[str, Any]:
    # Each argument on its own: `args` itself is a list of ids, not a list of texts.
    redacted_args = [redact(value) for value in args or []]
    safe_args = [value for value, _ in redacted_args]
    args_redacted = any(flag for _, flag in redacted_args)
    safe_kwargs, kwargs_redacted = redact(dict(kwargs or {}))
    return {
        "id": uuid.uuid4().hex,
        "task": task,
        "task_id": task_id,
        "args": safe_args,
        "kwargs": safe_kwargs,
        # A record whose payload was redacted cannot be replayed: its texts are gone on purpose.
        "replayable": not (args_redacted or kwargs_redacted),
        "queue": queue,
        "error_type": type(error).__name__ if error is not None else reason,
        "error_message": str(error)[:2000] if error is not None else reason,
        "traceback": traceback[-TRACEBACK_LIMIT:],
        "attempts": attempts,
        "reason": reason,
        "failed_at": time.time(),
    }


def publish_dead_letter(app: Celery, record: dict[str, Any]) -> None:
    enqueue.send(app, TaskName.DEAD_LETTER, caller=enqueue.Caller.WORKER, record=record)


@dataclass
class Entry:
    record: dict[str, Any]
    raw: str
    key: str


class DeadLetterQueue:
    """Inspect, replay and purge dead letters (Redis lists written by kombu)."""

    def __init__(self, client: redis.Redis, app: Celery) -> None:
        self.client = client
        self.app = app

    def _entries(self) -> Iterator[Entry]:
        for key in celery_queue_keys(Queue.DEAD_LETTER.value):
            for raw in self.client.lrange(key, 0, -1):
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
                record = _decode(text)
                if record is not None:
                    yield Entry(record, text, key)

    def records(
        self, task: str | None = None, error_type: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        matching = [e.record for e in self._entries() if _matches(e.record, task, error_type)]
        return matching[offset : offset + limit], len(matching)

    def get(self, record_id: str) -> dict[str, Any] | None:
        entry = self._find(record_id)
        return entry.record if entry else None

    def _find(self, record_id: str) -> Entry | None:
        return next((e for e in self._entries() if e.record.get("id") == record_id), None)

    def replay(self, record_id: str, dry_run: bool = False) -> dict[str, Any] | None:
        """Re-publish to the original queue, then remove it; None when no such record."""
        entry = self._find(record_id)
        if entry is None:
            return None
        return self._replay(entry, dry_run)

    def _replay(self, entry: Entry, dry_run: bool) -> dict[str, Any]:
        record = entry.record
        plan = {"id": record["id"], "task": record["task"], "queue": record["queue"], "dry_run": dry_run}
        if dry_run or record.get("replayable") is False:
            return {**plan, "replayed": False, "replayable": record.get("replayable", True)}
        result = enqueue.send(
            self.app, record["task"], caller=enqueue.Caller.REQUEST, args=record["args"], **record["kwargs"]
        )
        self.client.lrem(entry.key, 1, entry.raw)  # only after the publish succeeded
        return {**plan, "replayed": True, "new_task_id": result.id}

    def replay_matching(
        self, task: str | None, error_type: str | None, dry_run: bool = False
    ) -> list[dict[str, Any]]:
        return [self._replay(e, dry_run) for e in [*self._entries()] if _matches(e.record, task, error_type)]

    def delete(self, record_id: str) -> bool:
        entry = self._find(record_id)
        return bool(entry and self.client.lrem(entry.key, 1, entry.raw))

    def delete_where(self, predicate: Callable[[dict[str, Any]], bool]) -> int:
        """Remove every record `predicate` accepts (user erasure); how many were removed."""
        return sum(int(self.client.lrem(e.key, 1, e.raw)) for e in [*self._entries()] if predicate(e.record))

    def purge(self, older_than_seconds: float | None = None) -> int:
        cutoff = None if older_than_seconds is None else time.time() - older_than_seconds
        removed = 0
        for entry in [*self._entries()]:
            if cutoff is None or float(entry.record.get("failed_at") or 0) < cutoff:
                removed += int(self.client.lrem(entry.key, 1, entry.raw))
        return removed


def _matches(record: dict[str, Any], task: str | None, error_type: str | None) -> bool:
    return (task is None or record.get("task") == task) and (
        error_type is None or record.get("error_type") == error_type
    )


def _decode(raw: str) -> dict[str, Any] | None:
    """The record inside a kombu message (protocol 2 body: [args, kwargs, embed]); None if foreign."""
    try:
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        _args, kwargs, _embed = json.loads(body)
        record = kwargs["record"]
        return record if isinstance(record, dict) else None
    except (ValueError, KeyError, TypeError):
        return None
