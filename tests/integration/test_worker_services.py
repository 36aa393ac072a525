"""Worker services called as plain functions of a WorkerContext: no Celery app, no worker process.

The same functions the Celery tasks call (and the benchmark), against a real private Redis and a
real database (SQLite and PostgreSQL); the `send` of the context records what a task would enqueue.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from jeffrey_core.contract import DreamToggle, TaskName
from jeffrey_core.locks import OwnedLock
from jeffrey_core.settings import DatabaseSettings, DreamSettings, RedisSettings, Settings
from jeffrey_core.store import dreams as store
from jeffrey_core.store.memories import NewMemory, add_memories
from jeffrey_core.store.models import Dream, DreamRun, Memory, RunStatus, RunTrigger, utcnow
from jeffrey_worker import annotation, system
from jeffrey_worker.consolidation import (
    RECOVERY_LOCK_SECONDS,
    BatchStatus,
    consolidate_one_batch,
    dream_cycle,
    recover_stalled_runs,
    stall_window,
)
from jeffrey_worker.context import WorkerContext, build_context
from jeffrey_worker.dream import synthetic
from tests.support.dreams import consolidated

pytestmark = pytest.mark.integration


class Sent(list[tuple[str, dict[str, Any]]]):
    def __call__(self, name: TaskName, **kwargs: Any) -> None:
        self.append((str(name), kwargs))


def make_context(redis_url: str, database_url: str, **dream: Any) -> WorkerContext:
    redis_settings = RedisSettings(REDIS_URL=redis_url, REDIS_KEY_PREFIX=f"svc-{uuid.uuid4().hex[:6]}")
    settings = Settings(
        redis=redis_settings,
        database=DatabaseSettings(DATABASE_URL=database_url),
        dream=DreamSettings(**{"DREAM_BATCH_INITIAL": 40, "DREAM_BATCH_MIN": 25, **dream}),
    )
    return build_context(settings, Sent())


def _add_themed(ctx: WorkerContext, user: str, n: int) -> list[str]:
    memories = synthetic.generate(n, themes=3, seed=5)
    with ctx.sessions() as session:
        rows = add_memories(
            session, user, [NewMemory(m.text, {"theme": m.theme}, m.created_at) for m in memories]
        )
        session.commit()
        return [r.id for r in rows]


def test_one_batch_at_a_time_consolidates_a_run_exactly_once(
    redis_url: str, database_url: str, user_id: str
) -> None:
    ctx = make_context(redis_url, database_url)
    _add_themed(ctx, user_id, 150)
    with ctx.sessions() as session:
        run_id = store.create_run(session, user_id, RunTrigger.API).id
        session.commit()

    outcome = consolidate_one_batch(ctx, run_id, 0)
    assert outcome.status == BatchStatus.CONTINUES and outcome.next_seq == 1
    # A second copy of batch 0 (a redelivery) changes nothing.
    assert consolidate_one_batch(ctx, run_id, 0).status == BatchStatus.DUPLICATE
    seen = [outcome.status]
    while outcome.next_seq is not None:
        outcome = consolidate_one_batch(ctx, run_id, outcome.next_seq)
        seen.append(outcome.status)
    assert seen[-1] == BatchStatus.SUCCEEDED and len(seen) >= 3

    total, done, rows = consolidated(database_url, user_id)
    assert total == done == rows == 150
    with ctx.sessions() as session:
        run = session.get(DreamRun, run_id)
        assert run is not None and run.status == RunStatus.SUCCEEDED and run.memories_processed == 150
        assert session.scalar(select(func.count()).select_from(Dream).where(Dream.user_id == user_id))
    assert ctx.redis.get(ctx.keys.dream_lock(user_id)) is None, "the lock is released at the end"
    assert ctx.send == [], "the service never enqueues: the task adapter does"


def test_a_batch_waits_while_another_run_holds_the_users_lock(
    redis_url: str, sqlite_url: str, user_id: str
) -> None:
    ctx = make_context(redis_url, sqlite_url)
    _add_themed(ctx, user_id, 30)
    with ctx.sessions() as session:
        run_id = store.create_run(session, user_id, RunTrigger.API).id
        session.commit()
    other = OwnedLock(ctx.redis, ctx.keys.dream_lock(user_id), "another-run", 60)
    assert other.acquire()
    assert consolidate_one_batch(ctx, run_id, 0).status == BatchStatus.WAITING
    other.release()
    assert consolidate_one_batch(ctx, run_id, 0).status == BatchStatus.SUCCEEDED


def _crash(ctx: WorkerContext, run_id: str) -> None:
    """What a worker dying inside a batch leaves: no heartbeat, no progress for the stall window."""
    ctx.redis.delete(ctx.keys.dream_heartbeat(run_id))
    long_ago = utcnow() - timedelta(seconds=stall_window(ctx.settings) + 5)
    with ctx.sessions() as session:
        session.execute(update(DreamRun).where(DreamRun.id == run_id).values(updated_at=long_ago))
        session.commit()


def _mine(resent: list[tuple[str, int]] | None, run_id: str) -> list[tuple[str, int]]:
    assert resent is not None
    return [item for item in resent if item[0] == run_id]  # PostgreSQL is shared with other tests


def test_a_stalled_run_is_resent_once_and_its_old_message_is_a_duplicate(
    redis_url: str, database_url: str, user_id: str
) -> None:
    ctx = make_context(redis_url, database_url)
    _add_themed(ctx, user_id, 120)
    with ctx.sessions() as session:
        run_id = store.create_run(session, user_id, RunTrigger.API).id
        session.commit()
    assert _mine(recover_stalled_runs(ctx), run_id) == [], "a new run is not stalled"
    assert consolidate_one_batch(ctx, run_id, 0).next_seq == 1
    assert ctx.redis.ttl(ctx.keys.dream_heartbeat(run_id)) > 0
    assert _mine(recover_stalled_runs(ctx), run_id) == [], "a run with a heartbeat is alive"

    _crash(ctx, run_id)  # batch 1's message died with its worker
    assert _mine(recover_stalled_runs(ctx), run_id) == [(run_id, 1)]
    assert _mine(recover_stalled_runs(ctx), run_id) == [], "claimed once: a second sweep leaves it"

    outcome = consolidate_one_batch(ctx, run_id, 1)  # the re-sent batch
    assert outcome.status == BatchStatus.CONTINUES
    # The original message, redelivered after the visibility timeout, is dropped.
    assert consolidate_one_batch(ctx, run_id, 1).status == BatchStatus.DUPLICATE
    while outcome.next_seq is not None:
        outcome = consolidate_one_batch(ctx, run_id, outcome.next_seq)
    assert outcome.status == BatchStatus.SUCCEEDED
    assert consolidated(database_url, user_id) == (120, 120, 120)
    assert ctx.redis.exists(ctx.keys.dream_heartbeat(run_id)) == 0, "a finished run leaves no heartbeat"
    assert _mine(recover_stalled_runs(ctx), run_id) == []


def test_one_recovery_sweep_at_a_time(redis_url: str, sqlite_url: str, user_id: str) -> None:
    ctx = make_context(redis_url, sqlite_url)
    _add_themed(ctx, user_id, 30)
    with ctx.sessions() as session:
        run_id = store.create_run(session, user_id, RunTrigger.API).id
        session.commit()
    _crash(ctx, run_id)
    other = OwnedLock(ctx.redis, ctx.keys.dream_recovery_lock(), "another-worker", RECOVERY_LOCK_SECONDS)
    assert other.acquire()
    assert recover_stalled_runs(ctx) is None
    other.release()
    assert recover_stalled_runs(ctx) == [(run_id, 0)]
    assert ctx.redis.ttl(ctx.keys.dream_recovery_lock()) == -2, "the sweep lock is released"


def test_the_cycle_honours_the_toggle_and_claims_each_slot_once(
    redis_url: str, sqlite_url: str, user_id: str
) -> None:
    ctx = make_context(redis_url, sqlite_url, DREAM_MIN_PENDING=5)
    _add_themed(ctx, user_id, 12)
    ctx.redis.set(ctx.keys.dream_enabled(), DreamToggle.OFF.value)
    assert dream_cycle(ctx, now=1_000_000.0).skipped == "disabled"
    ctx.redis.set(ctx.keys.dream_enabled(), DreamToggle.ON.value)
    first = dream_cycle(ctx, now=1_000_000.0)
    assert len(first.started) == 1 and first.skipped is None
    assert dream_cycle(ctx, now=1_000_000.0).skipped == "slot already handled"
    # The next slot starts nothing new: the user's run is still active.
    assert dream_cycle(ctx, now=1_000_000.0 + 3600).started == []


def test_annotation_sweep_and_detect_without_celery(redis_url: str, sqlite_url: str, user_id: str) -> None:
    ctx = make_context(redis_url, sqlite_url)
    ids = _add_themed(ctx, user_id, 20)
    stats = annotation.sweep(ctx)
    assert stats is not None and stats.written == 20 and not stats.more_pending
    with ctx.sessions() as session:
        labels = session.scalars(select(Memory.emotion_label).where(Memory.id.in_(ids))).all()
    assert all(labels)
    assert annotation.detect(ctx, ["I am so happy today"])[0]["label"] == "joy"
    with pytest.raises(ValueError):
        annotation.detect(ctx, [])


def test_redis_hygiene_tells_documented_keys_from_forgotten_ones(redis_url: str, sqlite_url: str) -> None:
    ctx = make_context(redis_url, sqlite_url)
    ctx.redis.set(ctx.keys.dream_enabled(), DreamToggle.ON.value)
    ctx.redis.set(f"{ctx.keys.prefix}:forgotten", "x")
    report = system.redis_hygiene(ctx)
    assert report["documented"] >= 1 and report["undocumented"] == 1
    assert report["examples"] == [f"{ctx.keys.prefix}:forgotten"]


def test_retention_deletes_expired_keys_and_old_dead_letters(redis_url: str, sqlite_url: str) -> None:
    from datetime import timedelta

    from jeffrey_core.celery_factory import create_celery
    from jeffrey_core.dlq import DeadLetterQueue, publish_dead_letter
    from jeffrey_core.store import idempotency
    from jeffrey_core.store.models import IdempotencyKey, utcnow

    ctx = make_context(redis_url, sqlite_url)
    app = create_celery(ctx.settings)
    with ctx.sessions() as session:
        idempotency.save_idempotent_response(session, "u", "old", "h", 201, {"text": "secret"}, 60)
        idempotency.save_idempotent_response(session, "u", "fresh", "h", 201, {}, 60)
        old = session.get(IdempotencyKey, ("u", "old"))
        assert old is not None
        old.expires_at = utcnow() - timedelta(seconds=1)
        session.commit()
    stale = _letter("jeffrey.emotion.detect", "t1", {"texts": ["my diary"]})
    stale["failed_at"] -= ctx.settings.celery.dlq_retention_seconds + 60
    recent = _letter("jeffrey.dream.consolidate_batch", "t2", {"run_id": "r"})
    publish_dead_letter(app, stale)
    publish_dead_letter(app, recent)
    dlq = DeadLetterQueue(ctx.redis, app)
    assert dlq.records()[1] == 2

    assert system.apply_retention(ctx, app) == {"idempotency_keys": 1, "dead_letters": 1}
    records, total = dlq.records()
    assert total == 1 and records[0]["task_id"] == "t2"
    with ctx.sessions() as session:
        assert session.get(IdempotencyKey, ("u", "fresh")) is not None
    app.close()


def test_dead_letters_keep_ids_and_sizes_never_user_text() -> None:
    texts = ["I told nobody about the lump I found", "x" * 300]
    record = _letter("jeffrey.emotion.detect", "t", {"texts": texts})
    assert record["kwargs"] == {"texts": {"redacted": "text", "count": 2, "chars": sum(map(len, texts))}}
    assert record["replayable"] is False and "lump" not in str(record)
    kept = _letter("jeffrey.dream.consolidate_batch", "t", {"run_id": "r1", "seq": 3})
    assert kept["kwargs"] == {"run_id": "r1", "seq": 3} and kept["replayable"] is True
    from jeffrey_core.dlq import dead_letter_record

    positional = dead_letter_record(
        "jeffrey.dream.consolidate_batch", "t", ["run-id"], {}, "q", None, "", 1, "x"
    )
    assert positional["args"] == ["run-id"] and positional["replayable"] is True


def _letter(task: str, task_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    from jeffrey_core.dlq import dead_letter_record

    return dead_letter_record(task, task_id, [], kwargs, "q", None, "", 1, "permanent error")
