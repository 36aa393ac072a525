"""Dream tasks, as thin adapters: a run is a chain of `consolidate_batch` tasks (queue `dream`); beat
fires `cycle`. The work itself is in `jeffrey_worker.consolidation`; these map its outcome to Celery:
send the next batch, retry later, or return.
"""

from __future__ import annotations

import logging
from typing import Any

from jeffrey_core.contract import TaskName
from jeffrey_worker.consolidation import (
    LOCK_RETRY_SECONDS,
    BatchStatus,
    consolidate_one_batch,
    dream_cycle,
    recover_stalled_runs,
)
from jeffrey_worker.reliability import TRANSIENT_ERRORS, jeffrey_task

log = logging.getLogger(__name__)


@jeffrey_task(TaskName.DREAM_CONSOLIDATE_BATCH.value, bind=True)
def consolidate_batch(self: Any, run_id: str, seq: int | None = None) -> dict[str, Any]:
    """Batch number `seq` of the run (None: whichever is next); sends the batch after it."""
    ctx = self.ctx
    outcome = consolidate_one_batch(ctx, str(run_id), seq)
    if outcome.status == BatchStatus.WAITING:
        raise self.retry(countdown=LOCK_RETRY_SECONDS, max_retries=None)
    if outcome.status in (BatchStatus.CONTINUES, BatchStatus.CHECKPOINTED):
        ctx.send(TaskName.DREAM_CONSOLIDATE_BATCH, run_id=outcome.run_id, seq=outcome.next_seq)
    return outcome.as_result()


@jeffrey_task(TaskName.DREAM_CYCLE.value, bind=True, ignore_result=True)
def cycle(self: Any) -> dict[str, Any]:
    """Start one run per user with enough pending memories; re-send the batch of each stale run."""
    ctx = self.ctx
    outcome = dream_cycle(ctx)
    for run_id in outcome.started:
        ctx.send(TaskName.DREAM_CONSOLIDATE_BATCH, run_id=run_id, seq=0)
    for run_id, seq in outcome.resent:
        ctx.send(TaskName.DREAM_CONSOLIDATE_BATCH, run_id=run_id, seq=seq)
    return outcome.as_result()


@jeffrey_task(TaskName.DREAM_RECOVER.value, bind=True, ignore_result=True)
def recover(self: Any) -> dict[str, Any]:
    """Re-send the batch of each run whose batches stopped (sent on worker start and by beat)."""
    ctx = self.ctx
    try:
        resent = recover_stalled_runs(ctx)
    except TRANSIENT_ERRORS as exc:  # database or Redis away: the next sweep tries again, no dead letter
        log.warning("stalled-run recovery skipped: %s", exc.__class__.__name__)
        return {"skipped": f"unavailable: {exc.__class__.__name__}"}
    if resent is None:
        return {"skipped": "another recovery sweep is running"}
    for run_id, seq in resent:
        ctx.send(TaskName.DREAM_CONSOLIDATE_BATCH, run_id=run_id, seq=seq)
    return {"resent": [run_id for run_id, _ in resent]}
