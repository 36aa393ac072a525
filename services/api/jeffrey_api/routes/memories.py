"""/api/v1/memories: store, list, read and delete a user's memories."""

from __future__ import annotations

import functools
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from jeffrey_api import idempotency
from jeffrey_api.audit import acting_for_audit, audit_acting_for
from jeffrey_api.deps import (
    CursorDep,
    LimitQuery,
    MemoriesPrincipalDep,
    SessionDep,
    UserIdQuery,
    acting_user,
    bearer_scheme,
    memories_scope,
    principal_of,
    require_memories_scope,
)
from jeffrey_api.errors import ApiError
from jeffrey_api.schemas import (
    MemoryBatchCreate,
    MemoryBatchOut,
    MemoryCreate,
    MemoryOut,
    MemoryPage,
    MemoryPostBody,
)
from jeffrey_api.state import AppState
from jeffrey_api.tasks import kick_annotation
from jeffrey_api.validation import BoundedDatetime
from jeffrey_core.contract import EmotionLabel
from jeffrey_core.store import memories as repo

router = APIRouter(
    prefix="/api/v1/memories",
    tags=["memories"],
    dependencies=[Depends(require_memories_scope), audit_acting_for],
)


def _not_found(memory_id: str) -> ApiError:
    return ApiError(404, "memory_not_found", f"memory {memory_id} does not exist", {"id": memory_id})


# The memory POST is the hottest route, so it declares no dependency: FastAPI solves the dependency
# tree on every request, and for this route's eleven nodes (principal, scope, audit, session, settings,
# state, ...) that and closing them took about a quarter of its CPU time (issue 12 profile). It takes
# the caller from the auth middleware's result, checks the scope and audits acting-for inline, and
# does all its blocking work (insert, commit, close, annotation kick) in one threadpool hop.
write_router = APIRouter(prefix="/api/v1/memories", tags=["memories"])


# `user_id` and `Idempotency-Key` are read from the request here rather than declared as parameters:
# FastAPI's per-request parameter solving was 4 % of the POST's CPU for two optional strings. `user_id`
# is checked by UserIdQuery itself (same 422 details) and both are documented as FastAPI would.
_USER_ID = TypeAdapter(UserIdQuery)
_USER_ID_SCHEMA = _USER_ID.json_schema()
_PARAMETERS = [
    {
        "name": "user_id",
        "in": "query",
        "required": False,
        "schema": {**_USER_ID_SCHEMA, "title": "User Id"},
        "description": _USER_ID_SCHEMA["description"],
    },
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Idempotency-Key"},
    },
]


def _user_id(request: Request) -> str | None:
    if not request.scope.get("query_string"):
        return None
    try:
        user_id: str | None = _USER_ID.validate_python(request.query_params.get("user_id"))
        return user_id
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("query", "user_id", *error["loc"])} for error in exc.errors()]
        ) from None


@write_router.post(
    "",
    status_code=201,
    response_model=MemoryOut | MemoryBatchOut,
    summary="Store one memory, or a batch of up to 500",
    responses={409: {"description": "Idempotency-Key reused with another body"}},
    openapi_extra={"security": [{bearer_scheme.scheme_name: []}], "parameters": _PARAMETERS},
)
async def create_memories(request: Request, body: Annotated[MemoryPostBody, Body()]) -> Response:
    state: AppState = request.app.state.jeffrey
    principal = memories_scope(await principal_of(request, state.settings))
    owner = acting_user(principal, _user_id(request))
    key = idempotency.validate_key(request.headers.get("idempotency-key"))
    # The fingerprint (a canonical dump and a hash of the whole body) is only needed with a key.
    fingerprint = (
        idempotency.request_fingerprint("POST", request.url.path, body.model_dump(mode="json"))
        if key is not None
        else ""
    )
    store = functools.partial(_store, state, owner, body, key, fingerprint)
    async with acting_for_audit(request, principal, state), state.session_slots:
        return await anyio.to_thread.run_sync(store)


# What a memory has once annotated and consolidated; a new one has none of it yet.
_NOT_YET: dict[str, Any] = {"lang": None, "emotion": None, "consolidated_at": None, "dream_id": None}


def _store(
    state: AppState, owner: str, body: MemoryCreate | MemoryBatchCreate, key: str | None, fingerprint: str
) -> Response:
    items = body.memories if isinstance(body, MemoryBatchCreate) else [body]

    def create() -> MemoryOut | MemoryBatchOut:
        new = [repo.NewMemory(text=i.text, meta=i.meta, created_at=i.created_at) for i in items]
        # Validated from the inserted values by pydantic's compiled code, and dumped by it too
        # (commit_once), rather than built from ORM objects and walked by json.dumps.
        rows = [row | _NOT_YET for row in repo.insert_memories(session, owner, new)]
        if isinstance(body, MemoryBatchCreate):
            return MemoryBatchOut.model_validate({"items": rows})
        return MemoryOut.model_validate(rows[0])

    with state.sessions() as session:
        if key is None and isinstance(body, MemoryCreate) and state.engine.dialect.name == "postgresql":
            # One row and no key: a single INSERT, atomic by itself, so it runs in autocommit: one
            # PostgreSQL round trip instead of three (BEGIN, INSERT, COMMIT). Not on SQLite, which is
            # in-process: switching the isolation level and back cost more CPU than it saved.
            session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        response, created = idempotency.commit_once(
            session, owner, key, fingerprint, state.settings.api.idempotency_ttl_seconds, 201, create
        )
    if created:
        kick_annotation(state)
    return response


@router.get("", response_model=MemoryPage, summary="List memories, newest first (cursor pagination)")
def list_memories(
    principal: MemoriesPrincipalDep,
    session: SessionDep,
    cursor: CursorDep,
    user_id: UserIdQuery = None,
    limit: LimitQuery = 50,
    since: Annotated[BoundedDatetime | None, Query(description="created_at >= since")] = None,
    until: Annotated[BoundedDatetime | None, Query(description="created_at < until")] = None,
    consolidated: bool | None = None,
    emotion: EmotionLabel | None = None,
) -> MemoryPage:
    owner = acting_user(principal, user_id)
    filters = repo.MemoryFilter(since=since, until=until, consolidated=consolidated, emotion=emotion)
    rows, next_cursor = repo.list_memories(session, owner, filters, limit, cursor)
    return MemoryPage(
        items=[MemoryOut.from_row(r) for r in rows], next_cursor=next_cursor.encode() if next_cursor else None
    )


@router.get("/{memory_id}", response_model=MemoryOut, summary="One memory")
def get_memory(
    memory_id: str, principal: MemoriesPrincipalDep, session: SessionDep, user_id: UserIdQuery = None
) -> MemoryOut:
    row = repo.get_memory(session, acting_user(principal, user_id), memory_id)
    if row is None:
        raise _not_found(memory_id)
    return MemoryOut.from_row(row)


@router.delete("/{memory_id}", status_code=204, summary="Delete one memory")
def delete_memory(
    memory_id: str, principal: MemoriesPrincipalDep, session: SessionDep, user_id: UserIdQuery = None
) -> Response:
    deleted = repo.delete_memory(session, acting_user(principal, user_id), memory_id)
    if not deleted:
        raise _not_found(memory_id)
    session.commit()
    return Response(status_code=204)
