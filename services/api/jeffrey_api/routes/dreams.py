"""/api/v1/dream/* (runs, status, toggle) and /api/v1/dreams (what the runs produced)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import Response

from jeffrey_api import idempotency
from jeffrey_api.admission import admit
from jeffrey_api.audit import AuditNote, audit_acting_for, audited
from jeffrey_api.deps import (
    CursorDep,
    LimitQuery,
    MemoriesPrincipalDep,
    SessionDep,
    SettingsDep,
    StateDep,
    UserIdQuery,
    acting_user,
    require_admin,
    require_memories_scope,
)
from jeffrey_api.dream_state import dream_status
from jeffrey_api.errors import ApiError
from jeffrey_api.schemas import (
    DreamOut,
    DreamPage,
    DreamRunAccepted,
    DreamRunOut,
    DreamRunPage,
    ErrorEnvelope,
    ToggleRequest,
)
from jeffrey_api.tasks import send
from jeffrey_core.contract import DreamToggle, Queue, TaskName
from jeffrey_core.store import dreams as store
from jeffrey_core.store.audit import AuditAction
from jeffrey_core.store.models import Dream, DreamRun, RunTrigger

router = APIRouter(
    prefix="/api/v1", tags=["dreams"], dependencies=[Depends(require_memories_scope), audit_acting_for]
)


@router.post(
    "/dream/run",
    status_code=202,
    response_model=DreamRunAccepted,
    summary="Start a dream run for a user",
    responses={
        409: {"model": ErrorEnvelope, "description": "dreams_disabled, or run_active (details: its id)"}
    },
)
def start_run(
    request: Request,
    principal: MemoriesPrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    state: StateDep,
    note: Annotated[AuditNote, audited()],
    force: bool = False,
    user_id: UserIdQuery = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    owner = acting_user(principal, user_id)
    key = idempotency.validate_key(idempotency_key)
    if force and not principal.is_admin:
        raise ApiError(403, "forbidden", "force=true (run while dreaming is disabled) needs an admin token")
    if force:
        note.action, note.target = AuditAction.DREAM_RUN_FORCED.value, owner
    admit(state, Queue.DREAM)
    if not force and not DreamToggle.is_on(state.sync_redis.get(state.keys.dream_enabled())):
        raise ApiError(409, "dreams_disabled", "dreaming is disabled; an admin may POST /api/v1/dream/toggle")
    fingerprint = idempotency.request_fingerprint("POST", request.url.path, {"user": owner, "force": force})
    run_ids: list[str] = []

    def create() -> dict[str, Any]:
        _refuse_second_run(session, owner)
        run = store.create_run(session, owner, RunTrigger.API)
        run_ids.append(run.id)
        return {"run_id": run.id, "status": run.status, "status_url": f"/api/v1/dream/runs/{run.id}"}

    response, created = idempotency.commit_once(
        session, owner, key, fingerprint, settings.api.idempotency_ttl_seconds, 202, create
    )
    if created:
        # The run is durable in the database; if this send fails, beat's cycle re-sends stale runs.
        try:
            send(state, TaskName.DREAM_CONSOLIDATE_BATCH, run_id=run_ids[0], seq=0)
        except Exception as exc:  # broker down: the run waits as `queued`
            import logging

            logging.getLogger(__name__).warning("dream run %s queued but not sent: %s", run_ids[0], exc)
    return response


def _refuse_second_run(session: SessionDep, owner: str) -> None:
    """One active run per user: a second POST gets 409 naming the run to follow instead."""
    active = store.active_run(session, owner)
    if active is not None:
        raise ApiError(
            409,
            "run_active",
            f"a dream run for this user is already {active.status}; follow it instead of starting another",
            {"run_id": active.id, "status_url": f"/api/v1/dream/runs/{active.id}"},
        )


def _visible_run(session: SessionDep, principal: Any, run_id: str) -> DreamRun:
    run = session.get(DreamRun, run_id)
    if run is None or (run.user_id != principal.user_id and not principal.is_admin):
        raise ApiError(404, "run_not_found", f"dream run {run_id} does not exist", {"id": run_id})
    return run


@router.get("/dream/runs/{run_id}", response_model=DreamRunOut, summary="One run: status, progress, quality")
def get_run(run_id: str, principal: MemoriesPrincipalDep, session: SessionDep) -> DreamRunOut:
    return DreamRunOut.from_row(_visible_run(session, principal, run_id))


@router.get("/dream/runs", response_model=DreamRunPage, summary="Runs, newest first")
def list_runs(
    principal: MemoriesPrincipalDep,
    session: SessionDep,
    cursor: CursorDep,
    user_id: UserIdQuery = None,
    limit: LimitQuery = 50,
) -> DreamRunPage:
    scope: str | None = acting_user(principal, user_id)
    if principal.is_admin and user_id is None:
        scope = None  # an admin sees every user's runs
    rows, next_cursor = store.list_runs(session, scope, limit, cursor)
    return DreamRunPage(
        items=[DreamRunOut.from_row(r) for r in rows],
        next_cursor=next_cursor.encode() if next_cursor else None,
    )


@router.get(
    "/dream/status", summary="DreamEngine state: toggle, schedule, runs, quality, batch size, DLQ, locks"
)
async def status(principal: MemoriesPrincipalDep, state: StateDep) -> dict[str, Any]:
    scope = None if principal.is_admin else principal.user_id
    body: dict[str, Any] = jsonable_encoder(await dream_status(state, scope))
    return body


@router.post(
    "/dream/toggle",
    summary="Enable or disable scheduled dreaming (admin; forced runs ignore it)",
    dependencies=[Depends(require_admin)],
)
async def toggle(
    body: ToggleRequest, state: StateDep, note: Annotated[AuditNote, audited(AuditAction.DREAM_TOGGLE)]
) -> dict[str, bool]:
    note.target = "enabled" if body.enabled else "disabled"
    await state.redis.set(state.keys.dream_enabled(), DreamToggle.of(body.enabled).value)
    return {"enabled": body.enabled}


@router.get("/dreams", response_model=DreamPage, summary="Dreams, newest first")
def list_dreams(
    principal: MemoriesPrincipalDep,
    session: SessionDep,
    cursor: CursorDep,
    user_id: UserIdQuery = None,
    limit: LimitQuery = 50,
) -> DreamPage:
    rows, next_cursor = store.list_dreams(session, acting_user(principal, user_id), limit, cursor)
    return DreamPage(
        items=[DreamOut.from_row(r) for r in rows], next_cursor=next_cursor.encode() if next_cursor else None
    )


@router.get("/dreams/{dream_id}", response_model=DreamOut, summary="One dream with its member memory ids")
def get_dream(
    dream_id: str, principal: MemoriesPrincipalDep, session: SessionDep, user_id: UserIdQuery = None
) -> DreamOut:
    row = session.get(Dream, dream_id)
    if row is None or row.user_id != acting_user(principal, user_id):
        raise ApiError(404, "dream_not_found", f"dream {dream_id} does not exist", {"id": dream_id})
    return DreamOut.from_row(row, store.dream_member_ids(session, dream_id))
