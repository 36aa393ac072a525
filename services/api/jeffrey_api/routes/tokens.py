"""/api/v1/tokens (admin): revoke an access token before it expires."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, model_validator

from jeffrey_api.audit import AuditNote, audited
from jeffrey_api.deps import SettingsDep, StateDep, require_admin
from jeffrey_api.errors import ApiError, unavailable
from jeffrey_core.auth import MAX_JTI_LENGTH, TokenError, key_ring, verify_token
from jeffrey_core.revocation import revoke_async
from jeffrey_core.store.audit import AuditAction

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"], dependencies=[Depends(require_admin)])


class RevokeRequest(BaseModel):
    """Either the token itself, or its `jti` (with its `exp` when known; the longest possible lifetime
    otherwise, so the revocation outlives the token whatever it was)."""

    model_config = ConfigDict(extra="forbid")

    token: str | None = Field(None, min_length=1, max_length=8192)
    jti: str | None = Field(None, min_length=1, max_length=MAX_JTI_LENGTH, pattern=r"^[A-Za-z0-9._-]+$")
    exp: int | None = Field(None, ge=0, le=253402300799, description="The token's exp (epoch seconds).")

    @model_validator(mode="after")
    def _one_of(self) -> RevokeRequest:
        if (self.token is None) == (self.jti is None):
            raise ValueError("give either `token` or `jti` (with `exp` if known)")
        if self.token is not None and self.exp is not None:
            raise ValueError("`exp` goes with `jti`; a token carries its own")
        return self


class RevokeOut(BaseModel):
    jti: str
    expires_at: int
    revoked: bool


@router.post(
    "/revoke",
    response_model=RevokeOut,
    summary="Revoke a token (by the token or its jti) on every API replica until it would have expired",
    responses={503: {"description": "Redis unreachable: nothing was revoked"}},
)
async def revoke_token(
    body: RevokeRequest,
    state: StateDep,
    settings: SettingsDep,
    note: Annotated[AuditNote, audited(AuditAction.TOKEN_REVOKE)],
) -> dict[str, Any]:
    jti, expires_at = _target(body, settings)
    note.target = jti
    try:
        result = await revoke_async(state.redis, state.keys, jti, expires_at)
    except Exception as exc:  # RedisError, OSError, timeouts: nothing stored
        raise unavailable(
            "redis_unavailable", "Redis is not reachable; nothing was revoked, retry later"
        ) from exc
    return result.as_dict()


def _target(body: RevokeRequest, settings: SettingsDep) -> tuple[str, int]:
    max_ttl = settings.security.token_max_ttl_seconds
    if body.token is not None:
        try:
            principal = verify_token(
                key_ring(settings.security), body.token, max_ttl_seconds=max_ttl, verify_exp=False
            )
        except TokenError as exc:  # not one of ours: it is refused anyway
            raise ApiError(422, "invalid_token", f"cannot revoke this token: {exc.message}") from exc
        return principal.jti, principal.expires_at
    assert body.jti is not None
    latest = int(time.time()) + max_ttl  # no token of ours lives past this
    return body.jti, latest if body.exp is None else min(body.exp, latest)
