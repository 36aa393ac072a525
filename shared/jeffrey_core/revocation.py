"""Revoked access tokens, by `jti`, in Redis: one key per token, kept until the token would have expired
(`RedisKeys.revoked_token`), so the set never outgrows the tokens still alive.

Written by `POST /api/v1/tokens/revoke` and `jeffrey token revoke`; read by the API on every
authenticated request (`jeffrey_api.deps.authenticate`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis import Redis as SyncRedis

from jeffrey_core.auth import MAX_JTI_LENGTH
from jeffrey_core.redis_keys import RedisKeys


@dataclass(frozen=True)
class Revocation:
    """What a revocation did: `revoked` is False when the token had already expired (nothing to do)."""

    jti: str
    expires_at: int
    revoked: bool

    def as_dict(self) -> dict[str, object]:
        return {"jti": self.jti, "expires_at": self.expires_at, "revoked": self.revoked}


def _ttl(jti: str, expires_at: int, now: float | None) -> int:
    if not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise ValueError(f"jti must be 1 to {MAX_JTI_LENGTH} characters")
    return math.ceil(expires_at - (time.time() if now is None else now))


def revoke(
    client: SyncRedis, keys: RedisKeys, jti: str, expires_at: int, now: float | None = None
) -> Revocation:
    """Refuse the token `jti` from now until `expires_at` (epoch seconds), on every API replica."""
    ttl = _ttl(jti, expires_at, now)
    if ttl > 0:
        client.set(keys.revoked_token(jti), "1", ex=ttl)
    return Revocation(jti, expires_at, ttl > 0)


async def revoke_async(
    client: aioredis.Redis, keys: RedisKeys, jti: str, expires_at: int, now: float | None = None
) -> Revocation:
    """`revoke` for the API's event loop."""
    ttl = _ttl(jti, expires_at, now)
    if ttl > 0:
        await client.set(keys.revoked_token(jti), "1", ex=ttl)
    return Revocation(jti, expires_at, ttl > 0)


async def is_revoked(client: aioredis.Redis, keys: RedisKeys, jti: str) -> bool:
    """Whether `jti` was revoked (RedisError when Redis cannot say: the caller decides what that means)."""
    return bool(await client.exists(keys.revoked_token(jti)))
