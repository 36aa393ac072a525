"""A person's data as a whole: `GET /api/v1/export` (JSON lines) and `DELETE /api/v1/users/{user_id}`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from jeffrey_api.audit import AuditNote, audit_acting_for, audited
from jeffrey_api.deps import MemoriesPrincipalDep, StateDep, UserIdQuery, acting_user
from jeffrey_api.errors import ApiError
from jeffrey_api.state import AppState
from jeffrey_core import enqueue
from jeffrey_core.contract import TaskName
from jeffrey_core.erasure import erase_user
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.store.audit import AuditAction
from jeffrey_core.store.export import count_user_data, export_records

router = APIRouter(prefix="/api/v1", tags=["users"], dependencies=[audit_acting_for])

NDJSON = "application/x-ndjson"


@router.get(
    "/export",
    summary="Everything stored about the caller (admins: any user) as JSON lines",
    response_class=StreamingResponse,
    responses={200: {"content": {NDJSON: {}}, "description": "one JSON object per line"}},
)
def export_user(
    principal: MemoriesPrincipalDep, state: StateDep, user_id: UserIdQuery = None
) -> StreamingResponse:
    owner = acting_user(principal, user_id)
    with state.sessions() as session:
        counts = count_user_data(session, owner)  # also proves the database answers before streaming
    headers = {
        "Content-Disposition": f'attachment; filename="jeffrey-export-{_safe_name(owner)}.jsonl"',
        "X-Export-Records": str(counts.total),
    }
    return StreamingResponse(_lines(state, owner, counts.total), media_type=NDJSON, headers=headers)


def _lines(state: AppState, owner: str, total: int) -> Iterator[bytes]:
    """The header line, then one line per record (read a page at a time in its own session)."""
    # The count is taken when the export starts: a dream run in progress may add dreams meanwhile.
    yield _line({"type": "export", "user_id": owner, "records_at_start": total, "format": 1})
    with state.sessions() as session:
        for record in export_records(session, owner):
            yield _line(record)


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode()


def _safe_name(user_id: str) -> str:
    # ASCII only: header values are Latin-1, and str.isalnum() is true for letters of every script.
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in user_id)[:64]


@router.delete(
    "/users/{user_id}",
    summary="Erase a user: every memory, dream, run, idempotency key and Redis key of theirs",
    responses={
        400: {"description": "a user erasing themself must pass confirm=<their user id>"},
        403: {"description": "only admins may erase another user"},
    },
)
def erase(
    user_id: str,
    principal: MemoriesPrincipalDep,
    state: StateDep,
    note: Annotated[AuditNote, audited(AuditAction.USER_ERASE, "user_id")],
    confirm: Annotated[str | None, Query(max_length=128, description="your user id (self-erasure)")] = None,
) -> dict[str, Any]:
    if len(user_id) > 128:
        raise ApiError(422, "validation_error", "user_id is longer than 128 characters")
    if not principal.is_admin:
        if user_id != principal.user_id:
            raise ApiError(403, "forbidden", "only an admin token may erase another user")
        if confirm != user_id:
            raise ApiError(400, "confirmation_required", "to erase your own data pass confirm=<your user id>")
    keys = RedisKeys(state.settings.redis.key_prefix)
    with state.sessions() as session:
        report = erase_user(session, state.sync_redis, keys, state.celery, user_id)
    note.target = f"{user_id} memories={report.memories} runs={report.runs}"
    # Tasks in flight right now (a batch of the stopped run) may still leave a result or a dead letter
    # naming a run: a second pass removes them once such a task can no longer be running.
    delay = state.settings.celery.erasure_sweep_delay_seconds
    enqueue.send(
        state.celery,
        TaskName.ERASURE_SWEEP,
        caller=enqueue.Caller.REQUEST,
        countdown=delay,
        user_id=user_id,
        run_ids=sorted(report.run_ids),
    )
    return {"erased": report.as_dict(), "second_pass_in_seconds": delay}
