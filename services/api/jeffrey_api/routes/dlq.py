"""/api/v1/dlq (admin): inspect, replay and purge the dead-letter queue."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict

from jeffrey_api.audit import AuditNote, audited
from jeffrey_api.deps import StateDep, require_admin
from jeffrey_api.errors import ApiError
from jeffrey_core.dlq import DeadLetterQueue
from jeffrey_core.store.audit import AuditAction

router = APIRouter(prefix="/api/v1/dlq", tags=["dead letters"], dependencies=[Depends(require_admin)])


class ReplayFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str | None = None
    error_type: str | None = None
    dry_run: bool = False


def _dlq(state: StateDep) -> DeadLetterQueue:
    return DeadLetterQueue(state.sync_redis, state.celery)


def _missing(record_id: str) -> ApiError:
    return ApiError(404, "dead_letter_not_found", f"no dead letter {record_id}", {"id": record_id})


@router.get("", summary="Dead letters, newest first; filter by task name or error type")
def list_dead_letters(
    state: StateDep,
    task: str | None = None,
    error_type: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    items, total = _dlq(state).records(task, error_type, limit, offset)
    next_offset = offset + limit if offset + limit < total else None
    return {"items": items, "total": total, "next_offset": next_offset}


@router.get("/{record_id}", summary="One dead letter, with its traceback")
def get_dead_letter(record_id: str, state: StateDep) -> dict[str, Any]:
    record = _dlq(state).get(record_id)
    if record is None:
        raise _missing(record_id)
    return record


@router.post("/{record_id}/replay", summary="Re-publish to its original queue; removed once re-published")
def replay_dead_letter(
    record_id: str,
    state: StateDep,
    note: Annotated[AuditNote, audited(AuditAction.DLQ_REPLAY, "record_id")],
    dry_run: bool = False,
) -> dict[str, Any]:
    if dry_run:
        note.action = None  # only says what would be replayed
    result = _dlq(state).replay(record_id, dry_run)
    if result is None:
        raise _missing(record_id)
    return result


@router.post("/replay", summary="Replay every dead letter matching the filter")
def replay_matching(
    body: ReplayFilter,
    state: StateDep,
    note: Annotated[AuditNote, audited(AuditAction.DLQ_REPLAY_MATCHING)],
) -> dict[str, Any]:
    note.target = f"task={body.task} error_type={body.error_type}"
    if body.dry_run:
        note.action = None
    results = _dlq(state).replay_matching(body.task, body.error_type, body.dry_run)
    return {"items": results, "count": len(results), "dry_run": body.dry_run}


@router.delete("/{record_id}", status_code=204, summary="Delete one dead letter")
def delete_dead_letter(
    record_id: str, state: StateDep, _: Annotated[AuditNote, audited(AuditAction.DLQ_DELETE, "record_id")]
) -> Response:
    if not _dlq(state).delete(record_id):
        raise _missing(record_id)
    return Response(status_code=204)


@router.delete("", summary="Purge the dead-letter queue (optionally only entries older than N seconds)")
def purge_dead_letters(
    state: StateDep,
    note: Annotated[AuditNote, audited(AuditAction.DLQ_PURGE)],
    older_than: Annotated[float | None, Query(ge=0)] = None,
) -> dict[str, int]:
    purged = _dlq(state).purge(older_than)
    note.target = f"older_than={older_than} purged={purged}"
    return {"purged": purged}
