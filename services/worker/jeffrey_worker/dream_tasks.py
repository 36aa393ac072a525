"""Dream tasks: a run is a chain of `consolidate_batch` tasks (queue `dream`); beat fires `cycle`.

Each batch takes the user's lock (owner = run id, so a redelivered batch of the same run gets it
back), learns B from the tuner, runs one engine batch in one transaction, then sends the next
batch or finishes the run. A soft time limit rolls the batch back, halves B and hands the rest to
the next batch; database errors retry with backoff; anything else fails the run and frees the lock.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm.exc import StaleDataError

from jeffrey_core.contract import TaskName
from jeffrey_core.events import publish
from jeffrey_core.locks import OwnedLock
from jeffrey_core.schedule import schedule_slot
from jeffrey_core.settings import get_settings
from jeffrey_core.store import dreams as store
from jeffrey_core.store.models import DreamRun, RunStatus, RunTrigger, utcnow
from jeffrey_worker.dream import engine
from jeffrey_worker.dream.tuner import BatchSizeTuner, RedisTunerStore
from jeffrey_worker.dream.vectors import Embedder, idf_from_emotion_model
from jeffrey_worker.emotion_service import record_predictions
from jeffrey_worker.metrics import worker_metrics
from jeffrey_worker.reliability import jeffrey_task
from jeffrey_worker.resources import guarded_detector, per_process, redis_client, redis_keys, sessions

log = logging.getLogger(__name__)
LOCK_RETRY_SECONDS = 2.0


def embedder() -> Embedder:
    built: Embedder = per_process("embedder", lambda: Embedder(idf_from_emotion_model()))
    return built


def tuner() -> BatchSizeTuner:
    settings = get_settings().dream
    keys = redis_keys()
    return BatchSizeTuner(
        RedisTunerStore(redis_client(), keys.dream_batch_size(), keys.dream_quality_average()),
        minimum=settings.batch_min,
        maximum=settings.batch_max,
        initial=settings.batch_initial,
        target_seconds=settings.target_batch_seconds,
    )


def _event(kind: str, run: DreamRun, **fields: Any) -> None:
    publish(redis_client(), redis_keys().events_channel(), kind, run_id=run.id, user_id=run.user_id, **fields)


@jeffrey_task(TaskName.DREAM_CONSOLIDATE_BATCH.value, bind=True)
def consolidate_batch(self: Any, run_id: str, seq: int | None = None) -> dict[str, Any]:
    """Batch number `seq` of the run (None: whichever is next). A copy whose batch is done is dropped."""
    settings = get_settings()
    with sessions()() as session:
        run = session.get(DreamRun, run_id)
        if run is None:
            raise ValueError(f"dream run {run_id} does not exist")
        if run.status in store.FINISHED or (seq is not None and seq != run.batches):
            return {"run_id": run_id, "status": run.status, "duplicate": True}
        user_id, queued_at = run.user_id, run.queued_at
    lock = OwnedLock(
        redis_client(), redis_keys().dream_lock(user_id), run_id, settings.celery.task_time_limit + 30
    )
    if not lock.acquire():
        if (utcnow() - queued_at).total_seconds() > settings.dream.lock_wait_seconds:
            return _fail(
                run_id,
                lock,
                f"another run held the user's lock for over {settings.dream.lock_wait_seconds:g}s",
            )
        raise self.retry(countdown=LOCK_RETRY_SECONDS, max_retries=None)

    batch_tuner = tuner()
    size = batch_tuner.current()
    started = time.monotonic()
    metrics = worker_metrics()
    try:
        with sessions()() as session:
            run = session.get(DreamRun, run_id)
            assert run is not None
            if run.status == "queued":
                run.status, run.started_at = "running", utcnow()
                _event("run.started", run)
            outcome = engine.run_batch(session, run, size, embedder(), utcnow(), annotate=_annotate)
            if outcome.exhausted:
                merged = engine.merge_dreams(session, run.user_id, utcnow())
                run.timings = {**(run.timings or {}), "dreams_merged": merged}
                store.finish_run(session, run, RunStatus.SUCCEEDED)
            if settings.dream.fault_delay_seconds:
                time.sleep(settings.dream.fault_delay_seconds)  # test hook: widen the window before commit
            session.commit()
            snapshot = _snapshot(run)
    except SoftTimeLimitExceeded:
        batch_tuner.record(size, time.monotonic() - started, ok=False)
        metrics.dream_batches.labels(outcome="time_limit").inc()
        lock.extend()
        self.app.send_task(TaskName.DREAM_CONSOLIDATE_BATCH.value, args=[run_id], kwargs={"seq": seq})
        return {"run_id": run_id, "status": "checkpointed", "batch_size": size}
    except (engine.ConcurrentConsolidationError, StaleDataError):
        # Another copy of this batch committed first; its chain carries the run on.
        metrics.dream_batches.labels(outcome="duplicate").inc()
        return {"run_id": run_id, "status": "duplicate"}
    except OperationalError:
        batch_tuner.record(size, time.monotonic() - started, ok=False)
        metrics.dream_batches.labels(outcome="retry").inc()
        raise  # autoretry with backoff: the database will come back; the lock stays with this run
    except Exception as exc:
        metrics.dream_batches.labels(outcome="failed").inc()
        log.exception("dream run %s failed", run_id)
        return _fail(run_id, lock, f"{exc.__class__.__name__}: {exc}")

    seconds = time.monotonic() - started
    new_size = batch_tuner.record(size, seconds, ok=True, quality=outcome.quality)
    metrics.dream_batches.labels(outcome="committed").inc()
    metrics.dream_batch_seconds.observe(seconds)
    publish(
        redis_client(),
        redis_keys().events_channel(),
        "run.batch",
        run_id=run_id,
        user_id=user_id,
        processed=outcome.processed,
        batch_quality=outcome.quality,
        batch_size=size,
        next_batch_size=new_size,
        **snapshot,
    )
    if snapshot["status"] == "succeeded":
        lock.release()
        publish(
            redis_client(),
            redis_keys().events_channel(),
            "run.finished",
            run_id=run_id,
            user_id=user_id,
            **snapshot,
        )
    else:
        lock.extend()
        self.app.send_task(
            TaskName.DREAM_CONSOLIDATE_BATCH.value, args=[run_id], kwargs={"seq": snapshot["batches"]}
        )
    return {"run_id": run_id, **snapshot}


def _annotate(texts: list[str]) -> list[dict[str, Any]]:
    """Emotions for batch memories the annotation sweep has not reached yet (same model, same breaker)."""
    results = guarded_detector().detect(texts)
    record_predictions(results)
    return [r.as_dict() for r in results]


def _snapshot(run: DreamRun) -> dict[str, Any]:
    return {
        "status": run.status,
        "batches": run.batches,
        "memories_processed": run.memories_processed,
        "memories_total": run.memories_total,
        "quality": run.quality,
    }


def _fail(run_id: str, lock: OwnedLock, error: str) -> dict[str, Any]:
    with sessions()() as session:
        run = session.get(DreamRun, run_id)
        if run is not None and run.status not in store.FINISHED:
            store.finish_run(session, run, RunStatus.FAILED, error[:2000])
            session.commit()
            _event("run.failed", run, error=error[:500])
    lock.release()
    return {"run_id": run_id, "status": "failed", "error": error}


@jeffrey_task(TaskName.DREAM_CYCLE.value, ignore_result=True)
def dream_cycle() -> dict[str, Any]:
    """Fan out one run per user with at least DREAM_MIN_PENDING pending memories; re-send stale runs."""
    settings = get_settings()
    client, keys = redis_client(), redis_keys()
    if client.get(keys.dream_enabled()) == "0":
        return {"skipped": "disabled"}
    # Two beats (or a redelivered cycle) firing in the same minute: only the first one acts.
    if not client.set(keys.dream_cycle_slot(schedule_slot(time.time())), "1", nx=True, ex=3600):
        return {"skipped": "slot already handled"}
    started: list[str] = []
    with sessions()() as session:
        stale = store.stale_runs(session, timedelta(seconds=3 * settings.celery.task_time_limit))
        resent = [(run.id, run.batches) for run in stale]
        for user_id, _pending in store.users_with_pending(session, settings.dream.min_pending):
            if store.active_run(session, user_id) is None:
                started.append(store.create_run(session, user_id, RunTrigger.SCHEDULE).id)
        session.commit()
    for run_id in started:
        consolidate_batch.apply_async(args=[run_id], kwargs={"seq": 0})
    for run_id, seq in resent:
        consolidate_batch.apply_async(args=[run_id], kwargs={"seq": seq})
    log.info("dream cycle: %d runs started, %d stale runs re-sent", len(started), len(resent))
    return {"started": started, "resent": [run_id for run_id, _ in resent]}
