"""FastAPI dependencies as Annotated aliases: SettingsDep, SessionDep, PrincipalDep, AdminDep, and the
query parameters every listing shares (UserIdQuery, LimitQuery, CursorDep)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from jeffrey_api.errors import ApiError
from jeffrey_api.state import AppState
from jeffrey_api.validation import bounded_utc, safe_text
from jeffrey_core.auth import Principal, Scope, TokenError, verify_token
from jeffrey_core.settings import Settings
from jeffrey_core.store.pagination import Cursor, InvalidCursorError


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.jeffrey
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_session(state: StateDep) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

_BEARER_HINT = {"WWW-Authenticate": "Bearer"}


def get_principal(request: Request, settings: SettingsDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise ApiError(
            401, "unauthorized", "missing Authorization: Bearer <token> header", headers=_BEARER_HINT
        )
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, "unauthorized", "Authorization header must be 'Bearer <token>'", headers=_BEARER_HINT
        )
    try:
        return verify_token(settings.require_secret_key(), token.strip())
    except TokenError as exc:
        raise ApiError(401, exc.code, exc.message, headers=_BEARER_HINT) from exc


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_memories_scope(principal: PrincipalDep) -> Principal:
    if not ({Scope.MEMORIES, Scope.ADMIN} & principal.scopes):
        raise ApiError(403, "forbidden", "this token lacks the 'memories' scope")
    return principal


MemoriesPrincipalDep = Annotated[Principal, Depends(require_memories_scope)]


def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "this endpoint needs a token with the 'admin' scope")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]


def acting_user(principal: Principal, user_id: str | None) -> str:
    """The user a request acts for: the caller, or any user when an admin names one."""
    if user_id is None or user_id == principal.user_id:
        return principal.user_id
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "only an admin token may act for another user_id")
    return user_id


UserIdQuery = Annotated[
    str | None, Query(min_length=1, max_length=128, description="Admins only: act for this user.")
]
LimitQuery = Annotated[int, Query(ge=1, le=200)]


def get_cursor(
    cursor: Annotated[
        str | None, Query(max_length=512, description="next_cursor of the previous page")
    ] = None,
) -> Cursor | None:
    """The decoded pagination cursor; 422 `invalid_cursor` when it was not produced by this API."""
    if not cursor:
        return None
    try:
        decoded = Cursor.decode(cursor)
    except InvalidCursorError as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from exc
    try:  # a forged cursor must not carry what the query string may not
        return Cursor(bounded_utc(decoded.created_at), safe_text(decoded.id))
    except ValueError as exc:
        raise ApiError(422, "invalid_cursor", f"cursor is out of range: {exc}") from exc


CursorDep = Annotated[Cursor | None, Depends(get_cursor)]
