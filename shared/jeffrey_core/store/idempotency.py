"""Idempotency keys: the stored answer to a POST with an Idempotency-Key header.

Written in the caller's transaction, so the effect and its key commit together (a crash can never
separate them); expired keys are purged by beat.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from jeffrey_core.store.models import IdempotencyKey, utcnow


def find_idempotent_response(session: Session, user_id: str, key: str) -> IdempotencyKey | None:
    """The stored answer for this key, if it has not expired (an expired one is removed)."""
    row = session.get(IdempotencyKey, (user_id, key))
    if row is None:
        return None
    if row.expires_at <= utcnow():
        session.delete(row)
        session.flush()
        return None
    return row


def save_idempotent_response(
    session: Session,
    user_id: str,
    key: str,
    request_hash: str,
    status_code: int,
    response: dict[str, Any],
    ttl_seconds: int,
) -> None:
    """Record the answer in the caller's transaction: the effect and its key commit together."""
    now = utcnow()
    session.add(
        IdempotencyKey(
            user_id=user_id,
            key=key,
            request_hash=request_hash,
            status_code=status_code,
            response=response,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
        )
    )
    session.flush()


def purge_expired_idempotency_keys(session: Session) -> int:
    """Delete every expired key; returns how many went."""
    result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= utcnow()))
    return int(result.rowcount)  # type: ignore[attr-defined]
