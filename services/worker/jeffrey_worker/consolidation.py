"""Dream consolidation as plain functions of a WorkerContext: one batch, and the scheduled cycle.

`consolidate_one_batch` takes the user's lock (owner = run id, so a redelivered batch of the same
run gets it back), learns B from the tuner, runs one engine batch in one transaction and says what
should happen next (`BatchOutcome`): the Celery task, the benchmark and the tests all call it and
act on the outcome — send the next batch, retry later, or stop. A soft time limit rolls the batch
back and halves B; database errors propagate (the task retries them with backoff); anything else
fails the run and frees the lock.

Each live batch refreshes the run's heartbeat (a Redis key with a TTL of the stall window, twice a
batch's hard time limit). `recover_stalled_runs` finds active runs whose heartbeat is gone and which
made no progress for as long — their batch message died with a worker — and claims each once, so
the caller re-sends that batch without waiting for Redis' visibility timeout. When the original
message is redelivered later, its `seq` no longer matches the run and it is dropped as a duplicate.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from functools import partial
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm.exc import StaleDataError

from jeffrey_core.contract import DreamToggle
from jeffrey_core.locks import OwnedLock
from jeffrey_core.schedule import schedule_slot
from jeffrey_core.settings import Settings
from jeffrey_core.store import dreams as store
from jeffrey_core.store.models import DreamRun, RunStatus, RunTrigger
from jeffrey_worker.context import WorkerContext
from jeffrey_worker.dream import engine
from jeffrey_worker.emotion_service import record_predictions

log = logging.getLogger(__name__)
LOCK_RETRY_SECONDS = 2.0
RECOVERY_LOCK_SECONDS = 30.0


class UnknownRunError(ValueError):
    """The message names a run that does not exist (a permanent error: dead-lettered)."""


class BatchStatus(StrEnum):
    DUPLICATE = "duplicate"  # this batch was already done by another copy of the message
    WAITING = "waiting"  # another run holds the user's lock: try again in LOCK_RETRY_SECONDS
    CHECKPOINTED = "checkpointed"  # the soft time limit hit: rolled back, B halved, same batch again
    CONTINUES = "continues"  # committed; `next_seq` is the next batch to send
    SUCCEEDED = "succeeded"  # committed the last batch: the run is done
    FAILED = "failed"  # the run failed for good (error recorded on the run)


@dataclass
class BatchOutcome:
    run_id: str
    status: BatchStatus
    next_seq: int | None = None  # the batch to send next, when there is one
    batch_size: int | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_result(self) -> dict[str, Any]:
        """The task's (small, JSON) result."""
        result: dict[str, Any] = {"run_id": self.run_id, "status": self.status.value, **self.snapshot}
        if self.batch_size is not None:
            result["batch_size"] = self.batch_size
        if self.error:
            result["error"] = self.error
        return result


def consolidate_one_batch(ctx: WorkerContext, run_id: str, seq: int | None = None) -> BatchOutcome:
    """Batch number `seq` of the run (None: whichever is next). A copy whose batch is done is dropped."""
    header = _run_header(ctx, run_id, seq)
    if isinstance(header, BatchOutcome):
        return header
    user_id, waited = header
    heartbeat(ctx, run_id)  # this copy is alive, even while it waits for the user's lock
    settings = ctx.settings
    lock = OwnedLock(ctx.redis, ctx.keys.dream_lock(user_id), run_id, settings.celery.task_time_limit + 30)
    if not lock.acquire():
        if waited > settings.dream.lock_wait_seconds:
            limit = settings.dream.lock_wait_seconds
            return fail_run(ctx, run_id, lock, f"another run held the user's lock for over {limit:g}s")
        return BatchOutcome(run_id, BatchStatus.WAITING, next_seq=seq)
    tuner = ctx.tuner()
    size = tuner.current()
    started = time.monotonic()
    batches = ctx.metrics.dream_batches
    try:
        outcome, snapshot = _commit_batch(ctx, run_id, size)
    except SoftTimeLimitExceeded:
        tuner.record(size, time.monotonic() - started, ok=False)
        batches.labels(outcome="time_limit").inc()
        lock.extend()
        return BatchOutcome(run_id, BatchStatus.CHECKPOINTED, next_seq=seq, batch_size=size)
    except (engine.ConcurrentConsolidationError, StaleDataError):
        batches.labels(outcome="duplicate").inc()  # another copy committed first; its chain carries on
        return BatchOutcome(run_id, BatchStatus.DUPLICATE)
    except OperationalError:
        tuner.record(size, time.monotonic() - started, ok=False)
        batches.labels(outcome="retry").inc()
        raise  # the database will come back; the lock stays with this run
    except Exception as exc:
        batches.labels(outcome="failed").inc()
        # The detail (SQL, parameters, user text) goes to the log with the run id, never to the run.
        log.exception("dream run %s failed", run_id)
        return fail_run(
            ctx, run_id, lock, f"internal_error: {exc.__class__.__name__} (worker log, run {run_id})"
        )
    seconds = time.monotonic() - started
    new_size = tuner.record(size, seconds, ok=True, quality=outcome.quality)
    _count(ctx, outcome, seconds)
    return _after_commit(ctx, run_id, user_id, lock, outcome, snapshot, size, new_size)


def _run_header(ctx: WorkerContext, run_id: str, seq: int | None) -> tuple[str, float] | BatchOutcome:
    """(user id, seconds since queued), or the DUPLICATE outcome when this batch is already done."""
    with ctx.sessions() as session:
        run = session.get(DreamRun, run_id)
        if run is None:
            raise UnknownRunError(f"dream run {run_id} does not exist")
        if RunStatus(run.status).finished or (seq is not None and seq != run.batches):
            return BatchOutcome(run_id, BatchStatus.DUPLICATE, snapshot={"run_status": run.status})
        return run.user_id, (ctx.clock() - run.queued_at).total_seconds()


def _commit_batch(ctx: WorkerContext, run_id: str, size: int) -> tuple[engine.BatchOutcome, dict[str, Any]]:
    with ctx.sessions() as session:
        run = session.get(DreamRun, run_id)
        assert run is not None
        if run.status == RunStatus.QUEUED:
            run.status, run.started_at = RunStatus.RUNNING.value, ctx.clock()
            ctx.publish("run.started", run_id=run.id, user_id=run.user_id)
        annotate = partial(_annotate, ctx)
        outcome = engine.run_batch(session, run, size, ctx.embedder, ctx.clock(), annotate=annotate)
        if outcome.created or outcome.updated:  # only a changed dream can newly match another
            merged = engine.merge_dreams(session, run.user_id, ctx.clock(), ctx.embedder)
            timings = run.timings or {}
            run.timings = {**timings, "dreams_merged": int(timings.get("dreams_merged", 0)) + merged}
        if outcome.exhausted:
            store.finish_run(session, run, RunStatus.SUCCEEDED)
        if ctx.settings.dream.fault_delay_seconds:
            time.sleep(ctx.settings.dream.fault_delay_seconds)  # test hook: widen the window before commit
        session.commit()
        return outcome, snapshot(run)


def _count(ctx: WorkerContext, outcome: engine.BatchOutcome, seconds: float) -> None:
    metrics = ctx.metrics
    metrics.dream_batches.labels(outcome="committed").inc()
    metrics.dream_batch_seconds.observe(seconds)
    metrics.memories_consolidated.inc(outcome.processed)
    for emotion in outcome.created_emotions:
        metrics.dreams_created.labels(dominant_emotion=emotion or "none").inc()


def _after_commit(
    ctx: WorkerContext,
    run_id: str,
    user_id: str,
    lock: OwnedLock,
    outcome: engine.BatchOutcome,
    state: dict[str, Any],
    size: int,
    new_size: int,
) -> BatchOutcome:
    progress = {"processed": outcome.processed, "batch_quality": outcome.quality}
    sizes = {"batch_size": size, "next_batch_size": new_size}
    ctx.publish("run.batch", run_id=run_id, user_id=user_id, **progress, **sizes, **state)
    if state["status"] == RunStatus.SUCCEEDED:
        lock.release()
        ctx.redis.delete(ctx.keys.dream_heartbeat(run_id))
        ctx.publish("run.finished", run_id=run_id, user_id=user_id, **state)
        return BatchOutcome(run_id, BatchStatus.SUCCEEDED, batch_size=size, snapshot=state)
    lock.extend()
    heartbeat(ctx, run_id)  # the next batch is on its way
    return BatchOutcome(
        run_id, BatchStatus.CONTINUES, next_seq=state["batches"], batch_size=size, snapshot=state
    )


def _annotate(ctx: WorkerContext, texts: list[str]) -> list[dict[str, Any]]:
    """Emotions for batch memories the annotation sweep has not reached yet (same model, same breaker)."""
    results = ctx.detector.detect(texts)
    record_predictions(ctx.metrics, results)
    return [r.as_dict() for r in results]


def snapshot(run: DreamRun) -> dict[str, Any]:
    return {
        "status": run.status,
        "batches": run.batches,
        "memories_processed": run.memories_processed,
        "memories_total": run.memories_total,
        "quality": run.quality,
    }


def fail_run(ctx: WorkerContext, run_id: str, lock: OwnedLock, error: str) -> BatchOutcome:
    with ctx.sessions() as session:
        run = session.get(DreamRun, run_id)
        if run is not None and not RunStatus(run.status).finished:
            store.finish_run(session, run, RunStatus.FAILED, error[:2000])
            session.commit()
            ctx.publish("run.failed", run_id=run.id, user_id=run.user_id, error=error[:500])
    lock.release()
    ctx.redis.delete(ctx.keys.dream_heartbeat(run_id))
    return BatchOutcome(run_id, BatchStatus.FAILED, error=error)


def stall_window(settings: Settings) -> int:
    """Seconds without a heartbeat after which a run's batches count as stopped: twice the hard time
    limit of a batch, so a batch that is merely slow is never taken for a dead one."""
    return 2 * settings.celery.task_time_limit


def heartbeat(ctx: WorkerContext, run_id: str) -> None:
    ctx.redis.set(ctx.keys.dream_heartbeat(run_id), "batch", ex=stall_window(ctx.settings))


def recover_stalled_runs(ctx: WorkerContext) -> list[tuple[str, int]] | None:
    """(run id, batch to re-send) of each active run whose batches stopped; None when another sweep runs.

    Stalled: no heartbeat and no progress in the database for the stall window. Each run is claimed
    with SET NX on its heartbeat (which also gives the re-sent batch a full window to start), under
    a sweep lock, so two workers starting together re-send it once between them.
    """
    lock = OwnedLock(ctx.redis, ctx.keys.dream_recovery_lock(), uuid.uuid4().hex, RECOVERY_LOCK_SECONDS)
    if not lock.acquire():
        return None
    try:
        window = stall_window(ctx.settings)
        with ctx.sessions() as session:
            quiet = [(run.id, run.batches) for run in store.stale_runs(session, timedelta(seconds=window))]
        claimed = [
            (run_id, seq)
            for run_id, seq in quiet
            if ctx.redis.set(ctx.keys.dream_heartbeat(run_id), "recovery", nx=True, ex=window)
        ]
    finally:
        lock.release()
    for run_id, seq in claimed:
        log.warning("dream run %s stalled (no heartbeat for %ss): re-sending batch %d", run_id, window, seq)
    return claimed


@dataclass
class CycleOutcome:
    skipped: str | None = None
    started: list[str] = field(default_factory=list)  # new runs: send batch 0 of each
    resent: list[tuple[str, int]] = field(default_factory=list)  # stale runs: (run id, batch to re-send)

    def as_result(self) -> dict[str, Any]:
        if self.skipped:
            return {"skipped": self.skipped}
        return {"started": self.started, "resent": [run_id for run_id, _ in self.resent]}


def dream_cycle(ctx: WorkerContext, now: float | None = None) -> CycleOutcome:
    """One run per user with at least DREAM_MIN_PENDING pending memories; stale runs to re-send."""
    if not DreamToggle.is_on(ctx.redis.get(ctx.keys.dream_enabled())):
        return CycleOutcome(skipped="disabled")
    # Two beats (or a redelivered cycle) firing in the same minute: only the first one acts.
    slot = ctx.keys.dream_cycle_slot(schedule_slot(time.time() if now is None else now))
    if not ctx.redis.set(slot, "1", nx=True, ex=3600):
        return CycleOutcome(skipped="slot already handled")
    outcome = CycleOutcome(resent=recover_stalled_runs(ctx) or [])
    with ctx.sessions() as session:
        for user_id, _pending in store.users_with_pending(session, ctx.settings.dream.min_pending):
            if store.active_run(session, user_id) is None:
                outcome.started.append(store.create_run(session, user_id, RunTrigger.SCHEDULE).id)
        session.commit()
    log.info("dream cycle: %d runs started, %d stale runs re-sent", len(outcome.started), len(outcome.resent))
    return outcome
