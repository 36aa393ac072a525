"""FastAPI dependencies as Annotated aliases: SettingsDep, SessionDep, PrincipalDep, AdminDep, and the
query parameters every listing shares (UserIdQuery, LimitQuery, CursorDep)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Depends, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.exceptions import RedisError
from sqlalchemy.orm import Session
from starlette.types import Scope

from jeffrey_api.errors import ApiError, unavailable
from jeffrey_api.state import AppState
from jeffrey_api.validation import bounded_utc, safe_text
from jeffrey_core.auth import Principal, TokenError, key_ring, verify_token_cached
from jeffrey_core.auth import Scope as TokenScope
from jeffrey_core.revocation import is_revoked
from jeffrey_core.settings import Settings
from jeffrey_core.store.pagination import Cursor, InvalidCursorError

log = logging.getLogger(__name__)


# The trivial dependencies are `async def`: FastAPI runs a plain `def` dependency in the threadpool,
# one thread hop each per request (issue 12: measured on the memory POST).
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.jeffrey
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_session(state: StateDep) -> AsyncIterator[Session]:
    """A session for the request, once one of the engine's connections can be had for it.

    A sync route holds its connection across two threadpool hops (the route, then FastAPI's
    validation of what it returned) and until this dependency closes the session. With more
    concurrent requests than connections, request threads all waiting for a connection held by
    requests waiting for a thread deadlocked until the pool timeout (GET /api/v1/dreams at 60
    connections: 300 → 25 requests/s, then stalls; tests/integration/test_api_session_pool.py).
    So fewer requests than connections hold a session at once (AppState.session_slots); the others
    wait here, in the event loop, holding no thread.

    Opening a session does no I/O (the connection is taken on first use); closing it after a commit
    does none either, so only a session still in a transaction (a read, or an error before the
    commit: closing rolls back) is closed in the threadpool."""
    async with state.session_slots:
        session = state.sessions()
        try:
            yield session
        finally:
            if session.in_transaction():
                await anyio.to_thread.run_sync(session.close)
            else:
                session.close()


SessionDep = Annotated[Session, Depends(get_session)]

_BEARER_HINT = {"WWW-Authenticate": "Bearer"}
# What /docs shows as the Authorize button; auto_error=False so errors keep the project's envelope.
bearer_scheme = HTTPBearer(
    auto_error=False, description="An access token from `jeffrey token create` (JWT, HS256)."
)
# Keys of the per-request `scope["state"]` (what routes read as `request.state`).
PRINCIPAL_STATE_KEY = "principal"
REVOCATION_UNAVAILABLE = "revocation_unavailable"
_AUTH_RESULT_KEY = "jeffrey.auth_result"
_VERIFIED_KEY = "jeffrey.verified_token"
_REVOKED_KEY = "jeffrey.revoked"


def verify_request_token(request: Request, settings: Settings) -> Principal:
    """The principal of the request's bearer token (signature, kid, aud, lifetime, claims); 401 otherwise.
    Revocation needs Redis and is checked by `authenticate`."""
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
    security = settings.security
    try:
        return verify_token_cached(
            key_ring(security), token.strip(), max_ttl_seconds=security.token_max_ttl_seconds
        )
    except TokenError as exc:
        raise ApiError(401, exc.code, exc.message, headers=_BEARER_HINT) from exc


async def authenticate(scope: Scope, settings: Settings) -> Principal | ApiError:
    """The request's principal, or the error it deserves: the token is verified, and looked up in the
    revocation set, once per request and the outcome kept in `scope["state"]`, so the rate limiter, the
    auth middleware and the routes' dependencies share one verification (a valid principal is also
    readable downstream as `request.state.principal`). When the rate limiter's Redis round trip already
    answered the lookup (`note_revocation`), no second one is made."""
    state = scope.setdefault("state", {})
    result: Principal | ApiError | None = state.get(_AUTH_RESULT_KEY)
    if result is None:
        result = verified_token(scope, settings)
        if isinstance(result, Principal):
            try:
                await _refuse_revoked(scope, settings, result)
                state[PRINCIPAL_STATE_KEY] = result
            except ApiError as exc:
                result = exc
        state[_AUTH_RESULT_KEY] = result
    return result


def verified_token(scope: Scope, settings: Settings) -> Principal | ApiError:
    """The request's token verified (signature, claims), without the revocation lookup; once per request."""
    state = scope.setdefault("state", {})
    result: Principal | ApiError | None = state.get(_VERIFIED_KEY)
    if result is None:
        try:
            result = verify_request_token(Request(scope), settings)
        except ApiError as exc:
            result = exc
        state[_VERIFIED_KEY] = result
    return result


def revocation_key(scope: Scope, principal: Principal) -> str | None:
    """The Redis key that marks the principal's token revoked; None before the lifespan (nothing to ask)."""
    app_state: AppState | None = getattr(scope["app"].state, "jeffrey", None)
    return None if app_state is None else app_state.keys.revoked_token(principal.jti)


def note_revocation(scope: Scope, revoked: bool) -> None:
    """Keep what another Redis round trip of this request (the rate limiter's) said of `revocation_key`."""
    scope.setdefault("state", {})[_REVOKED_KEY] = revoked


async def _refuse_revoked(scope: Scope, settings: Settings, principal: Principal) -> None:
    revoked: bool | None = scope["state"].get(_REVOKED_KEY)
    if revoked is None:
        gate, app_state = _revocation_gate(scope, settings)
        await gate.refuse_revoked(principal, app_state)
    elif revoked:
        raise _revoked_error()


def _revoked_error() -> ApiError:
    return ApiError(401, "token_revoked", "the access token has been revoked", headers=_BEARER_HINT)


class _RecentlyDownError(TimeoutError):
    """Redis failed less than `down_seconds` ago: not asked again yet."""


class RevocationGate:
    """Looks each token's `jti` up in Redis (`jeffrey_core.revocation`).

    When Redis cannot answer within JEFFREY_REVOCATION_TIMEOUT the gate stays closed to admin tokens
    (503 + Retry-After) and open to the others: memory writes keep working through a Redis outage
    (docs/reliability.md), as with the rate limiter. After a failure it does not ask Redis again for
    `down_seconds`, so an outage costs each request nothing."""

    def __init__(self, timeout: float, down_seconds: float = 2.0) -> None:
        self.timeout = timeout
        self.down_seconds = down_seconds
        self._down_until = 0.0

    async def refuse_revoked(self, principal: Principal, state: AppState | None) -> None:
        if state is None:  # no lifespan ran: nothing to ask
            return
        try:
            if time.monotonic() < self._down_until:
                raise _RecentlyDownError("recently failed")
            async with asyncio.timeout(self.timeout):
                revoked = await is_revoked(state.redis, state.keys, principal.jti)
        except (RedisError, OSError, TimeoutError) as exc:
            # Only a real failure extends the window: a steady stream of requests must not keep the
            # gate closed for ever once Redis is back (or a Sentinel failover is over).
            if not isinstance(exc, _RecentlyDownError):
                self._note_down(exc)
            if principal.is_admin:
                raise unavailable(
                    REVOCATION_UNAVAILABLE, "cannot check admin tokens against revocations; retry later"
                ) from exc
            return
        if revoked:
            raise _revoked_error()

    def _note_down(self, exc: BaseException) -> None:
        if time.monotonic() >= self._down_until:
            log.warning(
                "revocation check cannot reach Redis (%s); admin tokens get 503, others pass, for %g s",
                exc.__class__.__name__,
                self.down_seconds,
            )
        self._down_until = max(self._down_until, time.monotonic() + self.down_seconds)


def _revocation_gate(scope: Scope, settings: Settings) -> tuple[RevocationGate, AppState | None]:
    """The app's gate (one per app, made on first use) and its open clients (None before the lifespan)."""
    app_state = scope["app"].state
    gate: RevocationGate | None = getattr(app_state, "revocation_gate", None)
    if gate is None:
        gate = app_state.revocation_gate = RevocationGate(settings.security.revocation_timeout)
    return gate, getattr(app_state, "jeffrey", None)


async def get_principal(
    request: Request,
    settings: SettingsDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
) -> Principal:
    """The caller (the result `authenticate` kept for this request, or computed now)."""
    return await principal_of(request, settings)


async def principal_of(request: Request, settings: Settings) -> Principal:
    """`get_principal` for a route that takes no dependencies (the memory POST)."""
    result = await authenticate(request.scope, settings)
    if isinstance(result, ApiError):
        raise result
    return result


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def require_memories_scope(principal: PrincipalDep) -> Principal:
    return memories_scope(principal)


def memories_scope(principal: Principal) -> Principal:
    """The principal when its token may read and write memories; 403 otherwise."""
    if not ({TokenScope.MEMORIES, TokenScope.ADMIN} & principal.scopes):
        raise ApiError(403, "forbidden", "this token lacks the 'memories' scope")
    return principal


MemoriesPrincipalDep = Annotated[Principal, Depends(require_memories_scope)]


async def require_admin(principal: PrincipalDep) -> Principal:
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
