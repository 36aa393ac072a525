"""Erase a user: their rows (jeffrey_core.store.erasure), then every Redis key and dead letter of theirs.

Redis keys named after the user (dream lock, event-stream leases, rate-limit counters), the heartbeat
of each of their runs, and dead-letter records whose arguments name the user, one of their memories or
one of their runs, and Celery result records (`celery-task-meta-*`, kept `result_expires` seconds with
their arguments, `result_extended`) that name one of those ids.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import redis
from celery import Celery
from sqlalchemy.orm import Session

from jeffrey_core.dlq import DeadLetterQueue
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.store.erasure import ErasedRows, erase_rows

RESULT_PATTERN = "celery-task-meta-*"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class ErasureReport:
    user_id: str
    memories: int
    dreams: int
    runs: int
    idempotency_keys: int
    redis_keys: int
    dead_letters: int
    run_ids: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "run_ids"}


def erase_user(
    session: Session, client: redis.Redis, keys: RedisKeys, app: Celery, user_id: str
) -> ErasureReport:
    """Delete everything stored about `user_id`; database first (the source of truth), then Redis."""
    rows = erase_rows(session, user_id)
    redis_keys = _delete_keys(client, keys, user_id, rows)
    dead_letters = _delete_dead_letters(DeadLetterQueue(client, app), user_id, rows)
    return ErasureReport(
        user_id=user_id,
        memories=rows.memories,
        dreams=rows.dreams,
        runs=rows.runs,
        idempotency_keys=rows.idempotency_keys,
        redis_keys=redis_keys,
        dead_letters=dead_letters,
        run_ids=tuple(sorted(rows.run_ids)),
    )


def sweep_residue(
    client: redis.Redis, keys: RedisKeys, app: Celery, user_id: str, run_ids: set[str]
) -> dict[str, int]:
    """The second pass of an erasure, once the tasks in flight at the time have ended: their result
    records and dead letters naming the erased runs, the runs' heartbeats and the user's dream lock."""
    rows = ErasedRows(run_ids=set(run_ids))
    removed = _delete_keys(client, keys, user_id, rows)
    letters = _delete_dead_letters(DeadLetterQueue(client, app), user_id, rows)
    return {"redis_keys": removed, "dead_letters": letters}


def user_keys(client: redis.Redis, keys: RedisKeys, user_id: str, run_ids: set[str]) -> list[str]:
    """Every Redis key that belongs to `user_id` (and to the given runs of theirs), existing or not."""
    named = [keys.dream_lock(user_id), keys.sse_streams(user_id)]
    named += [keys.dream_heartbeat(run_id) for run_id in sorted(run_ids)]
    pattern = f"{_glob_escape(keys.rate_limit_prefix())}*/user/{_glob_escape(user_id)}/*"
    counters = [k.decode() if isinstance(k, bytes) else str(k) for k in client.scan_iter(pattern, 500)]
    return named + counters  # DEL skips the named keys that do not exist (and counts only the rest)


def result_keys(client: redis.Redis, ids: set[str]) -> list[str]:
    """Celery result records that mention one of `ids` (memory and run ids: UUIDs; a run's batch results
    carry its run id)."""
    found: list[str] = []
    names = [k.decode() if isinstance(k, bytes) else str(k) for k in client.scan_iter(RESULT_PATTERN, 500)]
    for start in range(0, len(names), 500):
        chunk = names[start : start + 500]
        for name, raw in zip(chunk, client.mget(chunk), strict=True):
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw or "")
            if ids.intersection(_UUID.findall(text)):
                found.append(name)
    return found


def _delete_keys(client: redis.Redis, keys: RedisKeys, user_id: str, rows: ErasedRows) -> int:
    found = user_keys(client, keys, user_id, rows.run_ids) + result_keys(
        client, rows.memory_ids | rows.run_ids
    )
    return int(client.delete(*found)) if found else 0


def _delete_dead_letters(dlq: DeadLetterQueue, user_id: str, rows: ErasedRows) -> int:
    ids = {user_id} | rows.memory_ids | rows.run_ids
    return dlq.delete_where(lambda record: bool(ids & _values(record.get("args"), record.get("kwargs"))))


def _values(*items: Any) -> set[str]:
    """Every string inside the (nested) arguments of a dead letter."""
    found: set[str] = set()
    stack = list(items)
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.add(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
